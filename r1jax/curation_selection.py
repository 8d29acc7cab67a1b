"""Choosing among curated samples: what cold start trains on, and the pairs the reward model
learns from.

Cold start keeps correct, readable samples and orders them by informativeness: prompts the
student base solves sometimes (pass rate strictly between 0 and 1, nearest 0.5 first) before
those it always or never solves (`select`). Preference pairs for the reward model are decided by
rules, in priority: correct beats incorrect, then in-language beats mixed, then concise (at most
`concise_ratio` of the other's tokens) beats long.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from r1jax.curation import Sample
from r1jax.curation_filters import FilterConfig, Grader, default_grader, graded, in_language


def pass_rates(prompts: Sequence[str], accuracy: Sequence[float]) -> dict[str, float]:
  """Mean accuracy per prompt (e.g. of the student base's samples), in first-seen order."""
  if len(prompts) != len(accuracy):
    raise ValueError(f"{len(prompts)} prompts but {len(accuracy)} accuracy values")
  groups: dict[str, list[float]] = {}
  for p, c in zip(prompts, accuracy):
    groups.setdefault(p, []).append(float(c))
  return {p: sum(v) / len(v) for p, v in groups.items()}


def informativeness_order(pass_rate: Mapping[str, float]) -> list[str]:
  """Prompts with 0 < pass rate < 1 first, nearest 0.5 first, then the rest; ties keep the
  mapping's order (a stable sort), so the result is deterministic."""
  bad = {p: r for p, r in pass_rate.items() if not 0.0 <= r <= 1.0}
  if bad:
    raise ValueError(f"pass rates must lie in [0, 1]; got {len(bad)} outside, e.g. {next(iter(bad.items()))}")
  key = lambda p: (0, abs(pass_rate[p] - 0.5)) if 0.0 < pass_rate[p] < 1.0 else (1, 0.0)
  return sorted(pass_rate, key=key)


def select(samples: Sequence[Sample], pass_rate: Mapping[str, float], n: int, per_prompt: int) -> list[Sample]:
  """Up to `n` samples, at most `per_prompt` of each prompt (its first ones), prompts in
  informativeness order; every sample's prompt needs a pass rate."""
  if n < 0 or per_prompt < 1:
    raise ValueError(f"select n={n} must be >= 0 and per_prompt={per_prompt} >= 1")
  by_prompt: dict[str, list[Sample]] = {}
  for s in samples:
    by_prompt.setdefault(s.prompt, []).append(s)
  missing = [p for p in by_prompt if p not in pass_rate]
  if missing:
    raise ValueError(f"no pass rate for {len(missing)} prompts of the samples, e.g. {missing[0][:80]!r}")
  out = []
  for p in informativeness_order(pass_rate):
    out += by_prompt.get(p, [])[:per_prompt][:n - len(out)]
  return out


@dataclasses.dataclass(frozen=True)
class PreferencePair:
  prompt: str
  chosen: str
  rejected: str
  reason: str
  """The first criterion that decided: 'correct', 'language' or 'concise'."""


def _preference(a: Sample, b: Sample, cfg: FilterConfig) -> tuple[int, str] | None:
  """(+1 if a is preferred else -1, reason) by (correct, in language, concise), None on a tie."""
  ca, cb = a.scores["accuracy"] >= 1.0, b.scores["accuracy"] >= 1.0
  if ca != cb:
    return (1 if ca else -1), "correct"
  la, lb = in_language(a, cfg), in_language(b, cfg)
  if la != lb:
    return (1 if la else -1), "language"
  if a.num_tokens <= cfg.concise_ratio * b.num_tokens:
    return 1, "concise"
  if b.num_tokens <= cfg.concise_ratio * a.num_tokens:
    return -1, "concise"
  return None


def preference_pairs(samples: Sequence[Sample], cfg: FilterConfig = FilterConfig(),
                     grader: Grader = default_grader) -> list[PreferencePair]:
  """Every decided pair among the completions of each prompt (pairs i < j in input order)."""
  by_prompt: dict[str, list[Sample]] = {}
  for s in samples:
    by_prompt.setdefault(s.prompt, []).append(graded(s, grader))
  pairs = []
  for prompt, group in by_prompt.items():
    for i, a in enumerate(group):
      for b in group[i + 1:]:
        decided = _preference(a, b, cfg)
        if decided:
          chosen, rejected = (a, b) if decided[0] > 0 else (b, a)
          pairs.append(PreferencePair(prompt, chosen.completion, rejected.completion, decided[1]))
  return pairs
