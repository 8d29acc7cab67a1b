"""Stage `pretrain`: the base policy. A Hugging Face base is used as it is; the embedded tiny
default is initialized and pretrained (next-token loss on packed documents) here.

Outputs: {'policy': <out>/policy} (or the Hugging Face directory).
"""
from __future__ import annotations

import pathlib

import jax

from r1jax import model as model_lib
from r1jax import pretraining


def run(ctx, inputs: dict, out: pathlib.Path) -> dict:
  del inputs
  if ctx.cfg.model.hf_checkpoint:  # checked again: the stage is recorded complete only over whole files
    from r1jax import hf
    hf.check_checkpoint(ctx.cfg.model.hf_checkpoint)
    return {"policy": str(pathlib.Path(ctx.cfg.model.hf_checkpoint).resolve())}
  model_cfg, pcfg = ctx.model_cfg, ctx.parts["pretrain"]
  params = model_lib.init_sharded(jax.random.key(ctx.cfg.seed), model_cfg, ctx.mesh, ctx.rules)
  if pcfg.steps:
    params = pretraining.pretrain(params, model_cfg, pcfg, ctx.tokenizer, ctx.docs, ctx.mesh, out, ctx.cfg.seed,
                                  ctx.parts["train"].progress)
  return {"policy": ctx.save(out / "policy", pcfg.steps, params, model_cfg)}
