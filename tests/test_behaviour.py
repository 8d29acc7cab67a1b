"""Behaviour metrics: reflection / restart flags from rewards.aha, P(correct | reflected), length of
correct vs wrong answers, CoT language mix from rewards.language: hand-computed values."""
import math

import numpy as np
import pytest

from r1jax.evaluation import behaviour
from r1jax.tasks import second_language

TEXTS = [
    "<think> 3 plus 4 equals 8. Wait, let me check: 3 plus 4 equals 7. </think> <answer> 7 </answer>",
    "<think> 2 times 3 equals 5. I made a mistake, let me start over. 2 times 3 equals 6. </think> <answer> 6 </answer>",
    "<think> 5 minus 1 equals 4. </think> <answer> 4 </answer>",
    "<think> " + second_language.to_greek("9 plus 1 equals 11. Hold on: 9 plus 1 equals 10.") + " </think> <answer> 10 </answer>",
    "<think> 1 plus 1 equals 2. waiting is not wait-free </think> <answer> 3 </answer>",
]


def test_flags_from_aha_and_through_the_second_language():
  assert list(behaviour.reflection_flags(TEXTS)) == [True, False, False, False, True]
  assert list(behaviour.reflection_flags(TEXTS, normalize=second_language.to_latin)) == [True, False, False, True, True]
  assert list(behaviour.restart_flags(TEXTS)) == [False, True, False, False, False]
  assert behaviour.reflection_flags([]).shape == (0,)
  with pytest.raises(ValueError, match="category='aha'"):
    behaviour.flags(TEXTS, "aha")


def test_correct_given_and_length_by_correctness_hand_values():
  m = behaviour.correct_given([1, 0, 1, 1, 0], [True, True, False, False, False])
  assert m == {"p_correct_given_reflected": 0.5, "p_correct_given_not_reflected": 2 / 3,
               "num_reflected": 2, "num_not_reflected": 3}
  none = behaviour.correct_given([1.0, 0.0], [False, False], "restarted")
  assert math.isnan(none["p_correct_given_restarted"]) and none["p_correct_given_not_restarted"] == 0.5
  lens = behaviour.length_by_correctness([10, 30, 20, 50], [1.0, 0.0, 1.0, 0.0])
  assert lens == {"mean_length_correct": 15.0, "mean_length_wrong": 40.0}
  assert math.isnan(behaviour.length_by_correctness([4], [0.0])["mean_length_correct"])
  with pytest.raises(ValueError, match=r"shape \(2,\)"):
    behaviour.correct_given([1, 0], [True, False, True])


def test_language_mix_uses_the_rewards_share_on_the_chain_of_thought():
  comps = ["<think> one two three four </think> <answer> αβγ </answer>",  # answer words do not count: 1.0
           "<think> one two three αβγ </think>",  # 3 of 4 words Latin
           "<think> αβγ δεζ </think>",  # none
           "<think> 12 + 7 = 19 </think>"]  # no words: 1.0, as the harness counts it
  np.testing.assert_allclose(behaviour.cot_shares(comps, "en"), [1.0, 0.75, 0.0, 1.0])
  mix = behaviour.language_mix(comps, "en")
  assert mix == {"target_share": pytest.approx(2.75 / 4), "mixed_rate": 0.25, "off_target_rate": 0.25}


def test_behaviour_metrics_combines_them():
  correct = [1.0, 1.0, 1.0, 1.0, 0.0]
  m = behaviour.behaviour_metrics(TEXTS, correct, [12, 20, 6, 14, 9], target="en",
                                  normalize=second_language.to_latin)
  assert m["reflection_rate"] == 0.6 and m["restart_rate"] == 0.2
  assert m["p_correct_given_reflected"] == pytest.approx(2 / 3) and m["p_correct_given_not_reflected"] == 1.0
  assert m["p_correct_given_restarted"] == 1.0 and m["p_correct_given_not_restarted"] == 0.75
  assert m["mean_length_correct"] == 13.0 and m["mean_length_wrong"] == 9.0
  assert m["target_share"] == pytest.approx(0.8) and m["off_target_rate"] == pytest.approx(0.2)
  assert "target_share" not in behaviour.behaviour_metrics(TEXTS, correct, [1] * 5)
