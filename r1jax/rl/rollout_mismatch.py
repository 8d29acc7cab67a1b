"""Rollout vs trainer numerics: the sampler's log-probs of its own tokens against the trainer's.

The sampler (KV-cache decode, its own attention kernel, bf16) and the trainer (the teacher-forced
forward of the update) compute log pi_old of the same tokens by different programs, so they
differ; with a large enough gap the "on-policy" update is off-policy (Yao et al. 2025, "Your
efficient RL framework secretly brings you off-policy RL training"; verl and slime log it).
Per valid completion token, delta = log pi_trainer - log pi_sampler:
  mean |delta|, max |delta|, and k3 = exp(delta) - delta - 1, whose mean over tokens drawn from
  the sampler estimates KL(pi_sampler || pi_trainer) without bias (Schulman's k3).
Truncated importance sampling (TIS) reweights the clipped surrogate by the capped ratio
pi_trainer / pi_sampler, per token or per sequence (the product over the row's tokens).

Shape letters: B rows, T completion tokens. Log-probs in nats.
"""
from __future__ import annotations

import jax.numpy as jnp


def _delta(trainer_logp_BxT, sampler_logp_BxT, mask_BxT):
  valid_BxT = jnp.asarray(mask_BxT) != 0
  d_BxT = jnp.asarray(trainer_logp_BxT) - jnp.asarray(sampler_logp_BxT)
  d_BxT = d_BxT.astype(jnp.promote_types(d_BxT.dtype, jnp.float32))  # float32 at least (bf16 in)
  return jnp.where(valid_BxT, d_BxT, 0.0), valid_BxT


def logprob_mismatch(trainer_logp_BxT, sampler_logp_BxT, mask_BxT) -> dict:
  """{'mismatch/abs_mean', 'mismatch/abs_max', 'mismatch/k3'} over valid tokens (0 if none)."""
  d_BxT, valid_BxT = _delta(trainer_logp_BxT, sampler_logp_BxT, mask_BxT)
  n = jnp.maximum(jnp.sum(valid_BxT), 1)
  k3_BxT = jnp.exp(d_BxT) - d_BxT - 1.0  # 0 where masked (d = 0)
  return {"mismatch/abs_mean": jnp.sum(jnp.abs(d_BxT)) / n, "mismatch/abs_max": jnp.max(jnp.abs(d_BxT)),
          "mismatch/k3": jnp.sum(k3_BxT) / n}


def tis_weights(trainer_logp_BxT, sampler_logp_BxT, mask_BxT, level: str, cap: float):
  """min(pi_trainer / pi_sampler, cap) per token ('token'), or min(prod_t ratio, cap) of the row
  broadcast to its tokens ('sequence'); 0 at masked positions. Computed as exp(min(log ratio,
  log cap)), so a long sequence's product cannot overflow."""
  d_BxT, valid_BxT = _delta(trainer_logp_BxT, sampler_logp_BxT, mask_BxT)
  if level == "sequence":
    d_BxT = jnp.broadcast_to(jnp.sum(d_BxT, axis=1, keepdims=True), d_BxT.shape)
  elif level != "token":
    raise ValueError(f"grpo.tis={level!r} is not one of ('token', 'sequence')")
  return jnp.where(valid_BxT, jnp.exp(jnp.minimum(d_BxT, jnp.log(cap))), 0.0)


def with_trainer_old_logp(batch: dict, trainer_logp_RxN) -> tuple[dict, dict]:
  """The update batch with old_logp the trainer's and sampler_logp the sampler's (its old_logp),
  and the mismatch metrics between them over its completion_mask."""
  batch = dict(batch, old_logp=trainer_logp_RxN, sampler_logp=batch["old_logp"])
  return batch, logprob_mismatch(trainer_logp_RxN, batch["sampler_logp"], batch["completion_mask"])
