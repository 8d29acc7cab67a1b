"""r1jax.pipeline on stand-in stages (files in, files out, no model): records and skips, fingerprints,
given inputs, and a kill at every stage boundary and inside a stage, in this process and as a
SIGKILL of a separate process; in each case rerunning ends where an uninterrupted run ends."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from r1jax import errors
from r1jax import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]


class Ctx:
  def __init__(self, workdir):
    self.workdir = pathlib.Path(workdir)


def count_stage(run, ctx, inputs, out, *, n=6, die=None, pause=0.0):
  """Appends one line per step to <out>/steps.txt (resuming after the lines already there) and
  writes <out>/result.txt = f(its input's result); `die(step)` may raise to simulate a kill."""
  src = pathlib.Path(inputs["src"]).read_text() if "src" in inputs else "seed"
  log = out / "steps.txt"
  done = log.read_text().splitlines() if log.exists() else []
  for i in range(len(done), n):
    if die:
      die(out.name, i)
    time.sleep(pause)
    with log.open("a") as f:
      f.write(f"{i}\n")
  (out / "result.txt").write_text(f"{out.name}({src},{len(log.read_text().splitlines())})")
  return {"result": str(out / "result.txt")}


def chain(**kw):
  import functools
  fn = functools.partial(count_stage, **kw)
  return [pipeline.Stage("a", fn, "a"), pipeline.Stage("b", fn, "b", {"src": "a.result"}),
          pipeline.Stage("c", fn, "c", {"src": "b.result"})]


WANT = "c(b(a(seed,6),6),6)"


def final(work) -> str:
  return (pathlib.Path(work) / "c" / "result.txt").read_text()


def test_records_skip_and_fingerprints(tmp_path, capsys):
  pipeline.run(None, Ctx(tmp_path), chain(), "fp1")
  assert final(tmp_path) == WANT
  rec = pipeline.read_record(tmp_path, "b")
  assert rec["inputs"] == {"src": str(tmp_path / "a" / "result.txt")} and rec["wall_seconds"] >= 0
  capsys.readouterr()
  pipeline.run(None, Ctx(tmp_path), chain(), "fp1")
  assert capsys.readouterr().out.count("complete, skipped") == 3
  # Another configuration: every stage runs again (each resumes its own finished steps here).
  pipeline.run(None, Ctx(tmp_path), chain(), "fp2")
  assert "running" in capsys.readouterr().out and pipeline.read_record(tmp_path, "c")["fingerprint"] != rec["fingerprint"]


def test_given_inputs_by_stage_or_for_every_stage(tmp_path):
  other = tmp_path / "other.txt"
  other.write_text("given")
  out = pipeline.run(None, Ctx(tmp_path / "w1"), chain(), "fp", given={"c.src": str(other)})
  assert pathlib.Path(out["c"]["result"]).read_text() == "c(given,6)"
  assert pathlib.Path(out["b"]["result"]).read_text() == "b(a(seed,6),6)"  # only c's input replaced
  out = pipeline.run(None, Ctx(tmp_path / "w2"), chain(), "fp", only={"c"}, given={"src": str(other)})
  assert set(out) == {"c"} and pathlib.Path(out["c"]["result"]).read_text() == "c(given,6)"
  # A stage whose input stage has not run and is not given: a clear error.
  with pytest.raises(errors.UserError, match="stage 'c': needs src from stage 'b', which has not run"):
    pipeline.run(None, Ctx(tmp_path / "w3"), chain(), "fp", only={"c"})


@pytest.mark.parametrize("where", ["after_outputs", "inside"])
def test_killed_at_every_stage_boundary_and_inside_every_stage(tmp_path, where):
  """One run killed at each stage in turn (after the stage's work, before its record; or at its
  4th step): each rerun continues, none repeats a finished step, the end is the uninterrupted one."""
  killed = set()

  def die(name, i):
    if where == "inside" and i == 3 and name not in killed:
      killed.add(name)
      raise KeyboardInterrupt(name)

  real_write = pipeline._write_atomic

  def write(path, text):
    name = path.stem
    if where == "after_outputs" and name not in killed:
      killed.add(name)
      raise KeyboardInterrupt(name)
    real_write(path, text)

  pipeline._write_atomic = write
  try:
    for attempt in range(3):
      with pytest.raises(KeyboardInterrupt, match="abc"[attempt]):
        pipeline.run(None, Ctx(tmp_path), chain(die=die), "fp")
    pipeline.run(None, Ctx(tmp_path), chain(die=die), "fp")
  finally:
    pipeline._write_atomic = real_write
  assert killed == {"a", "b", "c"}
  assert final(tmp_path) == WANT
  for s in "abc":  # every step exactly once
    assert (tmp_path / s / "steps.txt").read_text().split() == [str(i) for i in range(6)]


PROGRAM = """
import functools, pathlib, sys
sys.path.insert(0, {tests!r})
from test_pipeline import Ctx, chain
from r1jax import errors
from r1jax import pipeline
pipeline.run(None, Ctx({work!r}), chain(pause=0.05), "fp")
print("done")
"""


def lines(work) -> int:
  return sum(len((pathlib.Path(work) / s / "steps.txt").read_text().split())
             for s in "abc" if (pathlib.Path(work) / s / "steps.txt").exists())


@pytest.mark.slow  # the full suite's (CI time): a separate process SIGKILLed; the in-process kill at every boundary runs in CI
def test_sigkill_at_many_points_then_rerun_ends_as_uninterrupted(tmp_path):
  """The pipeline in its own process, SIGKILLed at several points of its progress (inside stages
  and at their boundaries: 6 and 12 steps are where a and b end), the same command rerun each
  time; the end equals the uninterrupted run's, and no step was done twice."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
  code = textwrap.dedent(PROGRAM.format(tests=str(REPO / "tests"), work=str(tmp_path)))
  kills = []
  for target in (2, 6, 8, 12, 13, 17):
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
    t0 = time.time()
    while p.poll() is None and lines(tmp_path) < target and time.time() - t0 < 60:
      time.sleep(0.005)
    if p.poll() is None:
      p.send_signal(signal.SIGKILL)
      kills.append(lines(tmp_path))
    p.wait(timeout=60)
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and "done" in out.stdout, out.stderr[-2000:]
  assert len(kills) >= 4 and kills == sorted(kills), kills  # a late kill may find the run finished
  assert final(tmp_path) == WANT
  for s in "abc":
    assert (tmp_path / s / "steps.txt").read_text().split() == [str(i) for i in range(6)]
  assert all(json.loads(pipeline.record_path(tmp_path, s).read_text())["outputs"] for s in "abc")


R1_TINY = ["--config.pretrain.steps=20", "--config.data.num_train=200", "--config.data.num_eval=8",
           "--config.eval.batch_size=8", "--config.train.progress=False", "--config.model.n_layers=1",
           "--config.model.d_model=32", "--config.model.head_dim=8", "--config.model.d_ff=64",
           "--config.train.prompts_per_step=4", "--config.grpo.num_generations=4", "--config.r1.reasoning_rl_steps=4",
           "--config.r1.rl_all_steps=1", "--config.checkpoint.save_every=1", "--config.cold_start.num_prompts=8",
           "--config.cold_start.samples_per_prompt=4", "--config.rejection.num_prompts=8",
           "--config.rejection.samples_per_prompt=4", "--config.rejection.num_general=4",
           "--config.rl_all.general_prompts=8", "--config.reward_model.steps=2", "--config.reward_model.batch_size=4",
           "--config.sft.batch_size=4", "--config.r1.distill=False", "--config.r1.compare_r1_zero=False"]


@pytest.mark.slow
def test_r1_pipeline_sigkilled_inside_reasoning_rl_resumes_to_the_uninterrupted_end(tmp_path):
  """experiments/r1.py at toy size, SIGKILLed once reasoning RL has checkpointed a step, rerun with
  the same command: finished stages are skipped, RL resumes from its checkpoint, and the table
  equals the uninterrupted run's."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  cmd = [sys.executable, str(REPO / "experiments" / "r1.py")] + R1_TINY
  full = subprocess.run(cmd + [f"--config.workdir={tmp_path / 'full'}"], env=env, capture_output=True, text=True,
                        timeout=900, cwd=tmp_path)
  assert full.returncode == 0, full.stderr[-3000:]
  work = tmp_path / "split"
  p = subprocess.Popen(cmd + [f"--config.workdir={work}"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd=tmp_path)
  ckpt = work / "reasoning_rl" / "ckpt"
  t0 = time.time()
  while p.poll() is None and time.time() - t0 < 900 and not (ckpt.is_dir() and any(
      d.name.isdigit() for d in ckpt.iterdir())):
    time.sleep(0.05)
  assert p.poll() is None, "the run ended before reasoning RL checkpointed"
  p.send_signal(signal.SIGKILL)
  p.wait()
  assert pipeline.read_record(work, "reasoning_rl") is None and pipeline.read_record(work, "cold_start_sft")
  again = subprocess.run(cmd + [f"--config.workdir={work}"], env=env, capture_output=True, text=True, timeout=900,
                         cwd=tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "stage cold_start_sft: complete, skipped" in again.stdout
  assert "stage reasoning_rl: running" in again.stdout
  steps = [json.loads(l)["step"] for l in (work / "reasoning_rl" / "metrics.jsonl").read_text().splitlines()]
  assert steps[-1] == 4 and len(steps) < 8  # resumed, not restarted from step 1 (a step may be redone)
  want = json.loads((tmp_path / "full" / "summary.json").read_text())["rows"]
  got = json.loads((work / "summary.json").read_text())["rows"]
  assert got == want
