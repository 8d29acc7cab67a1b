"""The GRPO loop's values: what the update step receives, checked row by row against the rollout.

The real sampler is replaced by a stand-in whose completions spell out which prompt and sample
they belong to, and the update step by a recorder around the real one, so every batch the update
receives can be recomputed independently: rewards from each row's own example, advantages with
the configured scaling, the overlong penalty, truncated-row masking, reference log-probs and KL,
dynamic sampling's kept groups, and minibatches that partition the rows. A first test checks the
real sampler against the trainer: the log-probs the update sees for sampled tokens are the
sampler's own (ratio 1), and each completion sits behind its own prompt.

Row layout: prompt (left-padded to P) then N completion tokens; R = prompts x G rows.
"""
import jax
import jax.numpy as jnp
import numpy as np

from r1jax import checkpoint as ckpt_lib
from r1jax import model as M
from r1jax.sampling import rollout
from r1jax.sampling import sampler as S
from r1jax import sharding
from r1jax.rl import loop as train
from r1jax.rl import step as TS
from r1jax.rl.config import GRPOConfig, TrainConfig
from r1jax.rewards import combine

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789|"
CFG = M.ModelConfig(vocab_size=2 + len(ALPHABET), d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                    d_ff=64)
N, G, C = 20, 3, 6  # completion tokens, group size, overlong buffer
EOS, PAD = 1, 0


class CharTokenizer:
  """One token per character of ALPHABET (ids from 2), pad 0, EOS 1, no BOS."""
  vocab_size, bos_id, eos_id, pad_id = CFG.vocab_size, None, EOS, PAD

  def encode_batch(self, texts, add_bos=False):
    return [[2 + ALPHABET.index(c) for c in t] for t in texts]

  def decode(self, ids, skip_special=True):
    return "".join(ALPHABET[i - 2] for i in ids if i >= 2)


TOK = CharTokenizer()
# Questions of different lengths (left padding); 'flat' examples score the same for every sample.
EXAMPLES = [{"id": f"e{i}", "question": "abcd"[:1 + i % 3] + str(i), "final": "0", "value": 0.3 * i - 1.0,
             "flat": i % 2 == 1} for i in range(8)]
BY_QUESTION = {e["question"]: e for e in EXAMPLES}


def example_reward(completion: str, example: dict) -> float:
  """Reward of a stand-in completion 'question|g|r|xxx' for `example`; a completion written for
  another prompt scores -10, so misaligned rows show in the rewards."""
  q, g, r = completion.split("|")[:3]
  if q != example["question"]:
    return -10.0
  return example["value"] + (0.0 if example["flat"] else 0.5 * int(g) + 0.25 * (int(r) % 2))


def _row_text(question: str, g: int, r: int) -> str:
  return f"{question}|{g}|{r}|" + "x" * ((5 * g + r) % 14)  # lengths from short to over N (truncated)


def _logp(params, tokens_RxT, mask_RxT, temperature, n=N):
  """log p of the last n tokens of every row: one full-logit forward pass, no r1jax.rl.step."""
  pos = M.positions_from_mask(mask_RxT)
  logits, _ = M.forward(params, tokens_RxT, pos, CFG, mask_BxT=mask_RxT)
  lp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, -1)
  lp = jnp.take_along_axis(lp[:, :-1], tokens_RxT[:, 1:, None], -1)[..., 0]
  return lp[:, -n:]


_logp_jit = jax.jit(_logp, static_argnums=(3, 4))


