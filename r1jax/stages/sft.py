"""Stages `cold_start_sft`, `sft` and the student's SFT in `distill`: supervised fine-tuning of a
policy on a JSONL dataset of `curation.Sample`s (prompt-masked loss: only completion tokens are
learned; packed rows; `sft.epochs` epochs unless the stage sets its own). A killed run resumes
from <out>/ckpt.

Inputs: {'policy', 'data'}. Outputs: {'policy': <out>/policy, 'examples', 'dropped_too_long'}.
"""
from __future__ import annotations

import dataclasses
import pathlib

from r1jax import curation
from r1jax.sft import data as data_lib
from r1jax.sft import loop as loop_lib


def run(ctx, inputs: dict, out: pathlib.Path, *, epochs: int | None = None) -> dict:
  scfg = ctx.parts["sft"]
  if epochs is not None:
    scfg = dataclasses.replace(scfg, epochs=epochs)
  model_cfg, params = ctx.load(inputs["policy"])
  samples = curation.read_samples(inputs["data"])
  rows, dropped = data_lib.encode([(s.prompt, s.completion) for s in samples], ctx.tokenizer, scfg.seq_len)
  if not rows:  # an empty curated set (a weak teacher): nothing to learn, the policy passes through
    print(f"warning: {out.name}: no example of {inputs['data']} to train on ({len(samples)} read, {dropped} over "
          f"sft.seq_len={scfg.seq_len}); the policy is unchanged")
    return {"policy": ctx.save(out / "policy", 0, params, model_cfg), "examples": 0, "dropped_too_long": dropped}
  packed = data_lib.pack(rows, scfg.seq_len, ctx.tokenizer.pad_id, scfg.packing)
  limit = ctx.parts["train"].memory_limit_gb
  result = loop_lib.run_sft(model_cfg, params, packed, scfg, ctx.mesh, out, progress=ctx.parts["train"].progress,
                            limit_bytes=int(limit * 2 ** 30) if limit else None)
  steps = len(result["history"]) and int(result["state"].step)
  print(f"{out.name}: {len(rows)} examples in {len(packed['tokens'])} rows, {scfg.epochs} epochs "
        f"({dropped} over sft.seq_len dropped)")
  return {"policy": ctx.save(out / "policy", steps, result["state"].params, model_cfg), "examples": len(rows),
          "dropped_too_long": dropped}
