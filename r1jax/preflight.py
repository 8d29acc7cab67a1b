"""Before any work, after the config is resolved: what depends on this machine rather than on the
config (a config is valid on any machine): a writable work directory, the files the run reads,
the free disk."""
from __future__ import annotations

import os
import pathlib
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1jax import config as config_lib
from r1jax import errors
from r1jax import memory
from r1jax import policy as policy_lib
from r1jax import tokenizer as tok_lib
from r1jax.model import config as model_config
from r1jax.rl import step as train_step
from r1jax.stages import context


def policy_fields(cfg: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(field, path) of the policies the pipeline's sections name."""
  if "r1" not in cfg:
    return []
  fields = ("cold_start.teacher", "distill.teacher", "prm.base", "prm.model", "mcts.base", "mcts.value_model")
  return [(f, cfg[f.split(".")[0]][f.split(".")[1]]) for f in fields if cfg[f.split(".")[0]][f.split(".")[1]]]


def check_before_work(cfg: ml_collections.ConfigDict, run) -> None:
  """After validation, before any work (`experiment.main` and `pipelines.run` call it): a writable
  work directory, the files the run reads (`check_inputs`) and the free disk (`check_disk`)."""
  for key in ("workdir", "out_dir"):
    if cfg.get(key):
      check_writable(cfg[key], key)
  if "tokenizer" in cfg:  # a training experiment (evaluate.py's validation reads its own files)
    check_inputs(cfg, run)
  check_disk(cfg, run)


def check_inputs(cfg: ml_collections.ConfigDict, run: config_lib.Run) -> None:
  """The files a run reads besides its config, opened and checked before any work: the policies
  the pipeline's sections name, the given stage inputs, a tokenizer file (it loads), a JSONL
  source (its rows parse and fill both splits)."""
  for field, path in policy_fields(cfg):
    policy_lib.check_dir(path, field)
  for name, path in run.inputs.items():
    if not pathlib.Path(path).exists():
      raise errors.UserError("stage input", f"inputs: {name}={path!r}", "no such file or directory",
                             "give an existing path (a run's <workdir>/<stage>/policy or data.jsonl)")
  if cfg.tokenizer.path:
    try:
      tok_lib.load_tokenizer(cfg.tokenizer.path)
    except Exception as e:  # pylint: disable=broad-except  (SentencePiece and tokenizers raise many types)
      raise errors.UserError("tokenizer", f"tokenizer.path={cfg.tokenizer.path!r}",
                             f"cannot be loaded ({type(e).__name__}: {errors.one_line(e)[:160]})",
                             "give a SentencePiece .model, a tokenizer.json or a Hugging Face directory") from None
  if run.data.source == "jsonl":
    context.load_examples(run.data)


def check_writable(path, field: str) -> None:
  """`path` is a directory this process can create files in (probed in its nearest existing
  ancestor with a temporary folder, removed at once); else a UserError naming the field."""
  import tempfile
  d = pathlib.Path(path).absolute()
  while not d.exists():
    d = d.parent
  why = f"{d} is not a directory" if not d.is_dir() else None
  if why is None:
    try:
      os.rmdir(tempfile.mkdtemp(prefix=".r1jax-write-probe-", dir=d))
    except OSError as e:
      why = f"{d} is not writable ({e.strerror or type(e).__name__})"
  if why:
    raise errors.UserError("work directory", f"{field}={str(path)!r}", why, f"give a --config.{field} you can write to")


def check_disk(cfg, run) -> None:
  """The checkpoints and policies the run will write fit the free disk (a 7B run writes a 57 GiB
  checkpoint); else a one-line error with the sizes and the knobs. LoRA checkpoints hold the
  adapters only; with lora.mode='auto' (full fine-tuning only if the device holds it) the check
  before work counts LoRA's, and the run checks again once the memory plan has chosen."""
  if cfg.get("stage") not in config_lib.WHOLE_RUN_STAGES or not isinstance(run, config_lib.Run):  # writes no checkpoint
    return
  ck, g = run.checkpoint, run.grpo
  if run.is_pipeline:
    r = run.r1
    steps = [r.reasoning_rl_steps, r.rl_all_steps] + ([r.reasoning_rl_steps + r.rl_all_steps] if r.compare_r1_zero else [])
    need = disk_need(run.model, run.optim, g.uses_reference, steps, ck.save_every, ck.keep,
                     policies=len(steps) * 2 + 4, sft_runs=2, lora=run.lora)
  else:
    need = disk_need(run.model, run.optim, g.uses_reference, [run.train.steps], ck.save_every, ck.keep,
                     lora=run.lora)
  check_free_disk(need, ck.directory)


def tree_bytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def disk_need(model_cfg, ocfg, with_ref: bool, rl_steps: Sequence[int], save_every: int, keep: int,
              policies: int = 2, sft_runs: int = 0, lora=None) -> dict:
  """Bytes a run writes at most: per RL run, the checkpoints on disk at once (up to `keep` plus
  the one being written) of its train state (parameters, AdamW moments, reference); per SFT run
  one checkpoint without the reference; and `policies` parameter copies (policy directories and
  Hugging Face exports). With `lora` (a LoRAConfig of rank > 0) an RL checkpoint holds the adapters
  and their moments only (the frozen base is the reference and is not written); policies are
  merged, whole. Shapes only: nothing is allocated."""
  params = model_config.abstract_params(model_cfg)
  p = tree_bytes(params)
  optimizer = train_step.make_optimizer(ocfg)
  opt = tree_bytes(jax.eval_shape(optimizer.init, params))
  state = p + opt + (p if with_ref else 0)
  if lora is not None and lora.enabled:
    from r1jax.model import lora as lora_lib
    adapters = jax.eval_shape(lambda: lora_lib.init_adapters(jax.random.key(0), model_cfg, lora))
    state = tree_bytes(adapters) + tree_bytes(jax.eval_shape(optimizer.init, adapters))
  ckpts = [min(-(-steps // save_every), keep + 1) for steps in rl_steps]
  total = sum(ckpts) * state + sft_runs * (p + opt) + policies * p
  return {"bytes": total, "state_bytes": state, "params_bytes": p, "checkpoints": sum(ckpts)}


def check_free_disk(need: dict, directory, free_bytes: int | None = None) -> None:
  """ValueError (one line: sizes and knobs) when `need` exceeds the free space where `directory` is."""
  import shutil
  d = pathlib.Path(directory).absolute()
  while not d.exists():
    d = d.parent
  free = shutil.disk_usage(d).free if free_bytes is None else free_bytes
  if need["bytes"] > free:
    raise ValueError(
        f"disk: {directory} has {free / memory.GiB:.1f} GiB free, this run writes up to {need['bytes'] / memory.GiB:.1f} GiB "
        f"({need['checkpoints']} checkpoints of the {need['state_bytes'] / memory.GiB:.1f} GiB train state, policies "
        f"of {need['params_bytes'] / memory.GiB:.1f} GiB): free space, put checkpoint.directory / workdir on a larger "
        f"disk, lower checkpoint.keep or raise checkpoint.save_every")
