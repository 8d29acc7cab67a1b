"""The process reward model of experiments/prm.py: steps parsed and labelled by checking them, the
token that ends each step, the labels of a rollout, and the PRM rewards (sum-form, min-form) and
step statistics against independent computations (a brute-force token scan, NumPy over the head's
values on each row's own unpadded prefix)."""
import pathlib

import jax
import numpy as np
import pytest

from r1jax.model import heads
from r1jax import model as M
from r1jax import prm
from r1jax.sampling import rollout
from r1jax.tasks import chains

CHARS = " 0123456789abcdefghijklmnopqrstuvwxyz.,:</>"
CFG = M.ModelConfig(vocab_size=2 + len(CHARS) + 8, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                    d_ff=64)
EX = {"question": "q", "final": "25", "steps": [(7, "*", 4, 28), (28, "-", 8, 20), (20, "+", 5, 25)]}


class PieceTokenizer:
  """Ids 2.. for single characters, and for a few multi-character pieces (so a token can end
  past a step's last character): greedy longest match."""
  PIECES = ["equals", " plus", "times", " 2", "0.", "  ", "ab", "</think>"]
  bos_id, eos_id, pad_id = None, 1, 0

  def _vocab(self):
    return list(CHARS) + self.PIECES

  def encode(self, text):
    v, out, i = self._vocab(), [], 0
    while i < len(text):
      best = max((p for p in v if text.startswith(p, i)), key=len)
      out.append(2 + v.index(best))
      i += len(best)
    return out

  def decode(self, ids, skip_special=True):
    v = self._vocab()
    return "".join(v[i - 2] for i in ids if i >= 2)


TOK = PieceTokenizer()


