"""Generated non-reasoning tasks with reference answers, mixed into SFT data at the embedded default.

DeepSeek-R1 mixes ~200k non-reasoning samples (writing, factual QA, translation) into its SFT
data so the model keeps answering simple requests directly. The tiny default model has no world
knowledge, so these are tasks of another kind over the arithmetic tasks' own names and objects
(words its tokenizer already knows): copy, reverse or sort a word list, count its items, and look
up who holds an object. Each has a one-line `solution` (no long chain of thought) and a `final`.

Grading compares the answer's words (split on whitespace and commas) exactly, in order. Not
`answer.grade`: its math-verify fallback reads "dog fox" as the product d*o*g*f*o*x and calls it
equal to "fox dog", which would pass a reversed list as sorted.
"""
from __future__ import annotations

import random
import re

from r1jax.rewards import extraction
from r1jax.tasks.arithmetic import NAMES, THINGS

TASK = "general"
"""The `task` field of every generated example (what `curation_filters.default_grader` dispatches on)."""
KINDS = ("copy", "reverse", "sort", "count", "lookup")
WORDS = NAMES + THINGS


def _words(text: str) -> list[str]:
  return [w for w in re.split(r"[\s,]+", text) if w]


def make(kind: str, rng: random.Random, min_items: int = 3, max_items: int = 5) -> dict:
  """One example of `kind` drawn with `rng`: question, final (the reference answer), solution."""
  if kind == "lookup":
    names, things = rng.sample(NAMES, 3), rng.sample(THINGS, 3)
    target = rng.randrange(3)
    facts = ", ".join(f"{n} has the {t}" for n, t in zip(names, things))
    return {"question": f"{facts}. Who has the {things[target]}?", "final": names[target],
            "solution": f"{names[target]} has the {things[target]}."}
  items = rng.sample(WORDS, rng.randint(min_items, max_items))
  listed = ", ".join(items)
  if kind == "copy":
    return {"question": f"Repeat these words: {listed}.", "final": " ".join(items),
            "solution": "Copy the words in order."}
  if kind == "reverse":
    return {"question": f"Reverse these words: {listed}.", "final": " ".join(items[::-1]),
            "solution": "Read the words from last to first."}
  if kind == "sort":
    return {"question": f"Sort these words alphabetically: {listed}.", "final": " ".join(sorted(items, key=str.lower)),
            "solution": "Put the words in alphabetical order."}
  if kind == "count":
    return {"question": f"How many words are in this list: {listed}?", "final": str(len(items)),
            "solution": "Count the words: " + " ".join(str(i + 1) for i in range(len(items))) + "."}
  raise ValueError(f"general task kind={kind!r} is not one of {KINDS}")


def generate(n: int, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> list[dict]:
  """`n` examples with distinct questions, kinds in turn, deterministic from `seed`.

  Each row: id, question, final, solution, subject (the kind), task = TASK.
  """
  rng, out, seen = random.Random(seed), [], set()
  for _ in range(50 * n + 100):
    if len(out) == n:
      return out
    kind = kinds[len(out) % len(kinds)]
    ex = make(kind, rng)
    if ex["question"] in seen:
      continue
    seen.add(ex["question"])
    out.append({"id": f"general/{seed}/{len(out)}", **ex, "subject": kind, "task": TASK})
  raise ValueError(f"could not draw {n} distinct general tasks of kinds {kinds}; ask for fewer")


def grade(completion: str, example: dict) -> float:
  """1.0 iff the completion's final answer has exactly the reference's words, in order."""
  pred = extraction.extract_answer(completion)
  return float(pred is not None and _words(pred) == _words(str(example["final"])))

