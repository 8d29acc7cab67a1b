"""The jitted update steps against independent computations of the same quantities."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import re

from r1jax import model as M
from r1jax import sharding
from r1jax.rl import step as TS
from r1jax.rl.config import GRPOConfig
from r1jax.sft import step as sft_step

CFG = M.ModelConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
                    logits_chunk=24)
P, N, R = 5, 6, 8


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  toks = rng.integers(1, CFG.vocab_size, (R, P + N)).astype(np.int32)
  mask = np.ones((R, P + N), bool)
  mask[::2, :2] = False  # left-padded prompts
  cmask = np.ones((R, N), np.float32)
  cmask[1, 3:] = 0  # a short completion
  mask[1, P + 3:] = False
  return {"tokens": toks, "mask": mask, "completion_mask": cmask,
          "old_logp": rng.normal(-4, 0.3, (R, N)).astype(np.float32),
          "ref_logp": rng.normal(-4, 0.3, (R, N)).astype(np.float32),
          "adv": rng.normal(0, 1, R).astype(np.float32)}


def _ref_logp_jnp(params, b, temperature):
  """Full logits, log_softmax, gather: no chunking, no hidden-state path."""
  pos = M.positions_from_mask(b["mask"])
  logits, _ = M.forward(params, b["tokens"], pos, CFG, mask_BxT=b["mask"])
  lp = jax.nn.log_softmax(logits / temperature, -1)
  lp = jnp.take_along_axis(lp[:, :-1], b["tokens"][:, 1:, None], -1)[..., 0]
  return lp[:, P - 1:]


def _ref_logp(params, b, temperature):
  return np.asarray(_ref_logp_jnp(params, b, temperature), np.float64)


def _numpy_grpo(logp, b, beta, eps):
  ratio = np.exp(logp - b["old_logp"])
  A = b["adv"][:, None]
  surr = np.minimum(ratio * A, np.clip(ratio, 1 - eps, 1 + eps) * A)
  d = b["ref_logp"] - logp
  kl = np.exp(d) - d - 1
  per_tok = -(surr - beta * kl)
  m = b["completion_mask"]
  return np.mean((per_tok * m).sum(1) / m.sum(1))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_completion_logprobs_match_full_logits(temperature):
  params = M.init_params(jax.random.key(0), CFG, std=0.2)
  b = _batch()
  lp, ent = TS.completion_logprobs(params, b["tokens"], b["mask"], P, CFG, temperature)
  np.testing.assert_allclose(lp, _ref_logp(params, b, temperature), atol=2e-5)
  assert ent.shape == (R, N) and (np.asarray(ent) > 0).all()



@pytest.mark.parametrize("micro_batches", [2, 4])
def test_micro_batched_logprob_pass_matches_full_logits_and_keeps_row_order(micro_batches):
  """The reference / old-policy pass in A micro-batches of strided rows returns every row's
  log-probs in the batch's row order, equal to the full-logit computation (also on a mesh)."""
  params = M.init_params(jax.random.key(3), CFG, std=0.2)
  b = _batch(seed=4)
  want = _ref_logp(params, b, 0.7)
  got = TS.make_logprob_fn(CFG, 0.7, micro_batches)(params, b)
  np.testing.assert_allclose(got, want, atol=2e-5)
  mesh = sharding.make_mesh((2, 2, 2))
  with jax.set_mesh(mesh):
    sp = jax.device_put(params, M.param_shardings(CFG, mesh))
    got = TS.make_logprob_fn(CFG, 0.7, micro_batches)(sp, TS.shard_batch(b, mesh))
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)

def test_grpo_step_loss_matches_numpy_and_compiles_once():
  params = M.init_params(jax.random.key(1), CFG, std=0.2)
  g = GRPOConfig(num_generations=4, beta=0.04, max_completion_length=N)
  o = TS.OptimConfig(learning_rate=1e-3)
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  # Committed to the mesh, as init_sharded / checkpoint restore leave it in a run.
  params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  state = TS.init_state(params, TS.make_optimizer(o))
  step = TS.make_grpo_step(CFG, g, o, 1.0, TS.state_shardings(state), mesh)
  b = _batch()
  embed0 = np.asarray(params["embed"])  # the step donates (deletes) the input state
  want = _numpy_grpo(_ref_logp(params, b, 1.0), {k: np.asarray(v, np.float64) for k, v in b.items()}, 0.04, 0.2)
  state, m = step(state, b)
  np.testing.assert_allclose(float(m["loss"]), want, rtol=1e-4, atol=1e-6)
  assert int(state.step) == 1 and int(m["nonfinite"]) == 0
  # The parameters moved, and a second call with new data reuses the compiled step.
  assert not np.allclose(state.params["embed"], embed0)
  state, _ = step(state, _batch(1))
  assert step._cache_size() == 1


