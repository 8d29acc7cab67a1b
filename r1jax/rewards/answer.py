"""The one answer grader: used by the accuracy reward, by evaluation and by majority voting.

A completion's answer is the content of its last `<answer>...</answer>` (a `\\boxed{}` inside it is
unwrapped), else its last balanced `\\boxed{...}` (`r1jax.rewards.extraction`). Grading tries, in order:

1. numbers, exactly and without sympy (`r1jax.rewards.normalize`): ints, decimals, fractions, units
   or words around ONE number, and a decimal rounded from a value with no finite decimal expansion.
2. equal `normalize_answer` keys (so cons@k voting never splits what grade calls equal).
3. math-verify on the LaTeX (one variable's solutions compared as a set: `r1jax.rewards.solutions`),
   under a wall-clock limit enforced here, not by math-verify (sympy needs minutes for
   `9^{9^{9^{9}}}`, so a limit is needed everywhere): `r1jax.rewards.time_limit.run_limited`. An
   overrun is a wrong answer, reason 'timeout'.
"""
from __future__ import annotations

import dataclasses

from math_verify import parse, verify

from r1jax.rewards.extraction import _BOXED, _last_boxed, extract_answer
from r1jax.rewards.normalize import _numbers_match, _parse_number, normalize_answer, parse_number
from r1jax.rewards.solutions import solution_list
from r1jax.rewards.time_limit import run_limited


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The outcome of grading one completion."""
  correct: bool
  extracted: str | None
  """The extracted final answer, None when the completion has none."""
  reason: str
  """'match', 'mismatch', 'no_answer', 'timeout' (math-verify overran) or 'error'."""


def _math_verify_equal(reference: str, pred: str) -> bool:
  """math-verify with its own signal-based limits off (this module enforces the limit), on
  `solution_list`s of both."""
  boxed = _last_boxed(reference) if _BOXED.search(reference) else None
  reference = solution_list(boxed if boxed is not None else reference)
  gold = parse(f"${reference}$", parsing_timeout=None)
  target = parse(f"\\boxed{{{solution_list(pred)}}}", parsing_timeout=None)
  return bool(gold and target and verify(gold, target, timeout_seconds=None))


def grade(completion: str, reference: str, timeout_s: float = 2.0, extract: str = "tagged") -> Verdict:
  """Grades `completion`'s final answer against `reference`; never blocks longer than `timeout_s`
  (plus, once per thread, the start of a sandbox) and never raises on any model output.

  `timeout_s` bounds only the math-verify fallback (numbers and equal keys are decided at once).
  """
  if not timeout_s > 0:
    raise ValueError(f"grade timeout_s={timeout_s} must be > 0 seconds")
  pred = extract_answer(completion, extract)
  if pred is None:
    return Verdict(False, None, "no_answer")
  reference = str(reference)
  ref_num, pred_parsed = parse_number(reference), _parse_number(pred)
  if ref_num is not None and pred_parsed is not None:
    ok = _numbers_match(pred_parsed[0], pred_parsed[1], ref_num)
    return Verdict(ok, pred, "match" if ok else "mismatch")
  if normalize_answer(pred) == normalize_answer(reference):
    return Verdict(True, pred, "match")
  status, value = run_limited(_math_verify_equal, (reference, pred), timeout_s)
  if status == "ok":
    return Verdict(bool(value), pred, "match" if value else "mismatch")
  return Verdict(False, pred, status)
