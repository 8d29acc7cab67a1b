"""One source of truth for configuration: the library's frozen dataclasses.

An experiment's ml_collections ConfigDict is *generated* from the dataclass defaults
(`section`), so every field of every config dataclass can be set from the shell
(`--config.grpo.beta=0.0`) or a notebook (`cfg.grpo.beta = 0.0`), and the experiment file
overrides only what differs. `to_dataclass` goes back: an unknown key or a bad value raises a
ValueError naming the field (`grpo.loss_type='foo' is not one of ...`).

Fields that an experiment derives from other sections (the sampler's group size from
`grpo.num_generations`, its pad id from the tokenizer, ...) are typed placeholders: None until
set, settable from the shell like any other field.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import pathlib
import types
import typing
from typing import Any, Literal, Mapping

import jax
import ml_collections
from ml_collections import config_dict

from r1jax import checkpoint as ckpt_lib
from r1jax import datasets as datasets_lib
from r1jax import errors
from r1jax.model.config import ModelConfig, RopeScaling
from r1jax.model import presets
from r1jax import sharding
from r1jax import templates
from r1jax import tokenizer as tok_lib
from r1jax.rl import step as train_step
from r1jax.evaluation import harness
from r1jax.rl.config import GRPOConfig, PPOConfig, TrainConfig
from r1jax.model.lora import LoRAConfig
from r1jax.pretraining import PretrainConfig
from r1jax.rewards import combine
from r1jax.sampling.sampler import SamplingConfig
from r1jax.tasks import traces as traces_lib


def _strip_optional(t):
  args = [a for a in typing.get_args(t) if a is not type(None)]
  if len(args) == 1 and typing.get_origin(t) in (typing.Union, types.UnionType):
    return args[0]
  return t


def _placeholder_type(hint):
  """The type a ConfigDict placeholder of this annotation parses shell values as."""
  t = _strip_optional(hint)
  origin = typing.get_origin(t)
  if origin in (typing.Union, types.UnionType):  # e.g. int | str: the shell gives a string
    return str
  if origin is tuple or t is tuple:
    return tuple
  return t if isinstance(t, type) else str


def _default(f: dataclasses.Field):
  if f.default is not dataclasses.MISSING:
    return f.default
  if f.default_factory is not dataclasses.MISSING:
    return f.default_factory()
  return dataclasses.MISSING


def section(cls, *, derived: tuple[str, ...] = (), all_placeholders: bool = False,
            **overrides) -> ml_collections.ConfigDict:
  """A ConfigDict section holding every field of dataclass `cls` at its default.

  Args:
    derived: fields left as typed placeholders (None = the experiment derives the value).
    all_placeholders: every field is a placeholder (a section whose defaults come from
      elsewhere, e.g. a model preset or a Hugging Face config.json).
    overrides: field values that differ from the dataclass defaults; an unknown name is an error.
  A nested dataclass field becomes a nested section (its own fields placeholders when the
  field's default is None).
  """
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(f"{cls.__name__} has no field(s) {unknown}")
  out = ml_collections.ConfigDict()
  for name, f in fields.items():
    hint = hints[name]
    inner = _strip_optional(hint)
    default = _default(f)
    if dataclasses.is_dataclass(inner):
      sub_placeholders = all_placeholders or default is None or name in derived
      # The field's own default instance (e.g. a stage's optimizer settings), then overrides.
      nested = {} if sub_placeholders or default is dataclasses.MISSING else {
          f.name: getattr(default, f.name) for f in dataclasses.fields(inner)}
      out[name] = section(inner, all_placeholders=sub_placeholders, **(nested | dict(overrides.get(name) or {})))
      continue
    if name in overrides:
      value = overrides[name]
      out[name] = list(value) if isinstance(value, list) else value
      if value is None:
        out[name] = config_dict.placeholder(_placeholder_type(hint))
    elif all_placeholders or name in derived or default is None or default is dataclasses.MISSING:
      out[name] = config_dict.placeholder(_placeholder_type(hint))
    else:
      out[name] = default
  return out


def _is_unset(section_dict) -> bool:
  return all(v is None or (isinstance(v, dict) and _is_unset(v)) for v in section_dict.values())


def to_dataclass(cls, section_cfg: ml_collections.ConfigDict | dict | None, prefix: str, **extra):
  """Build `cls` from a config section; unknown keys are an error naming `prefix.key`.

  Unset placeholders (None) take the dataclass default, unless the default itself is None.
  A nested dataclass section left wholly unset takes the field's default; `kind='none'` in a
  nested section means None (e.g. `--config.model.rope_scaling.kind=none`).
  """
  values = section_cfg.to_dict() if isinstance(section_cfg, ml_collections.ConfigDict) else dict(section_cfg or {})
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"unknown config field(s) {', '.join(prefix + '.' + k for k in unknown)}; "
                     f"{prefix} takes {sorted(fields)}")
  hints = typing.get_type_hints(cls)
  for k, v in list(values.items()):
    inner = _strip_optional(hints[k])
    if isinstance(v, dict) and dataclasses.is_dataclass(inner):
      if v.get("kind") == "none":
        values[k] = None
      elif _is_unset(v):
        del values[k]
      else:
        values[k] = to_dataclass(inner, {a: b for a, b in v.items() if b is not None}, f"{prefix}.{k}")
      continue
    if v is None and _default(fields[k]) is not None:
      del values[k]
    elif isinstance(v, list):
      values[k] = tuple(v)
  values |= extra
  _check_finite(values, prefix)
  try:
    return cls(**values)
  except TypeError as e:
    raise ValueError(f"{prefix}: {e}") from None


def _check_finite(values: dict, prefix: str) -> None:
  """No config number is NaN or infinite (a check like `x <= 0` lets NaN through)."""
  for k, v in values.items():
    if isinstance(v, float) and not math.isfinite(v):
      raise ValueError(f"{prefix}.{k}={v!r} must be a finite number")


def dataclass_defaults(cls) -> dict[str, Any]:
  """A dataclass's defaults as a plain dict."""
  out = {}
  for f in dataclasses.fields(cls):
    v = _default(f)
    if v is not dataclasses.MISSING:
      out[f.name] = list(v) if isinstance(v, tuple) else v
  return out


def int_or_auto(prefix: str, value) -> int | str:
  """'auto', or a positive int given as an int or a digit string (shell values arrive as strings)."""
  if value == "auto":
    return value
  if isinstance(value, str) and value.strip().isdigit():
    value = int(value)
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{prefix}={value!r} must be 'auto' or an int >= 1")
  return value


Auto = Literal["auto"]
"""A setting the memory planner chooses (`model.remat`, `grpo.grad_accum`) before any rollout."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One run's configuration, resolved once (`resolve`): every section as the library's frozen
  dataclass and the top-level fields typed. Stages read it; what is settled later (the
  tokenizer's ids and vocabulary, the memory plan's choices) comes as a new Run
  (`dataclasses.replace`), never a change in place. A pipeline's own sections are None where the
  experiment has none; a new section is one field here (and one entry in `LIBRARY_SECTIONS` or
  in its pipeline's sections)."""
  stage: str
  workdir: str
  seed: int
  template: str
  inputs: str
  hf_checkpoint: str
  """model.hf_checkpoint: '' for a model built here."""
  remat: str | Auto
  """model.remat as asked; `model.remat` holds the value in use ('none' until the plan chooses)."""
  grad_accum: int | Auto
  """grpo.grad_accum as asked; `grpo.grad_accum` holds the value in use (1 until the plan chooses)."""
  rollout_chunks: int | Auto
  """train.rollout_chunks as asked; `train.rollout_chunks` holds the value in use (1 until the plan chooses)."""
  from_tokenizer: tuple[str, ...]
  """The fields left unset for the tokenizer to settle once it exists ('sampling.pad_id', and
  'model.vocab_size' for a model built here): `stages.context.build`."""
  model: Any
  tokenizer: Any
  mesh: Any
  data: Any
  pretrain: Any
  traces: Any
  sampling: Any
  grpo: Any
  ppo: Any
  optim: Any
  rewards: Any
  train: Any
  eval: Any
  checkpoint: Any
  lora: Any
  """The LoRA section as asked; after the memory plan, as chosen (lora.mode='auto': rank 0 where
  full fine-tuning fits)."""
  average: Any = None
  r1: Any = None
  cold_start: Any = None
  curation: Any = None
  sft: Any = None
  rejection: Any = None
  reward_model: Any = None
  rl_all: Any = None
  distill: Any = None
  prm: Any = None
  mcts: Any = None

  @property
  def is_pipeline(self) -> bool:
    """experiments/r1.py's config (and those built on it): the R1 pipeline's sections are set."""
    return self.r1 is not None


ARCH_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "rope_theta",
               "rms_eps", "qkv_bias", "qk_norm", "tie_embeddings")
