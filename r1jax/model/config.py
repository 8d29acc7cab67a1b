"""The decoder's configuration and the parameters it defines.

`ModelConfig` holds the architecture (sizes, RoPE, biases and norms of the Qwen2 / Qwen3 / Llama
family) and the numerics of the computation; the parameter tree follows from it: its shapes, the
logical axis names that place it on a mesh, and its random initialization, materialized directly
in its shardings (`init_sharded`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

Params = dict[str, Any]


ROPE_KINDS = ("llama3", "linear", "yarn", "dynamic")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """RoPE frequency scaling as Hugging Face `rope_scaling` / `rope_parameters` define it."""
  kind: str = "llama3"
  """'llama3' (Llama 3.1), 'linear' (position interpolation), 'yarn' (Qwen3 long context), or
  'dynamic' (NTK-aware base rescaled once a sequence outgrows original_max_position)."""
  factor: float = 8.0
  low_freq_factor: float = 1.0
  """llama3 only."""
  high_freq_factor: float = 4.0
  """llama3 only."""
  original_max_position: int = 8192
  """Context length of pretraining (llama3, yarn; dynamic: HF's max_position_embeddings)."""
  beta_fast: float = 32.0
  """yarn: rotations bounding the extrapolated (unscaled) high frequencies."""
  beta_slow: float = 1.0
  """yarn: rotations bounding the interpolated (scaled) low frequencies."""
  mscale: float = 0.0
  """yarn: with mscale_all_dim, sets the attention factor (DeepSeek form); 0 = unset."""
  mscale_all_dim: float = 0.0
  attention_factor: float = 0.0
  """yarn: scale of cos / sin; 0 = derived (0.1 ln(factor) + 1, or the mscale ratio)."""
  truncate: bool = True
  """yarn: round the correction range to whole dimensions."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture and numerics of the decoder."""
  vocab_size: int = 512
  d_model: int = 64
  n_layers: int = 2
  n_heads: int = 4
  n_kv_heads: int = 2
  head_dim: int = 16
  d_ff: int = 128
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  rms_eps: float = 1e-6
  qkv_bias: bool = False
  """Qwen2 has biases on q/k/v projections; Llama and Qwen3 do not."""
  qk_norm: bool = False
  """Qwen3: RMSNorm over head_dim of each query and key head, before RoPE."""
  tie_embeddings: bool = False
  """Output projection reuses the input embedding (Qwen2.5 up to 3B)."""
  max_seq_len: int = 4096
  dtype: str = "float32"
  """Compute dtype of activations and matmuls: 'float32' or 'bfloat16'."""
  param_dtype: str = "float32"
  """Storage dtype of the parameters: 'float32' or 'bfloat16'."""
  remat: str = "none"
  """Rematerialization per layer: 'none', 'full' (save nothing), 'dots' (save matmul outputs)."""
  attention_impl: str = "auto"
  """Training/prefill attention kernel of `jax.nn.dot_product_attention`: 'xla', 'cudnn' or
  'auto' (cuDNN on GPU in 16-bit compute, XLA elsewhere). Decoding against the cache is XLA."""
  decode_attention: str = "auto"
  """Attention of one new token over the KV cache: 'xla' (batched matmuls), 'pallas' (jax's fused
  split-K flash-decoding kernel, `jax.experimental.pallas.ops.gpu.decode_attention`; GPU, or
  interpreted elsewhere), or 'auto' (pallas on GPU for bf16 compute and a power-of-two head_dim,
  xla elsewhere)."""
  decode_kv_splits: int = 0
  """Programs per (row, kv head) along the cache in the Pallas decode kernel, each streaming an
  equal share of it: 0 = one per `attention.DECODE_BLOCK` positions; otherwise the largest count <= this
  that divides the cache into whole blocks (fewer, longer programs write fewer partial results).
  Measured on an H200, 0.5B at 128 rows: 0 / 1 / 2 within 2% of each other (BENCHMARKS.md)."""
  unroll_decode: bool = True
  """Decode with one KV-cache buffer (and one weight slice) per layer and the layers unrolled,
  instead of a stacked cache sliced inside the layer scan: each layer's attention then reads its
  buffer in place, where the scan's per-layer slice is copied in every step (measured on an H200:
  a read and write of the whole cache per decode step). Compile time grows with depth."""
  decode_split_k: int = 0
  """Decode projections (one new token per row, q/k/v, o, gate/up, down) as split-K matmuls: each
  h @ W the float32 sum of products over slices of its contracted dimension, so that few rows still
  give the GPU many output tiles (`r1jax.model.decode_gemm`). 0 or 1: one plain matmul; 'xla' takes
  per projection the largest divisor of the contracted dimension <= this, 'pallas' up to this many
  slices of whole BK chunks, spread as evenly as they go."""
  decode_gemm: str = "xla"
  """The decode projections' matmul: 'xla' (a plain einsum, or with decode_split_k > 1 a batched
  matmul over the slices) or 'pallas' (`decode_gemm.pallas_matmul`, a Triton split-K kernel for
  few rows; GPU, or interpreted elsewhere; the 'xla' split under a mesh of several devices)."""
  decode_write_first: bool = False
  """Decode with one cache buffer per layer (unroll_decode) through the Pallas kernel: write each
  layer's new key/value into its buffer before attention, so that the kernel's window covers the
  new token and the kernel normalizes its own output, instead of merging the token into the
  kernel's softmax statistics afterwards (a handful of small ops a layer). Ignored otherwise, and
  by `sampling_state.decode_step` (the tree search's step keeps the merge)."""
  logits_chunk: int = 8192
  """Tokens (rows x positions) per chunk when computing log-probabilities from hidden states:
  the B x T x V logits are never materialized whole, only B x (logits_chunk // B) x V at a time."""
  logprob_impl: str = "chunked"
  """Log-probs of targets from hidden states: 'chunked' (position chunks of the full vocabulary,
  autodiff through a rematerialized chunk) or 'fused' (`r1jax.model.logprob`: tiles over positions and
  vocabulary with an online log-sum-exp and a custom backward; the largest temporary is one
  B x (logits_chunk // B) x vocab_chunk tile)."""
  vocab_chunk: int = 16384
  """Vocabulary entries per tile of the 'fused' log-prob head."""

  def __post_init__(self):
    _check(self, "dtype", self.dtype, ("float32", "bfloat16"))
    _check(self, "param_dtype", self.param_dtype, ("float32", "bfloat16"))
    _check(self, "remat", self.remat, ("none", "full", "dots"))
    _check(self, "attention_impl", self.attention_impl, ("xla", "cudnn", "auto"))
    _check(self, "decode_attention", self.decode_attention, ("xla", "pallas", "auto"))
    _check(self, "logprob_impl", self.logprob_impl, ("chunked", "fused"))
    _check(self, "decode_gemm", self.decode_gemm, ("xla", "pallas"))
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                 "max_seq_len", "logits_chunk", "vocab_chunk"):
      if getattr(self, name) < 1:
        raise ValueError(f"model.{name}={getattr(self, name)} must be >= 1")
    if self.decode_split_k < 0:
      raise ValueError(f"model.decode_split_k={self.decode_split_k} must be >= 0 (0: no split)")
    if self.decode_kv_splits < 0:
      raise ValueError(f"model.decode_kv_splits={self.decode_kv_splits} must be >= 0 (0: one per cache block)")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f"model.n_heads={self.n_heads} must be a multiple of model.n_kv_heads={self.n_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"model.head_dim={self.head_dim} must be even for RoPE")
    if self.rope_scaling is not None:
      _check(self, "rope_scaling.kind", self.rope_scaling.kind, ROPE_KINDS)

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  def num_params(self) -> int:
    p = abstract_params(self)
    return sum(math.prod(x.shape) for x in jax.tree.leaves(p))


