"""One module per stage, each `run(ctx, inputs, out) -> outputs` on files (`r1jax.pipeline`).

`r1_zero()` and `r1()` are the two pipelines the experiments run.
"""
from __future__ import annotations

from r1jax.pipeline import Stage
from r1jax.stages import average, evaluate, grpo, pretrain


def r1_zero() -> list[Stage]:
  """Base -> GRPO with rule rewards (R1-Zero), evaluated before and after; `average` on request."""
  return [Stage("pretrain", pretrain.run, "base"),
          Stage("evaluate_base", evaluate.run, "eval_base", {"policy": "pretrain.policy"}),
          Stage("r1_zero", grpo.run, "", {"policy": "pretrain.policy"}),
          Stage("evaluate_final", evaluate.run, "eval_final", {"policy": "r1_zero.policy"}),
          Stage("average", average.run, "", {"policy": "pretrain.policy", "checkpoints": "r1_zero.checkpoints"})]


R1_ZERO_SELECTIONS = {"r1_zero": ("pretrain", "evaluate_base", "r1_zero", "evaluate_final"),
                      "pretrain": ("pretrain",), "evaluate": ("pretrain", "evaluate_base"), "average": ("average",)}
"""experiments/r1_zero.py's --config.stage values and the stages each runs."""