"""ModelConfig fields a checkpoint fixes (an override would not load)."""

TOP_LEVEL = ("stage", "inputs", "workdir", "seed", "template", "distributed")
"""The config's fields outside its sections."""

LIBRARY_SECTIONS = {"model": ModelConfig, "tokenizer": tok_lib.TokenizerConfig, "mesh": sharding.MeshConfig,
                    "data": datasets_lib.DataConfig, "pretrain": PretrainConfig, "sampling": SamplingConfig,
                    "grpo": GRPOConfig, "ppo": PPOConfig, "optim": train_step.OptimConfig,
                    "rewards": combine.RewardsConfig, "train": TrainConfig, "eval": harness.EvalConfig,
                    "checkpoint": ckpt_lib.CheckpointConfig, "traces": traces_lib.TraceConfig, "lora": LoRAConfig}
"""Every training experiment's sections (a pipeline adds its own: `resolve`'s `sections`)."""


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
  """The checkpoint's config.json, after checking its files (`hf_files.check_checkpoint`)."""
  from r1jax.model import hf_files
  if not pathlib.Path(path).is_dir():
    raise errors.UserError("Hugging Face checkpoint", f"model.hf_checkpoint={path!r}", "no such directory",
                           "give a directory holding config.json, *.safetensors and tokenizer files")
  hf_files.check_checkpoint(path)
  return json.loads((pathlib.Path(path) / "config.json").read_text())


