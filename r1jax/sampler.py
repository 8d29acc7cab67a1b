"""Batched generation with a KV cache, compiled once per shape.

Prompts are left-padded to a bucket length P, prefilled once, their cache repeated for the n
samples of each prompt, then decoded one token a step inside `jax.lax.while_loop`, which stops
as soon as every row has emitted EOS or N tokens exist. The same mesh and the same parameter
arrays as training are used: nothing is copied.

Shape letters: B prompts, R = B * n rows, P prompt bucket, N max new tokens, S = P + N cache.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import model as model_lib
from r1jax.sharding import constrain


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How completions are drawn."""
  max_new_tokens: int = 256
  temperature: float = 1.0
  """0 means greedy."""
  top_k: int = 0
  """Keep the k most likely tokens; 0 keeps all."""
  top_p: float = 1.0
  """Nucleus sampling mass; 1.0 keeps all."""
  num_samples: int = 1
  """Completions per prompt (GRPO's group size G)."""
  eos_ids: tuple[int, ...] = ()
  pad_id: int = 0
  suppress_eos: bool = False
  """Never emit EOS (benchmarks that need every row to generate N tokens)."""
  prompt_buckets: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
  """Prompts are left-padded to the smallest bucket that fits, so shapes (and compiles) are few;
  () pads each batch to its longest prompt."""

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"sampling.max_new_tokens={self.max_new_tokens} must be >= 1")
    if self.temperature < 0:
      raise ValueError(f"sampling.temperature={self.temperature} must be >= 0 (0 = greedy)")
    if self.top_k < 0:
      raise ValueError(f"sampling.top_k={self.top_k} must be >= 0 (0 = off)")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"sampling.top_p={self.top_p} must be in (0, 1]")
    if self.num_samples < 1:
      raise ValueError(f"sampling.num_samples={self.num_samples} must be >= 1")
    if list(self.prompt_buckets) != sorted(set(self.prompt_buckets)) or any(b < 1 for b in self.prompt_buckets):
      raise ValueError(f"sampling.prompt_buckets={self.prompt_buckets} must be strictly increasing positive "
                       f"lengths, or () for the longest prompt of each batch")


