"""Which curated samples are kept.

Filters (`FILTERS`), each `fn(sample, cfg) -> reason | None`, run in this fixed order and a
sample is dropped for the first reason found (cheap checks before the grader):
  overlong    'overlong'   it hit the length cap without EOS (`truncated`)
  length      'too_short' / 'too_long'   `num_tokens` outside [min_tokens, max_tokens]
  format      'format'     not the strict R1 format (`rewards.format.strict_format`)
  repetition  'repetition' in the chain of thought some `ngram`-word sequence occurs more than
              `max_ngram_repeats` times, or it ends with one block repeated >= `suffix_repeats`
              times over >= `min_suffix_chars` characters (a loop of one word or symbol)
  language    'language'   target-language share of the CoT's words < `min_language_share`
              (`rewards.language.language_share`); a CoT with no words (only digits and
              symbols) mixes no language and passes
  correct     'incorrect'  the grader's score < 1: `scores['accuracy']` when the sampler already
              computed it (`combine.compute_rewards`, in parallel and time-limited), else
              `default_grader`, one sample at a time
  duplicate   'duplicate'  the same completion as an earlier kept one of the same prompt
              (whitespace-normalized unless `dedup_whitespace=False`)
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Mapping, Sequence

from r1jax.curation import Sample
from r1jax.logger import format_table
from r1jax.rewards import combine
from r1jax.rewards import format as format_lib
from r1jax.rewards import language as language_lib
from r1jax.tasks import general

Grader = Callable[[str, dict], float]


@dataclasses.dataclass(frozen=True)
class FilterConfig:
  """Thresholds of the filters (module docstring) and of the preference rule."""
  language: str = "en"
  """Target language of the chain of thought (a code or script, `rewards.language`)."""
  min_language_share: float = 0.95
  """Smallest share of target-language words in the CoT that is kept (and counts as in-language)."""
  min_tokens: int = 1
  max_tokens: int | None = None
  """Length bounds in tokens, inclusive; None: no upper bound."""
  ngram: int = 8
  max_ngram_repeats: int = 4
  """A CoT in which some `ngram`-word sequence occurs more often than this is a loop."""
  suffix_repeats: int = 4
  min_suffix_chars: int = 32
  """A CoT that ends with one block repeated >= `suffix_repeats` times over >= `min_suffix_chars`
  characters is a loop ("!!!!...", "1111...", which have too few words for the n-gram rule)."""
  dedup_whitespace: bool = True
  """Completions equal up to whitespace are duplicates; False: only identical ones."""
  think_in_prompt: bool = False
  """The prompt ends with <think> (`rewards.format`)."""
  concise_ratio: float = 0.8
  """Preference: a completion is more concise when it has at most this fraction of the other's tokens."""

  def __post_init__(self):
    language_lib.resolve_script(self.language)
    if not 0.0 <= self.min_language_share <= 1.0:
      raise ValueError(f"curation.min_language_share={self.min_language_share} must lie in [0, 1]")
    if self.min_tokens < 0 or (self.max_tokens is not None and self.max_tokens < self.min_tokens):
      raise ValueError(f"curation.min_tokens={self.min_tokens}, max_tokens={self.max_tokens}: need "
                       "0 <= min_tokens <= max_tokens (or max_tokens None)")
    for f in ("ngram", "max_ngram_repeats", "suffix_repeats", "min_suffix_chars"):
      if getattr(self, f) < 1:
        raise ValueError(f"curation.{f}={getattr(self, f)} must be >= 1")
    if not 0.0 < self.concise_ratio <= 1.0:
      raise ValueError(f"curation.concise_ratio={self.concise_ratio} must lie in (0, 1]")


def default_grader(completion: str, example: dict) -> float:
  """Generated general tasks by their exact-words grader, everything else by the accuracy reward
  (numbers exactly, LaTeX by math-verify, reasoning-gym and code rows by their own checkers)."""
  if example.get("task") == general.TASK:
    return general.grade(completion, example)
  return combine.accuracy_reward(completion, example)


def max_ngram_count(text: str, n: int) -> int:
  """Occurrences of the most frequent sequence of `n` whitespace-separated words (0 if none)."""
  w = text.split()
  return max(collections.Counter(tuple(w[i:i + n]) for i in range(len(w) - n + 1)).values(), default=0)


