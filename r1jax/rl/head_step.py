"""Training a scalar head (`r1jax.model.heads`) with the transformer body: the losses (Bradley-Terry
on preference pairs; MSE or BCE on per-position targets) and their jit-compiled steps, a pure
`(state, batch) -> (state, metrics)` each, training `TrainState.params` and `TrainState.head` together.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.model.config import ModelConfig
from r1jax.model.heads import completion_values, sequence_scores
from r1jax.rl import step as train_step
from r1jax.sharding import constrain


def bradley_terry_loss(chosen_B, rejected_B):
  """-mean log sigmoid(s_chosen - s_rejected) (Bradley-Terry / InstructGPT reward-model loss),
  and the accuracy (share of pairs scored in the right order)."""
  margin = chosen_B - rejected_B
  return jnp.mean(jax.nn.softplus(-margin)), jnp.mean((margin > 0).astype(jnp.float32))


def make_reward_model_step(cfg: ModelConfig, ocfg: train_step.OptimConfig, shardings=None, mesh=None):
  """Jitted `(state, batch) -> (state, metrics)` on preference pairs: batch holds chosen_tokens,
  chosen_mask, rejected_tokens, rejected_mask (B x T each); state.params and state.head are trained."""
  optimizer = train_step.make_optimizer(ocfg)
  lr = train_step.schedule(ocfg)

  def loss_fn(trained, batch):
    params, head = trained
    toks = jnp.concatenate([batch["chosen_tokens"], batch["rejected_tokens"]])
    mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]])
    s = sequence_scores(params, head, toks, mask, cfg)
    B = batch["chosen_tokens"].shape[0]
    loss, acc = bradley_terry_loss(s[:B], s[B:])
    return loss, {"accuracy": acc, "margin": jnp.mean(s[:B] - s[B:])}

  def step(state, batch):
    (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trained(), batch)
    new_state, gnorm, finite = train_step.finite_update(state, grads, loss, optimizer)
    return new_state, m | {"loss": loss, "grad_norm": gnorm, "learning_rate": lr(state.step),
                           "nonfinite": (~finite).astype(jnp.int32)}

  return train_step.jit_step(step, shardings, mesh)


VALUE_LOSSES = ("mse", "bce")


def value_loss(v_RxN, target_RxN, weight_RxN, kind: str, old_v_RxN=None, clip: float = 0.0):
  """Weighted mean over positions of the head's loss against its targets.

  'mse': 0.5 (v - target)^2, with `clip` > 0 and `old_v_RxN` PPO's clipped value loss
    0.5 max((v - target)^2, (old_v + clip(v - old_v, -clip, clip) - target)^2) (Schulman et al.
    2017; verl's `compute_value_loss`); 'bce': binary cross-entropy of sigmoid(v) against targets
    in [0, 1] (a PRM's step labels, a value model's outcomes)."""
  w = weight_RxN.astype(jnp.float32)
  if kind == "mse":
    per = 0.5 * (v_RxN - target_RxN) ** 2
    if clip > 0 and old_v_RxN is not None:
      v_clipped = old_v_RxN + jnp.clip(v_RxN - old_v_RxN, -clip, clip)
      per = jnp.maximum(per, 0.5 * (v_clipped - target_RxN) ** 2)
  elif kind == "bce":
    per = jax.nn.softplus(v_RxN) - target_RxN * v_RxN  # -[y log s(v) + (1 - y) log(1 - s(v))]
  else:
    raise ValueError(f"value loss kind={kind!r} is not one of {VALUE_LOSSES}")
  return jnp.sum(jnp.where(w > 0, per, 0.0) * w) / jnp.maximum(jnp.sum(w), 1.0)


def make_value_step(cfg: ModelConfig, ocfg: train_step.OptimConfig, kind: str, *, column: str = "after",
                    clip: float = 0.0, grad_accum: int = 1, shardings=None, mesh=None):
  """Jitted `(state, batch) -> (state, metrics)` training state.params and state.head on
  per-position targets of completions. batch: tokens, mask (R x T, prompt left-padded to P = T - N),
  target and weight (R x N; weight 0 where a position is not trained), and for a clipped value
  loss old_values (R x N). `column` 'before': the value before completion token t (a PPO
  critic), 'after': after it (a PRM at step ends, a value model). `grad_accum` micro-batches of
  rows (rows j, j + A, ...), each weighted by its share of the weight: the whole batch's gradient."""
  if column not in ("before", "after"):
    raise ValueError(f"value column={column!r} is not one of ('before', 'after')")
  optimizer = train_step.make_optimizer(ocfg)
  lr = train_step.schedule(ocfg)

  def loss_fn(trained, batch, share):
    params, head = trained
    N = batch["target"].shape[1]
    v = completion_values(params, head, batch["tokens"], batch["mask"], batch["tokens"].shape[1] - N, cfg)
    v = v[:, :N] if column == "before" else v[:, 1:]
    loss = value_loss(v, batch["target"], batch["weight"], kind, batch.get("old_values"), clip)
    w = batch["weight"].astype(jnp.float32)
    pred = jax.nn.sigmoid(v) if kind == "bce" else v
    return loss * share, {"value_mean": jnp.sum(pred * w) / jnp.maximum(jnp.sum(w), 1.0),
                          "value_abs_error": jnp.sum(jnp.abs(pred - batch["target"]) * w) / jnp.maximum(jnp.sum(w), 1.0)}

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step(state, batch):
    if grad_accum == 1:
      (loss, m), grads = grad_fn(state.trained(), batch, 1.0)
    else:
      micro = jax.tree.map(lambda x: train_step.strided_micro_batches(x, grad_accum), batch)
      w_j = jnp.sum(micro["weight"].astype(jnp.float32), axis=(1, 2))
      share_j = w_j / jnp.maximum(jnp.sum(w_j), 1.0)

      def body(acc, xs):
        mb, share = xs
        mb = jax.tree.map(lambda x: constrain(x, ("batch",) + (None,) * (x.ndim - 1)), mb)
        (l, mm), g = grad_fn(state.trained(), mb, share)
        return jax.tree.map(lambda a, b: a + b, acc, (g, l, jax.tree.map(lambda x: share * x, mm))), None

      (_, m0), _ = jax.eval_shape(grad_fn, state.trained(), jax.tree.map(lambda x: x[0], micro), 1.0)
      zeros = lambda t: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), t)
      (grads, loss, m), _ = jax.lax.scan(body, (zeros(state.trained()), jnp.float32(0.0), zeros(m0)),
                                         (micro, share_j))
    new_state, gnorm, finite = train_step.finite_update(state, grads, loss, optimizer)
    return new_state, m | {"loss": loss, "grad_norm": gnorm, "learning_rate": lr(state.step),
                           "nonfinite": (~finite).astype(jnp.int32)}

  return train_step.jit_step(step, shardings, mesh)
