"""What `experiments/*.py` run: build tokenizer, base model and data from a config, then a stage.

Stages:
- 'r1_zero': evaluate the base model, GRPO with the R1 template and rule rewards, evaluate
  again, print a summary table, write plots and `summary.json`.
- 'pretrain': only build (or load) the base model.
- 'evaluate': only evaluate the base model.
- 'average': average the parameters of the run's last-k (or chosen) GRPO checkpoints into
  `workdir/policy_avg` (sharded: each checkpoint is read into the mesh, never gathered).

The embedded default needs no network: verifiable arithmetic problems are generated, a
SentencePiece tokenizer is trained on them, and a tiny base model is pretrained on a corpus of
solved problems (cached in the work directory). The corpus mostly answers in plain prose and
only sometimes in the R1 `<think>/<answer>` form, and some of its answers are wrong, so the base
model is weak at the template and RL has something to teach.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
import time

from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict
import numpy as np

from r1jax import checkpoint as ckpt_lib
from r1jax import distributed
from r1jax import model as model_lib
from r1jax import sharding
from r1jax import templates
from r1jax import tokenizer as tok_lib
from r1jax import train
from r1jax import train_step
from r1jax import config as config_lib
from r1jax import datasets as datasets_lib
from r1jax.config import to_dataclass
from r1jax.evaluation import harness
from r1jax.grpo.config import GRPOConfig
from r1jax.logger import format_table, plot_run
from r1jax.rewards import combine
from r1jax.sampler import SamplingConfig
from r1jax.tasks import arithmetic

STAGES = ("r1_zero", "pretrain", "evaluate", "average")
ARCH_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "rope_theta",
               "rms_eps", "qkv_bias", "qk_norm", "tie_embeddings")
"""ModelConfig fields a Hugging Face checkpoint's config.json fixes (an override would not load)."""


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  """Next-token pretraining of the embedded tiny base model (unused with a Hugging Face model)."""
  steps: int = 600
  """Optimizer steps; 0 leaves the base randomly initialized."""
  batch_size: int = 32
  seq_len: int = 128
  """Tokens per packed row."""
  r1_fraction: float = 0.25
  """Share of corpus documents in the R1 <think>/<answer> form (the rest answer in prose)."""
  wrong_fraction: float = 0.3
  """Share of corpus documents whose final answer is replaced by a wrong number."""
  optim: train_step.OptimConfig = train_step.OptimConfig(learning_rate=3e-3, warmup_steps=50, decay="cosine",
                                                         weight_decay=0.01)

  def __post_init__(self):
    if self.steps < 0 or self.batch_size < 1 or self.seq_len < 2:
      raise ValueError(f"pretrain.steps={self.steps} must be >= 0, pretrain.batch_size={self.batch_size} >= 1 "
                       f"and pretrain.seq_len={self.seq_len} >= 2")
    for f in ("r1_fraction", "wrong_fraction"):
      if not 0.0 <= getattr(self, f) <= 1.0:
        raise ValueError(f"pretrain.{f}={getattr(self, f)} must lie in [0, 1]")


@dataclasses.dataclass(frozen=True)
class AverageConfig:
  """--config.stage=average: the mean of these GRPO checkpoints' parameters -> workdir/policy_avg."""
  last_k: int = 3
  """Average the last k checkpoints."""
  steps: str = ""
  """Comma-separated steps ('40,60,80'); overrides last_k."""

  def __post_init__(self):
    if self.last_k < 1:
      raise ValueError(f"average.last_k={self.last_k} must be >= 1")
    if any(not x.strip().isdigit() for x in self.steps.split(",") if x.strip()):
      raise ValueError(f"average.steps={self.steps!r} must be comma-separated step numbers")


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
  c.pretrain.optim.total_steps = config_dict.placeholder(int)
  c.sampling = config_lib.section(SamplingConfig, derived=("num_samples", "max_new_tokens", "pad_id"))
  c.sampling.prompt_buckets = ()
  c.grpo = config_lib.section(GRPOConfig, grad_accum="auto")
  c.optim = config_lib.section(train_step.OptimConfig, derived=("total_steps",))
  c.rewards = config_lib.section(combine.RewardsConfig)
  c.train = config_lib.section(train.TrainConfig)
  c.eval = config_lib.section(harness.EvalConfig)
  c.checkpoint = config_lib.section(ckpt_lib.CheckpointConfig, derived=("directory",))
  c.average = config_lib.section(AverageConfig)
  return c


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
    node[leaf] = value
  return cfg


