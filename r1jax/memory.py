"""Memory, measured before a run starts: what one device may use, what a compiled program needs
(XLA's memory analysis: arguments, outputs and temporaries), what a sharded tree holds per device.

The planners build on it: a GRPO run's (`memory_grpo.plan`: remat, grad_accum, LoRA) and a batch of
generation's (`memory_sampling.plan_sampling`: chunks, slots). A `DoesNotFitError` is a one-line
`UserError` (exit status 2, no traceback). The disk a run writes is `preflight.disk_need`.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import errors

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
