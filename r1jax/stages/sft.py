"""Stages `cold_start_sft` and `sft`: supervised fine-tuning of a policy on a JSONL dataset of
`curation.Sample`s (prompt-masked loss: only completion tokens are learned; packed rows;
`sft.epochs` epochs unless the stage sets its own; `r1jax.fine_tune.sft`, which the student's SFT
in `distill` runs too). A killed run resumes from <out>/ckpt.

Inputs: {'policy', 'data'}. Outputs: {'policy': <out>/policy, 'examples', 'dropped_too_long'}.
"""
from __future__ import annotations

import pathlib

from r1jax import fine_tune


def run(run, ctx, inputs: dict, out: pathlib.Path, *, epochs: int | None = None) -> dict:
  return fine_tune.sft(run, ctx, inputs["policy"], inputs["data"], out, epochs=epochs)
