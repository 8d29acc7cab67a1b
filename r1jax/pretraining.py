"""Next-token pretraining of a base model on packed documents (the embedded tiny default's base
and the distillation student's base)."""
from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np

from r1jax import checkpoint as ckpt_lib
from r1jax.rl import step as train_step
from r1jax.sft import data as sft_data
from r1jax.sft import step as sft_step


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  """Next-token pretraining of the embedded tiny base model (unused with a Hugging Face model)."""
  steps: int = 600
  """Optimizer steps; 0 leaves the base randomly initialized."""
  batch_size: int = 32
  seq_len: int = 128
  """Tokens per packed row."""
  r1_fraction: float = 0.25
  """Share of corpus documents in the R1 <think>/<answer> form (the rest answer in prose)."""
  wrong_fraction: float = 0.3
  """Share of corpus documents whose final answer is replaced by a wrong number."""
  optim: train_step.OptimConfig = train_step.OptimConfig(learning_rate=3e-3, warmup_steps=50, decay="cosine",
                                                         weight_decay=0.01)

  def __post_init__(self):
    if self.steps < 0 or self.batch_size < 1 or self.seq_len < 2:
      raise ValueError(f"pretrain.steps={self.steps} must be >= 0, pretrain.batch_size={self.batch_size} >= 1 "
                       f"and pretrain.seq_len={self.seq_len} >= 2")
    for f in ("r1_fraction", "wrong_fraction"):
      if not 0.0 <= getattr(self, f) <= 1.0:
        raise ValueError(f"pretrain.{f}={getattr(self, f)} must lie in [0, 1]")


def pretrain(params, model_cfg, pcfg: PretrainConfig, tokenizer, docs_fn, mesh, out: pathlib.Path, seed: int,
             progress: bool):
  """Next-token pretraining; the final state is cached as a checkpoint in <out>/ckpt."""
  ocfg = pcfg.optim
  optimizer = train_step.make_optimizer(ocfg)
  state = train_step.init_state(params, optimizer)
  ck = ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(out / "ckpt"), save_every=1, keep=1, async_save=False))
  found = ck.restore_intact(state.abstract().tree()) if ck.latest_step() == pcfg.steps else None
  if found is not None and found[2] == pcfg.steps:
    tree = found[0]
    ck.close()
    print(f"base model: loaded the pretrained checkpoint from {out}")
    return tree["params"]
  toks, mask = sft_data.pack_documents(docs_fn(), tokenizer, pcfg.seq_len)
  step_fn = sft_step.make_sft_step(model_cfg, ocfg, train_step.state_shardings(state), mesh)
  rng = np.random.default_rng(seed)
  from tqdm.auto import tqdm
  B = pcfg.batch_size
  losses = []
  for _ in (bar := tqdm(range(pcfg.steps), desc="pretrain base", dynamic_ncols=True, disable=not progress)):
    idx = rng.integers(0, len(toks), B)
    batch = train_step.shard_batch({"tokens": toks[idx], "mask": mask[idx], "loss_mask": mask[idx]}, mesh)
    state, m = step_fn(state, batch)
    losses.append(m["loss"])
    if len(losses) % 50 == 0:
      bar.set_postfix(loss=f"{float(np.mean(jax.device_get(losses[-50:]))):.3f}")
  ck.save(pcfg.steps, state.tree(), {"step": pcfg.steps}, force=True)
  ck.wait()
  ck.close()
  return state.params
