"""The program in the sandbox: `python -I -S _sandbox_child.py`, started by `r1jax.rewards.sandbox`.

Standard library only (it runs without site-packages). It reads one JSON job from stdin:
{"program": str, "tests": [str], "limits": {...}, "uid": int, "results_fd": int}, then

1. as root: unshares network, mount and PID namespaces (whichever the kernel allows);
2. forks the runner, which becomes PID 1 of the new PID namespace (its death kills every process
   the program started, whatever session or process group they moved to);
3. the runner mounts private, size-limited tmpfs over /tmp, /var/tmp and /dev/shm and a fresh
   /proc, sets the resource limits, drops to an unprivileged uid (root only) with no new
   privileges, and forks the worker, which executes the program and each test in turn, one JSON
   line per test on `results_fd`;
4. this (root) process waits for the runner under the wall-clock limit, kills it when it overruns,
   and writes the last line: how the runner ended and which isolation was in force.

Lines: {"isolation": {...}}, {"test": i, "ok": bool, "error": str}, {"program_error": str},
{"done": true}, and last {"exit": {"code"|"signal": n, "wall_timeout": bool}}.
"""
import ctypes
import json
import os
import resource
import select
import signal
import sys
import time
import traceback

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 0x4000, 0x40000)
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38

_libc = ctypes.CDLL(None, use_errno=True)


def _unshare(flags: int) -> bool:
  return _libc.unshare(ctypes.c_int(flags)) == 0


def _mount(source: str, target: str, fstype, flags: int, data) -> bool:
  enc = lambda s: None if s is None else s.encode()
  return _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) == 0


def _write_line(fd: int, obj) -> None:
  os.write(fd, (json.dumps(obj) + "\n").encode())


def _private_filesystems(workdir: str, uid: int, tmp_mb: int) -> dict:
  """Inside the new mount namespace: the program's writable places are fresh tmpfs that vanish
  with it; the working directory is one of them, at the same path, owned by the program's uid."""
  if not _mount(None, "/", None, MS_REC | MS_PRIVATE, None):
    return {"private_tmp": False}
  opts = f"size={tmp_mb}m,nr_inodes=4096,mode=1777"
  done = []
  for d in ("/tmp", "/var/tmp", "/dev/shm"):
    if os.path.isdir(d) and _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, opts):
      done.append(d)
  stdlib = _expose_stdlib() if uid >= 0 else []  # without a uid change the interpreter stays readable
  os.makedirs(workdir, exist_ok=True)
  ok = _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_mb}m,nr_inodes=4096,mode=0700")
  if ok and uid >= 0:
    os.chown(workdir, uid, uid)
  proc = _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
  return {"private_tmp": done, "private_workdir": ok, "private_proc": proc, "hidden_dirs": stdlib}


def _expose_stdlib() -> list:
  """The interpreter may live where the program's uid cannot enter (pyenv under /root, mode 0700):
  hide that directory behind an empty tmpfs and bind only the standard library back, read-only,
  at its own path. Returns the directories hidden this way."""
  needs = {}
  for p in filter(os.path.exists, sys.path):
    parts = p.rstrip("/").split("/")
    for i in range(2, len(parts)):
      top = "/".join(parts[:i])
      if not os.stat(top).st_mode & 0o001:  # others may not traverse it
        needs.setdefault(top, []).append(p)
        break
  hidden = []
  for top, paths in needs.items():
    fds = [(p, os.open(p, os.O_PATH)) for p in paths]
    if not _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755"):
      continue
    for p, fd in fds:
      if os.path.isdir(f"/proc/self/fd/{fd}"):
        os.makedirs(p, exist_ok=True)
      else:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "w").close()
      _mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC, None)
      _mount(None, p, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
      os.close(fd)
    hidden.append(top)
  return hidden


def _set_limits(lim: dict) -> None:
  cpu = int(lim["cpu_s"])
  for which, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
                       (resource.RLIMIT_AS, (lim["memory_bytes"],) * 2),
                       (resource.RLIMIT_FSIZE, (lim["file_bytes"],) * 2),
                       (resource.RLIMIT_NPROC, (lim["processes"],) * 2),
                       (resource.RLIMIT_NOFILE, (lim["open_files"],) * 2),
                       (resource.RLIMIT_CORE, (0, 0))):
    resource.setrlimit(which, value)


