"""Generated arithmetic word problems with verifiable answers, for the CPU default run.

Small-number facts (a + b, a - b, a x b with a, b in 0..12) in several surface forms (bare
equations and short stories with names and objects). Train and held-out sets are disjoint as
problem texts; the underlying facts repeat across forms, which is what a tiny model pretrained
for a few minutes can learn. Every example carries a one-line worked `solution`.
"""
from __future__ import annotations

import random

NAMES = ("Tom", "Ana", "Li", "Sam", "Mia", "Raj")
THINGS = ("apples", "books", "coins", "pens", "cards", "shells")

FORMS = {
    "+": ("What is {a} + {b}?",
          "{n} has {a} {t} and gets {b} more. How many {t} does {n} have now?",
          "Add {a} and {b}."),
    "-": ("What is {a} - {b}?",
          "{n} has {a} {t} and gives away {b}. How many {t} are left?",
          "Subtract {b} from {a}."),
    "*": ("What is {a} * {b}?",
          "{n} has {a} boxes with {b} {t} in each box. How many {t} are there?",
          "Multiply {a} by {b}."),
}


def _solve(a: int, op: str, b: int) -> int:
  return a + b if op == "+" else a - b if op == "-" else a * b


def all_problems(max_operand: int = 12) -> list[dict]:
  """Every (fact, surface form, name, object) combination, in a fixed order."""
  out = []
  for op, forms in FORMS.items():
    for a in range(max_operand + 1):
      for b in range(max_operand + 1):
        if op == "-" and b > a:
          continue  # keep answers non-negative
        r = _solve(a, op, b)
        for fi, form in enumerate(forms):
          variants = [(n, t) for n in NAMES for t in THINGS] if "{n}" in form else [("", "")]
          for n, t in variants:
            q = form.format(a=a, b=b, n=n, t=t)
            out.append({"id": f"{a}{op}{b}/{fi}/{n}/{t}", "question": q, "final": str(r),
                        "solution": f"{a} {op} {b} = {r}.", "subject": {"+": "add", "-": "sub", "*": "mul"}[op]})
  return out


def split(num_train: int, num_eval: int, seed: int = 0, max_operand: int = 12) -> tuple[list[dict], list[dict]]:
  """Disjoint (train, held-out) problems drawn with `seed`."""
  probs = all_problems(max_operand)
  if num_train + num_eval > len(probs):
    raise ValueError(f"data.num_train + data.num_eval = {num_train + num_eval} exceeds the "
                     f"{len(probs)} distinct generated problems")
  random.Random(seed).shuffle(probs)
  return probs[num_eval:num_eval + num_train], probs[:num_eval]
