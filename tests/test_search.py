"""MCTS with a value model and the sampling baselines of experiments/mcts.py, against independent
references: PUCT / UCT selections and backups on hand-made trees (by hand and a NumPy loop), the
tree identities after many simulations, a whole search's decisions and exact forward-pass and
token counts derived by hand, the token-level children against the teacher-forced logits of each
state's own row, decoding onward from a saved sampler state and the search that continues from it
against recomputing the prefix, the step-level children against greedy decoding, and best-of-n /
majority vote / budget matching against plain Python."""
import collections
import dataclasses
import math

import jax
import numpy as np
import pytest

from r1jax import model as M
from r1jax.sampling import sampler as S
from r1jax.sampling import sampling_state as SS
from r1jax import search
from r1jax.stages import mcts as mcts_stage
from r1jax.tasks import chains


class TreeEnv:
  """A hand-made tree: children[state] = [(child, prior), ...], values[state]; terminal = no
  children listed. Records every state it is asked about."""

  def __init__(self, children, values):
    self.children, self.values, self.expanded, self.valued = children, values, [], []

  def expand(self, states):
    self.expanded += list(states)
    return [search.Expansion([(c, p, c not in self.children) for c, p in self.children[s]], 1, len(self.children[s]))
            for s in states]

  def value(self, states):
    self.valued += list(states)
    return np.asarray([self.values[s] for s in states])


class BinaryEnv(TreeEnv):
  """Strings over '01' up to length 3; priors 0.6 / 0.4; value = share of '1's (0 for '')."""

  def __init__(self):
    kids = {s: [(s + "0", 0.6), (s + "1", 0.4)] for s in ("", "0", "1", "00", "01", "10", "11")}
    vals = {s: (s.count("1") / len(s) if s else 0.0) for s in [""] + [format(i, f"0{n}b") for n in (1, 2, 3)
                                                                       for i in range(2 ** n)]}
    super().__init__(kids, vals)


FLAT = TreeEnv({"r": [("a", 0.5), ("b", 0.3), ("c", 0.2)]}, {"r": 0.4, "a": 0.2, "b": 0.9, "c": 0.5})


def _simulate(env, n, rule="puct", c=1.0):
  root, cost = search.Node("r"), search.Cost()
  for _ in range(n):
    search.simulate(env, [root], [cost], rule, c)
  return root, cost


def test_puct_by_hand_on_a_flat_tree():
  # sim 1 evaluates and expands r (0.4); sim 2: all children at Q(r) = 0.4, the prior decides: a (0.2);
  # sim 3: Q(r) = 0.3, N = 2: a 0.2 + 0.5 sqrt2 / 2 = 0.554, b 0.3 + 0.3 sqrt2 = 0.724, c 0.3 + 0.2 sqrt2 = 0.583 -> b;
  # sim 4: Q(r) = 0.5, N = 3: a 0.633, b 0.9 + 0.3 sqrt3 / 2 = 1.16, c 0.5 + 0.2 sqrt3 = 0.846 -> b.
  root, cost = _simulate(FLAT, 4)
  assert [ch.visits for ch in root.children] == [1, 2, 0]
  assert root.visits == 4 and root.value_sum == pytest.approx(0.4 + 0.2 + 0.9 + 0.9)
  assert search.best_child(root).state == "b"  # the value model overrides the prior
  assert (cost.policy_passes, cost.value_passes, cost.tokens) == (1, 3, 3)


def test_puct_matches_a_numpy_loop():
  P, V = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.9, 0.5])
  for c in (0.3, 1.0, 4.0):
    n, w, N, W = np.zeros(3), np.zeros(3), 1, 0.4
    for _ in range(39):
      q = np.where(n > 0, w / np.maximum(n, 1), W / N)
      a = int(np.argmax(q + c * P * np.sqrt(N) / (1 + n)))
      n[a], w[a], N, W = n[a] + 1, w[a] + V[a], N + 1, W + V[a]
    root, _ = _simulate(FLAT, 40, c=c)
    assert [ch.visits for ch in root.children] == n.tolist()
    np.testing.assert_allclose([ch.value_sum for ch in root.children], w)
    assert root.visits == N and root.value_sum == pytest.approx(W)


