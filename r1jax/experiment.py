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

import dataclasses
import json
import pathlib
import time

from absl import logging as absl_logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1jax import checkpoint as ckpt_lib
from r1jax import model as model_lib
from r1jax import sharding
from r1jax import templates
from r1jax import tokenizer as tok_lib
from r1jax import train
from r1jax import train_step
from r1jax.config import to_dataclass
from r1jax.evaluation import harness
from r1jax.grpo.config import GRPOConfig
from r1jax.logger import format_table, plot_run
from r1jax.rewards import combine
from r1jax.sampler import SamplingConfig
from r1jax.tasks import arithmetic

STAGES = ("r1_zero", "pretrain", "evaluate", "average")


def validate(cfg: ml_collections.ConfigDict) -> dict:
  """Every section as its frozen dataclass; raises ValueError naming the bad field. Compiles nothing."""
  if cfg.stage not in STAGES:
    raise ValueError(f"stage={cfg.stage!r} is not one of {STAGES}")
  model_over = {k: v for k, v in cfg.model.items() if k not in ("preset", "hf_checkpoint", "init_checkpoint")}
  if cfg.model.preset not in model_lib.PRESETS:
    raise ValueError(f"model.preset={cfg.model.preset!r} is not one of {sorted(model_lib.PRESETS)}")
  base = dataclasses.asdict(model_lib.PRESETS[cfg.model.preset])
  model_cfg = to_dataclass(model_lib.ModelConfig, base | model_over, "model")
  out = {
      "model": model_cfg,
      "mesh": to_dataclass(sharding.MeshConfig, cfg.mesh, "mesh"),
      "grpo": to_dataclass(GRPOConfig, cfg.grpo, "grpo"),
      "optim": to_dataclass(train_step.OptimConfig, cfg.optim, "optim"),
      "pretrain_optim": to_dataclass(train_step.OptimConfig, cfg.pretrain.optim, "pretrain.optim"),
      "train": to_dataclass(train.TrainConfig, cfg.train, "train"),
      "eval": to_dataclass(harness.EvalConfig, cfg.eval, "eval"),
  }
  out["sampling"] = to_dataclass(SamplingConfig, cfg.sampling, "sampling",
                                 num_samples=out["grpo"].num_generations)
  for f in ("steps", "batch_size", "seq_len"):
    if cfg.pretrain[f] < 1:
      raise ValueError(f"pretrain.{f}={cfg.pretrain[f]} must be >= 1")
  if cfg.template not in ("r1_zero",) and "{prompt}" not in cfg.template:
    raise ValueError(f"template={cfg.template!r}: use 'r1_zero' or a string with a {{prompt}} slot")
  return out


# ----------------------------------------------------------------------------- policy on disk


def save_policy(directory, step: int, params, model_cfg: model_lib.ModelConfig, tokenizer_path: str):
  """Parameters (sharded Orbax checkpoint) plus what is needed to use them: model config and tokenizer."""
  meta = {"model": dataclasses.asdict(model_cfg), "tokenizer": str(tokenizer_path), "step": int(step)}
  with ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(directory), save_every=1, keep=1,
                                                       async_save=False)) as ck:
    ck.save(step, {"params": params}, meta, force=True)


def load_policy(directory, mesh):
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
    shardings = model_lib.param_shardings(model_cfg, mesh)
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
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  for key, value in sweep[index].items():
    *path, leaf = key.split(".")
    node = cfg
    for p in path:
      node = node[p]
    if leaf not in node:
      raise ValueError(f"sweep entry {index}: unknown config field {key!r}")
    node[leaf] = value
  return cfg


def template_text(cfg) -> str:
  return templates.R1_ZERO_TEMPLATE if cfg.template == "r1_zero" else cfg.template


# ----------------------------------------------------------------------------- data


