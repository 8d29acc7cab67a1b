"""The SFT loop: epochs of shuffled batches of (packed, prompt-masked) rows, checkpointed so a
killed run resumes at its last saved step and, on CPU, continues bit-identically."""
from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np

from r1jax import checkpoint as ckpt_lib
from r1jax import logger as logger_lib
from r1jax import train
from r1jax import train_step
from r1jax.sft import data as data_lib


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  """Supervised fine-tuning (cold start, SFT on rejection-sampled data, distillation)."""
  epochs: int = 2
  batch_size: int = 16
  """Rows per step (a packed row holds several examples)."""
  seq_len: int = 160
  """Tokens per row; longer examples are dropped (counted)."""
  packing: bool = True
  """Several examples per row, each in its own attention segment; False: one per row."""
  save_every: int = 20
  """Checkpoint every this many steps (and at the end)."""
  seed: int = 0
  optim: train_step.OptimConfig = train_step.OptimConfig(learning_rate=1e-3, warmup_steps=5, decay="cosine",
                                                         weight_decay=0.0)
  """optim.total_steps is set to the run's steps (epochs x batches per epoch)."""

  def __post_init__(self):
    for f in ("epochs", "batch_size", "save_every"):
      if getattr(self, f) < 1:
        raise ValueError(f"sft.{f}={getattr(self, f)} must be >= 1")
    if self.seq_len < 8:
      raise ValueError(f"sft.seq_len={self.seq_len} must be >= 8")


def run_sft(model_cfg, params, rows: dict, cfg: SFTConfig, mesh, workdir, progress: bool = False) -> dict:
  """Train `params` on `rows` (`data.pack` output); resumes from <workdir>/ckpt.

  Returns {'state': the final TrainState, 'history': per-step metrics}.
  """
  workdir = pathlib.Path(workdir)
  R = len(rows["tokens"])
  steps = cfg.epochs * data_lib.steps_per_epoch(R, cfg.batch_size)
  ocfg = dataclasses.replace(cfg.optim, total_steps=steps)
  state = train_step.init_state(params, train_step.make_optimizer(ocfg))
  step_fn = train_step.make_sft_step(model_cfg, ocfg, train_step.state_shardings(state), mesh)
  ck = ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(workdir / "ckpt"), save_every=cfg.save_every, keep=1,
                                                       async_save=False))
  state, start, _ = train.restore_latest(ck, state, cfg.seed)
  log = logger_lib.MetricsLogger(workdir, tensorboard=False)
  history = []
  try:
    batches = data_lib.batches(R, cfg.batch_size, cfg.epochs, cfg.seed, start)
    for step, idx in enumerate(batches, start):
      state, m = step_fn(state, train_step.shard_batch({k: v[idx] for k, v in rows.items()}, mesh))
      m = {k: float(v) for k, v in jax.device_get(m).items()}
      m["epoch"] = step // data_lib.steps_per_epoch(R, cfg.batch_size)
      m["target_tokens"] = int(rows["loss_mask"][idx][:, 1:].sum())
      log.log(step + 1, m)
      history.append(m)
      if progress and (step + 1) % 10 == 0:
        print(f"sft step {step + 1}/{steps}: loss {m['loss']:.3f}")
      ck.save(step + 1, state.tree(), {"step": step + 1, "data_position": {"step": step + 1}, "seed": cfg.seed},
              force=step + 1 == steps)
  finally:
    ck.wait()
    ck.close()
    log.close()
  if history and not np.isfinite(history[-1]["loss"]):
    raise train.NonFiniteError(f"SFT ended with a non-finite loss; lower sft.optim.learning_rate")
  return {"state": state, "history": history}