def model_config(cfg: ml_collections.ConfigDict) -> tuple[ModelConfig, str]:
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
    from r1jax.model import hf_config
    if str(ckpt).lower().endswith(".gguf"):
      raise ValueError(f"model.hf_checkpoint={ckpt!r} is a GGUF file: convert it once to a Hugging Face directory "
                       f"(python -m r1jax.model.gguf {ckpt} DIR) and give that directory")
    base = hf_config.config_from_hf(_hf_config(ckpt))
  else:
    if preset not in presets.PRESETS:
      raise ValueError(f"model.preset={preset!r} is not one of {sorted(presets.PRESETS)}")
    base = presets.PRESETS[preset]
    if preset not in presets.TRAINED_HERE and not m.get("vocab_size"):
      raise ValueError(f"model.hf_checkpoint='' but model.preset={preset!r} is a released model: give its Hugging "
                       f"Face directory (--config.model.hf_checkpoint=DIR) so weights and tokenizer match")
  if rope.get("kind") == "none":
    over["rope_scaling"] = None
  elif any(v is not None for v in rope.values()):
    start = base.rope_scaling or RopeScaling()
    over["rope_scaling"] = to_dataclass(
        RopeScaling, dataclasses.asdict(start) | {k: v for k, v in rope.items() if v is not None},
        "model.rope_scaling")
  model_cfg = to_dataclass(ModelConfig, dataclasses.asdict(base) | over
                                      | {"rope_scaling": over.get("rope_scaling", base.rope_scaling),
                                         "remat": "none" if remat == "auto" else remat}, "model")
  return model_cfg, remat


