"""Rewards: answer extraction and grading, format, language, overlong, aha phrases, and the
parallel time-limited compute_rewards (hung and raising reward functions)."""
import functools
import math
import os
import pickle
import threading
import time

import numpy as np
import pytest
import reasoning_gym

from r1jax.rewards import aha
from r1jax.rewards import answer
from r1jax.rewards import extraction
from r1jax.rewards import normalize
from r1jax.rewards import solutions
from r1jax.rewards import time_limit
from r1jax.rewards import combine
from r1jax.rewards import format as fmt
from r1jax.rewards import language
from r1jax.rewards import length

# A hung comparison: sympy spends minutes evaluating this power.
HUNG = "9^{9^{9^{9}}}"


# ---------------------------------------------------------------- extraction

@pytest.mark.parametrize("completion,expected", [
    ("<think>x</think> <answer>42</answer>", "42"),
    ("<answer>1</answer> then <answer> 2 </answer>", "2"),  # the last answer tag
    ("<think><answer>7</answer> no wait</think><answer>8</answer>", "8"),
    ("<answer>The answer is \\boxed{\\frac{1}{2}}.</answer>", "\\frac{1}{2}"),  # boxed unwrapped
    ("<think>\\boxed{3}</think><answer>4</answer>", "4"),  # the tag beats an earlier box
    ("So $\\boxed{\\frac{a}{b+\\sqrt{c}}}$.", "\\frac{a}{b+\\sqrt{c}}"),  # nested braces
    ("\\boxed{1} and finally \\boxed{2}", "2"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces do not close the box
    ("\\boxed{5} then a cut-off \\boxed{6", "5"),  # the last BALANCED box
    ("<answer>unclosed \\boxed{9}", "9"),  # no closed tag: fall back to the box
    ("<answer>  </answer>", None),
    ("<answer></answer> \\boxed{4}", None),  # an empty answer tag is no answer
    ("just text 42", None),
    ("", None),
])
def test_extract_answer(completion, expected):
  assert extraction.extract_answer(completion) == expected


# ---------------------------------------------------------------- numbers

@pytest.mark.parametrize("pred,ref,correct", [
    ("18", "18", True), ("$18", "18", True), ("\\$18.00", "18", True), ("18 dollars", "18", True),
    ("18 dollars.", "18", True), ("The answer is 18.", "18", True), ("18.00", "18", True),
    ("\\text{18 eggs}", "18", True), ("1,234", "1234", True), ("1{,}234", "1234", True),
    ("1\\,234", "1234", True), ("$1,000.50", "1000.5", True), ("025", "25", True), ("007", "7", True),
    ("3/4", "0.75", True), ("\\frac{3}{4}", "3/4", True), ("\\dfrac34", "0.75", True),
    ("-\\frac{1}{2}", "-0.5", True), ("\\frac{-1}{2}", "-1/2", True), ("75\\%", "75", True),
    ("75%", "75", True), ("-7", "-7", True), ("\u22127", "-7", True), ("x = 5", "5", True),
    ("90^\\circ", "90", True),
    # a reference with no finite decimal: truncation or rounding to >= 3 decimals
    ("0.333", "1/3", True), ("0.6667", "2/3", True), ("0.666", "2/3", True),
    ("0.334", "1/3", False), ("0.33", "1/3", False), ("0.13", "1/8", False),
    ("18", "19", False), ("1,234", "1243", False), ("-18", "18", False), ("0.75", "3/5", False),
    ("250", "25", False), ("2.5", "25", False),
])
def test_numeric_forms(pred, ref, correct):
  v = answer.grade(f"<think>...</think><answer>{pred}</answer>", ref)
  assert (v.correct, v.reason) == (correct, "match" if correct else "mismatch")
  assert v.extracted == pred


@pytest.mark.parametrize("text,value", [
    ("025", 25), ("1,234.5", 2469 / 2), ("\\frac{6}{8}", 3 / 4), ("18 dollars", 18),
    ("5x", None), ("x5", None), ("2 3", None), ("5 thousand", None), ("1, 2", None), ("\\sqrt{2}", None),
    ("2^{10}", None), ("(5)", None), ("1/0", None),
])
def test_parse_number(text, value):
  got = normalize.parse_number(text)
  assert (got is None) if value is None else (got == pytest.approx(value, rel=0, abs=0))


def test_not_plain_numbers_are_not_graded_as_numbers():
  # "5x" is not 5 and "2 3" is not 23: these go to math-verify, which says no.
  for pred, ref in [("5x", "5"), ("2 3", "23"), ("5 thousand", "5")]:
    v = answer.grade(f"<answer>{pred}</answer>", ref)
    assert (v.correct, v.reason) == (False, "mismatch"), (pred, v)


def test_normalize_answer_keys():
  assert {normalize.normalize_answer(s) for s in ["0.5", "\\frac{1}{2}", "1/2", "$0.50", "\\boxed{0.5}"]} == {"1/2"}
  assert normalize.normalize_answer("025") == normalize.normalize_answer("25.0") == "25"
  assert normalize.normalize_answer("\\left( 1, 2 \\right)") == "(1,2)"
  assert normalize.normalize_answer("x + 1") == "x+1"
  assert normalize.normalize_answer("1 2") != normalize.normalize_answer("12")


@pytest.mark.parametrize("a,b", [("\\left(1, 2\\right)", "(1,2)"), ("\\text{north}", "north"),
                                 ("x + 1.", "x+1")])
def test_equal_keys_grade_as_match(a, b):
  assert normalize.normalize_answer(a) == normalize.normalize_answer(b)
  assert answer.grade(f"<answer>{a}</answer>", b) == answer.Verdict(True, a, "match")


# ---------------------------------------------------------------- LaTeX via math-verify

@pytest.mark.parametrize("pred,ref,correct", [
    ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True),
    ("\\frac{\\sqrt2}{2}", "\\sqrt{2}/2", True),
    ("\\frac{1}{\\sqrt{2}}", "\\frac{\\sqrt{2}}{2}", True),
    ("1+x^2", "x^2+1", True),
    ("\\frac{\\pi}{3}", "\\frac{\\pi}{4}", False),
    ("3.14", "\\pi", False),
    ("\\sqrt{3}", "\\sqrt{2}", False),
    ("2\\sqrt{2}", "\\sqrt{8}", True),
])
def test_latex_with_math_verify(pred, ref, correct):
  v = answer.grade(f"<answer>{pred}</answer>", ref, timeout_s=20.0)
  assert (v.correct, v.reason) == (correct, "match" if correct else "mismatch")


