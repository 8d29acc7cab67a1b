"""Memory, measured before a run starts: what one device may use, what a compiled program needs
(XLA's memory analysis: arguments, outputs and temporaries), what a sharded tree holds per device;
and the disk a run writes.

The planners build on it: a GRPO run's (`memory_grpo.plan`: remat, grad_accum, LoRA) and a batch of
generation's (`memory_sampling.plan_sampling`: chunks, slots). A `DoesNotFitError` is a one-line
`UserError` (exit status 2, no traceback).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import errors
from r1jax.model import config as model_config
from r1jax.rl import step as train_step

GiB = 1024 ** 3
HEADROOM = 0.95
"""Fraction of the device limit a plan may use (allocator fragmentation)."""


class DoesNotFitError(errors.ConfigError):
  """Nothing the planner may choose fits the device: an entry point prints it as one line
  (`error: memory plan: ...`, naming the sizes and the knobs) and exits with status 2."""
  prefix = "error: memory plan: "


@dataclasses.dataclass(frozen=True)
class Phase:
  """One compiled program's memory (bytes, per device) from `compiled.memory_analysis()`."""
  name: str
  arguments: int
  outputs: int
  aliased: int
  temporaries: int

  @property
  def peak(self) -> int:
    """Live at once: its inputs, its temporaries and its non-donated outputs."""
    return self.arguments + self.temporaries + self.outputs - self.aliased


def per_device_bytes(tree) -> int:
  """Bytes one device holds of `tree` (arrays or ShapeDtypeStructs with shardings)."""
  return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def host_available_bytes() -> int | None:
  """The host's memory available to a new allocation now (Linux `MemAvailable`), or None."""
  try:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def device_limit_bytes(device=None) -> int | None:
  """What one device may use: the allocator's limit (GPU / TPU); on CPU, where the devices share
  the host's memory, the host's available memory split evenly over this process's CPU devices."""
  device = device or jax.devices()[0]
  if device.platform == "cpu":
    host = host_available_bytes()
    return None if host is None else host // max(jax.local_device_count("cpu"), 1)
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 - backends without memory stats
    return None
  return int(stats["bytes_limit"]) if stats and "bytes_limit" in stats else None


def phase(name: str, compiled) -> Phase:
  """A compiled program's memory (XLA's analysis: arguments, outputs, aliased, temporaries)."""
  m = compiled.memory_analysis()
  return Phase(name, int(m.argument_size_in_bytes), int(m.output_size_in_bytes), int(m.alias_size_in_bytes),
               int(m.temp_size_in_bytes))


# ----------------------------------------------------------------------------- disk


def tree_bytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def disk_need(model_cfg, ocfg, with_ref: bool, rl_steps: Sequence[int], save_every: int, keep: int,
              policies: int = 2, sft_runs: int = 0, lora=None) -> dict:
  """Bytes a run writes at most: per RL run, the checkpoints on disk at once (up to `keep` plus
  the one being written) of its train state (parameters, AdamW moments, reference); per SFT run
  one checkpoint without the reference; and `policies` parameter copies (policy directories and
  Hugging Face exports). With `lora` (a LoRAConfig of rank > 0) an RL checkpoint holds the adapters
  and their moments only (the frozen base is the reference and is not written); policies are
  merged, whole. Shapes only: nothing is allocated."""
  params = model_config.abstract_params(model_cfg)
  p = tree_bytes(params)
  optimizer = train_step.make_optimizer(ocfg)
  opt = tree_bytes(jax.eval_shape(optimizer.init, params))
  state = p + opt + (p if with_ref else 0)
  if lora is not None and lora.enabled:
    from r1jax.model import lora as lora_lib
    adapters = jax.eval_shape(lambda: lora_lib.init_adapters(jax.random.key(0), model_cfg, lora))
    state = tree_bytes(adapters) + tree_bytes(jax.eval_shape(optimizer.init, adapters))
  ckpts = [min(-(-steps // save_every), keep + 1) for steps in rl_steps]
  total = sum(ckpts) * state + sft_runs * (p + opt) + policies * p
  return {"bytes": total, "state_bytes": state, "params_bytes": p, "checkpoints": sum(ckpts)}


def check_disk(need: dict, directory, free_bytes: int | None = None) -> None:
  """ValueError (one line: sizes and knobs) when `need` exceeds the free space where `directory` is."""
  import pathlib
  import shutil
  d = pathlib.Path(directory).absolute()
  while not d.exists():
    d = d.parent
  free = shutil.disk_usage(d).free if free_bytes is None else free_bytes
  if need["bytes"] > free:
    raise ValueError(
        f"disk: {directory} has {free / GiB:.1f} GiB free, this run writes up to {need['bytes'] / GiB:.1f} GiB "
        f"({need['checkpoints']} checkpoints of the {need['state_bytes'] / GiB:.1f} GiB train state, policies "
        f"of {need['params_bytes'] / GiB:.1f} GiB): free space, put checkpoint.directory / workdir on a larger "
        f"disk, lower checkpoint.keep or raise checkpoint.save_every")
