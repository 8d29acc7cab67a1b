"""The fused log-prob head equals the plain full-logits computation in value and gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import logprob


def _plain(h, w, y, temperature):
  z = (h @ w) / temperature
  logz = jax.nn.logsumexp(z, axis=-1)
  logp = jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0] - logz
  p = jax.nn.softmax(z, axis=-1)
  return logp, logz - jnp.sum(p * z, axis=-1)


@pytest.mark.parametrize("B, T, D, V, tc, vc, temperature", [
    (3, 37, 16, 101, 8, 32, 1.0),    # both padded: 37 = 4 x 8 + 5 positions, 101 = 3 x 32 + 5 entries
    (2, 64, 8, 256, 64, 256, 0.7),   # one tile each way
    (1, 5, 12, 50, 16, 7, 1.3),      # a tile longer than the row; many small vocabulary tiles
])
def test_values_and_gradients_match_the_full_logits(B, T, D, V, tc, vc, temperature):
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(D, V)) * 0.5, jnp.float32)
  y = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
  y = y.at[0, 0].set(V - 1).at[0, 1].set(0)  # the last column (in the padded tile) and the first
  N = (B, T)
  got = logprob.fused_logprobs(h, w, y, temperature, tc, vc)
  want = _plain(h, w, y, temperature)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
  # Any upstream gradient of both outputs: random weights on logp and entropy.
  a, b = (jnp.asarray(rng.normal(size=N), jnp.float32) for _ in range(2))
  loss = lambda f: lambda h, w: jnp.sum(a * f(h, w)[0]) + jnp.sum(b * f(h, w)[1])
  fused = loss(lambda h, w: logprob.fused_logprobs(h, w, y, temperature, tc, vc))
  plain = loss(lambda h, w: _plain(h, w, y, temperature))
  for g, r in zip(jax.grad(fused, argnums=(0, 1))(h, w), jax.grad(plain, argnums=(0, 1))(h, w)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_no_tile_is_larger_than_asked():
  """The compiled backward holds tiles, not the N x V logits (XLA's own buffer accounting)."""
  N, D, V = 512, 16, 4096
  h, w, y = jnp.zeros((4, N // 4, D)), jnp.zeros((D, V)), jnp.zeros((4, N // 4), jnp.int32)
  f = lambda h, w: jnp.sum(logprob.fused_logprobs(h, w, y, 1.0, 16, 512)[0])
  fused = jax.jit(jax.grad(f, argnums=(0, 1))).lower(h, w).compile().memory_analysis().temp_size_in_bytes
  g = lambda h, w: jnp.sum(_plain(h, w, y, 1.0)[0])
  plain = jax.jit(jax.grad(g, argnums=(0, 1))).lower(h, w).compile().memory_analysis().temp_size_in_bytes
  assert fused < N * V * 4 / 4 < plain  # the full fp32 logits are 8 MiB; the plain backward holds several


def test_the_model_head_gives_the_same_grpo_gradient_with_either_implementation():
  """model.logprob_impl='fused' inside the policy's log-probs: same values and parameter gradients."""
  import dataclasses
  from r1jax import model as M
  from r1jax.rl import step as train_step
  cfg = M.ModelConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
                      tie_embeddings=True, logits_chunk=16)
  fused = dataclasses.replace(cfg, logprob_impl="fused", vocab_chunk=64)
  params = M.init_params(jax.random.key(0), cfg, std=0.3)
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(0, 300, (4, 20)), jnp.int32)
  mask = jnp.asarray(np.arange(20)[None] >= np.array([0, 2, 5, 0])[:, None])
  w = jnp.asarray(rng.normal(size=(4, 12)), jnp.float32)

  def f(p, c):
    logp, ent = train_step.completion_logprobs(p, tokens, mask, 8, c, temperature=0.9)
    return jnp.sum(w * logp) + 0.1 * jnp.sum(ent), (logp, ent)

  (va, (la, ea)), ga = jax.value_and_grad(f, has_aux=True)(params, cfg)
  (vb, (lb, eb)), gb = jax.value_and_grad(f, has_aux=True)(params, fused)
  np.testing.assert_allclose(lb, la, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(eb, ea, rtol=1e-5, atol=1e-5)
  for x, y in zip(jax.tree.leaves(gb), jax.tree.leaves(ga)):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)  # fp32 sums over 80 tokens in another order