# Solution lists as MATH and OlympiadBench write them, graded by `answer.grade` and by math-verify
# itself (`verify(parse(gold), parse(pred))`). Where math-verify is right we agree with it; the
# "differ" rows are where it is wrong and we deliberately are not: math-verify reads `x=a, b` as
# Eq(x, {a, b}) and matches that only to the same text, so an equal set written otherwise (another
# order, `k\pi` for `\pi k`, `1.0` for 1, `x \in \{..\}`) is marked wrong; `solutions.solution_list`
# turns one variable's equation list into the plain set of its roots first.
_PI6, _PI3 = r"\frac{\pi}{6}+\pi k", r"\frac{\pi}{3}+\pi k"
SOLUTION_LISTS = [  # (gold, pred, right answer, "agree" | "differ")
    (f"{_PI6}, {_PI3}", f"x={_PI6}, {_PI3}", True, "agree"),  # the reported case
    (f"{_PI6}, {_PI3}", f"x={_PI3}, x={_PI6}", True, "agree"),
    ("1, 2", "2, 1", True, "agree"),
    ("1, 2", r"x=1 \text{ or } x=2", True, "agree"),
    ("1, 2", "x = 1, x = 2", True, "agree"),
    ("-2, 1", r"x=-2 \text{ and } x=1", True, "agree"),
    (r"x=1 \text{ or } x=2", "1, 2", True, "agree"),
    (r"\{1,2\}", "2,1", True, "agree"),
    ("1, -1", r"\pm 1", True, "agree"),
    (r"\frac{\pi}{6}, \frac{5\pi}{6}", r"x = \frac{5\pi}{6}, x= \frac{\pi}{6}", True, "agree"),
    ("3", "x=3", True, "agree"),
    (r"x \in [1,2]", "[1,2]", True, "agree"),
    (r"[1,2)\cup(3,4]", r"[1, 2) \cup (3, 4]", True, "agree"),
    ("1, 2", "1, 3", False, "agree"),
    ("1,2,3", "1,2", False, "agree"),  # a missing root
    ("x=1, 2", "x=1, 3", False, "agree"),
    ("(1,2)", "(2,1)", False, "agree"),  # an ordered pair / interval: order matters
    ("x=1,y=2", "x=2,y=1", False, "agree"),  # several variables: a tuple of values, not a set
    (r"[1,2)\cup(3,4]", r"[1,2]\cup(3,4]", False, "agree"),
    (f"x={_PI6}, {_PI3}", f"x={_PI3}, {_PI6}", True, "agree"),  # equal text up to order: it matches
    ("x=1, -2", "x=-2, 1", True, "agree"),
    (r"x \in \{1, -2\}", "x=-2, 1", True, "agree"),
    (r"x=\frac{1}{2}; x=3", r"x=3, \frac12", True, "agree"),
    (f"x={_PI6}, {_PI3}", r"x=\frac{\pi}{6}+k\pi, \pi k+\frac{\pi}{3}", True, "differ"),
    (r"x \in \{\frac{1}{2}, 3\}", "x=0.5, 3", True, "differ"),
    (r"x=\sqrt{2}, -\sqrt{2}", r"x=\pm\sqrt2", True, "agree"),
    ("x=1, -2", "x=1.0, -2", True, "differ"),
]


