"""A process reward model on the chains world (DeepSeek-R1 sec. 4.2, "unsuccessful attempts"):
steps of a completion, their labels by checking each one, where each ends in tokens, and the
PRM's rewards (sum-form and min-form) with the step statistics reward hacking shows in.

A step is one stated operation, "12 plus 7 equals 19" (`tasks.chains.step_text`, also inside a
check: "Wait, let me recheck: 12 plus 7 equals 19, not 21"). Its label, from checking it against
the problem (as Lightman et al. 2023 label steps, here by rule): 1 iff the arithmetic is right and
its result is one of the chain's true intermediate values, so a right operation on a slipped value
is a wrong step. Nothing in the label stops a correct step from being stated again, so a reward
summing step scores pays for repetition: the reward hacking R1 reports.

The PRM is `r1jax.model.heads` on a policy-sized body: sigmoid of the value after each step's last token.
"""
from __future__ import annotations

import re
from typing import Sequence

import jax
import numpy as np

from r1jax.model import heads
from r1jax.tasks import chains

_WORD_OP = {w: op for op, w in chains.WORDS.items()}
STEP = re.compile(r"(\d+) (" + "|".join(_WORD_OP) + r") (\d+) equals (\d+)")
FORMS = ("sum", "min")


def think_text(text: str) -> str:
  """The reasoning part of a completion (before '</think>', or all of it)."""
  return text.split("</think>", 1)[0]


def parse_steps(text: str) -> list[tuple[int, str, int, int, int]]:
  """(a, op, b, result, end) of every step in the reasoning, in order; `end` is the character
  offset just past the step's result in `text`."""
  return [(int(m[1]), _WORD_OP[m[2]], int(m[3]), int(m[4]), m.end()) for m in STEP.finditer(think_text(text))]


def step_labels(steps, example: dict) -> list[float]:
  """1.0 for a step whose arithmetic is right and whose result is a true intermediate value of
  `example`'s chain, else 0.0."""
  true_values = {int(s[3]) for s in example["steps"]}
  return [float(chains.apply(a, op, b) == r and r in true_values) for a, op, b, r, _ in steps]


def step_stats(text: str) -> dict:
  """Per response: steps, repeated steps (the same operation and result stated before) and empty
  steps (sentences of the reasoning, split at '.' and ':', without an operation)."""
  steps = parse_steps(text)
  seen, repeated = set(), 0
  for a, op, b, r, _ in steps:
    repeated += (a, op, b, r) in seen
    seen.add((a, op, b, r))
  sentences = [s for s in re.split(r"[.:]", think_text(text)) if s.strip()]
  empty = sum(not STEP.search(s) for s in sentences)
  return {"steps": len(steps), "repeated_steps": repeated, "empty_steps": empty}


def end_tokens(ids: Sequence[int], ends: Sequence[int], tokenizer) -> list[int]:
  """For each character offset in `ends` (into tokenizer.decode(ids)), the index of the token that
  completes it: the smallest i with len(decode(ids[:i + 1])) >= end (binary search)."""
  out = []
  for e in ends:
    lo, hi = 0, len(ids) - 1
    while lo < hi:
      mid = (lo + hi) // 2
      if len(tokenizer.decode(ids[:mid + 1])) >= e:
        hi = mid
      else:
        lo = mid + 1
    out.append(lo)
  return out


def label_rollout(ro, examples: Sequence[dict], tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """(target_RxN, weight_RxN) of a rollout: each step's label at the token ending it, weight 1
  there and 0 elsewhere (examples: one per row)."""
  R, N = ro.tokens.shape
  target, weight = np.zeros((R, N), np.float32), np.zeros((R, N), np.float32)
  for r in range(R):
    ids = [int(t) for t in ro.tokens[r][ro.mask[r]]]
    steps = parse_steps(ro.texts[r])
    for t, y in zip(end_tokens(ids, [s[4] for s in steps], tokenizer), step_labels(steps, examples[r])):
      target[r, t], weight[r, t] = y, 1.0
  return target, weight


class Scorer:
  """The PRM's rewards of a rollout, computed once per rollout and shared by the reward terms
  `fn(name)` hands to the GRPO loop (`collect.GroupCollector.extra_rewards`): 'sum' (sum of step
  scores), 'min' (the lowest step score; 0 without a step), 'mean', and the step statistics
  'steps', 'repeated_steps', 'empty_steps', 'tokens_per_step', 'step_accuracy' (share of steps
  whose label is 1: what the PRM should see)."""

  def __init__(self, model_cfg, params, head, tokenizer):
    self.tokenizer = tokenizer
    self._values = jax.jit(lambda t, m, P: heads.completion_values(params, head, t, m, P, model_cfg)[:, 1:],
                           static_argnums=2)
    self._cache = (None, None)

  def scores(self, ro, examples) -> dict[str, np.ndarray]:
    if self._cache[0] is ro:
      return self._cache[1]
    b = ro.train_batch(len(examples) // len(ro.prompt_tokens))
    P = b["tokens"].shape[1] - ro.tokens.shape[1]
    p_RxN = np.asarray(jax.nn.sigmoid(self._values(b["tokens"], b["mask"], P)), np.float64)
    out = {k: np.zeros(len(examples)) for k in ("sum", "min", "mean", "steps", "repeated_steps", "empty_steps",
                                                "tokens_per_step", "step_accuracy")}
    for r, ex in enumerate(examples):
      ids = [int(t) for t in ro.tokens[r][ro.mask[r]]]
      steps = parse_steps(ro.texts[r])
      st = step_stats(ro.texts[r])
      for k in ("steps", "repeated_steps", "empty_steps"):
        out[k][r] = st[k]
      out["tokens_per_step"][r] = len(ids) / max(len(steps), 1)
      if steps:
        s = p_RxN[r, end_tokens(ids, [x[4] for x in steps], self.tokenizer)]
        out["sum"][r], out["min"][r], out["mean"][r] = s.sum(), s.min(), s.mean()
        out["step_accuracy"][r] = np.mean(step_labels(steps, ex))
    self._cache = (ro, out)
    return out

  def fn(self, name: str):
    return lambda ro, exs: self.scores(ro, exs)[name]
