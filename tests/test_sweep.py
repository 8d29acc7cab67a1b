"""The sweep runner with a cheap pure-Python run function: every entry in its own directory, skip
of finished entries, rerun of interrupted and failed ones, one entry per host by index, the
gathered table and one plot per metric."""
import json

import pytest

from r1jax import logger
from r1jax import sweep as sweep_lib

SWEEP = [{}, {"grpo.beta": 0.0}, {"grpo.loss_type": "dr_grpo", "grpo.scale_rewards": "none"}, {"traces.reflect_rate": 0.05}]


class FakeRun:
  """run(overrides, workdir) -> summary, recording its calls; fails on the entries in `fail`."""

  def __init__(self, fail=()):
    self.calls, self.fail = [], set(fail)

  def __call__(self, overrides, workdir):
    self.calls.append(dict(overrides))
    assert workdir.is_dir() and json.loads((workdir / "overrides.json").read_text()) == overrides
    if len(overrides) in self.fail:
      raise RuntimeError("boom")
    log = logger.MetricsLogger(workdir, tensorboard=False)
    for step in range(3):
      log.log(step, {"aha/reflection_rate": 0.1 * step * (1 + len(overrides))})
    log.close()
    return {"final_accuracy": 0.5 + 0.1 * len(overrides), "beta": overrides.get("grpo.beta", 0.04),
            "memory_plan": {"grad_accum": 2, "remat": "none"}, "note": "text", "ok": True, "plots": ["a.png"]}


def test_runs_every_entry_once_skips_finished_and_reruns_unfinished(tmp_path):
  run = FakeRun()
  assert sweep_lib.run_sweep(SWEEP, run, tmp_path) == {0: "done", 1: "done", 2: "done", 3: "done"}
  assert run.calls == SWEEP
  dirs = [sweep_lib.entry_dir(tmp_path, i, ov) for i, ov in enumerate(SWEEP)]
  assert [d.name for d in dirs] == ["00-base", "01-grpo.beta=0.0", "02-grpo.loss_type=dr_grpo,grpo.scale_rewards=none",
                                    "03-traces.reflect_rate=0.05"]
  assert json.loads((dirs[2] / "summary.json").read_text())["final_accuracy"] == pytest.approx(0.7)
  # Resume: nothing finished runs again; an entry without a summary (killed mid-run) does.
  assert sweep_lib.run_sweep(SWEEP, run, tmp_path) == {i: "skipped" for i in range(4)}
  assert len(run.calls) == 4
  (dirs[1] / "summary.json").unlink()
  assert sweep_lib.status(tmp_path, SWEEP, 1) == "started"
  assert sweep_lib.run_sweep(SWEEP, run, tmp_path)[1] == "done"
  assert run.calls[4:] == [SWEEP[1]]
  # A changed sweep under the same directory names is refused, not silently mixed.
  (dirs[0] / "overrides.json").write_text(json.dumps({"grpo.beta": 1.0}))
  with pytest.raises(ValueError, match="the sweep changed"):
    sweep_lib.run_entry(SWEEP, 0, run, tmp_path)


def test_a_failed_entry_does_not_stop_the_others_and_is_retried(tmp_path):
  run = FakeRun(fail={1})
  assert sweep_lib.run_sweep(SWEEP, run, tmp_path) == {0: "done", 1: "failed", 2: "done", 3: "failed"}
  err = sweep_lib.entry_dir(tmp_path, 1, SWEEP[1]) / "error.txt"
  assert "RuntimeError: boom" in err.read_text()
  assert not (tmp_path / "report.md").exists()  # written when every entry is finished
  run.fail = set()
  assert sweep_lib.run_sweep(SWEEP, run, tmp_path) == {0: "skipped", 1: "done", 2: "skipped", 3: "done"}
  assert not err.exists() and (tmp_path / "report.md").exists()
  bad = lambda ov, wd: [1.0]
  assert sweep_lib.run_entry([{"x": 1}], 0, bad, tmp_path / "bad") == "failed"