@pytest.mark.parametrize("gold,pred,right,relation", SOLUTION_LISTS)
def test_solution_lists_against_math_verify(gold, pred, right, relation):
  from math_verify import parse, verify
  theirs = bool(verify(parse(f"${gold}$"), parse(f"\\boxed{{{pred}}}")))
  ours = answer.grade(f"<answer>{pred}</answer>", gold, timeout_s=20.0).correct
  assert ours == right
  assert theirs == (right if relation == "agree" else not right)


def test_solution_list_leaves_other_forms_alone():
  for s in ("x=3", "x=1, y=2", "x_1=1, x_2=2", "(1,2)", r"[1,2)\cup(3,4]", "x<2", r"x \leq 2, x=3", "1, 2"):
    assert solutions.solution_list(s) == s
  assert solutions.solution_list(r"x=\frac{\pi}{6}+\pi k, k \in \mathbb{Z}") == r"x=\frac{\pi}{6}+\pi k"
  assert solutions.solution_list(r"x \in \{1, 2\}") == r"\{1, 2\}"
  assert solutions.solution_list(r"x=1 \quad x=2") == solutions.solution_list("x=1 or x=2") == "1, 2"


def test_math_verify_agrees_with_numeric_path():
  # The fast path says \frac{1}{2} == 0.5; math-verify itself must agree.
  assert answer.grade("<answer>0.5</answer>", "\\frac{1}{2}").correct
  assert time_limit.run_limited(answer._math_verify_equal, ("\\frac{1}{2}", "0.5"), 20.0) == ("ok", True)
  assert time_limit.run_limited(answer._math_verify_equal, ("\\frac{1}{2}", "0.6"), 20.0) == ("ok", False)


def test_grade_rejects_a_non_positive_time_limit():
  with pytest.raises(ValueError, match="timeout_s=0"):
    answer.grade("<answer>x</answer>", "y", timeout_s=0)


def _allowance_s(fn=len, args=((),)):
  """Scheduling allowance for the timing bounds below: 1 s plus twice what starting a fresh
  sandbox and running `fn(*args)` in it costs now, on this machine. A loaded machine widens the
  allowance with its own slowness instead of failing the bound; a hang (minutes) still fails it."""
  box = time_limit.Sandbox()
  t0 = time.perf_counter()
  status, _ = box.call(fn, args, 120.0)
  dt = time.perf_counter() - t0
  box.close()
  assert status == "ok"
  return 1.0 + 2 * dt


def _warm_sandboxes(n):
  """Leave n idle sandboxes with math-verify loaded, so no timed region starts one."""
  threads = [threading.Thread(target=answer.grade, args=("<answer>\\sqrt{2}</answer>", "\\sqrt{2}/1"))
             for _ in range(n)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=120)


