"""The one answer grader: used by the accuracy reward, by evaluation and by majority voting.

A completion's answer is the content of its last `<answer>...</answer>` (a `\\boxed{}` inside it is
unwrapped), else its last balanced `\\boxed{...}`. Grading tries, in order:

1. numbers, exactly and without sympy: ints, decimals, `3/4`, `\\frac{3}{4}`, `1,234`, leading
   zeros (AIME "025" == 25), and `$`, `%`, `\\text{}` units or plain words around ONE number
   ("$18", "18 dollars", "18.00"). A decimal also matches a reference that has no finite decimal
   expansion (1/3, 2/7) when it is that value truncated or rounded to its >= 3 decimals.
2. equal `normalize_answer` keys (so cons@k voting never splits what grade calls equal).
3. math-verify on the LaTeX, under a wall-clock limit enforced here, not by math-verify: its own
   limit uses `signal.alarm`, which only works in the main thread (sympy needs minutes for
   `9^{9^{9^{9}}}`, so a limit is needed everywhere), and no signal stops code stuck inside one C
   call. The comparison runs in a child process (`Sandbox`) that is killed when it overruns;
   inside a daemonic worker process (which cannot have children, and whose owner kills it when it
   overruns) an interval timer interrupts it instead. An overrun is a wrong answer, reason 'timeout'.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fractions
import functools
import logging
import math
import multiprocessing as mp
import os
import pickle
import queue
import re
import signal
import threading
from typing import Any, Callable, Iterator

from math_verify import parse, verify

# ---------------------------------------------------------------- extraction

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


# ---------------------------------------------------------------- numbers

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


# ---------------------------------------------------------------- time-limited execution

class _Overrun(BaseException):
  """Raised by the interval timer; a BaseException so library `except Exception` cannot swallow it."""


@functools.cache
def _context() -> mp.context.BaseContext:
  # Never fork the trainer itself: it holds JAX/XLA threads and locks. A forkserver (a fresh
  # interpreter) with the reward modules and their heavy imports preloaded forks a warm child in
  # milliseconds, so a call's time limit is not spent importing sympy or reasoning_gym.
  if "forkserver" in mp.get_all_start_methods():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["r1jax.rewards.combine", "reasoning_gym"])
    return ctx
  return mp.get_context("spawn")


def _serve(conn) -> None:
  """Child loop: receive a pickled (fn, args), send back (ok, value or error message)."""
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
  # We disable math-verify's own (signal-based) limits on purpose; silence its warning about that.
  logging.getLogger("math_verify").setLevel(logging.ERROR)
  conn.send("ready")
  while True:
    try:
      payload = conn.recv_bytes()
    except (EOFError, OSError):
      return  # parent gone
    try:
      fn, args = pickle.loads(payload)
      result = (True, fn(*args))
    except BaseException as e:  # noqa: BLE001 - any failure of user code is a reported error
      result = (False, f"{type(e).__name__}: {e}")
    try:
      conn.send(result)
    except Exception as e:  # noqa: BLE001 - an unpicklable return value
      conn.send((False, f"unpicklable result: {e!r}"))


def _launch(ctx: mp.context.BaseContext):
  parent, child = ctx.Pipe()
  proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="r1jax-reward-sandbox")
  try:
    proc.start()
  finally:
    child.close()
  return proc, parent


class Sandbox:
  """One child process that runs picklable calls under a wall-clock limit.

  A call that overruns is abandoned by killing the child (the only way to stop a `while True`
  loop or a hung C-level computation); the next call starts a fresh child. Start-up (up to
  `start_timeout_s`) does not count against a call's limit. Not thread-safe: one thread per box.
  """

  def __init__(self, start_timeout_s: float = 120.0):
    self.start_timeout_s = start_timeout_s
    self._proc = None
    self._conn = None
    self._owner = os.getpid()

  def _start(self) -> None:
    try:
      proc, parent = _launch(_context())
    except ChildProcessError:
      # In a process forked from the one that started the forkserver, the stdlib cannot reach
      # that server; a spawned child is slower to start but works anywhere.
      proc, parent = _launch(mp.get_context("spawn"))
    self._proc, self._conn = proc, parent
    if not parent.poll(self.start_timeout_s):
      self.close()
      raise RuntimeError(f"reward sandbox did not start within {self.start_timeout_s} s")
    parent.recv()

  def call(self, fn: Callable, args: tuple, timeout_s: float) -> tuple[str, Any]:
    """Runs `fn(*args)` in the child: ('ok', value), ('timeout', None) or ('error', message)."""
    try:
      payload = pickle.dumps((fn, args))
    except Exception as e:  # noqa: BLE001
      return "error", f"cannot pickle the call: {e!r}"
    if self._owner != os.getpid():
      # Inherited through a fork: the child process belongs to the parent; start our own.
      self._proc, self._conn, self._owner = None, None, os.getpid()
    if self._proc is None or not self._proc.is_alive():
      self.close()
      self._start()
    try:
      self._conn.send_bytes(payload)
    except OSError:  # the child died since the liveness check
      self.close()
      self._start()
      self._conn.send_bytes(payload)
    if not self._conn.poll(timeout_s):
      self.close()
      return "timeout", None
    try:
      ok, value = self._conn.recv()
    except (EOFError, OSError):  # the child died (crash, os._exit, out of memory)
      self.close()
      return "error", "reward sandbox died"
    return ("ok", value) if ok else ("error", value)

  def close(self) -> None:
    if self._proc is not None:
      self._proc.kill()
      self._proc.join()
      self._proc.close()
    if self._conn is not None:
      self._conn.close()
    self._proc = self._conn = None


# Idle sandboxes, reused across calls: starting a child costs milliseconds to seconds, so this is
# a cache of processes; it holds no state that changes any result.
_IDLE: queue.SimpleQueue[Sandbox] = queue.SimpleQueue()


@contextlib.contextmanager
def borrowed_sandbox() -> Iterator[Sandbox]:
  """A sandbox for this thread's exclusive use, returned to the idle pool afterwards."""
  try:
    box = _IDLE.get_nowait()
  except queue.Empty:
    box = Sandbox()
  try:
    yield box
  finally:
    _IDLE.put(box)


