"""sampling.rollout_weights: the sampler's 8-bit copy of the projections (int8, fp8 e4m3) against a
NumPy reference of the format's rounding, and the sampler's draws against the quantized model's and
the float model's (the rollout mismatch it adds)."""
import dataclasses
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from r1jax import model as M
from r1jax.model import lora as L
from r1jax.rl import rollout_mismatch
from r1jax.sampling import sampler as S

CFG = M.ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
                    qkv_bias=True)
FORMATS = {"int8": (np.int8, 127.0), "fp8": (ml_dtypes.float8_e4m3fn, 448.0)}
PROJ = tuple(L.IN_DIMS)


@pytest.fixture(scope="module")
def params():
  return M.init_params(jax.random.key(0), CFG, std=0.3)


def _prompts():
  rng = np.random.default_rng(0)
  return [list(rng.integers(1, CFG.vocab_size, size=n)) for n in (5, 9, 3, 7, 4, 11, 6, 8)]


def _error_bound(w, scale_b, fmt):
  """|W - W_q * scale| allowed elementwise by the format's round-to-nearest of y = W / scale,
  |y| <= qmax. int8: half an integer step, scale / 2. e4m3 (3 mantissa bits, smallest normal 2^-6,
  subnormal step 2^-9): a normal y is within half its ulp, 2^(e-4) <= 2^-4 |y| (2^e <= |y|), a
  subnormal within 2^-10; so |W - W_q s| <= max(2^-4 |W|, 2^-10 s). Plus float32 rounding of the
  division and the product (2^-22 |W| covers both, with room)."""
  if fmt == "int8":
    return scale_b / 2 + 2 ** -22 * np.abs(w)
  return np.maximum(2 ** -4 * np.abs(w), 2 ** -10 * scale_b) + 2 ** -22 * np.abs(w)


@pytest.mark.parametrize("fmt", ["int8", "fp8"])
def test_decode_weights_are_8bit_within_the_formats_rounding(params, fmt):
  """Each projection becomes its 8-bit copy with scale max |W| over its input dims / qmax (a NumPy
  reference), within the format's rounding of W (`_error_bound`, reached to within a factor 2: the
  bound is not loose); everything else is the float weight in the compute dtype. In bfloat16 compute
  the copy stays 8-bit (a compute-dtype copy would read twice the bytes), half the projections'
  bytes."""
  np_dtype, qmax = FORMATS[fmt]
  scfg = S.SamplingConfig(rollout_weights=fmt)
  got = S.decode_weights(params, CFG, scfg)["layers"]
  for name, k in L.IN_DIMS.items():
    w = np.asarray(params["layers"][name], np.float64)
    axes = tuple(range(1, 1 + k))
    scale = np.abs(w).max(axis=axes) / qmax
    assert got[name].dtype == np_dtype, name
    np.testing.assert_allclose(np.asarray(got[f"{name}_qscale"], np.float64), scale, rtol=1e-6, err_msg=name)
    scale_b = np.expand_dims(scale, axes)
    deq = np.asarray(got[name]).astype(np.float64) * np.asarray(got[f"{name}_qscale"], np.float64).reshape(scale_b.shape)
    ratio = np.abs(deq - w) / _error_bound(w, scale_b, fmt)
    assert ratio.max() <= 1.0, (name, ratio.max())
    assert ratio.max() > 0.5, (name, ratio.max())  # the rounding the bound describes, not a looser one
  for key in ("attn_norm", "mlp_norm", "bq", "bk", "bv"):
    np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(params["layers"][key]))
  bf = dataclasses.replace(CFG, dtype="bfloat16")
  w_bf = S.decode_weights(params, bf, scfg)
  w_compute = S.decode_weights(params, bf, S.SamplingConfig())
  assert w_bf["embed"].dtype == jnp.bfloat16 and w_bf["layers"]["attn_norm"].dtype == jnp.bfloat16
  for name in PROJ:
    assert w_bf["layers"][name].dtype == np_dtype, name
    assert w_bf["layers"][name].nbytes * 2 == w_compute["layers"][name].nbytes


def test_the_8bit_weights_enter_the_decode_loop(params):
  """The jitted generate (bfloat16 compute) carries the fp8 projections into its decode loop and
  converts them there, at the matmul: no bfloat16 copy of them is made once before the loop."""
  bf = dataclasses.replace(CFG, dtype="bfloat16")
  toks, mask = S.pad_prompts(_prompts()[:2], (16,), 0)
  text = S.generate.lower(params, toks, mask, jax.random.key(0), bf,
                          S.SamplingConfig(max_new_tokens=4, temperature=0.0, prompt_buckets=(16,),
                                           rollout_weights="fp8")).as_text()
  # The decode loop: the while op whose state holds the most fp8 arrays (the prefill's layer scan
  # holds the stacked ones, 7); it must hold every layer's (unroll_decode: 2 layers x 7) ...
  loops = [line for line in text.splitlines() if "stablehlo.while" in line]
  carried = max(len(re.findall(r"tensor<[0-9x]*xf8E4M3FN>", line)) for line in loops)
  assert carried == 2 * len(PROJ), carried
  # ... and convert them in its body, from its state (%iterArg), at each step.
  converts = re.findall(r"stablehlo.convert %iterArg\S* : \(tensor<[0-9x]*xf8E4M3FN>\) -> tensor<[0-9x]*xbf16>", text)
  assert len(converts) == 2 * len(PROJ), converts