def test_nonfinite_update_is_skipped():
  params = M.init_params(jax.random.key(2), CFG, std=0.2)
  g = GRPOConfig(num_generations=4, beta=0.0, max_completion_length=N)
  o = TS.OptimConfig(learning_rate=1e-3)
  state = TS.init_state(params, TS.make_optimizer(o))
  before = jax.tree.map(np.asarray, state.params)
  step = TS.make_grpo_step(CFG, g, o, 1.0)
  b = _batch()
  b["adv"][0] = np.nan
  state, m = step(state, b)
  assert int(m["nonfinite"]) == 1 and int(state.step) == 0
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.params), before)


def test_sft_step_loss_is_masked_cross_entropy():
  params = M.init_params(jax.random.key(3), CFG, std=0.2)
  o = TS.OptimConfig(learning_rate=1e-3)
  state = TS.init_state(params, TS.make_optimizer(o))
  b = _batch()
  lmask = b["mask"].copy()
  lmask[:, :P] = False  # learn only the completion
  pos = M.positions_from_mask(b["mask"])
  logits = np.asarray(M.forward(params, b["tokens"], pos, CFG, mask_BxT=b["mask"])[0], np.float64)
  lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  lp = np.take_along_axis(logits[:, :-1], b["tokens"][:, 1:, None], -1)[..., 0] - lse[:, :-1]
  step = sft_step.make_sft_step(CFG, o)  # donates params: reference computed first
  _, m = step(state, {"tokens": b["tokens"], "mask": b["mask"], "loss_mask": lmask})
  w = lmask[:, 1:]
  np.testing.assert_allclose(float(m["loss"]), -(lp * w).sum() / w.sum(), rtol=1e-5)


def test_optim_config_errors():
  with pytest.raises(ValueError, match="optim.learning_rate=0"):
    TS.OptimConfig(learning_rate=0)
  with pytest.raises(ValueError, match="optim.decay='linear'"):
    TS.OptimConfig(decay="linear")
  with pytest.raises(ValueError, match=re.escape("optim.state_dtype='fp8' is not one of ('params', 'float32', 'bfloat16')")):
    TS.OptimConfig(state_dtype="fp8")


def test_bf16_moments_with_fp32_master_weights():
  """optim.state_dtype='bfloat16': the moments are stored in bfloat16 (half the bytes), the
  parameters stay float32, and three updates equal AdamW in float64 whose moments are stored
  rounded to bfloat16 (each update uses its fresh moments); 'float32' equals plain AdamW."""
  import ml_dtypes
  rng = np.random.default_rng(0)
  params = {"wq": rng.normal(0, 1, (16, 8)).astype(np.float32), "norm": rng.normal(1, 0.1, 8).astype(np.float32)}
  grads = [{k: rng.normal(0, 1e-2, v.shape).astype(np.float32) for k, v in params.items()} for _ in range(3)]
  bf16 = lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float64)
  for dtype, rounding in (("bfloat16", bf16), ("float32", lambda x: x.astype(np.float32).astype(np.float64))):
    o = TS.OptimConfig(learning_rate=1e-3, state_dtype=dtype, max_grad_norm=1e9)
    opt = TS.make_optimizer(o)
    p = jax.tree.map(jnp.asarray, params)
    state = opt.init(p)
    floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert len(floats) == 4 and all(x.dtype == jnp.dtype(dtype) for x in floats), [x.dtype for x in floats]
    update = jax.jit(opt.update)
    for g in grads:
      u, state = update(jax.tree.map(jnp.asarray, g), state, p)
      p = optax.apply_updates(p, u)
    assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating))
    want = _numpy_adamw(params, grads, lambda t: o.learning_rate, o.b1, o.b2, o.weight_decay, 1e9,
                        {"wq": True, "norm": False}, round_state=rounding)
    for k in params:
      assert p[k].dtype == jnp.float32
      np.testing.assert_allclose(np.asarray(p[k]), want[k], rtol=0, atol=2e-6, err_msg=(dtype, k))


