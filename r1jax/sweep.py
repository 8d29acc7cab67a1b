"""Sweeps as researchers run them: every entry of an experiment's `sweep()` in its own work
directory, resumable, then one table and one plot per metric, side by side.

An entry is finished when its `summary.json` exists; running the sweep again skips finished
entries and reruns the others (an interrupted or failed one starts again in its directory, where
its own checkpoints let it resume). Entries run one after another on one machine, or one per host:
a cluster scheduler hands each host an index (`--index`, or R1JAX_SWEEP_INDEX,
SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX in the environment) and each host runs that entry only.
Whoever finishes the last entry writes the report; `--gather` writes it from whatever is finished.

    <root>/00-base/                      overrides.json, summary.json (+ what the run writes)
    <root>/01-grpo.beta=0/ ...
    <root>/report.md                     one row per entry, one column per numeric metric
    <root>/plots/<metric>.png            entries side by side, labelled by their overrides
    <root>/plots/curve_<key>.png         with `curves`: each entry's metrics.jsonl curve, overlaid

From an experiment file (the run function builds the entry's config and runs it):

    def run(overrides, workdir):
      cfg = config_lib.apply_overrides(get_config(), overrides | {"workdir": str(workdir)}, "sweep")
      return pipelines.run_r1_zero(cfg)

    if __name__ == "__main__":
      sweep_lib.main(sweep(), run, default_root="/tmp/r1jax_aha")
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import sys
import traceback
from typing import Callable, Mapping, Sequence

import numpy as np

from r1jax import errors
from r1jax import logger

INDEX_ENV = ("R1JAX_SWEEP_INDEX", "SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")
"""Environment variables a scheduler sets to the host's entry, first found wins."""
SUMMARY, OVERRIDES, ERROR = "summary.json", "overrides.json", "error.txt"
BAD_INPUT = "bad input"
"""An entry's status when it stopped on a `UserError` (a bad value, file or work directory)."""

RunFn = Callable[[dict, pathlib.Path], dict]


def label(overrides: Mapping) -> str:
  """'grpo.beta=0, grpo.mu=2' ('base' for no overrides): how an entry is named in tables and plots."""
  return ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base"


def entry_dir(root, i: int, overrides: Mapping) -> pathlib.Path:
  """<root>/<i, two digits>-<the overrides, as a file name> (cut to 80 characters)."""
  slug = re.sub(r"[^A-Za-z0-9.,=_+-]+", "_", label(overrides).replace(", ", ","))[:80]
  return pathlib.Path(root) / f"{i:02d}-{slug}"


def _write_json(path: pathlib.Path, obj) -> None:
  tmp = path.with_name(path.name + f".tmp{os.getpid()}")
  tmp.write_text(json.dumps(obj, indent=1, default=str))
  tmp.replace(path)  # atomic: a summary is either whole or absent, even when the run is killed


def _check_entries(sweep: Sequence[Mapping]) -> None:
  for i, ov in enumerate(sweep):
    if not isinstance(ov, Mapping):
      raise ValueError(f"sweep entry {i} is {ov!r}; each entry is a dict of dotted overrides")


def status(root, sweep: Sequence[Mapping], i: int) -> str:
  """'done' (summary.json), 'failed' (error.txt from the last attempt), 'started' or 'pending'."""
  d = entry_dir(root, i, sweep[i])
  if (d / SUMMARY).exists():
    return "done"
  if (d / ERROR).exists():
    return "failed"
  return "started" if d.exists() else "pending"


def run_entry(sweep: Sequence[Mapping], i: int, run: RunFn, root) -> str:
  """Runs entry `i` unless finished; 'skipped', 'done', 'failed' (traceback in error.txt) or
  BAD_INPUT (a UserError: its one line in error.txt)."""
  _check_entries(sweep)
  if not 0 <= i < len(sweep):
    raise ValueError(f"sweep index={i} is out of range: the sweep has {len(sweep)} entries (0..{len(sweep) - 1})")
  ov, d = dict(sweep[i]), entry_dir(root, i, sweep[i])
  if (d / OVERRIDES).exists():
    before = json.loads((d / OVERRIDES).read_text())
    if before != json.loads(json.dumps(ov, default=str)):
      raise ValueError(f"{d} holds a run of overrides {before}, not sweep entry {i}'s {ov}: the sweep changed; "
                       f"give it a fresh root")
  if (d / SUMMARY).exists():
    return "skipped"
  d.mkdir(parents=True, exist_ok=True)
  _write_json(d / OVERRIDES, ov)
  (d / ERROR).unlink(missing_ok=True)
  try:
    summary = run(ov, d)
  except errors.UserError as e:  # a bad input: its one line, not a traceback
    (d / ERROR).write_text(f"{e.prefix}{e}\n")
    return BAD_INPUT
  except Exception:  # one failed entry must not stop the others; its traceback stays beside it
    (d / ERROR).write_text(traceback.format_exc())
    return "failed"
  if not isinstance(summary, Mapping):
    (d / ERROR).write_text(f"the run function returned {type(summary).__name__}, not a summary dict\n")
    return "failed"
  _write_json(d / SUMMARY, dict(summary))
  return "done"


