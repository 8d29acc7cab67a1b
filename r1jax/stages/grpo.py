"""Stages `r1_zero` and `reasoning_rl`: GRPO from a policy with rule rewards (R1-Zero: accuracy +
format; reasoning RL adds language consistency, R = alpha R_acc + (1 - alpha) R_lang, alpha =
rewards.language_alpha; `r1jax.fine_tune.grpo`). A killed run resumes from <out>/ckpt.

Inputs: {'policy'}. Outputs: {'policy': <out>/policy, 'checkpoints': <out>/ckpt}, plus <out>/policy_hf,
<out>/metrics.jsonl and <out>/samples.jsonl.
"""
from __future__ import annotations

import pathlib

from r1jax import fine_tune


def run(run, ctx, inputs: dict, out: pathlib.Path, *, language: bool = False, steps: int | None = None) -> dict:
  """GRPO from inputs['policy']; `language` adds the language-consistency reward, `steps` replaces
  train.steps."""
  return fine_tune.grpo(run, ctx, inputs["policy"], out, language=language, steps=steps)
