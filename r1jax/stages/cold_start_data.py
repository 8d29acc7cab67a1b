"""Stage `cold_start_data`: curated long chain-of-thought examples for the cold start (DeepSeek-R1
sec. 2.3.1). k candidates per prompt from a teacher (a policy directory such as an R1-Zero run,
or a Hugging Face model; at the embedded default the base itself), kept when correct and readable
(`curation_filters.filter_samples`: not overlong, length bounds, strict format, no repetition loops,
language share above the threshold, correct, no duplicate), ordered by informativeness (prompts
the student base solves sometimes first: its pass rate over k samples strictly between 0 and 1).

Inputs: {'teacher', 'student'} policies. Outputs: {'data': <out>/data.jsonl (curation.Sample rows
with provenance and scores), 'counts': <out>/counts.json}, and <out>/counts.txt (kept / dropped).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from r1jax import curation
from r1jax import curation_filters
from r1jax import curation_selection
from r1jax import policy_samples


SELECTIONS = ("curated", "random")


@dataclasses.dataclass(frozen=True)
class ColdStartConfig:
  teacher: str = ""
  """Teacher policy or Hugging Face directory; '' = the pipeline's base policy."""
  num_prompts: int = 256
  """Training prompts the teacher answers."""
  samples_per_prompt: int = 8
  """k candidates per prompt (and the student's k samples for its pass rate)."""
  per_prompt: int = 2
  """Most examples kept per prompt."""
  max_examples: int = 2000
  """Most examples selected; 0 = none (cold_start_sft then leaves the base as it is)."""
  selection: str = "curated"
  """'curated' (the curation filters, then informativeness order, <= per_prompt a prompt) or
  'random' (max_examples of all the teacher's candidates, uniformly, unfiltered: the control of
  the cold-start-size experiment)."""
  temperature: float = 1.0
  epochs: int = 3
  """SFT epochs of cold_start_sft on the curated data."""
  seed: int = 1

  def __post_init__(self):
    for f in ("num_prompts", "samples_per_prompt", "per_prompt", "epochs"):
      if getattr(self, f) < 1:
        raise ValueError(f"cold_start.{f}={getattr(self, f)} must be >= 1")
    if self.max_examples < 0:
      raise ValueError(f"cold_start.max_examples={self.max_examples} must be >= 0 (0 = no cold start)")
    if self.selection not in SELECTIONS:
      raise ValueError(f"cold_start.selection={self.selection!r} is not one of {SELECTIONS}")
    if self.temperature <= 0:
      raise ValueError(f"cold_start.temperature={self.temperature} must be > 0")


def run(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  cs, fcfg = run.cold_start, run.curation
  prompts = policy_samples.take(ctx.train_ex, cs.num_prompts, cs.seed)
  model_cfg, params = ctx.load(run, inputs["teacher"])
  cands = policy_samples.policy_samples(run, ctx, params, model_cfg, prompts, cs.samples_per_prompt, cs.seed,
                                  str(inputs["teacher"]), temperature=cs.temperature)
  if inputs["student"] == inputs["teacher"]:
    student = cands
  else:
    model_cfg, params = ctx.load(run, inputs["student"])
    student = policy_samples.policy_samples(run, ctx, params, model_cfg, prompts, cs.samples_per_prompt, cs.seed + 1,
                                      str(inputs["student"]), temperature=cs.temperature)
  rates = curation_selection.pass_rates([s.prompt for s in student], [s.scores["accuracy"] for s in student])
  cands = [dataclasses.replace(s, scores={**s.scores, "student_pass_rate": rates[s.prompt]}) for s in cands]
  curation.write_jsonl(out / "candidates.jsonl", cands)
  chosen, counts = choose(cands, cs, fcfg)
  if not chosen:
    print(f"warning: cold_start_data: none of the {len(cands)} teacher samples passed the filters; the cold "
          f"start SFT will leave the base as it is (raise cold_start.samples_per_prompt or use a stronger teacher)")
  curation.write_jsonl(out / "data.jsonl", chosen)
  (out / "counts.json").write_text(json.dumps(counts, indent=1))
  table = curation_filters.format_counts({k: v for k, v in counts.items() if k != "selected"})
  how = (f"informativeness order, <= {cs.per_prompt} per prompt" if cs.selection == "curated"
         else "uniformly at random, unfiltered")
  (out / "counts.txt").write_text(table + f"\nselected ({how}): {len(chosen)}\n")
  print(table)
  return {"data": str(out / "data.jsonl"), "counts": str(out / "counts.json"),
          "candidates": str(out / "candidates.jsonl")}


def choose(cands, cs: ColdStartConfig, fcfg) -> tuple[list, dict]:
  """The cold-start examples among the teacher's candidates (each scored with its prompt's
  `student_pass_rate`) under `cs.selection`, and the kept / dropped counts."""
  rates = {s.prompt: s.scores["student_pass_rate"] for s in cands}
  if cs.selection == "random":
    pick = np.random.default_rng(cs.seed).permutation(len(cands))[:cs.max_examples]
    chosen = [cands[i] for i in sorted(pick)]
    counts = {"total": len(cands), "kept": len(cands)}
  else:
    kept, counts = curation_filters.filter_samples(cands, fcfg)
    chosen = curation_selection.select(kept, rates, cs.max_examples, cs.per_prompt)
  chosen = [dataclasses.replace(s, scores={**s.scores, "student_pass_rate": rates[s.prompt]}) for s in chosen]
  counts["selected"] = len(chosen)
  return chosen, counts
