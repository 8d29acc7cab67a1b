"""A fused log-prob head: log p(target) and entropy from hidden states, the logits never whole.

The vocabulary projection z = h W / T is computed in tiles of B rows x `position_chunk`
positions x `vocab_chunk` vocabulary entries. The forward pass keeps an online log-sum-exp (running max m,
sum s = sum exp(z - m)) and the running sum of exp(z - m) z for the entropy, and picks the
target's logit out of the tile that holds it; it saves only the per-token log-sum-exp and mean
logit. The custom backward recomputes each tile and applies

  d logp / dz = onehot(target) - p,        d H / dz = -p (z - E_p[z]),

so neither the B x T x V logits nor their gradient exist: the largest temporary is one tile.
The same idea as Liger's fused linear cross-entropy and Apple's Cut Cross-Entropy (which also
never materialize the logits), written as two `lax.scan`s with a `jax.custom_vjp`.

Shape letters: B rows, T positions, D model width, V vocabulary; c / v are the position /
vocabulary tiles.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

NEG = -1e30  # a finite -inf: padded columns get exp(NEG - m) = 0 without inf - inf


def _tiles(h_BxTxD, y_BxT, w_DxV, position_chunk: int, vocab_chunk: int):
  """Tiles over positions (every row in each, so a batch-sharded h stays sharded) and vocabulary."""
  B, T, D = h_BxTxD.shape
  V = w_DxV.shape[1]
  c, v = max(1, min(position_chunk, T)), min(vocab_chunk, V)
  pt, pv = (-T) % c, (-V) % v
  h = jnp.pad(h_BxTxD, ((0, 0), (0, pt), (0, 0))).reshape(B, (T + pt) // c, c, D).swapaxes(0, 1)  # n, B, c, D
  y = jnp.pad(y_BxT, ((0, 0), (0, pt))).reshape(B, (T + pt) // c, c).swapaxes(0, 1)
  w = jnp.pad(w_DxV, ((0, 0), (0, pv))).reshape(D, (V + pv) // v, v).transpose(1, 0, 2)  # nv, D, v
  return h, y, w, v, V


def _logits(h_BxcxD, w_Dxv, j, v, V, temperature):
  z = jnp.einsum("bcd,dv->bcv", h_BxcxD, w_Dxv, preferred_element_type=jnp.float32) / temperature
  col = j * v + jnp.arange(v)
  return jnp.where(col < V, z, NEG), col


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def fused_logprobs(h_BxTxD, w_DxV, y_BxT, temperature: float, position_chunk: int = 64, vocab_chunk: int = 16384):
  """(logp_BxT, entropy_BxT), float32, of targets y under softmax(h W / temperature); tiles of
  B x position_chunk positions x vocab_chunk vocabulary entries."""
  return _forward(h_BxTxD, w_DxV, y_BxT, temperature, position_chunk, vocab_chunk)[0]


def _untile(x, T):
  """n x B x c -> B x T."""
  return x.swapaxes(0, 1).reshape(x.shape[1], -1)[:, :T]


def _forward(h_BxTxD, w_DxV, y_BxT, temperature, position_chunk, vocab_chunk):
  T = h_BxTxD.shape[1]
  h, y, w, v, V = _tiles(h_BxTxD, y_BxT, w_DxV, position_chunk, vocab_chunk)
  Bc = h.shape[1:3]

  def per_positions(_, hy):
    hc, yc = hy

    def per_vocab(carry, jw):
      m, s, sz, tgt = carry
      j, wj = jw
      z, col = _logits(hc, wj, j, v, V, temperature)
      m_new = jnp.maximum(m, jnp.max(z, axis=-1))
      e = jnp.exp(z - m_new[..., None])
      scale = jnp.exp(m - m_new)
      s = s * scale + jnp.sum(e, axis=-1)
      sz = sz * scale + jnp.sum(e * jnp.where(col < V, z, 0.0), axis=-1)
      tgt = tgt + jnp.sum(jnp.where(col == yc[..., None], z, 0.0), axis=-1)
      return (m_new, s, sz, tgt), None

    init = (jnp.full(Bc, NEG, jnp.float32),) + tuple(jnp.zeros(Bc, jnp.float32) for _ in range(3))
    (m, s, sz, tgt), _ = jax.lax.scan(per_vocab, init, (jnp.arange(w.shape[0]), w))
    lse = m + jnp.log(s)
    mean_z = sz / s
    return None, (tgt - lse, lse - mean_z, lse, mean_z)

  _, outs = jax.lax.scan(per_positions, None, (h, y))
  logp, ent, lse, mean_z = (_untile(x, T) for x in outs)
  return (logp, ent), (h_BxTxD, w_DxV, y_BxT, lse, mean_z)


def _bwd(temperature, position_chunk, vocab_chunk, res, grads):
  h_BxTxD, w_DxV, y_BxT, lse_BxT, mean_BxT = res
  g_logp, g_ent = grads
  B, T, D = h_BxTxD.shape
  h, y, w, v, V = _tiles(h_BxTxD, y_BxT, w_DxV, position_chunk, vocab_chunk)
  n, _, c, _ = h.shape
  tile = lambda x: jnp.pad(x.astype(jnp.float32), ((0, 0), (0, n * c - T))).reshape(B, n, c).swapaxes(0, 1)
  lse, mean_z, gl, ge = tile(lse_BxT), tile(mean_BxT), tile(g_logp), tile(g_ent)  # padding: zero grads

  def per_vocab(dh, jw):
    j, wj = jw

    def per_positions(dw, xs):
      hc, yc, lc, mc, glc, gec = xs
      z, col = _logits(hc, wj, j, v, V, temperature)
      p = jnp.exp(z - lc[..., None])
      onehot = (col == yc[..., None]).astype(jnp.float32)
      dz = glc[..., None] * (onehot - p) - gec[..., None] * p * (jnp.where(col < V, z, 0.0) - mc[..., None])
      dz = (dz / temperature).astype(hc.dtype)
      dh_c = jnp.einsum("bcv,dv->bcd", dz, wj, preferred_element_type=jnp.float32)
      dw = dw + jnp.einsum("bcd,bcv->dv", hc, dz, preferred_element_type=jnp.float32)
      return dw, dh_c

    dw, dh_j = jax.lax.scan(per_positions, jnp.zeros((D, v), jnp.float32), (h, y, lse, mean_z, gl, ge))
    return dh + dh_j, dw

  dh, dw = jax.lax.scan(per_vocab, jnp.zeros(h.shape, jnp.float32), (jnp.arange(w.shape[0]), w))
  dh = dh.swapaxes(0, 1).reshape(B, n * c, D)[:, :T].astype(h_BxTxD.dtype)
  dw = dw.transpose(1, 0, 2).reshape(D, -1)[:, :V].astype(w_DxV.dtype)
  return dh, dw, None


fused_logprobs.defvjp(_forward, _bwd)
