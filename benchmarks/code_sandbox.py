"""Programs graded per second by the code reward's sandbox pool (no accelerator involved).

    python benchmarks/code_sandbox.py --completions 128 --workers 0,2,4,8 --out code_sandbox.json

Workload: a GRPO step's worth of code completions, HumanEval-shaped: `--completions` answers to
the first HumanEval tasks (cycled), each the task's canonical solution or, every `--wrong_every`-th,
a stub returning None; each task's `check` split into one test per assert (6.9 tests per
task on average over HumanEval; 6.5 over the first 128 tasks, the default batch). Every program gets a fresh
sandbox (interpreter, namespaces, limits, temporary directory). Reported per worker count: wall
seconds for the batch, programs and tests per second, and the verdict counts; the median of
`--repeats` runs.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from r1jax import datasets  # noqa: E402
from r1jax.rewards import code  # noqa: E402

SHARED = pathlib.Path(os.environ.get("R1JAX_SHARED_DATA", pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"))


def workload(n: int, wrong_every: int) -> tuple[list[str], list[dict]]:
  tasks, _ = datasets.load_jsonl(datasets.JsonlConfig(path=str(SHARED / "humaneval.jsonl.gz"), layout="humaneval"))
  exs = [tasks[i % len(tasks)] for i in range(n)]
  body = lambda i, e: "    return None\n" if wrong_every and i % wrong_every == wrong_every - 1 else e["canonical_solution"]
  texts = [f"<think> . </think> <answer>\n```python\n{body(i, e)}```\n</answer>" for i, e in enumerate(exs)]
  return texts, exs


def measure(texts, exs, workers: int, repeats: int) -> dict:
  walls, verdicts = [], []
  for _ in range(repeats):
    t = time.perf_counter()
    verdicts = code.grade_many(texts, exs, num_workers=workers)
    walls.append(time.perf_counter() - t)
  wall = statistics.median(walls)
  n_tests = sum(len(e["tests"]) for e in exs)
  return {"workers": workers or code.default_workers(), "completions": len(texts), "tests": n_tests,
          "wall_s": wall, "programs_per_s": len(texts) / wall, "tests_per_s": n_tests / wall,
          "verdicts": code.verdict_counts(verdicts)}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--completions", type=int, default=128)
  ap.add_argument("--workers", default="0", help="comma-separated worker counts; 0 = code.default_workers()")
  ap.add_argument("--wrong_every", type=int, default=4)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--out", default="")
  a = ap.parse_args()
  texts, exs = workload(a.completions, a.wrong_every)
  results = [measure(texts, exs, int(w), a.repeats) for w in a.workers.split(",")]
  print(f"cpu cores: {os.cpu_count()}; {a.completions} completions, {results[0]['tests']} tests")
  print("| workers | wall s | programs/s | tests/s | passed | failed | other |")
  print("|---|---|---|---|---|---|---|")
  for r in results:
    v = r["verdicts"]
    print(f"| {r['workers']} | {r['wall_s']:.2f} | {r['programs_per_s']:.1f} | {r['tests_per_s']:.0f} | {v['passed']} | "
          f"{v['failed']} | {r['completions'] - v['passed'] - v['failed']} |")
  if a.out:
    pathlib.Path(a.out).write_text(json.dumps({"cpu_count": os.cpu_count(), "results": results}, indent=1))


if __name__ == "__main__":
  main()
