"""One variable's solutions, written as an equation list (`x=a, b`, `x = a \\text{ or } x = b`) or a
solution set (`x \\in \\{a, b\\}`), as the plain list math-verify compares as a set (`solution_list`).
"""
from __future__ import annotations

import re

# An answer's separators between solutions: top-level commas / semicolons, "or" / "and" (as words or
# in \text{}), \quad. A leading "x =" or "x \in" names the variable; "k \in \mathbb{Z}" is a condition.
_LIST_SEP = re.compile(r"\\text\s*\{\s*(?:or|and)\s*\}|\\(?:q?quad|lor)\b|(?<![A-Za-z\\])(?:or|and)(?![A-Za-z])|[,;]")
_LEAD_VAR = re.compile(r"^\s*([A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?)\s*(?:=|\\in\b)\s*(?!=)")
_INTEGER_CONDITION = re.compile(r"^\s*[a-zA-Z]\s*\\in\s*\\mathbb\s*\{?\s*Z\s*\}?\s*$")


def _top_level_split(s: str) -> list[str]:
  r"""`s` cut at `_LIST_SEP` outside brackets ((1,2), [0,1), \{1,2\} and {..} stay whole)."""
  items, depth, start, i = [], 0, 0, 0
  while i < len(s):
    c = s[i]
    if c in "([{":
      depth += 1
    elif c in ")]}":
      depth -= 1
    elif depth == 0:
      m = _LIST_SEP.match(s, i)
      if m and m.end() > i:
        items.append(s[start:i])
        start = i = m.end()
        continue
    i += 1 + (c == "\\" and i + 1 < len(s) and s[i + 1] in "{}")  # \{ \} are set braces
    if c == "\\" and s[i - 1] in "{}":
      depth += 1 if s[i - 1] == "{" else -1
  return [x.strip() for x in items + [s[start:]] if x.strip()]


def solution_list(answer: str) -> str:
  """One variable's solutions as a plain list that math-verify compares as a set, order-free:
  `x=a, b`, `x = a, x = b`, `x=a \\text{ or } x=b`, `x \\in \\{a, b\\}` and `x=a+\\pi k, k \\in \\mathbb{Z}`
  -> `a, b` (resp. `\\{a, b\\}`, `a+\\pi k`). Anything else (one equation `x=3`, several variables
  `x=1, y=2`, inequalities, tuples, intervals) is returned unchanged.

  math-verify reads `x=a, b` as Eq(x, {a, b}) and matches that only to a set of the same form: it
  marks `x=\\frac{\\pi}{6}+\\pi k, \\frac{\\pi}{3}+\\pi k` wrong against
  `x=\\frac{\\pi}{6}+k\\pi, \\pi k+\\frac{\\pi}{3}`, and `x=1, -2` against `x=1.0, -2`.
  """
  items = [x for x in _top_level_split(answer) if not _INTEGER_CONDITION.match(x)]
  if not items:
    return answer
  var = _LEAD_VAR.match(items[0])
  if var is None:
    return answer
  out = []
  for item in items:
    m = _LEAD_VAR.match(item)
    if m is not None and m.group(1) != var.group(1):
      return answer  # several variables: a tuple of values, not a set of roots
    rest = item[m.end():] if m else item
    if not rest or re.search(r"=|<|>|\\[lg]eq?\b|\\ne(?:q)?\b", rest):
      return answer
    out.append(rest)
  if len(out) == 1 and "\\in" not in var.group(0):
    return items[0]  # `x = 3` (less any `k \\in \\mathbb{Z}`): math-verify already matches it to 3
  return ", ".join(out)