def test_hung_comparison_times_out_without_blocking():
  _warm_sandboxes(1)
  allow = _allowance_s()
  t0 = time.perf_counter()
  v = answer.grade(f"<answer>{HUNG}</answer>", "1", timeout_s=1.0)
  dt = time.perf_counter() - t0
  assert v == answer.Verdict(False, HUNG, "timeout")
  assert 1.0 <= dt < 1.0 + allow, (dt, allow)  # the limit, then the kill: not the minutes of the hang
  # The killed sandbox is replaced: the next comparison works.
  assert answer.grade("<answer>\\frac{\\sqrt2}{2}</answer>", "\\sqrt{2}/2").correct


def test_hung_comparison_times_out_in_worker_threads():
  # math-verify's own signal.alarm limit cannot work off the main thread; ours must.
  _warm_sandboxes(2)
  allow = _allowance_s()
  out = []
  t0 = time.perf_counter()
  threads = [threading.Thread(target=lambda: out.append(answer.grade(f"<answer>{HUNG}</answer>", "2", 1.0)))
             for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=30)
  dt = time.perf_counter() - t0
  assert [v.reason for v in out] == ["timeout", "timeout"]
  assert 1.0 <= dt < 1.0 + allow, (dt, allow)  # the two 1 s limits run at the same time


# ---------------------------------------------------------------- format

R1 = "<think>\nreason\n</think>\n<answer>\n5\n</answer>"


@pytest.mark.parametrize("completion,tip,strict,lenient", [
    (R1, False, 1.0, 1.0),
    ("<think>a</think><answer>5</answer>", False, 1.0, 1.0),
    (" <think> a </think> <answer> 5 </answer>\n", False, 1.0, 1.0),  # space after "Assistant:", EOS newline
    ("<think>a</think> so <answer>5</answer>", False, 0.0, 1.0),  # text between the blocks
    ("<think>a</think><answer>5</answer> more", False, 0.0, 1.0),  # text after the answer
    ("intro <think>a</think><answer>5</answer>", False, 0.0, 1.0),
    ("<think>a<think>b</think><answer>5</answer>", False, 0.0, 1.0),  # two opening tags
    ("<think>a</think><answer>5</answer><answer>6</answer>", False, 0.0, 1.0),
    ("<answer>5</answer><think>a</think>", False, 0.0, 0.0),  # wrong order
    ("<think>a</think>", False, 0.0, 0.0),
    ("<answer>5</answer>", False, 0.0, 0.0),
    ("a</think><answer>5</answer>", False, 0.0, 0.0),
    ("a</think><answer>5</answer>", True, 1.0, 1.0),  # the <think> was in the prompt
    ("\na\n</think>\n<answer>\n5\n</answer>", True, 1.0, 1.0),
    ("<think>a</think><answer>5</answer>", True, 0.0, 0.0),  # opens a second <think>
])
def test_strict_and_lenient_format(completion, tip, strict, lenient):
  assert fmt.strict_format(completion, think_in_prompt=tip) == strict
  assert fmt.lenient_format(completion, think_in_prompt=tip) == lenient
  assert combine.format_reward(completion, {}, think_in_prompt=tip) == strict


@pytest.mark.parametrize("completion,tip,count", [
    (R1, False, 1.0),
    ("<think>a</think><answer>5</answer>", False, 0.0),  # open-r1 counts the newlines too
    ("<think>\na</think>\n<answer>\n5\n</answer>", False, 0.75),  # "\n</think>\n" missing
    ("<think>\na\n</think>\n<think>\nb\n</think>\n<answer>\n5\n</answer>", False, 0.5),  # two think blocks
    ("<think>\na\n</think>\n", False, 0.5),
    ("a\n</think>\n<answer>\n5\n</answer>", True, 1.0),
    ("<think>\na\n</think>\n<answer>\n5\n</answer>", True, 0.75),
])
def test_tag_count(completion, tip, count):
  assert fmt.tag_count(completion, think_in_prompt=tip) == count
  assert combine.tag_count_reward(completion, {}, think_in_prompt=tip) == count


# ---------------------------------------------------------------- language

def _r(share, k=10.0):
  """The documented map, written out: (sig(k(s - 1/2)) - sig(-k/2)) / (sig(k/2) - sig(-k/2))."""
  sig = lambda x: 1 / (1 + math.exp(-x))
  return (sig(k * (share - 0.5)) - sig(-k / 2)) / (sig(k / 2) - sig(-k / 2))


