"""Before any work, after the config is resolved: what depends on this machine rather than on the
config (a config is valid on any machine): a writable work directory, the files the run reads,
the free disk."""
from __future__ import annotations

import os
import pathlib

import ml_collections

from r1jax import config as config_lib
from r1jax import errors
from r1jax import policy as policy_lib
from r1jax import tokenizer as tok_lib
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
  for name, path in config_lib.given_inputs(cfg.inputs).items():
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
  from r1jax import memory
  if cfg.get("stage") not in ("all", "r1_zero") or not isinstance(run, config_lib.Run):  # writes no checkpoint
    return
  ck, g = run.checkpoint, run.grpo
  if run.is_pipeline:
    r = run.r1
    steps = [r.reasoning_rl_steps, r.rl_all_steps] + ([r.reasoning_rl_steps + r.rl_all_steps] if r.compare_r1_zero else [])
    need = memory.disk_need(run.model, run.optim, g.uses_reference, steps, ck.save_every, ck.keep,
                            policies=len(steps) * 2 + 4, sft_runs=2)
  else:
    need = memory.disk_need(run.model, run.optim, g.uses_reference, [run.train.steps], ck.save_every, ck.keep,
                            lora=run.lora)
  memory.check_disk(need, ck.directory)
