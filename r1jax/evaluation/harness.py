"""Evaluate a policy on verifiable problems: pass@1 over k samples, pass@k, cons@k.

The DeepSeek-R1 protocol by default (temperature 0.6, top-p 0.95, k samples per problem).
Completions go through the sharded sampler in fixed-shape batches and are graded by the graders
the accuracy reward uses: `r1jax.rewards.answer.grade` for math, and for code rows (HumanEval)
`r1jax.rewards.code.grade` (the program passes its tests in the sandbox), so pass@1 over k
samples and pass@k mean the same for both.
Outputs: a summary dict (also `summary.json`), `samples.jsonl` with every sample, and a table.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Sequence

import jax
import numpy as np

from r1jax.sampling import rollout
from r1jax.evaluation import metrics
from r1jax.rewards import aha
from r1jax.rewards import answer
from r1jax.rewards import code as code_lib
from r1jax.rewards import format as format_lib
from r1jax.rewards import language as language_lib
from r1jax.sampling.sampler import SamplingConfig


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Sampling protocol and batching of an evaluation."""
  num_samples: int = 1
  """k completions per problem."""
  temperature: float = 0.6
  top_p: float = 0.95
  max_new_tokens: int = 256
  max_prompt_len: int = 512
  batch_size: int = 32
  """Problems per sampler call (rows = batch_size * num_samples)."""
  seed: int = 0
  grade_timeout_s: float = 2.0
  code_timeout_s: float = 10.0
  """Wall-clock limit of one program and all its tests (code rows)."""
  group_by: tuple[str, ...] = ("subject", "level")
  """Example fields to break the results down by, where present."""
  language: str = "en"
  """Target language of the chain of thought for `language_consistency` (a code or script)."""
  answer_extraction: str = "tagged"
  """'tagged' (<answer> / \\boxed{}) or 'last_number' (that, else the last number; `answer.EXTRACTIONS`)."""

  def __post_init__(self):
    if self.num_samples < 1:
      raise ValueError(f"eval.num_samples={self.num_samples} must be >= 1 (k samples per problem)")
    language_lib.resolve_script(self.language)
    answer.check_extraction(self.answer_extraction, "eval.answer_extraction")
    if self.batch_size < 1 or self.max_new_tokens < 1:
      raise ValueError(f"eval.batch_size={self.batch_size} and eval.max_new_tokens={self.max_new_tokens} "
                       f"must be >= 1")


def _summarize(rows: list[dict], k: int) -> dict:
  return metrics.summarize(rows, k) | {
      "format_rate": float(np.mean([r["format"] for r in rows])),
      "mean_length": float(np.mean([r["length"] for r in rows])),
      "language_consistency": float(np.mean([r["language_share"] for r in rows]))}


def _language_share(completion: str, target: str) -> float:
  """Share of target-language words in the chain of thought (DeepSeek-R1's language consistency);
  a CoT without words (digits and symbols only) mixes no language: 1."""
  share = language_lib.language_share(language_lib.chain_of_thought(completion), target)
  return 1.0 if share is None else float(share)


