"""The code reward: HumanEval through the sandbox, hostile programs, partial credit, wiring.

Hostile programs are run as completions of a one-test task; each must score 0 with the expected
verdict while this process, the machine and every file outside the run's directory stay as
they were, and no process of the run (found by its uid, unique per run when tests run as root)
is left.
"""
import os
import pathlib
import socket
import tempfile

import pytest

from r1jax import datasets
from r1jax.rewards import code
from r1jax.rewards import combine
from r1jax.rewards import sandbox

REPO = pathlib.Path(__file__).resolve().parents[1]
ROOT = os.geteuid() == 0
TASK = {"id": "t", "tests": ["assert f() == 1"], "prelude": "", "entry_point": "f", "task_kind": "code"}
FAST = code.CodeConfig(limits=sandbox.Limits(wall_s=4.0, cpu_s=2))


def fenced(program: str) -> str:
  return f"<think> here it is </think> <answer>\n```python\n{program}\n```\n</answer>"


def uid_processes(uid: int) -> list[int]:
  """Pids of live processes whose real uid is `uid` (read from /proc)."""
  out = []
  for d in pathlib.Path("/proc").iterdir():
    if d.name.isdigit():
      try:
        uids = next(l for l in (d / "status").read_text().splitlines() if l.startswith("Uid:"))
      except (OSError, StopIteration):
        continue
      if int(uids.split()[1]) == uid:
        out.append(int(d.name))
  return out


@pytest.fixture(scope="module")
def humaneval(shared_data):
  ex, skipped = datasets.load_jsonl(datasets.JsonlConfig(path=str(shared_data / "humaneval.jsonl.gz"),
                                                         layout="humaneval"))
  assert len(ex) == 164 and skipped == 0
  return ex


@pytest.mark.slow  # the full suite's (CI time): 164 real programs; the sandbox's own tests run in CI
def test_humaneval_canonical_solutions_pass_and_stubs_fail(humaneval):
  n_tests = sum(len(e["tests"]) for e in humaneval)
  assert n_tests > 5 * len(humaneval)  # check() split into one test per assert
  good = code.grade_many([fenced(e["canonical_solution"]) for e in humaneval], humaneval)
  assert [e["id"] for e, v in zip(humaneval, good) if not v.passed] == []
  assert all(v.score == 1.0 and v.tests_passed == v.tests_total for v in good)
  for body in ("    pass", "    return 0"):
    bad = code.grade_many([fenced(body)] * len(humaneval), humaneval)
    assert [e["id"] for e, v in zip(humaneval, bad) if v.passed] == [], body
    assert {v.reason for v in bad} <= {"failed", "crashed"} and all(v.score == 0.0 for v in bad)


def test_extraction_and_verdicts():
  assert code.extract_code("no code") is None
  assert code.extract_code("```py\na = 1\n``` then <answer>```python\nb = 2\n``` ```\nc = 3\n```</answer>") == "c = 3\n"
  assert code.extract_code("```python\na = 1\n``` <answer>none here</answer>") is None  # the answer is what counts
  assert code.grade("<answer>def f(): return 1</answer>", TASK).reason == "no_code"
  v = code.grade(fenced("def f(): return 1"), TASK)
  assert (v.reason, v.score, v.failed_test) == ("passed", 1.0, None)
  v = code.grade(fenced("def f(:"), TASK)
  assert v.reason == "crashed" and "SyntaxError" in v.message
  v = code.grade(fenced("def f(): return 2"), TASK)
  assert (v.reason, v.failed_test, v.score) == ("failed", 0, 0.0) and "AssertionError" in v.message
  if ROOT:
    assert v.isolation["net_ns"] and v.isolation["pid_ns"] and v.isolation["uid"] >= sandbox._UID_RANGE[0]


def test_partial_credit_counts_passed_tests():
  task = dict(TASK, tests=["assert f(1) == 1", "assert f(2) == 4", "assert f(3) == 9", "assert f(0) == 1",
                           "assert f(-1) == 1"])
  answer = fenced("def f(x):\n  return x * x")  # right on tests 0, 1, 2 and 4: 4 of 5
  strict = code.grade(answer, task)
  assert (strict.reason, strict.tests_passed, strict.failed_test, strict.score) == ("failed", 4, 3, 0.0)
  partial = code.grade(answer, task, code.CodeConfig(partial_credit=True))
  assert partial.score == pytest.approx(4 / 5)
  # Partial credit is for programs whose tests all ran: a timeout after two passes still scores 0.
  slow = fenced("def f(x):\n  if x == 3:\n    while True: pass\n  return x * x")
  v = code.grade(slow, task, code.CodeConfig(limits=FAST.limits, partial_credit=True))
  assert (v.reason, v.tests_passed, v.score) == ("timeout", 2, 0.0)


