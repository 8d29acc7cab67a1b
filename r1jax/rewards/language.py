"""Language-consistency reward (DeepSeek-R1, stage 2): share of target-language words in the CoT.

Words: maximal runs of letters of one script; Han/kana characters count one word each (CJK
writes no spaces, and one character is roughly one word). Digits, punctuation and math (`$...$`,
`\\(...\\)`, `\\[...\\]`, LaTeX commands like `\\frac`) are not words of any language and are
removed first, so a Chinese CoT full of formulas is not penalized for `x` and `\\frac`.

Normalization (the paper says only "map through a sigmoid"): with share s in [0, 1] and k > 0,
    r(s) = (sigmoid(k * (s - 1/2)) - sigmoid(-k/2)) / (sigmoid(k/2) - sigmoid(-k/2)),
so r(0) = 0, r(1/2) = 1/2, r(1) = 1, r is increasing, steepest at s = 1/2 (k = 10 by default:
r(0.75) = 0.9299, r(0.9) = 0.9886).
"""
from __future__ import annotations

import math
import re

# Script -> inclusive code point ranges of its letters.
SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {
    "latin": ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x24F), (0x1E00, 0x1EFF)),
    "cjk": ((0x3040, 0x309F), (0x30A0, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
            (0x20000, 0x2FA1F)),
    "hangul": ((0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF)),
    "cyrillic": ((0x400, 0x52F),),
    "greek": ((0x370, 0x3FF),),
    "arabic": ((0x600, 0x6FF), (0x750, 0x77F)),
    "hebrew": ((0x590, 0x5FF),),
    "devanagari": ((0x900, 0x97F),),
    "thai": ((0xE00, 0xE7F),),
}
# Language codes -> script.
ALIASES = {"en": "latin", "fr": "latin", "de": "latin", "es": "latin", "it": "latin", "pt": "latin",
           "zh": "cjk", "ja": "cjk", "ko": "hangul", "ru": "cyrillic", "uk": "cyrillic", "el": "greek",
           "ar": "arabic", "he": "hebrew", "hi": "devanagari", "th": "thai"}
_PER_CHARACTER = {"cjk"}
_MATH = re.compile(r"\$\$.*?\$\$|\$.*?\$|\\\(.*?\\\)|\\\[.*?\\\]|\\[A-Za-z]+", re.DOTALL)


def resolve_script(target: str) -> str:
  """'latin' / 'cjk' / ... or a language code ('en', 'zh', ...) -> script name."""
  t = target.lower()
  script = ALIASES.get(t, t)
  if script not in SCRIPTS:
    raise ValueError(f"language target {target!r} is not known; use one of {sorted(SCRIPTS)} "
                     f"or a code in {sorted(ALIASES)}")
  return script


def _script_of(ch: str) -> str | None:
  """The script of a letter ('other' for letters of unlisted scripts), None for non-letters."""
  if not ch.isalpha():
    return None
  cp = ord(ch)
  for name, ranges in SCRIPTS.items():
    if any(lo <= cp <= hi for lo, hi in ranges):
      return name
  return "other"


def words_by_script(text: str) -> list[str]:
  """The script of every word of `text` (math removed), in order."""
  text = _MATH.sub(" ", text)
  words, prev = [], None
  for ch in text:
    s = _script_of(ch)
    if s is not None and (s != prev or s in _PER_CHARACTER):
      words.append(s)
    prev = s
  return words


def chain_of_thought(completion: str) -> str:
  """The `<think>` content: from after the first `<think>` (or the start, when the prompt holds the
  `<think>`) to the first `</think>` or `<answer>` after it (or the end, when cut off)."""
  start = completion.find("<think>")
  start = 0 if start < 0 else start + len("<think>")
  ends = [e for e in (completion.find("</think>", start), completion.find("<answer>", start)) if e >= 0]
  return completion[start:min(ends)] if ends else completion[start:]


def language_share(text: str, target: str) -> float | None:
  """Fraction of the words of `text` written in `target`'s script; None when it has no words."""
  script = resolve_script(target)
  words = words_by_script(text)
  if not words:
    return None
  return sum(w == script for w in words) / len(words)


def sigmoid_normalize(share: float, k: float = 10.0) -> float:
  """The rescaled sigmoid of the module docstring: [0, 1] -> [0, 1], 0 -> 0, 1 -> 1."""
  if not 0.0 <= share <= 1.0:
    raise ValueError(f"share={share} must lie in [0, 1]")
  sig = lambda x: 1.0 / (1.0 + math.exp(-x))
  lo, hi = sig(-k / 2), sig(k / 2)
  return (sig(k * (share - 0.5)) - lo) / (hi - lo)


def language_consistency(completion: str, target: str, k: float = 10.0) -> float:
  """R_language of one completion: sigmoid_normalize(target share of its CoT). A CoT without words
  (digits and symbols only) mixes no language: 1, as the evaluation counts it (scoring it 0 made
  R_lang follow whether the CoT had words, a reward unrelated to language); no CoT at all: 0."""
  cot = chain_of_thought(completion)
  share = language_share(cot, target)
  if share is None:
    return 1.0 if cot.strip() else 0.0
  return sigmoid_normalize(share, k)


def mix_language(r_acc, r_lang, alpha: float = 0.8):
  """R = alpha * R_accuracy + (1 - alpha) * R_language (DeepSeek-R1: alpha = 0.8); arrays or floats."""
  return alpha * r_acc + (1 - alpha) * r_lang
