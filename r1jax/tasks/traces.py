"""Pretraining documents for the arithmetic chains with try -> check -> correct traces at rate p.

Reflection grows under RL only when the base model already reflects, at a low rate, inside some
successful attempts (Gandhi et al. 2025, arXiv 2503.01307). So a share `reflect_rate` of the
documents slip on one step, then reflect with a phrase from `rewards.aha`'s vocabulary, recompute
the step and go on correctly:

    check:    12 plus 7 equals 19. 19 minus 5 equals 13. Wait, let me check: 19 minus 5 equals 14,
              not 13. 14 times 2 equals 28.
    restart:  (the slip carried to the end) ... Wait, let me check: 19 minus 5 equals 14, not 13.
              I made a mistake, let me start over. 12 plus 7 equals 19. 19 minus 5 equals 14. ...

    confirm:  12 plus 7 equals 19. Wait, let me check: 12 plus 7 equals 19, yes. 19 minus 5 ...

(a `restart_share` of them restart; a `confirm_share` check a step that was right and confirm
it, so a check is a recomputation, not a cue to change the number). The control
(`control=True`) has the same reflective documents except that the recomputation slips (again),
so every reflective trace ends in a wrong answer: reflection is then a habit that never pays, and
RL should not grow it. A `wrong_fraction`
of the other documents slip without noticing (the base's noise, as in
`stages.context.pretraining_documents`). A `minority_share` of the documents write their reasoning in
the second language (`second_language`: Greek letters), the rest in English.

Documents come in `stages.context.pretraining_documents`' three forms (R1 tags, prose answer,
Question/Solution), so `documents` can replace it as the corpus of the embedded base model.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Sequence

from r1jax import templates
from r1jax.tasks import chains
from r1jax.tasks import second_language

REFLECTIONS = ("Wait, let me check:", "Hold on, let me verify:", "Let me double-check:", "Wait, let me recheck:")
"""What a reflective trace says before recomputing a step; each holds a `rewards.aha` reflection phrase."""
RESTARTS = ("I made a mistake, let me start over.", "That is wrong, let me try again.",
            "Scratch that, let me redo it.")
"""What a restarting trace says before solving again from the start (`rewards.aha` restart phrases)."""
SLIPS = (1, -1, 2, -2, 10, -10)
"""How far a slipped step lands from the true value: the typical off-by-one / carry errors."""
KINDS = ("clean", "wrong", "check", "restart", "confirm")
REFLECTIVE = ("check", "restart", "confirm")


@dataclasses.dataclass(frozen=True)
class TraceConfig:
  """The reasoning behaviours of the pretraining corpus."""
  reflect_rate: float = 0.0
  """p: share of documents with a slip, a reflection phrase and a recomputation."""
  control: bool = False
  """Reflective traces recompute wrongly again and end in a wrong answer (the control corpus)."""
  restart_share: float = 0.25
  """Share of the reflective traces that restart from the beginning instead of fixing the step."""
  confirm_share: float = 0.25
  """Share of the reflective traces that check a step written right and confirm it, so that a
  check recomputes rather than always changes the number."""
  minority_share: float = 0.0
  """Share of documents whose reasoning is written in the second language (0.1 for a 90/10 mix)."""
  docs_per_example: int = 1
  """Documents per example, each drawn afresh (kind, language, form)."""

  def __post_init__(self):
    for f in ("reflect_rate", "restart_share", "confirm_share", "minority_share"):
      if not 0.0 <= getattr(self, f) <= 1.0:
        raise ValueError(f"traces.{f}={getattr(self, f)} must lie in [0, 1]")
    if self.restart_share + self.confirm_share > 1.0:
      raise ValueError(f"traces.restart_share={self.restart_share} + traces.confirm_share={self.confirm_share} "
                       f"must be <= 1 (they are shares of the reflective traces)")
    if self.docs_per_example < 1:
      raise ValueError(f"traces.docs_per_example={self.docs_per_example} must be >= 1")


def _slip(steps, k: int, rng: random.Random, avoid: tuple[int, ...] = ()) -> int:
  """A wrong value for step k, not in `avoid`, whose continuation stays >= 0 (a positive slip always
  does, so one is always found). Every operation is injective (x2..x5 only), so a wrong value at
  any step makes the final answer wrong."""
  r = steps[k][3]
  for d in rng.sample(SLIPS, len(SLIPS)):
    w = r + d
    if w >= 0 and w not in avoid and all(v >= 0 for *_, v in _continue(steps, k, w)):
      return w
  raise AssertionError(f"no slip of step {k} of {steps} avoids {avoid}")


def _continue(steps, k: int, value: int):
  """Steps k+1.. recomputed from `value` in place of step k's result (a slip carried on)."""
  out = []
  for _, op, b, _ in steps[k + 1:]:
    r = chains.apply(value, op, b)
    out.append((value, op, b, r))
    value = r
  return out