def _check(cfg, field, value, allowed):
  if value not in allowed:
    raise ValueError(f"model.{field}={value!r} is not one of {allowed}")


# ----------------------------------------------------------------------------- parameters


def param_axes(cfg: ModelConfig) -> Params:
  """Logical axis names of every parameter (same tree as `init_params`)."""
  layers = {
      "attn_norm": ("layers", "norm"),
      "wq": ("layers", "embed", "q_heads", "head_dim"),
      "wk": ("layers", "embed", "kv_heads", "head_dim"),
      "wv": ("layers", "embed", "kv_heads", "head_dim"),
      "wo": ("layers", "q_heads", "head_dim", "embed"),
      "mlp_norm": ("layers", "norm"),
      "w_gate": ("layers", "embed", "mlp"),
      "w_up": ("layers", "embed", "mlp"),
      "w_down": ("layers", "mlp", "embed"),
  }
  if cfg.qkv_bias:
    layers |= {"bq": ("layers", "q_heads", "head_dim"), "bk": ("layers", "kv_heads", "head_dim"),
               "bv": ("layers", "kv_heads", "head_dim")}
  if cfg.qk_norm:
    layers |= {"q_norm": ("layers", "head_dim"), "k_norm": ("layers", "head_dim")}
  axes = {"embed": ("vocab", "embed"), "layers": layers, "final_norm": ("norm",)}
  if not cfg.tie_embeddings:
    axes["lm_head"] = ("embed", "vocab")
  return axes


