"""The experiment boundary: the config (generated from the library dataclasses, validated before
any work), `main` for `experiments/*.py`, and the R1-Zero run as a pipeline of stages
(`r1jax.stages`, `r1jax.pipeline`).

--config.stage of experiments/r1_zero.py:
- 'r1_zero': evaluate the base model, GRPO with the R1 template and rule rewards, evaluate
  again, print a summary table, write plots and `summary.json`.
- 'pretrain': only build (or load) the base model.
- 'evaluate': only evaluate the base model.
- 'average': average the parameters of the run's last-k (or chosen) GRPO checkpoints into
  `workdir/policy_avg` (sharded: each checkpoint is read into the mesh, never gathered).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
import time

# JAX takes 75% of a GPU's memory by default; an experiment plans its memory against what the
# device really has, so it takes 95% (set XLA_PYTHON_CLIENT_MEM_FRACTION yourself to change it).
# Before jax touches a device: the entry points import this module first.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

from absl import logging as absl_logging
import jax
import ml_collections
from ml_collections import config_dict

from r1jax import checkpoint as ckpt_lib
from r1jax.tasks import traces as traces_lib
from r1jax import distributed
from r1jax import errors
from r1jax import pipeline
from r1jax import stages as stages_lib
from r1jax import model as model_lib
from r1jax import policy as policy_lib
from r1jax.policy import load_policy, save_policy  # noqa: F401 (the policy directory API)
from r1jax import sharding
from r1jax import templates
from r1jax import tokenizer as tok_lib
from r1jax import train
from r1jax import train_step
from r1jax import workdir as workdir_lib
from r1jax import curation
from r1jax.sft import loop as sft_loop
from r1jax.stages import cold_start_data, context, distill, rejection_sampling, reward_model, rl_all
from r1jax.stages import mcts as mcts_stage
from r1jax.stages import prm as prm_stage
from r1jax.stages.average import AverageConfig
from r1jax.pretraining import PretrainConfig
from r1jax import config as config_lib
from r1jax import datasets as datasets_lib
from r1jax.config import to_dataclass
from r1jax.evaluation import harness
from r1jax.grpo.config import GRPOConfig, PPOConfig
from r1jax.logger import format_table, plot_run
from r1jax.lora import LoRAConfig
from r1jax.rewards import combine
from r1jax.sampler import SamplingConfig
from r1jax.tasks import arithmetic

STAGES = tuple(stages_lib.R1_ZERO_SELECTIONS)
ARCH_FIELDS = context.ARCH_FIELDS


def base_config() -> ml_collections.ConfigDict:
  """Every section of an experiment at the library's defaults (the one source of truth).

  Experiment files start from this and override only what differs. Differences from the bare
  dataclass defaults, all of them experiment-level: the model section's architecture fields are
  placeholders (None: the preset's, or the Hugging Face config.json's, value), `model.remat` and
  `grpo.grad_accum` default to 'auto' (the memory planner chooses), and the fields one section
  derives from another are placeholders: `sampling.num_samples` (= grpo.num_generations),
  `sampling.max_new_tokens` (= grpo.max_completion_length), `sampling.pad_id` (the tokenizer's),
  `optim.total_steps` (= train.steps), `pretrain.optim.total_steps` (= pretrain.steps),
  `checkpoint.directory` (= <workdir>/ckpt). `sampling.eos_ids` adds stop ids to the tokenizer's EOS.
  """
  c = ml_collections.ConfigDict()
  c.stage = "r1_zero"
  c.inputs = ""  # NAME=PATH,...: a stage's inputs from given paths instead of this work directory's stages
  # (STAGE.NAME=PATH: one stage's input, also when the whole pipeline runs)
  c.workdir = "runs/r1_zero"
  c.seed = 0
  c.template = "r1_zero"
  c.distributed = False  # several processes: r1jax.distributed.initialize() first (tpu_scripts/launch_*.sh)
  c.model = config_lib.section(model_lib.ModelConfig, all_placeholders=True)
  c.model.preset = "tiny"
  c.model.hf_checkpoint = ""
  c.model.remat = "auto"
  c.tokenizer = config_lib.section(tok_lib.TokenizerConfig)
  c.mesh = config_lib.section(sharding.MeshConfig)
  c.data = config_lib.section(datasets_lib.DataConfig)
  c.pretrain = config_lib.section(PretrainConfig)
  c.traces = config_lib.section(traces_lib.TraceConfig)  # data.source='chains': the pretraining corpus's behaviours
  c.pretrain.optim.total_steps = config_dict.placeholder(int)
  c.sampling = config_lib.section(SamplingConfig, derived=("num_samples", "max_new_tokens", "pad_id"))
  c.sampling.prompt_buckets = ()
  c.grpo = config_lib.section(GRPOConfig, grad_accum="auto")
  c.ppo = config_lib.section(PPOConfig)  # the critic of grpo.advantage_estimator='gae'
  c.optim = config_lib.section(train_step.OptimConfig, derived=("total_steps",))
  c.rewards = config_lib.section(combine.RewardsConfig)
  c.train = config_lib.section(train.TrainConfig)
  c.eval = config_lib.section(harness.EvalConfig)
  c.checkpoint = config_lib.section(ckpt_lib.CheckpointConfig, derived=("directory",))
  c.average = config_lib.section(AverageConfig)
  c.lora = config_lib.section(LoRAConfig)
  return c


R1_SECTIONS = {"r1": stages_lib.R1Config, "cold_start": cold_start_data.ColdStartConfig,
               "curation": curation.FilterConfig, "sft": sft_loop.SFTConfig,
               "rejection": rejection_sampling.RejectionConfig, "reward_model": reward_model.RewardModelConfig,
               "rl_all": rl_all.RLAllConfig, "distill": distill.DistillConfig, "prm": prm_stage.PRMConfig,
               "mcts": mcts_stage.MCTSConfig}
"""The sections experiments/r1.py adds to `base_config()` (one dataclass each)."""


def r1_config() -> ml_collections.ConfigDict:
  """experiments/r1.py's config: every base section plus the pipeline's stages'."""
  c = base_config()
  c.stage = "all"
  c.workdir = "runs/r1"
  for name, cls in R1_SECTIONS.items():
    c[name] = config_lib.section(cls)
  return c


@errors.config_errors
def apply_overrides(cfg: ml_collections.ConfigDict, overrides: dict, where: str) -> ml_collections.ConfigDict:
  """`cfg` (a copy) with dotted overrides {'grpo.beta': 0.0} applied; an unknown field is an error."""
  cfg = copy.deepcopy(cfg)  # keeps the typed placeholders (to_dict would drop their types)
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    node = cfg
    for p in path:
      if p not in node:
        raise ValueError(f"{where}: unknown config field {key!r}")
      node = node[p]
    if leaf not in node:
      raise ValueError(f"{where}: unknown config field {key!r}")
    if isinstance(node[leaf], str) and isinstance(value, int) and not isinstance(value, bool):
      value = str(value)  # 'auto'-or-int fields (grpo.grad_accum) are strings, as the shell gives them
    try:
      node[leaf] = value
    except TypeError as e:
      node[leaf] = _coerce(node.get_type(leaf), value, f"{where}: {key}", e)
  return cfg


def _coerce(typ, value, name: str, error: TypeError):
  """A number given as text (a sweep's --set optim.learning_rate=nan) as the field's type; else a
  ValueError naming the field."""
  if typ in (int, float) and isinstance(value, str):
    try:
      return typ(value)
    except ValueError:
      pass
  raise ValueError(f"{name}={value!r} is not of the field's type {getattr(typ, '__name__', typ)} ({error})")


def _hf_config(path: str) -> dict:
  """The checkpoint's config.json, after checking its files (`hf.check_checkpoint`)."""
  from r1jax import hf
  if not pathlib.Path(path).is_dir():
    raise errors.UserError("Hugging Face checkpoint", f"model.hf_checkpoint={path!r}", "no such directory",
                           "give a directory holding config.json, *.safetensors and tokenizer files")
  hf.check_checkpoint(path)
  return json.loads((pathlib.Path(path) / "config.json").read_text())


def model_config(cfg: ml_collections.ConfigDict) -> tuple[model_lib.ModelConfig, str]:
  """The model section resolved over its preset or checkpoint; (config, remat: a value or 'auto')."""
  m = cfg.model.to_dict()
  preset, ckpt, remat = m.pop("preset"), m.pop("hf_checkpoint"), m.pop("remat")
  rope = m.pop("rope_scaling")
  over = {k: v for k, v in m.items() if v is not None}
  if ckpt:
    clash = sorted(set(over) & set(ARCH_FIELDS))
    if clash:
      raise ValueError(f"model.{clash[0]}={over[clash[0]]!r} cannot be set with model.hf_checkpoint: the "
                       f"checkpoint's config.json fixes {', '.join('model.' + c for c in clash)}")
    from r1jax import hf
    if str(ckpt).lower().endswith(".gguf"):
      raise ValueError(f"model.hf_checkpoint={ckpt!r} is a GGUF file: convert it once to a Hugging Face directory "
                       f"(python -m r1jax.gguf {ckpt} DIR) and give that directory")
    base = hf.config_from_hf(_hf_config(ckpt))
  else:
    if preset not in model_lib.PRESETS:
      raise ValueError(f"model.preset={preset!r} is not one of {sorted(model_lib.PRESETS)}")
    base = model_lib.PRESETS[preset]
    if preset not in model_lib.TRAINED_HERE and not m.get("vocab_size"):
      raise ValueError(f"model.hf_checkpoint='' but model.preset={preset!r} is a released model: give its Hugging "
                       f"Face directory (--config.model.hf_checkpoint=DIR) so weights and tokenizer match")
  if rope.get("kind") == "none":
    over["rope_scaling"] = None
  elif any(v is not None for v in rope.values()):
    start = base.rope_scaling or model_lib.RopeScaling()
    over["rope_scaling"] = config_lib.to_dataclass(
        model_lib.RopeScaling, dataclasses.asdict(start) | {k: v for k, v in rope.items() if v is not None},
        "model.rope_scaling")
  model_cfg = config_lib.to_dataclass(model_lib.ModelConfig, dataclasses.asdict(base) | over
                                      | {"rope_scaling": over.get("rope_scaling", base.rope_scaling),
                                         "remat": "none" if remat == "auto" else remat}, "model")
  return model_cfg, remat


@errors.config_errors
def validate(cfg: ml_collections.ConfigDict) -> dict:
  """Every section as its frozen dataclass, and every check that spans sections.

  Raises ValueError naming the field, its value and what is allowed; compiles nothing, trains
  no tokenizer and loads no weights (a checkpoint's config.json is read).
  """
  is_r1 = "r1" in cfg
  known = set(r1_config() if is_r1 else base_config())
  unknown = sorted(set(cfg) - known)
  if unknown:
    raise ValueError(f"unknown config field(s) {unknown}; the top level takes {sorted(known)}")
  given_inputs(cfg.inputs)
  allowed = ("all",) + stages_lib.R1_STAGES if is_r1 else STAGES
  if cfg.stage not in allowed:
    raise ValueError(f"stage={cfg.stage!r} is not one of {allowed}")
  if cfg.stage in ("all", "r1_zero"):
    for name in given_inputs(cfg.inputs):
      stage, dot, _ = name.partition(".")
      if not dot or stage not in allowed:
        raise ValueError(f"inputs={cfg.inputs!r} with stage={cfg.stage!r}: {name!r} must name its stage "
                         f"(STAGE.NAME=PATH, e.g. sft.data=FILE; stages: {allowed[1:]}), or set --config.stage=NAME")
  templates.check_spec(cfg.template)
  model_cfg, remat = model_config(cfg)
  if cfg.model.hf_checkpoint and cfg.model.preset == "tiny-r1-zero":
    print("note: model.hf_checkpoint with the default config: the model's shape is the checkpoint's, the "
          "hyperparameters the tiny default's; a named config (--config=experiments/FILE.py:NAME) sets real-model ones")
  grpo_sec = cfg.grpo.to_dict()
  grad_accum = config_lib.int_or_auto("grpo.grad_accum", grpo_sec.pop("grad_accum"))
  gcfg = to_dataclass(GRPOConfig, grpo_sec | {"grad_accum": 1 if grad_accum == "auto" else grad_accum}, "grpo")
  tcfg = to_dataclass(train.TrainConfig, cfg.train, "train")
  pre = to_dataclass(PretrainConfig, cfg.pretrain, "pretrain")
  if cfg.pretrain.optim.total_steps is None:
    pre = dataclasses.replace(pre, optim=dataclasses.replace(pre.optim, total_steps=max(pre.steps, 1)))
  samp = cfg.sampling.to_dict()
  for field, want, src in (("num_samples", gcfg.num_generations, "grpo.num_generations"),
                           ("max_new_tokens", gcfg.max_completion_length, "grpo.max_completion_length")):
    if samp[field] is not None and samp[field] != want:
      raise ValueError(f"sampling.{field}={samp[field]} must equal {src}={want} (leave it unset to follow it)")
    samp[field] = want
  out = {
      "model": model_cfg,
      "remat": remat,
      "grad_accum": grad_accum,
      "tokenizer": to_dataclass(tok_lib.TokenizerConfig, cfg.tokenizer, "tokenizer"),
      "mesh": to_dataclass(sharding.MeshConfig, cfg.mesh, "mesh"),
      "data": to_dataclass(datasets_lib.DataConfig, cfg.data, "data"),
      "pretrain": pre,
      "sampling": to_dataclass(SamplingConfig, samp, "sampling"),
      "grpo": gcfg,
      "ppo": to_dataclass(PPOConfig, cfg.ppo, "ppo"),
      "optim": to_dataclass(train_step.OptimConfig, cfg.optim.to_dict() | {
          "total_steps": cfg.optim.total_steps or tcfg.steps}, "optim"),
      "rewards": to_dataclass(combine.RewardsConfig, cfg.rewards, "rewards"),
      "train": tcfg,
      "eval": to_dataclass(harness.EvalConfig, cfg.eval, "eval"),
      "checkpoint": to_dataclass(ckpt_lib.CheckpointConfig, cfg.checkpoint, "checkpoint",
                                 directory=cfg.checkpoint.directory or str(pathlib.Path(cfg.workdir) / "ckpt")),
      "average": to_dataclass(AverageConfig, cfg.average, "average"),
      "traces": to_dataclass(traces_lib.TraceConfig, cfg.traces, "traces"),
      "lora": to_dataclass(LoRAConfig, cfg.lora, "lora"),
  }
  if out["lora"].enabled and cfg.stage == "average":
    raise ValueError(f"stage='average' with lora.rank={out['lora'].rank}: the checkpoints hold adapters, whose mean "
                     f"is not the mean of the merged weights; average full fine-tuning runs (lora.rank=0)")
  if out["lora"].enabled and out["lora"].mode == "on" and gcfg.ref_reset_every:
    raise ValueError(f"grpo.ref_reset_every={gcfg.ref_reset_every} with lora.rank={out['lora'].rank}: the LoRA "
                     f"reference is the frozen base (adapters off) and cannot be reset; set one of them to 0")
  for name, cls in R1_SECTIONS.items():
    if is_r1:
      out[name] = to_dataclass(cls, cfg[name], name)
  for field, path in _policy_fields(cfg):
    if not pathlib.Path(path).is_dir():
      raise ValueError(f"{field}={path!r}: no such directory (give an r1jax policy or a Hugging Face model directory)")
  mesh_shape = out["mesh"].shape(jax.device_count())
  shards = mesh_shape[0] * mesh_shape[1]
  rows = tcfg.prompts_per_step * gcfg.num_generations
  accum = 1 if grad_accum == "auto" else grad_accum
  if rows % gcfg.num_minibatches or (rows // gcfg.num_minibatches) % (shards * accum):
    raise ValueError(f"train.prompts_per_step * grpo.num_generations = {rows} rows must split into "
                     f"grpo.num_minibatches={gcfg.num_minibatches} minibatches, each divisible by "
                     f"grpo.grad_accum={accum} x the data*fsdp mesh size {shards}")
  if tcfg.overlong_weight and not 0 < tcfg.overlong_buffer <= gcfg.max_completion_length:
    raise ValueError(f"train.overlong_buffer={tcfg.overlong_buffer} must lie in [1, grpo.max_completion_length="
                     f"{gcfg.max_completion_length}] when train.overlong_weight={tcfg.overlong_weight} > 0")
  if cfg.model.hf_checkpoint and cfg.tokenizer.path:
    raise ValueError(f"tokenizer.path={cfg.tokenizer.path!r} cannot be set with model.hf_checkpoint (the "
                     f"checkpoint's own tokenizer is used)")
  if not cfg.model.hf_checkpoint and cfg.stage in ("evaluate", "r1_zero", "average") and pre.steps == 0:
    print("note: pretrain.steps=0: the tiny base model stays randomly initialized")
  return out


def _policy_fields(cfg: ml_collections.ConfigDict) -> list[tuple[str, str]]:
  """(field, path) of the policies the pipeline's sections name."""
  if "r1" not in cfg:
    return []
  fields = ("cold_start.teacher", "distill.teacher", "prm.base", "prm.model", "mcts.base", "mcts.value_model")
  return [(f, cfg[f.split(".")[0]][f.split(".")[1]]) for f in fields if cfg[f.split(".")[0]][f.split(".")[1]]]


def check_before_work(cfg: ml_collections.ConfigDict, parts: dict) -> None:
  """After `validate`, before any work (`main`, `run`, `run_pipeline` call it): what depends on
  this machine rather than on the config: a writable work directory, the files the run reads
  (`check_inputs`) and the free disk (`check_disk`). A config is valid on any machine."""
  for key in ("workdir", "out_dir"):
    if cfg.get(key):
      check_writable(cfg[key], key)
  if "tokenizer" in cfg:  # a training experiment (evaluate.py's validation reads its own files)
    check_inputs(cfg, parts)
  check_disk(cfg, parts)


def check_inputs(cfg: ml_collections.ConfigDict, parts: dict) -> None:
  """The files a run reads besides its config, opened and checked before any work: the policies
  the pipeline's sections name, the given stage inputs, a tokenizer file (it loads), a JSONL
  source (its rows parse and fill both splits)."""
  for field, path in _policy_fields(cfg):
    policy_lib.check_dir(path, field)
  for name, path in given_inputs(cfg.inputs).items():
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
  if parts["data"].source == "jsonl":
    context.load_examples(parts["data"])


def load_experiment(path):
  """An experiment file (experiments/NAME.py) as a module, to build on its configs and sweeps."""
  import importlib.util
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f"{path.stem}_experiment", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


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


def check_disk(cfg, parts: dict) -> None:
  """Before any work (after `validate`; `check_before_work` calls it): the checkpoints and policies the
  run will write fit the free disk (a 7B run writes a 57 GiB checkpoint); else a one-line error
  with the sizes and the knobs. Not part of `validate`: a config is valid on any machine."""
  from r1jax import memory
  if cfg.get("stage") not in ("all", "r1_zero") or "checkpoint" not in parts:  # writes no checkpoint
    return
  model_cfg = parts["model"]
  ck, g = parts["checkpoint"], parts["grpo"]
  if "r1" in parts:
    r = parts["r1"]
    steps = [r.reasoning_rl_steps, r.rl_all_steps] + ([r.reasoning_rl_steps + r.rl_all_steps] if r.compare_r1_zero else [])
    need = memory.disk_need(model_cfg, parts["optim"], g.beta > 0, steps, ck.save_every, ck.keep,
                            policies=len(steps) * 2 + 4, sft_runs=2)
  else:
    need = memory.disk_need(model_cfg, parts["optim"], g.beta > 0, [parts["train"].steps], ck.save_every, ck.keep)
  memory.check_disk(need, ck.directory)


def _fail(prefix: str, msg) -> None:
  """One line on stderr, exit status 2."""
  import sys
  print(f"{prefix}{errors.one_line(msg)}", file=sys.stderr)
  sys.exit(2)


def _unknown_field(e: Exception, argv: list[str]) -> str:
  """The one-line message for config_flags' error on an unknown --config.* field."""
  while e.args and isinstance(e.args[0], BaseException):  # an AttributeError wrapping the KeyError
    e = e.args[0]
  text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
  first, _, hint = text.partition("\n")
  name = first.strip("\"' ")
  bad = [a for a in argv if a.split("=")[0].endswith("." + name)]
  field = (bad or [name])[0].split("=")[0].removeprefix("--config.")
  hint = f" ({hint.strip()})" if hint.strip() else ""
  return (f"unknown config field {field!r}: no such field {name!r} in its section{hint}; "
          f"python {argv[0] if argv else 'EXPERIMENT'} --helpfull lists them")


def main(sweep=None, *, check=None, run_fn=None) -> None:
  """`__main__` of an experiment file: --config (this file, or `FILE:NAME` for a named config),
  --sweep_index. A config error (raised by `check`, default `validate`) prints one line and
  exits with status 2 before anything is built; so does a `UserError` (a bad file, checkpoint or
  work directory found later: `error: ...`) and a run stopped on NaN/inf updates
  (`train.NonFiniteError`). Any other exception keeps its traceback."""
  import sys
  from absl import app, flags
  from ml_collections import config_flags

  try:  # config_flags reads the --config.* overrides here already
    config_flags.DEFINE_config_file("config", sys.modules["__main__"].__file__,
                                    "experiment config: FILE or FILE:NAME", lock_config=False)
  except (AttributeError, KeyError) as e:
    _fail("config error: ", _unknown_field(e, sys.argv))
  flags.DEFINE_integer("sweep_index", -1, "apply sweep()[i] on top of the config")

  def _main(argv):
    if len(argv) > 1:
      _fail("config error: ", f"unexpected arguments {argv[1:]}; settings are flags: --config.SECTION.FIELD=VALUE")
    try:
      cfg = with_sweep(flags.FLAGS.config, sweep() if sweep else [], flags.FLAGS.sweep_index)
      if cfg.get("distributed", False):  # before validation counts the devices of every process
        distributed.initialize()
      check_before_work(cfg, (check or validate)(cfg))
    except errors.UserError as e:
      _fail(e.prefix, e)
    except (ValueError, FileNotFoundError) as e:
      _fail("config error: ", e)
    try:
      (run_fn or run)(cfg)
    except errors.UserError as e:
      _fail(e.prefix, e)
    except train.NonFiniteError as e:  # training diverged: the message names the knob and the last checkpoint
      _fail("error: training diverged: ", e)

  def parse(argv):  # a bad --config.x=value or an unknown config name: one line, status 2
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      lines = [l for l in str(e).splitlines() if l.strip() and not l.startswith(("Traceback", "  "))]
      _fail("config error: ", lines[-1] if lines else type(e).__name__)

  app.run(_main, flags_parser=parse)


# ----------------------------------------------------------------------------- policy on disk


def with_sweep(cfg: ml_collections.ConfigDict, sweep: list[dict], index: int) -> ml_collections.ConfigDict:
  """`cfg` with the dotted overrides of sweep[index] applied (index -1: unchanged)."""
  if index < 0:
    return cfg
  if index >= len(sweep):
    raise ValueError(f"sweep_index={index} but the sweep has {len(sweep)} entries")
  return apply_overrides(cfg, sweep[index], f"sweep entry {index}")


def plan_memory(parts, mesh, workdir: pathlib.Path) -> dict:
  """Resolve model.remat / grpo.grad_accum ('auto': the cheapest setting that fits) before any
  rollout; writes <workdir>/memory_plan.json and updates `parts`."""
  from r1jax import memory
  tcfg, gcfg = parts["train"], parts["grpo"]
  limit = int(tcfg.memory_limit_gb * memory.GiB) if tcfg.memory_limit_gb else None
  remat = parts["remat"]
  asked_lora = parts.get("lora", LoRAConfig())
  plan, parts["lora"] = memory.plan_lora(parts["model"], gcfg, parts["optim"], parts["sampling"], mesh,
                                         prompts_per_step=tcfg.prompts_per_step, prompt_len=tcfg.max_prompt_len,
                                         remat=remat, grad_accum=parts["grad_accum"], limit_bytes=limit,
                                         temperature=parts["sampling"].temperature or 1.0,
                                         rules=sharding.rules_table(parts["mesh"].rules), lora=asked_lora)
  parts["model"] = dataclasses.replace(parts["model"], remat=plan.remat)
  parts["grpo"] = dataclasses.replace(gcfg, grad_accum=plan.grad_accum)
  lcfg = parts["lora"]
  if lcfg.enabled:  # (lora.mode='auto' chose LoRA, or 'on')
    if gcfg.ref_reset_every:
      print(f"note: LoRA: the reference is the frozen base (adapters off); grpo.ref_reset_every="
            f"{gcfg.ref_reset_every} -> 0")
      parts["grpo"] = dataclasses.replace(parts["grpo"], ref_reset_every=0)
    if lcfg.learning_rate:
      parts["optim"] = dataclasses.replace(parts["optim"], learning_rate=lcfg.learning_rate)
  summary = plan.summary() | {"lora_rank": parts["lora"].rank, "learning_rate": parts["optim"].learning_rate,
                              "asked": {"model.remat": remat, "grpo.grad_accum": parts["grad_accum"],
                                        "lora.rank": asked_lora.rank, "lora.mode": asked_lora.mode}}
  (workdir / "memory_plan.json").write_text(json.dumps(summary, indent=1))
  measured = (f"; train state {plan.state_bytes / memory.GiB:.2f} GiB per device; per program (arguments + "
              "temporaries + outputs) "
              + ", ".join(f"{k} {v.peak / memory.GiB:.2f} GiB" for k, v in plan.phases.items())) if plan.phases else ""
  lora = f" lora.rank={parts['lora'].rank}" if asked_lora.enabled else ""
  print(f"memory plan: model.remat={plan.remat} grpo.grad_accum={plan.grad_accum}{lora} ({plan.reason}){measured}")
  return summary


# ----------------------------------------------------------------------------- run


def fingerprint(cfg: ml_collections.ConfigDict) -> str:
  """What a finished stage's record is checked against: the config, less what only picks stages
  or paths or shows progress."""
  d = cfg.to_dict()
  for k in ("stage", "inputs"):
    d.pop(k, None)
  d.get("train", {}).pop("progress", None)
  return json.dumps(d, sort_keys=True, default=str)


def given_inputs(spec: str) -> dict:
  """--config.inputs='policy=DIR,data=FILE' -> {'policy': 'DIR', 'data': 'FILE'}."""
  out = {}
  for item in filter(None, (x.strip() for x in spec.split(","))):
    name, eq, path = item.partition("=")
    if not eq or not name or not path:
      raise ValueError(f"inputs={spec!r}: each entry is NAME=PATH (e.g. policy=runs/r1/sft/policy)")
    out[name] = path
  return out


def run(cfg: ml_collections.ConfigDict) -> dict:
  """Run the configured stage(s) of the R1-Zero pipeline; the full run writes `summary.json`."""
  t_start = time.time()
  if cfg.get("distributed", False):  # before anything creates the backends
    distributed.initialize()
  parts = validate(cfg)
  check_before_work(cfg, parts)
  workdir_lib.check_and_record(cfg)  # before anything else is written
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every save at INFO
  ctx = context.build(cfg, parts)
  stages = stages_lib.r1_zero()
  with jax.set_mesh(ctx.mesh):
    resolved = ml_collections.ConfigDict(cfg.to_dict())
    if cfg.stage == "r1_zero":  # before any weights are loaded or trained
      plan = plan_memory(parts, ctx.mesh, ctx.workdir)
      resolved.model.remat, resolved.grpo.grad_accum = plan["remat"], str(plan["grad_accum"])
      resolved.lora.rank = plan["lora_rank"]
    (ctx.workdir / "config.json").write_text(resolved.to_json_best_effort(indent=1))
    out = pipeline.run(ctx, stages, fingerprint(cfg), only=set(stages_lib.R1_ZERO_SELECTIONS[cfg.stage]),
                       given=given_inputs(cfg.inputs))
  if cfg.stage == "pretrain":
    return {"num_params": ctx.model_cfg.num_params()}
  if cfg.stage == "average":
    return {"averaged_steps": out["average"]["averaged_steps"]}
  base = json.loads(pathlib.Path(out["evaluate_base"]["summary"]).read_text())
  if cfg.stage == "evaluate":
    return base
  final = json.loads(pathlib.Path(out["evaluate_final"]["summary"]).read_text())
  plots = plot_run(ctx.workdir)
  summary = {"base_accuracy": base["pass@1"], "final_accuracy": final["pass@1"],
             "base_format_rate": base["format_rate"], "format_rate": final["format_rate"],
             "base_mean_length": base["mean_length"], "final_mean_length": final["mean_length"],
             "eval_problems": len(ctx.eval_ex), "train_steps": parts["train"].steps,
             "memory_plan": {k: plan[k] for k in ("remat", "grad_accum", "reason")},
             "wall_seconds": time.time() - t_start, "plots": [str(p) for p in plots]}
  (ctx.workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  rows = [(k, base[k], final[k]) for k in ("pass@1", "format_rate", "mean_length", "reflection_rate")
          if k in base]
  print(format_table(rows, ("held-out metric", "base", "after GRPO")))
  print(f"wall time {summary['wall_seconds']:.0f} s; summary, metrics and plots in {ctx.workdir}")
  return summary


TABLE_ROWS = (("teacher", "evaluate_teacher"), ("base", "evaluate_base"), ("R1-Zero", "evaluate_r1_zero"), ("cold start SFT", "evaluate_cold_start_sft"),
              ("reasoning RL", "evaluate_reasoning_rl"), ("SFT of base on rejection samples", "evaluate_sft"),
              ("RL all scenarios", "evaluate_rl_all"), ("checkpoint average", "evaluate_average"),
              ("student base", "evaluate_student_base"), ("distilled student", "evaluate_distill"))
TABLE_METRICS = ("pass@1", "format_rate", "language_consistency", "mean_length")


def stage_table(workdir) -> list[tuple]:
  """(row name, held-out pass@1, strict format rate, language consistency, mean length) of every
  evaluation stage that has run in `workdir`."""
  rows = []
  for label, stage in TABLE_ROWS:
    rec = pipeline.read_record(workdir, stage)
    if rec is not None:
      m = json.loads(pathlib.Path(rec["outputs"]["summary"]).read_text())
      rows.append((label,) + tuple(m[k] for k in TABLE_METRICS))
  return rows


def run_stages(cfg: ml_collections.ConfigDict, parts: dict, stages: list, only: set | None = None,
               given: dict | None = None):
  """`stages` (those in `only`, if given) in cfg.workdir after the memory plan; (context, outputs by
  stage). Also for experiments that run part of a pipeline (experiments/cold_start.py)."""
  workdir_lib.check_and_record(cfg)  # before anything else is written
  absl_logging.set_verbosity(absl_logging.WARNING)
  ctx = context.build(cfg, parts)
  with jax.set_mesh(ctx.mesh):
    plan = plan_memory(parts, ctx.mesh, ctx.workdir)
    resolved = ml_collections.ConfigDict(cfg.to_dict())
    resolved.model.remat, resolved.grpo.grad_accum = plan["remat"], str(plan["grad_accum"])
    resolved.lora.rank = plan["lora_rank"]
    (ctx.workdir / "config.json").write_text(resolved.to_json_best_effort(indent=1))
    return ctx, pipeline.run(ctx, stages, fingerprint(cfg), only=only, given=given)


def run_pipeline(cfg: ml_collections.ConfigDict, stages_fn=stages_lib.r1, header: str = "after stage") -> dict:
  """experiments/r1.py (and distill.py): the configured stage, or all of them, then the table of
  every evaluated stage (also `<workdir>/summary.json` and `<workdir>/plots/stages.png`)."""
  t_start = time.time()
  if cfg.get("distributed", False):
    distributed.initialize()
  parts = validate(cfg)
  check_before_work(cfg, parts)
  stages = stages_fn(parts)
  names = [s.name for s in stages]
  if cfg.stage != "all" and cfg.stage not in names:
    raise ValueError(f"stage={cfg.stage!r} is not part of this configuration's pipeline {names}")
  only = None if cfg.stage == "all" else {cfg.stage}
  pipeline.check_inputs(cfg.workdir, stages, only, given_inputs(cfg.inputs))  # before the tokenizer and compiles
  ctx, _ = run_stages(cfg, parts, stages, only, given_inputs(cfg.inputs))
  rows = stage_table(ctx.workdir)
  summary = {"rows": {r[0]: dict(zip(TABLE_METRICS, r[1:])) for r in rows},
             "stage_seconds": {n: (pipeline.read_record(ctx.workdir, n) or {}).get("wall_seconds") for n in names},
             "wall_seconds": time.time() - t_start}
  if cfg.stage == "all":
    (ctx.workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  if rows:
    from r1jax.logger import plot_stages
    summary["plot"] = str(plot_stages(rows, TABLE_METRICS, ctx.workdir / "plots" / "stages.png"))
    print(format_table(rows, (f"held-out, {header}",) + TABLE_METRICS))
  print(f"wall time {summary['wall_seconds']:.0f} s; stages, table and plot in {ctx.workdir}")
  return summary


@errors.config_errors
def validate_distill(cfg: ml_collections.ConfigDict) -> dict:
  """experiments/distill.py's checks: `validate`, and a teacher is given."""
  if not cfg.distill.teacher:
    raise ValueError("distill.teacher='' : give the teacher policy or Hugging Face directory "
                     "(--config.distill.teacher=runs/r1/rl_all/policy)")
  return validate(cfg)


def run_distill(cfg: ml_collections.ConfigDict) -> dict:
  """experiments/distill.py: the student shares the teacher's tokenizer."""
  teacher = cfg.distill.teacher
  if not cfg.tokenizer.path and not cfg.model.hf_checkpoint:
    tok = teacher if policy_lib.is_hf(teacher) else policy_lib.tokenizer_path(teacher)
    cfg = apply_overrides(cfg, {"tokenizer.path": str(tok)}, "distill")
  return run_pipeline(cfg, stages_lib.distill_stages, "distillation")


def evaluation_config() -> ml_collections.ConfigDict:
  """experiments/evaluate.py's config: what to evaluate on which data, sections from the dataclasses."""
  c = ml_collections.ConfigDict()
  c.checkpoint = "runs/r1_zero/policy"  # an r1jax policy directory (written by experiments/r1_zero.py)
  c.hf_checkpoint = ""  # or a Hugging Face Qwen2 / Qwen3 / Llama directory (takes precedence)
  c.datasets = "arithmetic"  # name=path[:layout],...  layouts: gsm8k, aime, math, math_solution
  c.max_examples = 0  # per dataset, 0 = all
  c.on_bad_line = "fail"
  c.template = "r1_zero"  # 'r1_zero', 'chat' / 'chat_boxed' (the tokenizer's chat template) or text with {prompt}
  c.out_dir = "runs/eval"
  c.mesh = config_lib.section(sharding.MeshConfig)
  c.eval = config_lib.section(harness.EvalConfig, num_samples=4, max_new_tokens=40)
  c.progress = True
  return c


@errors.config_errors
def validate_evaluation(cfg: ml_collections.ConfigDict) -> dict:
  """The evaluation config's sections and datasets, checked before any model is loaded."""
  unknown = sorted(set(cfg) - set(evaluation_config()))
  if unknown:
    raise ValueError(f"unknown config field(s) {unknown}; the top level takes {sorted(evaluation_config())}")
  templates.check_spec(cfg.template)
  if cfg.on_bad_line not in ("fail", "skip"):
    raise ValueError(f"on_bad_line={cfg.on_bad_line!r} is not one of ('fail', 'skip')")
  if cfg.max_examples < 0:
    raise ValueError(f"max_examples={cfg.max_examples} must be >= 0 (0 = all)")
  field = "hf_checkpoint" if cfg.hf_checkpoint else "checkpoint"
  where = cfg.hf_checkpoint or cfg.checkpoint
  if not pathlib.Path(where).is_dir():
    raise ValueError(f"{field}={where!r}: no such directory")
  if cfg.hf_checkpoint:
    from r1jax import hf
    hf.check_checkpoint(where, field)
  else:
    policy_lib.check_dir(where, field)
  parts = {"eval": to_dataclass(harness.EvalConfig, cfg.eval, "eval"),
           "mesh": to_dataclass(sharding.MeshConfig, cfg.mesh, "mesh"),
           "datasets": harness.parse_datasets(cfg.datasets)}
  return parts | {"data": evaluation_data(cfg, parts["datasets"])}


def evaluation_data(cfg: ml_collections.ConfigDict, specs: list) -> list[tuple[str, list[dict]]]:
  """(name, examples) of every dataset of experiments/evaluate.py, read and checked before any
  model is loaded; a file without usable rows is a UserError naming it."""
  data = []
  for name, path, layout in specs:
    if name == "arithmetic":
      data.append((name, arithmetic.split(0, cfg.max_examples or 256, seed=0)[1]))
      continue
    if not pathlib.Path(path).is_file():
      raise errors.UserError("dataset", f"datasets: {name}={path!r}", "no such file", "give a JSONL file of problems")
    jc = datasets_lib.JsonlConfig(path=path, layout=layout, on_bad_line=cfg.on_bad_line, max_examples=cfg.max_examples)
    ex, _ = datasets_lib.load_jsonl(jc, on_bad_line_field="on_bad_line")
    if not ex:
      raise errors.UserError("dataset", f"datasets: {name}={path!r}", "holds no usable rows",
                             "give a JSONL file of problems")
    data.append((name, ex))
  return data


def run_evaluation(cfg: ml_collections.ConfigDict) -> dict:
  """experiments/evaluate.py: a policy or Hugging Face model on JSONL / generated datasets."""
  parts = validate_evaluation(cfg)
  ecfg, data = parts["eval"], parts["data"]
  absl_logging.set_verbosity(absl_logging.WARNING)
  mesh = sharding.make_mesh(parts["mesh"])
  rules = sharding.rules_table(parts["mesh"].rules)
  with jax.set_mesh(mesh):
    if cfg.hf_checkpoint:
      from r1jax import hf
      model_cfg, params = hf.load_hf_checkpoint(cfg.hf_checkpoint, mesh=mesh, rules=rules)
      tokenizer = tok_lib.load_tokenizer(cfg.hf_checkpoint)
    else:
      model_cfg, params, tokenizer = load_policy(cfg.checkpoint, mesh, rules)
    template = templates.resolve(cfg.template, tokenizer)
    return harness.evaluate_datasets(params, model_cfg, tokenizer, data, template, ecfg, cfg.out_dir,
                                     progress=cfg.progress)
