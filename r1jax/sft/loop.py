"""The SFT loop: epochs of shuffled batches of (packed, prompt-masked) rows, checkpointed so a
killed run resumes at its last saved step and, on CPU, continues bit-identically."""
from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np

from r1jax import checkpoint as ckpt_lib
from r1jax import logger as logger_lib
from r1jax import sharding
from r1jax.rl import loop as rl_loop
from r1jax.rl import step as train_step
from r1jax.sft import data as data_lib
from r1jax.sft import step as sft_step


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
  grad_accum: int = 0
  """Micro-batches per step (rows split, gradients summed: the same update); 0 = the fewest that
  fit the device, each step compiled and measured first (1 where no limit is known, as on CPU)."""
  optim: train_step.OptimConfig = train_step.OptimConfig(learning_rate=1e-3, warmup_steps=5, decay="cosine",
                                                         weight_decay=0.0)
  """optim.total_steps is set to the run's steps (epochs x batches per epoch)."""

  def __post_init__(self):
    for f in ("epochs", "batch_size", "save_every"):
      if getattr(self, f) < 1:
        raise ValueError(f"sft.{f}={getattr(self, f)} must be >= 1")
    if self.seq_len < 8:
      raise ValueError(f"sft.seq_len={self.seq_len} must be >= 8")
    if self.grad_accum < 0 or (self.grad_accum and self.batch_size % self.grad_accum):
      raise ValueError(f"sft.grad_accum={self.grad_accum} must be 0 (automatic) or divide sft.batch_size="
                       f"{self.batch_size}")


def plan_grad_accum(model_cfg, ocfg, state, rows: dict, cfg: SFTConfig, mesh, limit_bytes: int | None = None,
                    log=print) -> int:
  """The fewest micro-batches whose compiled SFT step fits the device beside what is already on
  it (XLA's memory analysis; nothing runs); cfg.grad_accum when set, 1 when no limit is known."""
  from r1jax import memory
  if cfg.grad_accum:
    return cfg.grad_accum
  limit = limit_bytes or memory.device_limit_bytes()
  if limit is None:
    return 1
  stats = jax.local_devices()[0].memory_stats() or {}
  other = max(0, int(stats.get("bytes_in_use", 0)) - memory.per_device_bytes(state))  # held outside this step (a reference, caches)
  shards = mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)
  batch = {k: jax.ShapeDtypeStruct((cfg.batch_size,) + v.shape[1:], v.dtype, sharding=sharding.batch_sharding(mesh))
           for k, v in rows.items()}
  options = [a for a in range(1, cfg.batch_size + 1) if cfg.batch_size % a == 0 and (cfg.batch_size // a) % shards == 0]
  for a in options:
    fn = sft_step.make_sft_step(model_cfg, ocfg, train_step.state_shardings(state), mesh, grad_accum=a)
    peak = memory.phase("sft", fn.lower(state, batch).compile()).peak
    fits = peak + other <= 0.95 * limit
    log(f"sft memory plan: grad_accum={a}: peak {peak / memory.GiB:.2f} GiB + {other / memory.GiB:.2f} GiB held "
        f"of {limit / memory.GiB:.2f} GiB -> {'fits' if fits else 'too large'}")
    if fits:
      return a
  raise memory.DoesNotFitError(f"sft: no sft.grad_accum in {options} fits {limit / memory.GiB:.2f} GiB (batch {cfg.batch_size} "
                   f"x {rows['tokens'].shape[1]} tokens); lower sft.batch_size or sft.seq_len, or set model.remat")


def run_sft(model_cfg, params, rows: dict, cfg: SFTConfig, mesh, workdir, progress: bool = False,
            limit_bytes: int | None = None) -> dict:
  """Train `params` on `rows` (`data.pack` output) in micro-batches that fit (`plan_grad_accum`);
  resumes from <workdir>/ckpt.

  Returns {'state': the final TrainState, 'history': per-step metrics}.
  """
  workdir = pathlib.Path(workdir)
  R = len(rows["tokens"])
  steps = cfg.epochs * data_lib.steps_per_epoch(R, cfg.batch_size)
  ocfg = dataclasses.replace(cfg.optim, total_steps=steps)
  state = train_step.init_state(params, train_step.make_optimizer(ocfg))
  accum = plan_grad_accum(model_cfg, ocfg, state, rows, cfg, mesh, limit_bytes)
  step_fn = sft_step.make_sft_step(model_cfg, ocfg, train_step.state_shardings(state), mesh, grad_accum=accum)
  ck = ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(workdir / "ckpt"), save_every=cfg.save_every, keep=1,
                                                       async_save=False))
  state, start, _ = rl_loop.restore_latest(ck, state, cfg.seed)
  log = logger_lib.MetricsLogger(workdir, tensorboard=False, resume_step=start)
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
    raise rl_loop.NonFiniteError(f"SFT ended with a non-finite loss; lower sft.optim.learning_rate")
  return {"state": state, "history": history}
