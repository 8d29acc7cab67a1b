"""Stage `pretrain`: the base policy. A Hugging Face base is used as it is; the embedded tiny
default is initialized and pretrained (next-token loss on packed documents) here.

Outputs: {'policy': <out>/policy} (or the Hugging Face directory).
"""
from __future__ import annotations

import pathlib

import jax

from r1jax.model import config as model_config
from r1jax import pretraining


def run(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  del inputs
  if run.hf_checkpoint:  # checked again: the stage is recorded complete only over whole files
    from r1jax.model import hf_files
    hf_files.check_checkpoint(run.hf_checkpoint)
    return {"policy": str(pathlib.Path(run.hf_checkpoint).resolve())}
  model_cfg, pcfg = run.model, run.pretrain
  params = model_config.init_sharded(jax.random.key(run.seed), model_cfg, ctx.mesh, ctx.rules)
  if pcfg.steps:
    params = pretraining.pretrain(params, model_cfg, pcfg, ctx.tokenizer, lambda: ctx.docs(run), ctx.mesh, out, run.seed,
                                  run.train.progress)
  return {"policy": ctx.save(run, out / "policy", pcfg.steps, params, model_cfg)}
