"""Batched generation with a KV cache, compiled once per shape.

Prompts are left-padded to a bucket length P, prefilled once, their cache repeated for the n
samples of each prompt, then decoded one token a step inside `jax.lax.while_loop`, which stops
as soon as every row has emitted EOS or N tokens exist; or, with continuous batching, in a fixed
number of slots, each refilled with the next row as its row finishes. The same mesh and the same parameter
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

from r1jax.model import attention
from r1jax.model import lora
from r1jax.model import transformer as model_lib
from r1jax.model.config import ModelConfig
from r1jax.sharding import constrain


ROLLOUT_WEIGHTS = {"compute": None, "int8": jnp.int8, "fp8": jnp.float8_e4m3fn}
"""`SamplingConfig.rollout_weights` -> the storage dtype of the decode's projections (None: compute dtype)."""


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
  fuse_projections: bool = False
  """Prefill and decode with q/k/v as one matmul and gate/up as one (measured on an H200 at 0.5B:
  no gain, BENCHMARKS.md; `model.fuse_projections`: a
  copy made once per generate call; the parameters keep their layout, and with parameters already
  in the compute dtype it is one more copy of those weights while generating). Off under tensor
  parallelism, where the fused axis would mix differently sharded heads."""
  merge_lora: bool = True
  """With LoRA adapters in the parameters (`lora.combine`), decode with them merged into their
  projections, W + A (sB), formed once per generate call (`lora.merge_combined`): one matmul per
  projection and token instead of three (at Qwen2.5-1.5B, rank 64, 128 rows x 512 tokens on an H100,
  generating with the adapters beside W took 2.52 s, full fine-tuning's model 1.87 s). Costs one
  compute-dtype copy of the adapted projections while generating (none beyond the cast when the
  parameters are float32 and the compute dtype narrower), and a transient float32 copy of the
  largest while it is formed. An int8 base (`lora.base_dtype`) keeps the adapters beside W:
  merged, it would take twice its bytes or more. The draws differ from the unmerged model's by float
  rounding only (the trainer's log-probs, adapters beside W, by that much more)."""
  prompt_buckets: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
  """Prompts are left-padded to the smallest bucket that fits, so shapes (and compiles) are few;
  () pads each batch to its longest prompt."""
  continuous_batching: bool = False
  """Decode the rows in `num_slots` slots, each refilled with the next pending row as soon as its
  row ends (EOS or its cap), instead of all rows at once until the longest ends. Same tokens for
  the same key; pays off when rows outnumber slots and lengths are long-tailed."""
  num_slots: int = 0
  """Slots decoded at once with continuous_batching; 0 = all rows (then nothing is refilled)."""
  refills_per_step: int = 2
  """Slots refilled per decode step at most (each copies its prompt's cache); another finished slot
  waits a step."""
  rollout_weights: str = "compute"
  """The projections (wq, wk, wv, wo, w_gate, w_up, w_down) the sampler decodes with: 'compute'
  (cast to model.compute_dtype), or an 8-bit copy with a scale per output channel, made once per
  generate call after the LoRA merge (`decode_weights`, `lora.quantize`, the scale computed in
  float32): 'int8' (127 levels of max |W| over the input dims) or 'fp8' (float8_e4m3fn, max |W|
  scaled to 448). The 8-bit arrays go into the decode as they are, converted to the compute dtype
  at each matmul inside the jitted loop (XLA may fuse that convert into the GEMM), the scale (in the
  compute dtype, as every layer weight in `model._block`) applied to its output. What it should
  buy: half the projection bytes read per decoded token on a bandwidth-bound decode (Qwen2.5-0.5B:
  ~29 MB of projections per layer and token in bf16), to be measured on the GPU
  (benchmarks/issue31_gpu.sh fp8). What it costs: the rollout's policy is no longer the trainer's,
  so the sampler's log-probs (those of the quantized model, as it draws) differ from the trainer's
  by more than float rounding: grpo_step's `rollout_mismatch` measures it, `grpo.tis` corrects the
  update for it; and the 8-bit copy is held beside the trainer's weights while generating.
  Embeddings, norms and the LM head stay in the compute dtype; an int8 LoRA base (its '_qscale'
  already there) is decoded as it is."""

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"sampling.max_new_tokens={self.max_new_tokens} must be >= 1")
    if self.temperature < 0:
      raise ValueError(f"sampling.temperature={self.temperature} must be >= 0 (0 = greedy)")
    if self.top_k < 0:
      raise ValueError(f"sampling.top_k={self.top_k} must be >= 0 (0 = off)")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"sampling.top_p={self.top_p} must be in (0, 1]")
    for name, lo, why in (("num_slots", 0, " (0 = all rows)"), ("refills_per_step", 1, "")):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"sampling.{name}={value!r} must be an int >= {lo}{why}")
    for name in ("continuous_batching", "merge_lora"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"sampling.{name}={getattr(self, name)!r} must be a bool")
    if self.rollout_weights not in ROLLOUT_WEIGHTS:
      raise ValueError(f"sampling.rollout_weights={self.rollout_weights!r} is not one of {tuple(ROLLOUT_WEIGHTS)}")
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
    return nucleus_sample(logits, key, scfg.top_p)
  return jax.random.categorical(key, logits, axis=-1)