class StandInSampler:
  """Replaces `rollout.sample`: row g of prompt q is the text _row_text(q, g, r), r drawn from the
  key, encoded + EOS (cut at N tokens without EOS: truncated); log-probs are the policy's own."""

  def __init__(self):
    self.calls = []  # (questions, Rollout) per call

  def __call__(self, params, prompt_ids, key, cfg, scfg, tokenizer, batch_size=None, chunks=1):
    assert scfg.num_samples == G and scfg.max_new_tokens == N
    toks, pmask = S.pad_prompts(prompt_ids, scfg.prompt_buckets, scfg.pad_id)
    questions = [tokenizer.decode(p) for p in prompt_ids]
    r = int(jax.random.randint(key, (), 0, 100))
    R = len(prompt_ids) * G
    tokens, mask = np.full((R, N), PAD, np.int32), np.zeros((R, N), bool)
    for i, q in enumerate(questions):
      for g in range(G):
        ids = (tokenizer.encode_batch([_row_text(q, g, r)])[0] + [EOS])[:N]
        tokens[i * G + g, :len(ids)], mask[i * G + g, :len(ids)] = ids, True
    truncated = ~(tokens == EOS).any(1)
    full_t = np.concatenate([np.repeat(toks, G, 0), tokens], 1)
    full_m = np.concatenate([np.repeat(pmask, G, 0), mask], 1)
    logp = np.where(mask, np.asarray(_logp_jit(params, full_t, full_m, scfg.temperature or 1.0)), 0.0)
    texts = [tokenizer.decode(row[m]) for row, m in zip(tokens, mask)]
    ro = rollout.Rollout(toks, pmask, tokens, logp.astype(np.float32), mask, mask.sum(1), truncated, texts)
    self.calls.append((questions, ro))
    return ro


class NoisySampler(StandInSampler):
  """The stand-in with its log-probs off by known noise, as a sampler whose numerics differ."""

  def __call__(self, *args, **kwargs):
    ro = super().__call__(*args, **kwargs)
    ro.noise = np.where(ro.mask, np.random.default_rng(len(self.calls)).normal(0, 0.1, ro.logp.shape), 0.0)
    ro.logp = (ro.logp + ro.noise).astype(np.float32)
    return ro


def _run(tmp_path, monkeypatch, *, steps, gcfg, tcfg_kw, lr=1e-2, sampler=None, ppo=None, save_every=100):
  sampler = sampler or StandInSampler()
  updates = []  # per update call: params before it (host copy), the batch it received, its metrics
  make = TS.make_grpo_step

  def recording_make_grpo_step(*args, **kwargs):
    step = make(*args, **kwargs)

    def recorded(state, batch):
      before = jax.device_get(state.params)  # the step donates its input state
      new, m = step(state, batch)
      updates.append({"params": before, "batch": jax.device_get(batch), "metrics": jax.device_get(m)})
      return new, m
    return recorded

  monkeypatch.setattr(rollout, "sample", sampler)
  monkeypatch.setattr(TS, "make_grpo_step", recording_make_grpo_step)
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  with jax.set_mesh(mesh):
    params = M.init_sharded(jax.random.key(0), CFG, mesh)
    init = jax.device_get(params)
    scfg = S.SamplingConfig(max_new_tokens=N, temperature=0.7, num_samples=G, eos_ids=(EOS,), pad_id=PAD)
    out = train.run_grpo(
        model_cfg=CFG, params=params, tokenizer=TOK, examples=EXAMPLES,
        reward_specs=[combine.RewardSpec("example", example_reward)], template="{prompt}",
        # A reward call's limit includes unpickling example_reward, i.e. importing this module
        # (and jax) in a fresh worker: seconds on a loaded machine. Nothing here hangs.
        tcfg=TrainConfig(steps=steps, prompts_per_step=4, max_prompt_len=16, progress=False, reward_workers=1,
                         reward_timeout_s=300.0, overlong_buffer=C, **tcfg_kw),
        gcfg=gcfg, ocfg=TS.OptimConfig(learning_rate=lr, weight_decay=0.0), scfg=scfg,
        ckcfg=ckpt_lib.CheckpointConfig(str(tmp_path / "ckpt"), save_every=save_every, keep=1), mesh=mesh,
        workdir=tmp_path, **({} if ppo is None else {"ppo": ppo}))
  for m in out["history"]:
    assert m["rewards/example/timeouts"] == 0 and m["rewards/example/errors"] == 0
  return out, sampler.calls, updates, init