def test_sigmoid_normalize_hand_values():
  # By hand, k = 10: sig(5) = 0.9933071, sig(-5) = 0.0066929, sig(2.5) = 0.9241418, sig(1) = 0.7310586.
  assert language.sigmoid_normalize(0.0) == pytest.approx(0.0, abs=1e-15)
  assert language.sigmoid_normalize(1.0) == pytest.approx(1.0, rel=1e-15)
  assert language.sigmoid_normalize(0.5) == pytest.approx(0.5, rel=1e-12)
  assert language.sigmoid_normalize(0.75) == pytest.approx((0.9241418 - 0.0066929) / 0.9866142, rel=1e-6)
  assert language.sigmoid_normalize(0.6) == pytest.approx((0.7310586 - 0.0066929) / 0.9866142, rel=1e-6)
  assert language.sigmoid_normalize(0.3, k=4.0) == pytest.approx(_r(0.3, 4.0), rel=1e-12)
  with pytest.raises(ValueError, match="share"):
    language.sigmoid_normalize(1.5)


def test_language_share_and_reward():
  mixed = "<think>The answer is 所以</think><answer>5</answer>"  # 3 latin words, 2 han characters
  assert language.language_share(language.chain_of_thought(mixed), "en") == pytest.approx(3 / 5)
  assert language.language_share(language.chain_of_thought(mixed), "zh") == pytest.approx(2 / 5)
  assert language.language_consistency(mixed, "latin") == pytest.approx(_r(0.6), rel=1e-12)
  assert combine.language_reward(mixed, {"final": "5"}) == pytest.approx(_r(0.6), rel=1e-12)
  assert combine.language_reward(mixed, {"final": "5", "language": "zh"}) == pytest.approx(_r(0.4), rel=1e-12)
  # Math and LaTeX commands are nobody's words: only "Let" and 所, 以 count.
  math_cot = "<think>Let $x^2 = y$ 所以 \\frac{1}{2} 42</think>"
  assert language.language_share(language.chain_of_thought(math_cot), "cjk") == pytest.approx(2 / 3)
  # Cyrillic words are one word per run, not per letter.
  assert language.language_share("привет мир hello", "ru") == pytest.approx(2 / 3)
  # The CoT ends at </think> or <answer>; with the <think> in the prompt it starts at 0.
  assert language.chain_of_thought("abc 中文</think><answer>x</answer>") == "abc 中文"
  assert language.chain_of_thought("<answer>no thinking</answer>") == ""
  assert language.language_consistency("<answer>no thinking</answer>", "en") == 0.0
  assert language.language_consistency("<think> 3 + 4 = 7 , 7 * 2 = 14 </think><answer>14</answer>", "en") == 1.0
  assert language.language_consistency("<think>   </think><answer>14</answer>", "zh") == 0.0
  assert language.language_consistency("<think>pure English reasoning</think>", "en") == 1.0
  with pytest.raises(ValueError, match="klingon"):
    language.resolve_script("klingon")


def test_mix_language():
  assert language.mix_language(1.0, 0.5) == pytest.approx(0.9)
  assert language.mix_language(0.0, 1.0, alpha=0.8) == pytest.approx(0.2)
  np.testing.assert_allclose(language.mix_language(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.5), [0.5, 0.5])


# ---------------------------------------------------------------- overlong

def test_soft_overlong_punishment_hand_values():
  # Lmax = 100, C = 20: free up to 80 tokens, linear to -1 at 100, -1 beyond.
  L = [0, 50, 80, 81, 90, 99, 100, 101, 500]
  expected = [0, 0, 0, -1 / 20, -10 / 20, -19 / 20, -1, -1, -1]
  np.testing.assert_allclose(length.soft_overlong_punishment(L, 100, 20), expected, rtol=1e-15, atol=0)
  assert length.soft_overlong_punishment(90, 100, 20) == pytest.approx(-0.5)
  np.testing.assert_allclose(length.soft_overlong_punishment(np.array([[3, 4]]), 4, 4), [[-0.75, -1.0]])
  for bad in [(100, 0), (100, 101)]:
    with pytest.raises(ValueError, match="buffer"):
      length.soft_overlong_punishment(L, *bad)


# ---------------------------------------------------------------- aha phrases