def _say(steps) -> str:
  return " ".join(chains.step_text(*s) for s in steps)


def trace(steps, kind: str, rng: random.Random, control: bool = False) -> tuple[str, int]:
  """(English reasoning text, the final value it reaches) for the chain `steps`."""
  if kind == "clean":
    return _say(steps), steps[-1][3]
  if kind not in KINDS:
    raise ValueError(f"trace kind={kind!r} is not one of {KINDS}")
  k = rng.randrange(len(steps))
  a, op, b, r = steps[k]
  shown = r if kind == "confirm" else _slip(steps, k, rng)  # step k as first written
  first = steps[:k] + [(a, op, b, shown)] + _continue(steps, k, shown)
  if kind == "wrong":
    return _say(first), first[-1][3]
  fix = _slip(steps, k, rng, avoid=(shown,)) if control else r  # the control recomputes wrongly
  fixed = [(a, op, b, fix)] + _continue(steps, k, fix)
  verdict = "yes" if fix == shown else f"not {shown}"
  check = f"{rng.choice(REFLECTIONS)} {a} {chains.WORDS[op]} {b} equals {fix}, {verdict}."
  if kind in ("check", "confirm"):
    return " ".join(t for t in (_say(first[:k + 1]), check, _say(fixed[1:])) if t), fixed[-1][3]
  redo = steps[:k] + fixed
  return f"{_say(first)} {check} {rng.choice(RESTARTS)} {_say(redo)}", redo[-1][3]


def records(examples: Sequence[dict], template: str, seed: int, r1_fraction: float, wrong_fraction: float,
            traces: TraceConfig = TraceConfig()) -> list[dict]:
  """One dict per document: text, reasoning (the trace as written), final (the answer the
  document gives), correct, kind, lang ('en' / 'el'), form ('r1' / 'prose' / 'qa'), id."""
  if traces.reflect_rate + wrong_fraction > 1.0:
    raise ValueError(f"traces.reflect_rate={traces.reflect_rate} + pretrain.wrong_fraction={wrong_fraction} "
                     f"must be <= 1 (they are shares of the same documents)")
  rng, out = random.Random(seed), []
  for ex in examples:
    if "steps" not in ex:
      raise ValueError(f"example {ex.get('id')!r} has no 'steps': traces are written for tasks.chains examples")
    steps = [tuple(s) for s in ex["steps"]]
    for _ in range(traces.docs_per_example):
      u = rng.random()
      if u < traces.reflect_rate:
        v = rng.random()
        kind = ("restart" if v < traces.restart_share else
                "confirm" if v < traces.restart_share + traces.confirm_share else "check")
      else:
        kind = "wrong" if u < traces.reflect_rate + wrong_fraction else "clean"
      text, final = trace(steps, kind, rng, traces.control)
      lang = "el" if rng.random() < traces.minority_share else "en"
      sol = second_language.render(text, lang)
      say = lambda s: second_language.render(s, lang)
      prompt = templates.format_prompt(ex["question"], template)
      v = rng.random()
      if v < r1_fraction:
        form, doc = "r1", f"{prompt} <think> {sol} </think> <answer> {final} </answer>"
      elif v < 0.75:
        form, doc = "prose", f"{prompt} {sol} {say('The answer is')} {final}."
      else:
        form, doc = "qa", f"Question: {ex['question']}\nSolution: {sol} {say('So the result is')} {final}."
      out.append({"id": ex.get("id"), "text": doc, "reasoning": sol, "final": str(final),
                  "correct": str(final) == str(ex["final"]), "kind": kind, "lang": lang, "form": form})
  return out


def documents(examples: Sequence[dict], template: str, seed: int, r1_fraction: float, wrong_fraction: float,
              traces: TraceConfig = TraceConfig()) -> list[str]:
  """The texts of `records`: a drop-in for `stages.context.pretraining_documents` (same leading
  arguments) on tasks.chains examples."""
  return [r["text"] for r in records(examples, template, seed, r1_fraction, wrong_fraction, traces)]
