"""GRPO math (r1jax.rl) against an independent NumPy reference written from REFERENCE.md sec. 1.

The reference below uses plain float64 loops and derives the gradient of the loss w.r.t. logp
analytically; that gradient is itself checked by central finite differences.
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.rl import advantages as adv_lib
from r1jax.rl import dynamic_sampling as ds_lib
from r1jax.rl import losses as loss_lib
from r1jax.rl import rollout_mismatch
from r1jax.rl.config import GRPOConfig


@pytest.fixture
def x64():
  """float64 in JAX for this test only, so JAX and the float64 reference agree to ~1e-12."""
  prev = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", prev)


# ----------------------------------------------------------------------------- NumPy reference


def _std_ddof1(values):
  mean = sum(values) / len(values)
  return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def ref_group_advantages(rewards, G, scale, eps):
  rewards = [float(r) for r in rewards]
  batch_std = _std_ddof1(rewards)
  out = np.zeros(len(rewards))
  for p in range(len(rewards) // G):
    group = rewards[p * G:(p + 1) * G]
    if all(r == group[0] for r in group):
      continue
    mean = sum(group) / G
    for j, r in enumerate(group):
      denom = {"group": _std_ddof1(group) + eps, "batch": batch_std + eps, "none": 1.0}[scale]
      out[p * G + j] = (r - mean) / denom
  return out


def ref_process_advantages(step_rewards, step_end, step_valid, G, T, eps):
  B, K = step_rewards.shape
  out = np.zeros((B, T))
  for p in range(B // G):
    rows = range(p * G, (p + 1) * G)
    values = [float(step_rewards[b, k]) for b in rows for k in range(K) if step_valid[b, k]]
    if len(values) < 2 or all(v == values[0] for v in values):
      continue
    mean, sd = sum(values) / len(values), _std_ddof1(values)
    for b in rows:
      for k in range(K):
        if step_valid[b, k]:
          for t in range(T):
            if t <= step_end[b, k]:
              out[b, t] += (step_rewards[b, k] - mean) / (sd + eps)
  return out


def ref_grpo_loss(logp, old, ref, adv, mask, loss_type, level, beta, eps_low, eps_high, max_len, tis_w=None):
  """Loss, d loss / d logp, and metrics; straight from the formulas, one token at a time.
  tis_w: B x T truncated-importance weights of the surrogate (not of the KL term), or None."""
  B, T = logp.shape
  n = [sum(1 for t in range(T) if mask[b, t]) for b in range(B)]
  N = sum(n)
  lo, hi = 1.0 - eps_low, 1.0 + eps_high

  def weight(b):  # the aggregation's weight of one valid token of row b
    return {"grpo": 1.0 / (max(n[b], 1) * B), "token_mean": 1.0 / max(N, 1),
            "dr_grpo": 1.0 / (B * max_len)}[loss_type]

  def surrogate(rho, a):  # -min(rho A, clip(rho) A) and its derivative w.r.t. rho
    clipped = (a > 0 and rho > hi) or (a < 0 and rho < lo)
    return -min(rho * a, min(max(rho, lo), hi) * a), (0.0 if clipped else -a)

  loss, grad = 0.0, np.zeros((B, T))
  kl_sum = low = high = 0.0
  for b in range(B):
    if n[b] == 0:
      continue
    a = float(adv[b])
    if level == "sequence":
      s = math.exp(sum(logp[b, t] - old[b, t] for t in range(T) if mask[b, t]) / n[b])
    for t in range(T):
      if not mask[b, t]:
        continue
      w = weight(b)
      wt = 1.0 if tis_w is None else tis_w[b, t]
      rho = math.exp(logp[b, t] - old[b, t]) if level == "token" else s
      value, dvalue_drho = surrogate(rho, a)
      loss += w * wt * value
      if level == "token":
        grad[b, t] += w * wt * dvalue_drho * rho
      else:  # d s / d logp[b, u] = s / n_b for every valid u
        for u in range(T):
          if mask[b, u]:
            grad[b, u] += w * wt * dvalue_drho * s / n[b]
      low += (rho < lo and a < 0) / max(N, 1)
      high += (rho > hi and a > 0) / max(N, 1)
      if ref is not None:
        d = ref[b, t] - logp[b, t]
        kl = math.exp(d) - d - 1.0
        kl_sum += kl / max(N, 1)
        if beta > 0:
          loss += w * beta * kl
          grad[b, t] += w * beta * (1.0 - math.exp(d))
  metrics = {"loss": loss, "clip_ratio/low_mean": low, "clip_ratio/high_mean": high,
             "clip_ratio/region_mean": low + high}
  if ref is not None:
    metrics["kl"] = kl_sum
  return loss, grad, metrics


def ref_tis_weights(old, sampler, mask, level, cap):
  """min(pi_old / pi_sampler, cap) per valid token, or min(prod over the row's valid tokens, cap)."""
  B, T = old.shape
  w = np.zeros((B, T))
  for b in range(B):
    prod = 1.0
    for t in range(T):
      if mask[b, t]:
        prod *= math.exp(old[b, t] - sampler[b, t])
    for t in range(T):
      if mask[b, t]:
        w[b, t] = min(math.exp(old[b, t] - sampler[b, t]) if level == "token" else prod, cap)
  return w


def ref_mismatch(trainer, sampler, mask):
  d = [trainer[b, t] - sampler[b, t] for b, t in zip(*np.nonzero(mask))]
  return {"mismatch/abs_mean": sum(abs(x) for x in d) / len(d), "mismatch/abs_max": max(abs(x) for x in d),
          "mismatch/k3": sum(math.exp(x) - x - 1.0 for x in d) / len(d)}


def make_inputs(seed, P=6, G=4, T=7, garbage=1e3):
  """Random masks (some rows all-masked, some with holes), ratios spread to clip on both sides,
  advantages of both signs and some zero; masked positions hold garbage."""
  rng = np.random.default_rng(seed)
  B = P * G
  lengths = rng.integers(0, T + 1, B)
  lengths[:2] = (0, T)
  mask = (np.arange(T)[None] < lengths[:, None]) & (rng.random((B, T)) > 0.15)
  mask[0] = False
  logp = -rng.uniform(0.05, 3.0, (B, T))
  old = logp - rng.normal(0, 0.3, (B, 1)) - rng.normal(0, 0.15, (B, T))
  ref = logp + rng.normal(0, 0.3, (B, T))
  adv = rng.normal(0, 1, B)
  adv[rng.random(B) < 0.1] = 0.0
  logp[~mask], old[~mask], ref[~mask] = 30.0, garbage, -garbage
  return logp, old, ref, adv, mask


EPS_SETTINGS = [(0.2, 0.2), (0.2, 0.28), (3e-4, 4e-4)]
LOSS_TYPES = ("grpo", "token_mean", "dr_grpo")
LEVELS = ("token", "sequence")


@functools.cache
def _jitted_loss_and_grad(cfg, x64_enabled):  # one compile per config and precision
  del x64_enabled
  return jax.jit(jax.value_and_grad(functools.partial(loss_lib.grpo_loss, cfg=cfg), has_aux=True))


def _jax_loss_and_grad(logp, old, ref, adv, mask, cfg):
  fn = _jitted_loss_and_grad(cfg, jax.config.jax_enable_x64)
  (loss, metrics), grad = fn(jnp.asarray(logp), jnp.asarray(old), None if ref is None else jnp.asarray(ref),
                             jnp.asarray(adv), jnp.asarray(mask))
  return float(loss), np.asarray(grad), {k: float(v) for k, v in metrics.items()}


# ----------------------------------------------------------------------------- loss


@pytest.mark.parametrize("eps_low,eps_high", EPS_SETTINGS)
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_and_grad_match_numpy(x64, loss_type, level, beta, eps_low, eps_high):
  cfg = GRPOConfig(loss_type=loss_type, importance_sampling_level=level, beta=beta, eps_low=eps_low,
                   eps_high=eps_high, max_completion_length=9)
  for seed in range(3):
    logp, old, ref, adv, mask = make_inputs(seed)
    ref_arg = ref if (beta > 0 or seed == 0) else None  # beta = 0: with and without a reference
    want_loss, want_grad, want_m = ref_grpo_loss(logp, old, ref_arg, adv, mask, loss_type, level, beta,
                                                 eps_low, eps_high, cfg.max_completion_length)
    # The inputs exercise both clip sides, so the clip branches are really compared.
    assert want_m["clip_ratio/low_mean"] > 0 and want_m["clip_ratio/high_mean"] > 0
    loss, grad, m = _jax_loss_and_grad(logp, old, ref_arg, adv, mask, cfg)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-14)
    assert set(m) == set(want_m)
    for k in want_m:
      np.testing.assert_allclose(m[k], want_m[k], rtol=1e-12, atol=1e-14, err_msg=k)
    assert np.all(grad[~mask] == 0)
    assert np.any(grad != 0)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_reference_gradient_matches_finite_differences(loss_type, level):
  logp, old, ref, adv, mask = make_inputs(7, P=2, T=5)
  args = (old, ref, adv, mask, loss_type, level, 0.04, 0.2, 0.28, 6)
  _, grad, _ = ref_grpo_loss(logp, *args)
  h = 1e-6
  fd = np.zeros_like(logp)
  for b, t in zip(*np.nonzero(mask)):
    up, down = logp.copy(), logp.copy()
    up[b, t] += h
    down[b, t] -= h
    fd[b, t] = (ref_grpo_loss(up, *args)[0] - ref_grpo_loss(down, *args)[0]) / (2 * h)
  np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_float32_bool_and_float_masks(loss_type, level):
  cfg = GRPOConfig(loss_type=loss_type, importance_sampling_level=level, beta=0.04, eps_high=0.28,
                   max_completion_length=7)
  logp, old, ref, adv, mask = (x.astype(np.float32) if x.dtype == np.float64 else x for x in make_inputs(11))
  f64 = lambda x: x.astype(np.float64)
  want_loss, want_grad, _ = ref_grpo_loss(f64(logp), f64(old), f64(ref), f64(adv), mask, loss_type, level,
                                          0.04, 0.2, 0.28, 7)
  for m in (mask, mask.astype(np.float32)):
    loss, grad, _ = _jax_loss_and_grad(logp, old, ref, adv, m, cfg)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)
  out, _ = loss_lib.grpo_loss(jnp.asarray(logp, jnp.bfloat16), old, ref, adv, mask, cfg)
  assert out.dtype == jnp.float32


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_no_valid_token_gives_zero_loss_and_grad_without_nan(loss_type, level):
  cfg = GRPOConfig(loss_type=loss_type, importance_sampling_level=level, beta=0.04, max_completion_length=7)
  logp, old, ref, adv, _ = make_inputs(3)
  mask = np.zeros(logp.shape, bool)
  logp[:, 3], old[:, 4], ref[:, 5] = np.nan, np.inf, -np.inf
  loss, grad, m = _jax_loss_and_grad(logp, old, ref, adv, mask, cfg)
  assert loss == 0.0 and np.all(grad == 0) and all(v == 0.0 for v in m.values())