AHA = ("Wait, let me check. Hmm, wait... Let me try again — I made a mistake. Maybe it's 5; "
       "I’m not sure. I THINK so.")


def test_aha_counts():
  assert aha.aha_counts(AHA) == {"reflection": 3, "restart": 2, "uncertainty": 3}
  assert aha.phrase_counts(AHA, "reflection") == {"wait": 2, "let me check": 1}
  assert aha.phrase_counts(AHA, "uncertainty") == {"maybe": 1, "i'm not sure": 1, "i think": 1}
  # Word boundaries: no match inside other words.
  assert aha.aha_counts("awaiting the maybelline checking verifying-free retry") == {
      "reflection": 1, "restart": 0, "uncertainty": 0}  # only "verifying"
  assert aha.aha_counts("let   me\nstart over") == {"reflection": 0, "restart": 1, "uncertainty": 0}


def test_aha_batch_metrics():
  m = aha.batch_metrics([AHA, "nothing here", "perhaps", "wait"])
  assert m["reflection_rate"] == pytest.approx(2 / 4)
  assert m["reflection_per_response"] == pytest.approx((3 + 0 + 0 + 1) / 4)
  assert m["restart_rate"] == pytest.approx(1 / 4)
  assert m["restart_per_response"] == pytest.approx(2 / 4)
  assert m["uncertainty_rate"] == pytest.approx(2 / 4)
  assert m["uncertainty_per_response"] == pytest.approx((3 + 0 + 1 + 0) / 4)
  assert aha.batch_metrics([])["reflection_rate"] == 0.0


# ---------------------------------------------------------------- reasoning-gym

@pytest.mark.parametrize("name", ["basic_arithmetic", "chain_sum"])
def test_reasoning_gym_scoring(name):
  ds = reasoning_gym.create_dataset(name, size=4, seed=7)
  for entry in ds:
    ex = {"final": entry["answer"], "rg_dataset": name, "rg_entry": entry}
    right = f"<think>...</think><answer>{entry['answer']}</answer>"
    wrong = f"<think>...</think><answer>{int(entry['answer']) + 1}</answer>"
    assert combine.accuracy_reward(right, ex) == 1.0
    assert combine.accuracy_reward(wrong, ex) == 0.0
    assert combine.accuracy_reward("<think>no answer</think>", ex) == 0.0
    # Whatever the dataset's own scorer says, including its leniency or partial credit.
    odd = f"<answer>{entry['answer']}.0</answer>"
    assert combine.accuracy_reward(odd, ex) == ds.score_answer(f"{entry['answer']}.0", entry)
    assert combine.accuracy_reward(odd, ex | {"rg_config": {"size": 4, "seed": 7}}) == \
        ds.score_answer(f"{entry['answer']}.0", entry)
  e = ds[0]
  odd = combine.accuracy_reward(f"<answer>{e['answer']}.0</answer>", {"rg_dataset": name, "rg_entry": e})
  # chain_sum tolerates trailing decimals; basic_arithmetic gives partial credit len(oracle)/len(answer).
  assert odd == (1.0 if name == "chain_sum" else len(e["answer"]) / (len(e["answer"]) + 2))


# ---------------------------------------------------------------- compute_rewards

def sleepy_reward(completion, example):
  """Hangs on examples marked 'hang' (a stand-in for a stuck verifier)."""
  if example.get("hang"):
    time.sleep(120)
  return 1.0


def raising_reward(completion, example):
  if example.get("boom"):
    raise ZeroDivisionError("boom")
  return 0.5


def bad_value_reward(completion, example):
  return {"nan": float("nan"), "str": "1.0"}.get(example.get("bad"), 0.25)


def crashing_reward(completion, example):
  os._exit(3)  # the worker dies mid-call (as on a segfault or the OOM killer)


def _warm(num_workers):
  """Start `num_workers` sandboxes outside any timed region."""
  combine.compute_rewards(["x"] * 4, [{"final": "1"}] * 4, [combine.RewardSpec("s", sleepy_reward)],
                          timeout_s=30.0, num_workers=num_workers)