@pytest.fixture
def sentinels():
  """A root-owned file (0644) in a root-owned directory (0755), in /tmp and outside every folder the
  sandbox replaces with a private tmpfs (beside the repo, or /srv when the checkout lives in /tmp,
  where the program would not even see it)."""
  made = []
  private = ("/tmp", "/var/tmp", "/dev/shm")
  outside = next(d for d in (str(REPO), "/srv", "/opt", "/mnt")
                 if not d.startswith(private) and os.path.isdir(d) and os.access(d, os.W_OK))
  for parent in (tempfile.gettempdir(), outside):
    d = pathlib.Path(tempfile.mkdtemp(prefix="r1jax-sentinel-", dir=parent))
    d.chmod(0o755)
    f = d / "sentinel.txt"
    f.write_text("keep me")
    f.chmod(0o644)
    made.append((d, f, os.stat(f).st_mtime_ns))
  yield [f for _, f, _ in made]
  for d, f, mtime in made:
    assert f.read_text() == "keep me" and os.stat(f).st_mtime_ns == mtime
    assert sorted(p.name for p in d.iterdir()) == ["sentinel.txt"]
    f.unlink()
    d.rmdir()


def hostile(sentinel_files, secret_port):
  s1, s2 = sentinel_files
  me = os.getpid()
  return {
      "infinite loop": ("def f(): return 1\nwhile True: pass", "timeout"),
      "sleeping forever": ("import time\ndef f(): return 1\ntime.sleep(1000)", "timeout"),
      "fork bomb": ("import os\nwhile True:\n  try:\n    os.fork()\n  except OSError:\n    pass", "timeout"),
      "escaping daemon": ("import os, time\nif os.fork() == 0:\n  os.setsid()\n  time.sleep(1000)\n"
                          "def f(): return 2", "failed"),
      "allocate 100 GB": ("x = bytearray(100 * 2**30)\ndef f(): return 1", "crashed"),
      "write outside the working dir": (f"open('/tmp/r1jax-escaped-{me}', 'w').write('x')\n"
                                        f"open({str(s2)!r}, 'a').write('pwned')\ndef f(): return 1", "crashed"),
      "create a file beside the sentinel": (f"open({str(s2.parent / 'new.txt')!r}, 'w')\ndef f(): return 1",
                                            "crashed"),
      "delete files": (f"import os, shutil\nfor p in ({str(s1)!r}, {str(s2)!r}):\n  try:\n    os.remove(p)\n"
                       f"  except OSError:\n    pass\nshutil.rmtree({str(s2.parent)!r})\ndef f(): return 1", "crashed"),
      "read the parent's environment": (
          "import os\ndef f():\n  for p in ('/proc/%d/environ' % " + str(me) + ", '/proc/1/environ'):\n"
          "    try:\n      if 'R1JAX_TEST_SECRET' in open(p).read(): return 1\n    except OSError:\n      pass\n"
          "  return 1 if 'R1JAX_TEST_SECRET' in os.environ else 0", "failed"),
      "socket to 127.0.0.1": (f"import socket\nsocket.create_connection(('127.0.0.1', {secret_port}), timeout=2)"
                              f".sendall(b'pwned')\ndef f(): return 1", "crashed"),
      "spawn a shell": (f"import subprocess\nsubprocess.run(['/bin/sh', '-c', 'echo pwned >> {s2}; kill -9 {me}'],"
                        " check=True)\ndef f(): return 1", "crashed"),
      "kill the trainer": (f"import os\nos.kill({me}, 9)\ndef f(): return 1", "crashed"),
      "kill the parent and the group": ("import os\nos.kill(os.getppid(), 9)\nos.killpg(0, 9)\ndef f(): return 1",
                                        "crashed"),
      "print forever": ("def f(): return 1\nwhile True:\n  print('x' * 65536)", "timeout"),
      "exit before the tests": ("import os\nos._exit(0)\ndef f(): return 1", "crashed"),
      "a 32 MB file": ("open('big', 'wb').write(b'x' * (32 << 20))\ndef f(): return 1", "crashed"),
      "open 1000 files": ("fs = [open('f%d' % i, 'w') for i in range(1000)]\ndef f(): return 1", "crashed"),
  }


