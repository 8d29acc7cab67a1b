"""Run untrusted Python (a model's program and its tests) in a separate, limited process.

Each run is a fresh `python -I -S` (isolated mode: no PYTHON* variables, no user or site
packages, no script directory on sys.path) started with an empty environment, in a new session,
in a fresh temporary directory that is removed afterwards. The child (`_sandbox_child.py`):

| what | how | where it holds |
|---|---|---|
| CPU seconds | RLIMIT_CPU (soft: SIGXCPU ends the program, hard +1 s: SIGKILL) | everywhere |
| memory | RLIMIT_AS (address space: allocations fail with MemoryError) | everywhere |
| file size | RLIMIT_FSIZE (a larger write fails with EFBIG: Python ignores SIGXFSZ) | everywhere |
| processes | RLIMIT_NPROC of the program's uid (processes and threads) | root: a fresh unprivileged uid per run; non-root: the user's uid, so the count includes the user's other processes |
| open files | RLIMIT_NOFILE | everywhere |
| core dumps | RLIMIT_CORE = 0 | everywhere |
| wall clock | the supervisor (outside every namespace) kills the runner at `wall_s`; the caller kills the whole session at `wall_s` + 2 s as a backstop | everywhere |
| leftover processes | PID namespace: the runner is its PID 1 (the program runs in its child), and its death kills every process in it, whatever session they moved to | where a new PID namespace is allowed; else only the process group |
| network | a new network namespace (no interface but a loopback that is down) | root, or a kernel allowing user namespaces; else NOT enforced (isolation['net_ns'] False) |
| files outside the working dir | a uid that owns nothing and no groups; private tmpfs over the working dir, /tmp, /var/tmp and /dev/shm; the directory of an unreadable interpreter (pyenv in /root) hidden, its stdlib bound back read-only | root. Non-root (user namespace): the tmpfs only; the user's own files stay writable. World-writable files elsewhere stay writable |
| the parent's environment | only LANG is set; a private /proc shows no process outside the run | everywhere / with mount + PID namespaces |
| setuid binaries | PR_SET_NO_NEW_PRIVS | everywhere |

What the child could not get is reported per run in `Result.isolation`. Checked by
tests/test_code_reward.py (as root: Python 3.11, this CI machine) and by hand on the GPU host
(kernel 6.18, Python 3.12: as root, and as an unprivileged user through a user namespace, where
network, PID and mount namespaces also held). A program runs in the same interpreter as its
tests, so it can tamper with how they report (an object whose `__eq__` is always true, or lines
of its own on the results pipe); the sandbox protects the machine and the trainer, not the
honesty of a grade.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Sequence

_CHILD = str(pathlib.Path(__file__).with_name("_sandbox_child.py"))
# Unprivileged uids handed to programs when we run as root: one per run, from a range no account
# uses, so runs cannot signal, trace or starve (RLIMIT_NPROC) each other or anything else.
_UID_RANGE = (1_500_000_000, 2_000_000_000)


@dataclasses.dataclass(frozen=True)
class Limits:
  """Resource limits of one run (a program and all its tests)."""
  wall_s: float = 10.0
  """Wall-clock seconds for the whole run, including interpreter start-up (~20 ms)."""
  cpu_s: int = 10
  """CPU seconds (RLIMIT_CPU)."""
  memory_mb: int = 1024
  """Address space (RLIMIT_AS); the interpreter itself takes ~30 MB of it."""
  file_mb: int = 16
  """Largest file the program may write (RLIMIT_FSIZE)."""
  tmp_mb: int = 64
  """Size of each private tmpfs (the working directory, /tmp, ...) where mounts are allowed."""
  processes: int = 16
  """RLIMIT_NPROC: processes and threads of the program's uid."""
  open_files: int = 64
  """RLIMIT_NOFILE."""
  output_kb: int = 64
  """stdout + stderr kept (the rest is read and dropped)."""

  def __post_init__(self):
    for f in dataclasses.fields(self):
      if not getattr(self, f.name) > 0:
        raise ValueError(f"sandbox limit {f.name}={getattr(self, f.name)} must be > 0")

  def as_child(self) -> dict:
    return {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "memory_bytes": self.memory_mb << 20,
            "file_bytes": self.file_mb << 20, "tmp_mb": self.tmp_mb, "processes": self.processes,
            "open_files": self.open_files}


@dataclasses.dataclass(frozen=True)
class Result:
  """What happened to one run."""
  status: str
  """'done' (every test ran), 'program_error' (the program raised before any test), 'timeout'
  (wall clock or CPU limit), 'crashed' (the process died: a signal, exit(), out of memory) or
  'sandbox_error' (the sandbox itself could not run)."""
  tests: tuple[tuple[bool, str], ...]
  """(passed, error message) per test that reported, in order."""
  error: str = ""
  output: str = ""
  """The first `output_kb` KB of stdout + stderr."""
  isolation: dict = dataclasses.field(default_factory=dict)
  """What was enforced: net_ns, pid_ns, mount_ns, user_ns, private_tmp, uid, no_new_privs."""
  wall_s: float = 0.0


def _minimal_env() -> dict:
  return {"LANG": "C.UTF-8"}  # nothing inherited: no PATH, HOME, tokens or PYTHON* (which -I ignores anyway)


