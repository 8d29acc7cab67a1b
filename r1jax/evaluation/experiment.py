"""experiments/evaluate.py: a policy or Hugging Face model evaluated on JSONL or generated datasets
(its config, checked before any model is loaded, and its run)."""
from __future__ import annotations

import dataclasses
import pathlib

from absl import logging as absl_logging
import jax
import ml_collections

from r1jax import config_sections
from r1jax import datasets as datasets_lib
from r1jax import errors
from r1jax import policy as policy_lib
from r1jax import sharding
from r1jax import templates
from r1jax import tokenizer as tok_lib
from r1jax.config_sections import to_dataclass
from r1jax.evaluation import harness
from r1jax.tasks import arithmetic


def config() -> ml_collections.ConfigDict:
  """experiments/evaluate.py's config: what to evaluate on which data, sections from the dataclasses."""
  c = ml_collections.ConfigDict()
  c.checkpoint = "runs/r1_zero/policy"  # an r1jax policy directory (written by experiments/r1_zero.py)
  c.hf_checkpoint = ""  # or a Hugging Face Qwen2 / Qwen3 / Llama directory (takes precedence)
  c.datasets = "arithmetic"  # name=path[:layout],...  layouts: gsm8k, aime, math, math_solution
  c.max_examples = 0  # per dataset, 0 = all
  c.on_bad_line = "fail"
  c.template = "r1_zero"  # 'r1_zero', 'chat' / 'chat_boxed' (the tokenizer's chat template) or text with {prompt}
  c.out_dir = "runs/eval"
  c.mesh = config_sections.section(sharding.MeshConfig)
  c.eval = config_sections.section(harness.EvalConfig, num_samples=4, max_new_tokens=40)
  c.progress = True
  return c


@errors.config_errors
def validate(cfg: ml_collections.ConfigDict) -> "EvaluationRun":
  """The evaluation config's sections and datasets, checked before any model is loaded."""
  unknown = sorted(set(cfg) - set(config()))
  if unknown:
    raise ValueError(f"unknown config field(s) {unknown}; the top level takes {sorted(config())}")
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
    from r1jax.model import hf_files
    hf_files.check_checkpoint(where, field)
  else:
    policy_lib.check_dir(where, field)
  ecfg = to_dataclass(harness.EvalConfig, cfg.eval, "eval")
  mesh = to_dataclass(sharding.MeshConfig, cfg.mesh, "mesh")
  return EvaluationRun(ecfg, mesh, tuple(examples(cfg, harness.parse_datasets(cfg.datasets))))


@dataclasses.dataclass(frozen=True)
class EvaluationRun:
  """experiments/evaluate.py's config, resolved: its sections and the datasets' examples."""
  eval: harness.EvalConfig
  mesh: sharding.MeshConfig
  data: tuple
  """(name, examples) of every dataset."""


def examples(cfg: ml_collections.ConfigDict, specs: list) -> list[tuple[str, list[dict]]]:
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


def run(cfg: ml_collections.ConfigDict) -> dict:
  """experiments/evaluate.py: a policy or Hugging Face model on JSONL / generated datasets."""
  ev = validate(cfg)
  ecfg, data = ev.eval, list(ev.data)
  absl_logging.set_verbosity(absl_logging.WARNING)
  mesh = sharding.make_mesh(ev.mesh)
  rules = sharding.rules_table(ev.mesh.rules)
  with jax.set_mesh(mesh):
    if cfg.hf_checkpoint:
      from r1jax.model import hf
      model_cfg, params = hf.load_hf_checkpoint(cfg.hf_checkpoint, mesh=mesh, rules=rules)
      tokenizer = tok_lib.load_tokenizer(cfg.hf_checkpoint)
    else:
      model_cfg, params, tokenizer = policy_lib.load_policy(cfg.checkpoint, mesh, rules)
    template = templates.resolve(cfg.template, tokenizer)
    return harness.evaluate_datasets(params, model_cfg, tokenizer, data, template, ecfg, cfg.out_dir,
                                     progress=cfg.progress)