def _overlong(L):
  return np.where(L <= N - C, 0.0, np.where(L <= N, (N - C - L) / C, -1.0))


def _advantages(r_PxG, scale):
  """NumPy reference of the group-relative advantage (std ddof=1, +1e-4; equal rewards -> 0)."""
  centered = r_PxG - r_PxG.mean(1, keepdims=True)
  std = {"group": r_PxG.std(1, ddof=1, keepdims=True), "batch": r_PxG.std(ddof=1), "none": 1.0 - 1e-4}[scale]
  return np.where(np.ptp(r_PxG, 1, keepdims=True) > 0, centered / (std + 1e-4), 0.0)


def _rows(batch):
  """Per row of an update batch: (question from the prompt tokens, text from the completion)."""
  P = batch["tokens"].shape[1] - N
  out = []
  for t, m in zip(batch["tokens"], batch["mask"]):
    out.append((TOK.decode(t[:P][m[:P]]), TOK.decode(t[P:][m[P:]])))
  return out


def _expected(questions, ro, scale, overlong_weight):
  """Rewards and advantages of one rollout, from each row's own example; keyed by row."""
  r = np.array([example_reward(text, BY_QUESTION[questions[i // G]]) for i, text in enumerate(ro.texts)])
  assert (r > -10).all()  # the stand-in writes every completion for its own prompt
  total = r + overlong_weight * _overlong(ro.length)
  adv = _advantages(total.reshape(-1, G), scale).reshape(-1)
  keys = [(questions[i // G], text) for i, text in enumerate(ro.texts)]
  return {k: (a, t, i) for i, (k, a, t) in enumerate(zip(keys, adv, total))}, total


def test_sampled_logprobs_are_the_trainers_and_rows_keep_their_prompts():
  """The real sampler (3 prompts of different lengths left-padded, G = 3, temperature 0.7, EOS
  cuts some rows): the trainer's log-probs of the sampled tokens equal the sampler's, so one
  update step sees ratio 1 (loss = -mean(A), clip fraction 0, KL 0 against itself), and row r
  holds prompt r // G."""
  params = M.init_params(jax.random.key(1), CFG, std=0.3)
  prompts = [[5, 9, 3], [7, 8, 10, 11, 12, 13, 4], [20, 21, 22, 23, 24]]
  scfg = S.SamplingConfig(max_new_tokens=N, temperature=0.7, num_samples=G, prompt_buckets=(8,), pad_id=PAD,
                          eos_ids=(EOS,))
  ro = rollout.sample(params, prompts, jax.random.key(3), CFG, scfg, TOK, batch_size=4)  # a key where EOS cuts 3 rows
  assert ro.truncated.any() and not ro.truncated.all()  # some rows stopped at EOS
  b = ro.train_batch(G)
  P = b["tokens"].shape[1] - N
  # Each row's own prompt + completion, unpadded at the left (whatever follows the completion
  # cannot change its logits: attention is causal), scored by one teacher-forced forward pass.
  seq = np.zeros((len(prompts) * G, 8 + N), np.int32)
  for r in range(len(prompts) * G):
    p = prompts[r // G]
    np.testing.assert_array_equal(b["tokens"][r, P - len(p):P], p)
    assert b["mask"][r, :P].sum() == len(p) and b["mask"][r, P - len(p):P].all()
    seq[r, :len(p) + N] = p + list(ro.tokens[r])
  lp_all = np.asarray(_logp_jit(params, seq, np.ones(seq.shape, bool), 0.7, seq.shape[1] - 1))
  for r in range(len(prompts) * G):
    n = len(prompts[r // G])
    L = int(ro.length[r])
    np.testing.assert_allclose(ro.logp[r, :L], lp_all[r, n - 1:n - 1 + L], atol=2e-5)  # position t scores t + 1
  trainer_lp = np.asarray(TS.make_logprob_fn(CFG, 0.7)(params, b))
  np.testing.assert_allclose(np.where(b["completion_mask"], trainer_lp, 0.0), ro.logp, atol=2e-5)
  adv = np.array([1.0, -0.5, 0.25, 2.0, -1.0, 0.5, 0.75, -0.25, 1.5], np.float32)
  g = GRPOConfig(num_generations=G, beta=0.04, max_completion_length=N)
  o = TS.OptimConfig(learning_rate=1e-3)
  state = TS.init_state(jax.tree.map(jnp.array, params), TS.make_optimizer(o))
  batch = b | {"adv": adv, "completion_mask": b["completion_mask"].astype(np.float32), "ref_logp": trainer_lp}
  _, m = TS.make_grpo_step(CFG, g, o, 0.7)(state, batch)
  np.testing.assert_allclose(float(m["loss"]), -adv.mean(), rtol=1e-5)  # every ratio is 1
  assert float(m["clip_ratio/region_mean"]) == 0.0 and abs(float(m["kl"])) < 1e-6


def test_loop_rewards_advantages_overlong_truncation_kl_and_minibatches(tmp_path, monkeypatch):
  """Two steps, batch-scaled rewards, overlong penalty, truncated rows masked, KL against the
  initial parameters, mu = 2 passes over 2 minibatches: every update batch row carries its own
  prompt, the sampler's tokens and log-probs, the advantage recomputed from its own example, the
  reference log-probs of the initial parameters; the KL metric is the k3 mean between them.
  With grpo.recompute_old_logp (and token TIS) and a sampler whose log-probs are off by known
  noise: old_logp is the trainer's at the step's parameters in both passes, sampler_logp the
  sampler's, and the step logs their mismatch, which is the noise's."""
  w = 0.5
  g = GRPOConfig(num_generations=G, beta=0.04, scale_rewards="batch", mask_truncated_completions=True, mu=2,
                 num_minibatches=2, max_completion_length=N, recompute_old_logp=True, tis="token")
  out, calls, updates, init = _run(tmp_path, monkeypatch, steps=2, gcfg=g, tcfg_kw={"overlong_weight": w},
                                   sampler=NoisySampler())
  assert len(calls) == 2 and len(updates) == 8
  for s, (questions, ro) in enumerate(calls):
    want, total = _expected(questions, ro, "batch", w)
    assert ro.truncated.any() and (ro.length > N - C).any() and (ro.length <= N - C).any()
    m = out["history"][s]
    np.testing.assert_allclose(m["reward"], total.mean(), rtol=1e-6)
    np.testing.assert_allclose(m["rewards/overlong/mean"], _overlong(ro.length).mean(), rtol=1e-6)
    assert m["rewards/overlong/mean"] < 0
    step_updates = updates[4 * s:4 * s + 4]
    for it in range(2):  # each inner pass: two minibatches that partition the rollout's rows
      seen = []
      for u in step_updates[2 * it:2 * it + 2]:
        b = u["batch"]
        assert len(b["adv"]) == len(want) // 2
        for j, key in enumerate(_rows(b)):
          adv, _, i = want[key]  # KeyError: a row that is not the sampler's, or paired with another prompt
          seen.append(i)
          np.testing.assert_allclose(b["adv"][j], adv, rtol=1e-5, atol=1e-6)
          np.testing.assert_array_equal(b["tokens"][j, -N:], ro.tokens[i])
          np.testing.assert_array_equal(b["sampler_logp"][j], ro.logp[i])
          np.testing.assert_array_equal(b["completion_mask"][j], ro.mask[i] * (not ro.truncated[i]))
      assert sorted(seen) == list(range(len(want)))
    for u in step_updates:  # pi_old: the trainer's log-probs under the parameters that sampled
      b = u["batch"]
      trainer = np.asarray(_logp_jit(step_updates[0]["params"], b["tokens"], b["mask"], 0.7))
      cm = b["completion_mask"] > 0
      np.testing.assert_allclose(b["old_logp"][cm], trainer[cm], atol=2e-5)
      assert 0 < u["metrics"]["tis/weight_mean"] <= g.tis_cap
    valid = ro.mask & ~ro.truncated[:, None]
    d = -ro.noise[valid]  # trainer - sampler
    np.testing.assert_allclose(m["mismatch/abs_mean"], np.abs(d).mean(), atol=2e-5)
    np.testing.assert_allclose(m["mismatch/abs_max"], np.abs(d).max(), atol=2e-5)
    np.testing.assert_allclose(m["mismatch/k3"], (np.exp(d) - d - 1).mean(), rtol=1e-3)
    for u in step_updates:
      b = u["batch"]
      ref = np.asarray(_logp_jit(init, b["tokens"], b["mask"], 0.7))
      cm = b["completion_mask"] > 0
      np.testing.assert_allclose(b["ref_logp"][cm], ref[cm], atol=2e-5)
      now = np.asarray(_logp_jit(u["params"], b["tokens"], b["mask"], 0.7))
      d = np.where(cm, ref - now, 0.0)
      kl = ((np.exp(d) - d - 1) * cm).sum() / cm.sum()
      np.testing.assert_allclose(u["metrics"]["kl"], kl, rtol=1e-3, atol=1e-7)
  assert updates[0]["metrics"]["kl"] < 1e-7  # the policy against itself
  assert min(u["metrics"]["kl"] for u in updates[4:]) > 1e-4  # after 4 updates of lr 1e-2
  assert all(u["metrics"]["grad_norm"] > 0 for u in updates)


def test_loop_dynamic_sampling_keeps_informative_groups_with_their_rewards(tmp_path, monkeypatch):
  """Half the examples score the same for all samples: dynamic sampling resamples until 4
  informative groups are held; the update sees exactly the first 4 drawn, each with the
  advantages of its own rewards (scale 'none': A = r - mean), truncated rows not masked."""
  g = GRPOConfig(num_generations=G, beta=0.0, scale_rewards="none", dynamic_sampling=True,
                 max_completion_length=N)
  out, calls, updates, _ = _run(tmp_path, monkeypatch, steps=2, gcfg=g, tcfg_kw={"max_sampling_rounds": 4})
  rounds = [out["history"][0]["sampling_rounds"], out["history"][1]["sampling_rounds"]]
  assert len(calls) == sum(rounds) and len(updates) == 2 and max(rounds) > 1
  c = 0
  for s, u in enumerate(updates):
    kept = []  # the informative groups of this step's rounds, in the order drawn
    for n, (questions, ro) in enumerate(calls[c:c + rounds[s]]):
      assert len(kept) < 4, f"step {s + 1}: round {n + 1} sampled after 4 informative groups were held"
      want, total = _expected(questions, ro, "none", 0.0)
      by_group = list(want.items())
      for p, q in enumerate(questions):
        if not BY_QUESTION[q]["flat"]:
          kept.append([(k, v, ro) for k, v in by_group[p * G:(p + 1) * G]])
    c += rounds[s]
    kept = kept[:4]
    assert len(kept) == 4
    b = u["batch"]
    rows = _rows(b)
    assert rows == [k for grp in kept for k, _, _ in grp]
    want_adv = [v[0] for grp in kept for _, v, _ in grp]
    np.testing.assert_allclose(b["adv"], want_adv, rtol=1e-5, atol=1e-6)
    assert (np.abs(b["adv"].reshape(-1, G)).max(1) > 0).all()
    for j, (_, v, ro) in enumerate(x for grp in kept for x in grp):
      np.testing.assert_array_equal(b["completion_mask"][j], ro.mask[v[2]])
      np.testing.assert_array_equal(b["old_logp"][j], ro.logp[v[2]])
    m = out["history"][s]
    np.testing.assert_allclose(m["reward"], np.mean([v[1] for grp in kept for _, v, _ in grp]), rtol=1e-6)
    assert m["dynamic_sampling/groups_kept"] >= 4 and m["dynamic_sampling/groups_uninformative"] == 0

