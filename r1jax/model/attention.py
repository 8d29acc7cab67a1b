"""Attention: causal self-attention over a sequence (XLA or cuDNN), attention of new tokens over a
KV cache, and the fused Pallas flash-decoding kernel for one new token.

Shape letters as in `r1jax.model.transformer`: B batch, T query length, S cached length,
N query heads, K kv heads, G = N // K, H head_dim.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
  from r1jax.model.config import ModelConfig


def _attention_impl(cfg: ModelConfig):
  if cfg.attention_impl != "auto":
    return cfg.attention_impl
  return "cudnn" if jax.default_backend() == "gpu" and cfg.dtype == "bfloat16" else "xla"


def self_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask_BxT, cfg: ModelConfig, segments_BxT=None):
  """Causal attention within the sequence; padded keys are masked (left padding). With
  `segments_BxT` (packed rows) a query sees only keys of its own segment."""
  T = q_BxTxNxH.shape[1]
  impl = _attention_impl(cfg)
  pad = T % 2 if impl == "cudnn" else 0  # cuDNN's masked (biased) attention needs an even length
  if pad:
    q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = (jnp.pad(x, ((0, 0), (0, 1), (0, 0), (0, 0)))
                                       for x in (q_BxTxNxH, k_BxTxKxH, v_BxTxKxH))
    mask_BxT = jnp.pad(mask_BxT, ((0, 0), (0, 1)))
  Tp = T + pad
  causal = jnp.tril(jnp.ones((Tp, Tp), bool))
  # A query always sees itself, so fully padded rows stay finite.
  allowed = causal[None] & (mask_BxT[:, None, :] | jnp.eye(Tp, dtype=bool)[None])
  if segments_BxT is not None:
    seg = jnp.pad(segments_BxT, ((0, 0), (0, pad)), constant_values=-1)
    allowed = allowed & (seg[:, :, None] == seg[:, None, :])
  out = jax.nn.dot_product_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask=allowed[:, None],
                                     implementation=impl)
  return out[:, :T]


def cached_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask_BxT, ck_BxKxSxH, cv_BxKxSxH, cmask_BxS):
  """Attention of T new tokens over S cached keys plus themselves (causal among the new ones).

  The cache is read, never copied: scores over cache and new keys are softmaxed jointly and
  the two value sums added, so one decode step moves the cache through memory once. The cache
  is kv-head-major (B x K x S x H) so each (b, k) block is one contiguous S x H matrix for the
  batched matmul, with no transpose of the cache.
  """
  B, T, N, H = q_BxTxNxH.shape
  K = k_BxTxKxH.shape[2]
  q = q_BxTxNxH.reshape(B, T, K, N // K, H) * jnp.asarray(H ** -0.5, q_BxTxNxH.dtype)
  q = q.transpose(0, 2, 3, 1, 4).reshape(B, K, (N // K) * T, H)  # B, K, G*T, H
  s_c = jnp.einsum("bkmh,bksh->bkms", q, ck_BxKxSxH, preferred_element_type=jnp.float32)
  s_n = jnp.einsum("bkmh,btkh->bkmt", q, k_BxTxKxH, preferred_element_type=jnp.float32)
  neg = jnp.finfo(jnp.float32).min
  s_c = jnp.where(cmask_BxS[:, None, None, :], s_c, neg)
  new_ok = jnp.tril(jnp.ones((T, T), bool))[None] & (mask_BxT[:, None, :] | jnp.eye(T, dtype=bool)[None])
  new_ok = jnp.tile(new_ok, (1, N // K, 1))  # B, G*T, T (row m is query t = m % T)
  s_n = jnp.where(new_ok[:, None], s_n, neg)
  p = jax.nn.softmax(jnp.concatenate([s_c, s_n], axis=-1), axis=-1).astype(v_BxTxKxH.dtype)
  S = ck_BxKxSxH.shape[2]
  out = (jnp.einsum("bkms,bksh->bkmh", p[..., :S], cv_BxKxSxH)
         + jnp.einsum("bkmt,btkh->bkmh", p[..., S:], v_BxTxKxH))
  out = out.reshape(B, K, N // K, T, H).transpose(0, 3, 1, 2, 4)
  return out.reshape(B, T, N, H)


def decode_attention_impl(cfg: ModelConfig) -> str:
  """'auto': the Pallas kernel on GPU in 16-bit compute with a power-of-two head_dim >= 16."""
  if cfg.decode_attention != "auto":
    return cfg.decode_attention
  H = cfg.head_dim
  fits = cfg.dtype == "bfloat16" and H >= 16 and not H & (H - 1)
  return "pallas" if jax.default_backend() == "gpu" and fits else "xla"


DECODE_BLOCK = 128
"""Cache positions per program of the Pallas decode kernel; the sampler rounds the cache length
up to a multiple of it (the extra slots stay masked)."""


def decode_splits(S: int, want: int) -> int:
  """The Pallas decode kernel's k_splits for a cache of S positions (`ModelConfig.decode_kv_splits`)."""
  blocks = S // DECODE_BLOCK
  return blocks if want <= 0 else max(d for d in range(1, min(want, blocks) + 1) if blocks % d == 0)