def _call_with_timer(fn: Callable, args: tuple, timeout_s: float) -> tuple[str, Any]:
  """In-process variant for daemonic workers: an interval timer where one can be set."""
  use_timer = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")

  def on_alarm(signum, frame):
    raise _Overrun()

  old = signal.signal(signal.SIGALRM, on_alarm) if use_timer else None
  try:
    if use_timer:
      signal.setitimer(signal.ITIMER_REAL, timeout_s)
    return "ok", fn(*args)
  except _Overrun:
    return "timeout", None
  except Exception as e:  # noqa: BLE001
    return "error", f"{type(e).__name__}: {e}"
  finally:
    if use_timer:
      signal.setitimer(signal.ITIMER_REAL, 0)
      signal.signal(signal.SIGALRM, old)


def run_limited(fn: Callable, args: tuple, timeout_s: float) -> tuple[str, Any]:
  """`fn(*args)` under a wall-clock limit from any thread: ('ok'|'timeout'|'error', value)."""
  if mp.current_process().daemon:
    # A daemonic process may not start children; its owner kills it on overrun (C-level hangs
    # that the timer cannot interrupt included), so the timer only has to report Python ones.
    return _call_with_timer(fn, args, timeout_s)
  try:
    with borrowed_sandbox() as box:
      return box.call(fn, args, timeout_s)
  except Exception as e:  # noqa: BLE001 - e.g. the sandbox could not start
    return "error", f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------- grading

@dataclasses.dataclass(frozen=True)
class Verdict:
  """The outcome of grading one completion."""
  correct: bool
  extracted: str | None
  """The extracted final answer, None when the completion has none."""
  reason: str
  """'match', 'mismatch', 'no_answer', 'timeout' (math-verify overran) or 'error'."""


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
