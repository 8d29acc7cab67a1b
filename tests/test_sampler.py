"""Sampler: KV-cache decoding against teacher-forced forward passes of the same model."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import attention as attn_lib
from r1jax import model as M
from r1jax.sampling import sampler as S

CFG = M.ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
                    qkv_bias=True)


@pytest.fixture(scope="module")
def params():
  # Larger init so the argmax is not a near-tie anywhere.
  return M.init_params(jax.random.key(0), CFG, std=0.3)


def _prompts():
  rng = np.random.default_rng(0)
  return [list(rng.integers(1, CFG.vocab_size, size=n)) for n in (5, 9, 3)]


def _teacher_forced_logits(params, seq):
  toks = jnp.asarray([seq], jnp.int32)
  pos = jnp.arange(len(seq))[None]
  return np.asarray(M.forward(params, toks, pos, CFG)[0][0])


@pytest.mark.parametrize("fuse", [False, True])  # fused q/k/v and gate/up: the same model
def test_greedy_equals_teacher_forced_argmax(params, fuse):
  scfg = S.SamplingConfig(max_new_tokens=12, temperature=0.0, prompt_buckets=(16,), fuse_projections=fuse)
  prompts = _prompts()
  toks, mask = S.pad_prompts(prompts, scfg.prompt_buckets, pad_id=0)
  out = jax.device_get(S.generate(params, toks, mask, jax.random.key(1), CFG, scfg))
  for i, p in enumerate(prompts):
    seq = list(p) + list(out["tokens"][i])
    logits = _teacher_forced_logits(params, seq)
    want = logits[len(p) - 1:len(seq) - 1].argmax(-1)
    np.testing.assert_array_equal(out["tokens"][i], want)
    # Returned log-probs equal a separate forward pass's log-probs of the same tokens.
    lp = jax.nn.log_softmax(logits[len(p) - 1:len(seq) - 1], -1)
    np.testing.assert_allclose(out["logp"][i], np.take_along_axis(np.asarray(lp), want[:, None], 1)[:, 0],
                               atol=2e-5)


def test_sampled_logprobs_match_forward_with_temperature(params):
  scfg = S.SamplingConfig(max_new_tokens=10, temperature=0.7, top_k=20, num_samples=3, prompt_buckets=(16,))
  prompts = _prompts()
  toks, mask = S.pad_prompts(prompts, scfg.prompt_buckets, pad_id=0)
  out = jax.device_get(S.generate(params, toks, mask, jax.random.key(2), CFG, scfg))
  assert out["tokens"].shape == (9, 10)
  for r in range(9):
    p = prompts[r // 3]
    seq = list(p) + list(out["tokens"][r])
    logits = _teacher_forced_logits(params, seq)[len(p) - 1:len(seq) - 1] / 0.7
    lp = np.asarray(jax.nn.log_softmax(logits, -1))
    np.testing.assert_allclose(out["logp"][r], lp[np.arange(10), out["tokens"][r]], atol=2e-5)
    # top-k: every sampled token is among the 20 most likely.
    ranks = (logits > logits[np.arange(10), out["tokens"][r]][:, None]).sum(-1)
    assert (ranks < 20).all()


def test_deterministic_and_samples_differ(params):
  scfg = S.SamplingConfig(max_new_tokens=8, temperature=1.0, num_samples=4, prompt_buckets=(16,))
  toks, mask = S.pad_prompts(_prompts(), scfg.prompt_buckets, pad_id=0)
  a = jax.device_get(S.generate(params, toks, mask, jax.random.key(3), CFG, scfg))
  b = jax.device_get(S.generate(params, toks, mask, jax.random.key(3), CFG, scfg))
  c = jax.device_get(S.generate(params, toks, mask, jax.random.key(4), CFG, scfg))
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  assert (a["tokens"] != c["tokens"]).any()
  assert len({tuple(r) for r in a["tokens"][:4]}) > 1  # the n samples of one prompt differ


def test_tokens_after_eos_are_masked(params):
  # Make EOS the greedy choice at the 3rd step of row 0 by picking it from a greedy run.
  scfg = S.SamplingConfig(max_new_tokens=10, temperature=0.0, prompt_buckets=(16,))
  toks, mask = S.pad_prompts(_prompts(), scfg.prompt_buckets, pad_id=0)
  free = jax.device_get(S.generate(params, toks, mask, jax.random.key(0), CFG, scfg))
  eos = int(free["tokens"][0, 2])
  scfg = dataclasses.replace(scfg, eos_ids=(eos,), pad_id=0)
  out = jax.device_get(S.generate(params, toks, mask, jax.random.key(0), CFG, scfg))
  for r in range(3):
    row = list(free["tokens"][r])
    stop = row.index(eos) + 1 if eos in row else 10
    assert out["length"][r] == stop
    assert out["mask"][r, :stop].all() and not out["mask"][r, stop:].any()
    np.testing.assert_array_equal(out["tokens"][r, :stop], free["tokens"][r, :stop])
    assert (out["tokens"][r, stop:] == 0).all() and (out["logp"][r, stop:] == 0).all()
    assert out["truncated"][r] == (eos not in row)
  # suppress_eos: the same run never stops early.
  sup = jax.device_get(S.generate(params, toks, mask, jax.random.key(0), CFG,
                                  dataclasses.replace(scfg, suppress_eos=True)))
  assert (sup["length"] == 10).all() and (sup["tokens"] != eos).all()
  # Its log-probs are the model's (the trainer's), not those of the EOS-less distribution it drew from.
  seq = list(_prompts()[0]) + list(sup["tokens"][0])
  lp = np.asarray(jax.nn.log_softmax(_teacher_forced_logits(params, seq)[len(seq) - 11:len(seq) - 1], -1))
  np.testing.assert_allclose(sup["logp"][0], lp[np.arange(10), sup["tokens"][0]], atol=2e-5)


def test_causality(params):
  toks = jax.random.randint(jax.random.key(5), (2, 12), 0, CFG.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
  a = M.forward(params, toks, pos, CFG)[0]
  b = M.forward(params, toks.at[:, 7:].set(3), pos, CFG)[0]
  np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-6)
  assert np.abs(np.asarray(a[:, 7:] - b[:, 7:])).max() > 1e-3


def test_left_padding_does_not_change_logits(params):
  seq = jnp.asarray([[5, 6, 7, 8]])
  full = M.forward(params, seq, jnp.arange(4)[None], CFG)[0]
  padded = jnp.asarray([[0, 0, 0, 5, 6, 7, 8]])
  mask = padded != 0
  out = M.forward(params, padded, M.positions_from_mask(mask), CFG, mask_BxT=mask)[0]
  np.testing.assert_allclose(out[:, 3:], full, atol=1e-5)


def test_no_recompile_for_same_shapes(params):
  scfg = S.SamplingConfig(max_new_tokens=4, temperature=1.0, prompt_buckets=(16,))
  prompts = _prompts()
  toks, mask = S.pad_prompts(prompts, scfg.prompt_buckets, pad_id=0)
  S.generate(params, toks, mask, jax.random.key(0), CFG, scfg)
  before = S.generate._cache_size()
  toks2, mask2 = S.pad_prompts([p[:2] for p in prompts], scfg.prompt_buckets, pad_id=0)
  S.generate(params, toks2, mask2, jax.random.key(1), CFG, scfg)
  assert S.generate._cache_size() == before


def test_bad_config_and_long_prompt():
  with pytest.raises(ValueError, match="top_p"):
    S.SamplingConfig(top_p=0.0)
  with pytest.raises(ValueError, match=r"sampling.num_slots=-1 must be an int >= 0 \(0 = all rows\)"):
    S.SamplingConfig(num_slots=-1)
  with pytest.raises(ValueError, match="sampling.refills_per_step=0 must be an int >= 1"):
    S.SamplingConfig(refills_per_step=0)
  with pytest.raises(ValueError, match="sampling.merge_lora=1 must be a bool"):
    S.SamplingConfig(merge_lora=1)
  with pytest.raises(ValueError, match="prompt_buckets"):
    S.pad_prompts([[1] * 40], (16, 32), pad_id=0)


@pytest.mark.parametrize("mesh_shape,decode", [
    ((2, 2, 2), {"decode_attention": "xla"}), ((8, 1, 1), {"decode_attention": "xla"}),
    ((2, 2, 2), {"decode_attention": "pallas"}), ((2, 2, 2), {"decode_attention": "pallas", "decode_write_first": True}),
    ((2, 2, 2), {"decode_attention": "pallas", "decode_split_k": 4, "decode_gemm": "pallas"})])
def test_sharded_generation_equals_single_device(params, mesh_shape, decode):
  """The sampler on a mesh (parameters sharded by the rules table, prompts over data x fsdp)
  produces the same greedy tokens and log-probs as on one device (the decode kernel per shard;
  with write_first, over the cache holding the new token; split-K projections with heads split over
  'tensor', where the Pallas GEMM falls back to XLA's split)."""
  from r1jax import sharding
  cfg = dataclasses.replace(CFG, **decode)
  scfg = S.SamplingConfig(max_new_tokens=8, temperature=0.0, num_samples=2, prompt_buckets=(16,))
  prompts = _prompts() + [[4, 5, 6]] * 5
  toks, mask = S.pad_prompts(prompts, scfg.prompt_buckets, pad_id=0)
  want = jax.device_get(S.generate(params, toks, mask, jax.random.key(0), CFG, scfg))
  mesh = sharding.make_mesh(mesh_shape)
  with jax.set_mesh(mesh):
    sp = jax.device_put(params, M.param_shardings(CFG, mesh))
    bs = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    got = jax.device_get(S.generate(sp, jax.device_put(toks, bs), jax.device_put(mask, bs), jax.random.key(0),
                                    cfg, scfg))
  np.testing.assert_array_equal(got["tokens"], want["tokens"])
  np.testing.assert_allclose(got["logp"], want["logp"], atol=1e-5)


@pytest.mark.parametrize("attention,unroll,write_first", [("pallas", False, False), ("pallas", True, False),
                                                          ("pallas", True, True), ("xla", True, False)])
def test_decode_variants_match_teacher_forcing(params, attention, unroll, write_first):
  """The fused decode-attention kernel (interpreted on CPU) and the per-layer cache buffers give
  the teacher-forced greedy tokens and log-probs of the stacked XLA path, with left padding, an
  all-padding row and (pallas) a cache rounded up to whole blocks; write_first: the kernel over a
  cache that holds the new token already."""
  cfg = dataclasses.replace(CFG, decode_attention=attention, unroll_decode=unroll, decode_write_first=write_first)
  scfg = S.SamplingConfig(max_new_tokens=10, temperature=0.0, num_samples=2, prompt_buckets=(16,))
  prompts = _prompts()
  toks, mask = S.pad_prompts(prompts, scfg.prompt_buckets, pad_id=0, batch_size=4)
  out = jax.device_get(S.generate(params, toks, mask, jax.random.key(1), cfg, scfg))
  stacked = dataclasses.replace(CFG, decode_attention="xla", unroll_decode=False)
  ref = jax.device_get(S.generate(params, toks, mask, jax.random.key(1), stacked, scfg))
  np.testing.assert_array_equal(out["tokens"], ref["tokens"])
  np.testing.assert_allclose(out["logp"], ref["logp"], atol=2e-5)
  for i, p in enumerate(prompts):
    seq = list(p) + list(out["tokens"][2 * i])
    logits = _teacher_forced_logits(params, seq)
    np.testing.assert_array_equal(out["tokens"][2 * i], logits[len(p) - 1:len(seq) - 1].argmax(-1))


@pytest.mark.parametrize("splits", [0, 1, 3])
def test_pallas_cached_attention_equals_xla(splits):
  """One decode step of attention: kernel vs the XLA reference, bf16 inputs, several windows,
  the cache streamed as one program per block (0), one per row (1) or two halves (3 -> 2)."""
  B, K, G, S_, H = 3, 2, 7, 512, 64
  ks = jax.random.split(jax.random.key(0), 5)
  q = jax.random.normal(ks[0], (B, 1, K * G, H), jnp.bfloat16)
  k = jax.random.normal(ks[1], (B, 1, K, H), jnp.bfloat16)
  v = jax.random.normal(ks[2], (B, 1, K, H), jnp.bfloat16)
  ck = jax.random.normal(ks[3], (B, K, S_, H), jnp.bfloat16)
  cv = jax.random.normal(ks[4], (B, K, S_, H), jnp.bfloat16)
  idx = jnp.arange(S_)
  cmask = jnp.stack([(idx >= 5) & (idx < 300), (idx >= 130) & (idx < 512), idx < 0])
  got = attn_lib.pallas_cached_attention(q, k, v, ck, cv, cmask, splits)
  f32 = lambda x: x.astype(jnp.float32)
  want = attn_lib.cached_attention(f32(q), f32(k), f32(v), jnp.ones((B, 1), bool), f32(ck), f32(cv), cmask)
  np.testing.assert_allclose(np.asarray(f32(got)), np.asarray(want), atol=3e-2, rtol=3e-2)


def test_decode_splits_divide_the_cache_into_whole_blocks():
  assert [attn_lib.decode_splits(768, w) for w in (0, 1, 2, 3, 4, 5, 6, 9)] == [6, 1, 2, 3, 3, 3, 6, 6]
  with pytest.raises(ValueError, match="model.decode_kv_splits=-1"):
    dataclasses.replace(CFG, decode_kv_splits=-1)


# ----------------------------------------------------------------------------- the sampling distribution


def _truncated_softmax(logits_V, temperature, top_k=0, top_p=1.0):
  """NumPy reference: softmax(logits / T), keep the k most likely, renormalize, then keep the
  smallest most-likely set whose mass reaches top_p (the token that crosses p included)."""
  z = np.asarray(logits_V, np.float64) / temperature
  p = np.exp(z - z.max())
  p /= p.sum()
  order = np.argsort(-z, kind="stable")
  if top_k:
    p[order[top_k:]] = 0.0
    p /= p.sum()
  if top_p < 1.0:
    before = np.cumsum(p[order]) - p[order]  # mass of the more likely tokens
    p[order[before >= top_p]] = 0.0
    p /= p.sum()
  return p


def _assert_frequencies(tokens, probs, what):
  """Chi-square goodness of fit on the kept tokens (p-value ~1e-6 threshold), nothing outside."""
  n = len(tokens)
  counts = np.bincount(np.asarray(tokens), minlength=len(probs))
  assert counts[probs == 0].sum() == 0, (what, np.nonzero(counts * (probs == 0))[0])
  kept = probs > 0
  chi2 = ((counts[kept] - n * probs[kept]) ** 2 / (n * probs[kept])).sum()
  df = max(int(kept.sum()) - 1, 1)
  z = 4.75  # one-sided normal quantile of 1e-6; Wilson-Hilferty approximation of the chi2 quantile
  limit = df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3
  assert chi2 < limit, (what, chi2, limit, counts / n, probs)


_LOGITS = np.array([0.3, -1.0, 2.0, -0.5, 1.0, -2.0, 1.5, 0.0], np.float32)  # shuffled: sorting matters


@pytest.mark.parametrize("temperature,top_k,top_p,kept", [
    (0.7, 0, 1.0, 8),
    (1.3, 3, 1.0, 3),  # exactly k kept
    (1.0, 0, 0.75, 3),  # cumulative 0.41, 0.66, 0.81: the third token crosses p and is kept
    (1.3, 4, 0.85, 3),  # top-k first (mass renormalized over 4), then top-p: 0.41, 0.70, 0.89
    (0.7, 0, 0.4, 1),  # the most likely token alone holds more than p
])
def test_next_token_frequencies_match_truncated_softmax(temperature, top_k, top_p, kept):
  n = 40000
  want = _truncated_softmax(_LOGITS, temperature, top_k, top_p)
  assert (want > 0).sum() == kept
  scfg = S.SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
  logits = jnp.broadcast_to(jnp.asarray(_LOGITS), (n, len(_LOGITS)))
  tok = np.asarray(jax.jit(S.next_token, static_argnums=2)(logits, jax.random.key(11), scfg))
  _assert_frequencies(tok, want, (temperature, top_k, top_p))


def _sorted_top_p_draw(logits, key, top_p):
  """Reference: the nucleus found by sorting (cumulative mass before each token < top_p; ties at
  the cutoff kept), the rest set to the float minimum, then jax.random.categorical."""
  sorted_l = jnp.sort(logits, axis=-1)[..., ::-1]
  p = jax.nn.softmax(sorted_l, axis=-1)
  keep = (jnp.cumsum(p, axis=-1) - p) < top_p
  cutoff = jnp.min(jnp.where(keep, sorted_l, jnp.inf), axis=-1, keepdims=True)
  return jax.random.categorical(key, jnp.where(logits < cutoff, jnp.finfo(logits.dtype).min, logits), axis=-1)


@pytest.mark.parametrize("vocab,scale,top_p", [(50, 1.0, 0.9), (1000, 3.0, 0.95), (7, 0.5, 0.5), (300, 4.0, 0.99),
                                               pytest.param(152064, 1.0, 0.95, marks=pytest.mark.slow)])  # CI time
def test_nucleus_sample_draws_the_sorted_top_p_token(vocab, scale, top_p):
  """The sort-free top-p draw is token for token the sort-based one under the same key: flat and
  peaked rows, rows with tied logits, one key for a batch and a key per row (as the sampler vmaps)."""
  rows = 32 if vocab < 10_000 else 8
  logits = jnp.asarray(np.random.default_rng(vocab).normal(size=(rows, vocab)) * scale, jnp.float32)
  logits = logits.at[:6, :20].set(logits[:6, :1])  # ties, the most likely among them in some rows
  for seed in range(2):
    key = jax.random.key(seed)
    np.testing.assert_array_equal(jax.jit(S.nucleus_sample, static_argnums=2)(logits, key, top_p),
                                  jax.jit(_sorted_top_p_draw, static_argnums=2)(logits, key, top_p))
  keys = jax.random.split(jax.random.key(7), len(logits))
  np.testing.assert_array_equal(jax.vmap(lambda l, k: S.nucleus_sample(l, k, top_p))(logits, keys),
                                jax.vmap(lambda l, k: _sorted_top_p_draw(l, k, top_p))(logits, keys))


def test_nucleus_sample_ends_on_nan_logits():
  """A diverged model's NaN logits do not keep the rounds going: the draw returns (the other rows'
  tokens unchanged)."""
  logits = jnp.asarray(np.random.default_rng(3).normal(size=(4, 64)), jnp.float32).at[1].set(jnp.nan)
  key = jax.random.key(0)
  got = jax.jit(S.nucleus_sample, static_argnums=2)(logits, key, 0.9)
  want = jax.jit(_sorted_top_p_draw, static_argnums=2)(logits, key, 0.9)
  np.testing.assert_array_equal(np.asarray(got)[[0, 2, 3]], np.asarray(want)[[0, 2, 3]])


def test_greedy_next_token_is_the_argmax():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(16, 50)), jnp.float32)
  got = S.next_token(logits, jax.random.key(0), S.SamplingConfig(temperature=0.0))
  np.testing.assert_array_equal(got, np.argmax(np.asarray(logits), -1))