def load_examples(cfg) -> tuple[list[dict], list[dict]]:
  """(train, held-out) examples for the configured source."""
  d = cfg.data
  if d.source not in ("synthetic", "jsonl", "reasoning_gym", "tfds"):
    raise ValueError(f"data.source={d.source!r} is not one of ('synthetic', 'jsonl', 'reasoning_gym', 'tfds')")
  if d.source == "synthetic":
    return arithmetic.split(d.num_train, d.num_eval, seed=d.seed)
  from r1jax import datasets as datasets_lib
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
    for item in filter(None, (x.strip() for x in spec.split(","))):
      path, _, layout = item.partition(":")
      out += datasets_lib.load_jsonl(jc(path, n, layout))[0]
    return out

  mix = lambda spec, exs: ([exs[i] for i in np.random.default_rng(d.seed).permutation(len(exs))]
                           if "," in spec.strip(",") else exs)
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
  model_cfg, ocfg = parts["model"], parts["pretrain_optim"]
  optimizer = train_step.make_optimizer(ocfg)
  state = train_step.init_state(params, optimizer)
  shardings = train_step.state_shardings(state)
  ck = ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(workdir / "base" / "ckpt"), save_every=1, keep=1,
                                                       async_save=False))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  if ck.latest_step() == cfg.pretrain.steps:
    state, _ = ck.restore(cfg.pretrain.steps, abstract)
    ck.close()
    print(f"base model: loaded the pretrained checkpoint from {workdir / 'base'}")
    return state["params"]
  toks, mask = pack_documents(docs, tokenizer, cfg.pretrain.seq_len)
  step_fn = train_step.make_sft_step(model_cfg, ocfg, shardings, mesh)
  rng = np.random.default_rng(cfg.seed)
  from tqdm.auto import tqdm
  B = cfg.pretrain.batch_size
  losses = []
  for _ in (bar := tqdm(range(cfg.pretrain.steps), desc="pretrain base", dynamic_ncols=True,
                        disable=not cfg.train.progress)):
    idx = rng.integers(0, len(toks), B)
    batch = train_step.shard_batch({"tokens": toks[idx], "mask": mask[idx], "loss_mask": mask[idx]}, mesh)
    state, m = step_fn(state, batch)
    losses.append(m["loss"])
    if len(losses) % 50 == 0:
      bar.set_postfix(loss=f"{float(np.mean(jax.device_get(losses[-50:]))):.3f}")
  ck.save(cfg.pretrain.steps, state, {"step": cfg.pretrain.steps}, force=True)
  ck.wait()
  ck.close()
  return state["params"]


def build_model(cfg, parts, tokenizer, mesh, workdir, docs_fn):
  """(model config, params): from a Hugging Face checkpoint, or the pretrained tiny default."""
  if cfg.model.hf_checkpoint:
    from r1jax import hf
    overrides = {k: getattr(parts["model"], k) for k in ("dtype", "param_dtype", "remat", "attention_impl",
                                                         "decode_attention", "unroll_decode", "logits_chunk")}
    return hf.load_hf_checkpoint(cfg.model.hf_checkpoint, mesh=mesh, **overrides)
  model_cfg = dataclasses.replace(parts["model"], vocab_size=tokenizer.vocab_size)
  parts["model"] = model_cfg
  params = model_lib.init_sharded(jax.random.key(cfg.seed), model_cfg, mesh)
  if cfg.pretrain.steps:
    params = pretrain(cfg, parts, params, tokenizer, docs_fn(), mesh, workdir)
  return model_cfg, params


def average_stage(cfg, parts, model_cfg, params, workdir: pathlib.Path, tok_path) -> dict:
  """Average parameters of checkpoints in workdir/ckpt; writes workdir/policy_avg (a policy)."""
  state = train_step.init_state(params, train_step.make_optimizer(parts["optim"]))
  if parts["grpo"].beta > 0:
    state["ref_params"] = params
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  del state
  steps = [int(x) for x in str(cfg.average.steps).split(",") if x.strip()] or None
  used = ckpt_lib.average_checkpoints(workdir / "ckpt", workdir / "ckpt_avg", abstract, steps=steps,
                                      last_k=None if steps else cfg.average.last_k,
                                      select=lambda path: path.startswith("params"))
  with ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(workdir / "ckpt_avg"), save_every=1, keep=1,
                                                       async_save=False)) as ck:
    avg, _ = ck.restore(None, abstract)
  save_policy(workdir / "policy_avg", max(used), avg["params"], model_cfg, tok_path)
  print(f"averaged the parameters of steps {used} into {workdir / 'policy_avg'}")
  return {"averaged_steps": used}


# ----------------------------------------------------------------------------- run


