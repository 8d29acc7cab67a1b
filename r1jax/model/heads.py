"""A scalar head on the transformer: one number per position from the final hidden state.

The same module serves a reward model (the value at a sequence's last real token, trained with
the Bradley-Terry loss on preference pairs), a PPO critic (the value before every completion
token, regressed on GAE returns), a process reward model (the value after each step's last token,
trained on step labels) and a search value model (the value after every token, trained on the
outcome). Its parameters live in
`TrainState.head` and are trained together with the transformer body (`TrainState.params`): the
losses and steps are `r1jax.rl.head_step`'s.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from r1jax.model import transformer as model_lib
from r1jax.model.config import ModelConfig


def init_scalar_head(key, cfg: ModelConfig, mesh=None) -> dict:
  """{'w': D, 'b': scalar}, float32; replicated on `mesh` if given."""
  head = {"w": jax.random.normal(key, (cfg.d_model,), jnp.float32) / jnp.sqrt(cfg.d_model),
          "b": jnp.zeros((), jnp.float32)}
  if mesh is not None:
    head = jax.device_put(head, NamedSharding(mesh, PartitionSpec()))
  return head


def values(params, head, tokens_BxT, mask_BxT, cfg: ModelConfig):
  """The head's value at every position (B x T, float32): w . h_t + b."""
  h, _ = model_lib.hidden_states(params, tokens_BxT, model_lib.positions_from_mask(mask_BxT), cfg,
                                 mask_BxT=mask_BxT)
  return h.astype(jnp.float32) @ head["w"] + head["b"]


def completion_values(params, head, tokens_RxT, mask_RxT, prompt_len: int, cfg: ModelConfig):
  """R x (N + 1) values of a left-padded prompt of P = prompt_len tokens + N completion tokens:
  column t is the value of the state holding the prompt and completion tokens < t (column 0:
  before the first completion token, column N: after the last). A PPO critic reads columns :N
  (V(s_t) before token t), a PRM or a value model columns 1: (the value after token t)."""
  return values(params, head, tokens_RxT, mask_RxT, cfg)[:, prompt_len - 1:]


def sequence_scores(params, head, tokens_BxT, mask_BxT, cfg: ModelConfig):
  """One score per row: the value at the row's last real token (B)."""
  v_BxT = values(params, head, tokens_BxT, mask_BxT, cfg)
  T = tokens_BxT.shape[1]
  last_B = T - 1 - jnp.argmax(mask_BxT[:, ::-1], axis=1)
  return jnp.take_along_axis(v_BxT, last_B[:, None], axis=1)[:, 0]


