"""A functional decoder of the Qwen2 / Qwen3 / Llama family.

RMSNorm, RoPE (Llama-3, linear, YaRN and dynamic NTK scaling), Qwen3 q/k norms, grouped-query attention, SwiGLU MLP, optional
q/k/v bias, tied or untied embeddings. Parameters are a plain pytree; layers are stacked on a
leading axis and run with `jax.lax.scan`, so compile time does not grow with depth.

Shape letters: B batch, T query length, S cached length, D d_model, N query heads,
K kv heads, G = N // K, H head_dim, F d_ff, V vocab, L layers.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from r1jax.model.attention import cached_attention, decode_attention_impl, pallas_cached_attention, self_attention
from r1jax.sharding import constrain

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
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                 "max_seq_len", "logits_chunk", "vocab_chunk"):
      if getattr(self, name) < 1:
        raise ValueError(f"model.{name}={getattr(self, name)} must be >= 1")
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


# ----------------------------------------------------------------------------- layers


def rms_norm(x, w, eps):
  """RMSNorm computed in float32, cast back (as Hugging Face Qwen2/Llama)."""
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return w.astype(x.dtype) * x32.astype(x.dtype)


def rope_inv_freq(cfg: ModelConfig, seq_len=None) -> jax.Array:
  """Inverse frequencies (H/2,) as Hugging Face's ROPE_INIT_FUNCTIONS compute them.

  `seq_len` (a traced scalar: the largest position + 1) matters only for 'dynamic', whose base
  grows once a sequence outgrows `original_max_position`.
  """
  H = cfg.head_dim
  exponents = jnp.arange(0, H, 2, dtype=jnp.float32) / H
  inv = 1.0 / (cfg.rope_theta ** exponents)
  rs = cfg.rope_scaling
  if rs is None:
    return inv
  if rs.kind == "linear":
    return inv / rs.factor
  if rs.kind == "dynamic":
    if seq_len is None:
      return inv
    L = jnp.maximum(jnp.asarray(seq_len, jnp.float32), rs.original_max_position)
    base = cfg.rope_theta * ((rs.factor * L / rs.original_max_position) - (rs.factor - 1)) ** (H / (H - 2))
    return 1.0 / (base ** exponents)
  if rs.kind == "yarn":
    def correction_dim(rotations):
      return H * math.log(rs.original_max_position / (rotations * 2 * math.pi)) / (2 * math.log(cfg.rope_theta))
    low, high = correction_dim(rs.beta_fast), correction_dim(rs.beta_slow)
    if rs.truncate:
      low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, H - 1)
    high = high + 0.001 if low == high else high
    ramp = jnp.clip((jnp.arange(H // 2, dtype=jnp.float32) - low) / (high - low), 0, 1)
    extrapolate = 1 - ramp  # 1: keep the frequency, 0: divide it by factor
    return inv / rs.factor * (1 - extrapolate) + inv * extrapolate
  # Llama 3.1: keep high frequencies, divide low ones by `factor`, interpolate between.
  low_wavelen = rs.original_max_position / rs.low_freq_factor
  high_wavelen = rs.original_max_position / rs.high_freq_factor
  wavelen = 2 * math.pi / inv
  scaled = jnp.where(wavelen > low_wavelen, inv / rs.factor, inv)
  smooth = (rs.original_max_position / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor)
  smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return jnp.where(medium, smoothed, scaled)


def rope_attention_factor(cfg: ModelConfig) -> float:
  """YaRN's scale of cos and sin (1 for every other kind)."""
  rs = cfg.rope_scaling
  if rs is None or rs.kind != "yarn":
    return 1.0
  if rs.attention_factor:
    return rs.attention_factor
  mscale = lambda scale, m=1.0: 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
  if rs.mscale and rs.mscale_all_dim:
    return mscale(rs.factor, rs.mscale) / mscale(rs.factor, rs.mscale_all_dim)
  return mscale(rs.factor)


def apply_rope(x_BxTxNxH, positions_BxT, inv_freq, scale: float = 1.0):
  """Rotary embedding in the 'rotate half' layout of Hugging Face checkpoints; `scale`
  multiplies cos and sin (YaRN's attention factor)."""
  freqs = positions_BxT.astype(jnp.float32)[..., None] * inv_freq  # B,T,H/2
  cos = jnp.cos(freqs)[:, :, None, :] * scale
  sin = jnp.sin(freqs)[:, :, None, :] * scale
  x = x_BxTxNxH.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxH.dtype)


def fuse_projections(layers: Params) -> Params:
  """Layer weights with q/k/v as one `w_qkv` (D x (N + 2K) x H) and gate/up as one `w_gate_up`
  (D x 2F), for fewer, larger decode matmuls. A transient copy: the stored parameters (and so
  checkpoints and Hugging Face import/export) keep the separate matrices. Stacked or per layer."""
  layers = dict(layers)
  qkv = [layers.pop(n) for n in ("wq", "wk", "wv")]
  gate_up = [layers.pop(n) for n in ("w_gate", "w_up")]
  fused = {"w_qkv": jnp.concatenate(qkv, axis=-2), "w_gate_up": jnp.concatenate(gate_up, axis=-1)}
  if "wq_qscale" in layers:  # an int8 base (`r1jax.model.lora`): the per-channel scales side by side too
    fused |= {"w_qkv_qscale": jnp.concatenate([layers.pop(f"{n}_qscale") for n in ("wq", "wk", "wv")], axis=-2),
              "w_gate_up_qscale": jnp.concatenate([layers.pop(f"{n}_qscale") for n in ("w_gate", "w_up")], axis=-1)}
  return layers | fused


