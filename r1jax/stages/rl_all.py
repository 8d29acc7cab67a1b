"""Stage `rl_all` (DeepSeek-R1 sec. 2.3.4, RL for all scenarios): GRPO on reasoning prompts scored
by the rule rewards (accuracy, format, language consistency) mixed with general prompts scored by
the reward model trained in the pipeline (sigmoid of its score, weight `reward_model.weight`) and
the format reward. A killed run resumes from <out>/ckpt.

Inputs: {'policy', 'reward_model'}. Outputs: as the GRPO stages ({'policy', 'checkpoints'}).
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import numpy as np

from r1jax import fine_tune
from r1jax.model import heads
from r1jax import scalar_model
from r1jax.rewards import combine
from r1jax.tasks import general


@dataclasses.dataclass(frozen=True)
class RLAllConfig:
  general_prompts: int = 128
  """Generated general prompts mixed (in a seeded shuffle) with the reasoning training prompts."""
  seed: int = 4

  def __post_init__(self):
    if self.general_prompts < 0:
      raise ValueError(f"rl_all.general_prompts={self.general_prompts} must be >= 0")


def reasoning_accuracy(completion: str, example: dict, **kw) -> float:
  """The accuracy reward on reasoning prompts; 0 on general ones (the reward model scores them)."""
  return 0.0 if example.get("task") == general.TASK else combine.accuracy_reward(completion, example, **kw)


def reward_model_scorer(model_cfg, params, head):
  """fn(rollout, examples) -> sigmoid(reward model score) on general rows, 0 on reasoning rows."""
  score = jax.jit(lambda t, m: jax.nn.sigmoid(heads.sequence_scores(params, head, t, m, model_cfg)))

  def fn(ro, exs):
    b = ro.train_batch(len(exs) // len(ro.prompt_tokens))
    s = np.asarray(jax.device_get(score(b["tokens"], b["mask"])), np.float64)
    return np.where([e.get("task") == general.TASK for e in exs], s, 0.0)
  return fn


def run(run, ctx, inputs: dict, out: pathlib.Path, *, steps: int | None = None,
        learning_rate: float | None = None) -> dict:
  cfg = run.rl_all
  rcfg = run.rewards
  rcfg = rcfg if rcfg.language else dataclasses.replace(rcfg, language=1.0)
  specs = combine.default_specs(rcfg)
  specs = [dataclasses.replace(s, fn=functools.partial(reasoning_accuracy, **s.fn.keywords))
           if s.name == "accuracy" else s for s in specs]
  rm_cfg, rm_params, rm_head = scalar_model.load(inputs["reward_model"], ctx.mesh, ctx.rules)
  mix = list(ctx.train_ex) + general.generate(cfg.general_prompts, seed=cfg.seed)
  mix = [mix[i] for i in np.random.default_rng(cfg.seed).permutation(len(mix))]
  extra = [("reward_model", reward_model_scorer(rm_cfg, rm_params, rm_head), run.reward_model.weight)]
  return fine_tune.grpo(run, ctx, inputs["policy"], out, language=True, specs=specs, extra_rewards=extra,
                        examples=mix, steps=steps, learning_rate=learning_rate)