def repeated_suffix(text: str, min_repeats: int) -> int:
  """Characters covered by the longest run of >= `min_repeats` copies of one block ending `text`
  (trailing whitespace ignored); 0 if there is none."""
  text = text.rstrip()
  best = 0
  for p in range(1, len(text) // min_repeats + 1):
    block, r = text[-p:], 1
    while text.endswith(block, 0, len(text) - r * p):
      r += 1
    if r >= min_repeats:
      best = max(best, r * p)
  return best


def overlong(s: Sample, cfg: FilterConfig) -> str | None:
  return "overlong" if s.truncated else None


def length(s: Sample, cfg: FilterConfig) -> str | None:
  if s.num_tokens < cfg.min_tokens:
    return "too_short"
  return "too_long" if cfg.max_tokens is not None and s.num_tokens > cfg.max_tokens else None


def strict_format(s: Sample, cfg: FilterConfig) -> str | None:
  return None if format_lib.strict_format(s.completion, think_in_prompt=cfg.think_in_prompt) == 1.0 else "format"


def repetition(s: Sample, cfg: FilterConfig) -> str | None:
  cot = language_lib.chain_of_thought(s.completion)
  if max_ngram_count(cot, cfg.ngram) > cfg.max_ngram_repeats:
    return "repetition"
  return "repetition" if repeated_suffix(cot, cfg.suffix_repeats) >= cfg.min_suffix_chars else None


def language_share(s: Sample, cfg: FilterConfig) -> float | None:
  """Target-language share of the sample's CoT words; None when it has no words."""
  return language_lib.language_share(language_lib.chain_of_thought(s.completion), cfg.language)


def in_language(s: Sample, cfg: FilterConfig) -> bool:
  share = language_share(s, cfg)
  return share is None or share >= cfg.min_language_share


def language(s: Sample, cfg: FilterConfig) -> str | None:
  return None if in_language(s, cfg) else "language"


def graded(s: Sample, grader: Grader = default_grader) -> Sample:
  """The sample with scores['accuracy'] set (kept when already there, else from `grader`)."""
  if "accuracy" in s.scores:
    return s
  score = float(grader(s.completion, {**s.example, "final": s.answer}))
  return dataclasses.replace(s, scores={**s.scores, "accuracy": score})


def correct(s: Sample, cfg: FilterConfig, grader: Grader = default_grader) -> str | None:
  return None if graded(s, grader).scores["accuracy"] >= 1.0 else "incorrect"


def dedup_key(s: Sample, cfg: FilterConfig) -> tuple[str, str]:
  return s.prompt, (" ".join(s.completion.split()) if cfg.dedup_whitespace else s.completion)


FILTERS: dict[str, Callable[[Sample, FilterConfig], str | None]] = {
    "overlong": overlong, "length": length, "format": strict_format, "repetition": repetition,
    "language": language, "correct": correct}
ORDER = tuple(FILTERS) + ("duplicate",)
REASONS = {"overlong": ("overlong",), "length": ("too_short", "too_long"), "format": ("format",),
           "repetition": ("repetition",), "language": ("language",), "correct": ("incorrect",),
           "duplicate": ("duplicate",)}


def score(s: Sample, cfg: FilterConfig) -> Sample:
  """The sample with scores 'format', 'language_share' and 'length' (tokens) added."""
  fmt = format_lib.strict_format(s.completion, think_in_prompt=cfg.think_in_prompt)
  return dataclasses.replace(s, scores={**s.scores, "format": fmt, "language_share": language_share(s, cfg),
                                        "length": s.num_tokens})


def filter_samples(samples: Sequence[Sample], cfg: FilterConfig, filters: Sequence[str] = ORDER,
                   grader: Grader = default_grader) -> tuple[list[Sample], dict[str, int]]:
  """Applies `filters` (names from ORDER, run in ORDER's order whatever order they are given in).

  Returns the kept samples, in input order and `score`d (graded too when 'correct' is applied),
  and the counts {'total', 'kept', reason: dropped, ...} with every reason of the applied filters.
  """
  unknown = [f for f in filters if f not in ORDER]
  if unknown:
    raise ValueError(f"unknown filters {unknown}; allowed: {list(ORDER)}")
  active = [f for f in ORDER if f in filters]
  counts = {"total": len(samples), "kept": 0} | {r: 0 for f in active for r in REASONS[f]}
  kept, seen = [], set()
  for s in samples:
    reason = None
    for name in active:
      if name == "duplicate":
        reason = "duplicate" if dedup_key(s, cfg) in seen else None
      elif name == "correct":
        s = graded(s, grader)
        reason = correct(s, cfg)
      else:
        reason = FILTERS[name](s, cfg)
      if reason:
        break
    if reason:
      counts[reason] += 1
      continue
    seen.add(dedup_key(s, cfg))
    kept.append(score(s, cfg))
  counts["kept"] = len(kept)
  return kept, counts


def format_counts(counts: Mapping[str, int]) -> str:
  """The counts of `filter_samples` as a text table: kept, then dropped by reason, with shares."""
  total = counts["total"]
  share = lambda c: f"{100 * c / total:.1f}%" if total else "-"
  rows = [(k, c, share(c)) for k, c in counts.items() if k != "total"] + [("total", total, share(total))]
  return format_table(rows, ("kept / dropped by", "samples", "share"))


def deduplicate(samples: Sequence[Sample], cfg: FilterConfig = FilterConfig()) -> list[Sample]:
  """The first sample of each distinct (prompt, completion), in input order (`dedup_whitespace`)."""
  return filter_samples(samples, cfg, ("duplicate",))[0]