@pytest.mark.slow  # the full suite's (CI time): bf16 moments on one device run in CI
def test_bf16_moments_follow_their_parameters_on_a_mesh():
  """Under FSDP the bf16 moments are sharded like their parameters (no replicated copy), stay bf16
  through a GRPO update, and that update equals the un-sharded one."""
  params = M.init_params(jax.random.key(6), CFG, std=0.2)
  p0 = jax.tree.map(np.asarray, params)
  o = TS.OptimConfig(learning_rate=1e-3, state_dtype="bfloat16")
  g = GRPOConfig(num_generations=4, beta=0.04, max_completion_length=N)
  want, _ = TS.make_grpo_step(CFG, g, o, 1.0)(TS.init_state(jax.tree.map(jnp.array, params), TS.make_optimizer(o)),
                                              _batch())
  mesh = sharding.make_mesh((2, 2, 2))
  with jax.set_mesh(mesh):
    state = TS.init_state(jax.device_put(params, M.param_shardings(CFG, mesh)), TS.make_optimizer(o))
    step = TS.make_grpo_step(CFG, g, o, 1.0, TS.state_shardings(state), mesh)
    got, _ = step(state, TS.shard_batch(_batch(), mesh))
  for s in (state, got):
    moments = optax.tree_utils.tree_get_all_with_path(s.opt_state, "mu") + optax.tree_utils.tree_get_all_with_path(
        s.opt_state, "nu")
    assert len(moments) == 2
    for _, m in moments:
      for x, p in zip(jax.tree.leaves(m), jax.tree.leaves(s.params)):
        assert x.dtype == jnp.bfloat16 and x.sharding == p.sharding and p.dtype == jnp.float32
  _assert_same_first_adamw_step(got.params, want.params, p0, o)


def _assert_same_first_adamw_step(got, want, p0, o: TS.OptimConfig, atol=2e-6):
  """Two first AdamW steps from p0 agree. That step is p0 - lr * (g / (|g| + eps) + wd * p0 on
  matrices): where |g| is within ~1e3 eps (1e-5) of 0 but not 0, float rounding of g (summed in
  another order) moves the normalized step by up to lr. Elements are compared where the step is
  decided by the gradient's sign (|g / (|g| + eps)| > 0.999 in `want`) or by its absence (< 1e-3,
  e.g. embeddings of tokens not in the batch), which must be nearly all of them."""
  n_sure = n_all = 0
  leaves = zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got), jax.tree.leaves(p0),
               jax.tree.leaves(TS._decay_mask(p0)))
  for (path, w), g, p, decayed in leaves:
    w, g, p = np.asarray(w, np.float64), np.asarray(g, np.float64), np.asarray(p, np.float64)
    step = (p - w) / o.learning_rate - (o.weight_decay * p if decayed else 0.0)
    sure = (np.abs(step) > 0.999) | (np.abs(step) < 1e-3)
    np.testing.assert_allclose(g[sure], w[sure], atol=atol, err_msg=jax.tree_util.keystr(path))
    n_sure, n_all = n_sure + sure.sum(), n_all + sure.size
  assert n_sure > 0.99 * n_all, (n_sure, n_all)


# Each loss type and each split in CI; the other three pairs in the slow tier (CI time).
@pytest.mark.parametrize("accum,loss_type", [(2, "grpo"), (4, "dr_grpo"), (4, "token_mean")] + [
    pytest.param(a, l, marks=pytest.mark.slow) for a, l in ((4, "grpo"), (2, "dr_grpo"), (2, "token_mean"))])
