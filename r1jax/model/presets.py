"""Model presets: the shapes of the released models r1jax loads (Qwen2.5, Qwen3, Llama 3) and of the
tiny models it pretrains itself, as `ModelConfig`s by name."""
from __future__ import annotations

import dataclasses

from r1jax.model.config import ModelConfig, RopeScaling


TRAINED_HERE = ("tiny", "tiny-r1-zero")
"""Presets whose weights r1jax pretrains itself (every other preset is a released model's shape)."""

PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(),
    # experiments/r1_zero.py's default base, pretrained here (its vocabulary is the trained tokenizer's).
    "tiny-r1-zero": ModelConfig(d_model=128, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=256),
    "qwen2.5-0.5b": ModelConfig(vocab_size=151936, d_model=896, n_layers=24, n_heads=14, n_kv_heads=2,
                                head_dim=64, d_ff=4864, rope_theta=1e6, qkv_bias=True, tie_embeddings=True,
                                max_seq_len=32768),
    "qwen2.5-1.5b": ModelConfig(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12, n_kv_heads=2,
                                head_dim=128, d_ff=8960, rope_theta=1e6, qkv_bias=True, tie_embeddings=True,
                                max_seq_len=32768),
    "qwen2.5-3b": ModelConfig(vocab_size=151936, d_model=2048, n_layers=36, n_heads=16, n_kv_heads=2,
                              head_dim=128, d_ff=11008, rope_theta=1e6, qkv_bias=True, tie_embeddings=True,
                              max_seq_len=32768),
    "qwen2.5-7b": ModelConfig(vocab_size=152064, d_model=3584, n_layers=28, n_heads=28, n_kv_heads=4,
                              head_dim=128, d_ff=18944, rope_theta=1e6, qkv_bias=True, tie_embeddings=False,
                              max_seq_len=32768),
    "qwen2.5-14b": ModelConfig(vocab_size=152064, d_model=5120, n_layers=48, n_heads=40, n_kv_heads=8,
                               head_dim=128, d_ff=13824, rope_theta=1e6, qkv_bias=True, tie_embeddings=False,
                               max_seq_len=32768),
    "qwen3-0.6b": ModelConfig(vocab_size=151936, d_model=1024, n_layers=28, n_heads=16, n_kv_heads=8,
                              head_dim=128, d_ff=3072, rope_theta=1e6, qk_norm=True, tie_embeddings=True,
                              max_seq_len=32768),
    "qwen3-1.7b": ModelConfig(vocab_size=151936, d_model=2048, n_layers=28, n_heads=16, n_kv_heads=8,
                              head_dim=128, d_ff=6144, rope_theta=1e6, qk_norm=True, tie_embeddings=True,
                              max_seq_len=32768),
    "qwen3-4b": ModelConfig(vocab_size=151936, d_model=2560, n_layers=36, n_heads=32, n_kv_heads=8,
                            head_dim=128, d_ff=9728, rope_theta=1e6, qk_norm=True, tie_embeddings=True,
                            max_seq_len=32768),
    "qwen3-8b": ModelConfig(vocab_size=151936, d_model=4096, n_layers=36, n_heads=32, n_kv_heads=8,
                            head_dim=128, d_ff=12288, rope_theta=1e6, qk_norm=True, tie_embeddings=False,
                            max_seq_len=32768),
    "llama3-8b": ModelConfig(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                             head_dim=128, d_ff=14336, rope_theta=5e5, rms_eps=1e-5, max_seq_len=8192),
    "llama3.1-8b": ModelConfig(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                               head_dim=128, d_ff=14336, rope_theta=5e5, rms_eps=1e-5, max_seq_len=131072,
                               rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)),
}


def preset(name: str, **overrides) -> ModelConfig:
  if name not in PRESETS:
    raise ValueError(f"model.preset={name!r} is not one of {sorted(PRESETS)}")
  return dataclasses.replace(PRESETS[name], **overrides)
