"""An answer's value and its key.

Numbers are read exactly and without sympy: ints, decimals, `3/4`, `\\frac{3}{4}`, `1,234`, leading
zeros (AIME "025" == 25), and `$`, `%`, `\\text{}` units or plain words around ONE number
("$18", "18 dollars", "18.00"). A decimal also matches a reference that has no finite decimal
expansion (1/3, 2/7) when it is that value truncated or rounded to its >= 3 decimals.
`normalize_answer` is the key majority voting (cons@k) groups answers by.
"""
from __future__ import annotations

import fractions
import math
import re

from r1jax.rewards.extraction import _BOXED, _last_boxed

_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_NUMBER = re.compile(
    rf"(?P<fs>[-+]?)\s*\\frac\s*\{{\s*(?P<fn>{_NUM})\s*\}}\s*\{{\s*(?P<fd>{_NUM})\s*\}}"  # \frac{3}{4}
    rf"|(?P<ss>[-+]?)\s*\\frac(?P<sn>\d)(?P<sd>\d)"  # \frac34
    rf"|(?P<n>{_NUM})(?:\s*/\s*(?P<d>{_NUM}))?")  # 3, 3.5, 1,234, 3/4
# What may surround the one number: words, spaces, sentence punctuation, "x =".
_ALLOWED_AROUND = re.compile(r"[A-Za-z\s.,:;!?=]*")
# Words that change the number's value: "5 thousand" is not 5.
_SCALE_WORDS = re.compile(r"\b(?:hundred|thousand|million|billion|trillion|dozen)s?\b", re.I)
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DROP = re.compile(r"\\left|\\right|\\!|\\displaystyle|\\\$|\$|\\%|%|\^\s*\{?\s*\\circ\s*\}?|°|\\\(|\\\)|\\\[|\\\]")


def _clean(s: str) -> str:
  """Strips formatting that never changes a value: `$`, `%`, units in `\\text{}`, degree signs."""
  s = s.strip()
  if _BOXED.match(s):
    s = _last_boxed(s) or s
  s = s.replace("\u2212", "-").replace("{,}", ",")
  s = re.sub(r"(?<=\d)\\[,;:! ](?=\d)", "", s)  # 1\,234 (LaTeX thin space as thousands separator)
  s = re.sub(r"\\[dt]frac", r"\\frac", s)
  s = _TEXT_CMD.sub(r" \1 ", s)
  s = _DROP.sub("", s)
  s = re.sub(r"\\[,;: ]", " ", s)
  return " ".join(s.split())


def _to_fraction(num: str) -> fractions.Fraction:
  return fractions.Fraction(num.replace(",", ""))


def _parse_number(s: str) -> tuple[fractions.Fraction, int | None] | None:
  """(value, decimals written) if `s` is one number in words/units, else None.

  `decimals` is the count of digits after the point for a plain decimal, None otherwise.
  """
  s = _clean(s)
  matches = list(_NUMBER.finditer(s))
  if len(matches) != 1:
    return None
  m = matches[0]
  before, after = s[:m.start()], s[m.end():]
  if not (_ALLOWED_AROUND.fullmatch(before) and _ALLOWED_AROUND.fullmatch(after)):
    return None
  # A letter glued to the number is a variable or unit symbol ("5x", "x5"): not a plain number.
  if (before and before[-1].isalpha()) or (after and after[0].isalpha()):
    return None
  if _SCALE_WORDS.search(s):
    return None
  if m["fn"] is not None:
    sign = -1 if m["fs"] == "-" else 1
    num, den, decimals = sign * _to_fraction(m["fn"]), _to_fraction(m["fd"]), None
  elif m["sn"] is not None:
    sign = -1 if m["ss"] == "-" else 1
    num, den, decimals = sign * _to_fraction(m["sn"]), _to_fraction(m["sd"]), None
  elif m["d"] is not None:
    num, den, decimals = _to_fraction(m["n"]), _to_fraction(m["d"]), None
  else:
    num, den = _to_fraction(m["n"]), fractions.Fraction(1)
    decimals = len(m["n"].split(".")[1]) if "." in m["n"] else None
  if den == 0:
    return None
  return num / den, decimals


def parse_number(s: str) -> fractions.Fraction | None:
  """The exact value of `s` if it is one number (see the module docstring), else None."""
  parsed = _parse_number(s)
  return None if parsed is None else parsed[0]


def _has_finite_decimal(x: fractions.Fraction) -> bool:
  d = x.denominator
  for p in (2, 5):
    while d % p == 0:
      d //= p
  return d == 1


def _numbers_match(pred: fractions.Fraction, decimals: int | None, ref: fractions.Fraction) -> bool:
  if pred == ref:
    return True
  if decimals is None or decimals < 3 or _has_finite_decimal(ref):
    return False
  # A reference with no finite decimal expansion (1/3) can only be written rounded: accept its
  # truncation or round-half-up to the >= 3 decimals shown (0.333, 0.6667), not 0.334 or 0.33.
  scaled = abs(ref) * 10**decimals
  candidates = {math.floor(scaled), math.floor(scaled + fractions.Fraction(1, 2))}
  return abs(pred) * 10**decimals in candidates and (pred < 0) == (ref < 0)


def _fraction_key(x: fractions.Fraction) -> str:
  return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


_SPACE_NOT_BETWEEN_ALNUM = re.compile(r"(?<![A-Za-z0-9])\s+|\s+(?![A-Za-z0-9])")


def normalize_answer(s: str) -> str:
  """A canonical key for majority voting (cons@k), consistent with `grade`.

  Numbers become their exact reduced value ("025", "25.0", "$25" -> "25"; "0.5", "\\frac{1}{2}"
  -> "1/2"); anything else is `_clean`ed, whitespace dropped except between two letters/digits
  ("x + 1" -> "x+1", but "1 2" stays "1 2", not "12"), and a trailing period dropped.
  Equal keys always grade as a match; the converse does not hold (math-verify equivalences such as
  `\\sqrt{2}/2` vs `\\frac{\\sqrt2}{2}` keep distinct keys).
  """
  value = parse_number(s)
  if value is not None:
    return _fraction_key(value)
  return _SPACE_NOT_BETWEEN_ALNUM.sub("", _clean(s)).rstrip(".")
