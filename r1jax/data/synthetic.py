"""Generated arithmetic word problems with verifiable answers, and a pretraining corpus for them.

For the default CPU run: no network, a vocabulary of digits and a few dozen words (a SentencePiece
model of a few hundred pieces covers it), and problems a tiny model can partly learn in minutes.

Problems are one of `KINDS`: bare sums, differences and products, short stories around them, and
a two-step story (a + b - c). The held-out split is disjoint from train by *computation*: one in
`HELDOUT_BUCKETS` computations (say '12+7', whatever the story around it) is reserved for it, so
no held-out sum appears in training in any wording, and growing `num_train` never leaks into it.
"""
from __future__ import annotations

import random
import re
import zlib
from typing import Sequence

from r1jax import templates
from r1jax.data.config import DataConfig

NAMES = ("Tom", "Ana", "Sam", "Mia", "Ben", "Lily")
THINGS = ("apples", "pens", "books", "coins", "cards", "eggs")
KINDS = ("add", "sub", "mul", "story_add", "story_sub", "story_mul", "two_step")
HELDOUT_BUCKETS = 10
_MAX_MISSES = 20_000  # draws in a row without a new problem: the split is (nearly) exhausted

_QUESTION = {
    "add": "What is {a} + {b}?",
    "sub": "What is {a} - {b}?",
    "mul": "What is {a} * {b}?",
    "story_add": "{n} has {a} {t} and buys {b} more. How many {t} does {n} have now?",
    "story_sub": "{n} has {a} {t} and gives {b} to {m}. How many {t} does {n} have left?",
    "story_mul": "{n} has {a} bags with {b} {t} in each bag. How many {t} does {n} have?",
    "two_step": "{n} has {a} {t}, buys {b} more and then gives {c} to {m}. How many {t} does {n} have now?",
}
_SOLUTION = {
    "add": "{a} + {b} = {r}.",
    "sub": "{a} - {b} = {r}.",
    "mul": "{a} * {b} = {r}.",
    "story_add": "{n} starts with {a} {t} and gets {b} more. {a} + {b} = {r}.",
    "story_sub": "{n} starts with {a} {t} and gives away {b}. {a} - {b} = {r}.",
    "story_mul": "There are {a} bags of {b} {t}. {a} * {b} = {r}.",
    "two_step": "First {a} + {b} = {s}. Then {s} - {c} = {r}.",
}


def _operands(kind: str, rng: random.Random) -> tuple[int, ...]:
  if kind.endswith("add"):
    return rng.randint(1, 50), rng.randint(1, 50)
  if kind.endswith("sub"):
    a = rng.randint(2, 60)
    return a, rng.randint(1, a)  # answers stay >= 0
  if kind.endswith("mul"):
    return rng.randint(2, 12), rng.randint(2, 12)
  a, b = rng.randint(5, 30), rng.randint(1, 20)
  return a, b, rng.randint(1, a + b)


def computation(kind: str, nums: Sequence[int]) -> str:
  """The arithmetic behind a problem, independent of its wording: '12+7', '30+5-9'."""
  ops = {"add": "+", "sub": "-", "mul": "*"}
  if kind == "two_step":
    return f"{nums[0]}+{nums[1]}-{nums[2]}"
  return f"{nums[0]}{ops[kind.removeprefix('story_')]}{nums[1]}"


def is_heldout(key: str) -> bool:
  """Whether a computation belongs to the held-out split (a fixed hash, not the seed)."""
  return zlib.crc32(key.encode()) % HELDOUT_BUCKETS == 0


def make_problem(kind: str, nums: Sequence[int], rng: random.Random) -> dict:
  """One example; `rng` only picks the names and objects of a story."""
  key = computation(kind, nums)
  a, b, *rest = nums
  c = rest[0] if rest else 0
  s = a + b
  r = {"add": a + b, "sub": a - b, "mul": a * b}.get(kind.removeprefix("story_"), s - c)
  n, m = rng.sample(NAMES, 2)
  slots = dict(a=a, b=b, c=c, s=s, r=r, n=n, m=m, t=rng.choice(THINGS))
  return {"id": f"syn/{kind}/{key}", "question": _QUESTION[kind].format(**slots),
          "solution": _SOLUTION[kind].format(**slots), "final": str(r), "subject": kind}