def next_token(logits_RxV, key, scfg: SamplingConfig):
  """Sample from temperature-scaled, top-k / top-p truncated logits (float32)."""
  if scfg.temperature == 0:
    return jnp.argmax(logits_RxV, axis=-1)
  logits = logits_RxV / scfg.temperature
  neg = jnp.finfo(logits.dtype).min
  if scfg.top_k:
    kth = jax.lax.top_k(logits, scfg.top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, neg, logits)
  if scfg.top_p < 1.0:
    sorted_l = jnp.sort(logits, axis=-1)[..., ::-1]
    cum = jnp.cumsum(jax.nn.softmax(sorted_l, axis=-1), axis=-1)
    # Smallest set whose mass reaches top_p: keep tokens whose preceding mass is < top_p.
    keep = (cum - jax.nn.softmax(sorted_l, axis=-1)) < scfg.top_p
    cutoff = jnp.min(jnp.where(keep, sorted_l, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, neg, logits)
  return jax.random.categorical(key, logits, axis=-1)


def _logp_of(logits_RxV, tokens_R, temperature):
  t = temperature if temperature > 0 else 1.0
  lp = jax.nn.log_softmax(logits_RxV / t, axis=-1)
  return jnp.take_along_axis(lp, tokens_R[:, None], axis=-1)[:, 0]


@functools.partial(jax.jit, static_argnames=("cfg", "scfg"))
def generate(params, prompt_BxP, prompt_mask_BxP, key, cfg: model_lib.ModelConfig, scfg: SamplingConfig):
  """Sample `scfg.num_samples` completions per left-padded prompt.

  Returns a dict of R x N arrays (row r is sample r % n of prompt r // n):
    tokens (pad after EOS), logp (log-prob of each sampled token under the temperature-scaled
    model), mask (True up to and including EOS), and per row: length, truncated (no EOS).
  """
  B, P = prompt_BxP.shape
  n, N = scfg.num_samples, scfg.max_new_tokens
  R = B * n
  S = P + N
  if model_lib.decode_attention_impl(cfg) == "pallas":  # the kernel reads whole blocks
    S = -(-S // model_lib.DECODE_BLOCK) * model_lib.DECODE_BLOCK
  eos = jnp.asarray(scfg.eos_ids or (-1,), jnp.int32)
  prompt_mask_BxP = prompt_mask_BxP.astype(bool)
  # Cast once, outside the loop: every decode step then reads the weights in the compute dtype
  # (half the bytes of an fp32 master copy); the layer scan would otherwise cast inside each step.
  params = jax.tree.map(lambda a: a.astype(cfg.compute_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
                        params)
  positions = model_lib.positions_from_mask(prompt_mask_BxP)
  hidden, (k, v) = model_lib.hidden_states(params, prompt_BxP, positions, cfg, mask_BxT=prompt_mask_BxP)
  logits_BxV = model_lib.logits_from_hidden(params, hidden[:, -1:], cfg)[:, 0]

  rep = lambda x, axis: jnp.repeat(x, n, axis=axis)
  L, K, H = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
  # kv-head-major cache, R x K x S x H per layer (see model.cached_attention): stacked L x ... for
  # the layer scan, or one buffer per layer (cfg.unroll_decode) that each layer reads in place.
  cache_axes = ("batch", "act_kv_heads", "cache_length", "head_dim")
  pad_kv = lambda x: constrain(jnp.pad(rep(x, 0).swapaxes(1, 2), ((0, 0), (0, 0), (0, S - P), (0, 0))),
                               cache_axes)
  if cfg.unroll_decode:
    kv_k, kv_v = tuple(pad_kv(k[i]) for i in range(L)), tuple(pad_kv(v[i]) for i in range(L))
    # Per-layer weights, sliced once here rather than in every step.
    params = dict(params, layers=[jax.tree.map(lambda a: a[i], params["layers"]) for i in range(L)])
  else:
    kv_k, kv_v = jax.vmap(pad_kv)(k), jax.vmap(pad_kv)(v)
  cache = {"k": kv_k, "v": kv_v, "mask": jnp.pad(rep(prompt_mask_BxP, 0), ((0, 0), (0, S - P)))}
  next_pos_R = rep(positions[:, -1] + 1, 0)
  logits_RxV = rep(logits_BxV, 0)

  def pick(logits, step, done):
    logits = logits.astype(jnp.float32)
    if scfg.suppress_eos and scfg.eos_ids:
      logits = logits.at[:, eos].set(jnp.finfo(jnp.float32).min)
    tok = next_token(logits, jax.random.fold_in(key, step), scfg).astype(jnp.int32)
    lp = _logp_of(logits, tok, scfg.temperature)
    tok = jnp.where(done, scfg.pad_id, tok)
    return tok, jnp.where(done, 0.0, lp)

  done0 = jnp.zeros((R,), bool)
  tok0, lp0 = pick(logits_RxV, 0, done0)
  state = {
      "step": jnp.int32(1),
      "tokens": jnp.full((R, N), scfg.pad_id, jnp.int32).at[:, 0].set(tok0),
      "logp": jnp.zeros((R, N), jnp.float32).at[:, 0].set(lp0),
      "mask": jnp.zeros((R, N), bool).at[:, 0].set(True),
      "done": jnp.isin(tok0, eos),
      "cache": cache,
  }

  def cond(s):
    return (s["step"] < N) & ~jnp.all(s["done"])

  def body(s):
    t = s["step"]
    prev = jax.lax.dynamic_slice_in_dim(s["tokens"], t - 1, 1, axis=1)
    pos = (next_pos_R + t - 1)[:, None]
    h, (k1, v1) = model_lib.hidden_states(params, prev, pos, cfg, mask_BxT=jnp.ones((R, 1), bool),
                                          cache=s["cache"])
    c = s["cache"]
    slot = P + t - 1
    put = lambda buf, x: jax.lax.dynamic_update_slice(buf, x.swapaxes(-2, -3).astype(buf.dtype),
                                                     (0,) * (buf.ndim - 2) + (slot, 0))
    if cfg.unroll_decode:
      new_k = tuple(put(c["k"][i], k1[i]) for i in range(L))
      new_v = tuple(put(c["v"][i], v1[i]) for i in range(L))
    else:
      new_k, new_v = put(c["k"], k1), put(c["v"], v1)
    cache = {"k": new_k, "v": new_v,
             "mask": jax.lax.dynamic_update_slice(c["mask"], jnp.ones((R, 1), bool), (0, slot))}
    logits = model_lib.logits_from_hidden(params, h, cfg)[:, 0]
    tok, lp = pick(logits, t, s["done"])
    upd = lambda buf, x: jax.lax.dynamic_update_slice_in_dim(buf, x[:, None], t, axis=1)
    return {"step": t + 1, "tokens": upd(s["tokens"], tok), "logp": upd(s["logp"], lp),
            "mask": upd(s["mask"], ~s["done"]), "done": s["done"] | jnp.isin(tok, eos), "cache": cache}

  s = jax.lax.while_loop(cond, body, state)
  length = jnp.sum(s["mask"], axis=1)
  return {"tokens": s["tokens"], "logp": s["logp"], "mask": s["mask"], "length": length,
          "truncated": ~s["done"], "steps": s["step"]}


def bucket_for(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= length; with no buckets, the length itself."""
  if not buckets:
    return length
  for b in buckets:
    if length <= b:
      return b
  raise ValueError(f"prompt of {length} tokens is longer than the largest bucket {buckets[-1]} "
                   f"(sampling.prompt_buckets); raise it or shorten the prompt")


def pad_prompts(prompts: Sequence[Sequence[int]], buckets: Sequence[int], pad_id: int,
                batch_size: int | None = None):
  """Left-pad token lists into (tokens_BxP, mask_BxP) numpy arrays; P is a bucket length.

  With `batch_size`, extra all-pad rows are appended so the batch shape stays fixed.
  """
  P = bucket_for(max(len(p) for p in prompts), buckets)
  B = batch_size or len(prompts)
  if len(prompts) > B:
    raise ValueError(f"{len(prompts)} prompts exceed batch_size={B}")
  toks = np.full((B, P), pad_id, np.int32)
  mask = np.zeros((B, P), bool)
  for i, p in enumerate(prompts):
    if len(p):
      toks[i, P - len(p):] = p
      mask[i, P - len(p):] = True
  return toks, mask
