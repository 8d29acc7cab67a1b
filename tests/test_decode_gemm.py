"""Decode projections (`r1jax.model.decode_gemm`): split-K in XLA and the Pallas small-M GEMM
(interpreted on CPU) against NumPy float64, and the sampler with them against the plain einsums."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import model as M
from r1jax.model import decode_gemm as G
from r1jax.model import lora as L
from r1jax.sampling import sampler as S

# (M, K, N, splits): decode-sized rows, N not a power of two (1152 = 9 x 128, 96, 48), K chunks
# that do not divide evenly among the splits (896 = 7 x 128 over 4; 64 = 4 x 16 over 3), rows
# over one block (300), no split (0, 1).
SHAPES = [(128, 896, 1152, 4), (5, 64, 96, 3), (3, 4864, 896, 8), (20, 160, 48, 1), (300, 64, 32, 2),
          (7, 896, 896, 0)]


def _case(M_, K, N, dtype, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((M_, K)), dtype)
  w = jnp.asarray(rng.standard_normal((K, N)) / np.sqrt(K), dtype)
  ref = np.asarray(x, np.float64) @ np.asarray(w, np.float64)  # the rounded inputs, exact products
  return x, w, ref


@pytest.mark.parametrize("impl", ["xla", "pallas"])
@pytest.mark.parametrize("shape", SHAPES)
def test_split_k_matmul_equals_numpy(impl, shape):
  """bf16 inputs: the float32 sum of the splits' products, rounded once to bf16 (half an ulp,
  2^-9 relative, plus float32 accumulation); float32 inputs: within float32 accumulation."""
  M_, K, N, splits = shape
  f = G.pallas_matmul if impl == "pallas" else G.xla_matmul
  x, w, ref = _case(M_, K, N, jnp.bfloat16)
  got = f(x, w, splits)
  assert got.shape == (M_, N) and got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=2 ** -8, atol=1e-4)
  x, w, ref = _case(M_, K, N, jnp.float32, seed=1)
  np.testing.assert_allclose(np.asarray(f(x, w, splits), np.float64), ref, rtol=1e-5, atol=1e-5)


def test_split_counts_and_pallas_tiles():
  assert [G.split_count(896, s) for s in (0, 1, 2, 4, 5, 8, 9)] == [1, 1, 2, 4, 4, 8, 8]
  assert [G.split_count(4864, s) for s in (3, 8, 16)] == [2, 8, 16] and G.split_count(7, 4) == 1
  for M_, K, N in [(128, 896, 1152), (128, 4864, 896), (128, 896, 9728), (256, 1536, 2048), (128, 8960, 1536)]:
    for splits in (1, 2, 4, 8):
      BM, BN, BK, S_, stages, warps = G.pallas_blocks(M_, K, N, splits)
      assert N % BN == 0 and K % BK == 0 and 64 <= BN <= 128 and 64 <= BK <= 128 and BM == 128
      assert S_ == splits and (BM + BN) * BK * 2 * stages <= 160 * 1024


def test_decode_matmul_contracts_the_leading_weight_dims():
  """The o projection's layout, 'btnh,nhd->btd' (two contracted dims), and q/k/v's 'btd,dmh->btmh'."""
  rng = np.random.default_rng(2)
  h = jnp.asarray(rng.standard_normal((6, 1, 4, 16)), jnp.float32)
  wo = jnp.asarray(rng.standard_normal((4, 16, 48)), jnp.float32)
  wqkv = jnp.asarray(rng.standard_normal((48, 6, 16)), jnp.float32)
  for gemm in ("xla", "pallas"):
    got = G.decode_matmul(h, wo, 2, 4, gemm)
    np.testing.assert_allclose(got, np.einsum("btnh,nhd->btd", h, wo), rtol=1e-5, atol=1e-5)
    got = G.decode_matmul(got, wqkv, 1, 3, gemm)
    np.testing.assert_allclose(got, np.einsum("btd,dmh->btmh", np.einsum("btnh,nhd->btd", h, wo), wqkv),
                               rtol=1e-5, atol=1e-4)


CFG = M.ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
                    qkv_bias=True)


@pytest.mark.parametrize("gemm,split_k,fuse", [("xla", 4, False), ("pallas", 4, True)] + [  # the rest: CI time
    pytest.param(*a, marks=pytest.mark.slow) for a in (("xla", 4, True), ("pallas", 0, False))])
def test_sampler_with_split_k_projections_equals_plain(gemm, split_k, fuse):
  """Greedy decoding at float32 of a LoRA-adapted int8 base (adapters and scales applied after the
  split matmul): the same tokens and log-probs as the plain einsum projections."""
  params = M.init_params(jax.random.key(0), CFG, std=0.3)
  lc = L.LoRAConfig(rank=4, alpha=8.0, base_dtype="int8")
  ad = L.init_adapters(jax.random.key(1), CFG, lc)
  ad = {"layers": {k: v if k.endswith("_a") else 0.3 * jax.random.normal(jax.random.key(2), v.shape)
                   for k, v in ad["layers"].items()}}
  params = L.combine(L.frozen_base(params, lc), ad, lc.scale)
  scfg = S.SamplingConfig(max_new_tokens=10, temperature=0.0, num_samples=2, prompt_buckets=(16,),
                          fuse_projections=fuse)
  rng = np.random.default_rng(0)
  toks, mask = S.pad_prompts([list(rng.integers(1, 97, size=n)) for n in (5, 9, 3)], (16,), pad_id=0)
  want = jax.device_get(S.generate(params, toks, mask, jax.random.key(1), CFG, scfg))
  cfg = dataclasses.replace(CFG, decode_split_k=split_k, decode_gemm=gemm)
  got = jax.device_get(S.generate(params, toks, mask, jax.random.key(1), cfg, scfg))
  np.testing.assert_array_equal(got["tokens"], want["tokens"])
  np.testing.assert_allclose(got["logp"], want["logp"], atol=2e-5)
  assert len(np.unique(want["tokens"])) > 5  # not a degenerate sequence


def test_config_errors():
  with pytest.raises(ValueError, match="model.decode_split_k=-1"):
    dataclasses.replace(CFG, decode_split_k=-1)
  with pytest.raises(ValueError, match="model.decode_gemm='cublas'"):
    dataclasses.replace(CFG, decode_gemm="cublas")