def test_mu1_loss_is_only_kl_but_gradient_is_not_zero():
  """At the first inner step pi_theta == pi_old: rho = 1, so with group-centred advantages the
  'grpo' surrogate averages to 0; the gradient is -A_i / (|o_i| B) per token (REFERENCE.md sec. 1)."""
  rng = np.random.default_rng(5)
  P, G, T = 4, 4, 6
  B = P * G
  mask = np.arange(T)[None] < rng.integers(1, T + 1, B)[:, None]
  logp = -rng.uniform(0.1, 2.0, (B, T)).astype(np.float32)
  adv = np.asarray(adv_lib.group_advantages(rng.integers(0, 2, B).astype(np.float32), G))
  assert np.any(adv != 0)
  cfg = GRPOConfig(loss_type="grpo", beta=0.0, max_completion_length=T)
  loss, grad, m = _jax_loss_and_grad(logp, logp, None, adv, mask, cfg)
  assert abs(loss) < 1e-6
  want_grad = -adv[:, None] * mask / (mask.sum(1, keepdims=True) * B)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-9)
  assert m["clip_ratio/region_mean"] == 0.0

  ref = logp + rng.normal(0, 0.2, (B, T)).astype(np.float32)
  cfg = dataclasses.replace(cfg, beta=0.04)
  loss, grad, _ = _jax_loss_and_grad(logp, logp, ref, adv, mask, cfg)
  kl = np.exp(ref - logp) - (ref - logp) - 1
  want_loss = 0.04 * np.mean((kl * mask).sum(1) / mask.sum(1))
  # atol: the surrogate's terms (up to ~1 in sum) cancel to 0 only up to float32 rounding (~1e-8 here,
  # bounded by 1e-6 above); the KL term is ~7e-4, so a wrong KL still fails by orders of magnitude.
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-7)
  want_grad += 0.04 * (1 - np.exp(ref - logp)) * mask / (mask.sum(1, keepdims=True) * B)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("tis", ["token", "sequence"])
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("loss_type", ["grpo", "token_mean"])
def test_tis_loss_grad_and_mismatch_match_numpy(x64, loss_type, level, tis):
  """TIS: the surrogate weighted by the capped trainer/sampler ratio (token or sequence level), the
  KL term not; the cap binds on some tokens and not on others. Masked positions hold garbage."""
  cap = 1.5
  cfg = GRPOConfig(loss_type=loss_type, importance_sampling_level=level, beta=0.04, eps_high=0.28,
                   max_completion_length=7, recompute_old_logp=True, tis=tis, tis_cap=cap)
  logp, old, ref, adv, mask = make_inputs(4)
  sampler = old + np.random.default_rng(9).normal(0, 0.3, old.shape)
  sampler[~mask] = np.nan
  w = ref_tis_weights(old, sampler, mask, tis, cap)
  assert 0 < (w[mask] == cap).mean() < 1
  want_loss, want_grad, want_m = ref_grpo_loss(logp, old, ref, adv, mask, loss_type, level, 0.04, 0.2, 0.28, 7, w)
  want_m |= {"tis/weight_mean": w[mask].mean(), "tis/capped_ratio": (w[mask] == cap).mean()}
  args = [jnp.asarray(x) for x in (old, ref, adv, mask)]
  fn = jax.jit(jax.value_and_grad(lambda lp: loss_lib.grpo_loss(lp, *args, cfg, jnp.asarray(sampler)), has_aux=True))
  (loss, m), grad = fn(jnp.asarray(logp))
  np.testing.assert_allclose(float(loss), want_loss, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-10, atol=1e-14)
  assert set(m) == set(want_m)
  for k in want_m:
    np.testing.assert_allclose(float(m[k]), want_m[k], rtol=1e-12, atol=1e-14, err_msg=k)
  # The logged mismatch between the trainer's and the sampler's log-probs of the same tokens.
  got = {k: float(v) for k, v in rollout_mismatch.logprob_mismatch(old, sampler, mask).items()}
  want = ref_mismatch(old, sampler, mask)
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k)
  with pytest.raises(ValueError, match="grpo.tis='token' needs sampler_logp_BxT"):
    loss_lib.grpo_loss(logp, old, ref, adv, mask, dataclasses.replace(cfg, tis="token"))


