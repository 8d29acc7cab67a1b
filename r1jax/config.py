"""A run's configuration, resolved once (`resolve` -> `Run`): every section of a training
experiment's config as the library's frozen dataclass, the model over its preset or checkpoint, and
every check that spans sections. How a section's ConfigDict is made from its dataclass and read
back: `r1jax.config_sections`.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import types
from typing import Any, Literal, Mapping

import jax
import ml_collections

from r1jax import checkpoint as ckpt_lib
from r1jax.config_sections import int_or_auto, to_dataclass
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
  inputs: dict
  """--config.inputs parsed (`given_inputs`): {NAME or STAGE.NAME: PATH}."""
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

WHOLE_RUN_STAGES = ("all", "r1_zero", "train")
"""--config.stage values that run an experiment's training rather than one named stage: the checkpoints
they write are counted before work, and their --config.inputs name the stage they feed."""
TOP_LEVEL = ("stage", "inputs", "workdir", "seed", "template", "distributed")
"""The config's fields outside its sections."""

LIBRARY_SECTIONS = {"model": ModelConfig, "tokenizer": tok_lib.TokenizerConfig, "mesh": sharding.MeshConfig,
                    "data": datasets_lib.DataConfig, "pretrain": PretrainConfig, "sampling": SamplingConfig,
                    "grpo": GRPOConfig, "ppo": PPOConfig, "optim": train_step.OptimConfig,
                    "rewards": combine.RewardsConfig, "train": TrainConfig, "eval": harness.EvalConfig,
                    "checkpoint": ckpt_lib.CheckpointConfig, "traces": traces_lib.TraceConfig, "lora": LoRAConfig}
"""Every training experiment's sections (a pipeline adds its own: `resolve`'s `sections`)."""


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
  run = Run(stage=cfg.stage, workdir=cfg.workdir, seed=cfg.seed, template=cfg.template, inputs=given_inputs(cfg.inputs),
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
