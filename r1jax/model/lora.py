"""LoRA: low-rank adapters on the attention and MLP projections, the base frozen.

A projection x @ W of an adapted target becomes x @ W + (x @ A) @ (s B), s = alpha / rank, with
A: W's input dims x r and B: r x W's output dims (as peft's `LoraConfig` / qwix's `LoraProvider`:
A random, B zero, so training starts at the base). The adapters are a small pytree of their own
({'layers': {'wq_lora_a': L x D x r, 'wq_lora_b': L x r x N x H, ...}}): it is what the optimizer
updates and what a checkpoint holds (`TrainState.params`); the base rides beside it in
`TrainState.frozen`, never updated nor checkpointed (read from the policy at start). `combine`
hands the model the base's tree with the adapters added under those keys; `model._block` applies
them inside each projection, so training never materializes W + s A B. The sampler does, once per
generate call (`merge_combined`, `SamplingConfig.merge_lora`), so that decoding runs one matmul per
projection and token rather than three. The reference policy of GRPO's KL is the base alone:
adapters off, no second copy of the weights. `merge` folds the adapters into W once, for the saved
policy and its Hugging Face export.

The base may be stored in bfloat16 or int8 (`base_dtype`): int8 is per-output-channel weight-only
quantization of the projection matrices (`quantize`): an int8 W and a float32 scale per output
channel under '<name>_qscale', dequantized in the matmul (x @ W_int8 * scale).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

TARGETS = {"q": "wq", "k": "wk", "v": "wv", "o": "wo", "gate": "w_gate", "up": "w_up", "down": "w_down"}
"""Target names (peft's q_proj ... down_proj) -> the projection's parameter in `model.param_shapes`."""
IN_DIMS = {"wq": 1, "wk": 1, "wv": 1, "wo": 2, "w_gate": 1, "w_up": 1, "w_down": 1}
"""Input (contracted) dimensions of each projection, after the leading layer axis."""
BASE_DTYPES = ("params", "bfloat16", "int8")


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
  """Low-rank adapters (`r1jax.model.lora`); rank 0 is full fine-tuning."""
  rank: int = 0
  """r of every adapter; 0 = off (full fine-tuning)."""
  alpha: float = 16.0
  """The adapter's output is scaled by alpha / rank (peft's lora_alpha)."""
  targets: str = "q,k,v,o,gate,up,down"
  """Comma-separated projections to adapt, of q, k, v, o, gate, up, down."""
  base_dtype: str = "params"
  """Storage of the frozen base: 'params' (model.param_dtype), 'bfloat16', or 'int8' (per-channel
  weight-only quantization of the projections; embeddings and norms stay in model.param_dtype)."""
  learning_rate: float = 0.0
  """optim.learning_rate while LoRA is on; 0 = optim.learning_rate. (LoRA's best rate is ~10x full
  fine-tuning's: Schulman et al., "LoRA Without Regret", 2025.)"""
  mode: str = "on"
  """With rank > 0: 'on' (always LoRA) or 'auto' (the memory planner plans full fine-tuning first
  and adapts at this rank only when no full fine-tuning setting fits the device)."""

  def __post_init__(self):
    if self.rank < 0:
      raise ValueError(f"lora.rank={self.rank} must be >= 0 (0: off, full fine-tuning)")
    if not self.alpha > 0:
      raise ValueError(f"lora.alpha={self.alpha} must be > 0")
    names = [t.strip() for t in self.targets.split(",") if t.strip()]
    bad = [t for t in names if t not in TARGETS]
    if bad or not names:
      raise ValueError(f"lora.targets={self.targets!r}: {bad[0] if bad else 'none'} is not a projection; "
                       f"give a comma-separated subset of {','.join(TARGETS)}")
    if self.learning_rate < 0:
      raise ValueError(f"lora.learning_rate={self.learning_rate} must be >= 0 (0: optim.learning_rate)")
    if self.base_dtype not in BASE_DTYPES:
      raise ValueError(f"lora.base_dtype={self.base_dtype!r} is not one of {BASE_DTYPES}")
    if self.mode not in ("on", "auto"):
      raise ValueError(f"lora.mode={self.mode!r} is not one of ('on', 'auto')")

  @property
  def enabled(self) -> bool:
    return self.rank > 0

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def weights(self) -> tuple[str, ...]:
    """The adapted parameters' names, in model order."""
    names = {TARGETS[t.strip()] for t in self.targets.split(",") if t.strip()}
    return tuple(w for w in IN_DIMS if w in names)


def adapter_shapes(model_cfg, lcfg: LoRAConfig) -> dict:
  from r1jax.model import config as model_config
  layers = model_config.param_shapes(model_cfg)["layers"]
  out = {}
  for w in lcfg.weights():
    shape, k = layers[w], IN_DIMS[w] + 1
    out[f"{w}_lora_a"] = shape[:k] + (lcfg.rank,)
    out[f"{w}_lora_b"] = (shape[0], lcfg.rank) + shape[k:]
  return {"layers": out}


def init_adapters(key: jax.Array, model_cfg, lcfg: LoRAConfig) -> dict:
  """A ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (peft's kaiming-uniform, a = sqrt(5)), B = 0; float32."""
  shapes = adapter_shapes(model_cfg, lcfg)["layers"]
  out = {}
  for i, w in enumerate(lcfg.weights()):
    a_shape = shapes[f"{w}_lora_a"]
    fan_in = 1
    for d in a_shape[1:-1]:
      fan_in *= d
    bound = fan_in ** -0.5
    out[f"{w}_lora_a"] = jax.random.uniform(jax.random.fold_in(key, i), a_shape, jnp.float32, -bound, bound)
    out[f"{w}_lora_b"] = jnp.zeros(shapes[f"{w}_lora_b"], jnp.float32)
  return {"layers": out}


def _spec(x) -> tuple | None:
  sh = getattr(x, "sharding", None)
  if not isinstance(sh, NamedSharding):
    return None
  return tuple(sh.spec) + (None,) * (len(x.shape) - len(sh.spec))


def adapter_shardings(params: dict, lcfg: LoRAConfig) -> dict | None:
  """Placement of the adapters from their base weights' (arrays or ShapeDtypeStructs): A sharded
  like its W's input dims, B like W's output dims, the rank replicated. None when unsharded."""
  out = {}
  for w in lcfg.weights():
    x, k = params["layers"][w], IN_DIMS[w] + 1
    spec = _spec(x)
    if spec is None:
      return None
    mesh = x.sharding.mesh
    out[f"{w}_lora_a"] = NamedSharding(mesh, P(*spec[:k], None))
    out[f"{w}_lora_b"] = NamedSharding(mesh, P(spec[0], None, *spec[k:]))
  return {"layers": out}


def _frozen_shardings(params: dict, lcfg: LoRAConfig):
  """The stored base's placement: the params', and an int8 scale like its W's output dims."""
  if any(_spec(x) is None for x in jax.tree.leaves(params)):
    return None
  out = jax.tree.map(lambda x: x.sharding, params)
  if lcfg.base_dtype == "int8":
    layers = dict(out["layers"])
    for name, k in IN_DIMS.items():
      spec = _spec(params["layers"][name])
      layers[f"{name}_qscale"] = NamedSharding(layers[name].mesh, P(spec[0], *spec[k + 1:]))
    out = dict(out, layers=layers)
  return out


def merged(state) -> dict:
  """The full parameters of a `TrainState`: its params, or with LoRA W + s A B (`merge`)."""
  if state.frozen is None:
    return state.params
  kept = dict(state.frozen, layers={k: v for k, v in state.frozen["layers"].items() if not k.endswith("_qscale")})
  shardings = None if any(_spec(x) is None for x in jax.tree.leaves(kept)) else jax.tree.map(lambda x: x.sharding, kept)
  return jax.jit(merge, static_argnums=2, out_shardings=shardings)(state.frozen, state.params, state.lora_scale)


def combine(base: dict, adapters: dict, scale: float) -> dict:
  """The tree the model runs: the base's, each adapted layer carrying its A and s B."""
  scaled = lambda v: v if isinstance(v, jax.ShapeDtypeStruct) else v * scale  # (the memory planner's shapes)
  extra = {k: scaled(v) if k.endswith("_lora_b") else v for k, v in adapters["layers"].items()}
  return dict(base, layers=dict(base["layers"]) | extra)


# ----------------------------------------------------------------------------- the frozen base


def quantize(w: jax.Array, in_dims: int, dtype=jnp.int8) -> tuple[jax.Array, jax.Array]:
  """Symmetric per-output-channel 8-bit copy of a stacked projection L x in... x out...: (W_q in
  `dtype`, scale of shape L x out..., float32) with W ~= W_q * scale; the scale is max|W| over the
  input dims / the format's largest value. int8: 127, W / scale rounded to the nearest integer;
  float8_e4m3fn: 448, rounded to the nearest of its values (3 mantissa bits) by the conversion."""
  dtype = jnp.dtype(dtype)
  integer = jnp.issubdtype(dtype, jnp.integer)
  qmax = float(jnp.iinfo(dtype).max if integer else jnp.finfo(dtype).max)
  axes = tuple(range(1, 1 + in_dims))
  w32 = w.astype(jnp.float32)
  scale = jnp.max(jnp.abs(w32), axis=axes) / qmax
  scale = jnp.where(scale > 0, scale, 1.0)
  y = w32 / jnp.expand_dims(scale, axes)
  q = jnp.clip(jnp.round(y) if integer else y, -qmax, qmax).astype(dtype)
  return q, scale


def dequantize(layers: dict, name: str) -> jax.Array:
  """A projection as float32 (W_q * scale when quantized, int8 or float8)."""
  w = layers[name]
  if f"{name}_qscale" not in layers:
    return w.astype(jnp.float32)
  axes = tuple(range(1, 1 + IN_DIMS[name]))
  return w.astype(jnp.float32) * jnp.expand_dims(layers[f"{name}_qscale"], axes)


def frozen_base(params: dict, lcfg: LoRAConfig) -> dict:
  """The base as the run stores it (`lora.base_dtype`); jit it with the sharded params donated."""
  if lcfg.base_dtype == "params":
    return params
  if lcfg.base_dtype == "bfloat16":
    return jax.tree.map(lambda a: a.astype(jnp.bfloat16) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)
  layers = dict(params["layers"])
  for name, k in IN_DIMS.items():
    layers[name], layers[f"{name}_qscale"] = quantize(layers[name], k)
  return dict(params, layers=layers)


def merge(base: dict, adapters: dict, scale: float) -> dict:
  """Full parameters W + s A B (a dequantized int8 base), in the base's float dtype (int8: float32
  ... or the dtype of the embedding); for saving and Hugging Face export."""
  dtype = base["embed"].dtype
  layers = {k: v for k, v in base["layers"].items() if not k.endswith("_qscale")}
  for name in IN_DIMS:
    w = dequantize(base["layers"], name)
    if f"{name}_lora_a" in adapters["layers"]:
      w = w + scale * _low_rank(adapters["layers"], name)
    layers[name] = w.astype(dtype)
  return dict(base, layers=layers)


def merge_combined(params: dict, dtype) -> dict:
  """The tree `combine` hands the model with each adapted float projection merged: W + A (sB) (B is
  already scaled there), computed in float32, cast to `dtype`, its adapter keys dropped; no adapters:
  `params` itself. The sampler decodes with it (`SamplingConfig.merge_lora`): one matmul per
  projection and token instead of three. An int8 projection (`<name>_qscale`) keeps its adapters:
  merged, it would be stored in `dtype`, at least twice its bytes."""
  layers = params["layers"]
  names = [n for n in IN_DIMS if f"{n}_lora_a" in layers and f"{n}_qscale" not in layers]
  if not names:
    return params
  merged = {f"{n}_lora_{x}" for n in names for x in "ab"}
  out = {k: v for k, v in layers.items() if k not in merged}
  for name in names:
    out[name] = (layers[name].astype(jnp.float32) + _low_rank(layers, name)).astype(dtype)
  return dict(params, layers=out)


def _low_rank(layers: dict, name: str) -> jax.Array:
  """A B of projection `name` in float32, shaped as its W (L x in... x out...)."""
  a, b = layers[f"{name}_lora_a"], layers[f"{name}_lora_b"]
  in_letters, out_letters = "dn"[:IN_DIMS[name]], "fgh"[:b.ndim - 2]
  return jnp.einsum(f"l{in_letters}r,lr{out_letters}->l{in_letters}{out_letters}",
                    a.astype(jnp.float32), b.astype(jnp.float32))


def param_bytes(tree: Any) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
