"""The GRPO policy loss: clipped surrogate + k3 KL, per token, aggregated per `loss_type`.

Implements the GRPO objective of DeepSeekMath eq. 3 (DeepSeek-R1 eq. 1), negated to a loss:
  rho_{i,t} = pi_theta(o_{i,t}) / pi_old(o_{i,t})               (per token, GRPO)
           or s_i = exp(mean_t log rho_{i,t})                   (per sequence, GSPO arXiv 2507.18071)
  l_{i,t}   = -min(rho * A_i, clip(rho, 1 - eps_low, 1 + eps_high) * A_i) + beta * KL_{i,t}
  KL_{i,t}  = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1    (k3, DeepSeekMath eq. 4, R1 eq. 2)
and aggregates l over valid tokens as in `aggregate`. eps_high > eps_low is DAPO's clip-higher
(DAPO sec. 3.1).

Shape letters: B rows (sequences), T completion tokens, V vocabulary. Log-probs are natural logs.
Masked positions may hold any finite or non-finite value: they are replaced before any exp, so
neither the loss nor its gradient sees them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.rl import rollout_mismatch
from r1jax.rl.config import GRPOConfig


def _float_dtype(x):
  return jnp.promote_types(jnp.asarray(x).dtype, jnp.float32)


def masked_sum(x, mask):
  """sum(x * mask), with masked-out entries of x ignored even if NaN/inf."""
  m = jnp.asarray(mask).astype(_float_dtype(x))
  return jnp.sum(jnp.where(m != 0, x, 0.0) * m)


def masked_mean(x, mask):
  """sum(x * mask) / max(sum(mask), 1): 0 (not NaN) when nothing is valid."""
  m = jnp.asarray(mask).astype(_float_dtype(x))
  return masked_sum(x, m) / jnp.maximum(jnp.sum(m), 1.0)


def token_logprobs(logits_BxTxV, targets_BxT):
  """log p(target) under softmax(logits), computed in float32 (float64 if logits are float64).

  Args:
    logits_BxTxV: unnormalized scores; position t scores the token targets_BxT[:, t].
    targets_BxT: int token ids.

  Returns:
    logp_BxT, nats, float32.
  """
  logits = jnp.asarray(logits_BxTxV)
  logp_BxTxV = jax.nn.log_softmax(logits.astype(_float_dtype(logits)), axis=-1)
  return jnp.take_along_axis(logp_BxTxV, jnp.asarray(targets_BxT)[..., None], axis=-1)[..., 0]


def entropy_from_logits(logits_BxTxV, mask_BxT):
  """Masked mean over tokens of the policy entropy -sum_v p log p, nats, computed in float32."""
  logits = jnp.asarray(logits_BxTxV)
  logp_BxTxV = jax.nn.log_softmax(logits.astype(_float_dtype(logits)), axis=-1)
  ent_BxT = -jnp.sum(jnp.exp(logp_BxTxV) * logp_BxTxV, axis=-1)
  return masked_mean(ent_BxT, mask_BxT)


def aggregate(loss_BxT, mask_BxT, loss_type: str, max_completion_length: int):
  """Reduce per-token losses to a scalar (REFERENCE.md sec. 1 table).

  'grpo': mean over all B rows of (sum over the row's tokens / its token count); a row with no
    valid token contributes 0 and still counts in B (as TRL does). DeepSeekMath eq. 3.
  'token_mean': sum over all tokens / valid tokens in the batch (DAPO sec. 3.3, TRL 'bnpo').
  'dr_grpo': sum over all tokens / (B * max_completion_length) (Dr. GRPO, arXiv 2503.20783, as
    TRL implements it: a constant normalizer instead of the per-sequence length).
  """
  m_BxT = jnp.asarray(mask_BxT).astype(loss_BxT.dtype)
  l_BxT = jnp.where(m_BxT != 0, loss_BxT, 0.0) * m_BxT
  B = l_BxT.shape[0]
  if loss_type == "grpo":
    return jnp.sum(l_BxT.sum(axis=1) / jnp.maximum(m_BxT.sum(axis=1), 1.0)) / B
  if loss_type == "token_mean":
    return l_BxT.sum() / jnp.maximum(m_BxT.sum(), 1.0)
  if loss_type == "dr_grpo":
    return l_BxT.sum() / (B * max_completion_length)
  raise ValueError(f"loss_type={loss_type!r} is not one of ('grpo', 'token_mean', 'dr_grpo')")


def log_importance_ratio(logp_BxT, old_logp_BxT, mask_BxT, level: str):
  """log rho: per token (`level='token'`), or the sequence's masked mean broadcast to every token
  (`level='sequence'`, GSPO's log s_i). Masked positions hold 0; a row with no valid token gets 0."""
  valid_BxT = jnp.asarray(mask_BxT) != 0
  log_rho_BxT = jnp.where(valid_BxT, logp_BxT - old_logp_BxT, 0.0)
  if level == "token":
    return log_rho_BxT
  if level == "sequence":
    m_BxT = jnp.asarray(mask_BxT).astype(log_rho_BxT.dtype)
    log_s_B = jnp.sum(log_rho_BxT * m_BxT, axis=1) / jnp.maximum(m_BxT.sum(axis=1), 1.0)
    return jnp.where(valid_BxT, log_s_B[:, None], 0.0)
  raise ValueError(f"importance_sampling_level={level!r} is not one of ('token', 'sequence')")


def grpo_loss(logp_BxT, old_logp_BxT, ref_logp_BxT, adv_B, mask_BxT, cfg: GRPOConfig, sampler_logp_BxT=None):
  """GRPO loss of one (mini)batch, differentiable w.r.t. logp_BxT; jit-able with cfg static.

  Args:
    logp_BxT: log pi_theta of the completion tokens (nats), the only input gradients flow to.
    old_logp_BxT: log pi_old (the sampling policy), treated as a constant.
    ref_logp_BxT: log pi_ref, or None when cfg.beta == 0 (given with beta == 0 it is only logged).
    adv_B: advantage of each row (see `advantages.group_advantages`), or of each token (B x T,
      `advantages.gae_advantages`).
    mask_BxT: valid completion tokens, bool or float weights.
    cfg: uses beta, eps_low, eps_high, loss_type, importance_sampling_level, max_completion_length,
      tis, tis_cap.
    sampler_logp_BxT: the sampler's log-probs of the tokens when old_logp_BxT is the trainer's
      (needed by cfg.tis != 'none': the surrogate, not the KL term, is weighted by
      `rollout_mismatch.tis_weights(old_logp, sampler_logp)`).

  Returns:
    (loss, metrics): loss a float32 scalar (float64 for float64 logp); metrics 'loss', 'kl' (masked token mean, only when
    ref_logp_BxT is given), 'clip_ratio/low_mean' (fraction of valid tokens with rho < 1 - eps_low
    and A < 0), 'clip_ratio/high_mean' (rho > 1 + eps_high and A > 0), 'clip_ratio/region_mean'
    (either): the tokens whose gradient the clip zeroes; with TIS 'tis/weight_mean' and
    'tis/capped_ratio' (fraction of valid tokens whose weight is the cap).
  """
  dtype = _float_dtype(logp_BxT)
  logp_BxT = jnp.asarray(logp_BxT).astype(dtype)
  old_logp_BxT = jax.lax.stop_gradient(jnp.asarray(old_logp_BxT).astype(dtype))
  adv = jax.lax.stop_gradient(jnp.asarray(adv_B).astype(dtype))
  adv_Bx1 = adv if adv.ndim == 2 else adv[:, None]  # per token (PPO with a critic) or per row
  mask_BxT = jnp.asarray(mask_BxT)
  m_BxT = mask_BxT.astype(dtype)
  valid_BxT = m_BxT != 0
  if logp_BxT.shape[1] > cfg.max_completion_length:
    raise ValueError(f"completion length T={logp_BxT.shape[1]} exceeds "
                     f"grpo.max_completion_length={cfg.max_completion_length}")
  if cfg.beta > 0 and ref_logp_BxT is None:
    raise ValueError(f"grpo.beta={cfg.beta} > 0 needs ref_logp_BxT "
                     "(set grpo.beta=0 to run without a reference)")
  if cfg.tis != "none" and sampler_logp_BxT is None:
    raise ValueError(f"grpo.tis={cfg.tis!r} needs sampler_logp_BxT (set grpo.tis='none' to run without)")

  rho_BxT = jnp.exp(log_importance_ratio(logp_BxT, old_logp_BxT, mask_BxT, cfg.importance_sampling_level))
  clipped_rho_BxT = jnp.clip(rho_BxT, 1.0 - cfg.eps_low, 1.0 + cfg.eps_high)
  loss_BxT = -jnp.minimum(rho_BxT * adv_Bx1, clipped_rho_BxT * adv_Bx1)

  metrics = {}
  if cfg.tis != "none":
    w_BxT = jax.lax.stop_gradient(rollout_mismatch.tis_weights(old_logp_BxT, sampler_logp_BxT, mask_BxT, cfg.tis,
                                                               cfg.tis_cap)).astype(dtype)
    loss_BxT = w_BxT * loss_BxT
    metrics["tis/weight_mean"] = masked_mean(w_BxT, m_BxT)
    metrics["tis/capped_ratio"] = masked_mean((w_BxT >= cfg.tis_cap * (1 - 1e-6)).astype(dtype), m_BxT)
  if ref_logp_BxT is not None:
    ref_logp_BxT = jax.lax.stop_gradient(jnp.asarray(ref_logp_BxT).astype(dtype))
    d_BxT = jnp.where(valid_BxT, ref_logp_BxT - logp_BxT, 0.0)
    kl_BxT = jnp.exp(d_BxT) - d_BxT - 1.0
    if cfg.beta > 0:
      loss_BxT = loss_BxT + cfg.beta * kl_BxT
    metrics["kl"] = jax.lax.stop_gradient(masked_mean(kl_BxT, m_BxT))

  loss = aggregate(loss_BxT, m_BxT, cfg.loss_type, cfg.max_completion_length)

  rho_BxT = jax.lax.stop_gradient(rho_BxT)
  low_BxT = (rho_BxT < 1.0 - cfg.eps_low) & (adv_Bx1 < 0)
  high_BxT = (rho_BxT > 1.0 + cfg.eps_high) & (adv_Bx1 > 0)
  metrics["clip_ratio/low_mean"] = masked_mean(low_BxT.astype(dtype), m_BxT)
  metrics["clip_ratio/high_mean"] = masked_mean(high_BxT.astype(dtype), m_BxT)
  metrics["clip_ratio/region_mean"] = masked_mean((low_BxT | high_BxT).astype(dtype), m_BxT)
  metrics["loss"] = jax.lax.stop_gradient(loss)
  return loss, metrics
