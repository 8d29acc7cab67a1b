"""Sharded, crash-safe checkpoints of the train state (`Checkpointer`). How a step is stored and
read: `r1jax.checkpoint_store`; averaging several steps: `r1jax.checkpoint_average`.

Crash safety comes from orbax: a step is written into `<step>.orbax-checkpoint-tmp-*` and
renamed to `<step>` only once every item is complete. A run killed mid-save leaves such a
temporary folder, which no step listing counts and which `Checkpointer` deletes when it opens
the directory again, so the previous complete step stays the latest. A complete step damaged
afterwards (a truncated array file, a deleted item) is found when it is read:
`Checkpointer.restore_intact` then takes the newest step that reads whole and moves the damaged
newer ones aside (`<step>.unreadable`), recording its choice in `<directory>/restores.jsonl`.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import orbax.checkpoint as ocp

from r1jax import errors
from r1jax.checkpoint_store import (META, STATE, PyTree, StructureError, _check_abstract, _check_step, _manager,
                                    _resolve, _restore)


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


