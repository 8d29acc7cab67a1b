"""The jitted update steps against independent computations of the same quantities."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import model as M
from r1jax import sharding
from r1jax import train_step as TS
from r1jax.grpo.config import GRPOConfig

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


def _ref_logp(params, b, temperature):
  """Full logits, log_softmax, gather: no chunking, no hidden-state path."""
  pos = M.positions_from_mask(b["mask"])
  logits, _ = M.forward(params, b["tokens"], pos, CFG, mask_BxT=b["mask"])
  lp = jax.nn.log_softmax(logits / temperature, -1)
  lp = jnp.take_along_axis(lp[:, :-1], b["tokens"][:, 1:, None], -1)[..., 0]
  return np.asarray(lp[:, P - 1:], np.float64)


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
  assert int(state["step"]) == 1 and int(m["nonfinite"]) == 0
  # The parameters moved, and a second call with new data reuses the compiled step.
  assert not np.allclose(state["params"]["embed"], embed0)
  state, _ = step(state, _batch(1))
  assert step._cache_size() == 1


def test_nonfinite_update_is_skipped():
  params = M.init_params(jax.random.key(2), CFG, std=0.2)
  g = GRPOConfig(num_generations=4, beta=0.0, max_completion_length=N)
  o = TS.OptimConfig(learning_rate=1e-3)
  state = TS.init_state(params, TS.make_optimizer(o))
  before = jax.tree.map(np.asarray, state["params"])
  step = TS.make_grpo_step(CFG, g, o, 1.0)
  b = _batch()
  b["adv"][0] = np.nan
  state, m = step(state, b)
  assert int(m["nonfinite"]) == 1 and int(state["step"]) == 0
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state["params"]), before)


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
  step = TS.make_sft_step(CFG, o)  # donates params: reference computed first
  _, m = step(state, {"tokens": b["tokens"], "mask": b["mask"], "loss_mask": lmask})
  w = lmask[:, 1:]
  np.testing.assert_allclose(float(m["loss"]), -(lp * w).sum() / w.sum(), rtol=1e-5)


def test_optim_config_errors():
  with pytest.raises(ValueError, match="optim.learning_rate=0"):
    TS.OptimConfig(learning_rate=0)
  with pytest.raises(ValueError, match="optim.decay='linear'"):
    TS.OptimConfig(decay="linear")


@pytest.mark.parametrize("loss_type", ["grpo", "token_mean", "dr_grpo"])
@pytest.mark.parametrize("accum", [2, 4])
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
    out[A] = (jax.tree.map(np.asarray, state["params"]), {k: float(v) for k, v in m.items()})
  (p1, m1), (pa, ma) = out[1], out[accum]
  for k in ("loss", "grad_norm", "kl", "entropy"):
    np.testing.assert_allclose(ma[k], m1[k], rtol=1e-5, atol=1e-7, err_msg=k)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=2e-6), pa, p1)
  assert not np.allclose(p1["embed"], np.asarray(params["embed"]))


def test_grad_accum_must_divide_rows():
  with pytest.raises(ValueError, match="grpo.grad_accum=0"):
    GRPOConfig(grad_accum=0)


def test_grad_accum_on_mesh_equals_unsharded():
  """Micro-batches on a data x fsdp x tensor mesh (rows strided so each stays spread over the
  devices) update the parameters as the un-sharded whole-batch step does."""
  params = M.init_params(jax.random.key(5), CFG, std=0.2)
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
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=2e-6),
               got["params"], want["params"])