def test_loss_argument_errors():
  logp, old, ref, adv, mask = make_inputs(0)
  with pytest.raises(ValueError, match="grpo.beta=0.04 > 0 needs ref_logp_BxT"):
    loss_lib.grpo_loss(logp, old, None, adv, mask, GRPOConfig(beta=0.04, max_completion_length=7))
  with pytest.raises(ValueError, match="T=7 exceeds grpo.max_completion_length=6"):
    loss_lib.grpo_loss(logp, old, ref, adv, mask, GRPOConfig(max_completion_length=6))


def test_token_logprobs_and_entropy_in_float32():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(0, 3, (3, 5, 11)), jnp.bfloat16)
  targets = rng.integers(0, 11, (3, 5))
  mask = rng.random((3, 5)) > 0.3
  x = np.asarray(logits.astype(jnp.float32), np.float64)
  want_logp = np.zeros((3, 5))
  want_ent, count = 0.0, 0
  for b in range(3):
    for t in range(5):
      z = math.log(sum(math.exp(v) for v in x[b, t]))
      want_logp[b, t] = x[b, t, targets[b, t]] - z
      if mask[b, t]:
        want_ent -= sum(math.exp(v - z) * (v - z) for v in x[b, t])
        count += 1
  logp = loss_lib.token_logprobs(logits, targets)
  ent = loss_lib.entropy_from_logits(logits, mask)
  assert logp.dtype == jnp.float32 and ent.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(logp), want_logp, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(ent), want_ent / count, rtol=1e-5)
  assert float(loss_lib.entropy_from_logits(logits, np.zeros((3, 5), bool))) == 0.0


