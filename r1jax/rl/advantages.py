"""Group-relative advantages: outcome supervision and process supervision (DeepSeekMath sec. 4.1.2-4.1.3).

Rows are grouped contiguously: prompt i's G samples are rows i*G .. i*G+G-1. Shape letters:
B rows (= P prompts * G), P prompts, G group size, K steps per row (padded), T completion tokens.

The std uses ddof=1 (unbiased), as TRL and verl do (`torch.std`); DeepSeekMath does not say which.
With G = 2 and rewards (0, 1) this gives advantages -/+0.7070 (ddof=0 would give -/+0.9998).
A group whose rewards are all equal carries no signal: its advantage is exactly 0, tested by
equality of the rewards (not by std == 0, which float rounding of the mean can miss).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

STD_DDOF = 1
"""Delta degrees of freedom of every std here (unbiased, as torch.std in TRL and verl)."""
SCALES = ("group", "batch", "none")


def _float(x):
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _grouped(x_B, group_size: int):
  """[B, ...] -> [P, G, ...]."""
  B = x_B.shape[0]
  if group_size < 1 or B % group_size:
    raise ValueError(f"{B} rows do not split into groups of group_size={group_size}")
  return x_B.reshape(B // group_size, group_size, *x_B.shape[1:])


def group_advantages(rewards_B, group_size: int, scale: str = "group", eps: float = 1e-4):
  """Outcome advantage of every row, A_i = (r_i - mean(r_group)) / (std(r_group) + eps)
  (DeepSeekMath sec. 4.1.2, outcome supervision), the same value for every token of the row.

  Args:
    rewards_B: scalar reward per row, groups contiguous.
    group_size: G.
    scale: 'group' divides by the group's std, 'batch' by the std of all B rewards (TRL
      scale_rewards='batch'), 'none' only subtracts the group mean (Dr. GRPO).
    eps: added to the std (TRL: 1e-4) so tiny spreads do not blow up.

  Returns:
    adv_B, float32 (float64 for float64 input under x64); exactly 0 for groups whose rewards are all equal.
  """
  if scale not in SCALES:
    raise ValueError(f"scale={scale!r} is not one of {SCALES}")
  r_B = _float(rewards_B)
  r_PxG = _grouped(r_B, group_size)
  centered_PxG = r_PxG - r_PxG.mean(axis=1, keepdims=True)
  if scale == "group":
    adv_PxG = centered_PxG / (r_PxG.std(axis=1, ddof=STD_DDOF, keepdims=True) + eps)
  elif scale == "batch":
    adv_PxG = centered_PxG / (r_B.std(ddof=STD_DDOF) + eps)
  else:
    adv_PxG = centered_PxG
  informative_P = r_PxG.max(axis=1) > r_PxG.min(axis=1)
  return jnp.where(informative_P[:, None], adv_PxG, 0.0).reshape(r_B.shape)


def group_stats(rewards_B, group_size: int) -> dict:
  """Scalar diagnostics of the groups.

  Returns:
    frac_reward_zero_std: fraction of groups whose rewards are all equal (no learning signal).
    reward_group_std: mean over groups of the within-group std (ddof=STD_DDOF), reward units.
  """
  r_PxG = _grouped(_float(rewards_B), group_size)
  zero_P = r_PxG.max(axis=1) == r_PxG.min(axis=1)
  std_P = jnp.where(zero_P, 0.0, r_PxG.std(axis=1, ddof=STD_DDOF))
  return {"frac_reward_zero_std": zero_P.astype(r_PxG.dtype).mean(), "reward_group_std": jnp.mean(std_P)}


def process_advantages(step_rewards_BxK, step_end_BxK, step_mask_BxK=None, *, group_size: int,
                       num_tokens: int, eps: float = 1e-4):
  """Process-supervision advantages (DeepSeekMath sec. 4.1.3).

  Each group's step rewards are normalized over all steps of all its G outputs,
  r~ = (r - mean(R)) / (std(R) + eps); the advantage of token t of output i is the sum of the
  normalized rewards of output i's steps that end at or after t: A_{i,t} = sum_{index(j) >= t} r~_i^j.
  Tokens after a row's last step get 0. A group whose valid step rewards are all equal gets 0.

  Args:
    step_rewards_BxK: reward of step j of row i (padded to K steps).
    step_end_BxK: int, position in [0, num_tokens) of the step's last completion token (inclusive).
    step_mask_BxK: which steps exist (bool or 0/1); None = all.
    group_size: G.
    num_tokens: T, completion length of the returned array.
    eps: added to the std.

  Returns:
    adv_BxT, float32 (float64 for float64 input under x64).
  """
  r_BxK = _float(step_rewards_BxK)
  B, K = r_BxK.shape
  valid_BxK = jnp.ones((B, K), bool) if step_mask_BxK is None else jnp.asarray(step_mask_BxK).astype(bool)
  w_PxGK = _grouped(valid_BxK, group_size).reshape(-1, group_size * K).astype(r_BxK.dtype)
  r_PxGK = _grouped(r_BxK, group_size).reshape(-1, group_size * K)
  n_P = w_PxGK.sum(axis=1)
  mean_P = (w_PxGK * r_PxGK).sum(axis=1) / jnp.maximum(n_P, 1.0)
  dev_PxGK = jnp.where(w_PxGK > 0, r_PxGK - mean_P[:, None], 0.0)
  std_P = jnp.sqrt((dev_PxGK ** 2).sum(axis=1) / jnp.maximum(n_P - STD_DDOF, 1.0))
  big = jnp.finfo(r_BxK.dtype).max
  informative_P = (jnp.where(w_PxGK > 0, r_PxGK, -big).max(axis=1)
                   > jnp.where(w_PxGK > 0, r_PxGK, big).min(axis=1))
  norm_PxGK = jnp.where(informative_P[:, None], dev_PxGK / (std_P[:, None] + eps), 0.0)
  norm_BxK = jnp.where(valid_BxK, norm_PxGK.reshape(B, K), 0.0)
  t_T = jnp.arange(num_tokens)
  covers_BxKxT = jnp.asarray(step_end_BxK)[:, :, None] >= t_T[None, None, :]
  return jnp.einsum("bk,bkt->bt", norm_BxK, covers_BxKxT.astype(norm_BxK.dtype))


def gae_advantages(rewards_BxT, values_BxT, mask_BxT, gamma: float = 1.0, lam: float = 0.95):
  """Generalized advantage estimation over completion tokens (Schulman et al. 2016), PPO's
  advantages with a critic (InstructGPT, verl's `compute_gae_advantage_return`).

  delta_t = r_t + gamma V_{t+1} - V_t, A_t = sum_{l >= 0} (gamma lam)^l delta_{t+l}, returns
  A_t + V_t; V past a row's last valid token is 0 (the episode ends there). Positions outside
  `mask_BxT` (a row's padding after its last token) get advantage and return 0 and pass nothing on.

  Args:
    rewards_BxT: reward of each token (an outcome reward sits on the row's last valid token).
    values_BxT: the critic's V(s_t), the value before token t.
    mask_BxT: valid completion tokens (a prefix of each row).

  Returns:
    (adv_BxT, returns_BxT), float32 (float64 for float64 input under x64).
  """
  r = _float(rewards_BxT)
  v = _float(values_BxT).astype(r.dtype)
  m = jnp.asarray(mask_BxT).astype(r.dtype)
  r, v = r * m, v * m
  v_next = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1)
  delta = r + gamma * v_next - v

  def back(carry, xs):
    d_B, m_B = xs
    a_B = (d_B + gamma * lam * carry) * m_B
    return a_B, a_B

  _, adv_TxB = jax.lax.scan(back, jnp.zeros(r.shape[0], r.dtype), (delta.T, m.T), reverse=True)
  adv = adv_TxB.T
  return adv, (adv + v) * m


def outcome_token_rewards(rewards_B, mask_BxT):
  """B x T token rewards: each row's scalar reward on its last valid token, 0 elsewhere."""
  m = jnp.asarray(mask_BxT).astype(jnp.float32)
  T = m.shape[1]
  last_B = jnp.sum(m, axis=1).astype(jnp.int32) - 1
  at_last = (jnp.arange(T)[None] == last_B[:, None]) & (last_B[:, None] >= 0)
  return jnp.where(at_last, _float(rewards_B)[:, None], 0.0)


def whiten(x_BxT, mask_BxT, eps: float = 1e-8):
  """(x - mean) / std over the valid positions of the whole batch (verl's `masked_whiten`, ddof 0),
  0 at invalid ones."""
  x = _float(x_BxT)
  m = jnp.asarray(mask_BxT).astype(x.dtype)
  n = jnp.maximum(m.sum(), 1.0)
  mean = (x * m).sum() / n
  var = (((x - mean) * m) ** 2).sum() / n
  return (x - mean) * jax.lax.rsqrt(var + eps) * m
