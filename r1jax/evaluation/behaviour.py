"""What the R1 claims are measured by, per batch of responses: reflection and restarts and whether
they pay, length of correct vs wrong answers, and language mixing in the chain of thought.

- Reflection / restart flags: a response with >= 1 `rewards.aha` phrase of that category.
  `normalize` maps a response to the text aha scans (e.g. `second_language.to_latin`, so a
  reflection written in Greek letters counts too).
- P(correct | reflected) vs P(correct | not): whether reflecting responses are the ones that get
  it right (the aha moment) or a habit that does not pay (the control corpus).
- Mean length of correct and of wrong responses separately: GRPO's 1/|o| normalisation lengthens
  wrong answers more (Dr. GRPO, arXiv 2503.20783), which a single mean hides.
- Target-language share of the chain of thought (`rewards.language`'s own share, the quantity the
  language reward is computed from), and the rate of CoTs mixing the target with another script.

Means over an empty selection are NaN (json.dumps writes NaN; plots leave a gap).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from r1jax.rewards import aha
from r1jax.rewards import language


def flags(texts: Sequence[str], category: str, normalize: Callable[[str], str] | None = None) -> np.ndarray:
  """bool_N: response n holds >= 1 phrase of `category` ('reflection', 'restart', 'uncertainty')."""
  if category not in aha.CATEGORIES:
    raise ValueError(f"aha category={category!r} is not one of {aha.CATEGORIES}")
  norm = normalize or (lambda t: t)
  return np.array([bool(aha.phrase_counts(norm(t), category)) for t in texts], bool).reshape(len(texts))


def reflection_flags(texts: Sequence[str], normalize: Callable[[str], str] | None = None) -> np.ndarray:
  """bool_N: the response reflects ('wait', 'let me check', ...)."""
  return flags(texts, "reflection", normalize)


def restart_flags(texts: Sequence[str], normalize: Callable[[str], str] | None = None) -> np.ndarray:
  """bool_N: the response restarts ('let me start over', 'I made a mistake', ...)."""
  return flags(texts, "restart", normalize)


def _mean(x: np.ndarray) -> float:
  return float(x.mean()) if x.size else float("nan")


def correct_given(correct_N, flag_N, name: str = "reflected") -> dict[str, float]:
  """P(correct | flag) and P(correct | not flag), and how many responses each rests on."""
  correct_N, flag_N = np.asarray(correct_N, np.float64), np.asarray(flag_N, bool)
  if correct_N.shape != flag_N.shape:
    raise ValueError(f"correct has shape {correct_N.shape} but the {name} flags {flag_N.shape}")
  return {f"p_correct_given_{name}": _mean(correct_N[flag_N]),
          f"p_correct_given_not_{name}": _mean(correct_N[~flag_N]),
          f"num_{name}": int(flag_N.sum()), f"num_not_{name}": int((~flag_N).sum())}


def length_by_correctness(lengths_N, correct_N) -> dict[str, float]:
  """Mean length (tokens, or whatever unit `lengths_N` is in) of the correct and of the wrong responses."""
  lengths_N, correct_N = np.asarray(lengths_N, np.float64), np.asarray(correct_N, np.float64) > 0
  if lengths_N.shape != correct_N.shape:
    raise ValueError(f"lengths have shape {lengths_N.shape} but correct has {correct_N.shape}")
  return {"mean_length_correct": _mean(lengths_N[correct_N]), "mean_length_wrong": _mean(lengths_N[~correct_N])}


def cot_shares(completions: Sequence[str], target: str) -> np.ndarray:
  """float_N: share of `target`-script words in each completion's chain of thought
  (`rewards.language.language_share`); a CoT without words (digits and symbols only) mixes no
  language: 1, as the evaluation harness counts it."""
  shares = [language.language_share(language.chain_of_thought(c), target) for c in completions]
  return np.array([1.0 if s is None else s for s in shares], np.float64).reshape(len(completions))


def language_mix(completions: Sequence[str], target: str) -> dict[str, float]:
  """target_share: mean CoT share of `target`; mixed_rate: CoTs with target and other words;
  off_target_rate: CoTs with words but none in `target`."""
  shares = cot_shares(completions, target)
  return {"target_share": _mean(shares), "mixed_rate": _mean((shares > 0) & (shares < 1)),
          "off_target_rate": _mean(shares == 0)}


def behaviour_metrics(completions: Sequence[str], correct_N, lengths_N, *, target: str | None = None,
                      normalize: Callable[[str], str] | None = None) -> dict[str, float]:
  """All of the above for one batch: reflection_rate, restart_rate, P(correct | reflected / not /
  restarted / not), mean_length_correct / _wrong, and with `target` the language mix."""
  refl, rest = reflection_flags(completions, normalize), restart_flags(completions, normalize)
  out = {"reflection_rate": _mean(refl), "restart_rate": _mean(rest)}
  out |= correct_given(correct_N, refl, "reflected") | correct_given(correct_N, rest, "restarted")
  out |= length_by_correctness(lengths_N, correct_N)
  if target is not None:
    out |= language_mix(completions, target)
  return out
