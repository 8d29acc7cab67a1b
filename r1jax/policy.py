"""A policy on disk: the directory a stage writes and the next one reads.

An r1jax policy directory is a sharded Orbax checkpoint of `{'params': ...}` whose meta holds the
model config and the tokenizer's path; a Hugging Face model directory (config.json +
safetensors) is read as a policy too, so any stage can start from either.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil

import jax

from r1jax import checkpoint as ckpt_lib
from r1jax import errors
from r1jax.model.config import ModelConfig, RopeScaling, abstract_params, param_shardings
from r1jax import tokenizer as tok_lib


def checkpointer(directory) -> ckpt_lib.Checkpointer:
  return ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(directory), save_every=1, keep=1, async_save=False))


def write(directory, step: int, tree: dict, meta: dict) -> None:
  """A one-step checkpoint written beside `directory` and renamed onto it, so a directory that is
  there is complete (a stage killed while writing, or rerun, replaces it)."""
  directory = pathlib.Path(directory)
  tmp = directory.with_name(directory.name + ".writing")
  shutil.rmtree(tmp, ignore_errors=True)
  with checkpointer(tmp) as ck:
    ck.save(step, tree, meta, force=True)
  if jax.process_index() == 0:
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def save_policy(directory, step: int, params, model_cfg: ModelConfig, tokenizer_path: str):
  """Parameters (sharded Orbax checkpoint) plus what is needed to use them: model config and tokenizer."""
  meta = {"model": dataclasses.asdict(model_cfg), "tokenizer": str(tokenizer_path), "step": int(step)}
  write(directory, step, {"params": params}, meta)


def is_hf(directory) -> bool:
  return (pathlib.Path(directory) / "config.json").is_file()


def check_dir(directory, field: str) -> None:
  """Before any work: `directory` (the value of config field `field`) is an r1jax policy (a
  checkpoint step folder) or a whole Hugging Face model directory; else a UserError naming it."""
  p = pathlib.Path(directory)
  where = f"{field}={str(directory)!r}"
  if not p.is_dir():
    raise errors.UserError("policy", where, "no such directory",
                           "give an r1jax policy directory (<workdir>/policy) or a Hugging Face model directory")
  weights = any((p / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json"))
  if (p / "policy").is_dir() and not weights:  # a run's directory holds a config.json of its own
    raise errors.UserError("policy", where, "this is a run directory", f"give {p / 'policy'}")
  if is_hf(p):
    from r1jax.model import hf_files
    hf_files.check_checkpoint(p, field)
    return
  if any(c.is_dir() and c.name.isdigit() for c in p.iterdir()):
    return
  raise errors.UserError("policy", where, "neither an r1jax policy (a checkpoint step folder) nor a Hugging Face "
                         "model (config.json)", "give a run's <workdir>/policy or a Hugging Face model directory")


def load_policy(directory, mesh, rules=None):
  """(model config, params, tokenizer) of a policy directory (or a Hugging Face model directory),
  restored into `mesh` shardings."""
  if not pathlib.Path(directory).is_dir():
    raise FileNotFoundError(f"checkpoint={str(directory)!r}: no such directory")
  if is_hf(directory):
    from r1jax.model import hf
    model_cfg, params = hf.load_hf_checkpoint(directory, mesh=mesh, rules=rules)
    return model_cfg, params, tok_lib.load_tokenizer(directory)
  with checkpointer(directory) as ck:
    meta = ck.restore_meta()
    if "model" not in meta:
      raise ValueError(f"checkpoint={str(directory)!r} was not written by save_policy (its meta has no model "
                       f"config); pass a policy directory such as <workdir>/policy")
    model_cfg = model_config(meta)
    shardings = param_shardings(model_cfg, mesh, rules)
    abstract = {"params": jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                                       abstract_params(model_cfg), shardings)}
    state, _ = ck.restore(None, abstract)
  return model_cfg, state["params"], tok_lib.load_tokenizer(meta["tokenizer"])


def load_config(directory) -> ModelConfig:
  """The model config of a policy or Hugging Face directory, without reading its parameters."""
  if is_hf(directory):
    import json
    from r1jax.model import hf_config
    return hf_config.config_from_hf(json.loads((pathlib.Path(directory) / "config.json").read_text()))
  with checkpointer(directory) as ck:
    return model_config(ck.restore_meta())


def model_config(meta: dict) -> ModelConfig:
  m = dict(meta["model"])
  if m.get("rope_scaling"):
    m["rope_scaling"] = RopeScaling(**m["rope_scaling"])
  return ModelConfig(**m)


def tokenizer_path(directory) -> str:
  """The tokenizer a policy directory was saved with."""
  with checkpointer(directory) as ck:
    return ck.restore_meta()["tokenizer"]