def nucleus_sample(logits_xV, key, top_p: float):
  """A top-p draw from each row of logits (..., V) without sorting the vocabulary: the same tokens as
  `jax.random.categorical(key, l)` with `l` the logits outside each row's nucleus set to the float
  minimum (the nucleus: the smallest most-likely set whose mass reaches top_p, the token that
  crosses it and its ties included).

  categorical is argmax(logits + Gumbel noise). Take that argmax over the tokens above a floor
  (at first, all); if the mass of the tokens more likely than it is below top_p, it is in the
  nucleus and, as the nucleus's largest noisy logit, the draw. Otherwise it and every token no more
  likely lie outside the nucleus: the floor rises to its logit and the argmax is taken again. Each
  round is two passes over the vocabulary (an argmax and a masked sum) where a sort takes about half
  of a decode step at 1,024 rows of a 152k vocabulary (BENCHMARKS.md). Rounds go on until every row
  has its token; the most likely token always qualifies, so each row ends."""
  z = jax.random.gumbel(key, logits_xV.shape, logits_xV.dtype) + logits_xV
  p = jax.nn.softmax(logits_xV, axis=-1)

  def round_(state):
    floor, _, _ = state
    x = jnp.argmax(jnp.where(logits_xV > floor, z, -jnp.inf), axis=-1)
    lx = jnp.take_along_axis(logits_xV, x[..., None], axis=-1)
    # not (>= top_p) rather than < top_p: a row of NaN logits (a diverged model) ends too
    inside = ~(jnp.sum(jnp.where(logits_xV > lx, p, 0.0), axis=-1) >= top_p)
    return jnp.where(inside[..., None], floor, lx), x, inside

  rows = logits_xV.shape[:-1]
  start = (jnp.full((*rows, 1), -jnp.inf, logits_xV.dtype), jnp.zeros(rows, jnp.int32), jnp.zeros(rows, bool))
  return jax.lax.while_loop(lambda s: ~jnp.all(s[2]), round_, start)[1]


def _logp_of(logits_RxV, tokens_R, temperature):
  t = temperature if temperature > 0 else 1.0
  lp = jax.nn.log_softmax(logits_RxV / t, axis=-1)
  return jnp.take_along_axis(lp, tokens_R[:, None], axis=-1)[:, 0]


def _pick(logits_RxV, rows_R, t_R, key, scfg: SamplingConfig):
  """Token t of each row and its log-prob. The key of (row, t) is fold_in(fold_in(key, row), t):
  a row's draws depend on its identity, not on the batch slot it is decoded in."""
  logits = logits_RxV.astype(jnp.float32)
  allowed = logits
  if scfg.suppress_eos and scfg.eos_ids:
    allowed = logits.at[:, jnp.asarray(scfg.eos_ids)].set(jnp.finfo(jnp.float32).min)
  keys = jax.vmap(lambda r, t: jax.random.fold_in(jax.random.fold_in(key, r), t))(rows_R, t_R)
  tok = jax.vmap(lambda l, k: next_token(l, k, scfg))(allowed, keys).astype(jnp.int32)
  # The model's log-prob (as the trainer computes it): neither top-k/top-p nor EOS suppression.
  return tok, _logp_of(logits, tok, scfg.temperature)