def test_grad_accum_equals_whole_batch(loss_type, accum):
  """Summing weighted micro-batch gradients gives the whole batch's loss, gradient norm, KL and
  updated parameters, for every loss normalization (rows of unequal token counts included)."""
  params = M.init_params(jax.random.key(4), CFG, std=0.2)
  o = TS.OptimConfig(learning_rate=1e-3)
  b = _batch()
  b["completion_mask"][6, 1:] = 0  # rows with very different token counts in different micro-batches
  b["mask"][6, P + 1:] = False
  out = {}
  for A in (1, accum):
    g = GRPOConfig(num_generations=4, beta=0.04, max_completion_length=N, loss_type=loss_type, grad_accum=A)
    state = TS.init_state(jax.tree.map(jnp.array, params), TS.make_optimizer(o))
    state, m = TS.make_grpo_step(CFG, g, o, 1.0)(state, b)
    out[A] = (jax.tree.map(np.asarray, state.params), {k: float(v) for k, v in m.items()})
  (p1, m1), (pa, ma) = out[1], out[accum]
  for k in ("loss", "grad_norm", "kl", "entropy"):
    np.testing.assert_allclose(ma[k], m1[k], rtol=1e-5, atol=1e-7, err_msg=k)
  _assert_same_first_adamw_step(pa, p1, jax.tree.map(np.asarray, params), o)
  assert not np.allclose(p1["embed"], np.asarray(params["embed"]))


def test_grad_accum_must_divide_rows():
  with pytest.raises(ValueError, match="grpo.grad_accum=0"):
    GRPOConfig(grad_accum=0)


def test_grad_accum_on_mesh_equals_unsharded():
  """Micro-batches on a data x fsdp x tensor mesh (rows strided so each stays spread over the
  devices) update the parameters as the un-sharded whole-batch step does."""
  params = M.init_params(jax.random.key(5), CFG, std=0.2)
  p0 = jax.tree.map(np.asarray, params)  # the first step donates params
  o = TS.OptimConfig(learning_rate=1e-3)
  b = _batch()
  g1 = GRPOConfig(num_generations=4, beta=0.04, max_completion_length=N, loss_type="token_mean")
  state = TS.init_state(jax.tree.map(jnp.array, params), TS.make_optimizer(o))
  want, m1 = TS.make_grpo_step(CFG, g1, o, 1.0)(state, b)
  mesh = sharding.make_mesh((2, 2, 2))
  with jax.set_mesh(mesh):
    sp = jax.device_put(params, M.param_shardings(CFG, mesh))
    state = TS.init_state(sp, TS.make_optimizer(o))
    g2 = GRPOConfig(num_generations=4, beta=0.04, max_completion_length=N, loss_type="token_mean", grad_accum=2)
    step = TS.make_grpo_step(CFG, g2, o, 1.0, TS.state_shardings(state), mesh)
    got, m2 = step(state, TS.shard_batch(b, mesh))
  np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-5, atol=1e-7)
  _assert_same_first_adamw_step(got.params, want.params, p0, o)


# ----------------------------------------------------------------------------- update direction


def _ref_loss(params, b, beta, eps, temperature):
  """The GRPO loss of DeepSeekMath eq. 3 over full-logit log-probs, written without r1jax.rl."""
  pos = M.positions_from_mask(b["mask"])
  logits, _ = M.forward(params, b["tokens"], pos, CFG, mask_BxT=b["mask"])
  lp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, -1)
  lp = jnp.take_along_axis(lp[:, :-1], b["tokens"][:, 1:, None], -1)[..., 0][:, P - 1:]
  m, A = b["completion_mask"], b["adv"][:, None]
  lp = jnp.where(m > 0, lp, 0.0)
  ratio = jnp.exp(lp - jnp.where(m > 0, b["old_logp"], 0.0))
  surr = jnp.minimum(ratio * A, jnp.clip(ratio, 1 - eps, 1 + eps) * A)
  d = jnp.where(m > 0, b["ref_logp"], 0.0) - lp
  per_tok = -(surr - beta * (jnp.exp(d) - d - 1))
  return jnp.mean((per_tok * m).sum(1) / m.sum(1))


