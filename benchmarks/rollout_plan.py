"""The memory plan of a named config on this machine's device, rollout included, without weights.

    python benchmarks/rollout_plan.py --name qwen3-1.7b --out plan_dir

The named config (experiments/r1_zero.py; `--name tiny`: the embedded default, what
tests/test_benchmarks.py runs on CPU) is validated with the preset's vocabulary standing in
for its checkpoint, and `pipelines.plan_memory` runs as the run would before its first rollout
(abstract shapes: nothing is allocated). Prints the plan's line; writes plan_dir/memory_plan.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--name", required=True)
  ap.add_argument("--out", required=True)
  ap.add_argument("--set", action="append", default=[], help="FIELD=VALUE overrides, e.g. train.rollout_chunks=2")
  a = ap.parse_args(argv)
  import jax
  from r1jax import config_sections
  from r1jax import pipelines
  from r1jax.model import presets
  from r1jax import sharding
  spec = importlib.util.spec_from_file_location("r1_zero", REPO / "experiments" / "r1_zero.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config(None if a.name == "tiny" else a.name)
  over = {"model.vocab_size": presets.PRESETS[cfg.model.preset].vocab_size}
  over |= dict(s.split("=", 1) for s in a.set)
  cfg = config_sections.apply_overrides(cfg, over, "--set")
  run = pipelines.validate(cfg)
  mesh = sharding.make_mesh(run.mesh)
  out = pathlib.Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  t = time.perf_counter()
  with jax.set_mesh(mesh):
    pipelines.plan_memory(run, mesh, out)
  print(f"planned in {time.perf_counter() - t:.0f} s on {jax.devices()[0].device_kind}")


if __name__ == "__main__":
  main()
