"""Evaluate a policy on verifiable problems: pass@1 over k samples, pass@k, cons@k.

The DeepSeek-R1 protocol by default (temperature 0.6, top-p 0.95, k samples per problem).
Completions go through the sharded sampler (continuous batching, prompts grouped by length bucket)
while a thread pool grades finished rows, with the graders
the accuracy reward uses: `r1jax.rewards.answer.grade` for math, and for code rows (HumanEval)
`r1jax.rewards.code.grade` (the program passes its tests in the sandbox), so pass@1 over k
samples and pass@k mean the same for both.
Outputs: a summary dict (also `summary.json`), `samples.jsonl` with every sample, and a table.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import sys
from typing import Sequence

import jax
import numpy as np

from r1jax import distributed
from r1jax import memory_sampling
from r1jax.sampling import rollout
from r1jax.sampling import sampler as sampler_lib
from r1jax.evaluation import metrics
from r1jax.rewards import aha
from r1jax.rewards import answer
from r1jax.rewards import extraction
from r1jax.rewards import normalize
from r1jax.rewards import code as code_lib
from r1jax.rewards import format as format_lib
from r1jax.rewards import language as language_lib
from r1jax.sampling.sampler import SamplingConfig, bucket_for


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Sampling protocol and batching of an evaluation."""
  num_samples: int = 1
  """k completions per problem."""
  temperature: float = 0.6
  top_p: float = 0.95
  max_new_tokens: int = 256
  max_prompt_len: int = 512
  """Prompts up to this many tokens share the usual buckets; a longer one gets a longer bucket, up to
  the model's context less max_new_tokens, and one longer than that is scored wrong (never dropped)."""
  batch_size: int = 128
  """Problems per sampler call (rows = batch_size * num_samples); while the device samples one call,
  the host grades the one before."""
  num_slots: int = 256
  """Rows decoded at once (continuous batching: a slot takes the call's next row as soon as its row
  ends); 0 decodes each call's rows all at once, until the longest ends. Each slot holds a KV cache
  of (prompt bucket + max_new_tokens) positions. Throughput grows with slots: the sampler alone at the
  Qwen2.5-0.5B shape on an H100, 1,024 rows x 512 tokens, top-p 0.95, generated 35.7k tok/s in 256
  slots, 47.6k in 512, 51.8k in 1,024 (the full-vocabulary sort of top-p is half of a step: 72.7k
  and 144k tok/s with top-p 1.0 in 256 and 1,024)."""
  grade_workers: int = 0
  """Threads grading finished rows (each math-verify call in its own child process); 0 = one a core."""
  seed: int = 0
  grade_timeout_s: float = 2.0
  code_timeout_s: float = 10.0
  """Wall-clock limit of one program and all its tests (code rows)."""
  group_by: tuple[str, ...] = ("subject", "level")
  """Example fields to break the results down by, where present."""
  language: str = "en"
  """Target language of the chain of thought for `language_consistency` (a code or script)."""
  answer_extraction: str = "tagged"
  """'tagged' (<answer> / \\boxed{}) or 'last_number' (that, else the last number; `extraction.EXTRACTIONS`)."""
  rollout_chunks: str = "auto"
  """Sequential sub-batches each sampler call's batch is generated in (the same rows): 'auto' = the
  fewest that fit in memory (`memory_sampling.plan_sampling`; on CPU only under an explicit limit, see
  `sampling_chunks`), or a count dividing batch_size."""

  def __post_init__(self):
    if self.num_samples < 1:
      raise ValueError(f"eval.num_samples={self.num_samples} must be >= 1 (k samples per problem)")
    language_lib.resolve_script(self.language)
    extraction.check_extraction(self.answer_extraction, "eval.answer_extraction")
    if self.num_slots < 0 or self.grade_workers < 0:
      raise ValueError(f"eval.num_slots={self.num_slots} and eval.grade_workers={self.grade_workers} must be "
                       f">= 0 (0 = static batches / one grader a core)")
    if self.rollout_chunks != "auto" and not (str(self.rollout_chunks).isdigit() and int(self.rollout_chunks) >= 1
                                             and self.batch_size % int(self.rollout_chunks) == 0):
      raise ValueError(f"eval.rollout_chunks={self.rollout_chunks!r} must be 'auto' or an int >= 1 dividing "
                       f"eval.batch_size={self.batch_size}")
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


def prompt_buckets(lengths: Sequence[int], limit: int) -> tuple[int, ...]:
  """The prompt buckets these prompt lengths use: the smallest power of two >= 32 that holds each, or
  `limit` (the model's context less the new tokens) where that is smaller, so a long prompt gets a
  long bucket rather than being dropped."""
  return tuple(sorted({min(max(32, 1 << max(0, n - 1).bit_length()), limit) for n in lengths}))