def test_one_step_follows_the_gradient_of_an_independent_loss():
  """One GRPO step (weight decay 0, temperature 0.7, near-on-policy ratios, some clipped): the
  gradient norm is that of jax.grad of the reference loss, the parameters move as optax's AdamW
  moves them on that gradient, and completions with A > 0 become likelier, those with A < 0 less."""
  T, lr, beta = 0.7, 1e-3, 0.04
  params = M.init_params(jax.random.key(6), CFG, std=0.2)
  b = _batch(2)
  ref_logp = jax.jit(_ref_logp_jnp, static_argnums=2)
  now = np.asarray(ref_logp(params, b, T), np.float32)
  rng = np.random.default_rng(7)
  b["old_logp"] = now + rng.normal(0, 0.15, now.shape).astype(np.float32)  # some ratios outside 1 +- 0.2
  b["ref_logp"] = now + rng.normal(0, 0.3, now.shape).astype(np.float32)
  b["adv"] = np.array([1.5, -1.0, 0.5, -0.5, 1.0, -1.5, 0.7, -0.7], np.float32)
  g = GRPOConfig(num_generations=4, beta=beta, max_completion_length=N)
  o = TS.OptimConfig(learning_rate=lr, weight_decay=0.0, max_grad_norm=1e9)
  want_g = jax.jit(jax.grad(_ref_loss), static_argnums=(2, 3, 4))(params, jax.tree.map(jnp.asarray, b), beta, 0.2, T)
  before = jax.tree.map(np.asarray, params)
  state = TS.init_state(jax.tree.map(jnp.array, params), TS.make_optimizer(o))
  state, m = TS.make_grpo_step(CFG, g, o, T)(state, b)
  want_norm = float(optax.tree.norm(want_g))
  assert want_norm > 1e-3 and float(m["grad_norm"]) > 0
  np.testing.assert_allclose(float(m["grad_norm"]), want_norm, rtol=1e-4)
  # AdamW's first step on the reference gradient, taken by optax directly.
  adam = optax.adamw(lr, b1=o.b1, b2=o.b2, weight_decay=0.0)
  upd, _ = adam.update(want_g, adam.init(params), params)
  want_p = optax.apply_updates(params, upd)
  for (path, got), w, gr, p0 in zip(jax.tree_util.tree_leaves_with_path(state.params), jax.tree.leaves(want_p),
                                   jax.tree.leaves(want_g), jax.tree.leaves(before)):
    gr = np.abs(np.asarray(gr))
    big = gr > 1e-3 * gr.max()  # Adam's first step is ~lr * sign(g): compare where the sign is certain
    np.testing.assert_allclose(np.asarray(got)[big], np.asarray(w)[big], rtol=1e-4, atol=lr * 1e-3,
                               err_msg=jax.tree_util.keystr(path))
    np.testing.assert_array_equal(np.asarray(got)[gr == 0], p0[gr == 0])  # no decay, no gradient: unchanged
  after = np.asarray(ref_logp(state.params, b, T))
  m_ = b["completion_mask"]
  rise = ((after - now) * m_).sum(1) / m_.sum(1)
  np.testing.assert_array_equal(np.sign(rise), np.sign(b["adv"]))


# ----------------------------------------------------------------------------- optimizer


def test_schedule_warmup_then_cosine_to_ten_percent():
  o = TS.OptimConfig(learning_rate=2e-3, warmup_steps=4, decay="cosine", total_steps=20)
  s = TS.schedule(o)
  steps = np.arange(0, 26)
  got = np.array([float(s(i)) for i in steps])
  frac = np.clip((steps - 4) / 16, 0, 1)
  want = np.where(steps < 4, 2e-3 * steps / 4, 2e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac))))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)
  assert got[4] == pytest.approx(2e-3) and got[20] == pytest.approx(2e-4) and got[25] == pytest.approx(2e-4)
  const = TS.schedule(TS.OptimConfig(learning_rate=3e-4, warmup_steps=2))
  np.testing.assert_allclose([float(const(i)) for i in range(5)], [0, 1.5e-4, 3e-4, 3e-4, 3e-4], rtol=1e-6)
  np.testing.assert_allclose(float(TS.schedule(TS.OptimConfig(learning_rate=3e-4))(0)), 3e-4, rtol=1e-7)