def test_uct_visits_every_child_by_prior_then_follows_ucb1():
  root, _ = _simulate(FLAT, 4, rule="uct")
  assert [ch.visits for ch in root.children] == [1, 1, 1]
  # N = 4: each child Q + sqrt(ln 4 / 1); b (0.9) is highest
  assert search.select(root, "uct", 1.0) == 1
  root, _ = _simulate(FLAT, 30, rule="uct", c=0.5)
  n = np.array([ch.visits for ch in root.children], float)
  q = np.array([ch.q for ch in root.children])
  score = q + 0.5 * np.sqrt(math.log(root.visits) / n)
  assert search.select(root, "uct", 0.5) == int(np.argmax(score)) and n[1] == n.max()
  with pytest.raises(ValueError, match="selection='best' is not one of"):
    search.select(root, "best")


def _walk(node):
  yield node
  for ch in node.children:
    yield from _walk(ch)


def test_backups_add_up_on_a_deeper_tree():
  """After many simulations every evaluated node holds one visit of its own plus its children's,
  and its own value plus its children's value sums; terminal nodes revisited add their value again."""
  env = BinaryEnv()
  root, cost = search.Node(""), search.Cost()
  for _ in range(25):
    search.simulate(env, [root], [cost], "puct", 1.5)
  for node in _walk(root):
    if node.children:
      assert node.visits == 1 + sum(ch.visits for ch in node.children)
      assert node.value_sum == pytest.approx(node.value + sum(ch.value_sum for ch in node.children))
    elif node.visits:
      assert node.terminal and node.value_sum == pytest.approx(node.visits * node.value)
  assert root.visits == 25 and len(env.valued) == len(set(env.valued)) == cost.value_passes


def test_a_search_decides_and_counts_as_derived_by_hand():
  # 2 simulations a decision. "": evaluate + expand "", then "0" (prior 0.6); commit "0" (1 visit vs 0).
  # "0": "00" (prior), then "01" (0 + 0.4 sqrt2 > 0 + 0.6 sqrt2 / 2); tie at 1 visit, "01" has the higher
  # Q (0.5 vs 0). "01": "010" (Q 0.5 + 0.6), then "011" (0.417 + 0.4 sqrt2 > 0.333 + 0.6 sqrt2 / 2);
  # tie, "011" higher (2/3). Values: "", 0, 00, 01, 010, 011; expansions: "", 0, 00, 01 (2 tokens each).
  env = BinaryEnv()
  (res,) = search.search(env, [""], simulations=2)
  assert res.state == "011" and res.decisions == 3
  assert env.valued == ["", "0", "00", "01", "010", "011"] and env.expanded == ["", "0", "00", "01"]
  assert (res.cost.policy_passes, res.cost.value_passes, res.cost.tokens, res.cost.forward_passes) == (4, 6, 8, 10)
  # With enough search the best leaf is found; lockstep trees give each its own result and cost.
  env = BinaryEnv()
  a, b = search.search(env, ["", "1"], simulations=12)
  assert a.state == b.state == "111"
  assert a.cost.value_passes + b.cost.value_passes == len(env.valued)
  assert a.cost.policy_passes + b.cost.policy_passes == len(env.expanded)
  # A node with one child is committed without search: r's 2 simulations evaluate and expand r and x;
  # at x, whose one child is y, no simulation runs (one would evaluate y).
  env = TreeEnv({"r": [("x", 1.0)], "x": [("y", 1.0)]}, {"r": 0.1, "x": 0.2, "y": 0.3})
  (res,) = search.search(env, ["r"], simulations=2)
  assert res.state == "y" and res.decisions == 2 and env.expanded == ["r", "x"] and env.valued == ["r", "x"]


CFG = M.ModelConfig(vocab_size=24, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, d_ff=32)
EOS, PAD = 1, 0
PROMPTS = [[5, 6, 7], [9, 3, 4, 11, 12, 13, 2]]


