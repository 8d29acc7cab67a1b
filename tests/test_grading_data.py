"""The grader on real data: every GSM8K test and AIME 2024 reference answer grades right, and the
same answer off by one grades wrong. Numbers never reach math-verify, so this takes seconds."""
import fractions
import json

import pytest

from r1jax.rewards import answer


def _rows(path):
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def gsm8k(shared_data):
  rows = _rows(shared_data / "gsm8k_test.jsonl")
  assert len(rows) == 1319
  return rows


@pytest.fixture(scope="module")
def aime(shared_data):
  rows = _rows(shared_data / "aime2024.jsonl")
  assert len(rows) == 30
  return rows


def _no_math_verify(monkeypatch):
  """Numbers must be decided without math-verify: make any call to it fail the test."""
  def boom(*args, **kwargs):
    raise AssertionError(f"math-verify reached for {args}")
  monkeypatch.setattr(answer, "run_limited", boom)


def test_gsm8k_reference_solutions_grade_correct(gsm8k, monkeypatch):
  _no_math_verify(monkeypatch)
  wrong = []
  for r in gsm8k:
    reasoning, raw_final = r["answer"].split("####")
    # raw_final is GSM8K's own text (" 2,125"), the reference `final` is normalized ("2125").
    for final in (raw_final, f"${raw_final.strip()}", f"{raw_final.strip()} dollars."):
      v = answer.grade(f"<think>{reasoning.strip()}</think> <answer>{final}</answer>", r["final"])
      if not (v.correct and v.reason == "match"):
        wrong.append((r["final"], final, v))
  assert not wrong, wrong[:5]


def test_gsm8k_perturbed_answers_grade_wrong(gsm8k, monkeypatch):
  _no_math_verify(monkeypatch)
  passed = []
  for r in gsm8k:
    reasoning = r["answer"].split("####")[0]
    off = fractions.Fraction(r["final"]) + 1
    for final in (str(off), f"{int(off):,}" if off.denominator == 1 else str(off)):
      v = answer.grade(f"<think>{reasoning.strip()}</think> <answer>{final}</answer>", r["final"])
      if v.correct or v.reason != "mismatch":
        passed.append((r["final"], final, v))
  assert not passed, passed[:5]


def test_gsm8k_no_answer(gsm8k):
  r = gsm8k[0]
  v = answer.grade(f"<think>{r['answer'].split('####')[0]}</think>", r["final"])
  assert v == answer.Verdict(False, None, "no_answer")


def test_aime_boxed_answers_with_and_without_leading_zeros(aime, monkeypatch):
  _no_math_verify(monkeypatch)
  padded_somewhere = 0
  for r in aime:
    ref = r["final"]
    value = int(ref)
    assert str(value) == ref  # the reference carries no leading zeros
    padded_somewhere += r["answer"] != ref  # the original field does ("025")
    for shown in (str(value), f"{value:03d}", r["answer"]):
      # The AoPS solutions hold their own LaTeX and boxes (\\framebox{204}); the last answer wins.
      for completion in (f"<think>{r['solution']}</think> <answer>\\boxed{{{shown}}}</answer>",
                         f"{r['solution']}\nSo the answer is $\\boxed{{{shown}}}$."):
        v = answer.grade(completion, ref)
        assert v.correct and v.reason == "match", (completion, ref, v)
        assert v.extracted == shown
    for off in (value + 1, value - 1):
      for shown in (str(off), f"{off:03d}"):
        v = answer.grade(f"<think>{r['solution']}</think> <answer>\\boxed{{{shown}}}</answer>", ref)
        assert not v.correct and v.reason == "mismatch", (shown, ref, v)
  assert padded_somewhere == 7  # 025, 073, 023, 045, 033, 080, 055
