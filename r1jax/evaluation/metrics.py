"""Evaluation metrics: pass@k (unbiased), pass@1, cons@k (majority vote), grouped tables.

DeepSeek-R1 protocol: k samples per problem; pass@1 = mean correctness over the k samples;
cons@k = correctness of the majority answer among the k samples.

A "row" is one graded sample: a dict with at least the problem id, a correctness flag and the
`normalize_answer` key of its extracted answer (None when it gave none), plus any grouping fields.
"""
from __future__ import annotations

import collections
from typing import Any, Hashable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k (Chen et al. 2021, eq. 1) from n samples of which c are correct:
  1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) (no huge binomials)."""
  if not (n >= 1 and 0 <= c <= n and 1 <= k <= n):
    raise ValueError(f"pass_at_k needs n >= 1, 0 <= c <= n, 1 <= k <= n; got n={n}, c={c}, k={k}")
  if n - c < k:
    return 1.0  # every k-subset contains a correct sample
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_at_1(correct: Sequence[bool | float]) -> float:
  """Mean correctness over samples (R1's pass@1 for one problem)."""
  if len(correct) == 0:
    raise ValueError("pass_at_1 of no samples")
  return float(np.mean(np.asarray(correct, np.float64)))


def majority_index(answers: Sequence[Hashable | None]) -> int | None:
  """Index of the sample holding the most frequent non-None answer; None if all are None.

  Ties go to the answer whose first occurrence comes first (sample order), so the vote is
  deterministic and does not depend on hashing or string order.
  """
  counts = collections.Counter(a for a in answers if a is not None)
  if not counts:
    return None
  first = {}
  for i, a in enumerate(answers):
    if a is not None:
      first.setdefault(a, i)
  best = max(counts, key=lambda a: (counts[a], -first[a]))
  return first[best]


def cons_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool | float]) -> float:
  """Majority-vote correctness: `correct` of the first sample with the winning answer (0.0 if no
  sample gave an answer). `answers` should be `normalize.normalize_answer` keys, so that "0.5" and
  "\\frac{1}{2}" vote together."""
  if len(answers) != len(correct):
    raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
  i = majority_index(answers)
  return 0.0 if i is None else float(correct[i])


def summarize(rows: Sequence[dict], k: int, *, problem_key: str = "problem_id", correct_key: str = "correct",
              answer_key: str = "normalized") -> dict[str, float]:
  """pass@1, pass@k and cons@k over problems (each averaged over problems, in [0, 1]).

  Every problem needs >= k samples; pass@k uses all n of them (unbiased estimator), cons@k the
  first k in row order.
  """
  by_problem: dict[Any, list[dict]] = collections.defaultdict(list)
  for r in rows:
    by_problem[r[problem_key]].append(r)
  if not by_problem:
    raise ValueError("summarize of no rows")
  p1, pk, ck = [], [], []
  for pid, samples in by_problem.items():
    if len(samples) < k:
      raise ValueError(f"problem {pid!r} has {len(samples)} samples, fewer than k={k}")
    flags = [float(s[correct_key]) for s in samples]
    p1.append(pass_at_1(flags))
    pk.append(pass_at_k(len(flags), int(sum(f > 0 for f in flags)), k))
    ck.append(cons_at_k([s[answer_key] for s in samples[:k]], flags[:k]))
  return {"problems": len(by_problem), "samples": len(rows), "pass@1": float(np.mean(p1)),
          f"pass@{k}": float(np.mean(pk)), f"cons@{k}": float(np.mean(ck))}


def group_rows(rows: Sequence[dict], key: str) -> dict[Any, list[dict]]:
  """Rows by the value of `key` (dataset / subject / level), in first-seen order; rows without
  the key belong to no group."""
  groups: dict[Any, list[dict]] = {}
  for r in rows:
    if key in r:
      groups.setdefault(r[key], []).append(r)
  return groups


def grouped_summary(rows: Sequence[dict], key: str, k: int, **summarize_kw) -> dict[Any, dict[str, float]]:
  """`summarize` per value of `key`, plus the overall summary under "(all)"."""
  out = {g: summarize(rs, k, **summarize_kw) for g, rs in group_rows(rows, key).items()}
  out["(all)"] = summarize(rows, k, **summarize_kw)
  return out


def summary_table(rows: Sequence[dict], key: str, k: int, **summarize_kw) -> tuple[list[tuple], tuple[str, ...]]:
  """(table rows, headers) for `logger.format_table`: one line per group, then "(all)"."""
  headers = (key, "problems", "pass@1", f"pass@{k}", f"cons@{k}")
  table = [(str(g), s["problems"], s["pass@1"], s[f"pass@{k}"], s[f"cons@{k}"])
           for g, s in grouped_summary(rows, key, k, **summarize_kw).items()]
  return table, headers
