"""A completion's final answer: the content of its last `<answer>...</answer>` (a `\\boxed{}` inside it
is unwrapped), else its last balanced `\\boxed{...}`; with extract='last_number', else its last number.
"""
from __future__ import annotations

import re

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _last_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}` whose braces balance (escaped `\\{` `\\}` do not count)."""
  for m in reversed(list(_BOXED.finditer(text))):
    depth, i = 1, m.end()
    while i < len(text) and depth:
      if text[i] == "\\":
        i += 2
        continue
      depth += {"{": 1, "}": -1}.get(text[i], 0)
      i += 1
    if depth == 0:
      return text[m.end():i - 1]
  return None


EXTRACTIONS = ("tagged", "last_number")
"""'tagged': the last <answer> / \\boxed{} only (the R1 protocol); 'last_number': that, else the
completion's last number (the flexible extraction small-base studies and GSM8K harnesses grade by)."""

_LAST_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def check_extraction(extract: str, field: str) -> None:
  if extract not in EXTRACTIONS:
    raise ValueError(f"{field}={extract!r} is not one of {EXTRACTIONS}")


def extract_answer(completion: str, extract: str = "tagged") -> str | None:
  """The final answer of a completion, stripped; None when there is none (or it is empty).
  With extract='last_number' an untagged completion's last number is its answer."""
  tagged = _extract_tagged(completion)
  if tagged is None and extract == "last_number":
    found = _LAST_NUMBER.findall(completion)
    return found[-1].rstrip(".") if found else None
  return tagged


def _extract_tagged(completion: str) -> str | None:
  close = completion.rfind("</answer>")
  start = completion.rfind("<answer>", 0, close) if close >= 0 else -1
  if start >= 0:
    content = completion[start + len("<answer>"):close]
    # The tag is authoritative: an empty answer tag is no answer, even if a \boxed{} came before.
    content = _last_boxed(content) or content
  else:
    content = _last_boxed(completion) or ""
  return content.strip() or None
