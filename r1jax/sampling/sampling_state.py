"""A sampler's state that decoding continues from: each row's KV cache, which cache slots hold a
token, where its next token goes, and that token's logits. `prefill` builds it from left-padded
prompts, `decode_step` feeds one token per row (one forward pass of one token over the cache), and
`rows` / `concat` move rows between states: a tree search keeps the row of each expanded node and
continues a child from its parent's row instead of recomputing the whole prefix. The model
functions are `sampler.generate`'s own (`_prefill`, `_decode`, its cache layout).

Shape letters: R rows, P prompt bucket, S cache length, V vocabulary; the cache per layer is
R x K x S x H (K kv heads, H head dim), stacked L x ... or one array per layer (cfg.unroll_decode).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from r1jax.model.config import ModelConfig
from r1jax.sampling import sampler as sampler_lib


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SamplingState:
  k: Any
  """Keys of every cached token: L x R x K x S x H, or a tuple of L arrays R x K x S x H."""
  v: Any
  """Values, as `k`."""
  mask_RxS: jax.Array
  """True at the cache slots that hold a token (left padding and free slots are False)."""
  end_R: jax.Array
  """The cache slot the next token is written to."""
  pos_R: jax.Array
  """The RoPE position of the next token (0 at the first real token)."""
  logits_RxV: jax.Array
  """float32 logits of the next token."""

  def rows(self, idx) -> "SamplingState":
    """The state of rows `idx` (an int array), in that order."""
    take = lambda x: jnp.take(x, idx, axis=x.ndim - 4)  # the row axis of a cache array
    return SamplingState(jax.tree.map(take, self.k), jax.tree.map(take, self.v), self.mask_RxS[idx], self.end_R[idx],
                         self.pos_R[idx], self.logits_RxV[idx])


def concat(states: Sequence[SamplingState]) -> SamplingState:
  """The rows of `states` one after another (the same cache length S in each)."""
  cat = lambda *xs: jnp.concatenate(xs, axis=xs[0].ndim - 4)
  rows = lambda f: jnp.concatenate([getattr(s, f) for s in states])
  return SamplingState(jax.tree.map(cat, *[s.k for s in states]), jax.tree.map(cat, *[s.v for s in states]),
                       rows("mask_RxS"), rows("end_R"), rows("pos_R"), rows("logits_RxV"))


@functools.partial(jax.jit, static_argnames=("cfg", "scfg", "room"))
def prefill(params, prompt_RxP, prompt_mask_RxP, cfg: ModelConfig, scfg: sampler_lib.SamplingConfig,
            room: int):
  """(decode params, state) after left-padded prompts, with `room` free cache slots per row.

  The decode params are the weights as `sampler.generate` decodes with them (cast to the compute
  dtype, LoRA adapters merged, fused or sliced per layer by `scfg` / `cfg`): pass them to `decode_step`."""
  P = prompt_RxP.shape[1]
  S = sampler_lib._cache_length(P, room, cfg)
  mask = prompt_mask_RxP.astype(bool)
  dparams, positions, k, v, logits_RxV = sampler_lib._prefill(params, prompt_RxP, mask, cfg, scfg)
  pad = lambda x: jnp.pad(x.swapaxes(1, 2), ((0, 0), (0, 0), (0, S - P), (0, 0)))
  per_layer = lambda x: sampler_lib._per_layer(pad, cfg, list(x) if cfg.unroll_decode else x)
  R = prompt_RxP.shape[0]
  state = SamplingState(per_layer(k), per_layer(v), jnp.pad(mask, ((0, 0), (0, S - P))), jnp.full((R,), P, jnp.int32),
                        positions[:, -1] + 1, logits_RxV.astype(jnp.float32))
  return dparams, state


@functools.partial(jax.jit, static_argnames=("cfg",))
def decode_step(dparams, state: SamplingState, tok_R, cfg: ModelConfig) -> SamplingState:
  """The state after one more token per row (`tok_R`): its keys and values written at each row's
  `end_R`, the logits of the token after it. `dparams` as `prefill` returns them."""
  cache = {"k": state.k, "v": state.v, "mask": state.mask_RxS}
  logits_RxV, (k1, v1) = sampler_lib._decode(dparams, tok_R.astype(jnp.int32), state.pos_R, cache, cfg)
  put_row = jax.vmap(lambda buf, x, p: jax.lax.dynamic_update_slice(buf, x.swapaxes(0, 1).astype(buf.dtype),
                                                                    (0, p, 0)))
  put = lambda buf, x: put_row(buf, x, state.end_R)
  R = tok_R.shape[0]
  return SamplingState(sampler_lib._per_layer(put, cfg, state.k, k1), sampler_lib._per_layer(put, cfg, state.v, v1),
                       state.mask_RxS.at[jnp.arange(R), state.end_R].set(True), state.end_R + 1, state.pos_R + 1,
                       logits_RxV.astype(jnp.float32))


def sample(dparams, state: SamplingState, key, cfg: ModelConfig, scfg: sampler_lib.SamplingConfig,
           steps: int):
  """`steps` tokens per row sampled onward from `state`, drawn as `sampler.generate` draws them
  (token t of row r with key fold_in(fold_in(key, r), t); no stop at EOS): (tokens R x steps,
  their log-probs R x steps, the state after them)."""
  rows_R = jnp.arange(state.end_R.shape[0])
  toks, lps = [], []
  for t in range(steps):
    tok_R, lp_R = sampler_lib._pick(state.logits_RxV, rows_R, jnp.full(rows_R.shape, t), key, scfg)
    state = decode_step(dparams, state, tok_R, cfg)
    toks.append(tok_R)
    lps.append(lp_R)
  return jnp.stack(toks, axis=1), jnp.stack(lps, axis=1), state