def generate(n: int, split: str, seed: int = 0) -> list[dict]:
  """`n` distinct problems of `split` ('train' or 'eval'), the same for the same arguments."""
  if split not in ("train", "eval"):
    raise ValueError(f"split={split!r} is not one of ('train', 'eval')")
  rng = random.Random(f"r1jax-synthetic/{split}/{seed}")
  out, seen, misses = [], set(), 0
  while len(out) < n and misses < _MAX_MISSES:
    misses += 1
    kind = rng.choice(KINDS)
    nums = _operands(kind, rng)
    ex = make_problem(kind, nums, rng)
    if ex["id"] in seen or is_heldout(computation(kind, nums)) != (split == "eval"):
      continue
    seen.add(ex["id"])
    out.append(ex)
    misses = 0
  if len(out) < n:
    raise ValueError(f"asked for {n} synthetic {split} problems; only {len(out)} distinct ones were found "
                     f"(data.num_{split} is too large for the generator)")
  return out


def split(num_train: int, num_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
  """(train, held-out) problems; disjoint by computation whatever the sizes and seed."""
  return generate(num_train, "train", seed), generate(num_eval, "eval", seed)


def load_synthetic(cfg: DataConfig) -> list[dict]:
  """The split `cfg.synthetic_split` of size `cfg.num_train` / `cfg.num_eval`."""
  n = cfg.num_train if cfg.synthetic_split == "train" else cfg.num_eval
  if cfg.max_examples:
    n = min(n, cfg.max_examples)
  return generate(n, cfg.synthetic_split, cfg.seed)


def _slip(solution: str, final: str, rng: random.Random) -> tuple[str, str]:
  """A plausible arithmetic slip: the final number is off by a little, in the solution too."""
  wrong = str(int(final) + rng.choice((-10, -2, -1, 1, 2, 10)))
  hits = list(re.finditer(rf"(?<![\d.]){re.escape(final)}(?!\d|\.\d)", solution))
  if hits:
    h = hits[-1]
    solution = solution[:h.start()] + wrong + solution[h.end():]
  return solution, wrong


def pretraining_corpus(examples: Sequence[dict], seed: int = 0, *, wrong_fraction: float = 0.2,
                       answer_only_fraction: float = 0.2, r1_fraction: float = 0.05,
                       template: str | None = templates.R1_ZERO_TEMPLATE) -> list[str]:
  """One text per example, to pretrain a base model that can do *some* arithmetic but rarely
  writes the R1 format, so that RL has both the format and accuracy to teach.

  Mostly prose ("Question: ... Answer: <steps> The answer is N."); an `answer_only_fraction`
  gives only "The answer is N."; an `r1_fraction` is in the R1 `<think>/<answer>` form, so the
  format is possible but rare under sampling; a `wrong_fraction` of integer answers carry an
  arithmetic slip in the last step. With a `template` (default R1-Zero), half of the prose texts
  start with the templated prompt, so the model learns to continue after it, in prose.
  """
  for name, v in (("wrong_fraction", wrong_fraction), ("answer_only_fraction", answer_only_fraction),
                  ("r1_fraction", r1_fraction)):
    if not 0.0 <= v <= 1.0:
      raise ValueError(f"{name}={v} must lie in [0, 1]")
  if answer_only_fraction + r1_fraction > 1.0:
    raise ValueError(f"answer_only_fraction + r1_fraction = {answer_only_fraction + r1_fraction} exceeds 1")
  rng = random.Random(f"r1jax-corpus/{seed}")
  docs = []
  for ex in examples:
    solution, final = ex.get("solution", ""), ex["final"]
    if rng.random() < wrong_fraction and re.fullmatch(r"-?\d+", final):
      solution, final = _slip(solution, final, rng)
    prompted = template is not None and rng.random() < 0.5
    head = templates.format_prompt(ex["question"], template) if prompted else f"Question: {ex['question']}\nAnswer:"
    u = rng.random()
    if u < r1_fraction:
      docs.append(f"{head} <think> {solution} </think> <answer> {final} </answer>")
    elif u < r1_fraction + answer_only_fraction or not solution:
      docs.append(f"{head} The answer is {final}.")
    else:
      docs.append(f"{head} {solution} The answer is {final}.")
  return docs