def run_sweep(sweep: Sequence[Mapping], run: RunFn, root, index: int | None = None,
              curves: Sequence[str] = ()) -> dict[int, str]:
  """Runs every entry (index None) or entry `index` only; {i: 'skipped' / 'done' / 'failed'}.
  When every entry is finished afterwards, writes the report (`write_report`), unless this call
  finished none and a report exists."""
  _check_entries(sweep)
  todo = range(len(sweep)) if index is None else [index]
  result = {i: run_entry(sweep, i, run, root) for i in todo}
  fresh = "done" in result.values() or not (pathlib.Path(root) / "report.md").exists()
  if fresh and all(status(root, sweep, i) == "done" for i in range(len(sweep))):
    write_report(root, sweep, curves=curves)
  return result


def host_index(environ: Mapping[str, str] = os.environ) -> int | None:
  """This host's entry from the scheduler's environment (INDEX_ENV, first set wins); None if unset."""
  for name in INDEX_ENV:
    v = environ.get(name, "").strip()
    if v:
      if not re.fullmatch(r"\d+", v):
        raise ValueError(f"{name}={v!r} is not a sweep index (a non-negative integer)")
      return int(v)
  return None


def _numbers(summary: Mapping, prefix: str = "") -> dict[str, float]:
  """The numeric entries of a summary, nested dicts flattened with dots (bools and lists left out)."""
  out = {}
  for k, v in summary.items():
    if isinstance(v, Mapping):
      out |= _numbers(v, f"{prefix}{k}.")
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
      out[prefix + k] = float(v)
  return out


def gather(root, sweep: Sequence[Mapping]) -> list[dict]:
  """One row per entry, in sweep order: index, label, dir, status, metrics (the numbers of its
  summary, {} until it is done)."""
  _check_entries(sweep)
  rows = []
  for i, ov in enumerate(sweep):
    d = entry_dir(root, i, ov)
    st = status(root, sweep, i)
    metrics = _numbers(json.loads((d / SUMMARY).read_text())) if st == "done" else {}
    rows.append({"index": i, "label": label(ov), "dir": d, "status": st, "metrics": metrics})
  return rows


def _fmt(v) -> str:
  return "" if v is None else ("nan" if math.isnan(v) else f"{v:.4g}")


def table(rows: Sequence[dict], metrics: Sequence[str] | None = None) -> str:
  """A markdown table: entry, label, status, then one column per metric (default: every number
  any finished entry reports, in first-seen order)."""
  metrics = list(metrics or dict.fromkeys(k for r in rows for k in r["metrics"]))
  line = lambda cells: "| " + " | ".join(cells) + " |"
  lines = [line(["#", "overrides", "status"] + metrics), "|" + "---|" * (3 + len(metrics))]
  for r in rows:
    lines.append(line([str(r["index"]), r["label"].replace("|", "\\|"), r["status"]]
                      + [_fmt(r["metrics"].get(m)) for m in metrics]))
  return "\n".join(lines) + "\n"


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9._=-]+", "_", name)