def _numpy_adamw(params, grads_seq, lr_fn, b1, b2, wd, max_norm, decay_mask, eps=1e-8, round_state=lambda x: x):
  """AdamW (decoupled decay, bias-corrected moments) after global-norm clipping, in NumPy; the
  moments are stored through `round_state` after each step's update (their storage dtype)."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  mu = {k: np.zeros_like(v) for k, v in p.items()}
  nu = {k: np.zeros_like(v) for k, v in p.items()}
  for t, g in enumerate(grads_seq, start=1):
    norm = np.sqrt(sum((np.asarray(v, np.float64) ** 2).sum() for v in g.values()))
    scale = min(1.0, max_norm / norm)
    lr = lr_fn(t - 1)
    for k in p:
      gk = np.asarray(g[k], np.float64) * scale
      mu_t = b1 * mu[k] + (1 - b1) * gk
      nu_t = b2 * nu[k] + (1 - b2) * gk ** 2
      u = (mu_t / (1 - b1 ** t)) / (np.sqrt(nu_t / (1 - b2 ** t)) + eps)
      mu[k], nu[k] = round_state(mu_t), round_state(nu_t)
      p[k] = p[k] - lr * (u + (wd * p[k] if decay_mask[k] else 0.0))
  return p


def test_optimizer_clips_decays_matrices_only_and_follows_the_schedule():
  """Two AdamW steps on gradients of norm 50 then 0.3 (the first clipped to 1: Adam is scale-free
  on one step, not on two), weight decay on matrices only, warmup learning rates: equal to NumPy
  AdamW and to optax's own chain."""
  o = TS.OptimConfig(learning_rate=1e-2, warmup_steps=2, b1=0.9, b2=0.99, weight_decay=0.1, max_grad_norm=1.0)
  rng = np.random.default_rng(0)
  params = {"embed": rng.normal(size=(5, 3)), "norm": 1 + rng.normal(size=3) * 0.1, "wq": rng.normal(size=(3, 3)),
            "bq": rng.normal(size=3)}
  params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  decay = TS._decay_mask(params)
  assert decay == {"embed": True, "norm": False, "wq": True, "bq": False}
  mp = TS._decay_mask(M.init_params(jax.random.key(0), CFG))
  for path, d in jax.tree_util.tree_leaves_with_path(mp):
    assert d == (path[-1].key in ("embed", "lm_head", "wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")), path
  assert not mp["final_norm"] and not all(jax.tree.leaves(mp["layers"]))
  grads = []
  for norm in (50.0, 0.3):
    g = {k: rng.normal(size=v.shape) for k, v in params.items()}
    s = norm / np.sqrt(sum((v ** 2).sum() for v in g.values()))
    grads.append({k: jnp.asarray(v * s, jnp.float32) for k, v in g.items()})
  opt = TS.make_optimizer(o)
  st, p = opt.init(params), params
  direct = optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(optax.linear_schedule(0.0, 1e-2, 2), b1=0.9, b2=0.99, weight_decay=0.1,
                                   mask=decay))
  dst, dp = direct.init(params), params
  for g in grads:
    u, st = opt.update(g, st, p)
    p = optax.apply_updates(p, u)
    du, dst = direct.update(g, dst, dp)
    dp = optax.apply_updates(dp, du)
  want = _numpy_adamw(params, grads, lambda t: 1e-2 * min(t / 2, 1.0), 0.9, 0.99, 0.1, 1.0, decay)
  for k in params:
    np.testing.assert_allclose(np.asarray(p[k]), want[k], rtol=1e-5, atol=1e-7, err_msg=k)
    np.testing.assert_allclose(np.asarray(p[k]), np.asarray(dp[k]), rtol=1e-6, atol=1e-8, err_msg=k)
  # Without the clip the second step would differ (the moments would hold the norm-50 gradient).
  unclipped = _numpy_adamw(params, grads, lambda t: 1e-2 * min(t / 2, 1.0), 0.9, 0.99, 0.1, 1e9, decay)
  assert max(np.abs(unclipped[k] - want[k]).max() for k in params) > 1e-3


def test_grpo_step_logs_the_scheduled_learning_rate():
  o = TS.OptimConfig(learning_rate=1e-3, warmup_steps=2, decay="cosine", total_steps=4, weight_decay=0.0)
  g = GRPOConfig(num_generations=4, beta=0.0, max_completion_length=N)
  state = TS.init_state(M.init_params(jax.random.key(8), CFG, std=0.2), TS.make_optimizer(o))
  step = TS.make_grpo_step(CFG, g, o, 1.0)
  lrs = []
  for i in range(4):
    state, m = step(state, _batch(i))
    lrs.append(float(m["learning_rate"]))
  np.testing.assert_allclose(lrs, [0.0, 5e-4, 1e-3, 1e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi / 2)))], rtol=1e-5)