def test_steps_are_parsed_and_labelled_by_checking_each_one():
  text = ("7 times 4 equals 38. Wait, let me recheck: 7 times 4 equals 28, not 38. 28 minus 8 equals 20. "
          "20 minus 8 equals 12. 20 plus 5 equals 25. 20 plus 5 equals 25. </think> <answer>99 plus 1 equals 100</answer>")
  steps = prm.parse_steps(text)
  assert [s[:4] for s in steps] == [(7, "*", 4, 38), (7, "*", 4, 28), (28, "-", 8, 20), (20, "-", 8, 12),
                                    (20, "+", 5, 25), (20, "+", 5, 25)]  # nothing after </think>
  for a, op, b, r, end in steps:
    assert text[:end].endswith(chains.step_text(a, op, b, r)[:-1])  # ends just past the result
  # wrong arithmetic; right; right; right arithmetic off the chain's values; right, and repeated
  assert prm.step_labels(steps, EX) == [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
  st = prm.step_stats(text)
  assert st["steps"] == 6 and st["repeated_steps"] == 1
  # sentences of the reasoning split at '.' and ':': "Wait, let me recheck" has no operation
  assert st["empty_steps"] == 1


def test_end_tokens_match_a_brute_force_scan():
  rng = np.random.default_rng(0)
  for _ in range(20):
    words = rng.choice(["7 times 4 equals 28.", " 20 plus 5 equals 25.", "ab", "  ", " 2", "0."], 8)
    text = "".join(words)
    ids = TOK.encode(text)
    assert TOK.decode(ids) == text
    ends = [s[4] for s in prm.parse_steps(text)]
    # brute force: walk the tokens, the first whose decoded prefix reaches the end
    want = [next(i for i in range(len(ids)) if len(TOK.decode(ids[:i + 1])) >= e) for e in ends]
    assert prm.end_tokens(ids, ends, TOK) == want


def _rollout(texts, prompt="q:"):
  """A one-prompt rollout of the texts (completion tokens right-padded to N)."""
  p = TOK.encode(prompt)
  comp = [TOK.encode(t) for t in texts]
  N = max(len(c) for c in comp) + 2
  tokens, mask = np.zeros((len(texts), N), np.int32), np.zeros((len(texts), N), bool)
  for r, c in enumerate(comp):
    tokens[r, :len(c)], mask[r, :len(c)] = c, True
  lengths = mask.sum(1)
  return rollout.Rollout(np.asarray([p], np.int32), np.ones((1, len(p)), bool), tokens, np.zeros(tokens.shape, np.float32),
                         mask, lengths, np.zeros(len(texts), bool), list(texts))


TEXTS = ["7 times 4 equals 28. 28 minus 8 equals 20. 20 plus 5 equals 25. </think> <answer>25</answer>",
         "7 times 4 equals 38. 38 minus 8 equals 30.</think>",
         "no steps here.</think>",
         "20 plus 5 equals 25. 20 plus 5 equals 25. 20 plus 5 equals 25."]


def test_rollout_labels_sit_on_each_steps_last_token():
  ro = _rollout(TEXTS)
  target, weight = prm.label_rollout(ro, [EX] * len(TEXTS), TOK)
  for r, text in enumerate(TEXTS):
    ids = list(ro.tokens[r][ro.mask[r]])
    steps = prm.parse_steps(text)
    at = [t for t in range(ro.tokens.shape[1]) if weight[r, t]]
    assert len(at) == len(steps)
    for t, s, y in zip(at, steps, prm.step_labels(steps, EX)):
      assert len(TOK.decode(ids[:t + 1])) >= s[4] > len(TOK.decode(ids[:t]))
      assert target[r, t] == y
  assert weight[2].sum() == 0 and target[1].sum() == 0 and target[3].sum() == 3


def test_scorer_sum_and_min_forms_match_numpy_over_the_heads_values():
  params = M.init_params(jax.random.key(1), CFG, std=0.3)
  head = heads.init_scalar_head(jax.random.key(2), CFG)
  ro = _rollout(TEXTS)
  s = prm.Scorer(CFG, params, head, TOK)
  got = s.scores(ro, [EX] * len(TEXTS))
  assert s.scores(ro, [EX] * len(TEXTS)) is got  # one PRM pass per rollout, shared by the reward terms
  for r, text in enumerate(TEXTS):
    ids = [int(t) for t in ro.tokens[r][ro.mask[r]]]
    row = TOK.encode("q:") + ids
    h, _ = M.hidden_states(params, np.asarray([row]), np.arange(len(row))[None], CFG)
    v = np.asarray(h, np.float64)[0] @ np.asarray(head["w"], np.float64) + float(head["b"])
    p = 1 / (1 + np.exp(-v[len(TOK.encode("q:")):]))  # after each completion token
    steps = prm.parse_steps(text)
    ends = [next(i for i in range(len(ids)) if len(TOK.decode(ids[:i + 1])) >= st[4]) for st in steps]
    want = p[ends]
    np.testing.assert_allclose(got["sum"][r], want.sum() if steps else 0.0, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["min"][r], want.min() if steps else 0.0, rtol=1e-4, atol=1e-6)
    assert got["steps"][r] == len(steps)
    np.testing.assert_allclose(got["tokens_per_step"][r], len(ids) / max(len(steps), 1))
    np.testing.assert_allclose(got["step_accuracy"][r], np.mean(prm.step_labels(steps, EX)) if steps else 0.0)
  assert got["repeated_steps"].tolist() == [0, 0, 0, 2]
  assert s.fn("min")(ro, [EX] * len(TEXTS)) is got["min"]


def test_prm_config_and_arm_errors_name_the_field():
  from r1jax.stages import prm as prm_stage
  with pytest.raises(ValueError, match="prm.samples_per_prompt=0 must be >= 1"):
    prm_stage.PRMConfig(samples_per_prompt=0)
  with pytest.raises(ValueError, match="form='max' is not one of"):
    prm_stage.rl(None, None, {}, None, form="max")


def test_a_given_base_and_prm_skip_their_stages():
  """experiments/prm.py with prm.base / prm.model: no pretraining, no PRM training; every arm starts
  from the given base and scores with the given PRM; each evaluation reads its own arm's policy."""
  from r1jax import experiment
  mod = experiment.load_experiment(pathlib.Path(__file__).resolve().parents[1] / "experiments" / "prm.py")
  full = {s.name: s.inputs for s in mod.stages()}
  assert list(full)[:4] == ["pretrain", "evaluate_base", "prm_data", "prm"]
  given = {s.name: s.inputs for s in mod.stages("/b", "/m")}
  assert "pretrain" not in given and "prm_data" not in given and "prm" not in given
  assert given["evaluate_base"] == {"policy": "/b"}
  for arm in ("outcome", "sum", "min"):
    assert full[f"rl_{arm}"] == {"policy": "pretrain.policy", "prm": "prm.model"}
    assert given[f"rl_{arm}"] == {"policy": "/b", "prm": "/m"}
    assert given[f"evaluate_{arm}"] == full[f"evaluate_{arm}"] == {"policy": f"rl_{arm}.policy"}
