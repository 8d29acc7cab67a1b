"""Multi-step arithmetic chains: a task where a first attempt is error-prone and a check is cheap.

A chain starts at a number and applies 2..4 operations left to right ("start with 12, add 7,
subtract 5, then multiply by 2"). Each step is one small fact a tiny model can learn, but one slip
anywhere makes the final answer wrong, and a slip is caught by recomputing that single step:
verifying is easier than generating, which is what reflection needs to pay off under RL
(Gandhi et al. 2025, arXiv 2503.01307). Every intermediate value stays in 1..`max_value`.

Each example: id, question, final (the answer, a decimal string), solution (the clean
step-by-step reasoning in words, see `step_text`), steps (the (a, op, b, result) tuples), subject
('chain{n}', n operations). Train and held-out sets are disjoint as chains, not only as texts: a
chain asked in one surface form never appears in the other split in any form.
"""
from __future__ import annotations

import random

from r1jax.rewards import answer

OPS = ("+", "-", "*")
WORDS = {"+": "plus", "-": "minus", "*": "times"}
"""The operator words of the reasoning text (the question uses symbols or verbs)."""
VERBS = {"+": "add {b}", "-": "subtract {b}", "*": "multiply by {b}"}
FORMS = ("nested", "verbal")


def apply(a: int, op: str, b: int) -> int:
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  raise ValueError(f"operator {op!r} is not one of {OPS}")


def solve(start: int, ops: tuple[tuple[str, int], ...]) -> list[tuple[int, str, int, int]]:
  """The chain's steps (a, op, b, result), left to right."""
  steps, v = [], start
  for op, b in ops:
    r = apply(v, op, b)
    steps.append((v, op, b, r))
    v = r
  return steps


def step_text(a: int, op: str, b: int, r: int) -> str:
  """One step of the reasoning in words: '12 plus 7 equals 19.'"""
  return f"{a} {WORDS[op]} {b} equals {r}."


def question(start: int, ops: tuple[tuple[str, int], ...], form: str) -> str:
  """'nested': 'What is ((12 + 7) - 5) * 2?'; 'verbal': 'Start with 12, add 7, subtract 5, then
  multiply by 2. What number do you get?'"""
  if form == "nested":
    expr = str(start)
    for i, (op, b) in enumerate(ops):
      expr = f"{expr} {op} {b}" if i == 0 else f"({expr}) {op} {b}"
    return f"What is {expr}?"
  if form == "verbal":
    verbs = [VERBS[op].format(b=b) for op, b in ops]
    return f"Start with {start}, {', '.join(verbs[:-1])}, then {verbs[-1]}. What number do you get?"
  raise ValueError(f"chain question form={form!r} is not one of {FORMS}")


def random_chain(rng: random.Random, num_ops: int, max_operand: int = 12, max_factor: int = 5,
                 max_value: int = 99) -> tuple[int, tuple[tuple[str, int], ...]]:
  """(start, ((op, b), ...)) with every intermediate value in 1..max_value and multipliers in
  2..max_factor (x0 would hide every earlier slip, x1 and values of 0 make trivial steps)."""
  start, ops = rng.randint(1, max_operand), []
  v = start
  for _ in range(num_ops):
    choices = [("+", b) for b in range(1, max_operand + 1) if v + b <= max_value]
    choices += [("-", b) for b in range(1, max_operand + 1) if b < v]
    choices += [("*", b) for b in range(2, max_factor + 1) if v * b <= max_value]
    op = rng.choice(sorted({o for o, _ in choices}))  # operators equally likely, then the operand
    op, b = rng.choice([c for c in choices if c[0] == op])
    ops.append((op, b))
    v = apply(v, op, b)
  return start, tuple(ops)


def generate(n: int, seed: int = 0, min_ops: int = 2, max_ops: int = 4) -> list[dict]:
  """`n` examples with distinct chains, deterministic from `seed`."""
  if not 1 <= min_ops <= max_ops:
    raise ValueError(f"chain min_ops={min_ops} and max_ops={max_ops} must satisfy 1 <= min_ops <= max_ops")
  rng, out, seen = random.Random(seed), [], set()
  for _ in range(50 * n + 100):
    if len(out) == n:
      return out
    start, ops = random_chain(rng, rng.randint(min_ops, max_ops))
    if (start, ops) in seen:
      continue
    seen.add((start, ops))
    form = rng.choice(FORMS)
    steps = solve(start, ops)
    out.append({"id": f"chain/{seed}/{len(out)}", "question": question(start, ops, form), "final": str(steps[-1][3]),
                "solution": " ".join(step_text(*s) for s in steps), "steps": steps,
                "subject": f"chain{len(ops)}", "form": form})
  raise ValueError(f"could not draw {n} distinct chains of {min_ops}..{max_ops} operations; ask for fewer")


def split(num_train: int, num_eval: int, seed: int = 0, min_ops: int = 2, max_ops: int = 4
          ) -> tuple[list[dict], list[dict]]:
  """Disjoint (train, held-out) chains drawn with `seed` (the held-out ones first, so a larger
  train set never changes the held-out set)."""
  ex = generate(num_train + num_eval, seed, min_ops, max_ops)
  return ex[num_eval:], ex[:num_eval]


def grade(completion: str, example: dict) -> float:
  """1.0 iff the completion's final answer is the chain's value (`answer.grade`, the accuracy
  reward's grader, so evaluation and RL agree)."""
  return float(answer.grade(completion, example["final"]).correct)