def evaluate(params, model_cfg, tokenizer, examples: Sequence[dict], template: str, ecfg: EvalConfig, *,
             eos_ids: tuple[int, ...], pad_id: int, out_dir=None, progress: bool = True) -> dict:
  """Sample, grade and summarize; writes summary.json and samples.jsonl under `out_dir` if given."""
  for i, ex in enumerate(examples):
    if not code_lib.is_code_example(ex) and not str(ex.get("final", "")).strip():
      raise ValueError(f"evaluation example {i} (id {ex.get('id', '?')!r}) has no reference answer 'final' "
                       f"(nor code 'tests')")
  code_cfg = code_lib.CodeConfig.with_timeout(ecfg.code_timeout_s)
  kept, prompt_ids, dropped = rollout.encode_prompts(examples, tokenizer, template, ecfg.max_prompt_len)
  buckets = tuple(sorted({min(b for b in (32, 64, 128, 256, 512, 1024, 2048, 4096) if b >= len(p))
                          for p in prompt_ids}))
  scfg = SamplingConfig(max_new_tokens=ecfg.max_new_tokens, temperature=ecfg.temperature, top_p=ecfg.top_p,
                        num_samples=ecfg.num_samples, eos_ids=tuple(eos_ids), pad_id=pad_id,
                        prompt_buckets=buckets)
  rows = []
  key = jax.random.key(ecfg.seed)
  starts = range(0, len(kept), ecfg.batch_size)
  if progress:
    from tqdm.auto import tqdm
    starts = tqdm(starts, desc="evaluate", dynamic_ncols=True)
  for b in starts:
    exs, ids = kept[b:b + ecfg.batch_size], prompt_ids[b:b + ecfg.batch_size]
    ro = rollout.sample(params, ids, jax.random.fold_in(key, b), model_cfg, scfg, tokenizer,
                        batch_size=ecfg.batch_size)
    for r, (text, graded) in enumerate(zip(ro.texts, grade_texts(ro.texts, exs, ecfg, code_cfg))):
      ex = exs[r // ecfg.num_samples]
      rows.append({"problem_id": ex.get("id", str(b + r // ecfg.num_samples)), "sample": r % ecfg.num_samples,
                   "completion": text, **graded,
                   "format": bool(format_lib.strict_format(text) > 0), "length": int(ro.length[r]),
                   "language_share": _language_share(text, ecfg.language),
                   **{g: ex[g] for g in ecfg.group_by if g in ex}})
  summary = _summarize(rows, ecfg.num_samples)
  summary |= {k: float(v) for k, v in aha.batch_metrics([r["completion"] for r in rows]).items()}
  summary["timeouts"] = sum(r["verdict"] == "timeout" for r in rows)
  if any(code_lib.is_code_example(ex) for ex in kept):
    summary |= {f"code/{reason}": sum(r["verdict"] == reason and "tests_passed" in r for r in rows)
                for reason in code_lib.VERDICTS}
  summary["prompts_dropped_too_long"] = dropped
  for g in ecfg.group_by:
    for name, rs in sorted(metrics.group_rows(rows, g).items(), key=lambda x: str(x[0])):
      summary[f"{g}={name}/pass@1"] = metrics.summarize(rs, ecfg.num_samples)["pass@1"]
  if out_dir is not None:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    with open(out / "samples.jsonl", "w") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
  return summary


def grade_texts(texts: Sequence[str], examples: Sequence[dict], ecfg: EvalConfig,
                code_cfg: code_lib.CodeConfig) -> list[dict]:
  """Grades texts[r] against examples[r // num_samples]: the row fields of each sample (extracted,
  reference, correct, verdict, normalized, plus tests_passed / tests_total for code). Code rows
  run in parallel sandboxes."""
  exs = [examples[r // ecfg.num_samples] for r in range(len(texts))]
  code_rows = [r for r, ex in enumerate(exs) if code_lib.is_code_example(ex)]
  verdicts = dict(zip(code_rows, code_lib.grade_many([texts[r] for r in code_rows], [exs[r] for r in code_rows],
                                                     code_cfg)))
  out = []
  for r, (text, ex) in enumerate(zip(texts, exs)):
    if r in verdicts:
      c = verdicts[r]
      # Majority voting over programs: identical programs (up to surrounding blank space) vote together.
      out.append({"extracted": c.program, "reference": str(ex.get("entry_point", "")), "correct": c.passed,
                  "verdict": c.reason, "normalized": c.program.strip() if c.program else None,
                  "tests_passed": c.tests_passed, "tests_total": c.tests_total})
      continue
    v = answer.grade(text, str(ex["final"]), timeout_s=ecfg.grade_timeout_s, extract=ecfg.answer_extraction)
    out.append({"extracted": v.extracted, "reference": str(ex["final"]), "correct": bool(v.correct),
                "verdict": v.reason,
                "normalized": answer.normalize_answer(v.extracted) if v.extracted is not None else None})
  return out


def parse_datasets(spec: str) -> list[tuple[str, str, str]]:
  """'name=path[:layout],...' -> [(name, path, layout)]; the bare name 'arithmetic' is the generated
  held-out set of the default run."""
  out = []
  for item in filter(None, (x.strip() for x in spec.split(","))):
    if item == "arithmetic":
      out.append(("arithmetic", "", ""))
      continue
    if "=" not in item:
      raise ValueError(f"datasets entry {item!r}: use name=path[:layout] or 'arithmetic'")
    name, rest = item.split("=", 1)
    path, _, layout = rest.partition(":")
    out.append((name, path, layout or ("aime" if "aime" in name.lower() else
                                       "math" if "math" in name.lower() else
                                       "humaneval" if "humaneval" in name.lower() else "gsm8k")))
  if not out:
    raise ValueError("datasets is empty: give at least one name=path[:layout]")
  return out


def evaluate_datasets(params, model_cfg, tokenizer, datasets: list[tuple[str, list[dict]]], template, ecfg,
                      out_dir, progress=True) -> dict:
  """Evaluate on each (name, examples); prints one table, writes out_dir/summary.json and
  out_dir/<name>/{summary.json,samples.jsonl}."""
  from r1jax.logger import format_table
  k = ecfg.num_samples
  results = {}
  for name, examples in datasets:
    results[name] = evaluate(params, model_cfg, tokenizer, examples, template, ecfg,
                             eos_ids=tuple(getattr(tokenizer, "eos_ids", (tokenizer.eos_id,))), pad_id=tokenizer.pad_id,
                             out_dir=pathlib.Path(out_dir) / name, progress=progress)
  rows = [(n, r["problems"], r["pass@1"], r[f"pass@{k}"], r[f"cons@{k}"], r["format_rate"], r["mean_length"],
           r["reflection_rate"]) for n, r in results.items()]
  print(format_table(rows, ("dataset", "problems", "pass@1", f"pass@{k}", f"cons@{k}", "format", "mean len",
                            "reflection")))
  pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
  (pathlib.Path(out_dir) / "summary.json").write_text(json.dumps(results, indent=1))
  return results
