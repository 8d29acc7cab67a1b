"""What the stages of one run share: validated config, mesh, tokenizer, data, template, and
loading / saving / evaluating policies.

The embedded default needs no network: verifiable arithmetic problems are generated, a
SentencePiece tokenizer is trained on them, and a tiny base model is pretrained on a corpus of
solved problems (`stages.pretrain`). The corpus mostly answers in plain prose and only sometimes in
the R1 `<think>/<answer>` form, and some of its answers are wrong, so the base model is weak at the
template and RL has something to teach.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import numpy as np

from r1jax import datasets as datasets_lib
from r1jax.config import ARCH_FIELDS
from r1jax import errors
from r1jax.model.config import ModelConfig
from r1jax import policy as policy_lib
from r1jax import sharding
from r1jax import templates
from r1jax import tokenizer as tok_lib
from r1jax.evaluation import harness
from r1jax.tasks import arithmetic
from r1jax.tasks import chains
from r1jax.tasks import traces


@dataclasses.dataclass(frozen=True)
class Context:
  """What a run builds once, before its stages: work directory, mesh, tokenizer, template and the
  data. The configuration is the `config.Run` each stage is given beside it."""
  workdir: pathlib.Path
  mesh: Any
  rules: Any
  """The parameter placement table of mesh.rules."""
  tokenizer: Any
  tokenizer_path: pathlib.Path
  template: str
  train_ex: list[dict]
  eval_ex: list[dict]

  def docs(self, run) -> list[str]:
    p = run.pretrain
    if run.data.source == "chains":  # with try -> check -> correct traces at traces.reflect_rate
      return traces.documents(self.train_ex, self.template, run.seed, p.r1_fraction, p.wrong_fraction, run.traces)
    return pretraining_documents(self.train_ex, self.template, run.seed, p.r1_fraction, p.wrong_fraction)

  def load(self, run, directory) -> tuple[ModelConfig, Any]:
    """(model config, params) of a policy or Hugging Face directory; the architecture is the
    checkpoint's, every other model field (dtype, remat, attention) this run's."""
    mine = {f.name: getattr(run.model, f.name) for f in dataclasses.fields(run.model) if f.name not in ARCH_FIELDS}
    if policy_lib.is_hf(directory):
      from r1jax.model import hf
      return hf.load_hf_checkpoint(directory, mesh=self.mesh, rules=self.rules, **mine)
    cfg, params, _ = policy_lib.load_policy(directory, self.mesh, self.rules)
    return dataclasses.replace(cfg, **mine), params

  def save(self, run, directory, step: int, params, model_cfg, hf_export: bool = False) -> str:
    policy_lib.save_policy(directory, step, params, model_cfg, self.tokenizer_path)
    if hf_export:
      export_hf(params, model_cfg, self.tokenizer, run.hf_checkpoint, pathlib.Path(f"{directory}_hf"))
    return str(directory)

  def evaluate(self, run, params, model_cfg, out_dir, examples=None) -> dict:
    return harness.evaluate(params, model_cfg, self.tokenizer, self.eval_ex if examples is None else examples,
                            self.template, run.eval, eos_ids=run.sampling.eos_ids,
                            pad_id=self.tokenizer.pad_id, out_dir=out_dir, progress=run.train.progress,
                            limit_bytes=int(run.train.memory_limit_gb * (1 << 30)) or None)


def build(run) -> tuple[Context, Any]:
  """Data, mesh and tokenizer of a validated config (call inside `jax.set_mesh(ctx.mesh)` after),
  and the Run with what the tokenizer settles: its EOS ids among sampling.eos_ids, its pad id
  and what `run.from_tokenizer` leaves to it (the pad id, a model built here's vocabulary size)."""
  workdir = pathlib.Path(run.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  # A chat template is the tokenizer's own: resolved once the tokenizer is loaded. The tiny
  # default's tokenizer is trained on documents made with the plain template text.
  template = templates.R1_ZERO_TEMPLATE if run.template == "r1_zero" else run.template
  train_ex, eval_ex = load_examples(run.data)
  mesh = sharding.make_mesh(run.mesh)
  path = tokenizer_path(run, workdir)
  ctx = Context(workdir, mesh, sharding.rules_table(run.mesh.rules), None, path, template, train_ex, eval_ex)
  with jax.set_mesh(mesh):
    tok = build_tokenizer(run, path, lambda: ctx.docs(run))
  ctx = dataclasses.replace(ctx, tokenizer=tok, template=templates.resolve(run.template, tok))
  eos = tuple(dict.fromkeys(tuple(getattr(tok, "eos_ids", (tok.eos_id,))) + tuple(run.sampling.eos_ids)))
  pad = tok.pad_id if "sampling.pad_id" in run.from_tokenizer else run.sampling.pad_id
  run = dataclasses.replace(run, sampling=dataclasses.replace(run.sampling, eos_ids=eos, pad_id=pad))
  if "model.vocab_size" in run.from_tokenizer:  # the tiny default: the tokenizer's size
    run = dataclasses.replace(run, model=dataclasses.replace(run.model, vocab_size=tok.vocab_size))
  return ctx, run


def export_hf(params, model_cfg, tokenizer, hf_checkpoint: str, out_dir: pathlib.Path) -> None:
  """The policy as a Hugging Face directory (safetensors, config.json, tokenizer files)."""
  from r1jax.model import hf_export
  hf_export.save_hf_checkpoint(params, model_cfg, out_dir)  # every process (all-gathers), process 0 writes
  if jax.process_index() == 0:
    hf_export.save_tokenizer(tokenizer, out_dir, source=hf_checkpoint or None)
  print(f"Hugging Face export: {out_dir}")


# ----------------------------------------------------------------------------- data and tokenizer


def load_examples(d: datasets_lib.DataConfig) -> tuple[list[dict], list[dict]]:
  """(train, held-out) examples for the configured source."""
  if d.source == "synthetic":
    return arithmetic.split(d.num_train, d.num_eval, seed=d.seed)
  if d.source == "chains":
    return chains.split(d.num_train, d.num_eval, seed=d.seed, min_ops=d.chain_min_ops, max_ops=d.chain_max_ops)
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
  check_split(d, train_ex, eval_ex)
  return train_ex, eval_ex


def check_split(d: datasets_lib.DataConfig, train_ex: list, eval_ex: list) -> None:
  """Both splits of a JSONL source hold rows (an empty file, or data.num_eval taking every row,
  would otherwise fail later, in the tokenizer's training, naming nothing)."""
  if d.eval_path and not eval_ex:
    raise errors.UserError("data", f"data.eval_path={d.eval_path!r}", "holds no usable rows",
                           "give a JSONL file of problems")
  if not train_ex and not d.eval_path and eval_ex:
    raise errors.UserError("data", f"data.num_eval={d.num_eval}", f"data.path={d.path!r} holds only {len(eval_ex)} "
                           f"usable rows and all of them went to the held-out split",
                           f"lower data.num_eval below {len(eval_ex)} or give data.eval_path")
  if not train_ex:
    raise errors.UserError("data", f"data.path={d.path!r}", "holds no usable rows", "give a JSONL file of problems")


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


def tokenizer_path(run, workdir: pathlib.Path) -> pathlib.Path:
  if run.hf_checkpoint:
    return pathlib.Path(run.hf_checkpoint).resolve()
  if run.tokenizer.path:
    return pathlib.Path(run.tokenizer.path).resolve()
  return (workdir / "base" / "tokenizer.model").resolve()


def build_tokenizer(run, path: pathlib.Path, corpus_fn):
  if run.hf_checkpoint or run.tokenizer.path or path.exists():
    return tok_lib.load_tokenizer(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  return tok_lib.train_sentencepiece(corpus_fn(), run.tokenizer.vocab_size, path,
                                     model_type=run.tokenizer.model_type)
