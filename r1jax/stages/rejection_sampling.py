"""Stage `rejection_sampling` (DeepSeek-R1 sec. 2.3.3): n samples per prompt from the RL policy;
kept when correct, readable, single-language and not overlong (`curation_filters.filter_samples`), at most
`rejection.per_prompt` per prompt, deduplicated; mixed with non-reasoning data (at the embedded
default generated tasks of another kind answered by their reference, `tasks.general`).

The policy also answers `rejection.num_general` general prompts: all raw samples (reasoning and
general) go to samples.jsonl, from which the reward model's rule-based preference pairs come.

Inputs: {'policy'}. Outputs: {'data': <out>/data.jsonl (the SFT mix), 'samples': <out>/samples.jsonl
(every raw sample), 'counts': <out>/counts.json}, and <out>/counts.txt (kept / dropped by reason).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from r1jax import curation
from r1jax import curation_filters
from r1jax import policy_samples
from r1jax.tasks import general


@dataclasses.dataclass(frozen=True)
class RejectionConfig:
  num_prompts: int = 256
  """Reasoning (training) prompts sampled."""
  samples_per_prompt: int = 8
  per_prompt: int = 2
  """Most kept samples per prompt."""
  num_general: int = 64
  """Generated non-reasoning tasks mixed into the SFT data (with reference answers), and answered
  by the policy for preference pairs."""
  temperature: float = 1.0
  seed: int = 2

  def __post_init__(self):
    for f in ("num_prompts", "samples_per_prompt", "per_prompt"):
      if getattr(self, f) < 1:
        raise ValueError(f"rejection.{f}={getattr(self, f)} must be >= 1")
    if self.num_general < 0 or self.temperature <= 0:
      raise ValueError(f"rejection.num_general={self.num_general} must be >= 0 and "
                       f"rejection.temperature={self.temperature} > 0")


def run(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  rc, fcfg = run.rejection, run.curation
  model_cfg, params = ctx.load(run, inputs["policy"])
  prompts = policy_samples.take(ctx.train_ex, rc.num_prompts, rc.seed)
  general_ex = general.generate(rc.num_general, seed=rc.seed) if rc.num_general else []
  raw = policy_samples.policy_samples(run, ctx, params, model_cfg, prompts + general_ex, rc.samples_per_prompt, rc.seed,
                                str(inputs["policy"]), temperature=rc.temperature)
  curation.write_jsonl(out / "samples.jsonl", raw)
  reasoning = [s for s in raw if s.example.get("task") != general.TASK]
  kept, counts = curation_filters.filter_samples(reasoning, fcfg)
  capped = policy_samples.cap_per_prompt(kept, rc.per_prompt)
  refs = curation.reference_samples(general_ex, ctx.template, ctx.tokenizer, rc.seed)
  mix = capped + refs
  mix = [mix[i] for i in np.random.default_rng(rc.seed).permutation(len(mix))]
  if not capped:
    print("warning: rejection_sampling: no sample of the policy passed the filters; the SFT mix holds only "
          "the general tasks")
  curation.write_jsonl(out / "data.jsonl", mix)
  counts |= {"over_per_prompt": len(kept) - len(capped), "reasoning_in_mix": len(capped), "general_in_mix": len(refs)}
  (out / "counts.json").write_text(json.dumps(counts, indent=1))
  table = curation_filters.format_counts({k: v for k, v in counts.items()
                                          if k not in ("over_per_prompt", "reasoning_in_mix", "general_in_mix")})
  (out / "counts.txt").write_text(table + f"\nover {rc.per_prompt} per prompt: {counts['over_per_prompt']}; "
                                  f"SFT mix: {len(capped)} reasoning + {len(refs)} general\n")
  print(table)
  return {"data": str(out / "data.jsonl"), "samples": str(out / "samples.jsonl"), "counts": str(out / "counts.json")}