def test_generated_first_tokens_follow_the_model_distribution(params):
  """Through `generate`: many samples of one prompt's first completion token are distributed as
  the teacher-forced softmax(logits / 0.7) truncated to top-k 12 and top-p 0.9, and each returned
  log-prob is the untruncated temperature-scaled log-prob of its token."""
  prompt = [5, 9, 3, 17]
  n = 6000
  scfg = S.SamplingConfig(max_new_tokens=1, temperature=0.7, top_k=12, top_p=0.9, num_samples=n, prompt_buckets=(8,))
  toks, mask = S.pad_prompts([prompt], scfg.prompt_buckets, pad_id=0)
  out = jax.device_get(S.generate(params, toks, mask, jax.random.key(12), CFG, scfg))
  logits = _teacher_forced_logits(params, prompt)[-1].astype(np.float64)
  want = _truncated_softmax(logits, 0.7, 12, 0.9)
  assert 2 <= (want > 0).sum() <= 12
  _assert_frequencies(out["tokens"][:, 0], want, "generate")
  lp = logits / 0.7 - np.log(np.exp(logits / 0.7 - (logits / 0.7).max()).sum()) - (logits / 0.7).max()
  np.testing.assert_allclose(out["logp"][:, 0], lp[out["tokens"][:, 0]], atol=2e-5)


