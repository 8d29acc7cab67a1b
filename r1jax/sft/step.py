"""The jit-compiled supervised (SFT) update: next-token cross-entropy on the target tokens, in
micro-batches of rows; the optimizer and `TrainState` are those of `r1jax.rl.step`."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from r1jax.model import transformer as model_lib
from r1jax.model.config import ModelConfig
from r1jax.rl.step import OptimConfig, finite_update, jit_step, make_optimizer, schedule


def sft_loss(params, batch, cfg: ModelConfig):
  """Mean next-token cross-entropy over the target tokens: -sum(log p * w) / sum(w), w = loss_mask
  of the predicted token (a prompt-masked SFT row learns only its completion). Packed rows carry
  `segments` (attention within an example) and `positions` (counted from each example's start)."""
  toks, mask, lmask = batch["tokens"], batch["mask"], batch["loss_mask"]
  pos = batch["positions"] if "positions" in batch else model_lib.positions_from_mask(mask)
  seg = batch.get("segments")
  h, _ = model_lib.hidden_states(params, toks[:, :-1], pos[:, :-1], cfg, mask_BxT=mask[:, :-1],
                                 segments_BxT=None if seg is None else seg[:, :-1])
  logp, _ = model_lib.token_logprobs(params, h, toks[:, 1:], cfg)
  w = lmask[:, 1:].astype(jnp.float32)
  return -jnp.sum(logp * w) / jnp.maximum(jnp.sum(w), 1.0)


def _sft_grads(params, batch, cfg, grad_accum: int):
  """(loss, grads) of `sft_loss` over the whole batch, computed in `grad_accum` micro-batches of
  rows: each contributes its summed token loss over the whole batch's target count, so the result
  is the full batch's (one micro-batch's activations live at a time)."""
  if grad_accum == 1:
    return jax.value_and_grad(lambda p: sft_loss(p, batch, cfg))(params)
  total = jnp.maximum(jnp.sum(batch["loss_mask"][:, 1:].astype(jnp.float32)), 1.0)
  micro = jax.tree.map(lambda x: x.reshape(grad_accum, x.shape[0] // grad_accum, *x.shape[1:]), batch)

  def one(carry, mb):
    w = jnp.maximum(jnp.sum(mb["loss_mask"][:, 1:].astype(jnp.float32)), 1.0)
    loss, g = jax.value_and_grad(lambda p: sft_loss(p, mb, cfg) * w / total)(params)
    return jax.tree.map(lambda a, b: a + b.astype(jnp.float32), carry, (loss, g)), None

  zeros = (jnp.zeros((), jnp.float32), jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params))
  (loss, grads), _ = jax.lax.scan(one, zeros, micro)
  return loss, jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)


def make_sft_step(cfg: ModelConfig, ocfg: OptimConfig, shardings=None, mesh=None,
                  grad_accum: int = 1) -> Callable:
  """Jitted next-token cross-entropy update (`sft_loss`) on tokens_RxT with loss_mask_RxT
  (targets to learn), in `grad_accum` micro-batches of rows. Used to pretrain the tiny default
  base model, and by `r1jax.sft.loop`."""
  optimizer = make_optimizer(ocfg)
  lr = schedule(ocfg)

  def step(state, batch):
    loss, grads = _sft_grads(state.params, batch, cfg, grad_accum)
    new_state, gnorm, finite = finite_update(state, grads, loss, optimizer)
    return new_state, {"loss": loss, "grad_norm": gnorm, "learning_rate": lr(state.step),
                       "nonfinite": (~finite).astype(jnp.int32)}

  return jit_step(step, shardings, mesh)