def run(program: str, tests: Sequence[str], limits: Limits = Limits()) -> Result:
  """Runs `program`, then each test (Python source, executed in a copy of the program's globals;
  a test passes when it raises nothing), in a fresh sandboxed process. Never raises for anything
  the program does; thread-safe (call it from many threads at once)."""
  t0 = time.monotonic()
  workdir = tempfile.mkdtemp(prefix="r1jax-sandbox-")
  read_fd, write_fd = os.pipe()
  uid = random.randrange(*_UID_RANGE) if os.geteuid() == 0 else -1
  job = {"program": program, "tests": list(tests), "limits": limits.as_child(), "uid": uid,
         "results_fd": write_fd}
  proc = None
  try:
    if uid >= 0:
      os.chown(workdir, uid, uid)  # where no private tmpfs can be mounted, the program writes here
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", _CHILD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir, env=_minimal_env(),
                            start_new_session=True, pass_fds=(write_fd,), close_fds=True)
    os.close(write_fd)
    write_fd = -1
    proc.stdin.write(json.dumps(job).encode())
    proc.stdin.close()
    lines, output = _collect(proc, read_fd, limits, t0)
  except OSError as e:
    return Result("sandbox_error", (), f"{type(e).__name__}: {e}", wall_s=time.monotonic() - t0)
  finally:
    if proc is not None:
      _kill_session(proc)
    for fd in (read_fd, write_fd):
      if fd >= 0:
        os.close(fd)
    shutil.rmtree(workdir, ignore_errors=True)
  return _verdict(lines, output, len(tests), limits, time.monotonic() - t0)


def _collect(proc: subprocess.Popen, read_fd: int, limits: Limits, t0: float) -> tuple[list[dict], str]:
  """Reads result lines and (capped) output until both pipes close or the deadline passes."""
  deadline = t0 + limits.wall_s + 2.0  # the child's supervisor enforces wall_s; this is the backstop
  cap = limits.output_kb << 10
  results, output = bytearray(), bytearray()
  sel = selectors.DefaultSelector()
  sel.register(read_fd, selectors.EVENT_READ, results)
  sel.register(proc.stdout, selectors.EVENT_READ, output)
  while sel.get_map():
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      break
    for key, _ in sel.select(remaining):
      chunk = os.read(key.fd, 1 << 16)
      if not chunk:
        sel.unregister(key.fileobj)
      elif key.data is results:
        if len(results) < (1 << 20):  # a program writing junk here gets no more memory than this
          results += chunk
      elif len(output) < cap:
        output += chunk[:cap - len(output)]
  sel.close()
  lines = []
  for raw in bytes(results).splitlines():
    try:
      line = json.loads(raw)
    except ValueError:
      continue
    if isinstance(line, dict):
      lines.append(line)
  return lines, output.decode("utf-8", "replace")


def _kill_session(proc: subprocess.Popen) -> None:
  try:
    os.killpg(proc.pid, signal.SIGKILL)  # the session leader's pid is its group id
  except ProcessLookupError:
    pass
  proc.wait()
  proc.stdout.close()


def _verdict(lines: list[dict], output: str, n_tests: int, limits: Limits, wall_s: float) -> Result:
  isolation = next((l["isolation"] for l in lines if isinstance(l.get("isolation"), dict)), {})
  # Only the last line is the supervisor's (the program is dead when it is written); a program can
  # write lines too, so nothing earlier is trusted about how the run ended.
  end = lines[-1].get("exit") if lines and isinstance(lines[-1].get("exit"), dict) else None
  tests = []
  for l in lines:
    if "test" in l and l.get("test") == len(tests):
      tests.append((l.get("ok") is True, str(l.get("error", ""))[:500]))
  tests = tuple(tests[:n_tests])
  program_error = next((str(l["program_error"]) for l in lines if "program_error" in l), "")
  setup_error = next((str(l["setup_error"]) for l in lines if "setup_error" in l), "")
  done = any(l.get("done") is True for l in lines) and len(tests) == n_tests
  kw = dict(output=output, isolation=isolation, wall_s=wall_s)
  if end is None:
    return Result("timeout", tests, f"no answer within {limits.wall_s} s (+2 s grace)", **kw)
  sig = end.get("signal")
  if end.get("wall_timeout"):
    return Result("timeout", tests, f"wall clock limit of {limits.wall_s} s", **kw)
  if sig in (signal.SIGXCPU, signal.SIGKILL) and not done:
    # SIGKILL from the hard CPU limit (one second past the soft one) reads the same as any kill.
    return Result("timeout" if sig == signal.SIGXCPU else "crashed", tests,
                  f"killed by {signal.Signals(sig).name}" + (f" (CPU limit {limits.cpu_s} s)" if
                                                              sig == signal.SIGXCPU else ""), **kw)
  if setup_error:
    return Result("sandbox_error", tests, setup_error, **kw)
  if done and end.get("code") == 0:
    return Result("done", tests, "", **kw)
  if program_error:
    return Result("program_error", tests, program_error, **kw)
  how = f"signal {signal.Signals(sig).name}" if sig else f"exit code {end.get('code')}"
  return Result("crashed", tests, f"the program ended early ({how})", **kw)
