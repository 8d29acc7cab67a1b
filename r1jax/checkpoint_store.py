"""How a checkpoint step is stored and read: orbax items under a checkpoint manager, and the checks
of an abstract state against what a step holds before any array is read.

A checkpoint step `<directory>/<step>/` holds two orbax items:
  state: the train-state pytree (params, optimizer state, step counter, RNG keys), written
         shard-wise by every host with `StandardSave`; no array is ever gathered to one host.
  meta:  a JSON dict (data position, seed, config snapshot) written with `JsonSave`.

Typed PRNG keys (`jax.random.key`) may be leaves of the state: orbax writes their
`jax.random.key_data` and wraps them again on restore when the abstract leaf has a key dtype.

Restoring takes an abstract state, a pytree of `jax.ShapeDtypeStruct` with `.sharding` set,
and reads each array straight into that sharding, which may be on a different mesh than the
one it was saved from.
"""
from __future__ import annotations

import inspect
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

PyTree = Any

STATE = "state"
META = "meta"


def _resolve(directory) -> str:
  """Orbax wants absolute paths; leave URLs (gs://...) untouched."""
  directory = os.fspath(directory)
  return directory if "://" in directory else os.path.abspath(directory)


def _state_handler(cap_gb: int | None):
  handler = ocp.StandardCheckpointHandler()
  if cap_gb is None:
    return handler
  params = inspect.signature(ocp.PyTreeCheckpointHandler).parameters
  if "save_device_host_concurrent_gb" not in params or not hasattr(handler, "_impl"):
    logging.warning("this orbax has no save_device_host_concurrent_gb: a save of a large state is not capped")
    return handler
  # StandardCheckpointHandler is a thin layer over a PyTreeCheckpointHandler that it builds
  # without this option; give it one built with the cap (same format on disk).
  handler._impl = ocp.PyTreeCheckpointHandler(save_concurrent_gb=cap_gb, save_device_host_concurrent_gb=cap_gb)
  return handler


def _manager(directory, *, save_every: int = 1, keep: int | None = None, async_save: bool = False,
             read_only: bool = False, cap_gb: int | None = None) -> ocp.CheckpointManager:
  policies = ocp.checkpoint_managers
  # Orbax's default also saves the first step it sees; save exactly every `save_every` steps
  # (and when a preemption is signalled).
  save_policy = policies.AnySavePolicy([policies.FixedIntervalPolicy(save_every),
                                        policies.PreemptionCheckpointingPolicy()])
  options = ocp.CheckpointManagerOptions(
      save_decision_policy=save_policy, preservation_policy=policies.LatestN(keep),
      enable_async_checkpointing=async_save, read_only=read_only, create=not read_only,
      cleanup_tmp_directories=not read_only)
  # Explicit handlers (not just item names) so a freshly opened manager can read item metadata.
  handlers = {STATE: _state_handler(cap_gb), META: ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(_resolve(directory), options=options, item_handlers=handlers)


def path_str(path) -> str:
  """'params/layers/0/w' for a jax key path; the form `select` predicates receive."""
  parts = []
  for k in path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _check_abstract(abstract_state: PyTree) -> None:
  """Every leaf must carry shape, dtype and a target sharding."""
  leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  if not leaves:
    raise ValueError("abstract_state has no leaves; pass a pytree of jax.ShapeDtypeStruct")
  for path, x in leaves:
    if not all(hasattr(x, a) for a in ("shape", "dtype", "sharding")) or x.sharding is None:
      raise ValueError(
          f"abstract_state leaf {path_str(path)!r} is {type(x).__name__} without a sharding; pass "
          "jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec)) for every leaf")


def _stored_shape(x) -> tuple[int, ...]:
  """Shape on disk: typed PRNG keys are stored as their uint32 key data."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    return tuple(jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(x.shape, x.dtype)).shape)
  return tuple(x.shape)


class StructureError(ValueError):
  """A checkpoint holds another tree than the one asked for: another config, not damage."""


def _check_structure(mgr: ocp.CheckpointManager, step: int, abstract_state: PyTree) -> None:
  """Compare the saved tree with `abstract_state` (paths and shapes) before reading any array."""
  try:
    md = mgr.item_metadata(step)[STATE]
  except Exception:  # pylint: disable=broad-except
    return  # no readable metadata: let orbax report whatever it finds
  if md is None:
    return
  saved = {path_str(p): m for p, m in jax.tree_util.tree_flatten_with_path(getattr(md, "tree", md))[0]}
  wanted = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
  where = f"checkpoint step {step} in {mgr.directory}"
  missing, extra = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
  if missing or extra:
    raise StructureError(f"{where} does not match abstract_state: "
                     f"missing from the checkpoint {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                     f"only in the checkpoint {extra[:5]}{' ...' if len(extra) > 5 else ''}")
  for k, x in wanted.items():
    shape = getattr(saved[k], "shape", None)
    if shape is not None and tuple(shape) != _stored_shape(x):
      raise StructureError(f"{where}: leaf {k!r} was saved with shape {tuple(shape)}, "
                       f"abstract_state asks for {_stored_shape(x)}")


def _check_step(mgr: ocp.CheckpointManager, step: int | None) -> int:
  steps = sorted(mgr.all_steps())
  if step is None:
    if not steps:
      raise FileNotFoundError(f"no complete checkpoint in {mgr.directory}")
    return steps[-1]
  if step not in steps:
    raise FileNotFoundError(f"checkpoint step {step} not found in {mgr.directory}; "
                            f"available steps: {steps or 'none'}")
  return step


def _restore(mgr: ocp.CheckpointManager, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
  _check_structure(mgr, step, abstract_state)
  out = mgr.restore(step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state),
                                                     META: ocp.args.JsonRestore()}))
  return out[STATE], out[META]