# ----------------------------------------------------------------------------- advantages


REWARDS_WITH_ZERO_STD_GROUPS = np.array([1, 1, 1, 1,  0, 0, 0, 0,  0.1, 0.1, 0.1, 0.1,  0, 1, 0, 0,
                                         0.3, 2.0, -1.0, 0.5], np.float32)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_numpy(scale):
  G = 4
  cases = [REWARDS_WITH_ZERO_STD_GROUPS]
  for seed in range(3):
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 2, 32).astype(np.float32) + (seed == 2) * rng.normal(0, 1, 32).astype(np.float32)
    cases.append(r)
  for r in cases:
    adv = np.asarray(adv_lib.group_advantages(r, G, scale))
    np.testing.assert_allclose(adv, ref_group_advantages(r, G, scale, 1e-4), rtol=1e-5, atol=1e-6)
    zero_std = np.repeat(np.ptp(r.reshape(-1, G), axis=1) == 0, G)
    assert np.all(adv[zero_std] == 0.0)  # exactly, not approximately
  adv = np.asarray(adv_lib.group_advantages(REWARDS_WITH_ZERO_STD_GROUPS, G, scale))
  assert np.all(adv[:12] == 0.0) and np.all(adv[12:] != 0)


def test_group_advantages_pin_unbiased_std_and_eps():
  adv = np.asarray(adv_lib.group_advantages(np.array([0.0, 1.0, 3.0, 3.0]), 2))
  # ddof=1: std(0, 1) = 0.70710678; ddof=0 would give 0.5 and advantages of +-0.9998.
  a = 0.5 / (math.sqrt(0.5) + 1e-4)
  np.testing.assert_allclose(adv, [-a, a, 0, 0], rtol=1e-6)
  np.testing.assert_allclose(adv[1], 0.7070068, rtol=1e-6)
  adv = np.asarray(adv_lib.group_advantages(np.array([0.0, 1.0, 0.0, 3.0]), 2, "batch", eps=0.0))
  # Batch mean 1, squared deviations 1 + 0 + 1 + 4 = 6, / (4 - 1): std sqrt(2); group means 0.5, 1.5.
  np.testing.assert_allclose(adv, np.array([-0.5, 0.5, -1.5, 1.5]) / math.sqrt(2), rtol=1e-6)
  adv = np.asarray(adv_lib.group_advantages(np.array([0.0, 1.0, 0.0, 3.0]), 2, "none"))
  np.testing.assert_allclose(adv, [-0.5, 0.5, -1.5, 1.5], rtol=1e-6)