def _hf_config(path: str) -> dict:
  f = pathlib.Path(path) / "config.json"
  if not f.is_file():
    raise ValueError(f"model.hf_checkpoint={path!r}: no config.json there (a Hugging Face model directory "
                     f"holds config.json, *.safetensors and tokenizer files)")
  return json.loads(f.read_text())


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
    base = hf.config_from_hf(_hf_config(ckpt))
  else:
    if preset not in model_lib.PRESETS:
      raise ValueError(f"model.preset={preset!r} is not one of {sorted(model_lib.PRESETS)}")
    base = model_lib.PRESETS[preset]
    if preset != "tiny" and not m.get("vocab_size"):
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


def validate(cfg: ml_collections.ConfigDict) -> dict:
  """Every section as its frozen dataclass, and every check that spans sections.

  Raises ValueError naming the field, its value and what is allowed; compiles nothing, trains
  no tokenizer and loads no weights (a checkpoint's config.json is read).
  """
  known = set(base_config())
  unknown = sorted(set(cfg) - known)
  if unknown:
    raise ValueError(f"unknown config field(s) {unknown}; the top level takes {sorted(known)}")
  if cfg.stage not in STAGES:
    raise ValueError(f"stage={cfg.stage!r} is not one of {STAGES}")
  if cfg.template != "r1_zero" and "{prompt}" not in cfg.template:
    raise ValueError(f"template={cfg.template[:60]!r}: use 'r1_zero' or a string with a {{prompt}} slot")
  model_cfg, remat = model_config(cfg)
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
      "optim": to_dataclass(train_step.OptimConfig, cfg.optim.to_dict() | {
          "total_steps": cfg.optim.total_steps or tcfg.steps}, "optim"),
      "rewards": to_dataclass(combine.RewardsConfig, cfg.rewards, "rewards"),
      "train": tcfg,
      "eval": to_dataclass(harness.EvalConfig, cfg.eval, "eval"),
      "checkpoint": to_dataclass(ckpt_lib.CheckpointConfig, cfg.checkpoint, "checkpoint",
                                 directory=cfg.checkpoint.directory or str(pathlib.Path(cfg.workdir) / "ckpt")),
      "average": to_dataclass(AverageConfig, cfg.average, "average"),
  }
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


def main(sweep=None, *, check=None, run_fn=None) -> None:
  """`__main__` of an experiment file: --config (this file, or `FILE:NAME` for a named config),
  --sweep_index. A config error (raised by `check`, default `validate`) prints one line and
  exits with status 2 before anything is built."""
  import sys
  from absl import app, flags
  from ml_collections import config_flags

  def fail(msg):
    print(f"config error: {msg}", file=sys.stderr)
    sys.exit(2)

  try:  # config_flags reads the --config.* overrides here already
    config_flags.DEFINE_config_file("config", sys.modules["__main__"].__file__,
                                    "experiment config: FILE or FILE:NAME", lock_config=False)
  except (AttributeError, KeyError) as e:
    name = str(e).strip("\"'")
    bad = [a for a in sys.argv[1:] if a.split("=")[0].endswith("." + name)]
    fail(f"unknown config field {(bad or [name])[0].split('=')[0].removeprefix('--config.')!r}: no such field "
         f"{name!r} in its section (python {sys.argv[0]} --helpfull lists them)")
  flags.DEFINE_integer("sweep_index", -1, "apply sweep()[i] on top of the config")

  def _main(argv):
    if len(argv) > 1:
      fail(f"unexpected arguments {argv[1:]}; settings are flags: --config.SECTION.FIELD=VALUE")
    try:
      cfg = with_sweep(flags.FLAGS.config, sweep() if sweep else [], flags.FLAGS.sweep_index)
      if cfg.get("distributed", False):  # before validation counts the devices of every process
        distributed.initialize()
      (check or validate)(cfg)
    except (ValueError, FileNotFoundError) as e:
      fail(str(e))
    (run_fn or run)(cfg)

  def parse(argv):  # a bad --config.x=value or an unknown config name: one line, status 2
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      lines = [l for l in str(e).splitlines() if l.strip() and not l.startswith(("Traceback", "  "))]
      fail(lines[-1] if lines else type(e).__name__)

  app.run(_main, flags_parser=parse)


