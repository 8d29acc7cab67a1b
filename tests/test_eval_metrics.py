"""pass@k, pass@1, cons@k and grouped tables against hand-computed values and brute force."""
import itertools
import math

import pytest

from r1jax.evaluation import metrics
from r1jax.rewards import answer
from r1jax.rewards import normalize


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 1 - 3 / 5),  # 1 - C(3,1)/C(5,1)
    (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
    (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
    (5, 2, 4, 1.0),  # only 3 wrong samples: every 4-subset holds a correct one
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
    (4, 0, 2, 0.0),
    (4, 4, 1, 1.0),
    (1, 1, 1, 1.0),
])
def test_pass_at_k_hand_values(n, c, k, expected):
  assert metrics.pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_pass_at_k_equals_brute_force_over_subsets():
  for n in range(1, 8):
    for c in range(n + 1):
      flags = [True] * c + [False] * (n - c)
      for k in range(1, n + 1):
        subsets = list(itertools.combinations(flags, k))
        brute = sum(any(s) for s in subsets) / len(subsets)
        assert metrics.pass_at_k(n, c, k) == pytest.approx(brute, rel=1e-12, abs=1e-15), (n, c, k)


def test_pass_at_k_stable_for_large_n():
  # Binomials this size overflow floats; the product form must still agree with exact integers.
  for n, c, k in [(2000, 3, 64), (2000, 1, 1000), (5000, 40, 100)]:
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert metrics.pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-10)
  assert metrics.pass_at_k(2000, 1, 1000) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("n,c,k", [(3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4), (0, 0, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
  with pytest.raises(ValueError, match="pass_at_k"):
    metrics.pass_at_k(n, c, k)


def test_pass_at_1_is_mean_correctness():
  assert metrics.pass_at_1([True, False, False, True, True]) == pytest.approx(0.6)
  assert metrics.pass_at_k(5, 3, 1) == pytest.approx(metrics.pass_at_1([1, 0, 0, 1, 1]))


@pytest.mark.parametrize("answers,correct,expected", [
    (["1/2", "1/2", "3", None, "3", "3"], [1, 1, 0, 0, 0, 0], 0.0),  # "3" wins 3 to 2
    (["5", "7", "7", "5"], [0, 1, 1, 0], 0.0),  # tie 2-2: "5" occurs first
    (["7", "5", "5", "7"], [1, 0, 0, 1], 1.0),  # same votes, order flipped: "7" occurs first
    ([None, None, None, "4"], [0, 0, 0, 1], 1.0),  # no answer casts no vote
    ([None, None], [0, 0], 0.0),
    (["a"], [1], 1.0),
])
def test_cons_at_k_fixed_tables(answers, correct, expected):
  assert metrics.cons_at_k(answers, correct) == expected


def test_majority_index_ties_go_to_first_occurrence():
  assert metrics.majority_index(["b", "a", "a", "b", "c"]) == 0
  assert metrics.majority_index(["c", "b", "a", "a", "b"]) == 1
  assert metrics.majority_index([None, None]) is None


def test_cons_at_k_votes_on_normalized_answers():
  # Three spellings of 1/2 outvote two 2s only after normalization.
  completions = ["<answer>0.5</answer>", "<answer>2</answer>", "<answer>\\frac{1}{2}</answer>",
                 "<answer>2</answer>", "<answer>1/2</answer>", "no answer"]
  verdicts = [answer.grade(c, "1/2") for c in completions]
  keys = [normalize.normalize_answer(v.extracted) if v.extracted is not None else None for v in verdicts]
  assert keys == ["1/2", "2", "1/2", "2", "1/2", None]
  assert metrics.cons_at_k(keys, [v.correct for v in verdicts]) == 1.0
  raw = [v.extracted for v in verdicts]
  assert metrics.cons_at_k(raw, [v.correct for v in verdicts]) == 0.0  # "2" wins the raw vote


ROWS = (
    [dict(problem_id="p1", level=1, correct=f, normalized=a)
     for f, a in zip([True, False, False, True], ["a", "b", "b", "a"])]
    + [dict(problem_id="p2", level=2, correct=f, normalized=a)
       for f, a in zip([False, False, False, True], ["x", "x", None, "y"])]
)


def test_summarize_fixed_table():
  s4 = metrics.summarize(ROWS, 4)
  assert s4 == {"problems": 2, "samples": 8, "pass@1": pytest.approx((0.5 + 0.25) / 2),
                "pass@4": 1.0, "cons@4": pytest.approx((1.0 + 0.0) / 2)}
  s2 = metrics.summarize(ROWS, 2)
  # p1: 1 - C(2,2)/C(4,2) = 5/6; p2: 1 - C(3,2)/C(4,2) = 1/2. cons@2 on the first two samples.
  assert s2["pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)
  assert s2["cons@2"] == pytest.approx(0.5)
  with pytest.raises(ValueError, match="fewer than k=5"):
    metrics.summarize(ROWS, 5)


def test_grouped_summary_and_table():
  g = metrics.grouped_summary(ROWS + [dict(problem_id="p3", correct=True, normalized="z")] * 4, "level", 4)
  assert list(g) == [1, 2, "(all)"]
  assert g[1]["pass@1"] == pytest.approx(0.5) and g[1]["cons@4"] == 1.0
  assert g[2]["pass@1"] == pytest.approx(0.25) and g[2]["cons@4"] == 0.0
  assert g["(all)"]["problems"] == 3  # p3 has no level: only in the overall line
  assert g["(all)"]["pass@1"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
  table, headers = metrics.summary_table(ROWS, "level", 4)
  assert headers == ("level", "problems", "pass@1", "pass@4", "cons@4")
  assert table[0] == ("1", 1, pytest.approx(0.5), 1.0, 1.0)
  assert table[-1][0] == "(all)"