def cache_window(cmask_BxS):
  """(start_B, end_B), int32: each row's valid cache positions as the window [start, end), or
  [0, 0) for a row with none. The window is the same in every layer, so a decode step computes it
  once (`transformer.hidden_states`) rather than once per layer."""
  S = cmask_BxS.shape[1]
  start = jnp.argmax(cmask_BxS, axis=1).astype(jnp.int32)
  end = (S - jnp.argmax(cmask_BxS[:, ::-1], axis=1)).astype(jnp.int32)
  return start, jnp.where(jnp.any(cmask_BxS, axis=1), end, 0)


def pallas_cached_attention(q_Bx1xNxH, k_Bx1xKxH, v_Bx1xKxH, ck_BxKxSxH, cv_BxKxSxH, cmask_BxS, splits=0,
                            window=None):
  """`cached_attention` for one new token through a fused flash-decoding kernel.

  Each (row, kv head) streams its cache once in blocks of `DECODE_BLOCK` positions, only up to the
  last valid one, and returns unnormalized partial sums with their softmax statistics; the new
  token's own key is merged in afterwards. The valid cache positions of a row must be one
  contiguous window (a left-padded prompt followed by the decoded tokens: what the sampler writes);
  `window` is `cache_window(cmask_BxS)` when the caller has it already. With k and v None the new
  token is in the cache already, inside the window (`ModelConfig.decode_write_first`): the kernel
  normalizes its output and nothing is merged.
  """
  start_B, end_B = cache_window(cmask_BxS) if window is None else window
  args = (q_Bx1xNxH, ck_BxKxSxH, cv_BxKxSxH, start_B, end_B) + (() if k_Bx1xKxH is None else (k_Bx1xKxH, v_Bx1xKxH))
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty and mesh.size > 1:
    # A custom kernel has no partitioning rule: run it per shard of rows, heads gathered.
    from r1jax.sharding import logical_to_spec
    rows = lambda x: logical_to_spec(("batch",) + (None,) * (x.ndim - 1), x.shape, mesh)
    return jax.shard_map(functools.partial(_pallas_cached_attention, splits=splits), mesh=mesh,
                         in_specs=tuple(rows(x) for x in args), out_specs=rows(q_Bx1xNxH), check_vma=False)(*args)
  return _pallas_cached_attention(*args, splits=splits)


def _pallas_cached_attention(q_Bx1xNxH, ck_BxKxSxH, cv_BxKxSxH, start_B, end_B, *new_kv, splits=0):
  from jax.experimental.pallas.ops.gpu import decode_attention as pallas_decode
  B, _, N, H = q_Bx1xNxH.shape
  K, S = ck_BxKxSxH.shape[1], ck_BxKxSxH.shape[2]
  G = N // K
  if S % DECODE_BLOCK or H & (H - 1):
    raise ValueError(f"pallas decode attention needs the cache length ({S}) to be a multiple of "
                     f"{DECODE_BLOCK} and head_dim ({H}) a power of two; use model.decode_attention='xla'")
  q = q_Bx1xNxH.reshape(B * K, G, H)
  o, (l, m) = pallas_decode.mqa(
      q, ck_BxKxSxH.reshape(B * K, S, H), cv_BxKxSxH.reshape(B * K, S, H),
      jnp.repeat(start_B, K), jnp.repeat(end_B, K), sm_scale=H ** -0.5, block_k=DECODE_BLOCK,
      k_splits=decode_splits(S, splits), return_residuals=True, normalize_output=not new_kv,
      interpret=jax.default_backend() != "gpu")
  if not new_kv:
    return o.astype(q_Bx1xNxH.dtype).reshape(B, 1, N, H)
  # Merge the new token (always visible to itself) into the flash statistics.
  k_Bx1xKxH, v_Bx1xKxH = new_kv
  kn = k_Bx1xKxH.reshape(B * K, 1, H)
  vn = v_Bx1xKxH.reshape(B * K, 1, H).astype(jnp.float32)
  s_new = jnp.einsum("bgh,bth->bg", q, kn, preferred_element_type=jnp.float32) * H ** -0.5
  m_all = jnp.maximum(m, s_new)
  c_old, c_new = jnp.exp(m - m_all), jnp.exp(s_new - m_all)
  out = (o.astype(jnp.float32) * c_old[..., None] + c_new[..., None] * vn) / (l * c_old + c_new)[..., None]
  return out.astype(q_Bx1xNxH.dtype).reshape(B, 1, N, H)