# ----------------------------------------------------------------------------- policy on disk


def save_policy(directory, step: int, params, model_cfg: model_lib.ModelConfig, tokenizer_path: str):
  """Parameters (sharded Orbax checkpoint) plus what is needed to use them: model config and tokenizer."""
  meta = {"model": dataclasses.asdict(model_cfg), "tokenizer": str(tokenizer_path), "step": int(step)}
  with ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(directory), save_every=1, keep=1,
                                                       async_save=False)) as ck:
    ck.save(step, {"params": params}, meta, force=True)


def load_policy(directory, mesh, rules=None):
  """(model config, params, tokenizer) saved by `save_policy`, restored into `mesh` shardings."""
  if not pathlib.Path(directory).is_dir():
    raise FileNotFoundError(f"checkpoint={str(directory)!r}: no such directory")
  with ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(directory), save_every=1, keep=1,
                                                       async_save=False)) as ck:
    meta = ck.restore_meta()
    if "model" not in meta:
      raise ValueError(f"checkpoint={str(directory)!r} was not written by save_policy (its meta has no model "
                       f"config); pass a policy directory such as <workdir>/policy")
    m = dict(meta["model"])
    if m.get("rope_scaling"):
      m["rope_scaling"] = model_lib.RopeScaling(**m["rope_scaling"])
    model_cfg = model_lib.ModelConfig(**m)
    shardings = model_lib.param_shardings(model_cfg, mesh, rules)
    abstract = {"params": jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                                       model_lib.abstract_params(model_cfg), shardings)}
    state, _ = ck.restore(None, abstract)
  return model_cfg, state["params"], tok_lib.load_tokenizer(meta["tokenizer"])


def with_sweep(cfg: ml_collections.ConfigDict, sweep: list[dict], index: int) -> ml_collections.ConfigDict:
  """`cfg` with the dotted overrides of sweep[index] applied (index -1: unchanged)."""
  if index < 0:
    return cfg
  if index >= len(sweep):
    raise ValueError(f"sweep_index={index} but the sweep has {len(sweep)} entries")
  return apply_overrides(cfg, sweep[index], f"sweep entry {index}")


def template_text(cfg) -> str:
  return templates.R1_ZERO_TEMPLATE if cfg.template == "r1_zero" else cfg.template


# ----------------------------------------------------------------------------- data


def load_examples(d: datasets_lib.DataConfig) -> tuple[list[dict], list[dict]]:
  """(train, held-out) examples for the configured source."""
  if d.source == "synthetic":
    return arithmetic.split(d.num_train, d.num_eval, seed=d.seed)
  if d.source == "reasoning_gym":
    ex = datasets_lib.reasoning_gym_examples(d.rg_tasks, d.num_train + d.num_eval, d.seed)
    return ex[d.num_eval:], ex[:d.num_eval]
  if d.source == "tfds":
    load = lambda split, n: datasets_lib.tfds_examples(d.tfds_name, split, d.tfds_data_dir, d.question_field or
                                                       "question", d.answer_field or "answer", n)
    return load(d.tfds_train_split, d.num_train), load(d.tfds_eval_split, d.num_eval)
  jc = lambda path, n, layout: datasets_lib.JsonlConfig(path=path, layout=layout or d.layout,
                                                        question_field=d.question_field, answer_field=d.answer_field,
                                                        on_bad_line=d.on_bad_line, max_examples=n)
  # 'a.jsonl,b.jsonl.gz:humaneval': several files (each path[:layout]) mixed in a seeded shuffle, so
  # math and code prompts share the steps and the held-out split, each scored by its own checker.
  def read(spec, n):
    out = []
    for path, layout in datasets_lib.file_specs(spec):
      out += datasets_lib.load_jsonl(jc(path, n, layout))[0]
    return out

  mix = lambda spec, exs: ([exs[i] for i in np.random.default_rng(d.seed).permutation(len(exs))]
                           if len(datasets_lib.file_specs(spec)) > 1 else exs)
  train_ex = mix(d.path, read(d.path, d.num_train))
  if d.eval_path:
    eval_ex = mix(d.eval_path, read(d.eval_path, d.num_eval))
  else:
    train_ex, eval_ex = train_ex[d.num_eval:], train_ex[:d.num_eval]
  return train_ex, eval_ex


