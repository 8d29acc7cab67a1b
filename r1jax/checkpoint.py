"""Sharded, crash-safe checkpoints of the train state, and checkpoint averaging.

A checkpoint step `<directory>/<step>/` holds two orbax items:
  state: the train-state pytree (params, optimizer state, step counter, RNG keys), written
         shard-wise by every host with `StandardSave`; no array is ever gathered to one host.
  meta:  a JSON dict (data position, seed, config snapshot) written with `JsonSave`.

Crash safety comes from orbax: a step is written into `<step>.orbax-checkpoint-tmp-*` and
renamed to `<step>` only once every item is complete. A run killed mid-save leaves such a
temporary folder, which no step listing counts and which `Checkpointer` deletes when it opens
the directory again, so the previous complete step stays the latest. A complete step damaged
afterwards (a truncated array file, a deleted item) is found when it is read:
`Checkpointer.restore_intact` then takes the newest step that reads whole and moves the damaged
newer ones aside (`<step>.unreadable`), recording its choice in `<directory>/restores.jsonl`.

Typed PRNG keys (`jax.random.key`) may be leaves of the state: orbax writes their
`jax.random.key_data` and wraps them again on restore when the abstract leaf has a key dtype.

Restoring takes an abstract state, a pytree of `jax.ShapeDtypeStruct` with `.sharding` set,
and reads each array straight into that sharding, which may be on a different mesh than the
one it was saved from.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
from typing import Any, Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from r1jax import errors

PyTree = Any

STATE = "state"
META = "meta"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """Where and how often the train state is checkpointed."""
  directory: str
  """Root folder; steps live in `<directory>/<step>/`. Local path or a URL orbax understands (gs://)."""
  save_every: int = 100
  """Save when `step % save_every == 0` (or when `save(..., force=True)`)."""
  keep: int = 3
  """Most recent complete steps kept on disk; older ones are deleted after each save."""
  async_save: bool = True
  """Write in a background thread once the arrays are copied off the device; `wait()` blocks."""
  host_memory_gb: int = 0
  """Most host memory (GB) a save may hold at once (device-to-host copies in flight): 0 = automatic,
  a quarter of this machine's memory when the state is larger than that, else no cap. A capped
  save bounds orbax's device-to-host copies in flight (not what its writer holds besides) and
  returns when the arrays are on disk (the training step donates them afterwards)."""

  def __post_init__(self):
    if not str(self.directory):
      raise ValueError("checkpoint.directory is empty; give the folder that holds the steps")
    if not isinstance(self.host_memory_gb, int) or self.host_memory_gb < 0:
      raise ValueError(f"checkpoint.host_memory_gb={self.host_memory_gb!r} must be an int >= 0 (0 = automatic)")
    for f in ("save_every", "keep"):
      v = getattr(self, f)
      if not isinstance(v, int) or v < 1:
        raise ValueError(f"checkpoint.{f}={v!r} must be an int >= 1")


def _resolve(directory) -> str:
  """Orbax wants absolute paths; leave URLs (gs://...) untouched."""
  directory = os.fspath(directory)
  return directory if "://" in directory else os.path.abspath(directory)


def host_memory_bytes() -> int | None:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return None


def save_cap_gb(state_bytes: int, host_memory_gb: int = 0, host_bytes: int | None = None) -> int | None:
  """The host-memory cap (GB) for saving a state of `state_bytes`, or None for no cap."""
  if host_memory_gb:
    return host_memory_gb
  host_bytes = host_memory_bytes() if host_bytes is None else host_bytes
  if not host_bytes or state_bytes <= host_bytes / 4:
    return None
  return max(1, int(host_bytes / 4 / 1e9))


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


class Checkpointer:
  """Saves and restores `(state, meta)` under `config.directory` with an orbax CheckpointManager.

  Multi-host: every process constructs it and calls `save`/`restore` with the same step; each
  writes and reads only its own shards.
  """

  def __init__(self, config: CheckpointConfig):
    self.config = config
    self._mgr = _manager(config.directory, save_every=config.save_every, keep=config.keep,
                         async_save=config.async_save)
    self._capped: int | None = None  # the cap of the manager that saves capped, once there is one

  @property
  def directory(self) -> str:
    return str(self._mgr.directory)

  def save(self, step: int, state: PyTree, meta: dict, force: bool = False) -> bool:
    """Save `state` (pytree of jax Arrays) and `meta` (JSON dict) as `step`.

    Skipped (returns False) unless `step % save_every == 0` or `force`; a step not above the
    latest saved one is skipped too. With `async_save` it returns once the arrays are copied off
    the device; the files are complete after `wait()`.
    """
    try:
      json.dumps(meta)
    except TypeError as e:
      raise ValueError(f"checkpoint meta must be a JSON-serializable dict (ints, floats, str, lists, "
                       f"dicts): {e}") from None
    args = ocp.args.Composite(**{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)})
    cap = save_cap_gb(sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, "nbytes")),
                      self.config.host_memory_gb)
    if cap is None:
      return bool(self._mgr.save(step, args=args, force=force))
    if self._capped is None:  # one manager that saves with the cap, synchronously
      self._mgr.wait_until_finished()
      self._mgr.close()
      c = self.config
      self._mgr = _manager(c.directory, save_every=c.save_every, keep=c.keep, async_save=False, cap_gb=cap)
      self._capped = cap
    return bool(self._mgr.save(step, args=args, force=force))

  def latest_step(self) -> int | None:
    """Highest complete step on disk, or None; unfinished (temporary) steps never count."""
    return self._mgr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  def restore(self, step: int | None = None, abstract_state: PyTree = None) -> tuple[PyTree, dict]:
    """Read `step` (latest if None) into the shardings of `abstract_state`; returns (state, meta)."""
    if abstract_state is None:
      raise ValueError("restore needs abstract_state: a pytree of jax.ShapeDtypeStruct with .sharding")
    _check_abstract(abstract_state)
    return _restore(self._mgr, _check_step(self._mgr, step), abstract_state)

  def restore_intact(self, abstract_state: PyTree) -> tuple[PyTree, dict, int] | None:
    """(state, meta, step) of the newest step that reads whole, or None when no step is on disk.

    A step that cannot be read (a truncated array file, a missing item) is skipped for the next
    older one. Once one reads, one printed line says which were skipped and why, the damaged
    newer steps are moved aside to `<directory>/<step>.unreadable` (kept for inspection; no longer
    a step, so later saves are not skipped) and the choice is appended to `<directory>/restores.jsonl`. A tree that does not
    match `abstract_state` is not damage: its StructureError propagates. When no step reads, a
    UserError names the directory (nothing is moved).
    """
    failed = []
    for step in reversed(self.all_steps()):
      try:
        state, meta = self.restore(step, abstract_state)
      except StructureError:
        raise
      except Exception as e:  # pylint: disable=broad-except  (orbax and TensorStore raise many types)
        failed.append({"step": step, "error": errors.one_line(f"{type(e).__name__}: {e}")[:300]})
        continue
      if failed:
        self._set_aside(failed, step)
      return state, meta, step
    if failed:
      raise errors.UserError("checkpoint", self.directory, f"no step can be read (steps "
                             f"{[f['step'] for f in failed]}; newest: {failed[0]['error'][:160]})",
                             "remove the damaged steps or the directory to start over")
    return None

  def _set_aside(self, failed: list[dict], restored: int) -> None:
    """Move the unreadable steps out of the step listing and record which step was restored."""
    root = _resolve(self.directory)
    if jax.process_index() == 0 and "://" not in root:
      for f in failed:
        os.replace(os.path.join(root, str(f["step"])), os.path.join(root, f"{f['step']}.unreadable"))
      with open(os.path.join(root, "restores.jsonl"), "a") as out:
        out.write(json.dumps({"restored": restored, "unreadable": failed}) + "\n")
    self._mgr.reload()
    print(f"checkpoint: {self.directory}: step(s) {[f['step'] for f in failed]} cannot be read "
          f"({failed[0]['error'][:160]}); resuming from step {restored}, the damaged step(s) moved aside to "
          f"<step>.unreadable")

  def restore_meta(self, step: int | None = None) -> dict:
    """Only the JSON meta of `step` (latest if None): e.g. the model config needed to build the
    abstract state for `restore`."""
    step = _check_step(self._mgr, step)
    return self._mgr.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]

  def wait(self) -> None:
    """Block until the pending asynchronous save is on disk (and old steps are deleted), and the
    removal of unfinished steps left by an earlier run (a background thread of orbax's, otherwise
    awaited only by the next save) is done."""
    self._mgr.wait_until_finished()
    getattr(self._mgr, "_maybe_await_cleanup_tmp_directory", lambda: None)()

  def close(self) -> None:
    self.wait()
    self._mgr.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


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
