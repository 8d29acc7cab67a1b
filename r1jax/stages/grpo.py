"""Stages `r1_zero` and `reasoning_rl`: GRPO from a policy with rule rewards (R1-Zero: accuracy +
format; reasoning RL adds language consistency, R = alpha R_acc + (1 - alpha) R_lang, alpha =
rewards.language_alpha). A killed run resumes from <out>/ckpt.

Inputs: {'policy'}. Outputs: {'policy': <out>/policy, 'checkpoints': <out>/ckpt}, plus <out>/policy_hf,
<out>/metrics.jsonl and <out>/samples.jsonl.
"""
from __future__ import annotations

import dataclasses
import pathlib

from r1jax import train
from r1jax.rewards import combine


def run(ctx, inputs: dict, out: pathlib.Path, *, language: bool = False, specs=None, extra_rewards=(),
        examples=None, steps: int | None = None, learning_rate: float | None = None) -> dict:
  """GRPO from inputs['policy']; `language` adds the language-consistency reward, `specs` replaces
  the rule rewards, `extra_rewards` adds others (`train.GroupCollector`), `examples`, `steps` and
  `learning_rate` replace the training prompts, train.steps and optim.learning_rate."""
  parts = ctx.parts
  model_cfg, params = ctx.load(inputs["policy"])
  rcfg = parts["rewards"]
  if language and not rcfg.language:
    rcfg = dataclasses.replace(rcfg, language=1.0)
  tcfg = parts["train"] if steps is None else dataclasses.replace(parts["train"], steps=steps)
  ckcfg = checkpoint_config(ctx, out)
  result = train.run_grpo(model_cfg=model_cfg, params=params, tokenizer=ctx.tokenizer,
                          examples=ctx.train_ex if examples is None else examples,
                          reward_specs=specs or combine.default_specs(rcfg), template=ctx.template, tcfg=tcfg,
                          gcfg=parts["grpo"],
                          ocfg=parts["optim"] if learning_rate is None else
                          dataclasses.replace(parts["optim"], learning_rate=learning_rate), scfg=parts["sampling"], ckcfg=ckcfg,
                          mesh=ctx.mesh, workdir=out, extra_rewards=extra_rewards, ppo=parts["ppo"])
  policy = ctx.save(out / "policy", tcfg.steps, result["state"].params, model_cfg, hf_export=True)
  return {"policy": policy, "checkpoints": ckcfg.directory}


def checkpoint_config(ctx, out: pathlib.Path):
  """The run's checkpoint section; its directory is <out>/ckpt unless checkpoint.directory is set
  (for the R1-Zero stage, whose out is the work directory)."""
  ck = ctx.parts["checkpoint"]
  default = str(pathlib.Path(ctx.cfg.workdir) / "ckpt")
  return ck if ck.directory != default or out == ctx.workdir else dataclasses.replace(ck, directory=str(out / "ckpt"))