def pretraining_documents(examples, template: str, seed: int, r1_fraction: float, wrong_fraction: float):
  """Solved problems as text. Mostly prose answers, a `r1_fraction` in the R1 tag format, and a
  `wrong_fraction` of final answers replaced by a wrong number (the base model's noise)."""
  rng = np.random.default_rng(seed)
  docs = []
  for ex in examples:
    final = ex.get("final") or f"```python\n{ex.get('canonical_solution', '')}```"  # code rows: the solution
    if rng.random() < wrong_fraction:
      final = str(int(final) + int(rng.choice([-2, -1, 1, 2, 10]))) if final.lstrip("-").isdigit() else final
    sol = ex.get("solution", "")
    prompt = templates.format_prompt(ex["question"], template)
    u = rng.random()
    if u < r1_fraction:
      docs.append(f"{prompt} <think> {sol} </think> <answer> {final} </answer>")
    elif u < 0.75:
      docs.append(f"{prompt} {sol} The answer is {final}.")
    else:
      docs.append(f"Question: {ex['question']}\nSolution: {sol} So the result is {final}.")
  return docs


# ----------------------------------------------------------------------------- model


def tokenizer_path(cfg, workdir: pathlib.Path) -> pathlib.Path:
  if cfg.model.hf_checkpoint:
    return pathlib.Path(cfg.model.hf_checkpoint).resolve()
  if cfg.tokenizer.path:
    return pathlib.Path(cfg.tokenizer.path).resolve()
  return (workdir / "base" / "tokenizer.model").resolve()


def build_tokenizer(cfg, workdir: pathlib.Path, corpus_fn):
  path = tokenizer_path(cfg, workdir)
  if cfg.model.hf_checkpoint or cfg.tokenizer.path or path.exists():
    return tok_lib.load_tokenizer(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  return tok_lib.train_sentencepiece(corpus_fn(), cfg.tokenizer.vocab_size, path,
                                     model_type=cfg.tokenizer.model_type)


def pack_documents(docs, tokenizer, seq_len: int):
  """Tokenize documents (BOS ... EOS) and pack the stream into full rows of `seq_len` tokens,
  so no compute goes to padding (documents may straddle rows, as in GPT pretraining)."""
  stream = []
  for ids in tokenizer.encode_batch(docs):
    stream += ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + list(ids) + [tokenizer.eos_id]
  n = len(stream) // seq_len
  toks = np.asarray(stream[:n * seq_len], np.int32).reshape(n, seq_len)
  return toks, np.ones_like(toks, bool)


def pretrain(cfg, parts, params, tokenizer, docs, mesh, workdir: pathlib.Path):
  """Next-token pretraining of the tiny base model; cached as a checkpoint in workdir/base."""
  model_cfg, pcfg = parts["model"], parts["pretrain"]
  ocfg = pcfg.optim
  optimizer = train_step.make_optimizer(ocfg)
  state = train_step.init_state(params, optimizer)
  shardings = train_step.state_shardings(state)
  ck = ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(workdir / "base" / "ckpt"), save_every=1, keep=1,
                                                       async_save=False))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  if ck.latest_step() == pcfg.steps:
    state, _ = ck.restore(pcfg.steps, abstract)
    ck.close()
    print(f"base model: loaded the pretrained checkpoint from {workdir / 'base'}")
    return state["params"]
  toks, mask = pack_documents(docs, tokenizer, pcfg.seq_len)
  step_fn = train_step.make_sft_step(model_cfg, ocfg, shardings, mesh)
  rng = np.random.default_rng(cfg.seed)
  from tqdm.auto import tqdm
  B = pcfg.batch_size
  losses = []
  for _ in (bar := tqdm(range(pcfg.steps), desc="pretrain base", dynamic_ncols=True,
                        disable=not parts["train"].progress)):
    idx = rng.integers(0, len(toks), B)
    batch = train_step.shard_batch({"tokens": toks[idx], "mask": mask[idx], "loss_mask": mask[idx]}, mesh)
    state, m = step_fn(state, batch)
    losses.append(m["loss"])
    if len(losses) % 50 == 0:
      bar.set_postfix(loss=f"{float(np.mean(jax.device_get(losses[-50:]))):.3f}")
  ck.save(pcfg.steps, state, {"step": pcfg.steps}, force=True)
  ck.wait()
  ck.close()
  return state["params"]


