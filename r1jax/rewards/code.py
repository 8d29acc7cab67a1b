"""The code checker: run a completion's program against its task's tests in the sandbox.

A code example is a dataset row with 'tests' (a list of Python sources; a test passes when it
raises nothing), optionally 'prelude' (code placed before the program: HumanEval's prompt, so its
imports and signature are there and a completion may give only the function body) and
'entry_point' (the function the tests call). The program is the last fenced code block of the
answer (the last `<answer>...</answer>`, else the whole completion).

Verdicts: 'passed', 'failed' (a test raised; `failed_test` says which), 'timeout' (wall clock or
CPU limit), 'crashed' (the program raised before its tests, or its process died), 'no_code' and
'error' (the sandbox itself could not run). Every verdict but 'passed' scores 0, except that with
`partial_credit` a 'failed' run scores the fraction of its tests that passed.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import re
from typing import Sequence

from r1jax.rewards import sandbox

VERDICTS = ("passed", "failed", "timeout", "crashed", "no_code", "error")
_FENCE = re.compile(r"```[ \t]*[\w+.-]*[ \t]*\n(.*?)```", re.S)


@dataclasses.dataclass(frozen=True)
class CodeConfig:
  """How programs are run and scored."""
  limits: sandbox.Limits = sandbox.Limits()
  partial_credit: bool = False
  """Score a 'failed' run by the fraction of tests passed instead of 0."""

  @classmethod
  def with_timeout(cls, timeout_s: float, memory_mb: int = 1024, partial_credit: bool = False) -> "CodeConfig":
    """A wall-clock limit of `timeout_s` for a program and its tests, the CPU limit the same (rounded up)."""
    return cls(sandbox.Limits(wall_s=timeout_s, cpu_s=max(1, math.ceil(timeout_s)), memory_mb=memory_mb),
               partial_credit)


@dataclasses.dataclass(frozen=True)
class CodeVerdict:
  """The outcome of grading one completion's program."""
  reason: str
  """One of VERDICTS."""
  tests_passed: int
  tests_total: int
  score: float
  failed_test: int | None = None
  """Index of the first test that failed ('failed' only)."""
  message: str = ""
  program: str | None = None
  """The extracted code block, None when there was none."""
  isolation: dict = dataclasses.field(default_factory=dict)

  @property
  def passed(self) -> bool:
    return self.reason == "passed"


def is_code_example(example: dict) -> bool:
  """Whether the row is graded by running tests (it carries 'tests') rather than by its answer."""
  return "tests" in example


def extract_code(completion: str) -> str | None:
  """The last fenced code block of the answer (its content verbatim), None if there is none."""
  close = completion.rfind("</answer>")
  start = completion.rfind("<answer>", 0, close) if close >= 0 else -1
  text = completion[start + len("<answer>"):close] if start >= 0 else completion
  blocks = _FENCE.findall(text)
  return blocks[-1] if blocks and blocks[-1].strip() else None


def program_for(code: str, example: dict) -> str:
  """The source that runs: the example's prelude, then the extracted code (a body indented under
  the prelude's `def` continues that function; a top-level `def` replaces it)."""
  prelude = example.get("prelude") or ""
  return f"{prelude}\n{code}" if prelude else code


def _tests_of(example: dict) -> list[str]:
  tests = example.get("tests")
  if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
    raise ValueError(f"code example {example.get('id', '?')!r}: 'tests' must be a non-empty list of strings")
  return tests


def grade(completion: str, example: dict, cfg: CodeConfig = CodeConfig()) -> CodeVerdict:
  """Runs the completion's program with the example's tests in a fresh sandbox; never raises for
  anything the program does (only for an example without tests)."""
  tests = _tests_of(example)
  code = extract_code(completion)
  if code is None:
    return CodeVerdict("no_code", 0, len(tests), 0.0, message="no fenced code block in the answer")
  r = sandbox.run(program_for(code, example), tests, cfg.limits)
  n_pass = sum(ok for ok, _ in r.tests)
  kw = dict(program=code, isolation=r.isolation)
  if r.status == "done":
    if n_pass == len(tests):
      return CodeVerdict("passed", n_pass, len(tests), 1.0, **kw)
    first = next(i for i, (ok, _) in enumerate(r.tests) if not ok)
    score = n_pass / len(tests) if cfg.partial_credit else 0.0
    return CodeVerdict("failed", n_pass, len(tests), score, first, r.tests[first][1], **kw)
  reason = {"timeout": "timeout", "program_error": "crashed", "crashed": "crashed"}.get(r.status, "error")
  return CodeVerdict(reason, n_pass, len(tests), 0.0, message=r.error, **kw)


def default_workers() -> int:
  """Concurrent sandboxes: twice the cores, so programs waiting on a limit leave the cores busy."""
  return 2 * (os.cpu_count() or 1)


def grade_many(completions: Sequence[str], examples: Sequence[dict], cfg: CodeConfig = CodeConfig(),
               num_workers: int = 0) -> list[CodeVerdict]:
  """`grade` of each (completion, example) pair, `num_workers` sandboxes at a time (0: default)."""
  if len(completions) != len(examples):
    raise ValueError(f"{len(completions)} completions but {len(examples)} examples")
  for ex in examples:
    _tests_of(ex)
  if not completions:
    return []
  workers = min(num_workers or default_workers(), len(completions))
  with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="r1jax-code") as pool:
    return list(pool.map(lambda a: grade(a[0], a[1], cfg), zip(completions, examples)))


def verdict_counts(verdicts: Sequence[CodeVerdict]) -> dict[str, int]:
  """{reason: count} over VERDICTS (zeros included), for metrics."""
  return {r: sum(v.reason == r for v in verdicts) for r in VERDICTS}