def _sample_order(prompt_ids: Sequence[Sequence[int]], fits: Sequence[bool], buckets: Sequence[int],
                  batch_size: int) -> list[list[int]]:
  """Problem indices in sampler calls: those that fit, grouped by prompt bucket (one compile each),
  `batch_size` a call."""
  by_bucket: dict[int, list[int]] = {}
  for i, (p, ok) in enumerate(zip(prompt_ids, fits)):
    if ok:
      by_bucket.setdefault(bucket_for(len(p), buckets), []).append(i)
  return [idx[j:j + batch_size] for _, idx in sorted(by_bucket.items()) for j in range(0, len(idx), batch_size)]


def sampling_chunks(params, model_cfg, scfg: SamplingConfig, ecfg: EvalConfig, prompt_len: int,
                    limit_bytes: int | None = None) -> int:
  """eval.rollout_chunks resolved for batches of eval.batch_size prompts of `prompt_len` tokens:
  'auto' is the fewest chunks that fit beside the parameters (`memory_sampling.plan_sampling` against
  `limit_bytes`, else the device's limit; a `DoesNotFitError` if none does). On CPU without
  `limit_bytes` 1, uncompiled: the devices share the host's memory, far above what a CPU evaluation
  samples."""
  if ecfg.rollout_chunks != "auto":
    return int(ecfg.rollout_chunks)
  if limit_bytes is None and jax.devices()[0].platform == "cpu":
    return 1
  mesh = getattr(jax.tree.leaves(params)[0].sharding, "mesh", None)
  mesh = mesh if isinstance(mesh, jax.sharding.Mesh) and {"data", "fsdp"} <= set(mesh.shape) else None
  return memory_sampling.plan_sampling(model_cfg, scfg, mesh, prompts=ecfg.batch_size, prompt_len=prompt_len,
                                       params=params, limit_bytes=limit_bytes, name="evaluation sampling",
                                       resident_name="held",
                                       knobs=f"lower eval.batch_size={ecfg.batch_size}, eval.num_samples="
                                             f"{ecfg.num_samples} or eval.max_new_tokens={ecfg.max_new_tokens}",
                                       log=lambda *a: None).chunks


