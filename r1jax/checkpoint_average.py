"""Checkpoint averaging: the floating-point leaves of several steps folded into one new step, read
and averaged in their shardings, in the format `Checkpointer` restores.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from r1jax.checkpoint_store import META, STATE, PyTree, _check_abstract, _check_structure, _manager, _restore, path_str


def _choose_steps(available: list[int], steps: Sequence[int] | None, last_k: int | None,
                  src: str) -> list[int]:
  if (steps is None) == (last_k is None):
    raise ValueError("average_checkpoints: give exactly one of steps=[...] or last_k=N "
                     f"(got steps={steps!r}, last_k={last_k!r})")
  if last_k is not None:
    if not isinstance(last_k, int) or last_k < 1:
      raise ValueError(f"average_checkpoints: last_k={last_k!r} must be an int >= 1")
    if last_k > len(available):
      raise ValueError(f"average_checkpoints: last_k={last_k} but {src} holds only "
                       f"{len(available)} complete step(s): {available}")
    return available[-last_k:]
  chosen = [int(s) for s in steps]
  if not chosen:
    raise ValueError(f"average_checkpoints: steps is empty; available steps in {src}: {available}")
  if len(set(chosen)) != len(chosen):
    raise ValueError(f"average_checkpoints: steps={chosen} repeats a step")
  absent = [s for s in chosen if s not in available]
  if absent:
    raise FileNotFoundError(f"checkpoint step(s) {absent} not found in {src}; "
                            f"available steps: {available or 'none'}")
  return sorted(chosen)


def average_checkpoints(src_dir, out_dir, abstract_state: PyTree, steps: Sequence[int] | None = None,
                        last_k: int | None = None,
                        select: Callable[[str], bool] = lambda path: True) -> list[int]:
  """Average the floating-point leaves of several checkpoints into one new checkpoint.

  Each chosen step of `src_dir` is restored straight into the shardings of `abstract_state` and
  folded into a float32 running mean, mean_k = mean_{k-1} + (x_k - mean_{k-1}) / k, by a jitted
  update whose outputs keep those shardings: no host ever holds the whole model. The mean is
  cast back to each leaf's dtype.

  Leaves that are not floating point (step counters, PRNG keys) and leaves whose path
  (`path_str`, e.g. 'params/layers/0/w') fails `select` are taken from the last (highest)
  chosen step, as is its meta, to which 'averaged_steps' and 'averaged_from' are added.
  The result is saved in `out_dir` under the last chosen step, in the format `Checkpointer`
  restores. Multi-host: every process must call this.

  Args:
    src_dir: folder with the source steps.
    out_dir: folder for the averaged step; must not already hold that step.
    abstract_state: pytree of jax.ShapeDtypeStruct with `.sharding`, as for `Checkpointer.restore`.
    steps: explicit steps to average; or
    last_k: average the k most recent complete steps.
    select: predicate on a leaf's path string; False keeps the last step's value.
  Returns:
    The averaged steps, ascending.
  """
  _check_abstract(abstract_state)
  src = _manager(src_dir, read_only=True)
  chosen = _choose_steps(sorted(src.all_steps()), steps, last_k, str(src.directory))
  out = _manager(out_dir)
  if chosen[-1] in out.all_steps():
    raise ValueError(f"average_checkpoints: {out.directory} already holds step {chosen[-1]}; "
                     "choose another out_dir or delete that step")
  for s in chosen:
    _check_structure(src, s, abstract_state)

  paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_state)
  avg_idx = [i for i, (p, x) in enumerate(paths_leaves)
             if jnp.issubdtype(x.dtype, jnp.floating) and select(path_str(p))]
  if not avg_idx:
    raise ValueError("average_checkpoints: no floating-point leaf of abstract_state passes `select`; "
                     "nothing to average")
  shardings = [paths_leaves[i][1].sharding for i in avg_idx]
  dtypes = [paths_leaves[i][1].dtype for i in avg_idx]

  to_f32 = jax.jit(lambda xs: [x.astype(jnp.float32) for x in xs], out_shardings=shardings)
  update = jax.jit(lambda mean, xs, k: [m + (x.astype(jnp.float32) - m) / k for m, x in zip(mean, xs)],
                   out_shardings=shardings, donate_argnums=0)
  cast_back = jax.jit(lambda mean: [m.astype(dt) for m, dt in zip(mean, dtypes)],
                      out_shardings=shardings)

  mean = None
  for k, s in enumerate(chosen, start=1):
    state, meta = _restore(src, s, abstract_state)
    leaves = treedef.flatten_up_to(state)
    picked = [leaves[i] for i in avg_idx]
    mean = to_f32(picked) if mean is None else update(mean, picked, np.float32(k))
    del picked
  # `leaves` and `meta` now belong to the last chosen step.
  for i, m in zip(avg_idx, cast_back(mean)):
    leaves[i] = m
  result = jax.tree_util.tree_unflatten(treedef, leaves)
  meta = dict(meta or {}) | {"averaged_steps": chosen, "averaged_from": str(src.directory)}
  out.save(chosen[-1], args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(result),
                                                  META: ocp.args.JsonSave(meta)}), force=True)
  out.wait_until_finished()
  out.close()
  src.close()
  return chosen
