"""Scalar-head models (`r1jax.model.heads`: the reward model, the PRM, the MCTS value model): the loop
that fits one, and the directory a fitted one is saved to and loaded from."""
from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp

from r1jax import checkpoint as ckpt_lib
from r1jax import logger as logger_lib
from r1jax.model import config as model_config
from r1jax import policy as policy_lib
from r1jax.rl import loop as rl_loop
from r1jax.rl import step as train_step
from r1jax.sft import data as data_lib


def save(directory, step, params, head, model_cfg, tokenizer_path) -> None:
  meta = {"model": dataclasses.asdict(model_cfg), "tokenizer": str(tokenizer_path), "step": int(step)}
  policy_lib.write(directory, step, {"params": params, "head": head}, meta)


def load(directory, mesh, rules=None):
  """(model config, params, head) of a reward model written by `save`."""
  with policy_lib.checkpointer(directory) as ck:
    model_cfg = policy_lib.model_config(ck.restore_meta())
    shardings = model_config.param_shardings(model_cfg, mesh, rules)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    abstract = {"params": jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                                       model_config.abstract_params(model_cfg), shardings),
                "head": {"w": jax.ShapeDtypeStruct((model_cfg.d_model,), jnp.float32, sharding=rep),
                         "b": jax.ShapeDtypeStruct((), jnp.float32, sharding=rep)}}
    tree, _ = ck.restore(None, abstract)
  return model_cfg, tree["params"], tree["head"]


def fit_head(state, step_fn, rows: dict, out: pathlib.Path, *, steps: int, batch_size: int, seed: int,
             save_every: int, mesh):
  """`steps` optimizer steps of `step_fn` over shuffled batches of `rows` (epochs as needed), logged
  to `out`/metrics.jsonl and checkpointed under `out`/ckpt, resuming from its latest checkpoint:
  the training loop of every scalar-head model (reward model, PRM, MCTS value model)."""
  ck = ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(out / "ckpt"), save_every=save_every, keep=1,
                                                       async_save=False))
  state, start, _ = rl_loop.restore_latest(ck, state, seed)
  log = logger_lib.MetricsLogger(out, tensorboard=False, resume_step=start)
  R = len(next(iter(rows.values())))
  bs = min(batch_size, R)
  try:
    for step, idx in enumerate(data_lib.batches(R, bs, -(-steps // data_lib.steps_per_epoch(R, bs)), seed, start),
                               start):
      if step >= steps:
        break
      state, m = step_fn(state, train_step.shard_batch({k: v[idx] for k, v in rows.items()}, mesh))
      log.log(step + 1, jax.device_get(m))
      ck.save(step + 1, state.tree(), {"step": step + 1, "data_position": {}, "seed": seed}, force=step + 1 == steps)
  finally:
    ck.wait()
    ck.close()
    log.close()
  return state
