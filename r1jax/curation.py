"""Curating SFT and preference data: the data side of cold start, rejection sampling and rl_all.

A `Sample` is one completion of one prompt with its provenance (`source`: the policy directory
or generator, checkpoint step, seed and sample index that produced it) and its `scores`. Datasets
are JSONL files of samples, one per line; `read_samples` checks each line's fields and names the
first bad one. Rejection sampling mixes its kept samples with `reference_samples` of generated
non-reasoning tasks (`r1jax.tasks.general`).

Which samples are kept: `r1jax.curation_filters`; which are chosen for cold start and which pairs the
reward model learns from: `r1jax.curation_selection`.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Iterable, Sequence

from r1jax import templates

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


# ---------------------------------------------------------------- reference data


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