def run(cfg: ml_collections.ConfigDict) -> dict:
  """Run the configured stage; returns (and for 'r1_zero' writes) the summary."""
  t_start = time.time()
  parts = validate(cfg)
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every save at INFO
  if cfg.get("distributed", False):
    jax.distributed.initialize()
  workdir = pathlib.Path(cfg.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=1))
  template = template_text(cfg)
  train_ex, eval_ex = load_examples(cfg)
  docs_fn = lambda: pretraining_documents(train_ex, template, cfg.seed, cfg.pretrain.r1_fraction,
                                          cfg.pretrain.wrong_fraction)
  mesh = sharding.make_mesh(parts["mesh"])
  with jax.set_mesh(mesh):
    tokenizer = build_tokenizer(cfg, workdir, docs_fn)
    model_cfg, params = build_model(cfg, parts, tokenizer, mesh, workdir, docs_fn)
    if cfg.stage == "pretrain":
      return {"num_params": model_cfg.num_params()}
    if cfg.stage == "average":
      return average_stage(cfg, parts, model_cfg, params, workdir, tokenizer_path(cfg, workdir))
    eos = (tokenizer.eos_id,)
    ecfg = parts["eval"]
    evaluate = lambda p, tag: harness.evaluate(p, model_cfg, tokenizer, eval_ex, template, ecfg, eos_ids=eos,
                                               pad_id=tokenizer.pad_id, out_dir=workdir / f"eval_{tag}",
                                               progress=cfg.train.progress)
    base = evaluate(params, "base")
    print(format_table([(k, v) for k, v in base.items() if not k.endswith("per_response")], ("base model", "value")))
    if cfg.stage == "evaluate":
      return base
    scfg = dataclasses.replace(parts["sampling"], eos_ids=eos, pad_id=tokenizer.pad_id)
    specs = combine.default_specs(cfg.rewards.to_dict())
    ckcfg = ckpt_lib.CheckpointConfig(str(workdir / "ckpt"), save_every=cfg.checkpoint.save_every,
                                      keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    result = train.run_grpo(model_cfg=model_cfg, params=params, tokenizer=tokenizer, examples=train_ex,
                            reward_specs=specs, template=template, tcfg=parts["train"], gcfg=parts["grpo"],
                            ocfg=parts["optim"], scfg=scfg, ckcfg=ckcfg, mesh=mesh, workdir=workdir)
    final = evaluate(result["state"]["params"], "final")
    save_policy(workdir / "policy", parts["train"].steps, result["state"]["params"], model_cfg, tokenizer_path(cfg, workdir))
  plots = plot_run(workdir)
  summary = {"base_accuracy": base["pass@1"], "final_accuracy": final["pass@1"],
             "base_format_rate": base["format_rate"], "format_rate": final["format_rate"],
             "base_mean_length": base["mean_length"], "final_mean_length": final["mean_length"],
             "eval_problems": len(eval_ex), "train_steps": parts["train"].steps,
             "wall_seconds": time.time() - t_start, "plots": [str(p) for p in plots]}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  rows = [(k, base[k], final[k]) for k in ("pass@1", "format_rate", "mean_length", "reflection_rate")
          if k in base]
  print(format_table(rows, ("held-out metric", "base", "after GRPO")))
  print(f"wall time {summary['wall_seconds']:.0f} s; summary, metrics and plots in {workdir}")
  return summary


def run_evaluation(cfg: ml_collections.ConfigDict) -> dict:
  """experiments/evaluate.py: a policy or Hugging Face model on JSONL / generated datasets."""
  from r1jax import datasets as datasets_lib
  ecfg = to_dataclass(harness.EvalConfig, cfg.eval, "eval")
  specs = harness.parse_datasets(cfg.datasets)
  if cfg.template not in ("r1_zero", "chat") and "{prompt}" not in cfg.template:
    raise ValueError(f"template={cfg.template[:60]!r} has no {{prompt}} slot; use 'r1_zero', 'chat' or such a text")
  data = []
  for name, path, layout in specs:  # read (and check) every dataset before loading the model
    if name == "arithmetic":
      data.append((name, arithmetic.split(0, cfg.max_examples or 256, seed=0)[1]))
    else:
      ex, _ = datasets_lib.load_jsonl(datasets_lib.JsonlConfig(path=path, layout=layout, on_bad_line=cfg.on_bad_line,
                                                               max_examples=cfg.max_examples))
      data.append((name, ex))
  absl_logging.set_verbosity(absl_logging.WARNING)
  mesh = sharding.make_mesh(to_dataclass(sharding.MeshConfig, cfg.mesh, "mesh"))
  with jax.set_mesh(mesh):
    if cfg.hf_checkpoint:
      from r1jax import hf
      model_cfg, params = hf.load_hf_checkpoint(cfg.hf_checkpoint, mesh=mesh)
      tokenizer = tok_lib.load_tokenizer(cfg.hf_checkpoint)
    else:
      model_cfg, params, tokenizer = load_policy(cfg.checkpoint, mesh)
    if cfg.template == "chat":
      if not getattr(tokenizer, "chat_template", None):
        raise ValueError("template='chat' but the tokenizer has no chat_template")
      template = templates.get_template("chat", chat_template=tokenizer.chat_template)
    else:
      template = templates.R1_ZERO_TEMPLATE if cfg.template == "r1_zero" else cfg.template
    return harness.evaluate_datasets(params, model_cfg, tokenizer, data, template, ecfg, cfg.out_dir,
                                     progress=cfg.progress)
