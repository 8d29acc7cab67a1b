"""One module per stage, each `run(run, ctx, inputs, out) -> outputs` on files (`r1jax.pipeline`).

`r1_zero()` and `r1(run)` are the stage lists the experiments run.
"""
from __future__ import annotations

import dataclasses
import functools

from r1jax.pipeline import Stage
from r1jax.stages import (average, cold_start_data, distill, evaluate, grpo, pretrain, rejection_sampling,
                          reward_model, rl_all, sft)


@dataclasses.dataclass(frozen=True)
class R1Config:
  """experiments/r1.py: which stages run and the RL budget of each."""
  reasoning_rl_steps: int = 20
  """GRPO steps of reasoning RL (after the cold start)."""
  rl_all_steps: int = 10
  """GRPO steps of RL for all scenarios; the R1-Zero run beside the pipeline gets the sum."""
  rl_all_learning_rate: float = 0.0
  """Peak learning rate of RL for all scenarios; 0 = optim.learning_rate. It starts from an SFT
  policy, sharper than a base: at the embedded default 2e-4 (R1-Zero's) lowered its accuracy
  (59.6% -> 53.2%) where 5e-5 kept it (-> 60.2%; BENCHMARKS.md)."""
  compare_r1_zero: bool = True
  """Also run R1-Zero from the base with the same total RL steps (the table's comparison row)."""
  average: bool = False
  """Average rl_all's last average.last_k checkpoints into the final policy."""
  distill: bool = True
  """Distill the final policy into a smaller student."""

  def __post_init__(self):
    for f in ("reasoning_rl_steps", "rl_all_steps"):
      if getattr(self, f) < 1:
        raise ValueError(f"r1.{f}={getattr(self, f)} must be >= 1")
    if self.rl_all_learning_rate < 0:
      raise ValueError(f"r1.rl_all_learning_rate={self.rl_all_learning_rate} must be >= 0 (0 = optim.learning_rate)")


def r1_zero() -> list[Stage]:
  """Base -> GRPO with rule rewards (R1-Zero), evaluated before and after; `average` on request."""
  return [Stage("pretrain", pretrain.run, "base"),
          Stage("evaluate_base", evaluate.run, "eval_base", {"policy": "pretrain.policy"}),
          Stage("r1_zero", grpo.run, "", {"policy": "pretrain.policy"}),
          Stage("evaluate_final", evaluate.run, "eval_final", {"policy": "r1_zero.policy"}),
          Stage("average", average.run, "", {"policy": "pretrain.policy", "checkpoints": "r1_zero.checkpoints"})]


R1_ZERO_SELECTIONS = {"r1_zero": ("pretrain", "evaluate_base", "r1_zero", "evaluate_final"),
                      "train": ("pretrain", "r1_zero"),
                      "pretrain": ("pretrain",), "evaluate": ("pretrain", "evaluate_base"), "average": ("average",)}
"""experiments/r1_zero.py's --config.stage values and the stages each runs."""


def _eval(name: str, policy: str) -> Stage:
  return Stage(f"evaluate_{name}", evaluate.run, f"{name}/eval", {"policy": policy})


def r1(run) -> list[Stage]:
  """The DeepSeek-R1 pipeline (REFERENCE.md sec. 3) beside an R1-Zero run of the same RL steps."""
  r, cs, d = run.r1, run.cold_start, run.distill
  final = "average.policy" if r.average else "rl_all.policy"
  out = [Stage("pretrain", pretrain.run, "base"),
         Stage("evaluate_base", evaluate.run, "base/eval", {"policy": "pretrain.policy"})]
  if r.compare_r1_zero:
    out += [Stage("r1_zero", functools.partial(grpo.run, steps=r.reasoning_rl_steps + r.rl_all_steps), "r1_zero",
                  {"policy": "pretrain.policy"}), _eval("r1_zero", "r1_zero.policy")]
  out += [
      Stage("cold_start_data", cold_start_data.run, "cold_start_data",
            {"teacher": cs.teacher or "pretrain.policy", "student": "pretrain.policy"}),
      Stage("cold_start_sft", functools.partial(sft.run, epochs=cs.epochs), "cold_start_sft",
            {"policy": "pretrain.policy", "data": "cold_start_data.data"}),
      _eval("cold_start_sft", "cold_start_sft.policy"),
      Stage("reasoning_rl", functools.partial(grpo.run, language=True, steps=r.reasoning_rl_steps), "reasoning_rl",
            {"policy": "cold_start_sft.policy"}),
      _eval("reasoning_rl", "reasoning_rl.policy"),
      Stage("rejection_sampling", rejection_sampling.run, "rejection_sampling", {"policy": "reasoning_rl.policy"}),
      Stage("sft", sft.run, "sft", {"policy": "pretrain.policy", "data": "rejection_sampling.data"}),  # the BASE
      _eval("sft", "sft.policy"),
      Stage("reward_model", reward_model.run, "reward_model",
            {"policy": "sft.policy", "samples": "rejection_sampling.samples"}),
      Stage("rl_all", functools.partial(rl_all.run, steps=r.rl_all_steps,
                                              learning_rate=r.rl_all_learning_rate or None), "rl_all",
            {"policy": "sft.policy", "reward_model": "reward_model.model"}),
      _eval("rl_all", "rl_all.policy")]
  if r.average:
    out += [Stage("average", average.run, "rl_all", {"policy": "rl_all.policy", "checkpoints": "rl_all.checkpoints"}),
            _eval("average", "average.policy")]
  if r.distill:
    out += [Stage("student_base", distill.student_base, "student_base"),
            _eval("student_base", "student_base.policy"),
            Stage("distill", distill.run, "distill", {"teacher": d.teacher or final, "student": "student_base.policy"}),
            _eval("distill", "distill.policy")]
  return out


def distill_stages(run) -> list[Stage]:
  """experiments/distill.py: teacher policy in (distill.teacher), smaller student out, each evaluated."""
  t = run.distill.teacher
  return [Stage("evaluate_teacher", evaluate.run, "teacher/eval", {"policy": t}),
          Stage("student_base", distill.student_base, "student_base"),
          _eval("student_base", "student_base.policy"),
          Stage("distill", distill.run, "distill", {"teacher": t, "student": "student_base.policy"}),
          _eval("distill", "distill.policy")]


R1_STAGES = ("pretrain", "evaluate_base", "r1_zero", "evaluate_r1_zero", "cold_start_data", "cold_start_sft",
             "evaluate_cold_start_sft", "reasoning_rl", "evaluate_reasoning_rl", "rejection_sampling", "sft",
             "evaluate_sft", "reward_model", "rl_all", "evaluate_rl_all", "average", "evaluate_average",
             "student_base", "evaluate_student_base", "distill", "evaluate_distill", "evaluate_teacher")
"""Every stage name of `r1` (experiments/r1.py's --config.stage=NAME; 'all' runs them in order)."""
