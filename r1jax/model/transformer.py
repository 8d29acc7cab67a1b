"""A functional decoder of the Qwen2 / Qwen3 / Llama family.

RMSNorm, RoPE (Llama-3, linear, YaRN and dynamic NTK scaling), Qwen3 q/k norms, grouped-query attention, SwiGLU MLP, optional
q/k/v bias, tied or untied embeddings. Parameters are a plain pytree; layers are stacked on a
leading axis and run with `jax.lax.scan`, so compile time does not grow with depth.

Shape letters: B batch, T query length, S cached length, D d_model, N query heads,
K kv heads, G = N // K, H head_dim, F d_ff, V vocab, L layers.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1jax.model.attention import (cache_window, cached_attention, decode_attention_impl, pallas_cached_attention,
                                   self_attention)
from r1jax.model.config import ModelConfig, Params
from r1jax.model.decode_gemm import decode_matmul
from r1jax.model.rope import apply_rope, rope_attention_factor, rope_inv_freq
from r1jax.sharding import constrain


# ----------------------------------------------------------------------------- layers


def rms_norm(x, w, eps):
  """RMSNorm computed in float32, cast back (as Hugging Face Qwen2/Llama)."""
  x32 = x.astype(jnp.float32)
  x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return w.astype(x.dtype) * x32.astype(x.dtype)


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


def _contracted(eq: str) -> str:
  """The letters an einsum 'x,w->out' contracts."""
  x_s, w_s = eq.split("->")[0].split(",")
  return "".join(c for c in w_s if c in x_s)


def _proj(h, w, name: str, eq: str, matmul=None):
  """h @ w[name] by `eq`, dequantized (an int8 base's per-channel scale on the output), plus the
  LoRA adapter's (h @ A) @ sB when the layer carries one (`r1jax.model.lora.combine`). `matmul`:
  the decode step's (`decode_gemm.decode_matmul`, bound to its config), or None for the einsum."""
  out = jnp.einsum(eq, h, w[name]) if matmul is None else matmul(h, w[name], len(_contracted(eq)))
  if f"{name}_qscale" in w:
    out = out * w[f"{name}_qscale"]
  return out + _lora(h, w, name, eq)


def _lora(h, w, name: str, eq: str):
  """(h @ A) @ sB of projection `name` (0 when not adapted); A and B's dims follow `eq`'s weight."""
  if f"{name}_lora_a" not in w:
    return 0
  ins, out = eq.split("->")
  x_s, w_s = ins.split(",")
  contracted = _contracted(eq)
  kept = "".join(c for c in x_s if c not in contracted)
  xa = jnp.einsum(f"{x_s},{contracted}r->{kept}r", h, w[f"{name}_lora_a"])
  return jnp.einsum(f"{kept}r,r{''.join(c for c in w_s if c not in x_s)}->{out}", xa, w[f"{name}_lora_b"])


def _block(x, layer, positions, mask, cache_kv, cfg: ModelConfig, inv_freq, segments=None):
  """One pre-norm transformer block. Returns (x, (k, v)) with the new keys/values.

  cache_kv: None, or (ck, cv, cmask, window, write) of the cache; `window`, the rows' valid cache
  positions (`attention.cache_window`), is given for one new token decoded by the Pallas kernel
  and None otherwise; `write` (or None): f(buffer, k or v) puts the new token into the cache
  before attention, and the returned (k, v) are then the written buffers."""
  dt = cfg.compute_dtype
  w = jax.tree.map(lambda a: a.astype(dt), layer)
  mm = None  # a decode step's projections: split-K and / or the Pallas GEMM (`r1jax.model.decode_gemm`)
  if cache_kv is not None and x.shape[1] == 1 and (cfg.decode_split_k > 1 or cfg.decode_gemm == "pallas"):
    mm = functools.partial(decode_matmul, splits=cfg.decode_split_k, gemm=cfg.decode_gemm)
  h = rms_norm(x, layer["attn_norm"], cfg.rms_eps)
  if "w_qkv" in w:  # the sampler's fused copy (`fuse_projections`): one matmul instead of three
    q, k, v = jnp.split(_proj(h, w, "w_qkv", "btd,dmh->btmh", mm), [cfg.n_heads, cfg.n_heads + cfg.n_kv_heads], 2)
    q, k, v = (x + _lora(h, w, n, "btd,dnh->btnh") for x, n in ((q, "wq"), (k, "wk"), (v, "wv")))
  else:
    q = _proj(h, w, "wq", "btd,dnh->btnh", mm)
    k = _proj(h, w, "wk", "btd,dkh->btkh", mm)
    v = _proj(h, w, "wv", "btd,dkh->btkh", mm)
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
    ck, cv, cmask, window, write = cache_kv
    if write is not None:  # the token into its cache slot first: the kernel's window covers it
      k, v = ck, cv = write(ck, k), write(cv, v)
      att = pallas_cached_attention(q, None, None, ck, cv, cmask, cfg.decode_kv_splits, window)
    elif window is not None:
      att = pallas_cached_attention(q, k, v, ck, cv, cmask, cfg.decode_kv_splits, window)
    else:
      att = cached_attention(q, k, v, mask, ck, cv, cmask)
  x = x + _proj(att, w, "wo", "btnh,nhd->btd", mm)
  x = constrain(x, ("batch", "length", "act_embed"))
  h = rms_norm(x, layer["mlp_norm"], cfg.rms_eps)
  if "w_gate_up" in w:
    g, u = jnp.split(_proj(h, w, "w_gate_up", "btd,df->btf", mm), 2, axis=-1)
    g, u = g + _lora(h, w, "w_gate", "btd,df->btf"), u + _lora(h, w, "w_up", "btd,df->btf")
  else:
    g = _proj(h, w, "w_gate", "btd,df->btf", mm)
    u = _proj(h, w, "w_up", "btd,df->btf", mm)
  act = constrain(jax.nn.silu(g) * u, ("batch", "length", "act_mlp"))
  x = x + _proj(act, w, "w_down", "btf,fd->btd", mm)
  x = constrain(x, ("batch", "length", "act_embed"))
  return x, (k, v)


_REMAT = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def dots_saveable_but_rank(rank: int):
  """remat 'dots' with LoRA: the matmul outputs without batch dimensions are saved, except the
  products that contract over the adapters' rank, (x A) B, which are as large as their projection's
  output but cost rank / d_model of its FLOPs to recompute (saving them made LoRA ask more activation
  memory than full fine-tuning). A projection that contracts over a dimension of exactly `rank` is
  recomputed too (only speed)."""
  def policy(prim, *args, **params):
    if prim is not jax.lax.dot_general_p:
      return False
    (lhs_c, _), (lhs_b, rhs_b) = params["dimension_numbers"]
    contracted = 1
    for d in lhs_c:
      contracted *= args[0].shape[d]
    return not lhs_b and not rhs_b and contracted != rank
  return policy


def lora_rank(layers) -> int:
  """The adapters' rank in stacked layer weights (0: no adapter)."""
  if not isinstance(layers, dict):
    return 0
  return next((v.shape[-1] for k, v in layers.items() if k.endswith("_lora_a")), 0)


def hidden_states(params: Params, tokens_BxT, positions_BxT, cfg: ModelConfig, *, mask_BxT=None,
                  cache=None, segments_BxT=None, write_cache=None):
  """Final-norm hidden states and the new keys/values of every layer.

  Args:
    tokens_BxT: int token ids. positions_BxT: RoPE positions (left padding: count from the first
      real token). mask_BxT: True for real tokens (default all).
    cache: optional dict with 'k', 'v' (L x B x K x S x H, or tuples of L arrays B x K x S x H)
      and 'mask' (B x S) of earlier tokens.
    segments_BxT: optional segment id per token (packed rows, no cache): attention stays within
      a segment.
    write_cache: optional f(buffer_BxKxSxH, x_Bx1xKxH) -> buffer that writes one new token's key
      or value into its slot of a layer's buffer (`ModelConfig.decode_write_first`): with one
      buffer per layer and the Pallas decode kernel only; cache['mask'] includes the slot already.
  Returns:
    hidden_BxTxD, (k_LxBxTxKxH, v_LxBxTxKxH); with write_cache, the written buffers (tuples of L).
  """
  dt = cfg.compute_dtype
  if mask_BxT is None:
    mask_BxT = jnp.ones(tokens_BxT.shape, bool)
  mask_BxT = mask_BxT.astype(bool)
  x = jnp.take(params["embed"], tokens_BxT, axis=0).astype(dt)
  x = constrain(x, ("batch", "length", "act_embed"))
  dynamic = cfg.rope_scaling is not None and cfg.rope_scaling.kind == "dynamic"
  inv_freq = rope_inv_freq(cfg, jnp.max(positions_BxT) + 1 if dynamic else None)

  window = None  # the Pallas decode kernel's cache window, the same in every layer: computed once
  if cache is not None and tokens_BxT.shape[1] == 1 and decode_attention_impl(cfg) == "pallas":
    window = cache_window(cache["mask"])
  if write_cache is not None and (window is None or not isinstance(cache["k"], (tuple, list))):
    raise ValueError("write_cache needs one new token, a cache buffer per layer and the Pallas decode kernel")

  def body(x, xs):
    layer, ckv = xs
    ckv = None if ckv is None else (ckv[0], ckv[1], cache["mask"], window, write_cache)
    return _block(x, layer, positions_BxT, mask_BxT, ckv, cfg, inv_freq, segments_BxT)

  if cfg.remat != "none":
    rank = lora_rank(params["layers"]) if cfg.remat == "dots" else 0
    policy = dots_saveable_but_rank(rank) if rank else _REMAT[cfg.remat]
    body = jax.checkpoint(body, policy=policy, prevent_cse=False)
  if cache is not None and isinstance(cache["k"], (tuple, list)):
    # One cache buffer per layer (sampler with cfg.unroll_decode): unrolled layers.
    layers = params["layers"]
    if isinstance(layers, dict):
      layers = [jax.tree.map(lambda a: a[i], layers) for i in range(cfg.n_layers)]
    kvs = []
    for i in range(cfg.n_layers):
      x, kv_i = body(x, (layers[i], (cache["k"][i], cache["v"][i])))
      kvs.append(kv_i)
    if write_cache is not None:  # the written buffers, never stacked (a copy of the cache)
      return rms_norm(x, params["final_norm"], cfg.rms_eps), tuple(zip(*kvs))
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
