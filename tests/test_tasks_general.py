"""Generated general tasks: deterministic from the seed, reference answers recomputed from the
question text, and the exact-words grader."""
import collections
import re

import pytest

from r1jax import curation
from r1jax.tasks import general


def _listed(question):
  return re.search(r": (.*)[.?]$", question).group(1).split(", ")


def _recompute(ex):
  """The answer from the question alone, written independently of the generator."""
  q = ex["question"]
  if ex["subject"] == "lookup":
    owners = {t: n for n, t in re.findall(r"(\w+) has the (\w+)", q.split(". Who")[0])}
    return owners[re.search(r"Who has the (\w+)\?", q).group(1)]
  words = _listed(q)
  return {"copy": " ".join(words), "reverse": " ".join(reversed(words)),
          "sort": " ".join(sorted(words, key=lambda w: w.casefold())), "count": str(len(words))}[ex["subject"]]


def test_deterministic_distinct_and_every_kind():
  a, b = general.generate(60, seed=7), general.generate(60, seed=7)
  assert a == b
  assert a != general.generate(60, seed=8)
  assert len({ex["question"] for ex in a}) == 60
  # 2000 draws from the 43,200 lookups would repeat ~46 questions if repeats were not redrawn.
  assert len({ex["question"] for ex in general.generate(2000, seed=0, kinds=("lookup",))}) == 2000
  assert collections.Counter(ex["subject"] for ex in a) == {k: 12 for k in general.KINDS}
  assert all(ex["task"] == general.TASK and ex["solution"] for ex in a)
  assert {ex["subject"] for ex in general.generate(10, seed=7, kinds=("sort",))} == {"sort"}
  with pytest.raises(ValueError, match="kind='poem'"):
    general.generate(3, kinds=("poem",))


def test_reference_answers_match_the_question():
  for ex in general.generate(200, seed=0):
    assert ex["final"] == _recompute(ex), ex
  sort = next(ex for ex in general.generate(50, seed=0) if ex["subject"] == "sort" and
              any(w[0].isupper() for w in ex["final"].split()) and any(w[0].islower() for w in ex["final"].split()))
  # Alphabetical ignores case: 'apples' before 'Tom', unlike Python's default order.
  assert sort["final"].split() != sorted(sort["final"].split())


def test_grader_exact_words_in_order():
  ex = {"final": "fox Ana dog", "task": general.TASK}
  g = lambda c: general.grade(c, ex)
  assert g(curation.reference_completion({**ex, "solution": "Copy."})) == 1.0
  assert g("<answer>fox, Ana,  dog</answer>") == 1.0  # commas and spaces separate words alike
  assert g("<answer> dog Ana fox </answer>") == 0.0  # order matters
  assert g("<answer> fox ana dog </answer>") == 0.0  # case matters
  assert g("<answer> fox Ana </answer>") == 0.0
  assert g("fox Ana dog") == 0.0  # no answer
  assert general.grade("<answer> 4 </answer>", {"final": "4"}) == 1.0