def test_compute_rewards_hung_and_raising_functions_score_zero_and_are_counted():
  _warm(2)
  completions = ["<think>\na\n</think>\n<answer>\n3\n</answer>", "<answer>4</answer>", "<answer>3</answer>",
                 "nothing"]
  examples = [{"final": "3"}, {"final": "3", "hang": True}, {"final": "3", "boom": True}, {"final": "3"}]
  specs = [combine.RewardSpec("sleepy", sleepy_reward, 1.0), combine.RewardSpec("raising", raising_reward, 2.0),
           combine.RewardSpec("accuracy", combine.accuracy_reward, 1.0),
           combine.RewardSpec("format", combine.format_reward, 0.5)]
  # The overrun kills one sandbox; its replacement starts (and imports this module) inside the timing.
  allow = _allowance_s(sleepy_reward, ("x", {}))
  t0 = time.perf_counter()
  total, per_fn, stats = combine.compute_rewards(completions, examples, specs, timeout_s=1.0, num_workers=2)
  dt = time.perf_counter() - t0
  assert 1.0 <= dt < 1.0 + allow, (dt, allow)  # one 1 s overrun, not the 120 s sleep
  np.testing.assert_array_equal(per_fn["sleepy"], [1.0, 0.0, 1.0, 1.0])
  np.testing.assert_array_equal(per_fn["raising"], [0.5, 0.5, 0.0, 0.5])
  np.testing.assert_array_equal(per_fn["accuracy"], [1.0, 0.0, 1.0, 0.0])
  np.testing.assert_array_equal(per_fn["format"], [1.0, 0.0, 0.0, 0.0])
  np.testing.assert_allclose(total, [1 + 1 + 1 + 0.5, 0 + 1 + 0 + 0, 1 + 0 + 1 + 0, 1 + 1 + 0 + 0], rtol=1e-15)
  assert stats == {"errors": {"sleepy": 0, "raising": 1, "accuracy": 0, "format": 0},
                   "timeouts": {"sleepy": 1, "raising": 0, "accuracy": 0, "format": 0}}


def test_compute_rewards_counts_non_numbers_as_errors():
  total, per_fn, stats = combine.compute_rewards(
      ["a", "b", "c"], [{"bad": "nan"}, {"bad": "str"}, {}], [combine.RewardSpec("v", bad_value_reward, 2.0)],
      timeout_s=30.0, num_workers=1)
  np.testing.assert_array_equal(per_fn["v"], [0.0, 0.0, 0.25])
  np.testing.assert_array_equal(total, [0.0, 0.0, 0.5])
  assert stats == {"errors": {"v": 2}, "timeouts": {"v": 0}}


def test_compute_rewards_survives_a_dying_worker():
  specs = [combine.RewardSpec("crash", crashing_reward), combine.RewardSpec("ok", raising_reward)]
  total, per_fn, stats = combine.compute_rewards(["a", "b"], [{}, {}], specs, timeout_s=30.0, num_workers=1)
  np.testing.assert_array_equal(per_fn["crash"], [0.0, 0.0])
  np.testing.assert_array_equal(per_fn["ok"], [0.5, 0.5])  # the replacement worker carries on
  np.testing.assert_array_equal(total, [0.5, 0.5])
  assert stats == {"errors": {"crash": 2, "ok": 0}, "timeouts": {"crash": 0, "ok": 0}}


def test_compute_rewards_hung_grade_inside_a_worker():
  # In a (daemonic) worker the grader's own limit is an interval timer: the comparison is a
  # 'timeout' verdict scoring 0 after 0.5 s, long before the worker's 5 s limit would kill it.
  _warm(1)
  specs = [combine.RewardSpec("accuracy", functools.partial(combine.accuracy_reward, timeout_s=0.5))]
  t0 = time.perf_counter()
  total, _, stats = combine.compute_rewards([f"<answer>{HUNG}</answer>", "<answer>\\sqrt{4}</answer>"],
                                            [{"final": "1"}, {"final": "2"}], specs, timeout_s=5.0,
                                            num_workers=1)
  assert time.perf_counter() - t0 >= 0.5  # the grader waited its limit
  np.testing.assert_array_equal(total, [0.0, 1.0])
  # No worker timeout: the grader's own 0.5 s limit fired, not the worker's 5 s kill (which would
  # count here), whatever the load of the machine.
  assert stats == {"errors": {"accuracy": 0}, "timeouts": {"accuracy": 0}}


