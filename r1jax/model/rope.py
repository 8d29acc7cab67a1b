"""Rotary position embedding: inverse frequencies as Hugging Face's ROPE_INIT_FUNCTIONS compute
them (default, Llama 3.1, linear, YaRN and dynamic NTK scaling) and the rotation in the 'rotate
half' layout of Hugging Face checkpoints.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from r1jax.model.config import ModelConfig


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
