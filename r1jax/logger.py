"""Metrics to JSONL and TensorBoard, sample completions to JSONL, and PNG plots of a run."""
from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import numpy as np


def _scalar(v) -> float:
  return float(np.asarray(v))


def truncate_after(path: pathlib.Path, step: int) -> None:
  """Drop the rows of a JSONL log whose step is past `step` (and a half-written last line): a
  resumed run logs those steps again."""
  if not path.exists():
    return
  keep = []
  for line in path.read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(row, dict) and row.get("step", 0) <= step:
      keep.append(line + "\n")
  tmp = path.with_suffix(".tmp")
  tmp.write_text("".join(keep))
  tmp.replace(path)


class MetricsLogger:
  """Appends one JSON line per step to `metrics.jsonl` (resume-safe: later lines win).

  `resume_step`: the step a run resumes from; rows of later steps, which the run logs again, are
  dropped from `metrics.jsonl` and `samples.jsonl` first, so no step appears twice.
  """

  def __init__(self, workdir: str | pathlib.Path, tensorboard: bool = True, resume_step: int | None = None):
    self.dir = pathlib.Path(workdir)
    self.dir.mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
      for name in ("metrics.jsonl", "samples.jsonl"):
        truncate_after(self.dir / name, resume_step)
    self._metrics = open(self.dir / "metrics.jsonl", "a")
    self._samples = open(self.dir / "samples.jsonl", "a")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(str(self.dir / "tb"))

  def log(self, step: int, metrics: dict[str, Any]):
    row = {"step": int(step)} | {k: _scalar(v) for k, v in metrics.items()}
    self._metrics.write(json.dumps(row) + "\n")
    self._metrics.flush()
    if self._tb is not None:
      for k, v in row.items():
        if k != "step" and math.isfinite(v):
          self._tb.add_scalar(k, v, step)

  def log_samples(self, step: int, rows: list[dict]):
    for r in rows:
      self._samples.write(json.dumps({"step": int(step)} | r) + "\n")
    self._samples.flush()

  def close(self):
    self._metrics.close()
    self._samples.close()
    if self._tb is not None:
      self._tb.close()


def read_metrics(workdir) -> list[dict]:
  """Metrics rows by step; when a resumed run re-logged a step, the last row wins."""
  rows = {}
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if path.exists():
    for line in path.read_text().splitlines():
      if line.strip():
        r = json.loads(line)
        rows[r["step"]] = r
  return [rows[k] for k in sorted(rows)]


PLOTS = {
    "reward": ("reward", "Total reward"),
    "accuracy": ("rewards/accuracy/mean", "Accuracy reward"),
    "format": ("rewards/format/mean", "Format reward"),
    "response_length": ("completions/mean_length", "Response length (tokens)"),
    "reflection_rate": ("aha/reflection_rate", "Reflection rate (responses with 'wait', re-checks)"),
}


def plot_run(workdir, extra: dict[str, tuple[str, str]] | None = None) -> list[pathlib.Path]:
  """One PNG per curve (reward, accuracy, response length, reflection rate) in `workdir/plots`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = read_metrics(workdir)
  out_dir = pathlib.Path(workdir) / "plots"
  out_dir.mkdir(parents=True, exist_ok=True)
  written = []
  for name, (key, title) in (PLOTS | (extra or {})).items():
    pts = [(r["step"], r[key]) for r in rows if key in r]
    if not pts:
      continue
    x, y = zip(*pts)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, y, lw=1, alpha=0.4, color="C0")
    if len(y) >= 5:
      w = max(len(y) // 20, 3)
      smooth = np.convolve(y, np.ones(w) / w, mode="valid")
      ax.plot(x[w - 1:], smooth, lw=2, color="C0")
    ax.set(title=title, xlabel="step")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
  return written


def format_table(rows: list[tuple], headers: tuple[str, ...]) -> str:
  """A plain-text table with aligned columns."""
  cells = [[str(h) for h in headers]] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
  line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))
  return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def plot_stages(rows: list[tuple], metrics: tuple[str, ...], path) -> pathlib.Path:
  """One bar chart per metric, one bar per row (row[0] its name, row[1:] the metrics' values)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 4))
  names = [r[0] for r in rows]
  for j, (ax, m) in enumerate(zip(np.atleast_1d(axes), metrics)):
    ax.bar(range(len(rows)), [r[1 + j] for r in rows], color=["#888" if n in ("base", "R1-Zero") else "#36c"
                                                                for n in names])
    ax.set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=7)
    ax.set_title(m)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