def write_report(root, sweep: Sequence[Mapping], metrics: Sequence[str] | None = None,
                 curves: Sequence[str] = ()) -> dict:
  """<root>/report.md and one bar plot per metric in <root>/plots (entries side by side, labelled
  by their overrides); for each key in `curves`, the entries' metrics.jsonl curves overlaid.
  Returns {'table': path, 'plots': [paths]}."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  root = pathlib.Path(root)
  rows = gather(root, sweep)
  md = table(rows, metrics)
  report = root / "report.md"
  tmp = report.with_name(f"report.md.tmp{os.getpid()}")
  tmp.write_text(f"# Sweep of {len(rows)} entries\n\n{md}")
  tmp.replace(report)
  plot_dir = root / "plots"
  plot_dir.mkdir(parents=True, exist_ok=True)
  done = [r for r in rows if r["status"] == "done"]
  written = []
  for m in metrics or dict.fromkeys(k for r in done for k in r["metrics"]):
    have = [r for r in done if m in r["metrics"]]
    if not have:
      continue
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(have) + 2), 3.8))
    ax.bar(range(len(have)), [r["metrics"][m] for r in have], color=[f"C{r['index'] % 10}" for r in have])
    ax.set_xticks(range(len(have)), [r["label"] for r in have], rotation=30, ha="right", fontsize=7)
    ax.set(title=m)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = plot_dir / f"{_safe(m)}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  for key in curves:
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    any_curve = False
    for r in rows:
      pts = [(x["step"], x[key]) for x in logger.read_metrics(r["dir"]) if key in x]
      if pts:
        ax.plot(*zip(*pts), lw=1.5, label=r["label"], color=f"C{r['index'] % 10}")
        any_curve = True
    if any_curve:
      ax.set(title=key, xlabel="step")
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
      fig.tight_layout()
      path = plot_dir / f"curve_{_safe(key)}.png"
      fig.savefig(path, dpi=100)
      written.append(path)
    plt.close(fig)
  return {"table": report, "plots": written}


def main(sweep: Sequence[Mapping], run: RunFn, default_root: str | None = None, argv: Sequence[str] | None = None,
         curves: Sequence[str] = ()) -> dict[int, str] | dict:
  """The `__main__` of a sweeping experiment: --root DIR, --index I (default: the scheduler's
  environment, else every entry), --gather (only write the report). Exits with status 1 when an
  entry failed, 2 when one stopped on a bad input (its one line printed, `error: ...`)."""
  p = argparse.ArgumentParser(description="Run every entry of the sweep, resumably, then tabulate and plot.")
  p.add_argument("--root", default=default_root, required=default_root is None,
                 help="directory holding one work directory per entry")
  p.add_argument("--index", type=int, default=None, help="run this entry only (default: $" + ", $".join(INDEX_ENV)
                 + ", else all)")
  p.add_argument("--gather", action="store_true", help="only write report.md and the plots from finished entries")
  p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                 help="an override applied to every entry (e.g. --set train.steps=40); repeatable")
  args = p.parse_args(argv)
  common = {}
  for item in args.set:
    key, eq, value = item.partition("=")
    if not eq or not key:
      p.error(f"--set {item!r}: give FIELD=VALUE")
    try:
      common[key] = json.loads(value)
    except json.JSONDecodeError:
      common[key] = {"True": True, "False": False}.get(value, value)
  if common:
    run = (lambda inner: lambda overrides, workdir: inner({**overrides, **common}, workdir))(run)
  if args.gather:
    out = write_report(args.root, sweep, curves=curves)
    print(out["table"].read_text())
    return out
  index = args.index if args.index is not None else host_index()
  result = run_sweep(sweep, run, args.root, index, curves)
  for i, st in result.items():
    if st == BAD_INPUT:  # its one line (`error: ...`), the same in error.txt
      print((entry_dir(args.root, i, sweep[i]) / ERROR).read_text().strip(), file=sys.stderr)
      continue
    print(f"sweep entry {i} ({label(sweep[i])}): {st}"
          + (f", see {entry_dir(args.root, i, sweep[i]) / ERROR}" if st == "failed" else ""))
  if any(st == BAD_INPUT for st in result.values()):
    raise SystemExit(2)
  if any(st == "failed" for st in result.values()):
    raise SystemExit(1)
  return result


def curve_summary(metrics_file, keys, window: int = 5) -> dict:
  """First-`window` and last-`window` step means of the curves `keys`, and the ratios the aha
  verdict uses."""
  rows = [json.loads(l) for l in pathlib.Path(metrics_file).read_text().splitlines()]
  out = {}
  for key in keys:
    vals = [r[key] for r in rows if key in r]
    if vals:
      name = key.split("/", 1)[1].replace("/", "_")
      out[f"{name}_early"] = float(np.mean(vals[:window]))
      out[f"{name}_late"] = float(np.mean(vals[-window:]))
  for name in ("reflection_rate", "mean_length"):
    if f"{name}_early" in out:
      out[f"{name}_ratio"] = out[f"{name}_late"] / max(out[f"{name}_early"], 1e-9)
  return out