@errors.config_errors
def resolve(cfg: ml_collections.ConfigDict, sections: Mapping[str, type] = types.MappingProxyType({})) -> Run:
  """Every section of a training experiment's config as its frozen dataclass (`sections`: the
  pipeline's own, by name), and every check that spans sections.

  Raises ValueError naming the field, its value and what is allowed; compiles nothing, trains
  no tokenizer and loads no weights (a checkpoint's config.json is read).
  """
  templates.check_spec(cfg.template)
  model_cfg, remat = model_config(cfg)
  if cfg.model.hf_checkpoint and cfg.model.preset == "tiny-r1-zero":
    print("note: model.hf_checkpoint with the default config: the model's shape is the checkpoint's, the "
          "hyperparameters the tiny default's; a named config (--config=experiments/FILE.py:NAME) sets real-model ones")
  grpo_sec = cfg.grpo.to_dict()
  grad_accum = int_or_auto("grpo.grad_accum", grpo_sec.pop("grad_accum"))
  gcfg = to_dataclass(GRPOConfig, grpo_sec | {"grad_accum": 1 if grad_accum == "auto" else grad_accum}, "grpo")
  train_sec = cfg.train.to_dict()
  rollout_chunks = int_or_auto("train.rollout_chunks", train_sec.pop("rollout_chunks"))
  tcfg = to_dataclass(TrainConfig, train_sec | {"rollout_chunks": 1 if rollout_chunks == "auto" else rollout_chunks},
                      "train")
  pre = to_dataclass(PretrainConfig, cfg.pretrain, "pretrain")
  if cfg.pretrain.optim.total_steps is None:
    pre = dataclasses.replace(pre, optim=dataclasses.replace(pre.optim, total_steps=max(pre.steps, 1)))
  samp = cfg.sampling.to_dict()
  for field, want, src in (("num_samples", gcfg.num_generations, "grpo.num_generations"),
                           ("max_new_tokens", gcfg.max_completion_length, "grpo.max_completion_length")):
    if samp[field] is not None and samp[field] != want:
      raise ValueError(f"sampling.{field}={samp[field]} must equal {src}={want} (leave it unset to follow it)")
    samp[field] = want
  given = {"sampling": samp, "optim": cfg.optim.to_dict() | {"total_steps": cfg.optim.total_steps or tcfg.steps}}
  extra = {"checkpoint": {"directory": cfg.checkpoint.directory or str(pathlib.Path(cfg.workdir) / "ckpt")}}
  resolved = {"model": model_cfg, "pretrain": pre, "grpo": gcfg, "train": tcfg}
  for name, cls in (LIBRARY_SECTIONS | dict(sections)).items():
    if name not in resolved:
      resolved[name] = to_dataclass(cls, given.get(name, cfg[name]), name, **extra.get(name, {}))
  run = Run(stage=cfg.stage, workdir=cfg.workdir, seed=cfg.seed, template=cfg.template, inputs=cfg.inputs,
            hf_checkpoint=cfg.model.hf_checkpoint, remat=remat, grad_accum=grad_accum,
            rollout_chunks=rollout_chunks, from_tokenizer=(("sampling.pad_id",) if cfg.sampling.pad_id is None else ())
            + (("model.vocab_size",) if not cfg.model.hf_checkpoint and cfg.model.vocab_size is None else ()),
            **resolved)
  if run.lora.enabled and cfg.stage == "average":
    raise ValueError(f"stage='average' with lora.rank={run.lora.rank}: the checkpoints hold adapters, whose mean "
                     f"is not the mean of the merged weights; average full fine-tuning runs (lora.rank=0)")
  if run.lora.enabled and run.lora.mode == "on" and gcfg.ref_reset_every:
    raise ValueError(f"grpo.ref_reset_every={gcfg.ref_reset_every} with lora.rank={run.lora.rank}: the LoRA "
                     f"reference is the frozen base (adapters off) and cannot be reset; set one of them to 0")
  gcfg.check_rows(tcfg.prompts_per_step, run.mesh.batch_shards(jax.device_count()),
                  1 if grad_accum == "auto" else grad_accum)
  if tcfg.overlong_weight and not 0 < tcfg.overlong_buffer <= gcfg.max_completion_length:
    raise ValueError(f"train.overlong_buffer={tcfg.overlong_buffer} must lie in [1, grpo.max_completion_length="
                     f"{gcfg.max_completion_length}] when train.overlong_weight={tcfg.overlong_weight} > 0")
  if cfg.model.hf_checkpoint and cfg.tokenizer.path:
    raise ValueError(f"tokenizer.path={cfg.tokenizer.path!r} cannot be set with model.hf_checkpoint (the "
                     f"checkpoint's own tokenizer is used)")
  return run


def given_inputs(spec: str) -> dict:
  """--config.inputs='policy=DIR,data=FILE' -> {'policy': 'DIR', 'data': 'FILE'}."""
  out = {}
  for item in filter(None, (x.strip() for x in spec.split(","))):
    name, eq, path = item.partition("=")
    if not eq or not name or not path:
      raise ValueError(f"inputs={spec!r}: each entry is NAME=PATH (e.g. policy=runs/r1/sft/policy)")
    out[name] = path
  return out
