"""The one table that maps logical axis names onto the device mesh.

Model code names logical axes only (`("batch", "length", "act_embed")`, `("embed", "mlp")`);
this module turns them into `PartitionSpec`s for a mesh with axes data / fsdp / tensor.
A mesh axis is dropped from a dimension it does not divide (e.g. 2 kv heads on tensor=4),
so every preset runs on every mesh; the dimension is then replicated over that axis.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes (tuple, tried in order) or None (replicated).
# Activations are placed alike under every table (rows over data x fsdp, heads / mlp / vocab over
# tensor), so `constrain` in model code needs no table; the tables differ in where parameters and
# with them the optimizer state live.
_ACTIVATION_RULES: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", ("tensor",)),
    ("act_kv_heads", ("tensor",)),
    ("act_mlp", ("tensor",)),
    ("act_vocab", ("tensor",)),
    ("cache_length", None),
)
_UNSHARDED_PARAMS = (("head_dim", None), ("layers", None), ("norm", None))


def _param_rules(embed, heads_mlp_vocab):
  return ((("vocab", heads_mlp_vocab), ("embed", embed), ("q_heads", heads_mlp_vocab),
           ("kv_heads", heads_mlp_vocab), ("mlp", heads_mlp_vocab)) + _UNSHARDED_PARAMS)


RULES: dict[str, tuple[tuple[str, tuple[str, ...] | None], ...]] = {
    # ZeRO-3 style: the model dimension over fsdp (XLA all-gathers each weight where it is
    # used), heads / mlp / vocab over tensor.
    "fsdp": _ACTIVATION_RULES + _param_rules(("fsdp",), ("tensor",)),
    # Pure data parallel: every device holds all parameters and optimizer state.
    "data": _ACTIVATION_RULES + _param_rules(None, None),
    # Megatron style: heads / mlp / vocab over tensor, replicated over data and fsdp (no
    # per-layer gathers; the sampler's decode reads only its own shard of every weight).
    "tensor": _ACTIVATION_RULES + _param_rules(None, ("tensor",)),
}
DEFAULT_RULES = RULES["fsdp"]


def rules_table(name: str):
  """The rules table called `name` (`mesh.rules`)."""
  if name not in RULES:
    raise ValueError(f"mesh.rules={name!r} is not one of {tuple(RULES)}")
  return RULES[name]


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh shape and the rules table placing parameters on it."""
  data: int = 1
  fsdp: int = -1
  """-1 in one axis takes all remaining devices."""
  tensor: int = 1
  rules: str = "fsdp"
  """Parameter placement, a table of `RULES`: 'fsdp' (sharded over fsdp and tensor), 'data'
  (replicated: pure data parallel), 'tensor' (sharded over tensor only)."""

  def __post_init__(self):
    rules_table(self.rules)

  def shape(self, num_devices: int) -> tuple[int, int, int]:
    dims = [self.data, self.fsdp, self.tensor]
    given = ", ".join(f"mesh.{n}={d}" for n, d in zip(MESH_AXES, dims))
    for name, d in zip(MESH_AXES, dims):
      if d == 0 or d < -1:
        raise ValueError(f"mesh.{name}={d} is invalid: use a positive size or -1 (all remaining devices)")
    if dims.count(-1) > 1:
      raise ValueError(f"{given}: at most one axis may be -1")
    known = int(np.prod([d for d in dims if d != -1]))
    if -1 in dims:
      if num_devices % known:
        raise ValueError(f"{given}: {num_devices} devices are not divisible by {known}")
      dims[dims.index(-1)] = num_devices // known
    if int(np.prod(dims)) != num_devices:
      raise ValueError(f"{given} needs {int(np.prod(dims))} devices, but {num_devices} are available; the sizes "
                       f"must multiply to {num_devices} (or set one axis to -1: all remaining devices)")
    return tuple(dims)

  def batch_shards(self, num_devices: int) -> int:
    """How many ways a batch's rows split on this mesh of `num_devices`: the data x fsdp size."""
    data, fsdp, _ = self.shape(num_devices)
    return data * fsdp


def batch_shards(mesh: Mesh) -> int:
  """How many ways a batch's rows split on `mesh`: the data x fsdp size."""
  return mesh.shape["data"] * mesh.shape["fsdp"]


def make_mesh(cfg: MeshConfig | Sequence[int] = MeshConfig(), devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all, of every process)."""
  devices = list(jax.devices() if devices is None else devices)
  if not isinstance(cfg, MeshConfig):
    cfg = MeshConfig(*cfg)
  shape = cfg.shape(len(devices))
  return Mesh(np.array(devices).reshape(shape), MESH_AXES)


def _axis_sizes(mesh) -> dict[str, int]:
  return dict(zip(mesh.axis_names, mesh.axis_sizes)) if hasattr(mesh, "axis_sizes") else dict(mesh.shape)


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int] | None = None, mesh=None,
                    rules=DEFAULT_RULES) -> P:
  """PartitionSpec for one array whose dimensions carry logical names `axes`.

  With `shape` and `mesh`, a mesh axis that does not divide its dimension is dropped.
  A mesh axis is used at most once per array.
  """
  table = dict(rules)
  sizes = _axis_sizes(mesh) if mesh is not None else {}
  used: set[str] = set()
  spec = []
  for i, name in enumerate(axes):
    if name is not None and name not in table:
      raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(table)}")
    mesh_axes = [] if name is None or table[name] is None else list(table[name])
    chosen, size = [], 1
    for ax in mesh_axes:
      if ax in used or (mesh is not None and ax not in sizes):
        continue
      n = sizes.get(ax, 1)
      if shape is not None and mesh is not None and shape[i] % (size * n):
        continue
      chosen.append(ax)
      size *= n
    used.update(chosen)
    spec.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
  return P(*spec)


def tree_shardings(axes_tree: Any, shapes_tree: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
  """NamedShardings for a pytree of logical-axes tuples and matching shapes (arrays or ShapeDtypeStructs)."""
  is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)
  return jax.tree.map(
      lambda axes, s: NamedSharding(mesh, logical_to_spec(axes, s.shape, mesh, rules)),
      axes_tree, shapes_tree, is_leaf=is_axes)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Sharding constraint on an activation by logical names; a no-op outside `jax.set_mesh`."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, x.shape, mesh))


def batch_sharding(mesh) -> NamedSharding:
  """Rows of a batch are split over the data and fsdp mesh axes."""
  return NamedSharding(mesh, P(("data", "fsdp")))