def _params(seed):
  """Random weights (NumPy, std 0.5; unit norms) in the model's layout."""
  rng = np.random.default_rng(seed)
  shapes = M.param_shapes(CFG)
  layers = {k: np.ones(v, np.float32) if k.endswith("norm") else rng.normal(0, 0.5, v).astype(np.float32)
            for k, v in shapes.pop("layers").items()}
  return {k: np.ones(v, np.float32) if k.endswith("norm") else rng.normal(0, 0.5, v).astype(np.float32)
          for k, v in shapes.items()} | {"layers": layers}


PARAMS = _params(0)
VALUE = (_params(1), {"w": np.random.default_rng(2).normal(0, 1, CFG.d_model).astype(np.float32),
                      "b": np.float32(0.1)})
L = 16


@jax.jit
def _teacher_forced(params, vparams, head, row_1xL):
  """Logits and value at every position of one row right-padded to L tokens (causal: position t
  sees tokens <= t only, so the padding after it changes nothing)."""
  pos = np.arange(L)[None]
  logits, _ = M.forward(params, row_1xL, pos, CFG)
  h, _ = M.hidden_states(vparams, row_1xL, pos, CFG)
  return logits[0], h[0] @ head["w"] + head["b"]


def _forward(row):
  """(next-token logits, value) after the last token of `row`, in float64."""
  logits, v = _teacher_forced(PARAMS, *VALUE, np.asarray([list(row) + [PAD] * (L - len(row))], np.int32))
  return np.asarray(logits, np.float64)[len(row) - 1], float(v[len(row) - 1])


def test_token_children_are_the_top_k_of_the_teacher_forced_logits():
  env = search.TokenEnv(PARAMS, VALUE, CFG, CFG, PROMPTS, k=3, max_len=4, eos_ids=(EOS,), pad_id=PAD, buckets=(16,))
  states = [(0, ()), (1, (8, 9)), (0, (4, 5, 6))]
  exps = env.expand(states)
  vals = env.value(states)
  for (i, comp), e, v in zip(states, exps, vals):
    logits, want = _forward(PROMPTS[i] + list(comp))
    lp = logits - np.log(np.exp(logits).sum())
    top = np.argsort(-lp)[:3]
    p = np.exp(lp[top]) / np.exp(lp[top]).sum()
    assert [s for s, _, _ in e.children] == [(i, comp + (int(t),)) for t in top]
    np.testing.assert_allclose([q for _, q, _ in e.children], p, rtol=1e-4)
    assert [t for _, _, t in e.children] == [int(x) == EOS or len(comp) + 1 >= 4 for x in top]
    assert (e.policy_passes, e.tokens) == (1, 3)
    np.testing.assert_allclose(v, 1 / (1 + np.exp(-want)), rtol=1e-4)


def _recomputed_logp(rows, temperature=1.0):
  """Next-token log-probs after each row, the prefix recomputed (`TokenEnv`'s path): B x V."""
  toks, mask = S.pad_prompts(rows, (16,), PAD)
  return np.asarray(search._last_logp(PARAMS, toks, mask, CFG, temperature))


