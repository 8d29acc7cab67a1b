"""The command line of `experiments/*.py`: `main` reads --config (the experiment file, or
`FILE:NAME` for a named config) and --sweep_index, checks the config and the machine before any
work, and runs the experiment; every bad input is one line on stderr and exit status 2.

The pipelines and their configs are `r1jax.pipelines` (R1_ZERO, R1, DISTILL; `base_config`,
`r1_config`), the config's resolution `r1jax.config`, evaluation's `r1jax.evaluation.experiment`.
"""
from __future__ import annotations

import os
import pathlib

import ml_collections

from r1jax import config_sections
from r1jax import distributed
from r1jax import errors
from r1jax import pipelines
from r1jax import preflight
from r1jax.rl import loop as rl_loop


def _fail(prefix: str, msg) -> None:
  """One line on stderr, exit status 2."""
  import sys
  print(f"{prefix}{errors.one_line(msg)}", file=sys.stderr)
  sys.exit(2)


def _unknown_field(e: Exception, argv: list[str]) -> str:
  """The one-line message for config_flags' error on an unknown --config.* field."""
  while e.args and isinstance(e.args[0], BaseException):  # an AttributeError wrapping the KeyError
    e = e.args[0]
  text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
  first, _, hint = text.partition("\n")
  name = first.strip("\"' ")
  bad = [a for a in argv if a.split("=")[0].endswith("." + name)]
  field = (bad or [name])[0].split("=")[0].removeprefix("--config.")
  hint = f" ({hint.strip()})" if hint.strip() else ""
  return (f"unknown config field {field!r}: no such field {name!r} in its section{hint}; "
          f"python {argv[0] if argv else 'EXPERIMENT'} --helpfull lists them")


def main(sweep=None, *, check=None, run_fn=None) -> None:
  """`__main__` of an experiment file: --config (this file, or `FILE:NAME` for a named config),
  --sweep_index. A config error (raised by `check` before `run_fn`, or without `check` by `run_fn`'s
  own `pipelines.run`, which checks everything before any work: `pipelines.prepare`) prints one line
  and exits with status 2 before anything is built; so does a `UserError` (a bad file, checkpoint or
  work directory found later: `error: ...`) and a run stopped on NaN/inf updates
  (`rl_loop.NonFiniteError`). Any other exception keeps its traceback."""
  import sys
  from absl import app, flags
  from ml_collections import config_flags
  # JAX takes 75% of a GPU's memory by default; an experiment plans its memory against what the
  # device really has, so it takes 95% (set XLA_PYTHON_CLIENT_MEM_FRACTION yourself to change it).
  # Before jax touches a device: nothing has yet.
  os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")
  run_fn = run_fn or pipelines.run_r1_zero

  try:  # config_flags reads the --config.* overrides here already
    config_flags.DEFINE_config_file("config", sys.modules["__main__"].__file__,
                                    "experiment config: FILE or FILE:NAME", lock_config=False)
  except (AttributeError, KeyError) as e:
    _fail("config error: ", _unknown_field(e, sys.argv))
  flags.DEFINE_integer("sweep_index", -1, "apply sweep()[i] on top of the config")

  def _main(argv):
    if len(argv) > 1:
      _fail("config error: ", f"unexpected arguments {argv[1:]}; settings are flags: --config.SECTION.FIELD=VALUE")
    try:
      cfg = with_sweep(flags.FLAGS.config, sweep() if sweep else [], flags.FLAGS.sweep_index)
      if cfg.get("distributed", False):  # before validation counts the devices of every process
        distributed.initialize()
      if check is not None:  # an entry point whose run_fn does not run pipelines.run
        preflight.check_before_work(cfg, check(cfg))
    except errors.UserError as e:
      _fail(e.prefix, e)
    except (ValueError, FileNotFoundError) as e:
      _fail("config error: ", e)
    try:
      run_fn(cfg)
    except errors.UserError as e:
      _fail(e.prefix, e)
    except rl_loop.NonFiniteError as e:  # training diverged: the message names the knob and the last checkpoint
      _fail("error: training diverged: ", e)

  def parse(argv):  # a bad --config.x=value or an unknown config name: one line, status 2
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      lines = [l for l in str(e).splitlines() if l.strip() and not l.startswith(("Traceback", "  "))]
      _fail("config error: ", lines[-1] if lines else type(e).__name__)

  app.run(_main, flags_parser=parse)


def with_sweep(cfg: ml_collections.ConfigDict, sweep: list[dict], index: int) -> ml_collections.ConfigDict:
  """`cfg` with the dotted overrides of sweep[index] applied (index -1: unchanged)."""
  if index < 0:
    return cfg
  if index >= len(sweep):
    raise ValueError(f"sweep_index={index} but the sweep has {len(sweep)} entries")
  return config_sections.apply_overrides(cfg, sweep[index], f"sweep entry {index}")


def load_experiment(path):
  """An experiment file (experiments/NAME.py) as a module, to build on its configs and sweeps."""
  import importlib.util
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f"{path.stem}_experiment", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod
