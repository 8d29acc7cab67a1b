"""One step's update from its groups: the batch (group advantages, completion mask), its
minibatches, the policy's passes over them (`PolicyUpdate`) and, for PPO, the critic's values, GAE
advantages and updates (`Critic`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import distributed
from r1jax.model import heads
from r1jax.rl import head_step
from r1jax.rl import step as train_step
from r1jax.rl import advantages as adv_lib
from r1jax.rl import rollout_mismatch
from r1jax.rl.collect import Groups
from r1jax.rl.config import GRPOConfig, PPOConfig


def build_batch(groups: Groups, gcfg: GRPOConfig) -> dict:
  """The host batch of the update: prompt + completion rows, group advantages, completion mask
  (truncated rows masked out when grpo.mask_truncated_completions)."""
  G, ro, total = gcfg.num_generations, groups.rollout, groups.total
  adv = np.asarray(adv_lib.group_advantages(total, G, gcfg.scale_rewards), np.float32)
  host = ro.train_batch(G) | {"adv": adv}
  host["completion_mask"] = host["completion_mask"].astype(np.float32)
  if gcfg.mask_truncated_completions:
    host["completion_mask"] = host["completion_mask"] * (~ro.truncated)[:, None]
  return host


def minibatches(host: dict, batch: dict, gcfg: GRPOConfig, seed: int, step: int, mesh):
  """The grpo.mu x grpo.num_minibatches minibatches of a step's batch, in update order: each inner
  iteration a fresh permutation of the rows (`default_rng([seed, step, iteration])`), cut into
  num_minibatches; one minibatch is the whole batch already on the devices (`batch`), more are
  sliced from `host` and sent one at a time. The policy and a PPO critic see the same ones."""
  rows = len(host["tokens"])
  mb = rows // gcfg.num_minibatches
  for it_mu in range(gcfg.mu):
    perm = np.random.default_rng([seed, step, it_mu]).permutation(rows)
    for j in range(gcfg.num_minibatches):
      if gcfg.num_minibatches == 1:
        yield batch
      else:
        sel = np.sort(perm[j * mb:(j + 1) * mb])
        yield train_step.shard_batch(jax.tree.map(lambda x: x[sel], host), mesh)


@dataclasses.dataclass(frozen=True)
class Critic:
  """PPO's value model (grpo.advantage_estimator='gae'): the critic's values of a rollout, the GAE
  advantages and returns built on them, and the critic's updates on the returns."""
  values_fn: Callable
  """Jitted `(params, head, batch) -> V_RxN`, the value before each completion token."""
  update: Callable
  """The jitted `head_step.make_value_step` (clipped MSE on the returns)."""
  pcfg: PPOConfig
  gcfg: GRPOConfig
  seed: int
  mesh: Any

  @classmethod
  def build(cls, model_cfg, params, pcfg: PPOConfig, gcfg: GRPOConfig, ocfg: train_step.OptimConfig, seed: int,
            mesh):
    """(critic, its initial state): the policy's weights copied, a fresh scalar head, AdamW at
    ppo.critic_learning_rate."""
    cocfg = dataclasses.replace(ocfg, learning_rate=pcfg.critic_learning_rate, warmup_steps=0)
    head = heads.init_scalar_head(jax.random.key(seed + 1), model_cfg, mesh)
    state = train_step.init_state(jax.tree.map(jnp.copy, params), train_step.make_optimizer(cocfg), head=head)
    N = gcfg.max_completion_length

    def values_fn(p, h, batch):
      P = batch["tokens"].shape[1] - N
      return heads.completion_values(p, h, batch["tokens"], batch["mask"], P, model_cfg)[:, :N]

    update = head_step.make_value_step(model_cfg, cocfg, "mse", column="before", clip=pcfg.value_clip,
                                       grad_accum=gcfg.grad_accum, shardings=train_step.state_shardings(state),
                                       mesh=mesh)
    return cls(jax.jit(values_fn), update, pcfg, gcfg, seed, mesh), state

  def advantages(self, critic_state, host: dict, total_R) -> dict:
    """`host` with adv (R x N: GAE over the outcome reward at each row's last token, whitened with
    ppo.whiten_advantages), returns and old_values (R x N) for the critic."""
    pcfg = self.pcfg
    batch = train_step.shard_batch({k: host[k] for k in ("tokens", "mask")}, self.mesh)
    v = np.asarray(distributed.to_host(self.values_fn(critic_state.params, critic_state.head, batch)), np.float32)
    m = host["completion_mask"]
    adv, ret = adv_lib.gae_advantages(adv_lib.outcome_token_rewards(total_R, m), v, m, pcfg.gamma, pcfg.lam)
    if pcfg.whiten_advantages:
      adv = adv_lib.whiten(adv, m)
    return host | {"adv": np.asarray(adv, np.float32), "returns": np.asarray(ret, np.float32), "old_values": v * m}

  def train(self, critic_state, host: dict, step: int):
    """The critic's updates over the step's minibatches; (state, mean metrics prefixed critic/)."""
    keys = ("tokens", "mask", "returns", "completion_mask", "old_values")
    h = {k: host[k] for k in keys}
    out = []
    for mb in minibatches(h, train_step.shard_batch(h, self.mesh), self.gcfg, self.seed, step, self.mesh):
      critic_state, m = self.update(critic_state, {"tokens": mb["tokens"], "mask": mb["mask"],
                                                   "target": mb["returns"], "weight": mb["completion_mask"],
                                                   "old_values": mb["old_values"]})
      out.append(m)
    out = jax.device_get(out)
    return critic_state, {f"critic/{k}": float(np.mean([m[k] for m in out])) for k in out[0]}


@dataclasses.dataclass(frozen=True)
class PolicyUpdate:
  """Reference log-probs (and with grpo.recompute_old_logp the trainer's pi_old), then grpo.mu passes
  over grpo.num_minibatches minibatches of a batch. Returns (state, per-update metrics, the
  sampler-vs-trainer mismatch metrics)."""
  update: Callable
  """The jitted `train_step.make_grpo_step`."""
  ref_logp_fn: Callable | None
  """Log-probs of the batch's completions under given parameters (reference, or trainer pi_old)."""
  gcfg: GRPOConfig
  seed: int
  mesh: Any

  def __call__(self, state: train_step.TrainState, host: dict, step: int):
    gcfg, mesh = self.gcfg, self.mesh
    batch = train_step.shard_batch(host, mesh)  # the one host -> device copy of the rollout
    ref_logp_fn = self.ref_logp_fn
    # With LoRA the reference is the frozen base alone (adapters off): no second copy of the weights.
    reference = state.frozen if state.frozen is not None and gcfg.beta > 0 else state.ref_params
    if reference is not None:
      batch["ref_logp"] = ref_logp_fn(reference, batch)
    mismatch = {}
    if gcfg.recompute_old_logp:  # one more forward pass: the trainer's pi_old
      batch, mismatch = rollout_mismatch.with_trainer_old_logp(batch, ref_logp_fn(state.policy(), batch))
      if gcfg.num_minibatches > 1:
        host |= {k: np.asarray(distributed.to_host(batch[k])) for k in ("old_logp", "sampler_logp")}
    step_metrics = []
    if gcfg.num_minibatches > 1 and reference is not None:
      host["ref_logp"] = np.asarray(distributed.to_host(batch["ref_logp"]))
    for minibatch in minibatches(host, batch, gcfg, self.seed, step, mesh):
      state, m = self.update(state, minibatch)
      step_metrics.append(m)
    if state.ref_params is not None:
      if gcfg.ref_reset_every and (step + 1) % gcfg.ref_reset_every == 0:
        state = state.replace(ref_params=jax.tree.map(jnp.copy, state.params))
    return state, jax.device_get(step_metrics), mismatch
