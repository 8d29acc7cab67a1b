"""'Aha moment' metrics (DeepSeek-R1): how often responses reflect, restart and voice uncertainty.

Each category is a list of phrases, matched case-insensitively on word boundaries, with any run of
whitespace between words and both ' and ’ as apostrophes. Within a category matches do not
overlap and the longest phrase wins ("let me try again" counts once, not also as "try again").
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

PHRASES: dict[str, tuple[str, ...]] = {
    "reflection": (
        "wait", "hold on", "let me check", "let's check", "let me double-check", "let me double check",
        "double-check", "double check", "double-checking", "let me re-check", "let me recheck", "re-check",
        "recheck", "check again", "let me verify", "verify", "verifying", "let me confirm",
        "re-examine", "re-evaluate", "reconsider", "let me reconsider", "on second thought"),
    "restart": (
        "let me start over", "let's start over", "start over", "start again", "let me try again",
        "let's try again", "try again", "try a different approach", "i made a mistake", "made a mistake",
        "made an error", "that's wrong", "that is wrong", "this is wrong", "that's incorrect",
        "that is incorrect", "this is incorrect", "i was wrong", "scratch that", "let me redo",
        "let me recalculate", "recalculate"),
    "uncertainty": (
        "maybe", "perhaps", "not sure", "i'm not sure", "i am not sure", "unsure", "i think", "i guess",
        "i believe", "probably", "possibly", "might be", "it seems", "seems like"),
}
CATEGORIES = tuple(PHRASES)


def _compile(phrases: Sequence[str]) -> re.Pattern:
  alts = []
  for p in sorted(phrases, key=len, reverse=True):  # longest first: the alternation takes the first hit
    words = [re.escape(w).replace("'", "['’]") for w in p.split()]
    alts.append(r"\s+".join(words))
  return re.compile(r"\b(?:" + "|".join(alts) + r")\b", re.IGNORECASE)


_PATTERNS = {c: _compile(p) for c, p in PHRASES.items()}


def aha_counts(text: str) -> dict[str, int]:
  """Occurrences per category in one response: {'reflection': n, 'restart': n, 'uncertainty': n}."""
  return {c: len(p.findall(text)) for c, p in _PATTERNS.items()}


def phrase_counts(text: str, category: str) -> dict[str, int]:
  """Occurrences of each phrase of `category` (lower-cased match text -> count), for inspection."""
  counts: dict[str, int] = {}
  for m in _PATTERNS[category].finditer(text):
    key = " ".join(m.group(0).lower().replace("’", "'").split())
    counts[key] = counts.get(key, 0) + 1
  return counts


def batch_metrics(texts: Sequence[str]) -> dict[str, float]:
  """Per category: `{c}_rate` = fraction of responses with >= 1 occurrence, `{c}_per_response` =
  mean occurrences per response. Empty batch -> zeros."""
  counts_NxC = np.array([[aha_counts(t)[c] for c in CATEGORIES] for t in texts], np.float64)
  counts_NxC = counts_NxC.reshape(len(texts), len(CATEGORIES))
  out = {}
  for j, c in enumerate(CATEGORIES):
    col = counts_NxC[:, j]
    out[f"{c}_rate"] = float((col > 0).mean()) if len(texts) else 0.0
    out[f"{c}_per_response"] = float(col.mean()) if len(texts) else 0.0
  return out
