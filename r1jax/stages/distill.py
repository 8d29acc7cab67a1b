"""Stages `student_base` and `distill` (DeepSeek-R1 sec. 2.4): SFT of a smaller student on
samples of the final policy, no RL. The student base is a smaller transformer pretrained here on
the base's corpus (the embedded default; give a pretrained one with --config.inputs=student=DIR).
The teacher's samples are kept when correct and readable (`curation_filters.filter_samples`).

student_base: Outputs {'policy'}. distill: Inputs {'teacher', 'student'}; Outputs {'policy',
'data': <out>/data.jsonl, 'counts'}.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import jax

from r1jax import curation
from r1jax import curation_filters
from r1jax import fine_tune
from r1jax.model import config as model_config
from r1jax.model.config import ModelConfig
from r1jax import policy_samples
from r1jax import pretraining


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  teacher: str = ""
  """Teacher policy or Hugging Face directory; '' = the pipeline's final policy."""
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 2
  n_kv_heads: int = 1
  head_dim: int = 32
  d_ff: int = 128
  """The student's shape (the embedded default's student base; its other fields are the base's)."""
  pretrain_steps: int = 300
  num_prompts: int = 512
  samples_per_prompt: int = 2
  per_prompt: int = 2
  epochs: int = 2
  seed: int = 3

  def __post_init__(self):
    for f in ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "num_prompts",
              "samples_per_prompt", "per_prompt", "epochs"):
      if getattr(self, f) < 1:
        raise ValueError(f"distill.{f}={getattr(self, f)} must be >= 1")
    if self.n_heads % self.n_kv_heads or self.pretrain_steps < 0:
      raise ValueError(f"distill.n_heads={self.n_heads} must be a multiple of distill.n_kv_heads="
                       f"{self.n_kv_heads} and distill.pretrain_steps={self.pretrain_steps} >= 0")


def student_config(run, ctx) -> ModelConfig:
  d = run.distill
  return dataclasses.replace(run.model, **{f: getattr(d, f) for f in
                                               ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff")})


def student_base(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  del inputs
  if run.hf_checkpoint:
    raise ValueError("student_base: with model.hf_checkpoint give a pretrained student: --config.inputs=student=DIR")
  d, cfg = run.distill, student_config(run, ctx)
  params = model_config.init_sharded(jax.random.key(run.seed + 1), cfg, ctx.mesh, ctx.rules)
  pcfg = dataclasses.replace(run.pretrain, steps=d.pretrain_steps)
  if pcfg.steps:
    params = pretraining.pretrain(params, cfg, pcfg, ctx.tokenizer, lambda: ctx.docs(run), ctx.mesh, out, run.seed,
                                  run.train.progress)
  return {"policy": ctx.save(run, out / "policy", pcfg.steps, params, cfg)}


def run(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  d, fcfg = run.distill, run.curation
  model_cfg, params = ctx.load(run, inputs["teacher"])
  prompts = policy_samples.take(ctx.train_ex, d.num_prompts, d.seed)
  raw = policy_samples.policy_samples(run, ctx, params, model_cfg, prompts, d.samples_per_prompt, d.seed,
                                      str(inputs["teacher"]))
  del params
  kept, counts = curation_filters.filter_samples(raw, fcfg)
  kept = policy_samples.cap_per_prompt(kept, d.per_prompt)
  if not kept:
    print(f"warning: distill: none of the teacher's {len(raw)} samples passed the filters; the student stays as it is")
  curation.write_jsonl(out / "data.jsonl", kept)
  (out / "counts.json").write_text(json.dumps(counts | {"selected": len(kept)}, indent=1))
  print(curation_filters.format_counts(counts))
  res = fine_tune.sft(run, ctx, inputs["student"], str(out / "data.jsonl"), out / "student", epochs=d.epochs)
  return {"policy": res["policy"], "data": str(out / "data.jsonl"), "counts": str(out / "counts.json")}
