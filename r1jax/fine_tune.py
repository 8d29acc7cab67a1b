"""A saved policy fine-tuned by GRPO or by SFT and saved again: the bodies of the GRPO and SFT
stages, which the reasoning-RL, rl_all, PRM-RL and distillation stages share. `ctx` is a stage's
context (`r1jax.stages.context`); `out` the stage's directory."""
from __future__ import annotations

import dataclasses
import pathlib

from r1jax import curation
from r1jax.model import lora
from r1jax.rl import loop as rl_loop
from r1jax.rewards import combine
from r1jax.sft import data as data_lib
from r1jax.sft import loop as loop_lib


def grpo(run, ctx, policy, out: pathlib.Path, *, language: bool = False, specs=None, extra_rewards=(),
         examples=None, steps: int | None = None, learning_rate: float | None = None) -> dict:
  """GRPO from the policy directory `policy`; `language` adds the language-consistency reward,
  `specs` replaces the rule rewards, `extra_rewards` adds others (`collect.GroupCollector`),
  `examples`, `steps` and `learning_rate` replace the training prompts, train.steps and
  optim.learning_rate. Returns {'policy': <out>/policy, 'checkpoints'}."""
  model_cfg, params = ctx.load(run, policy)
  rcfg = run.rewards
  if language and not rcfg.language:
    rcfg = dataclasses.replace(rcfg, language=1.0)
  tcfg = run.train if steps is None else dataclasses.replace(run.train, steps=steps)
  ckcfg = checkpoint_config(run, ctx, out)
  ocfg = run.optim if learning_rate is None else dataclasses.replace(run.optim, learning_rate=learning_rate)
  result = rl_loop.run_grpo(model_cfg=model_cfg, params=params, tokenizer=ctx.tokenizer,
                          examples=ctx.train_ex if examples is None else examples,
                          reward_specs=specs or combine.default_specs(rcfg), template=ctx.template, tcfg=tcfg,
                          gcfg=run.grpo, ocfg=ocfg, scfg=run.sampling, ckcfg=ckcfg,
                          mesh=ctx.mesh, workdir=out, extra_rewards=extra_rewards, ppo=run.ppo, lora=run.lora)
  # With LoRA the saved policy (and its policy_hf export) is the base with the adapters merged in.
  saved = ctx.save(run, out / "policy", tcfg.steps, lora.merged(result["state"]), model_cfg, hf_export=True)
  return {"policy": saved, "checkpoints": ckcfg.directory}


def checkpoint_config(run, ctx, out: pathlib.Path):
  """The run's checkpoint section; its directory is <out>/ckpt unless checkpoint.directory is set
  (for the R1-Zero stage, whose out is the work directory)."""
  ck = run.checkpoint
  default = str(pathlib.Path(run.workdir) / "ckpt")
  return ck if ck.directory != default or out == ctx.workdir else dataclasses.replace(ck, directory=str(out / "ckpt"))


def sft(run, ctx, policy, data, out: pathlib.Path, *, epochs: int | None = None) -> dict:
  """SFT of the policy directory `policy` on the JSONL of `curation.Sample`s `data` (`epochs`
  replaces sft.epochs). Returns {'policy': <out>/policy, 'examples', 'dropped_too_long'}."""
  scfg = run.sft
  if epochs is not None:
    scfg = dataclasses.replace(scfg, epochs=epochs)
  model_cfg, params = ctx.load(run, policy)
  samples = curation.read_samples(data)
  rows, dropped = data_lib.encode([(s.prompt, s.completion) for s in samples], ctx.tokenizer, scfg.seq_len)
  if not rows:  # an empty curated set (a weak teacher): nothing to learn, the policy passes through
    print(f"warning: {out.name}: no example of {data} to train on ({len(samples)} read, {dropped} over "
          f"sft.seq_len={scfg.seq_len}); the policy is unchanged")
    return {"policy": ctx.save(run, out / "policy", 0, params, model_cfg), "examples": 0, "dropped_too_long": dropped}
  packed = data_lib.pack(rows, scfg.seq_len, ctx.tokenizer.pad_id, scfg.packing)
  limit = run.train.memory_limit_gb
  result = loop_lib.run_sft(model_cfg, params, packed, scfg, ctx.mesh, out, progress=run.train.progress,
                            limit_bytes=int(limit * 2 ** 30) if limit else None)
  steps = len(result["history"]) and int(result["state"].step)
  print(f"{out.name}: {len(rows)} examples in {len(packed['tokens'])} rows, {scfg.epochs} epochs "
        f"({dropped} over sft.seq_len dropped)")
  return {"policy": ctx.save(run, out / "policy", steps, result["state"].params, model_cfg), "examples": len(rows),
          "dropped_too_long": dropped}
