"""The data layer: examples from JSONL files, reasoning-gym, a synthetic generator or TFDS,
and deterministic, resumable prompt batches.

    cfg = DataConfig(source="jsonl", path="../shared/data/gsm8k_test.jsonl", preset="gsm8k")
    examples = load(cfg)          # [{'id', 'question', 'final', 'solution'?, ...}, ...]
    for batch, position in iterate_prompts(examples, 16, seed=0): ...

The example shape is documented in `r1jax.data.config`.
"""
from __future__ import annotations

from r1jax.data.batching import DataPosition, as_position, bucket_length, epoch_order, iterate_prompts
from r1jax.data.config import PRESETS, SOURCES, DataConfig
from r1jax.data.jsonl import BadRowError, last_boxed, load_jsonl, normalize_row, read_jsonl
from r1jax.data.reasoning_gym_source import load_reasoning_gym, scorer as reasoning_gym_scorer
from r1jax.data.synthetic import generate as generate_synthetic, load_synthetic, pretraining_corpus
from r1jax.data.synthetic import split as synthetic_split
from r1jax.data.tfds_source import load_tfds

__all__ = [
    "BadRowError", "DataConfig", "DataPosition", "PRESETS", "SOURCES", "as_position", "bucket_length",
    "epoch_order", "generate_synthetic", "iterate_prompts", "last_boxed", "load", "load_jsonl",
    "load_reasoning_gym", "load_synthetic", "load_tfds", "normalize_row", "pretraining_corpus",
    "read_jsonl", "reasoning_gym_scorer", "synthetic_split",
]


def load(cfg: DataConfig) -> list[dict]:
  """The examples `cfg` describes, whatever its source."""
  if cfg.source == "jsonl":
    return load_jsonl(cfg.path, cfg)
  if cfg.source == "reasoning_gym":
    return load_reasoning_gym(cfg)
  if cfg.source == "synthetic":
    return load_synthetic(cfg)
  return load_tfds(cfg)