def resolve_model(cfg, parts, tokenizer) -> model_lib.ModelConfig:
  """The final model config: the tiny default takes its vocabulary size from the tokenizer."""
  if not cfg.model.hf_checkpoint and cfg.model.vocab_size is None:
    parts["model"] = dataclasses.replace(parts["model"], vocab_size=tokenizer.vocab_size)
  return parts["model"]


def build_model(cfg, parts, tokenizer, mesh, workdir, docs_fn):
  """(model config, params): from a Hugging Face checkpoint, or the pretrained tiny default."""
  model_cfg = resolve_model(cfg, parts, tokenizer)
  rules = sharding.rules_table(parts["mesh"].rules)
  if cfg.model.hf_checkpoint:
    from r1jax import hf
    overrides = {f.name: getattr(model_cfg, f.name) for f in dataclasses.fields(model_cfg)
                 if f.name not in ARCH_FIELDS}
    return hf.load_hf_checkpoint(cfg.model.hf_checkpoint, mesh=mesh, rules=rules, **overrides)
  params = model_lib.init_sharded(jax.random.key(cfg.seed), model_cfg, mesh, rules)
  if parts["pretrain"].steps:
    params = pretrain(cfg, parts, params, tokenizer, docs_fn(), mesh, workdir)
  return model_cfg, params


def plan_memory(parts, mesh, workdir: pathlib.Path) -> dict:
  """Resolve model.remat / grpo.grad_accum ('auto': the cheapest setting that fits) before any
  rollout; writes <workdir>/memory_plan.json and updates `parts`."""
  from r1jax import memory
  tcfg, gcfg = parts["train"], parts["grpo"]
  limit = int(tcfg.memory_limit_gb * memory.GiB) if tcfg.memory_limit_gb else None
  remat = parts["remat"]
  plan = memory.plan(parts["model"], gcfg, parts["optim"], parts["sampling"], mesh,
                     prompts_per_step=tcfg.prompts_per_step, prompt_len=tcfg.max_prompt_len,
                     remat=remat, grad_accum=parts["grad_accum"], limit_bytes=limit,
                     temperature=parts["sampling"].temperature or 1.0,
                     rules=sharding.rules_table(parts["mesh"].rules))
  parts["model"] = dataclasses.replace(parts["model"], remat=plan.remat)
  parts["grpo"] = dataclasses.replace(gcfg, grad_accum=plan.grad_accum)
  summary = plan.summary() | {"asked": {"model.remat": remat, "grpo.grad_accum": parts["grad_accum"]}}
  (workdir / "memory_plan.json").write_text(json.dumps(summary, indent=1))
  measured = (f"; train state {plan.state_bytes / memory.GiB:.2f} GiB per device; per program (arguments + "
              "temporaries + outputs) "
              + ", ".join(f"{k} {v.peak / memory.GiB:.2f} GiB" for k, v in plan.phases.items())) if plan.phases else ""
  print(f"memory plan: model.remat={plan.remat} grpo.grad_accum={plan.grad_accum} ({plan.reason}){measured}")
  return summary


def export_hf(params, model_cfg, tokenizer, cfg, out_dir: pathlib.Path) -> None:
  """The policy as a Hugging Face directory (safetensors, config.json, tokenizer files)."""
  from r1jax import hf
  hf.save_hf_checkpoint(params, model_cfg, out_dir)  # every process (all-gathers), process 0 writes
  if jax.process_index() == 0:
    hf.save_tokenizer(tokenizer, out_dir, source=cfg.model.hf_checkpoint or None)
  print(f"Hugging Face export: {out_dir}")


