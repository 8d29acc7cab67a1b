"""Hugging Face config.json <-> `ModelConfig`: the Qwen2, Qwen3, Llama and Mistral fields r1jax reads,
the RoPE scalings of transformers 4 and 5, and a refusal of every field that changes the math in
a way r1jax does not implement.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from r1jax.model.config import ModelConfig, RopeScaling


SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama", "mistral")


_DEFAULT_MAX_POSITIONS = {"qwen2": 32768, "qwen3": 32768, "llama": 2048, "mistral": 131072}


def _unsupported(field: str, value, allowed: str) -> ValueError:
  return ValueError(f"config.json {field}={value!r} is not supported: {allowed}")


def _rope_from_hf(hf: dict[str, Any]) -> tuple[float, RopeScaling | None]:
  """(rope_theta, scaling) from transformers-5 `rope_parameters` or transformers-4 `rope_scaling`."""
  rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  if isinstance(rope.get("full_attention"), dict):  # per-layer-type form of transformers 5
    rope = rope["full_attention"]
  theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
  kind = rope.get("rope_type", rope.get("type", "default"))
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise _unsupported("rope partial_rotary_factor", rope["partial_rotary_factor"], "only 1.0 (full rotary)")
  if kind == "default":
    return theta, None
  if kind == "linear":
    return theta, RopeScaling("linear", factor=float(rope["factor"]))
  if kind == "llama3":
    return theta, RopeScaling("llama3", factor=float(rope["factor"]),
                              low_freq_factor=float(rope["low_freq_factor"]),
                              high_freq_factor=float(rope["high_freq_factor"]),
                              original_max_position=int(rope["original_max_position_embeddings"]))
  if kind == "yarn":
    opt = lambda k, d: float(rope[k]) if rope.get(k) is not None else d
    return theta, RopeScaling("yarn", factor=float(rope["factor"]),
                              original_max_position=int(rope["original_max_position_embeddings"]),
                              beta_fast=opt("beta_fast", 32.0), beta_slow=opt("beta_slow", 1.0),
                              mscale=opt("mscale", 0.0), mscale_all_dim=opt("mscale_all_dim", 0.0),
                              attention_factor=opt("attention_factor", 0.0),
                              truncate=bool(rope.get("truncate", True)))
  if kind == "dynamic":  # transformers rescales past max_position_embeddings
    return theta, RopeScaling("dynamic", factor=float(rope["factor"]),
                              original_max_position=int(hf.get("max_position_embeddings", 2048)))
  raise _unsupported("rope_type", kind, "supported: 'default', 'linear', 'llama3', 'yarn', 'dynamic'")


def _sliding_window_in_use(hf: dict[str, Any], model_type: str) -> int | None:
  """The attention window if some layer of the HF model actually uses one, else None."""
  window = hf.get("sliding_window")
  if model_type == "llama" or window is None:
    return None
  if model_type == "mistral":
    return window
  if not hf.get("use_sliding_window", False):  # Qwen2 ignores sliding_window unless this is set
    return None
  n_layers = hf["num_hidden_layers"]
  types = hf.get("layer_types") or ["sliding_attention" if i >= hf.get("max_window_layers", 28)
                                    else "full_attention" for i in range(n_layers)]
  return window if "sliding_attention" in types else None


def config_from_hf(hf_config: dict[str, Any], **overrides) -> ModelConfig:
  """ModelConfig from a Hugging Face config.json dict of a Qwen2, Llama or Mistral model.

  `overrides` replace ModelConfig fields (e.g. param_dtype='bfloat16', remat='full').
  Raises ValueError for architectures or fields that change the math in a way r1jax does not
  implement (other activations, o_proj/MLP biases, sliding windows in use, other RoPE types).
  """
  hf = dict(hf_config)
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise _unsupported("model_type", model_type, f"supported: {SUPPORTED_MODEL_TYPES}")
  for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
    if key not in hf:
      raise ValueError(f"config.json lacks {key!r}, needed for model_type={model_type!r}")
  if hf.get("hidden_act", "silu") != "silu":
    raise _unsupported("hidden_act", hf["hidden_act"], "only 'silu' (SwiGLU MLP)")
  if hf.get("mlp_bias", False):
    raise _unsupported("mlp_bias", hf["mlp_bias"], "the MLP has no biases")
  if model_type != "qwen2" and hf.get("attention_bias", False):
    raise _unsupported("attention_bias", hf["attention_bias"],
                       f"{model_type} puts this bias on o_proj too; only q/k/v biases (model_type 'qwen2') exist")
  theta, scaling = _rope_from_hf(hf)
  n_heads = hf["num_attention_heads"]
  fields = dict(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
      n_heads=n_heads, n_kv_heads=hf.get("num_key_value_heads") or n_heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads, d_ff=hf["intermediate_size"],
      rope_theta=theta, rope_scaling=scaling, rms_eps=float(hf.get("rms_norm_eps", 1e-6)),
      qkv_bias=model_type == "qwen2", qk_norm=model_type == "qwen3", tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      max_seq_len=hf.get("max_position_embeddings", _DEFAULT_MAX_POSITIONS[model_type]))
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  if set(overrides) - known:
    raise ValueError(f"unknown ModelConfig override(s) {sorted(set(overrides) - known)}; known: {sorted(known)}")
  cfg = ModelConfig(**(fields | overrides))
  window = _sliding_window_in_use(hf, model_type)
  if window is not None and window < cfg.max_seq_len:
    raise _unsupported("sliding_window", window,
                       f"full causal attention only (a window >= max_seq_len={cfg.max_seq_len} is a no-op)")
  return cfg


def config_to_hf(cfg: ModelConfig, dtype: str = "float32") -> dict[str, Any]:
  """A transformers-loadable config.json dict: Qwen2 when cfg.qkv_bias, Qwen3 when cfg.qk_norm,
  else Llama.

  RoPE is written in the legacy `rope_theta` / `rope_scaling` form, which transformers 4 reads
  and transformers 5 converts to `rope_parameters`.
  """
  if cfg.qkv_bias and cfg.qk_norm:
    raise ValueError("no Hugging Face architecture has both q/k/v biases and q/k norms")
  qwen = cfg.qkv_bias
  model_type = "qwen2" if qwen else "qwen3" if cfg.qk_norm else "llama"
  rs = cfg.rope_scaling
  if rs is None:
    rope_scaling = None
  elif rs.kind == "linear":
    rope_scaling = {"rope_type": "linear", "factor": rs.factor}
  elif rs.kind == "dynamic":
    if rs.original_max_position != cfg.max_seq_len:
      raise ValueError(f"dynamic RoPE exports its original_max_position={rs.original_max_position} as "
                       f"max_position_embeddings, which must equal model.max_seq_len={cfg.max_seq_len}")
    rope_scaling = {"rope_type": "dynamic", "factor": rs.factor}
  elif rs.kind == "yarn":
    rope_scaling = {"rope_type": "yarn", "factor": rs.factor, "original_max_position_embeddings": rs.original_max_position,
                    "beta_fast": rs.beta_fast, "beta_slow": rs.beta_slow, "truncate": rs.truncate}
    rope_scaling |= {k: getattr(rs, k) for k in ("mscale", "mscale_all_dim", "attention_factor") if getattr(rs, k)}
  else:
    rope_scaling = {"rope_type": "llama3", "factor": rs.factor, "low_freq_factor": rs.low_freq_factor,
                    "high_freq_factor": rs.high_freq_factor,
                    "original_max_position_embeddings": rs.original_max_position}
  hf = {
      "architectures": [{"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}[
          model_type]],
      "model_type": model_type,
      "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff,
      "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
      "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim, "hidden_act": "silu",
      "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.rms_eps,
      "rope_theta": cfg.rope_theta, "rope_scaling": rope_scaling,
      "tie_word_embeddings": cfg.tie_embeddings, "attention_dropout": 0.0, "dtype": dtype,
  }
  if model_type in ("qwen2", "qwen3"):
    hf["use_sliding_window"] = False
  if model_type != "qwen2":
    hf |= {"attention_bias": False, "mlp_bias": False}
  return hf
