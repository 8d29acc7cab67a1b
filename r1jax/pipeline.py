"""Runs a list of stages in a work directory.

A stage is a function `run(run, ctx, inputs, out) -> outputs` (the resolved `config.Run`, what
the run built once, and files): inputs and outputs are paths (policy
directories, JSONL datasets) and JSON values. When a stage finishes, its outputs are recorded in
`<workdir>/stages/<name>.json` with a fingerprint of the configuration and of its inputs'
records; a stage whose record is there with the same fingerprint is skipped. A stage killed
before its record is written runs again and resumes from its own checkpoints (the RL and SFT loops
checkpoint as they go; the data stages are deterministic and rewrite their files whole), so
rerunning the same command after a kill ends where an uninterrupted run ends.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time
from typing import Callable

import jax

from r1jax import errors


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  fn: Callable
  """`fn(run, ctx, inputs: dict, out: pathlib.Path) -> dict` of outputs."""
  out: str = ""
  """Output directory relative to the work directory ('' = the work directory itself)."""
  inputs: dict = dataclasses.field(default_factory=dict)
  """Input name -> 'stage.output' (an earlier stage's output) or a path."""


def record_path(workdir, name: str) -> pathlib.Path:
  return pathlib.Path(workdir) / "stages" / f"{name}.json"


def read_record(workdir, name: str) -> dict | None:
  p = record_path(workdir, name)
  return json.loads(p.read_text()) if p.exists() else None


def _write_atomic(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)  # a kill leaves the old record or the new one, never half of one


def _given(st: Stage, key: str, given: dict | None) -> str | None:
  return next((g for g in (f"{st.name}.{key}", key) if given and g in given), None)


def _missing_input(st: Stage, key: str, stage: str, workdir) -> errors.UserError:
  return errors.UserError("stage input", f"stage {st.name!r}", f"needs {key} from stage {stage!r}, which has not "
                          f"run in {workdir}", f"run it first or give the path (--config.inputs={key}=PATH)")


def check_inputs(workdir, stages: list[Stage], only: set[str] | None = None, given: dict | None = None) -> None:
  """Before any work: every input of the stages to run comes from a stage run here, a recorded
  earlier stage or a given path; else the UserError `run` would raise when it got there."""
  names = [s.name for s in stages]
  for st in stages:
    if only is None or st.name not in only:
      continue
    for key, src in st.inputs.items():
      stage = src.partition(".")[0]
      if (_given(st, key, given) is None and stage in names and stage not in only
          and read_record(workdir, stage) is None):
        raise _missing_input(st, key, stage, workdir)


def run(run_cfg, ctx, stages: list[Stage], fingerprint: str, only: set[str] | None = None,
        given: dict | None = None) -> dict:
  """Run `stages` in order (only those named in `only`, if given) and return {name: outputs}.

  `given` maps input names to paths that replace what the stages would read (a stage run from
  another run's outputs or a Hugging Face model): 'STAGE.NAME' replaces one stage's input,
  'NAME' that input of every stage run here.
  """
  workdir = pathlib.Path(ctx.workdir)
  names = [s.name for s in stages]
  results: dict[str, dict] = {}
  prints: dict[str, str] = {}
  for st in stages:
    if only is not None and st.name not in only:  # not run here: later stages read its record
      prints[st.name] = (read_record(workdir, st.name) or {}).get("fingerprint", "")
      continue
    inputs, upstream = {}, []
    for key, src in st.inputs.items():
      g = _given(st, key, given)
      if g is not None:
        inputs[key] = given[g]
        continue
      stage, _, output = src.partition(".")
      if stage not in names:
        inputs[key] = src
        continue
      rec = results.get(stage) or (read_record(workdir, stage) or {}).get("outputs")
      if rec is None:
        raise _missing_input(st, key, stage, workdir)
      inputs[key] = rec[output]
      upstream.append(prints.get(stage) or (read_record(workdir, stage) or {}).get("fingerprint", ""))
    fp = hashlib.sha256(json.dumps([fingerprint, st.name, st.out, inputs, upstream], sort_keys=True,
                                   default=str).encode()).hexdigest()[:16]
    prints[st.name] = fp
    rec = read_record(workdir, st.name)
    if rec is not None and rec["fingerprint"] == fp:
      print(f"stage {st.name}: complete, skipped ({record_path(workdir, st.name)})")
      results[st.name] = rec["outputs"]
      continue
    out = workdir / st.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"stage {st.name}: running -> {out}")
    t0 = time.time()
    outputs = st.fn(run_cfg, ctx, inputs, out)
    results[st.name] = outputs
    rec = {"fingerprint": fp, "inputs": inputs, "outputs": outputs, "wall_seconds": time.time() - t0}
    mem = jax.local_devices()[0].memory_stats()  # None on CPU
    if mem and "peak_bytes_in_use" in mem:  # the process's peak so far (JAX cannot reset it per stage)
      rec["device_peak_gib_so_far"] = mem["peak_bytes_in_use"] / 2 ** 30
    _write_atomic(record_path(workdir, st.name), json.dumps(rec, indent=1))
  return results