@pytest.mark.parametrize("unroll", [False, True])
def test_a_state_continued_token_by_token_gives_the_recomputed_prefixs_distribution_and_draws(unroll):
  """Decoding onward from a saved sampler state gives, after every token, the next-token log-probs
  of recomputing the whole prefix, and the same tokens under the same key as `sampler.generate`
  from the recomputed prefix."""
  cfg = dataclasses.replace(CFG, unroll_decode=unroll)
  comps = [(8, 9, 4), (3, 12, 7)]
  toks, mask = S.pad_prompts(PROMPTS, (8,), PAD)
  dparams, st = SS.prefill(PARAMS, toks, mask, cfg, S.SamplingConfig(pad_id=PAD), 6)
  for t in range(4):
    rows = [p + list(c[:t]) for p, c in zip(PROMPTS, comps)]
    got = np.asarray(jax.nn.log_softmax(st.logits_RxV, axis=-1))
    np.testing.assert_allclose(got, _recomputed_logp(rows), atol=2e-5)
    if t < 3:
      st = SS.decode_step(dparams, st, np.asarray([c[t] for c in comps], np.int32), cfg)
  assert st.end_R.tolist() == [8 + 3] * 2 and st.pos_R.tolist() == [len(p) + 3 for p in PROMPTS]
  scfg = S.SamplingConfig(max_new_tokens=3, temperature=1.3, top_k=10, pad_id=PAD, prompt_buckets=(16,))
  for seed in range(3):
    key = jax.random.key(seed)
    tokens, logp, _ = SS.sample(dparams, st, key, cfg, scfg, 3)
    ptoks, pmask = S.pad_prompts([p + list(c) for p, c in zip(PROMPTS, comps)], (16,), PAD)
    want = S.generate(PARAMS, ptoks, pmask, key, cfg, scfg)
    np.testing.assert_array_equal(tokens, want["tokens"])
    np.testing.assert_allclose(logp, want["logp"], atol=2e-5)


def test_the_cached_token_env_expands_and_searches_as_the_prefix_recomputing_env():
  """`CachedTokenEnv` (children continued from the parent's saved state) against `TokenEnv`
  (every prefix recomputed): the same children and priors for every state of whole searches, the
  same decisions and costs; only the roots are prefilled."""
  kw = dict(k=3, max_len=5, eos_ids=(EOS,), pad_id=PAD, buckets=(16,), temperature=0.8)
  ref, env = search.TokenEnv(PARAMS, VALUE, CFG, CFG, PROMPTS, **kw), search.CachedTokenEnv(PARAMS, VALUE, CFG, CFG,
                                                                                            PROMPTS, **kw)
  seen = []
  expand = env.expand
  env.expand = lambda states: seen.extend(states) or expand(states)
  roots = [(0, ()), (1, ())]
  want = search.search(ref, roots, simulations=4)
  got = search.search(env, roots, simulations=4)
  assert [(r.state, r.cost, r.decisions) for r in got] == [(r.state, r.cost, r.decisions) for r in want]
  assert env.prefilled == 2 and env.continued == len(seen) - 2 > 10
  for a, b in zip(ref.expand(seen), expand(seen)):
    assert [s for s, _, _ in a.children] == [s for s, _, _ in b.children]
    np.testing.assert_allclose([q for _, q, _ in b.children], [q for _, q, _ in a.children], atol=2e-5)


@pytest.mark.slow  # the full suite's (CI time): the cached token env's search runs in CI
def test_the_cached_step_env_draws_and_searches_as_the_prefix_recomputing_env():
  """`CachedStepEnv` (k steps drawn onward from the node's saved state, each child keeping the state
  after its step) against `StepEnv` (`sampler.generate` over the recomputed prefix) under the same
  key: the same decisions and costs over whole searches; only the roots are prefilled, and every
  saved state holds its recomputed prefix's next-token distribution."""
  kw = dict(k=4, max_len=8, eos_ids=(EOS,), pad_id=PAD, buckets=(16,), boundaries=(3, 4, 5), step_tokens=3,
            temperature=1.5, key=jax.random.key(5))
  ref, env = search.StepEnv(PARAMS, VALUE, CFG, CFG, PROMPTS, **kw), search.CachedStepEnv(PARAMS, VALUE, CFG, CFG,
                                                                                          PROMPTS, **kw)
  roots = [(0, ()), (1, ())]
  want = search.search(ref, roots, simulations=4)
  got = search.search(env, roots, simulations=4)
  assert [(r.state, r.cost, r.decisions) for r in got] == [(r.state, r.cost, r.decisions) for r in want]
  assert env.prefilled == 2 and env.continued == 0 and len(env.saved) > 8
  states = list(env.saved)
  got = np.asarray(jax.nn.log_softmax(SS.concat([env.saved[s] for s in states]).logits_RxV, axis=-1))
  np.testing.assert_allclose(got, _recomputed_logp([PROMPTS[i] + list(c) for i, c in states]), atol=2e-5)