def param_shapes(cfg: ModelConfig) -> Params:
  L, D, N, K, H, F, V = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff,
                         cfg.vocab_size)
  layers = {
      "attn_norm": (L, D), "wq": (L, D, N, H), "wk": (L, D, K, H), "wv": (L, D, K, H),
      "wo": (L, N, H, D), "mlp_norm": (L, D), "w_gate": (L, D, F), "w_up": (L, D, F), "w_down": (L, F, D),
  }
  if cfg.qkv_bias:
    layers |= {"bq": (L, N, H), "bk": (L, K, H), "bv": (L, K, H)}
  if cfg.qk_norm:
    layers |= {"q_norm": (L, H), "k_norm": (L, H)}
  shapes = {"embed": (V, D), "layers": layers, "final_norm": (D,)}
  if not cfg.tie_embeddings:
    shapes["lm_head"] = (D, V)
  return shapes


def init_params(key: jax.Array, cfg: ModelConfig, std: float = 0.02) -> Params:
  """Random parameters: normal(std) matrices, unit norms, zero biases. Pure, so it can be
  traced abstractly and materialized sharded with `jax.jit(..., out_shardings=...)`."""
  shapes = param_shapes(cfg)
  flat, treedef = jax.tree.flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(key, len(flat))
  dtype = jnp.dtype(cfg.param_dtype)
  leaves = []
  for k, (path, shape) in zip(keys, flat):
    name = path[-1].key
    if name.endswith("norm"):
      leaves.append(jnp.ones(shape, dtype))
    elif name in ("bq", "bk", "bv"):
      leaves.append(jnp.zeros(shape, dtype))
    else:
      leaves.append((std * jax.random.normal(k, shape, jnp.float32)).astype(dtype))
  return jax.tree.unflatten(treedef, leaves)


def abstract_params(cfg: ModelConfig) -> Params:
  return jax.eval_shape(lambda: init_params(jax.random.key(0), cfg))


def param_shardings(cfg: ModelConfig, mesh, rules=None) -> Params:
  from r1jax import sharding
  return sharding.tree_shardings(param_axes(cfg), abstract_params(cfg), mesh,
                                 rules or sharding.DEFAULT_RULES)


def init_sharded(key: jax.Array, cfg: ModelConfig, mesh, rules=None) -> Params:
  """Materialize parameters directly in their shardings; nothing is built whole on one device."""
  shardings = param_shardings(cfg, mesh, rules)
  return jax.jit(lambda k: init_params(k, cfg), out_shardings=shardings)(key)