def _teacher_forced(p, prompts, tokens_RxN):
  """Greedy argmax and log-probs of each row's own tokens under weights `p` (float32 forward)."""
  arg, lp = [], []
  for pr, row in zip(prompts, tokens_RxN):
    seq = list(pr) + list(row)
    logits = M.forward(p, jnp.asarray([seq]), jnp.arange(len(seq))[None], CFG)[0][0, len(pr) - 1:len(seq) - 1]
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    arg.append(logp.argmax(-1))
    lp.append(logp[np.arange(len(row)), row])
  return np.stack(arg), np.stack(lp)


def test_sampler_draws_from_the_quantized_model_and_the_mismatch_is_measured(params):
  """Greedy decoding with rollout_weights int8 / fp8 (float32 compute) gives the teacher-forced
  argmax and log-probs of the dequantized weights W_q * scale (the sampler reports the policy it
  draws from), and against the float model, as the trainer computes it, a mismatch that
  `rollout_mismatch` measures nonzero; fp8's (3 mantissa bits: a relative rounding error up to
  2^-4, ~2.8x int8's RMS error of max|W| / 254 on these Gaussian weights) larger than int8's.
  The greedy choices, teacher-forced on the float model's greedy sequences (no divergence carried
  on): int8's agree with the float model's at >= 95% of the positions (measured 99%), fp8's at
  >= 75% (measured 84%); the flips are near-ties: this model's float margins (top-1 minus top-2
  logit) go down to 0.009, median 0.52, while int8 moves log-probs by 0.03 on average, fp8 by 0.11."""
  scfg = S.SamplingConfig(max_new_tokens=12, temperature=0.0, prompt_buckets=(16,))
  prompts = _prompts()
  toks, mask = S.pad_prompts(prompts, scfg.prompt_buckets, pad_id=0)
  ref = jax.device_get(S.generate(params, toks, mask, jax.random.key(1), CFG, scfg))
  mismatch = {}
  for fmt in ("int8", "fp8"):
    q = dataclasses.replace(scfg, rollout_weights=fmt)
    out = jax.device_get(S.generate(params, toks, mask, jax.random.key(1), CFG, q))
    layers = S.decode_weights(params, CFG, q)["layers"]
    deq = dict(params, layers=dict(params["layers"]))
    for name in PROJ:
      deq["layers"][name] = L.dequantize(layers, name)
    arg, lp = _teacher_forced(deq, prompts, out["tokens"])
    np.testing.assert_array_equal(out["tokens"], arg)
    np.testing.assert_allclose(out["logp"], lp, atol=2e-5)
    _, trainer_lp = _teacher_forced(params, prompts, out["tokens"])
    m = {k: float(v) for k, v in rollout_mismatch.logprob_mismatch(trainer_lp, out["logp"], out["mask"]).items()}
    assert m["mismatch/abs_mean"] > 1e-3 and m["mismatch/k3"] > 0, (fmt, m)
    mismatch[fmt] = m
    agree, _ = _teacher_forced(deq, prompts, ref["tokens"])
    assert (agree == ref["tokens"]).mean() >= {"int8": 0.95, "fp8": 0.75}[fmt], fmt
  assert mismatch["fp8"]["mismatch/abs_mean"] > mismatch["int8"]["mismatch/abs_mean"], mismatch


def test_an_int8_lora_base_is_decoded_as_it_is(params):
  """With an int8 LoRA base (its '_qscale' already there), rollout_weights='fp8' leaves its
  projections and scales as they are (no second rounding), the adapters beside them."""
  lc = L.LoRAConfig(rank=2, alpha=4.0, base_dtype="int8")
  frozen = L.frozen_base(params, lc)
  adapters = L.init_adapters(jax.random.key(1), CFG, lc)
  got = S.decode_weights(L.combine(frozen, adapters, lc.scale), CFG, S.SamplingConfig(rollout_weights="fp8"))["layers"]
  for name in PROJ:
    assert got[name] is frozen["layers"][name] and got[f"{name}_qscale"] is frozen["layers"][f"{name}_qscale"]
    assert f"{name}_lora_a" in got


def test_bad_rollout_weights():
  with pytest.raises(ValueError, match=r"sampling.rollout_weights='fp16' is not one of \('compute', 'int8', 'fp8'\)"):
    S.SamplingConfig(rollout_weights="fp16")