def average_stage(cfg, parts, model_cfg, params, workdir: pathlib.Path, tok_path, tokenizer) -> dict:
  """Average parameters of checkpoints in workdir/ckpt; writes workdir/policy_avg (a policy)."""
  state = train_step.init_state(params, train_step.make_optimizer(parts["optim"]))
  if parts["grpo"].beta > 0:
    state["ref_params"] = params
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  del state
  acfg = parts["average"]
  steps = [int(x) for x in acfg.steps.split(",") if x.strip()] or None
  used = ckpt_lib.average_checkpoints(parts["checkpoint"].directory, workdir / "ckpt_avg", abstract, steps=steps,
                                      last_k=None if steps else acfg.last_k,
                                      select=lambda path: path.startswith("params"))
  with ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(workdir / "ckpt_avg"), save_every=1, keep=1,
                                                       async_save=False)) as ck:
    avg, _ = ck.restore(None, abstract)
  save_policy(workdir / "policy_avg", max(used), avg["params"], model_cfg, tok_path)
  export_hf(avg["params"], model_cfg, tokenizer, cfg, workdir / "policy_avg_hf")
  print(f"averaged the parameters of steps {used} into {workdir / 'policy_avg'}")
  return {"averaged_steps": used}


# ----------------------------------------------------------------------------- run