def evaluate(params, model_cfg, tokenizer, examples: Sequence[dict], template: str, ecfg: EvalConfig, *,
             eos_ids: tuple[int, ...], pad_id: int, out_dir=None, progress: bool = True,
             prompt_ids: Sequence[Sequence[int]] | None = None, max_len_R=None,
             limit_bytes: int | None = None) -> dict:
  """Sample, grade and summarize; writes summary.json and samples.jsonl under `out_dir` if given.

  No problem is dropped: a prompt longer than `ecfg.max_prompt_len` gets a longer bucket, up to the
  model's context less `max_new_tokens`; one longer than that is scored wrong (verdict
  'prompt_too_long', counted in `prompts_too_long` and in the denominator).
  The rows are decoded in `ecfg.num_slots` continuous-batching slots, `ecfg.batch_size` problems a
  sampler call (or `sampling_chunks` calls, planned against `limit_bytes`, when that does not fit);
  while the device generates one call, a thread pool grades the ones before.
  prompt_ids / max_len_R: the prompts' token ids (instead of templating and tokenizing each question)
  and a per-row cap on completion lengths, for benchmarks (`benchmarks/eval_throughput.py`).
  """
  for i, ex in enumerate(examples):
    if not code_lib.is_code_example(ex) and not str(ex.get("final", "")).strip():
      raise ValueError(f"evaluation example {i} (id {ex.get('id', '?')!r}) has no reference answer 'final' "
                       f"(nor code 'tests')")
  code_cfg = code_lib.CodeConfig.with_timeout(ecfg.code_timeout_s)
  if prompt_ids is None:
    prompt_ids = rollout.encode_prompts(examples, tokenizer, template, max_prompt_len=sys.maxsize)[1]
  k, N = ecfg.num_samples, ecfg.max_new_tokens
  limit = model_cfg.max_seq_len - N
  fits = [len(p) <= limit for p in prompt_ids]
  buckets = prompt_buckets([len(p) for p, ok in zip(prompt_ids, fits) if ok], limit)
  scfg = SamplingConfig(max_new_tokens=N, temperature=ecfg.temperature, top_p=ecfg.top_p,
                        num_samples=k, eos_ids=tuple(eos_ids), pad_id=pad_id, prompt_buckets=buckets,
                        continuous_batching=ecfg.num_slots > 0, num_slots=ecfg.num_slots)
  chunks = sampling_chunks(params, model_cfg, scfg, ecfg, buckets[-1], limit_bytes) if buckets else 1
  per_call = ecfg.batch_size // chunks  # problems a sampler call
  calls = _sample_order(prompt_ids, fits, buckets, per_call)
  key = jax.random.key(ecfg.seed)
  graded: dict[int, tuple] = {}  # problem index -> (its rows' lengths, the future of their fields)
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=len(calls), desc="evaluate", dynamic_ncols=True)

  def dispatch(idx):
    """The sampler call of problems `idx`."""
    ids = [prompt_ids[i] for i in idx]
    toks, pmask = sampler_lib.pad_prompts(ids, scfg.prompt_buckets, pad_id, per_call)
    caps = np.ones(per_call * k, np.int32)  # padding rows end at once
    caps[:len(idx) * k] = N if max_len_R is None else np.concatenate([max_len_R[i * k:(i + 1) * k] for i in idx])
    return sampler_lib.generate(params, toks, pmask, jax.random.fold_in(key, idx[0]), model_cfg, scfg, caps)

  with concurrent.futures.ThreadPoolExecutor(ecfg.grade_workers or os.cpu_count() or 1) as pool:
    for idx in calls:  # one call at a time (the memory plan's); the pool grades meanwhile
      out = dispatch(idx)
      out = distributed.to_host({name: out[name] for name in ("tokens", "mask", "length")})
      for j, i in enumerate(idx):
        rows_i = range(j * k, (j + 1) * k)
        texts = [tokenizer.decode([int(t) for t in out["tokens"][r][out["mask"][r]]]) for r in rows_i]
        graded[i] = ([int(out["length"][r]) for r in rows_i],
                     pool.submit(_grade_rows, texts, examples[i], ecfg, code_cfg))
      if bar is not None:
        bar.update()
    if bar is not None:
      bar.close()
    rows = []
    for i, ex in enumerate(examples):
      pid = ex.get("id", str(i))
      if i not in graded:  # longer than the model's context: wrong, counted
        rows += [{"problem_id": pid, "sample": s, "completion": "", "extracted": None,
                  "reference": str(ex.get("final", ex.get("entry_point", ""))), "correct": False,
                  "verdict": "prompt_too_long", "normalized": None, "format": False, "length": 0,
                  "language_share": 1.0, "prompt_tokens": len(prompt_ids[i]),
                  **{g: ex[g] for g in ecfg.group_by if g in ex}}
                 for s in range(k)]
        continue
      lengths, fut = graded[i]
      rows += [{"problem_id": pid, "sample": s, **r, "length": n, **{g: ex[g] for g in ecfg.group_by if g in ex}}
               for s, (r, n) in enumerate(zip(fut.result(), lengths))]
  summary = _summarize(rows, k)
  summary |= {k_: float(v) for k_, v in aha.batch_metrics([r["completion"] for r in rows]).items()}
  summary["timeouts"] = sum(r["verdict"] == "timeout" for r in rows)
  if any(code_lib.is_code_example(ex) for ex in examples):
    summary |= {f"code/{reason}": sum(r["verdict"] == reason and "tests_passed" in r for r in rows)
                for reason in code_lib.VERDICTS}
  summary["prompts_too_long"] = sum(not ok for ok in fits)
  summary["prompts_longer_than_max_prompt_len"] = sum(ok and len(p) > ecfg.max_prompt_len
                                                      for p, ok in zip(prompt_ids, fits))
  summary["generated_tokens"] = sum(r["length"] for r in rows)
  for g in ecfg.group_by:
    for name, rs in sorted(metrics.group_rows(rows, g).items(), key=lambda x: str(x[0])):
      summary[f"{g}={name}/pass@1"] = metrics.summarize(rs, k)["pass@1"]
  if out_dir is not None:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    with open(out / "samples.jsonl", "w") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
  return summary


def _grade_rows(texts: Sequence[str], example: dict, ecfg: EvalConfig, code_cfg) -> list[dict]:
  """The fields of one problem's samples (in a grading thread): completion, grade, format, language."""
  return [{"completion": t, **g, "format": bool(format_lib.strict_format(t) > 0),
           "language_share": _language_share(t, ecfg.language)}
          for t, g in zip(texts, grade_texts(texts, [example], ecfg, code_cfg))]


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
                "normalized": normalize.normalize_answer(v.extracted) if v.extracted is not None else None})
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
  # Every problem is in the denominator; those whose prompt exceeds the model's context (scored
  # wrong) are shown when there are any.
  too_long = any(r["prompts_too_long"] for r in results.values())
  rows = [(n, r["problems"]) + ((r["prompts_too_long"],) if too_long else ()) +
          (r["pass@1"], r[f"pass@{k}"], r[f"cons@{k}"], r["format_rate"], r["mean_length"], r["reflection_rate"])
          for n, r in results.items()]
  print(format_table(rows, ("dataset", "problems") + (("too long (wrong)",) if too_long else ()) +
                     ("pass@1", f"pass@{k}", f"cons@{k}", "format", "mean len", "reflection")))
  pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
  (pathlib.Path(out_dir) / "summary.json").write_text(json.dumps(results, indent=1))
  return results
