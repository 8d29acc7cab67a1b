"""SFT and the reward model against NumPy: the prompt-masked, packed SFT loss equals the mean
cross-entropy of each example's completion tokens computed alone; the Bradley-Terry loss and the
scalar head's sequence score equal their NumPy formulas; the SFT loop resumes bit-identically
after an interruption inside it; a reward model learns to order separable pairs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import heads
from r1jax.rl import head_step
from r1jax import model as M
from r1jax import sharding
from r1jax.rl import step as TS
from r1jax.sft import data as D
from r1jax.sft import loop as L
from r1jax.sft import step as sft_step

CFG = M.ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64)
BOS, EOS, PAD = 1, 2, 0


class IdTokenizer:
  """'3 4 5' -> [3, 4, 5]."""
  bos_id, eos_id, pad_id = BOS, EOS, PAD

  def encode_batch(self, texts):
    return [[int(x) for x in t.split()] for t in texts]


PAIRS = [("3 4 5", "6 7"), ("8 9", "10 11 12 13"), ("14", "15 16"), ("17 18 19 20", "21"), ("22 23", "24 25 26")]


def _numpy_loss(params, rows):
  """Each example alone in its own row (BOS + prompt + completion + EOS from position 0, right
  padding after it), full logits, NumPy log-softmax; the mean -log p of the completion tokens and
  EOS of all examples."""
  T = max(len(ids) for ids, _ in rows)
  toks = np.zeros((len(rows), T), np.int32)
  for r, (ids, _) in enumerate(rows):
    toks[r, :len(ids)] = ids
  pos = np.broadcast_to(np.arange(T), toks.shape)
  logits = np.asarray(M.forward(params, toks, pos, CFG, mask_BxT=toks > 0)[0], np.float64)
  nll = []
  for r, (ids, lm) in enumerate(rows):
    z = logits[r] - logits[r].max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll += [-logp[i - 1, ids[i]] for i in range(1, len(ids)) if lm[i]]
  return np.mean(nll)


def test_encode_masks_the_prompt_and_pack_keeps_examples_apart():
  rows, dropped = D.encode(PAIRS + [("1 " * 30, "2")], IdTokenizer(), max_len=12)
  assert dropped == 1 and len(rows) == 5
  ids, lm = rows[0]
  assert ids == [BOS, 3, 4, 5, 6, 7, EOS] and lm == [False] * 4 + [True] * 3
  packed = D.pack(rows, 12, PAD)
  assert len(packed["tokens"]) < len(rows)  # several examples share a row
  for r in range(len(packed["tokens"])):
    seg, pos = packed["segments"][r], packed["positions"][r]
    for s in set(seg[seg >= 0]):
      assert (pos[seg == s] == np.arange((seg == s).sum())).all()
  assert packed["loss_mask"].sum() == sum(sum(lm) for _, lm in rows)
  assert (packed["mask"] == (packed["segments"] >= 0)).all()
  assert len(D.pack(rows, 12, PAD, packing=False)["tokens"]) == len(rows)


@pytest.mark.parametrize("packing", [True, False])
def test_sft_loss_is_the_completion_cross_entropy_of_each_example_alone(packing):
  params = M.init_params(jax.random.key(0), CFG, std=0.3)
  rows, _ = D.encode(PAIRS, IdTokenizer(), max_len=12)
  batch = D.pack(rows, 12, PAD, packing=packing)
  got = float(sft_step.sft_loss(params, jax.tree.map(jnp.asarray, batch), CFG))
  np.testing.assert_allclose(got, _numpy_loss(params, rows), rtol=2e-5)


def test_bradley_terry_loss_and_sequence_scores_match_numpy():
  rng = np.random.default_rng(0)
  c, r = rng.normal(size=7).astype(np.float32), rng.normal(size=7).astype(np.float32)
  loss, acc = head_step.bradley_terry_loss(jnp.asarray(c), jnp.asarray(r))
  np.testing.assert_allclose(float(loss), np.mean(-np.log(1.0 / (1.0 + np.exp(-(c.astype(np.float64) - r))))),
                             rtol=1e-6)
  assert round(float(acc) * 7) == (c > r).sum()
  params = M.init_params(jax.random.key(1), CFG, std=0.3)
  head = heads.init_scalar_head(jax.random.key(2), CFG)
  toks = np.asarray([[0, 0, 5, 6, 7, 0], [3, 4, 5, 6, 7, 8]], np.int32)
  mask = toks > 0
  got = np.asarray(heads.sequence_scores(params, head, toks, mask, CFG))
  for b, last in ((0, 4), (1, 5)):  # left-padded prompt, right-padded completion: the last real token
    real = toks[b][mask[b]][None]
    h, _ = M.hidden_states(params, real, np.arange(real.shape[1])[None], CFG)
    want = np.asarray(h, np.float64)[0, -1] @ np.asarray(head["w"], np.float64) + float(head["b"])
    np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)


def test_reward_model_learns_to_order_separable_pairs():
  """Chosen rows end in token 30, rejected ones in 31: a few steps order every pair."""
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  rng = np.random.default_rng(0)
  body = rng.integers(3, 29, (16, 6)).astype(np.int32)
  batch = {"chosen_tokens": np.concatenate([body, np.full((16, 1), 30, np.int32)], 1),
           "rejected_tokens": np.concatenate([body, np.full((16, 1), 31, np.int32)], 1)}
  batch |= {"chosen_mask": np.ones((16, 7), bool), "rejected_mask": np.ones((16, 7), bool)}
  with jax.set_mesh(mesh):
    params = M.init_sharded(jax.random.key(0), CFG, mesh)
    head = heads.init_scalar_head(jax.random.key(1), CFG, mesh)
    w0 = np.asarray(head["w"])  # the step donates its state
    o = TS.OptimConfig(learning_rate=3e-3, weight_decay=0.0)
    state = TS.init_state(params, TS.make_optimizer(o), head=head)
    step = head_step.make_reward_model_step(CFG, o, TS.state_shardings(state), mesh)
    b = TS.shard_batch(batch, mesh)
    first = None
    for _ in range(30):
      state, m = step(state, b)
      first = first if first is not None else float(m["loss"])
  assert float(m["accuracy"]) == 1.0 and float(m["loss"]) < 0.5 * first
  assert not np.array_equal(np.asarray(state.head["w"]), w0)  # the head was trained


@pytest.mark.slow
def test_sft_loop_resumes_bit_identically_after_an_interruption(tmp_path, monkeypatch):
  rows, _ = D.encode(PAIRS * 2, IdTokenizer(), max_len=12)
  packed = D.pack(rows, 12, PAD)
  cfg = L.SFTConfig(epochs=2, batch_size=2, seq_len=12, save_every=2)
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])

  def run(workdir):
    with jax.set_mesh(mesh):
      return L.run_sft(CFG, M.init_sharded(jax.random.key(0), CFG, mesh), packed, cfg, mesh, workdir)

  full = run(tmp_path / "full")
  assert len(full["history"]) == 2 * D.steps_per_epoch(len(packed["tokens"]), 2) >= 6
  make = sft_step.make_sft_step

  def dies_after_three(*a, **k):
    step, calls = make(*a, **k), []

    def f(state, batch):
      if len(calls) == 3:
        raise KeyboardInterrupt("killed")
      calls.append(1)
      return step(state, batch)
    f.lower = step.lower  # the memory planner compiles it first (on CPU too: against the host's memory)
    return f

  monkeypatch.setattr(sft_step, "make_sft_step", dies_after_three)
  with pytest.raises(KeyboardInterrupt):
    run(tmp_path / "split")
  monkeypatch.setattr(sft_step, "make_sft_step", make)
  resumed = run(tmp_path / "split")  # restarts from the step-2 checkpoint
  assert len(resumed["history"]) == len(full["history"]) - 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed["state"].params),
               jax.device_get(full["state"].params))
  assert full["history"][-1]["loss"] < full["history"][0]["loss"]


def test_sft_step_in_micro_batches_equals_the_whole_batch_and_the_planner_splits_to_fit():
  """grad_accum 2 and 4 give the whole batch's update (rows with unequal target counts, so a
  per-micro-batch mean would differ); the planner takes the fewest micro-batches whose compiled
  step fits the given limit."""
  rows, _ = D.encode(PAIRS * 4, IdTokenizer(), max_len=12)  # 20 rows, 1-4 target tokens each
  packed = D.pack(rows, 12, PAD, packing=False)
  batch = {k: v[:8] for k, v in packed.items()}
  assert len(set(batch["loss_mask"][:, 1:].sum(1))) > 2
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  ocfg = TS.OptimConfig(learning_rate=1e-2, warmup_steps=0, total_steps=10, weight_decay=0.0)
  with jax.set_mesh(mesh):
    params = M.init_sharded(jax.random.key(0), CFG, mesh)
    grads = jax.jit(sft_step._sft_grads, static_argnums=(2, 3))
    loss, whole = jax.device_get(grads(params, batch, CFG, 1))
    for accum in (2, 4):
      l, got = jax.device_get(grads(params, batch, CFG, accum))
      assert l == pytest.approx(loss, rel=1e-6)
      # float32 sums in another order: the error scales with the leaf's largest terms, not with
      # each element (a per-micro-batch mean, the bug this guards, is off by ~10%).
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max()),
                   got, whole)
    assert loss == pytest.approx(_numpy_loss(jax.device_get(M.init_sharded(jax.random.key(0), CFG, mesh)),
                                             rows[:8]), rel=1e-4)
    state = TS.init_state(M.init_sharded(jax.random.key(0), CFG, mesh), TS.make_optimizer(ocfg))
    cfg = L.SFTConfig(batch_size=8, seq_len=12)
    abstract = {k: jax.ShapeDtypeStruct((8,) + v.shape[1:], v.dtype, sharding=sharding.batch_sharding(mesh))
                for k, v in packed.items()}
    from r1jax import memory
    peak = {a: memory.phase("sft", sft_step.make_sft_step(CFG, ocfg, TS.state_shardings(state), mesh, grad_accum=a)
                             .lower(state, abstract).compile()).peak for a in (1, 2)}
    assert peak[1] > peak[2]
    logged = []
    assert L.plan_grad_accum(CFG, ocfg, state, packed, cfg, mesh, int(peak[2] / 0.95) + 1, logged.append) == 2
    assert "grad_accum=1" in logged[0] and "too large" in logged[0] and "fits" in logged[1]
    assert L.plan_grad_accum(CFG, ocfg, state, packed, cfg, mesh, None) == 1  # CPU: no limit known
    assert L.plan_grad_accum(CFG, ocfg, state, packed, L.SFTConfig(batch_size=8, grad_accum=4), mesh, 1) == 4
    with pytest.raises(memory.DoesNotFitError, match=r"sft: no sft.grad_accum in \[1, 2\] fits"):
      L.plan_grad_accum(CFG, ocfg, state, packed, L.SFTConfig(batch_size=2, seq_len=12), mesh, 1000)
  with pytest.raises(ValueError, match=r"sft.grad_accum=3 must be 0 \(automatic\) or divide sft.batch_size=8"):
    L.SFTConfig(batch_size=8, grad_accum=3)
