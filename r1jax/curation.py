"""Curating SFT and preference data: the data side of cold start, rejection sampling and rl_all.

A `Sample` is one completion of one prompt with its provenance (`source`: the policy directory
or generator, checkpoint step, seed and sample index that produced it) and its `scores`. Datasets
are JSONL files of samples, one per line; `read_samples` checks each line's fields and names the
first bad one.

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

Cold start keeps correct, readable samples and orders them by informativeness: prompts the
student base solves sometimes (pass rate strictly between 0 and 1, nearest 0.5 first) before
those it always or never solves (`select`). Rejection sampling mixes its kept samples with
`reference_samples` of generated non-reasoning tasks (`r1jax.tasks.general`). Preference pairs for
the reward model are decided by rules, in priority: correct beats incorrect, then in-language beats
mixed, then concise (at most `concise_ratio` of the other's tokens) beats long.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
from typing import Any, Callable, Iterable, Mapping, Sequence

from r1jax import templates
from r1jax.logger import format_table
from r1jax.rewards import combine
from r1jax.rewards import format as format_lib
from r1jax.rewards import language as language_lib
from r1jax.tasks import general

Grader = Callable[[str, dict], float]
SOURCE_KEYS = ("policy", "step", "seed", "sample_index")


@dataclasses.dataclass(frozen=True)
class Sample:
  """One completion of one prompt, with where it came from and how it scored."""
  prompt: str
  """The exact prompt text the policy saw (template applied)."""
  completion: str
  answer: str
  """The reference answer (the dataset row's 'final')."""
  num_tokens: int
  """Completion length in tokens (EOS not counted)."""
  truncated: bool
  """True when generation hit the length cap before EOS."""
  source: dict
  """Provenance: at least SOURCE_KEYS (policy directory or generator name, checkpoint step or
  None, sampling seed, index of the sample among its prompt's samples)."""
  example: dict = dataclasses.field(default_factory=dict)
  """The dataset row (question, final, rg_entry, tests, task, ...), which some graders need."""
  scores: dict = dataclasses.field(default_factory=dict)
  """Rewards and measurements: accuracy, format, language_share, length, ..."""


# ---------------------------------------------------------------- JSONL

_TYPES = {"prompt": str, "completion": str, "answer": str, "num_tokens": int, "truncated": bool, "source": dict,
          "example": dict, "scores": dict}
_REQUIRED = ("prompt", "completion", "answer", "num_tokens", "truncated", "source")


def check_sample(row: Any) -> str | None:
  """What is wrong with a JSON row as a Sample (one line), or None."""
  if not isinstance(row, dict):
    return f"expected an object, got {type(row).__name__}"
  missing = [k for k in _REQUIRED if k not in row]
  unknown = sorted(set(row) - set(_TYPES))
  if missing or unknown:
    return f"missing fields {missing}" if missing else f"unknown fields {unknown}; allowed: {list(_TYPES)}"
  for k, v in row.items():
    # bool is an int in Python; a token count of True is a bug upstream.
    if not isinstance(v, _TYPES[k]) or (k == "num_tokens" and isinstance(v, bool)):
      return f"field {k!r} is {type(v).__name__}, expected {_TYPES[k].__name__}"
  lost = [k for k in SOURCE_KEYS if k not in row["source"]]
  return f"source lacks {lost} (provenance needs {list(SOURCE_KEYS)})" if lost else None


def write_jsonl(path: str | pathlib.Path, records: Iterable) -> int:
  """Writes samples (or any dataclasses / dicts) one JSON object per line; returns the count."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  n = 0
  with path.open("w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r, ensure_ascii=False) + "\n")
      n += 1
  return n


def read_samples(path: str | pathlib.Path) -> list[Sample]:
  """Samples from a JSONL file; ValueError 'path:line: problem' at the first bad line."""
  out = []
  with pathlib.Path(path).open(encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not JSON ({e.msg})") from None
      problem = check_sample(row)
      if problem:
        raise ValueError(f"{path}:{lineno}: {problem}")
      out.append(Sample(**row))
  return out


# ---------------------------------------------------------------- filters

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


# ---------------------------------------------------------------- informativeness and selection

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


# ---------------------------------------------------------------- preference pairs and reference data

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


def reference_completion(example: dict) -> str:
  """A generated row's SFT target in the R1 format: its one-line solution as the thought."""
  return f"<think> {example['solution']} </think> <answer> {example['final']} </answer>"


def reference_samples(examples: Sequence[dict], template: str | templates.Template, tokenizer, seed: int,
                      policy: str = "generated") -> list[Sample]:
  """Samples of generated rows (e.g. `tasks.general.generate`) answered by their reference;
  `tokenizer.encode` counts the tokens; provenance names the generator and its seed."""
  out = []
  for i, ex in enumerate(examples):
    completion = reference_completion(ex)
    out.append(Sample(templates.format_prompt(ex["question"], template), completion, str(ex["final"]),
                      len(tokenizer.encode(completion)), False,
                      {"policy": policy, "step": None, "seed": seed, "sample_index": i}, dict(ex)))
  return out