def decode_weights(params, cfg: ModelConfig, scfg: SamplingConfig):
  """The weights the decode reads, made once per generate call: LoRA adapters merged
  (`scfg.merge_lora`), the projections in 8 bits with their '<name>_qscale' (`scfg.rollout_weights`),
  every other float weight cast to the compute dtype."""
  if scfg.merge_lora:
    params = lora.merge_combined(params, cfg.compute_dtype)
  qdtype = ROLLOUT_WEIGHTS[scfg.rollout_weights]
  if qdtype is not None:
    layers = dict(params["layers"])
    for name, in_dims in lora.IN_DIMS.items():
      if f"{name}_qscale" not in layers:  # (an int8 LoRA base is decoded as it is)
        layers[name], layers[f"{name}_qscale"] = lora.quantize(layers[name], in_dims, qdtype)
    params = dict(params, layers=layers)
  # Cast once, outside the loop: every decode step then reads the weights in the compute dtype
  # (half the bytes of an fp32 master copy); the layer scan would otherwise cast inside each step.
  # 8-bit weights are left as they are: `model._block` converts them at the matmul, inside the step.
  return jax.tree.map(lambda a: a.astype(cfg.compute_dtype)
                      if jnp.issubdtype(a.dtype, jnp.floating) and a.dtype.itemsize > 1 else a, params)


def _prefill(params, prompt_BxP, prompt_mask_BxP, cfg: ModelConfig, scfg: SamplingConfig):
  """Weights as the decode reads them (`decode_weights`: cast once to the compute dtype, LoRA
  adapters merged, 8-bit projections), prompt positions, the prompts' keys/values (L x B x P x K x H)
  and the logits of each prompt's next token (B x V)."""
  params = decode_weights(params, cfg, scfg)
  mesh = jax.sharding.get_abstract_mesh()
  if scfg.fuse_projections and (mesh.empty or mesh.shape.get("tensor", 1) == 1):
    params = dict(params, layers=model_lib.fuse_projections(params["layers"]))
  positions = model_lib.positions_from_mask(prompt_mask_BxP)
  hidden, (k, v) = model_lib.hidden_states(params, prompt_BxP, positions, cfg, mask_BxT=prompt_mask_BxP)
  logits_BxV = model_lib.logits_from_hidden(params, hidden[:, -1:], cfg)[:, 0]
  if cfg.unroll_decode:  # per-layer weights, sliced once here rather than in every step
    params = dict(params, layers=[jax.tree.map(lambda a: a[i], params["layers"]) for i in range(cfg.n_layers)])
  return params, positions, k, v, logits_BxV