def _proj(h, w, name: str, eq: str):
  """h @ w[name] by `eq`, dequantized (an int8 base's per-channel scale on the output), plus the
  LoRA adapter's (h @ A) @ sB when the layer carries one (`r1jax.model.lora.combine`)."""
  out = jnp.einsum(eq, h, w[name])
  if f"{name}_qscale" in w:
    out = out * w[f"{name}_qscale"]
  return out + _lora(h, w, name, eq)


def _lora(h, w, name: str, eq: str):
  """(h @ A) @ sB of projection `name` (0 when not adapted); A and B's dims follow `eq`'s weight."""
  if f"{name}_lora_a" not in w:
    return 0
  ins, out = eq.split("->")
  x_s, w_s = ins.split(",")
  contracted = "".join(c for c in w_s if c in x_s)
  kept = "".join(c for c in x_s if c not in contracted)
  xa = jnp.einsum(f"{x_s},{contracted}r->{kept}r", h, w[f"{name}_lora_a"])
  return jnp.einsum(f"{kept}r,r{''.join(c for c in w_s if c not in x_s)}->{out}", xa, w[f"{name}_lora_b"])


def _block(x, layer, positions, mask, cache_kv, cfg: ModelConfig, inv_freq, segments=None):
  """One pre-norm transformer block. Returns (x, (k, v)) with the new keys/values."""
  dt = cfg.compute_dtype
  w = jax.tree.map(lambda a: a.astype(dt), layer)
  h = rms_norm(x, layer["attn_norm"], cfg.rms_eps)
  if "w_qkv" in w:  # the sampler's fused copy (`fuse_projections`): one matmul instead of three
    q, k, v = jnp.split(_proj(h, w, "w_qkv", "btd,dmh->btmh"), [cfg.n_heads, cfg.n_heads + cfg.n_kv_heads], 2)
    q, k, v = (x + _lora(h, w, n, "btd,dnh->btnh") for x, n in ((q, "wq"), (k, "wk"), (v, "wv")))
  else:
    q = _proj(h, w, "wq", "btd,dnh->btnh")
    k = _proj(h, w, "wk", "btd,dkh->btkh")
    v = _proj(h, w, "wv", "btd,dkh->btkh")
  if cfg.qkv_bias:
    q, k, v = q + w["bq"], k + w["bk"], v + w["bv"]
  if cfg.qk_norm:
    q, k = rms_norm(q, layer["q_norm"], cfg.rms_eps), rms_norm(k, layer["k_norm"], cfg.rms_eps)
  q = constrain(q, ("batch", "length", "act_heads", "head_dim"))
  scale = rope_attention_factor(cfg)
  q, k = apply_rope(q, positions, inv_freq, scale), apply_rope(k, positions, inv_freq, scale)
  if cache_kv is None:
    att = self_attention(q, k, v, mask, cfg, segments)
  else:
    ck, cv, cmask = cache_kv
    if q.shape[1] == 1 and decode_attention_impl(cfg) == "pallas":
      att = pallas_cached_attention(q, k, v, ck, cv, cmask, cfg.decode_kv_splits)
    else:
      att = cached_attention(q, k, v, mask, ck, cv, cmask)
  x = x + _proj(att, w, "wo", "btnh,nhd->btd")
  x = constrain(x, ("batch", "length", "act_embed"))
  h = rms_norm(x, layer["mlp_norm"], cfg.rms_eps)
  if "w_gate_up" in w:
    g, u = jnp.split(_proj(h, w, "w_gate_up", "btd,df->btf"), 2, axis=-1)
    g, u = g + _lora(h, w, "w_gate", "btd,df->btf"), u + _lora(h, w, "w_up", "btd,df->btf")
  else:
    g = _proj(h, w, "w_gate", "btd,df->btf")
    u = _proj(h, w, "w_up", "btd,df->btf")
  act = constrain(jax.nn.silu(g) * u, ("batch", "length", "act_mlp"))
  x = x + _proj(act, w, "w_down", "btf,fd->btd")
  x = constrain(x, ("batch", "length", "act_embed"))
  return x, (k, v)