@pytest.mark.skipif(not ROOT, reason="the fresh-uid, file and network guarantees are those of a root parent")
def test_hostile_programs_score_zero_and_leave_nothing_behind(sentinels, monkeypatch):
  monkeypatch.setenv("R1JAX_TEST_SECRET", "hunter2")
  listener = socket.socket()
  listener.bind(("127.0.0.1", 0))
  listener.listen()
  listener.setblocking(False)
  programs = hostile(sentinels, listener.getsockname()[1])
  names = list(programs)
  # The working directories of this test's runs (the sandbox grades in threads of this process):
  # other tests' runs, in another worker at the same time, share /tmp.
  made, mkdtemp = [], tempfile.mkdtemp
  monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: made.append(mkdtemp(*a, **k)) or made[-1])
  verdicts = code.grade_many([fenced(programs[n][0]) for n in names], [TASK] * len(names), FAST)
  monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
  got = {n: v.reason for n, v in zip(names, verdicts)}
  assert got == {n: programs[n][1] for n in names}
  assert all(v.score == 0.0 for v in verdicts)
  msg = dict(zip(names, (v.message for v in verdicts)))
  assert "MemoryError" in msg["allocate 100 GB"]
  assert "wall clock limit of 4.0 s" in msg["sleeping forever"]  # the supervisor's kill, not the backstop
  assert "PermissionError" in msg["write outside the working dir"]
  assert "PermissionError" in msg["delete files"] and "PermissionError" in msg["create a file beside the sentinel"]
  assert "unreachable" in msg["socket to 127.0.0.1"] and "CalledProcessError" in msg["spawn a shell"]
  assert "ProcessLookupError" in msg["kill the trainer"] and "SIGKILL" in msg["kill the parent and the group"]
  assert "File too large" in msg["a 32 MB file"]
  assert "Too many open files" in msg["open 1000 files"] and "exit code 0" in msg["exit before the tests"]
  with pytest.raises(BlockingIOError):  # nobody connected
    listener.accept()
  listener.close()
  # The machine is as it was: no process of any run is left, nothing escaped into the real /tmp.
  assert [n for n, v in zip(names, verdicts) if uid_processes(v.isolation["uid"])] == []
  assert not pathlib.Path(f"/tmp/r1jax-escaped-{os.getpid()}").exists()
  assert len(made) == len(names) and all(pathlib.Path(d).name.startswith("r1jax-sandbox-") for d in made)
  assert [d for d in made if os.path.exists(d)] == []
  # And the sandbox still grades a good program.
  assert code.grade(fenced("def f(): return 1"), TASK).passed


def test_cpu_limit_ends_a_busy_program():
  # A generous wall clock, so that even a loaded machine gives the loop its CPU second first.
  r = sandbox.run("while True: pass", [], sandbox.Limits(wall_s=120, cpu_s=1))
  assert r.status == "timeout" and "SIGXCPU" in r.error


def test_output_is_capped_and_does_not_fail_a_right_program():
  v = sandbox.run("for _ in range(300):\n  print('y' * 65536)", ["pass"], sandbox.Limits(output_kb=8))
  assert v.status == "done" and v.tests == ((True, ""),) and len(v.output) == 8 << 10


def test_accuracy_reward_dispatches_code_and_math_and_counts_verdicts():
  examples = [TASK, TASK, TASK, {"final": "4"}, {"final": "4"}]
  completions = [fenced("def f(): return 1"), fenced("def f(): return 0"), "no code",
                 "<think> x </think> <answer> 4 </answer>", "<answer> 5 </answer>"]
  specs = combine.default_specs({"code_timeout_s": 4.0})
  total, per_fn, stats = combine.compute_rewards(completions, examples, specs, num_workers=2)
  assert per_fn["accuracy"].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
  assert stats["code_passed"] == {"accuracy": 1} and stats["code_failed"] == {"accuracy": 1}
  assert stats["code_no_code"] == {"accuracy": 1} and stats["code_timeout"] == {"accuracy": 0}
  # One call, anywhere: the same function grades a code row directly.
  assert combine.accuracy_reward(completions[0], TASK) == 1.0
  assert combine.accuracy_reward(completions[1], TASK) == 0.0
  # Also from a (daemonic) reward worker process: the sandbox is a subprocess, not a multiprocessing child.
  from r1jax.rewards import time_limit
  with time_limit.borrowed_sandbox() as box:
    assert box.call(combine.accuracy_reward, (completions[0], TASK), 60) == ("ok", 1.0)


@pytest.mark.parametrize("line, message", [
    ('{"question": "q", "entry_point": "f"}', "field 'tests' must be a non-empty list"),
    ('{"question": "q", "tests": []}', "field 'tests' must be a non-empty list"),
    ('{"tests": ["assert True"]}', "no question in field 'question'"),
])
def test_bad_code_rows_name_file_line_and_field(tmp_path, line, message):
  p = tmp_path / "code.jsonl"
  p.write_text('{"question": "ok", "tests": ["assert True"]}\n' + line + "\n")
  with pytest.raises(ValueError, match=rf"code.jsonl:2: {message}"):
    datasets.load_jsonl(datasets.JsonlConfig(path=str(p), layout="code"))


def test_humaneval_row_without_test_is_named(tmp_path):
  p = tmp_path / "he.jsonl"
  p.write_text('{"task_id": "x", "prompt": "def f():\\n", "entry_point": "f"}\n')
  with pytest.raises(ValueError, match=r"he.jsonl:1: no 'test'"):
    datasets.load_jsonl(datasets.JsonlConfig(path=str(p), layout="humaneval"))


def test_reasoning_gym_code_tasks_use_their_own_verifiers():
  """bf and codeio ask for a program's output (or input), not for a program: their own scorers
  grade them, with no sandbox (data.source=reasoning_gym, data.rg_tasks=bf,codeio)."""
  examples = datasets.reasoning_gym_examples("bf,codeio", 2, 0)
  assert not any(code.is_code_example(e) for e in examples)
  for e in examples:
    assert combine.accuracy_reward(f"<answer>{e['final']}</answer>", e) == 1.0
    assert combine.accuracy_reward("<answer>nope</answer>", e) == 0.0
