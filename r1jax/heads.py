"""A scalar head on the transformer: one number per position from the final hidden state.

The same module serves a reward model now (the value at a sequence's last real token, trained
with the Bradley-Terry loss on preference pairs) and, later, a PPO critic (the value at every
position) or a process reward model (the value at step ends). Its parameters live in
`TrainState.head` and are trained together with the transformer body (`TrainState.params`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from r1jax import model as model_lib
from r1jax import train_step


def init_scalar_head(key, cfg: model_lib.ModelConfig, mesh=None) -> dict:
  """{'w': D, 'b': scalar}, float32; replicated on `mesh` if given."""
  head = {"w": jax.random.normal(key, (cfg.d_model,), jnp.float32) / jnp.sqrt(cfg.d_model),
          "b": jnp.zeros((), jnp.float32)}
  if mesh is not None:
    head = jax.device_put(head, NamedSharding(mesh, PartitionSpec()))
  return head


def values(params, head, tokens_BxT, mask_BxT, cfg: model_lib.ModelConfig):
  """The head's value at every position (B x T, float32): w . h_t + b."""
  h, _ = model_lib.hidden_states(params, tokens_BxT, model_lib.positions_from_mask(mask_BxT), cfg,
                                 mask_BxT=mask_BxT)
  return h.astype(jnp.float32) @ head["w"] + head["b"]


def sequence_scores(params, head, tokens_BxT, mask_BxT, cfg: model_lib.ModelConfig):
  """One score per row: the value at the row's last real token (B)."""
  v_BxT = values(params, head, tokens_BxT, mask_BxT, cfg)
  T = tokens_BxT.shape[1]
  last_B = T - 1 - jnp.argmax(mask_BxT[:, ::-1], axis=1)
  return jnp.take_along_axis(v_BxT, last_B[:, None], axis=1)[:, 0]


def bradley_terry_loss(chosen_B, rejected_B):
  """-mean log sigmoid(s_chosen - s_rejected) (Bradley-Terry / InstructGPT reward-model loss),
  and the accuracy (share of pairs scored in the right order)."""
  margin = chosen_B - rejected_B
  return jnp.mean(jax.nn.softplus(-margin)), jnp.mean((margin > 0).astype(jnp.float32))


def make_reward_model_step(cfg: model_lib.ModelConfig, ocfg: train_step.OptimConfig, shardings=None, mesh=None):
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