def test_group_advantages_errors_and_stats():
  with pytest.raises(ValueError, match="do not split into groups of group_size=3"):
    adv_lib.group_advantages(np.zeros(8), 3)
  with pytest.raises(ValueError, match="scale='std' is not one of"):
    adv_lib.group_advantages(np.zeros(8), 4, "std")
  stats = adv_lib.group_stats(REWARDS_WITH_ZERO_STD_GROUPS, 4)
  np.testing.assert_allclose(float(stats["frac_reward_zero_std"]), 3 / 5)
  r = REWARDS_WITH_ZERO_STD_GROUPS.astype(np.float64)
  want = np.mean([0, 0, 0, _std_ddof1(list(r[12:16])), _std_ddof1(list(r[16:]))])
  np.testing.assert_allclose(float(stats["reward_group_std"]), want, rtol=1e-6)


def test_process_advantages_hand_example():
  # Group 0 (G = 2): row 0 has steps ending at tokens 1 and 4 with rewards 1 and 0; row 1 one step
  # ending at token 2 with reward 0. Steps {1, 0, 0}: mean 1/3, std (ddof=1) 1/sqrt(3), so the
  # normalized rewards are 2/sqrt(3), -1/sqrt(3), -1/sqrt(3). Group 1: all step rewards equal -> 0.
  s = 1 / math.sqrt(3)
  step_rewards = np.array([[1.0, 0.0], [0.0, 9.0], [0.5, 0.5], [0.5, 0.0]])
  step_end = np.array([[1, 4], [2, 0], [0, 3], [5, 0]])
  step_mask = np.array([[1, 1], [1, 0], [1, 1], [1, 0]], bool)
  adv = adv_lib.process_advantages(step_rewards, step_end, step_mask, group_size=2, num_tokens=6, eps=0.0)
  want = [[2 * s - s, 2 * s - s, -s, -s, -s, 0],
          [-s, -s, -s, 0, 0, 0],
          [0, 0, 0, 0, 0, 0],
          [0, 0, 0, 0, 0, 0]]
  np.testing.assert_allclose(np.asarray(adv), want, rtol=1e-6, atol=1e-7)