def test_step_children_end_at_the_first_boundary_and_count_every_sampled_token():
  bounds = (3, 4, 5)
  kw = dict(k=4, eos_ids=(EOS,), pad_id=PAD, buckets=(16,), boundaries=bounds, step_tokens=5)
  states = [(0, ()), (1, (8,)), (0, (6, 7, 8, 9, 10, 11))]
  # Nearly greedy: every sample is the greedy continuation of the state's own row, teacher-forced.
  env = search.StepEnv(PARAMS, VALUE, CFG, CFG, PROMPTS, max_len=8, temperature=1e-4, key=jax.random.key(3), **kw)
  for (i, comp), e in zip(states, env.expand(states)):
    row, step = PROMPTS[i] + list(comp), []
    while len(step) < min(5, 8 - len(comp)):
      step.append(int(np.argmax(_forward(row + step)[0])))
      if step[-1] in bounds + (EOS,):
        break
    assert e.children == [((i, comp + tuple(step)), 1.0, step[-1] == EOS or len(comp) + len(step) >= 8)]
    assert e.tokens == e.policy_passes == 4 * len(step)
  env = search.StepEnv(PARAMS, VALUE, CFG, CFG, PROMPTS, max_len=8, temperature=3.0, key=jax.random.key(4), **kw)
  for (i, comp), e in zip(states, env.expand(states)):
    steps = [s[1][len(comp):] for s, _, _ in e.children]
    assert len(set(steps)) == len(steps) and sum(p for _, p, _ in e.children) == pytest.approx(1.0)
    assert e.tokens == e.policy_passes == sum(round(p * 4) * len(s) for s, (_, p, _) in zip(steps, e.children))
    for s in steps:
      assert not set(s[:-1]) & set(bounds + (EOS,))
      assert s[-1] in bounds + (EOS,) or len(s) == min(5, 8 - len(comp))


class CharTokenizer:
  vocab_size, eos_id = 6, 1
  PIECES = ["<pad>", "</s>", "1", "2.", ".", " equals"]

  def decode(self, ids, skip_special=True):
    return "".join("" if i < 2 else self.PIECES[i] for i in ids)


def test_step_boundaries_are_tokens_holding_a_period_and_eos():
  assert search.step_boundaries(CharTokenizer()) == (1, 3, 4)


def test_sampling_arms_against_plain_python():
  rng = np.random.default_rng(0)
  for _ in range(200):
    m = int(rng.integers(1, 9))
    lengths = rng.integers(1, 30, m).tolist()
    values = rng.choice([0.1, 0.5, 0.9], m).tolist()  # ties on purpose
    answers = rng.choice(["3", "4", "5", None], m).tolist()
    correct = [float(a == "4") for a in answers]
    budget = float(rng.uniform(0, 1.2 * sum(lengths)))
    got = search.sampling_arms(lengths, values, answers, correct, budget)
    totals = [sum(lengths[:n]) for n in range(1, m + 1)]
    n = min(range(1, m + 1), key=lambda n: (abs(totals[n - 1] - budget), n))
    assert got["n"] == n == search.matched_count(lengths, budget)
    first_best = next(i for i in range(n) if values[i] == max(values[:n]))
    votes = collections.Counter(a for a in answers[:n] if a is not None)
    if votes:
      top = max(votes.values())
      winner = next(a for a in answers[:n] if a is not None and votes[a] == top)
      majority = correct[answers.index(winner)]
    else:
      majority = 0.0
    assert got["best_of_n"] == correct[first_best] and got["majority"] == majority
    assert got["pass_at_n"] == float(any(correct[:n]))
    assert got["tokens"] == got["majority_passes"] == totals[n - 1] and got["best_of_n_passes"] == totals[n - 1] + n
    if totals[0] <= budget <= totals[-1]:  # equal budgets: within half a sample
      assert abs(got["tokens"] - budget) <= max(lengths) / 2


