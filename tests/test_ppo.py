"""PPO with a critic (grpo.advantage_estimator='gae'): GAE, the value loss, the critic's step and
the loop, each against an independent computation.

GAE against its definition summed directly in NumPy (not the recursion the library uses); the
clipped value loss and BCE against NumPy; the critic's values against a forward pass over each
row's own unpadded prefix; micro-batched critic steps against the whole batch; and the loop with
the stand-in sampler of test_grpo_loop: every update batch's advantages are recomputed from that
step's critic values and each row's own reward, the critic is trained on the returns, and a run
interrupted and resumed ends where the uninterrupted one does, critic included.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import heads
from r1jax.rl import head_step
from r1jax import model as M
from r1jax import sharding
from r1jax.rl import step as TS
from r1jax.rl import advantages as A
from r1jax.rl.config import GRPOConfig, PPOConfig

from test_grpo_loop import CFG, EXAMPLES, BY_QUESTION, G, N, TOK, _run, example_reward  # noqa: F401


def _gae_numpy(r, v, lengths, gamma, lam):
  """A_t = sum_{l=0}^{n-1-t} (gamma lam)^l delta_{t+l}, delta_t = r_t + gamma V_{t+1} - V_t, V_n = 0."""
  B, T = r.shape
  adv, ret = np.zeros((B, T)), np.zeros((B, T))
  for b in range(B):
    n = lengths[b]
    vn = lambda t: v[b, t] if t < n else 0.0
    delta = [r[b, t] + gamma * vn(t + 1) - v[b, t] for t in range(n)]
    for t in range(n):
      adv[b, t] = sum((gamma * lam) ** l * delta[t + l] for l in range(n - t))
      ret[b, t] = adv[b, t] + v[b, t]
  return adv, ret


def test_gae_outcome_rewards_and_whitening_match_numpy():
  rng = np.random.default_rng(0)
  B, T = 5, 9
  lengths = np.array([9, 4, 1, 0, 6])
  mask = np.arange(T)[None] < lengths[:, None]
  v = rng.normal(size=(B, T))
  v_padded = np.where(mask, v, 100.0)  # values past a row's end must not leak in
  R = rng.normal(size=B)
  r = np.asarray(A.outcome_token_rewards(R, mask))
  want_r = np.zeros((B, T))
  for b in range(B):
    if lengths[b]:
      want_r[b, lengths[b] - 1] = R[b]
  np.testing.assert_allclose(r, want_r, rtol=1e-6)
  for gamma, lam in ((1.0, 0.95), (0.9, 0.7), (1.0, 1.0), (0.8, 0.0)):
    adv, ret = A.gae_advantages(r, v_padded, mask, gamma, lam)
    want_adv, want_ret = _gae_numpy(want_r, v, lengths, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv), want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), want_ret, rtol=1e-5, atol=1e-5)
  # lam = 1, gamma = 1: the return of every token is the outcome (Monte-Carlo).
  _, ret = A.gae_advantages(r, v, mask, 1.0, 1.0)
  np.testing.assert_allclose(np.asarray(ret)[mask], np.repeat(R, lengths), rtol=1e-5)
  x = rng.normal(size=(B, T)) * 3 + 1
  w = np.asarray(A.whiten(x, mask))
  xv = x[mask]
  np.testing.assert_allclose(w[mask], (xv - xv.mean()) / xv.std(), rtol=1e-4, atol=1e-5)
  assert (w[~mask] == 0).all()


def test_value_losses_match_numpy():
  rng = np.random.default_rng(1)
  v, t, old = (rng.normal(size=(3, 6)) for _ in range(3))
  w = (rng.random((3, 6)) > 0.3).astype(np.float32)
  got = float(head_step.value_loss(jnp.asarray(v), jnp.asarray(t), jnp.asarray(w), "mse", jnp.asarray(old), 0.2))
  vc = old + np.clip(v - old, -0.2, 0.2)
  per = 0.5 * np.maximum((v - t) ** 2, (vc - t) ** 2)
  np.testing.assert_allclose(got, (per * w).sum() / w.sum(), rtol=1e-5)
  got = float(head_step.value_loss(jnp.asarray(v), jnp.asarray(t), jnp.asarray(w), "mse"))
  np.testing.assert_allclose(got, (0.5 * (v - t) ** 2 * w).sum() / w.sum(), rtol=1e-5)
  y = (rng.random((3, 6)) > 0.5).astype(np.float64)
  got = float(head_step.value_loss(jnp.asarray(v), jnp.asarray(y), jnp.asarray(w), "bce"))
  s = 1 / (1 + np.exp(-v))
  np.testing.assert_allclose(got, (-(y * np.log(s) + (1 - y) * np.log(1 - s)) * w).sum() / w.sum(), rtol=1e-5)
  with pytest.raises(ValueError, match="kind='l1'"):
    head_step.value_loss(jnp.asarray(v), jnp.asarray(t), jnp.asarray(w), "l1")


def test_completion_values_columns_and_micro_batched_value_step():
  """Column t of completion_values is the head on the hidden state after the prompt and
  completion tokens < t (each row's own unpadded prefix); a critic step in 2 micro-batches equals
  the whole batch's step."""
  params = M.init_params(jax.random.key(1), CFG, std=0.3)
  head = heads.init_scalar_head(jax.random.key(2), CFG)
  rng = np.random.default_rng(0)
  P, n = 4, 5
  toks = rng.integers(2, CFG.vocab_size, (4, P + n)).astype(np.int32)
  mask = np.ones(toks.shape, bool)
  mask[0, :2] = mask[2, :1] = False  # left padding
  got = np.asarray(heads.completion_values(params, head, toks, mask, P, CFG))
  assert got.shape == (4, n + 1)
  for b in range(4):
    real = toks[b][mask[b]][None]
    h, _ = M.hidden_states(params, real, np.arange(real.shape[1])[None], CFG)
    want = np.asarray(h, np.float64)[0] @ np.asarray(head["w"], np.float64) + float(head["b"])
    np.testing.assert_allclose(got[b], want[-(n + 1):], rtol=2e-4, atol=2e-5)
  batch = {"tokens": toks, "mask": mask, "target": rng.normal(size=(4, n)).astype(np.float32),
           "weight": (rng.random((4, n)) > 0.2).astype(np.float32), "old_values": got[:, :n].astype(np.float32)}
  o = TS.OptimConfig(learning_rate=1e-2, weight_decay=0.0)
  out = []
  for accum in (1, 2):
    state = TS.init_state(jax.tree.map(jnp.array, params), TS.make_optimizer(o), head=jax.tree.map(jnp.array, head))
    step = head_step.make_value_step(CFG, o, "mse", column="before", clip=0.2, grad_accum=accum)
    new, m = step(state, batch)
    out.append((jax.device_get(new.trained()), jax.device_get(m), jax.device_get(new.opt_state)))
  np.testing.assert_allclose(out[0][1]["loss"], out[1][1]["loss"], rtol=1e-5)
  np.testing.assert_allclose(out[0][1]["grad_norm"], out[1][1]["grad_norm"], rtol=1e-4)
  # Adam's moments hold the (clipped) gradient itself: equal up to float32 sums in another order,
  # whose error scales with each leaf's largest terms.
  for a, b in zip(jax.tree.leaves(out[0][2]), jax.tree.leaves(out[1][2])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max())
  # Adam's first step moves each weight by ~lr * sign(g): a gradient entry within float noise of 0
  # may move either way, so the weights agree to 1% of a step, not to float precision.
  for a, b in zip(jax.tree.leaves(out[0][0]), jax.tree.leaves(out[1][0])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-2 * o.learning_rate)
  v = got[:, :n]
  per = 0.5 * np.maximum((v - batch["target"]) ** 2, (v - batch["target"]) ** 2)  # old = v: the clip is inactive
  np.testing.assert_allclose(out[0][1]["loss"], (per * batch["weight"]).sum() / batch["weight"].sum(), rtol=1e-4)


def _critic_values(params, head, tokens, mask):
  """V before each completion token: the head on a full-logit-free forward pass (NumPy matmul)."""
  h, _ = M.hidden_states(params, jnp.asarray(tokens), M.positions_from_mask(jnp.asarray(mask)), CFG,
                         mask_BxT=jnp.asarray(mask))
  v = np.asarray(h, np.float64) @ np.asarray(head["w"], np.float64) + float(head["b"])
  P = tokens.shape[1] - N
  return v[:, P - 1:P - 1 + N]


@pytest.mark.slow  # the full suite's (CI time): the PPO loop end to end; its value step runs in CI
def test_ppo_loop_advantages_come_from_the_critic_and_the_critic_learns_the_returns(tmp_path, monkeypatch):
  """Two steps of PPO (mu = 1, one minibatch): step 1's update batch carries adv = whiten(GAE(the
  row's own reward on its last token, V of the initial critic = the policy's weights + a fresh
  head)), recomputed here; the critic is trained every step (finite loss, non-zero gradient)."""
  pcfg = PPOConfig(gamma=1.0, lam=0.9, critic_learning_rate=1e-2)
  g = GRPOConfig(num_generations=G, beta=0.0, max_completion_length=N, advantage_estimator="gae")
  init_head = jax.device_get(heads.init_scalar_head(jax.random.key(1), CFG))  # run_grpo's critic head: seed + 1
  out, calls, updates, init = _run(tmp_path, monkeypatch, steps=2, gcfg=g, tcfg_kw={}, ppo=pcfg)
  assert len(updates) == 2 and out["critic"] is not None
  questions, ro = calls[0]
  b = updates[0]["batch"]
  m = b["completion_mask"] > 0
  R = np.array([example_reward(_text, BY_QUESTION[q]) for q, _text in _rows_q(b)])
  v = _critic_values(init, init_head, b["tokens"], b["mask"])
  lengths = m.sum(1)
  r = np.zeros(m.shape)
  r[np.arange(len(R)), lengths - 1] = R
  adv, _ = _gae_numpy(r, v, lengths, 1.0, 0.9)
  adv = (adv - adv[m].mean()) / adv[m].std() * m
  np.testing.assert_allclose(b["adv"], adv, rtol=1e-3, atol=1e-4)
  h = out["history"]
  assert all(np.isfinite(x["critic/loss"]) and x["critic/grad_norm"] > 0 for x in h)


def _rows_q(batch):
  P = batch["tokens"].shape[1] - N
  return [(TOK.decode(t[:P][m[:P]]), TOK.decode(t[P:][m[P:]])) for t, m in zip(batch["tokens"], batch["mask"])]


@pytest.mark.slow
def test_ppo_run_resumes_with_its_critic(tmp_path, monkeypatch):
  """3 steps straight vs 2 steps, then the same command to 3: the same policy and critic."""
  pcfg = PPOConfig(critic_learning_rate=1e-2)
  g = GRPOConfig(num_generations=G, beta=0.0, max_completion_length=N, advantage_estimator="gae")
  full, *_ = _run(tmp_path / "a", monkeypatch, steps=3, gcfg=g, tcfg_kw={"seed": 3}, ppo=pcfg, save_every=1)
  _run(tmp_path / "b", monkeypatch, steps=2, gcfg=g, tcfg_kw={"seed": 3}, ppo=pcfg, save_every=1)
  resumed, *_ = _run(tmp_path / "b", monkeypatch, steps=3, gcfg=g, tcfg_kw={"seed": 3}, ppo=pcfg, save_every=1)
  assert len(resumed["history"]) == 1  # only step 3 ran
  for a, b in zip(jax.tree.leaves(jax.device_get((full["state"].params, full["critic"].trained()))),
                  jax.tree.leaves(jax.device_get((resumed["state"].params, resumed["critic"].trained())))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_ppo_config_errors_name_the_field():
  with pytest.raises(ValueError, match=r"ppo.lam=1.5 must be a number in \[0, 1\]"):
    PPOConfig(lam=1.5)
  with pytest.raises(ValueError, match="grpo.advantage_estimator='ppo' is not one of"):
    GRPOConfig(advantage_estimator="ppo")
  for field, value, allowed in (("gamma", -0.1, r"must be a number in \[0, 1\]"), ("value_clip", -0.2, "must be >= 0"),
                                ("critic_learning_rate", 0.0, "must be > 0"),
                                ("critic_warmup_steps", 1.5, "must be an int >= 0"),
                                ("whiten_advantages", "yes", "must be a bool")):
    with pytest.raises(ValueError, match=rf"^ppo\.{field}={value!r} {allowed}"):
      PPOConfig(**{field: value})
  assert dataclasses.replace(PPOConfig(), value_clip=0.0).value_clip == 0.0  # 0 = unclipped, allowed