def test_each_decode_step_draws_fresh_randomness():
  """Near-uniform logits (a model of tiny weights): consecutive sampled tokens coincide about 1/V
  of the time, as independent draws do; reusing one key at every step would repeat the first."""
  flat = M.init_params(jax.random.key(0), CFG, std=1e-4)
  scfg = S.SamplingConfig(max_new_tokens=12, temperature=1.0, num_samples=64, prompt_buckets=(8,))
  toks, mask = S.pad_prompts([[5, 9, 3]], scfg.prompt_buckets, pad_id=0)
  out = jax.device_get(S.generate(flat, toks, mask, jax.random.key(13), CFG, scfg))["tokens"]
  same = (out[:, 1:] == out[:, :-1]).mean()
  assert same < 4 / CFG.vocab_size, same  # 704 pairs: ~7 expected at 1/V, 704 if the key repeats
  assert len(np.unique(out)) > CFG.vocab_size // 2


# ----------------------------------------------------------------------------- continuous batching


def test_continuous_batching_equals_static_generation(params):
  """9 rows (3 prompts of different lengths x 3 samples) ending by EOS, by a per-row cap or at N,
  decoded in 4 slots refilled as rows end (at most 1 a step; stacked cache) and in 2 slots
  (2 a step; per-layer buffers; and so again through the Pallas kernel over buffers written before
  attention): the same tokens, log-probs, masks, lengths and truncation flags as static generation
  with the same key. Static rows stopped by a cap are prefixes of uncapped ones."""
  N = 16
  scfg = S.SamplingConfig(max_new_tokens=N, temperature=1.0, num_samples=3, eos_ids=(3, 7, 11, 19),
                          prompt_buckets=(16,))
  toks, mask = S.pad_prompts(_prompts(), scfg.prompt_buckets, pad_id=0)
  caps = np.array([16, 5, 16, 1, 9, 16, 3, 12, 16], np.int32)
  key = jax.random.key(21)
  free = jax.device_get(S.generate(params, toks, mask, key, CFG, scfg))
  want = jax.device_get(S.generate(params, toks, mask, key, CFG, scfg, caps))
  for r in range(9):
    L = int(want["length"][r])
    np.testing.assert_array_equal(want["tokens"][r, :L], free["tokens"][r, :L])
    assert L == min(caps[r], free["length"][r]) and want["truncated"][r] == (L < free["length"][r] or free["truncated"][r])
  assert (~want["truncated"]).sum() >= 2 and (want["length"] < caps).sum() >= 2 and (want["length"] == N).sum() >= 1
  for slots, refills, unroll, attention in ((4, 1, False, "xla"), (2, 2, True, "xla"), (2, 2, True, "pallas")):
    c = dataclasses.replace(scfg, continuous_batching=True, num_slots=slots, refills_per_step=refills)
    cfg = dataclasses.replace(CFG, unroll_decode=unroll, decode_attention=attention,
                              decode_write_first=attention == "pallas")
    got = jax.device_get(S.generate(params, toks, mask, key, cfg, c, caps))
    for k in ("tokens", "mask", "length", "truncated"):
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    np.testing.assert_allclose(got["logp"], want["logp"], atol=1e-5)
    # Every slot busy until the work runs out: far fewer steps than static batches of `slots` rows.
    assert want["length"].sum() / slots <= got["steps"] < want["length"].sum() / slots + N