def run(cfg: ml_collections.ConfigDict) -> dict:
  """Run the configured stage; returns (and for 'r1_zero' writes) the summary."""
  t_start = time.time()
  if cfg.get("distributed", False):  # before anything creates the backends
    distributed.initialize()
  parts = validate(cfg)
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every save at INFO
  workdir = pathlib.Path(cfg.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  template = template_text(cfg)
  train_ex, eval_ex = load_examples(parts["data"])
  pcfg = parts["pretrain"]
  docs_fn = lambda: pretraining_documents(train_ex, template, cfg.seed, pcfg.r1_fraction, pcfg.wrong_fraction)
  mesh = sharding.make_mesh(parts["mesh"])
  with jax.set_mesh(mesh):
    tokenizer = build_tokenizer(cfg, workdir, docs_fn)
    eos = tuple(dict.fromkeys((tokenizer.eos_id,) + tuple(parts["sampling"].eos_ids)))
    pad = tokenizer.pad_id if cfg.sampling.pad_id is None else parts["sampling"].pad_id
    parts["sampling"] = dataclasses.replace(parts["sampling"], eos_ids=eos, pad_id=pad)
    resolve_model(cfg, parts, tokenizer)
    resolved = ml_collections.ConfigDict(cfg.to_dict())
    if cfg.stage == "r1_zero":  # before any weights are loaded or trained
      plan = plan_memory(parts, mesh, workdir)
      resolved.model.remat, resolved.grpo.grad_accum = plan["remat"], str(plan["grad_accum"])
    (workdir / "config.json").write_text(resolved.to_json_best_effort(indent=1))
    model_cfg, params = build_model(cfg, parts, tokenizer, mesh, workdir, docs_fn)
    if cfg.stage == "pretrain":
      return {"num_params": model_cfg.num_params()}
    if cfg.stage == "average":
      return average_stage(cfg, parts, model_cfg, params, workdir, tokenizer_path(cfg, workdir), tokenizer)
    ecfg = parts["eval"]
    evaluate = lambda p, tag: harness.evaluate(p, model_cfg, tokenizer, eval_ex, template, ecfg, eos_ids=eos,
                                               pad_id=tokenizer.pad_id, out_dir=workdir / f"eval_{tag}",
                                               progress=parts["train"].progress)
    base = evaluate(params, "base")
    print(format_table([(k, v) for k, v in base.items() if not k.endswith("per_response")], ("base model", "value")))
    if cfg.stage == "evaluate":
      return base
    specs = combine.default_specs(parts["rewards"])
    result = train.run_grpo(model_cfg=model_cfg, params=params, tokenizer=tokenizer, examples=train_ex,
                            reward_specs=specs, template=template, tcfg=parts["train"], gcfg=parts["grpo"],
                            ocfg=parts["optim"], scfg=parts["sampling"], ckcfg=parts["checkpoint"], mesh=mesh,
                            workdir=workdir)
    final = evaluate(result["state"]["params"], "final")
    save_policy(workdir / "policy", parts["train"].steps, result["state"]["params"], model_cfg,
                tokenizer_path(cfg, workdir))
    export_hf(result["state"]["params"], model_cfg, tokenizer, cfg, workdir / "policy_hf")
  plots = plot_run(workdir)
  summary = {"base_accuracy": base["pass@1"], "final_accuracy": final["pass@1"],
             "base_format_rate": base["format_rate"], "format_rate": final["format_rate"],
             "base_mean_length": base["mean_length"], "final_mean_length": final["mean_length"],
             "eval_problems": len(eval_ex), "train_steps": parts["train"].steps,
             "memory_plan": {k: plan[k] for k in ("remat", "grad_accum", "reason")},
             "wall_seconds": time.time() - t_start, "plots": [str(p) for p in plots]}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  rows = [(k, base[k], final[k]) for k in ("pass@1", "format_rate", "mean_length", "reflection_rate")
          if k in base]
  print(format_table(rows, ("held-out metric", "base", "after GRPO")))
  print(f"wall time {summary['wall_seconds']:.0f} s; summary, metrics and plots in {workdir}")
  return summary


def evaluation_config() -> ml_collections.ConfigDict:
  """experiments/evaluate.py's config: what to evaluate on which data, sections from the dataclasses."""
  c = ml_collections.ConfigDict()
  c.checkpoint = "runs/r1_zero/policy"  # an r1jax policy directory (written by experiments/r1_zero.py)
  c.hf_checkpoint = ""  # or a Hugging Face Qwen2 / Qwen3 / Llama directory (takes precedence)
  c.datasets = "arithmetic"  # name=path[:layout],...  layouts: gsm8k, aime, math, math_solution
  c.max_examples = 0  # per dataset, 0 = all
  c.on_bad_line = "fail"
  c.template = "r1_zero"  # 'r1_zero', 'chat' (the tokenizer's chat template) or text with {prompt}
  c.out_dir = "runs/eval"
  c.mesh = config_lib.section(sharding.MeshConfig)
  c.eval = config_lib.section(harness.EvalConfig, num_samples=4, max_new_tokens=40)
  c.progress = True
  return c


def validate_evaluation(cfg: ml_collections.ConfigDict) -> dict:
  """The evaluation config's sections and datasets, checked before any model is loaded."""
  unknown = sorted(set(cfg) - set(evaluation_config()))
  if unknown:
    raise ValueError(f"unknown config field(s) {unknown}; the top level takes {sorted(evaluation_config())}")
  if cfg.template not in ("r1_zero", "chat") and "{prompt}" not in cfg.template:
    raise ValueError(f"template={cfg.template[:60]!r} has no {{prompt}} slot; use 'r1_zero', 'chat' or such a text")
  if cfg.on_bad_line not in ("fail", "skip"):
    raise ValueError(f"on_bad_line={cfg.on_bad_line!r} is not one of ('fail', 'skip')")
  if cfg.max_examples < 0:
    raise ValueError(f"max_examples={cfg.max_examples} must be >= 0 (0 = all)")
  where = cfg.hf_checkpoint or cfg.checkpoint
  if not pathlib.Path(where).is_dir():
    raise ValueError(f"{'hf_checkpoint' if cfg.hf_checkpoint else 'checkpoint'}={where!r}: no such directory")
  return {"eval": to_dataclass(harness.EvalConfig, cfg.eval, "eval"),
          "mesh": to_dataclass(sharding.MeshConfig, cfg.mesh, "mesh"),
          "datasets": harness.parse_datasets(cfg.datasets)}


def run_evaluation(cfg: ml_collections.ConfigDict) -> dict:
  """experiments/evaluate.py: a policy or Hugging Face model on JSONL / generated datasets."""
  parts = validate_evaluation(cfg)
  ecfg, specs = parts["eval"], parts["datasets"]
  data = []
  for name, path, layout in specs:  # read (and check) every dataset before loading the model
    if name == "arithmetic":
      data.append((name, arithmetic.split(0, cfg.max_examples or 256, seed=0)[1]))
    else:
      ex, _ = datasets_lib.load_jsonl(datasets_lib.JsonlConfig(path=path, layout=layout, on_bad_line=cfg.on_bad_line,
                                                               max_examples=cfg.max_examples))
      data.append((name, ex))
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
    if cfg.template == "chat":
      if not getattr(tokenizer, "chat_template", None):
        raise ValueError("template='chat' but the tokenizer has no chat_template")
      template = templates.get_template("chat", chat_template=tokenizer.chat_template)
    else:
      template = templates.R1_ZERO_TEMPLATE if cfg.template == "r1_zero" else cfg.template
    return harness.evaluate_datasets(params, model_cfg, tokenizer, data, template, ecfg, cfg.out_dir,
                                     progress=cfg.progress)
