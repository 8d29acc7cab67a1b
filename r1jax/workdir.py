"""What a work directory's checkpoints were made with, checked before a rerun writes anything.

`<workdir>/run_config.json` records the config fields that decide what the run's checkpoints and
outputs mean: the model, tokenizer, data, pretraining, optimizer, GRPO / PPO, rewards and sampling
sections, the seeds, the template and the pipeline's stage sections. Not recorded is what only
sets how long, how or where a run goes: `train.steps` (a rerun with more steps continues),
progress and logging, evaluation, the mesh, checkpoint cadence, memory and kernel knobs, the stage
selection and the work directory itself.

A rerun whose recorded fields differ stops (`UserError`, one line naming every differing field)
before anything is written, unless `--config.train.resume=weights`: continue these weights with
the new settings (the change is appended to the record's `history`). A change of the weights'
shape or of the tokenizer is refused either way: those weights cannot be continued.
"""
from __future__ import annotations

import json
import os
import pathlib
import time

import ml_collections

from r1jax import errors
from r1jax.model import presets
from r1jax.config import ARCH_FIELDS

RECORD = "run_config.json"
RUN_FILES = (RECORD, "config.json", "memory_plan.json")
"""What a run writes before its first stage: a directory holding only these holds no results."""

NOT_RECORDED_SECTIONS = ("stage", "inputs", "workdir", "distributed", "eval", "mesh", "checkpoint", "average")
NOT_RECORDED_FIELDS = ("train.steps", "train.memory_limit_gb", "train.reward_workers", "train.reward_timeout_s",
                       "train.resume", "model.remat", "grpo.grad_accum", "r1.reasoning_rl_steps", "r1.rl_all_steps",
                       "model.attention_impl", "model.decode_attention", "model.decode_kv_splits",
                       "model.unroll_decode", "model.decode_split_k", "model.decode_gemm", "model.decode_write_first",
                       "model.logits_chunk", "model.logprob_impl", "model.vocab_chunk")
NOT_RECORDED_NAMES = ("progress", "log_every", "sample_log_every", "save_every", "keep")
"""Field names that never change what a checkpoint means, in any section."""

SHAPE_FIELDS = tuple(f"model.{f}" for f in ARCH_FIELDS) + ("model.preset", "model.hf_checkpoint")
RESUME = ("auto", "weights")


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out |= _flat(v, f"{prefix}{k}.")
    else:
      out[f"{prefix}{k}"] = v
  return out


def recorded_fields(cfg: ml_collections.ConfigDict) -> dict:
  """The config's fields that decide what its checkpoints mean, dotted name -> JSON value."""
  d = {k: v for k, v in cfg.to_dict().items() if k not in NOT_RECORDED_SECTIONS}
  flat = {k: v for k, v in _flat(d).items()
          if k not in NOT_RECORDED_FIELDS and k.rsplit(".", 1)[-1] not in NOT_RECORDED_NAMES}
  if "model" in cfg:  # the shape as resolved (a preset's or checkpoint's value where the field is unset)
    from r1jax import config as config_lib
    resolved = config_lib.model_config(cfg)[0]
    trained_here = not cfg.model.hf_checkpoint and cfg.model.preset in presets.TRAINED_HERE
    flat |= {f"model.{f}": getattr(resolved, f) for f in ARCH_FIELDS}
    if trained_here and cfg.model.vocab_size is None:
      flat["model.vocab_size"] = None  # the trained tokenizer's (tokenizer.* is recorded)
  return json.loads(json.dumps(flat, sort_keys=True, default=str))  # tuples as lists, as read back


def differences(old: dict, new: dict) -> list[str]:
  """'field=old (now new)' for every field that differs, sorted."""
  missing = object()
  out = []
  for k in sorted(set(old) | set(new)):
    a, b = old.get(k, missing), new.get(k, missing)
    if a != b:
      out.append(f"{k}={'(unset)' if a is missing else repr(a)} (now {'(unset)' if b is missing else repr(b)})")
  return out


def _changes_shape(field: str) -> bool:
  return field in SHAPE_FIELDS or field.startswith("tokenizer.")


def holds_results(workdir: pathlib.Path) -> bool:
  """Anything in `workdir` besides the files a run writes before its first stage."""
  return workdir.is_dir() and any(p.name not in RUN_FILES for p in workdir.iterdir())


def check(cfg: ml_collections.ConfigDict) -> dict | None:
  """Before a run writes anything: None when `cfg.workdir` is new or was made with the same
  recorded fields (or holds no results yet); else the change to record with
  `--config.train.resume=weights`. Raises UserError naming the differing fields otherwise."""
  workdir = pathlib.Path(cfg.workdir)
  path = workdir / RECORD
  if not path.is_file() or not holds_results(workdir):
    return None
  try:
    old = json.loads(path.read_text())["fields"]
  except (ValueError, KeyError, TypeError) as e:
    raise errors.UserError("work directory", path, f"unreadable record ({type(e).__name__})",
                           "give a new --config.workdir, or delete the file to adopt this directory as it is") from None
  new = recorded_fields(cfg)
  diff = differences(old, new)
  if not diff:
    return None
  shape = [d for d in diff if _changes_shape(d.split("=", 1)[0])]
  resume = cfg.get("train", {}).get("resume", "auto")
  if shape:
    raise errors.UserError("config changed", path, f"this work directory's checkpoints were made with "
                           f"{'; '.join(shape)}: weights of another shape or tokenizer cannot be continued",
                           "give a new --config.workdir=DIR (or set those fields back)")
  if resume != "weights":
    raise errors.UserError("config changed", path, f"this work directory's checkpoints were made with "
                           f"{'; '.join(diff)}",
                           "give a new --config.workdir=DIR, or --config.train.resume=weights to continue these "
                           "weights with the new settings (recorded in the file)")
  return {"resume": "weights", "changed": diff, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def record(cfg: ml_collections.ConfigDict, change: dict | None) -> None:
  """Write `<workdir>/run_config.json` (after `check`): the recorded fields, and the history of
  changes continued with `train.resume=weights`."""
  workdir = pathlib.Path(cfg.workdir)
  path = workdir / RECORD
  history = []
  if path.is_file():
    try:
      history = json.loads(path.read_text()).get("history", [])
    except ValueError:
      history = []
  history += [change] if change else []
  workdir.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps({"fields": recorded_fields(cfg), "history": history}, indent=1))
  os.replace(tmp, path)


def check_and_record(cfg: ml_collections.ConfigDict) -> None:
  """`check`, then `record`: the first thing a run writes into its work directory."""
  import jax
  change = check(cfg)
  if jax.process_index() == 0:
    record(cfg, change)