def test_a_cell_row_matches_the_budget_per_problem_and_leaves_unsolved_per_solved_empty():
  samples = [{"lengths": [10, 10, 10, 10], "values": [0.2, 0.8, 0.1, 0.3], "answers": ["5", "6", "5", "5"],
              "correct": [1.0, 0.0, 1.0, 1.0]},
             {"lengths": [20, 20, 20, 20], "values": [0.5, 0.5, 0.9, 0.1], "answers": ["2", None, "3", "2"],
              "correct": [0.0, 0.0, 1.0, 0.0]}]
  cell = {"wall_seconds": 1.0, "problems": [
      {"correct": 0.0, "policy_passes": 20, "value_passes": 9, "tokens": 31, "decisions": 5, "length": 9},
      {"correct": 0.0, "policy_passes": 40, "value_passes": 3, "tokens": 61, "decisions": 2, "length": 12}]}
  r = mcts_stage.cell_row(2, 4, "step", cell, samples)
  # problem 1: 31 tokens -> n = 3 (30); best-of-3 picks sample 2 (wrong), majority '5' (right);
  # problem 2: 61 tokens -> n = 3 (60); best-of-3 picks sample 3 (right), majority '2' (wrong).
  assert r["n"] == 3 and r["sampling_tokens"] == 45 and r["tokens"] == 46
  assert r["best_of_n"] == 0.5 and r["majority"] == 0.5 and r["pass_at_n"] == 1.0
  assert r["forward_passes"] == 36 and r["best_of_n_passes"] == 48 and r["majority_passes"] == 45
  assert r["accuracy"] == 0 and r["tokens_per_solved"] is None and r["best_of_n_tokens_per_solved"] == 90
  assert "| 2 | 4 | step | 0 |" in mcts_stage.markdown([r])


def test_auc_against_a_pair_count():
  rng = np.random.default_rng(1)
  s, y = rng.choice([0.1, 0.2, 0.7], 40), rng.integers(0, 2, 40)
  pairs = [(a, b) for a, ya in zip(s, y) for b, yb in zip(s, y) if ya and not yb]
  assert mcts_stage.auc(s, y) == pytest.approx(sum((a > b) + 0.5 * (a == b) for a, b in pairs) / len(pairs))
  assert mcts_stage.auc(s, np.ones(40)) is None


def test_problem_sets_have_their_depth_and_are_held_out():
  cfg = mcts_stage.MCTSConfig(depths=(1, 3), problems=6, value_prompts=10)
  train = chains.generate(400, seed=cfg.seed * 100 + 3, min_ops=3, max_ops=3)[:5]  # overlaps depth 3's pool
  sets = mcts_stage.problem_sets(cfg, train)
  key = lambda ex: tuple(map(tuple, ex["steps"]))
  for d, (held, value) in sets.items():
    assert len(held) == 6 and len(value) == 10 and all(len(ex["steps"]) == d for ex in held + value)
    assert not {key(ex) for ex in held} & ({key(ex) for ex in value} | {key(ex) for ex in train})


def test_config_errors_name_field_value_and_what_is_allowed():
  for kw, msg in (({"selection": "greedy"}, "mcts.selection='greedy' is not one of ('puct', 'uct')"),
                  ({"depths": (0, 2)}, "mcts.depths=(0, 2) must be a non-empty tuple of ints >= 1"),
                  ({"branching": ()}, "mcts.branching=() must be a non-empty tuple of ints >= 1"),
                  ({"simulations": 0}, "mcts.simulations=0 must be >= 1"),
                  ({"temperature": 0.0}, "mcts.temperature=0.0 > 0")):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
      mcts_stage.MCTSConfig(**kw)


def test_a_given_base_and_value_model_skip_their_stages():
  from r1jax import experiment
  import pathlib
  mod = experiment.load_experiment(pathlib.Path(__file__).resolve().parents[1] / "experiments" / "mcts.py")
  full = {s.name: s.inputs for s in mod.stages()}
  assert list(full) == ["pretrain", "value_data", "value_model", "search"]
  assert full["search"] == {"policy": "pretrain.policy", "value_model": "value_model.model"}
  given = {s.name: s.inputs for s in mod.stages("/b", "/v")}
  assert given == {"search": {"policy": "/b", "value_model": "/v"}}