def test_process_advantages_match_numpy():
  for seed in range(3):
    rng = np.random.default_rng(seed)
    B, K, T, G = 8, 3, 9, 4
    step_rewards = rng.normal(0, 1, (B, K)).astype(np.float32)
    step_end = np.sort(rng.integers(0, T, (B, K)), axis=1)
    step_mask = rng.random((B, K)) > 0.3
    adv = adv_lib.process_advantages(step_rewards, step_end, step_mask, group_size=G, num_tokens=T)
    want = ref_process_advantages(step_rewards.astype(np.float64), step_end, step_mask, G, T, 1e-4)
    np.testing.assert_allclose(np.asarray(adv), want, rtol=1e-5, atol=1e-6)
    all_valid = adv_lib.process_advantages(step_rewards, step_end, group_size=G, num_tokens=T)
    np.testing.assert_allclose(np.asarray(all_valid), ref_process_advantages(
        step_rewards.astype(np.float64), step_end, np.ones((B, K), bool), G, T, 1e-4), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- config


def test_config_defaults_and_aliases():
  cfg = GRPOConfig()
  assert (cfg.eps_low, cfg.eps_high, cfg.loss_type, cfg.scale_rewards) == (0.2, 0.2, "grpo", "group")
  assert GRPOConfig(loss_type="bnpo").loss_type == "token_mean"
  assert GRPOConfig(loss_type="dapo").loss_type == "token_mean"
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.beta = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("field,value,allowed", [
    ("loss_type", "foo", "is not one of ('grpo', 'token_mean', 'dr_grpo')"),
    ("scale_rewards", "std", "is not one of ('group', 'batch', 'none')"),
    ("importance_sampling_level", "seq", "is not one of ('token', 'sequence')"),
    ("num_generations", 1, "must be an int >= 2"),
    ("mu", 0, "must be an int >= 1"),
    ("mu", 1.5, "must be an int >= 1"),
    ("num_minibatches", 0, "must be an int >= 1"),
    ("max_completion_length", 0, "must be an int >= 1"),
    ("ref_reset_every", -1, "must be an int >= 0"),
    ("beta", -0.1, "must be >= 0"),
    ("eps_low", 1.0, "must be in [0, 1)"),
    ("eps_high", -0.1, "must be >= 0"),
    ("dynamic_sampling", "yes", "must be a bool"),
    ("mask_truncated_completions", 1, "must be a bool"),
    ("recompute_old_logp", 1, "must be a bool"),
    ("tis", "seq", "is not one of ('none', 'token', 'sequence')"),
    ("tis", "token", "needs grpo.recompute_old_logp=True"),
    ("tis_cap", 0.0, "must be a number > 0"),
])
def test_config_validation_names_field_value_and_allowed(field, value, allowed):
  with pytest.raises(ValueError) as e:
    GRPOConfig(**{field: value})
  assert f"grpo.{field}={value!r} {allowed}" in str(e.value)
  with pytest.raises(ValueError, match=f"grpo.{field}="):
    dataclasses.replace(GRPOConfig(), **{field: value})


# ----------------------------------------------------------------------------- dynamic sampling


def test_keep_groups_mask():
  keep = ds_lib.keep_groups_mask(np.array([1, 1, 1,  0, 1, 0,  0, 0, 0,  0.5, 0.5, 0.25]), 3)
  np.testing.assert_array_equal(keep, [False, True, False, True])
  with pytest.raises(ValueError, match="group_size=4"):
    ds_lib.keep_groups_mask(np.zeros(6), 4)


def _round(k, rewards):
  B = len(rewards)
  return {"ids": 100 * k + np.arange(B), "tokens": np.tile(100 * k + np.arange(B)[:, None], (1, 3)),
          "texts": [f"r{k}-{i}" for i in range(B)]}, np.asarray(rewards, np.float32)


def test_group_buffer_fills_across_rounds_and_returns_exactly_num_groups():
  buf = ds_lib.GroupBuffer(num_groups=3, group_size=2)
  assert buf.add(*_round(1, [1, 1,  0, 1,  0, 0])) == 1
  assert not buf.ready and buf.num_kept == 1
  with pytest.raises(ValueError, match="only 1 of 3 informative groups after 1 rounds"):
    buf.take()
  assert buf.add(*_round(2, [1, 0,  1, 1,  0, 1,  1, 0])) == 3
  assert buf.ready
  batch, stats = buf.take()
  np.testing.assert_array_equal(batch["ids"], [102, 103, 200, 201, 204, 205])
  np.testing.assert_array_equal(batch["tokens"][:, 0], batch["ids"])
  assert batch["texts"] == ["r1-2", "r1-3", "r2-0", "r2-1", "r2-4", "r2-5"]
  np.testing.assert_array_equal(batch["rewards"], [0, 1, 1, 0, 0, 1])
  assert stats == {"rounds": 2, "groups_drawn": 7, "groups_kept": 4, "groups_dropped": 3,
                   "groups_surplus": 1, "groups_uninformative": 0}
  assert buf.num_kept == 0 and not buf.ready  # take() empties the buffer


def test_group_buffer_tops_up_with_dropped_groups_when_allowed():
  buf = ds_lib.GroupBuffer(num_groups=3, group_size=2)
  buf.add(*_round(1, [1, 1,  0, 1,  0, 0]))
  batch, stats = buf.take(allow_uninformative=True)
  np.testing.assert_array_equal(batch["ids"], [102, 103, 100, 101, 104, 105])
  assert stats["groups_uninformative"] == 2 and stats["groups_kept"] == 1
  buf.add(*_round(1, [1, 1]))
  with pytest.raises(ValueError, match="only 1 groups drawn, 3 needed"):
    buf.take(allow_uninformative=True)


def test_group_buffer_rejects_inconsistent_rounds():
  buf = ds_lib.GroupBuffer(num_groups=2, group_size=2)
  rows, r = _round(1, [0, 1, 1, 1])
  with pytest.raises(ValueError, match="'rewards' entry"):
    buf.add(dict(rows, rewards=r), r)
  with pytest.raises(ValueError, match=r"rows\['ids'\] has 3 rows, rewards_B has 4"):
    buf.add(dict(rows, ids=rows["ids"][:3]), r)
  buf.add(rows, r)
  with pytest.raises(ValueError, match="has fields"):
    buf.add({"ids": rows["ids"]}, r)


def test_rollout_rows_through_group_buffer_mix_prompt_buckets():
  """Rounds padded to different prompt buckets go through the buffer and come back as one
  rollout: informative groups in drawn order, prompts left-padded to the longest, rows intact."""
  from r1jax.sampling.rollout import Rollout
  G, N = 2, 3

  def rollout(P, B, base):
    pt = np.arange(B * P).reshape(B, P) + base
    pm = np.ones((B, P), bool)
    pm[:, 0] = False
    toks = np.arange(B * G * N).reshape(B * G, N) + base
    return Rollout(pt, pm, toks, toks * 0.5, np.ones_like(toks, bool), np.full(B * G, N),
                   np.zeros(B * G, bool), [f"{base}-{r}" for r in range(B * G)])

  r1, r2 = rollout(4, 2, 100), rollout(6, 2, 200)
  buf = ds_lib.GroupBuffer(num_groups=2, group_size=G)
  buf.add(r1.rows(G) | {"idx": np.repeat([10, 11], G)}, np.array([1.0, 1.0, 0.0, 1.0]))  # group 0 uninformative
  buf.add(r2.rows(G) | {"idx": np.repeat([20, 21], G)}, np.array([0.0, 1.0, 0.5, 0.5]))
  rows, stats = buf.take()
  ro = Rollout.from_rows(rows, G, pad_id=-1)
  assert list(rows["idx"][::G]) == [11, 20] and stats["groups_kept"] == 2
  assert ro.prompt_tokens.shape == (2, 6)
  np.testing.assert_array_equal(ro.prompt_tokens[0], [-1, -1] + list(r1.prompt_tokens[1]))
  np.testing.assert_array_equal(ro.prompt_mask[0], [False, False, False, True, True, True])
  np.testing.assert_array_equal(ro.prompt_tokens[1], r2.prompt_tokens[0])
  np.testing.assert_array_equal(ro.tokens, np.concatenate([r1.tokens[2:4], r2.tokens[0:2]]))
  assert ro.texts == ["100-2", "100-3", "200-0", "200-1"]
  np.testing.assert_array_equal(rows["rewards"], [0.0, 1.0, 0.0, 1.0])
  assert ro.train_batch(G)["tokens"].shape == (4, 6 + N)