def _run_tests(program: str, tests: list, fd: int) -> None:
  me = os.getpid()
  ns = {"__name__": "__main__", "__builtins__": __builtins__}
  try:
    exec(compile(program, "<program>", "exec"), ns)
  except BaseException as e:  # noqa: BLE001 - anything the program does is its own failure
    if os.getpid() == me:  # a forked copy of the program must not report
      _write_line(fd, {"program_error": f"{type(e).__name__}: {e}"[:500]})
    os._exit(1)
  for i, test in enumerate(tests):
    try:
      exec(compile(test, f"<test {i}>", "exec"), dict(ns))
      ok, err = True, ""
    except BaseException as e:  # noqa: BLE001
      ok, err = False, f"{type(e).__name__}: {e}"[:500] or type(e).__name__
      if isinstance(e, AssertionError) and not str(e):
        err = "AssertionError at " + traceback.format_exception(e)[-2].strip().splitlines()[0][:200]
    if os.getpid() != me:
      os._exit(0)
    _write_line(fd, {"test": i, "ok": ok, "error": err})
  _write_line(fd, {"done": True})


def _runner(job: dict, fd: int, iso: dict) -> None:
  """PID 1 of the new PID namespace (where there is one): sets the sandbox up, then reaps.

  The program runs in a child of this process, not in it: a namespace's PID 1 ignores every
  signal it has no handler for (SIGXCPU and SIGXFSZ included), and the program must not be able
  to outlive or replace it."""
  _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the supervisor
  if iso["mount_ns"]:
    workdir = os.getcwd()
    iso.update(_private_filesystems(workdir, job["uid"], job["limits"]["tmp_mb"]))
    os.chdir(workdir)  # re-enter the directory: now the private tmpfs mounted on it
  _set_limits(job["limits"])
  if job["uid"] >= 0:
    os.setgroups([])
    os.setresgid(job["uid"], job["uid"], job["uid"])
    os.setresuid(job["uid"], job["uid"], job["uid"])
  iso["uid"] = os.getuid()
  iso["no_new_privs"] = _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
  _write_line(fd, {"isolation": iso})
  devnull = os.open(os.devnull, os.O_RDONLY)
  os.dup2(devnull, 0)
  os.close(devnull)
  worker = os.fork()
  if worker == 0:
    _run_tests(job["program"], job["tests"], fd)
    sys.stdout.flush()
    os._exit(0)
  os.close(fd)
  while True:  # orphans of the program are reparented here: reap them until the program ends
    pid, status = os.waitpid(-1, 0)
    if pid == worker:
      break
  os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def main() -> None:
  job = json.loads(sys.stdin.read())
  fd = job["results_fd"]
  _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the trainer's worker
  iso = {"net_ns": False, "pid_ns": False, "mount_ns": False, "user_ns": False}
  if os.geteuid() != 0:
    # An unprivileged parent can still get namespaces inside a user namespace of its own.
    if _unshare(CLONE_NEWUSER):
      iso["user_ns"] = True
      uid, gid = os.getuid(), os.getgid()
      for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                         ("/proc/self/gid_map", f"{gid} {gid} 1")):
        with open(path, "w") as f:
          f.write(text)
    job["uid"] = -1  # no uid to drop to
  for name, flag in (("net_ns", CLONE_NEWNET), ("mount_ns", CLONE_NEWNS), ("pid_ns", CLONE_NEWPID)):
    iso[name] = _unshare(flag)
  pid = os.fork()
  if pid == 0:
    try:
      _runner(job, fd, iso)
    except BaseException as e:  # noqa: BLE001 - a set-up failure is reported, never hidden
      _write_line(fd, {"setup_error": f"{type(e).__name__}: {e}"})
    os._exit(3)
  deadline = time.monotonic() + float(job["limits"]["wall_s"])
  pidfd = os.pidfd_open(pid)  # readable when the runner exits
  wall_timeout = not select.select([pidfd], [], [], max(deadline - time.monotonic(), 0))[0]
  if wall_timeout:
    os.kill(pid, signal.SIGKILL)
  # Returns only once the runner is reaped; as PID 1 of its namespace it is reaped only after
  # the kernel has killed every process left in that namespace.
  _, status = os.waitpid(pid, 0)
  if os.WIFSIGNALED(status):
    end = {"signal": os.WTERMSIG(status)}
  else:  # the runner passes on how the program ended: its exit code, or 128 + the signal
    code = os.WEXITSTATUS(status)
    end = {"signal": code - 128} if code > 128 else {"code": code}
  os.write(fd, b"\n")  # ends any partial line the program left on this pipe
  _write_line(fd, {"exit": end | {"wall_timeout": wall_timeout}})


if __name__ == "__main__":
  main()