def _cache_length(P: int, N: int, cfg: ModelConfig) -> int:
  S = P + N
  if attention.decode_attention_impl(cfg) == "pallas":  # the kernel reads whole blocks
    S = -(-S // attention.DECODE_BLOCK) * attention.DECODE_BLOCK
  return S


def _per_layer(f, cfg, *trees):
  """f over the layers of a kv cache: one buffer per layer (cfg.unroll_decode) or stacked L x ..."""
  if cfg.unroll_decode:
    return tuple(f(*xs) for xs in zip(*trees))
  return jax.vmap(f)(*trees)


def _write_first(cfg) -> bool:
  """Whether a decode step writes the new keys/values into the cache before attention (`ModelConfig.decode_write_first`)."""
  return cfg.decode_write_first and cfg.unroll_decode and attention.decode_attention_impl(cfg) == "pallas"


def _decode(params, tok_R, pos_R, cache, cfg, put=None):
  """One token per row through the model over the cache: next logits and the token's k, v; with
  `put` (f(buffer, x) writing the token into a layer's buffer, the mask covering it already) the
  layers write it before attention and the written buffers come back instead."""
  R = tok_R.shape[0]
  h, kv = model_lib.hidden_states(params, tok_R[:, None], pos_R[:, None], cfg, mask_BxT=jnp.ones((R, 1), bool),
                                  cache=cache, write_cache=put)
  return model_lib.logits_from_hidden(params, h, cfg)[:, 0], kv


def _decode_into(params, tok_R, pos_R, cache, mask, put, cfg):
  """One decode step and the cache after it: `put` (f(buffer, x)) writes each layer's new key and
  value into its buffer, before attention with `ModelConfig.decode_write_first` (the kernel's window
  then covers the token), after the step otherwise; `mask` is the cache mask with the new slot set."""
  if _write_first(cfg):
    logits, (ks, vs) = _decode(params, tok_R, pos_R, dict(cache, mask=mask), cfg, put)
    return logits, {"k": ks, "v": vs, "mask": mask}
  logits, (k1, v1) = _decode(params, tok_R, pos_R, cache, cfg)
  return logits, {"k": _per_layer(put, cfg, cache["k"], k1), "v": _per_layer(put, cfg, cache["v"], v1), "mask": mask}


# kv-head-major cache, R x K x S x H per layer (see attention.cached_attention): stacked L x ... for
# the layer scan, or one buffer per layer (cfg.unroll_decode) that each layer reads in place.
_CACHE_AXES = ("batch", "act_kv_heads", "cache_length", "head_dim")


@functools.partial(jax.jit, static_argnames=("cfg", "scfg"))
def generate(params, prompt_BxP, prompt_mask_BxP, key, cfg: ModelConfig, scfg: SamplingConfig,
             max_len_R=None, row_offset=0):
  """Sample `scfg.num_samples` completions per left-padded prompt.

  max_len_R: optional per-row caps (<= N) on the completion length (a row stops there, truncated,
    unless EOS came first), e.g. a benchmark's length distribution.
  row_offset: the index of this batch's first row in a larger rollout generated in chunks
    (`rollout.sample(chunks=...)`): row r draws with the key of row row_offset + r, so the chunks
    together draw what the whole batch would.
  Returns a dict of R x N arrays (row r is sample r % n of prompt r // n):
    tokens (pad after EOS), logp (log-prob of each sampled token under the temperature-scaled
    model), mask (True up to and including EOS), and per row: length, truncated (no EOS).
  With scfg.continuous_batching the same rows (the same tokens for the same key) are decoded in
  scfg.num_slots slots that are refilled as rows finish (`_generate_continuous`).
  """
  if scfg.continuous_batching:
    return _generate_continuous(params, prompt_BxP, prompt_mask_BxP, key, cfg, scfg, max_len_R, row_offset)
  B, P = prompt_BxP.shape
  n, N = scfg.num_samples, scfg.max_new_tokens
  R = B * n
  S = _cache_length(P, N, cfg)
  eos = jnp.asarray(scfg.eos_ids or (-1,), jnp.int32)
  cap_R = jnp.full((R,), N, jnp.int32) if max_len_R is None else jnp.asarray(max_len_R, jnp.int32)
  prompt_mask_BxP = prompt_mask_BxP.astype(bool)
  params, positions, k, v, logits_BxV = _prefill(params, prompt_BxP, prompt_mask_BxP, cfg, scfg)

  rep = lambda x, axis: jnp.repeat(x, n, axis=axis)
  pad_kv = lambda x: constrain(jnp.pad(rep(x, 0).swapaxes(1, 2), ((0, 0), (0, 0), (0, S - P), (0, 0))),
                               _CACHE_AXES)
  cache = {"k": _per_layer(pad_kv, cfg, list(k) if cfg.unroll_decode else k),
           "v": _per_layer(pad_kv, cfg, list(v) if cfg.unroll_decode else v),
           "mask": jnp.pad(rep(prompt_mask_BxP, 0), ((0, 0), (0, S - P)))}
  next_pos_R = rep(positions[:, -1] + 1, 0)
  rows_R = row_offset + jnp.arange(R)

  def pick(logits, step, done):
    tok, lp = _pick(logits, rows_R, jnp.full((R,), step), key, scfg)
    return jnp.where(done, scfg.pad_id, tok), jnp.where(done, 0.0, lp)

  tok0, lp0 = pick(rep(logits_BxV, 0), 0, jnp.zeros((R,), bool))
  eos0 = jnp.isin(tok0, eos)
  state = {
      "step": jnp.int32(1),
      "tokens": jnp.full((R, N), scfg.pad_id, jnp.int32).at[:, 0].set(tok0),
      "logp": jnp.zeros((R, N), jnp.float32).at[:, 0].set(lp0),
      "mask": jnp.zeros((R, N), bool).at[:, 0].set(True),
      "eos": eos0, "done": eos0 | (cap_R <= 1),
      "cache": cache,
  }

  def cond(s):
    return (s["step"] < N) & ~jnp.all(s["done"])

  def body(s):
    t = s["step"]
    prev = jax.lax.dynamic_index_in_dim(s["tokens"], t - 1, axis=1, keepdims=False)
    c = s["cache"]
    slot = P + t - 1
    put = lambda buf, x: jax.lax.dynamic_update_slice(buf, x.swapaxes(-2, -3).astype(buf.dtype),
                                                     (0,) * (buf.ndim - 2) + (slot, 0))
    mask = jax.lax.dynamic_update_slice(c["mask"], jnp.ones((R, 1), bool), (0, slot))
    logits, cache = _decode_into(params, prev, next_pos_R + t - 1, c, mask, put, cfg)
    tok, lp = pick(logits, t, s["done"])
    upd = lambda buf, x: jax.lax.dynamic_update_slice_in_dim(buf, x[:, None], t, axis=1)
    eos_t = s["eos"] | (~s["done"] & jnp.isin(tok, eos))
    return {"step": t + 1, "tokens": upd(s["tokens"], tok), "logp": upd(s["logp"], lp),
            "mask": upd(s["mask"], ~s["done"]), "eos": eos_t, "done": s["done"] | eos_t | (cap_R <= t + 1),
            "cache": cache}

  s = jax.lax.while_loop(cond, body, state)
  length = jnp.sum(s["mask"], axis=1)
  return {"tokens": s["tokens"], "logp": s["logp"], "mask": s["mask"], "length": length,
          "truncated": ~s["eos"], "steps": s["step"]}


def _generate_continuous(params, prompt_BxP, prompt_mask_BxP, key, cfg, scfg: SamplingConfig, max_len_R,
                         row_offset=0):
  """`generate` with M = scfg.num_slots slots over the R rows: a slot whose row emits EOS or reaches
  its cap takes the next pending row (at most scfg.refills_per_step slots a step), so the batch stays
  full until the work runs out. The prompts are prefilled once; a refill copies its prompt's
  keys/values into the slot. Each row is decoded at the same cache positions, with the same keys,
  as in static generation, so its tokens are the same (up to float reassociation across batch
  shapes; 'dynamic' RoPE scaling, which depends on the batch's longest position, differs).

  Shape letters as `generate`, plus M slots and Q = refills_per_step.
  """
  B, P = prompt_BxP.shape
  n, N = scfg.num_samples, scfg.max_new_tokens
  R = B * n
  M = min(scfg.num_slots or R, R)
  Q = min(scfg.refills_per_step, M)
  S = _cache_length(P, N, cfg)
  eos = jnp.asarray(scfg.eos_ids or (-1,), jnp.int32)
  cap_R = jnp.full((R,), N, jnp.int32) if max_len_R is None else jnp.asarray(max_len_R, jnp.int32)
  prompt_mask_BxP = prompt_mask_BxP.astype(bool)
  params, positions, k, v, logits_BxV = _prefill(params, prompt_BxP, prompt_mask_BxP, cfg, scfg)
  next_pos_B = positions[:, -1] + 1
  # The prompts' caches, B x K x P x H per layer, copied into a slot when one of its rows starts.
  prompt_k = _per_layer(lambda x: x.swapaxes(1, 2), cfg, list(k) if cfg.unroll_decode else k)
  prompt_v = _per_layer(lambda x: x.swapaxes(1, 2), cfg, list(v) if cfg.unroll_decode else v)
  empty = lambda x: constrain(jnp.zeros((M, x.shape[1], S, x.shape[3]), x.dtype), _CACHE_AXES)

  def refill(s, free_M, limit):
    """Start the next pending rows in the first `limit` free slots."""
    rank = jnp.cumsum(free_M) - 1
    row = s["next"] + rank
    take = free_M & (rank < limit) & (row < R)
    row = jnp.where(take, row, s["row"])
    b = row // n
    idx = jnp.where(take, jnp.arange(M), M)  # out of range: the scatter drops it
    # Gather at most `limit` prompts (not M): the prefix copy then costs Q prompt caches a step.
    order = jnp.argsort(~take, stable=True)[:limit]  # the slots that take a row, first
    src_b, dst = b[order], idx[order]
    put = lambda buf, pk: buf.at[dst, :, :P].set(pk[src_b].astype(buf.dtype), mode="drop")
    c = s["cache"]
    mask_rows = jnp.pad(prompt_mask_BxP[src_b], ((0, 0), (0, S - P)))
    cache = {"k": _per_layer(put, cfg, c["k"], prompt_k), "v": _per_layer(put, cfg, c["v"], prompt_v),
             "mask": c["mask"].at[dst].set(mask_rows, mode="drop")}
    return dict(s, cache=cache, row=row, t=jnp.where(take, 0, s["t"]), active=s["active"] | take,
                logits=jnp.where(take[:, None], logits_BxV[b], s["logits"]), next=s["next"] + jnp.sum(take))

  state = {
      "cache": {"k": _per_layer(empty, cfg, prompt_k), "v": _per_layer(empty, cfg, prompt_v),
                "mask": jnp.zeros((M, S), bool)},
      "row": jnp.zeros((M,), jnp.int32), "t": jnp.zeros((M,), jnp.int32), "active": jnp.zeros((M,), bool),
      "logits": jnp.zeros((M, logits_BxV.shape[1]), logits_BxV.dtype), "next": jnp.int32(0),
      "tokens": jnp.full((R, N), scfg.pad_id, jnp.int32), "logp": jnp.zeros((R, N), jnp.float32),
      "length": jnp.zeros((R,), jnp.int32), "eos": jnp.zeros((R,), bool), "steps": jnp.int32(0),
  }
  state = refill(state, jnp.ones((M,), bool), M)

  def body(s):
    row, t, active = s["row"], s["t"], s["active"]
    tok, lp = _pick(s["logits"], row_offset + row, t, key, scfg)
    out = jnp.where(active, row, R)  # inactive slots write nothing
    hit = jnp.isin(tok, eos)
    fin = active & (hit | (t + 1 >= cap_R[row]))
    done_row = jnp.where(fin, row, R)
    put_row = jax.vmap(lambda buf, x, p: jax.lax.dynamic_update_slice(buf, x.swapaxes(0, 1).astype(buf.dtype),
                                                                      (0, p, 0)))
    put = lambda buf, x: put_row(buf, x, jnp.minimum(P + t, S - 1))  # a drained slot's t stops
    c = s["cache"]
    mask = c["mask"].at[jnp.arange(M), jnp.minimum(P + t, S - 1)].set(True)
    logits, cache = _decode_into(params, tok, next_pos_B[row // n] + t, c, mask, put, cfg)
    s = dict(s, cache=cache, logits=logits, t=jnp.where(active, t + 1, t), active=active & ~fin, steps=s["steps"] + 1,
             tokens=s["tokens"].at[out, t].set(tok, mode="drop"), logp=s["logp"].at[out, t].set(lp, mode="drop"),
             length=s["length"].at[done_row].set(t + 1, mode="drop"),
             eos=s["eos"].at[done_row].set(hit, mode="drop"))
    return refill(s, ~s["active"], Q)

  s = jax.lax.while_loop(lambda s: jnp.any(s["active"]), body, state)
  mask = jnp.arange(N)[None] < s["length"][:, None]
  return {"tokens": s["tokens"], "logp": s["logp"], "mask": mask, "length": s["length"], "truncated": ~s["eos"],
          "steps": s["steps"]}


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