_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def hidden_states(params: Params, tokens_BxT, positions_BxT, cfg: ModelConfig, *, mask_BxT=None,
                  cache=None, segments_BxT=None):
  """Final-norm hidden states and the new keys/values of every layer.

  Args:
    tokens_BxT: int token ids. positions_BxT: RoPE positions (left padding: count from the first
      real token). mask_BxT: True for real tokens (default all).
    cache: optional dict with 'k', 'v' (L x B x K x S x H, or tuples of L arrays B x K x S x H)
      and 'mask' (B x S) of earlier tokens.
    segments_BxT: optional segment id per token (packed rows, no cache): attention stays within
      a segment.
  Returns:
    hidden_BxTxD, (k_LxBxTxKxH, v_LxBxTxKxH).
  """
  dt = cfg.compute_dtype
  if mask_BxT is None:
    mask_BxT = jnp.ones(tokens_BxT.shape, bool)
  mask_BxT = mask_BxT.astype(bool)
  x = jnp.take(params["embed"], tokens_BxT, axis=0).astype(dt)
  x = constrain(x, ("batch", "length", "act_embed"))
  dynamic = cfg.rope_scaling is not None and cfg.rope_scaling.kind == "dynamic"
  inv_freq = rope_inv_freq(cfg, jnp.max(positions_BxT) + 1 if dynamic else None)

  def body(x, xs):
    layer, ckv = xs
    ckv = None if ckv is None else (ckv[0], ckv[1], cache["mask"])
    return _block(x, layer, positions_BxT, mask_BxT, ckv, cfg, inv_freq, segments_BxT)

  if cfg.remat != "none":
    body = jax.checkpoint(body, policy=_REMAT[cfg.remat], prevent_cse=False)
  if cache is not None and isinstance(cache["k"], (tuple, list)):
    # One cache buffer per layer (sampler with cfg.unroll_decode): unrolled layers.
    layers = params["layers"]
    if isinstance(layers, dict):
      layers = [jax.tree.map(lambda a: a[i], layers) for i in range(cfg.n_layers)]
    kvs = []
    for i in range(cfg.n_layers):
      x, kv_i = body(x, (layers[i], (cache["k"][i], cache["v"][i])))
      kvs.append(kv_i)
    kv = jax.tree.map(lambda *a: jnp.stack(a), *kvs)
    return rms_norm(x, params["final_norm"], cfg.rms_eps), kv
  xs = (params["layers"], None if cache is None else (cache["k"], cache["v"]))
  x, kv = jax.lax.scan(body, x, xs)
  return rms_norm(x, params["final_norm"], cfg.rms_eps), kv


def output_weights(params: Params, cfg: ModelConfig):
  """D x V projection onto the vocabulary (the transposed embedding when tied)."""
  return params["embed"].T if cfg.tie_embeddings else params["lm_head"]


def logits_from_hidden(params, hidden_BxTxD, cfg: ModelConfig):
  w = output_weights(params, cfg).astype(cfg.compute_dtype)
  logits = jnp.einsum("btd,dv->btv", hidden_BxTxD, w, preferred_element_type=jnp.float32)
  return constrain(logits, ("batch", "length", "act_vocab"))


def forward(params: Params, tokens_BxT, positions_BxT, cfg: ModelConfig, *, mask_BxT=None, cache=None):
  """Logits (float32, B x T x V) and the new keys/values; see `hidden_states`."""
  h, kv = hidden_states(params, tokens_BxT, positions_BxT, cfg, mask_BxT=mask_BxT, cache=cache)
  return logits_from_hidden(params, h, cfg), kv


def token_logprobs(params: Params, hidden_BxTxD, targets_BxT, cfg: ModelConfig, temperature: float = 1.0):
  """log p(target) and entropy per position, float32, computed in sequence chunks.

  The B x T x V logits exist one chunk at a time (and are recomputed in the backward pass),
  which is what lets a 150k vocabulary train at long sequence lengths.
  """
  B, T, D = hidden_BxTxD.shape
  c = max(1, min(cfg.logits_chunk // B, T))
  if cfg.logprob_impl == "fused":
    from r1jax.model import logprob
    return logprob.fused_logprobs(hidden_BxTxD, output_weights(params, cfg).astype(cfg.compute_dtype),
                                  targets_BxT, temperature, c, cfg.vocab_chunk)
  pad = (-T) % c
  h = jnp.pad(hidden_BxTxD, ((0, 0), (0, pad), (0, 0)))
  y = jnp.pad(targets_BxT, ((0, 0), (0, pad)))
  n = (T + pad) // c
  h = h.reshape(B, n, c, D).swapaxes(0, 1)
  y = y.reshape(B, n, c).swapaxes(0, 1)

  @jax.checkpoint
  def chunk(_, hy):
    hc, yc = hy
    logits = logits_from_hidden(params, hc, cfg) / temperature
    logz = jax.nn.logsumexp(logits, axis=-1)
    tgt = jnp.take_along_axis(logits, yc[..., None], axis=-1)[..., 0]
    p = jax.nn.softmax(logits, axis=-1)
    ent = logz - jnp.sum(p * logits, axis=-1)
    return None, (tgt - logz, ent)

  _, (logp, ent) = jax.lax.scan(chunk, None, (h, y))
  logp = logp.swapaxes(0, 1).reshape(B, n * c)[:, :T]
  ent = ent.swapaxes(0, 1).reshape(B, n * c)[:, :T]
  return logp, ent


def positions_from_mask(mask_BxT):
  """RoPE positions for left-padded rows: 0 at the first real token."""
  return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)