def test_compute_rewards_with_default_specs_and_reasoning_gym():
  ds = reasoning_gym.create_dataset("basic_arithmetic", size=2, seed=3)
  examples = [{"final": e["answer"], "rg_dataset": "basic_arithmetic", "rg_entry": e} for e in ds]
  examples += [{"final": "\\frac{\\sqrt{2}}{2}"}, {"final": "5", "language": "zh"}]
  completions = [f"<think>\nadd\n</think>\n<answer>\n{ds[0]['answer']}\n</answer>",
                 f"<think>add</think><answer>{int(ds[1]['answer']) + 1}</answer>",
                 "<think>half root two</think> <answer>\\sqrt{2}/2</answer>",
                 "<think>The answer is 所以</think><answer>5</answer>"]
  specs = combine.default_specs({"accuracy": 1.0, "format": 1.0, "language": 1.0, "language_alpha": 0.8,
                                 "language_target": "en"})
  assert [(s.name, s.weight) for s in specs] == [("accuracy", 0.8), ("format", 1.0), ("language", pytest.approx(0.2))]
  total, per_fn, stats = combine.compute_rewards(completions, examples, specs, timeout_s=20.0, num_workers=2)
  np.testing.assert_array_equal(per_fn["accuracy"], [1.0, 0.0, 1.0, 1.0])
  np.testing.assert_array_equal(per_fn["format"], [1.0, 1.0, 1.0, 1.0])
  np.testing.assert_allclose(per_fn["language"], [1.0, 1.0, 1.0, _r(0.4)], rtol=1e-12)
  np.testing.assert_allclose(total, 0.8 * per_fn["accuracy"] + per_fn["format"] + 0.2 * per_fn["language"],
                             rtol=1e-12)
  assert stats == {"errors": {"accuracy": 0, "format": 0, "language": 0},
                   "timeouts": {"accuracy": 0, "format": 0, "language": 0}}


def test_specs_are_picklable_and_recompute_the_same():
  specs = combine.default_specs({"tag_count": 0.5, "language": 1.0, "think_in_prompt": True})
  again = pickle.loads(pickle.dumps(specs))
  c, ex = "a\n</think>\n<answer>\n5\n</answer>", {"final": "5"}
  assert [s.fn(c, ex) for s in again] == [s.fn(c, ex) for s in specs] == [1.0, 1.0, 1.0, 1.0]


def test_config_errors_are_raised_early():
  with pytest.raises(ValueError, match="unknown rewards config keys \\['acuracy'\\]"):
    combine.default_specs({"acuracy": 1.0})
  with pytest.raises(ValueError, match="klingon"):
    combine.default_specs({"language": 1.0, "language_target": "klingon"})
  with pytest.raises(ValueError, match="language_alpha"):
    combine.default_specs({"language_alpha": 1.5})
  spec = [combine.RewardSpec("a", raising_reward)]
  with pytest.raises(ValueError, match="2 completions but 1 examples"):
    combine.compute_rewards(["a", "b"], [{}], spec)
  with pytest.raises(ValueError, match="unique"):
    combine.compute_rewards(["a"], [{}], spec * 2)


def test_last_number_extraction_grades_untagged_answers_and_tags_still_win():
  """rewards/eval.answer_extraction='last_number': an untagged completion is graded by its last
  number (GSM8K harnesses' flexible extraction); a tagged answer still decides; 'tagged' stays strict."""
  from r1jax.rewards import combine
  assert answer.grade("10 + 8 = 18.", "18", extract="last_number").correct
  assert not answer.grade("10 + 8 = 18, so 19", "18", extract="last_number").correct
  assert answer.grade("1,234 apples", "1234", extract="last_number").correct
  assert not answer.grade("18 <answer>17</answer> 18", "18", extract="last_number").correct
  assert answer.grade("no number here", "18", extract="last_number").reason == "no_answer"
  assert answer.grade("10 + 8 = 18.", "18").reason == "no_answer"
  ex = {"final": "18"}
  specs = combine.default_specs({"answer_extraction": "last_number"})
  assert specs[0].fn("it is 18", ex) == 1.0 and combine.default_specs({})[0].fn("it is 18", ex) == 0.0
  with pytest.raises(ValueError, match="rewards.answer_extraction='last' is not one of"):
    combine.RewardsConfig(answer_extraction="last")
