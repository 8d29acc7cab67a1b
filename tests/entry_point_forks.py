"""Runs many entry-point command lines cheaply: one process imports r1jax once, then runs each
command line in a forked child as `python SCRIPT ARGS...` would (the script as `__main__`, its
exit status, its stdout and stderr), so a table of bad inputs does not pay the import ~60 times.

Reads a JSON list of {"script", "argv", "cwd", "out"} on stdin; writes a JSON list of exit statuses
on stdout; each child's stdout and stderr go to its "out" file. Nothing here initializes a JAX
backend before the fork: each child does that itself, as a fresh process would.
"""
import json
import os
import runpy
import sys
import traceback

from r1jax import experiment  # noqa: F401  (imported once, before any fork)


def run_one(case: dict) -> int:
  pid = os.fork()
  if pid == 0:
    fd = os.open(case["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.chdir(case["cwd"])
    sys.argv = [case["script"], *case["argv"]]
    code = 0
    try:
      runpy.run_path(case["script"], run_name="__main__")
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # pylint: disable=broad-except  (as the interpreter would: traceback, status 1)
      traceback.print_exc()
      code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
  _, status = os.waitpid(pid, 0)
  return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
  print(json.dumps([run_one(c) for c in json.load(sys.stdin)]))