def test_one_entry_per_host_by_index_and_the_last_one_writes_the_report(tmp_path, monkeypatch):
  run = FakeRun()
  for name in sweep_lib.INDEX_ENV:
    monkeypatch.delenv(name, raising=False)
  assert sweep_lib.host_index() is None
  assert sweep_lib.host_index({"SLURM_ARRAY_TASK_ID": "2"}) == 2
  assert sweep_lib.host_index({"R1JAX_SWEEP_INDEX": "1", "SLURM_ARRAY_TASK_ID": "2"}) == 1
  with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID='2-3'"):
    sweep_lib.host_index({"SLURM_ARRAY_TASK_ID": "2-3"})
  monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
  assert sweep_lib.main(SWEEP, run, argv=["--root", str(tmp_path)]) == {2: "done"}
  assert run.calls == [SWEEP[2]]
  for i in (3, 0):
    sweep_lib.main(SWEEP, run, argv=["--root", str(tmp_path), "--index", str(i)])
  assert not (tmp_path / "report.md").exists()
  sweep_lib.main(SWEEP, run, argv=["--root", str(tmp_path), "--index", "1"], curves=("aha/reflection_rate",))
  assert run.calls == [SWEEP[i] for i in (2, 3, 0, 1)]
  assert (tmp_path / "report.md").exists()
  with pytest.raises(ValueError, match=r"index=4 is out of range: the sweep has 4 entries \(0..3\)"):
    sweep_lib.main(SWEEP, run, argv=["--root", str(tmp_path), "--index", "4"])
  monkeypatch.delenv("JOB_COMPLETION_INDEX")
  with pytest.raises(SystemExit) as e:
    sweep_lib.main([{"a": 1}], FakeRun(fail={1}), argv=["--root", str(tmp_path / "f")])
  assert e.value.code == 1


def test_gather_table_and_one_plot_per_metric(tmp_path):
  run = FakeRun()
  sweep_lib.run_sweep(SWEEP[:3], run, tmp_path)  # writes the report as the last entry finishes
  sweep_lib.run_sweep(SWEEP, run, tmp_path, index=None)  # the sweep grew by one entry: only it runs
  assert run.calls == SWEEP
  (sweep_lib.entry_dir(tmp_path, 3, SWEEP[3]) / "summary.json").unlink()
  rows = sweep_lib.gather(tmp_path, SWEEP)
  assert [(r["label"], r["status"]) for r in rows] == [
      ("base", "done"), ("grpo.beta=0.0", "done"), ("grpo.loss_type=dr_grpo, grpo.scale_rewards=none", "done"),
      ("traces.reflect_rate=0.05", "started")]
  assert rows[1]["metrics"] == {"final_accuracy": pytest.approx(0.6), "beta": 0.0, "memory_plan.grad_accum": 2.0}
  out = sweep_lib.write_report(tmp_path, SWEEP, curves=("aha/reflection_rate", "missing/key"))
  md = out["table"].read_text().splitlines()
  assert md[2] == "| # | overrides | status | final_accuracy | beta | memory_plan.grad_accum |"
  assert md[4] == "| 0 | base | done | 0.5 | 0.04 | 2 |"
  assert md[6] == "| 2 | grpo.loss_type=dr_grpo, grpo.scale_rewards=none | done | 0.7 | 0.04 | 2 |"
  assert md[7] == "| 3 | traces.reflect_rate=0.05 | started |  |  |  |"
  names = sorted(p.name for p in out["plots"])
  assert names == ["beta.png", "curve_aha_reflection_rate.png", "final_accuracy.png", "memory_plan.grad_accum.png"]
  for p in out["plots"]:
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000
  assert sweep_lib.main(SWEEP, run, argv=["--root", str(tmp_path), "--gather"])["table"] == out["table"]
  assert len(run.calls) == 4  # gathering runs nothing
