"""Calls under a wall-clock limit, from any thread (`run_limited`): what lets the grader bound
math-verify, whose own limit uses `signal.alarm` (main thread only) and which no signal stops inside
one C call. The call runs in a child process (`Sandbox`) that is killed when it overruns; inside a
daemonic worker process (which cannot have children, and whose owner kills it when it overruns)
an interval timer interrupts it instead.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
from typing import Any, Callable, Iterator


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
