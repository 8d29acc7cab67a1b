"""Several processes, one mesh: `jax.distributed` start-up and global batches from host-local rows.

The same code path serves a TPU pod (one process per host, topology from the metadata server), a
GPU cluster (one process per GPU or per host) and several GPUs of one host started by
`tpu_scripts/launch_local_gpus.sh`, which passes the coordinator and the process's place through
environment variables:

  R1JAX_COORDINATOR_ADDRESS  host:port of process 0's coordinator (e.g. 127.0.0.1:12355)
  R1JAX_NUM_PROCESSES        how many processes form the run
  R1JAX_PROCESS_ID           this process's index, 0 .. R1JAX_NUM_PROCESSES - 1

Without them `jax.distributed.initialize()` detects the cluster itself (TPU, SLURM, Open MPI).
Every process then sees every device in `jax.devices()`; `sharding.make_mesh` spans them all.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from r1jax import sharding

ENV_COORDINATOR = "R1JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "R1JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "R1JAX_PROCESS_ID"


def _env_int(name: str, env) -> int:
  value = env.get(name, "")
  if not value.strip().isdigit():
    raise ValueError(f"{name}={value!r} must be a non-negative integer (required with {ENV_COORDINATOR})")
  return int(value)


def process_args(env=None) -> dict[str, Any]:
  """`jax.distributed.initialize` arguments from the R1JAX_* variables; {} when none is set."""
  env = os.environ if env is None else env
  if not env.get(ENV_COORDINATOR):
    return {}
  n, i = _env_int(ENV_NUM_PROCESSES, env), _env_int(ENV_PROCESS_ID, env)
  if not 0 <= i < n:
    raise ValueError(f"{ENV_PROCESS_ID}={i} must lie in [0, {ENV_NUM_PROCESSES}={n})")
  return {"coordinator_address": env[ENV_COORDINATOR], "num_processes": n, "process_id": i}


def initialize(env=None, timeout_s: int = 300) -> None:
  """Join the run's processes. Call before anything touches a JAX device (even
  `jax.device_count()`): the backends are created once, with or without the other processes."""
  if jax.distributed.is_initialized():
    return
  args = process_args(env)
  # CPU processes exchange collectives through gloo (the stand-in for NCCL in CPU tests).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**args, initialization_timeout=timeout_s)


def to_host(tree: Any) -> Any:
  """NumPy copies of a pytree of arrays, whole on every process: arrays spread over other
  processes' devices are all-gathered (every process must call this, in the same order);
  everything else is `jax.device_get`."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return jax.device_get(x)
  return jax.tree.map(one, tree)


def process_rows(num_rows: int) -> slice:
  """The rows of a global batch of `num_rows` that this process supplies: an equal contiguous
  block per process, in process order (the order `make_mesh` lays devices out along data x fsdp)."""
  n, i = jax.process_count(), jax.process_index()
  if num_rows % n:
    raise ValueError(f"a batch of {num_rows} rows does not split over {n} processes")
  per = num_rows // n
  return slice(i * per, (i + 1) * per)


def process_batch(local: dict, mesh) -> dict:
  """Global batch arrays, rows over data x fsdp (as `train_step.shard_batch`), from this
  process's rows of every leaf of `local` (NumPy, rows first; `process_rows` says which).

  The global batch has `jax.process_count()` times the local rows; no process ever holds
  another's rows. With one process it equals `train_step.shard_batch(local, mesh)`.
  """
  def put(x):
    x = np.asarray(x)
    shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
    spec = sharding.logical_to_spec(("batch",) + (None,) * (x.ndim - 1), shape, mesh)
    return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), x, shape)
  return jax.tree.map(put, local)
