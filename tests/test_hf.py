"""Hugging Face interop: logits of loaded checkpoints equal transformers', export round-trips exactly."""
import dataclasses
import json

import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

from r1jax.model import hf
from r1jax.model import hf_config
from r1jax.model import hf_export
from r1jax.model import hf_files
from r1jax import model as M

VOCAB, T = 101, 12


@dataclasses.dataclass(frozen=True)
class Case:
  """A tiny random transformers model and how it is saved."""
  id: str
  arch: str
  kwargs: dict
  save_dtype: torch.dtype = torch.float32
  max_shard_size: str | None = None


CASES = [
    Case("qwen2-tied-gqa2", "qwen2", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                          rope_theta=1e6)),
    Case("qwen2-untied-mqa-sharded", "qwen2", dict(num_attention_heads=4, num_key_value_heads=1),
         max_shard_size="20KB"),
    Case("llama-mha-llama3rope", "llama", dict(
        num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0, max_position_embeddings=128,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=64))),
    Case("llama-tied-linearrope-hd16", "llama", dict(
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True, rope_theta=5e5,
        rms_norm_eps=1e-5, rope_scaling=dict(rope_type="linear", factor=2.0))),
    Case("qwen2-gqa4-bf16", "qwen2", dict(num_attention_heads=8, num_key_value_heads=2), save_dtype=torch.bfloat16),
    Case("mistral-nowindow", "mistral", dict(num_attention_heads=4, num_key_value_heads=2, sliding_window=None)),
    # Qwen3: q/k RMSNorm, an explicit head_dim unlike hidden_size / heads, and its rope types.
    Case("qwen3-tied-hd16", "qwen3", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                          tie_word_embeddings=True, rope_theta=1e6)),
    Case("qwen3-untied-yarn", "qwen3", dict(
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rope_theta=1e4,
        rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64))),
    Case("qwen3-yarn-mscale", "qwen3", dict(
        num_attention_heads=4, num_key_value_heads=1, head_dim=8, rope_theta=1e4,
        rope_scaling=dict(rope_type="yarn", factor=8.0, original_max_position_embeddings=32, beta_fast=16.0,
                          beta_slow=2.0, mscale=1.0, mscale_all_dim=0.5, truncate=False))),
    # dynamic NTK: positions past max_position_embeddings (8 < T) rescale the base.
    Case("llama-dynamic-ntk", "llama", dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8,
                                            rope_scaling=dict(rope_type="dynamic", factor=2.0))),
]
_ARCH = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
         "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
         "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
         "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)}


def _random_hf_model(case: Case):
  config_cls, model_cls = _ARCH[case.arch]
  config = config_cls(**(dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                              max_position_embeddings=256) | case.kwargs))
  config._attn_implementation = "eager"
  torch.manual_seed(0)
  model = model_cls(config).eval()
  # HF init zeroes biases and sets norms to one, which would hide layout bugs: randomize everything,
  # large enough that attention is far from uniform and logits are O(1).
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1 + 0.3 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.normal_(0.0, 0.5)
      else:
        p.normal_(0.0, 0.2)
  return model


def _batches():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, VOCAB, size=(3, T))
  full = np.ones((3, T), bool)
  padded = np.arange(T)[None] >= np.array([0, 3, 7])[:, None]  # left padding
  return [(tokens, full), (np.where(padded, tokens, 0), padded)]


def _hf_logits(model, tokens, mask):
  pos = np.asarray(M.positions_from_mask(mask))
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                position_ids=torch.tensor(pos, dtype=torch.long))
  return out.logits.float().numpy()


def _r1jax_logits(params, cfg, tokens, mask):
  pos = M.positions_from_mask(mask)
  fwd = jax.jit(lambda p, t, q, m: M.forward(p, t, q, cfg, mask_BxT=m)[0])
  return np.asarray(fwd(params, tokens, pos, mask))


def _load_hf(path):
  model, info = transformers.AutoModelForCausalLM.from_pretrained(
      path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  return model.eval()


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.id)
def saved(request, tmp_path_factory):
  """(case, folder, fp32 transformers reference on the weights as saved)."""
  case = request.param
  path = tmp_path_factory.mktemp(case.id)
  model = _random_hf_model(case)
  kw = {} if case.max_shard_size is None else {"max_shard_size": case.max_shard_size}
  model.to(case.save_dtype).save_pretrained(path, safe_serialization=True, **kw)
  # Reference in float32 on exactly the stored (possibly bf16-rounded) weights.
  return case, path, _load_hf(path)


def test_logits_match_transformers(saved):
  case, path, ref = saved
  if case.max_shard_size:
    assert (path / hf_files.INDEX_FILE).exists() and len(list(path.glob("model-*.safetensors"))) > 1
  cfg, params = hf.load_hf_checkpoint(path)
  assert cfg.qkv_bias == (case.arch == "qwen2")
  assert cfg.tie_embeddings == case.kwargs.get("tie_word_embeddings", False)
  for tokens, mask in _batches():
    want = _hf_logits(ref, tokens, mask)
    got = _r1jax_logits(params, cfg, tokens, mask)
    assert np.abs(want).max() > 1.0  # O(1) logits: the 1e-4 tolerance is tight, not vacuous
    np.testing.assert_allclose(got[mask], want[mask], rtol=0, atol=1e-4)


def test_export_round_trip_is_exact(saved, tmp_path):
  case, path, ref = saved
  cfg, params = hf.load_hf_checkpoint(path)
  save_dtype = "bfloat16" if case.save_dtype == torch.bfloat16 else None
  hf_export.save_hf_checkpoint(params, cfg, tmp_path, dtype=save_dtype, max_shard_bytes=30_000)
  assert (tmp_path / hf_files.INDEX_FILE).exists()
  exported = _load_hf(tmp_path)
  assert type(exported).__name__ == {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}.get(
      case.arch, "LlamaForCausalLM")
  for tokens, mask in _batches():
    np.testing.assert_array_equal(_hf_logits(exported, tokens, mask), _hf_logits(ref, tokens, mask))
  cfg2, params2 = hf.load_hf_checkpoint(tmp_path)
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  # Every stored tensor is bit-identical to the original file's (bf16 -> fp32 -> bf16 is exact).
  new, original = _state_dict(tmp_path), _state_dict(path)
  assert sorted(new) == sorted(original)
  for name, t in new.items():
    assert t.dtype == original[name].dtype
    assert torch.equal(t, original[name]), name


def _state_dict(path):
  files = sorted(path.glob("*.safetensors"))
  out = {}
  for f in files:
    with safe_open(f, framework="pt") as st:
      out |= {k: st.get_tensor(k) for k in st.keys()}
  return out


def test_bf16_params_are_the_stored_bits(tmp_path):
  case = next(c for c in CASES if c.save_dtype == torch.bfloat16)
  _random_hf_model(case).to(torch.bfloat16).save_pretrained(tmp_path)
  cfg, params = hf.load_hf_checkpoint(tmp_path, param_dtype="bfloat16")
  sd = _state_dict(tmp_path)
  D, N, H = cfg.d_model, cfg.n_heads, cfg.head_dim
  bits = lambda x: np.asarray(x).view(np.uint16)
  np.testing.assert_array_equal(bits(params["embed"]), sd["model.embed_tokens.weight"].view(torch.int16).numpy()
                                .view(np.uint16))
  wq1 = sd["model.layers.1.self_attn.q_proj.weight"].T.reshape(D, N, H).contiguous()
  np.testing.assert_array_equal(bits(params["layers"]["wq"][1]), wq1.view(torch.int16).numpy().view(np.uint16))
  wo0 = sd["model.layers.0.self_attn.o_proj.weight"].T.reshape(N, H, D).contiguous()
  np.testing.assert_array_equal(bits(params["layers"]["wo"][0]), wo0.view(torch.int16).numpy().view(np.uint16))


# ----------------------------------------------------------------------------- config mapping


BASE = dict(model_type="llama", vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=48, max_position_embeddings=256)


def test_transformers4_and_5_rope_forms_agree():
  scaling = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64)
  v4 = BASE | dict(rope_theta=5e5, rope_scaling=dict(type="llama3", **scaling))
  v5 = BASE | dict(rope_parameters=dict(rope_type="llama3", rope_theta=5e5, **scaling))
  cfg = hf_config.config_from_hf(v4)
  assert cfg == hf_config.config_from_hf(v5)
  assert cfg.rope_theta == 5e5
  assert cfg.rope_scaling == M.RopeScaling("llama3", 8.0, 1.0, 4.0, 64)
  assert not cfg.qkv_bias and cfg.head_dim == 8 and cfg.max_seq_len == 256
  # The exported config maps back to the same ModelConfig.
  assert hf_config.config_from_hf(hf_config.config_to_hf(cfg)) == cfg


def test_overrides_and_qwen2_defaults():
  cfg = hf_config.config_from_hf(BASE | dict(model_type="qwen2", sliding_window=4096, use_sliding_window=False),
                                 param_dtype="bfloat16", remat="full")
  assert cfg.qkv_bias and cfg.param_dtype == "bfloat16" and cfg.remat == "full"
  with pytest.raises(ValueError, match="unknown ModelConfig override"):
    hf_config.config_from_hf(BASE, n_experts=8)
  # A window no shorter than the context is a no-op and accepted.
  assert hf_config.config_from_hf(BASE | dict(model_type="mistral", sliding_window=256)).max_seq_len == 256


@pytest.mark.parametrize("change, field", [
    (dict(model_type="gpt2"), "model_type='gpt2'"),
    (dict(model_type="qwen2_moe"), "model_type='qwen2_moe'"),
    (dict(hidden_act="gelu"), "hidden_act='gelu'"),
    (dict(mlp_bias=True), "mlp_bias=True"),
    (dict(attention_bias=True), "attention_bias=True"),
    (dict(rope_scaling=dict(rope_type="longrope", factor=4.0)), "rope_type='longrope'"),
    (dict(rope_parameters=dict(rope_type="proportional", factor=2.0, rope_theta=1e4)), "rope_type='proportional'"),
    (dict(rope_parameters=dict(rope_type="default", rope_theta=1e4, partial_rotary_factor=0.5)),
     "partial_rotary_factor=0.5"),
    (dict(model_type="mistral", sliding_window=16), "sliding_window=16"),
    (dict(model_type="qwen2", use_sliding_window=True, sliding_window=16, max_window_layers=1), "sliding_window=16"),
    (dict(hidden_size=None), "hidden_size"),
])
def test_unsupported_configs_are_rejected(change, field):
  config_json = {k: v for k, v in (BASE | change).items() if v is not None}
  with pytest.raises(ValueError, match=field.replace("(", r"\(").replace("[", r"\[")):
    hf_config.config_from_hf(config_json)


def test_load_rejects_shape_mismatch(saved):
  _, path, _ = saved
  with pytest.raises(ValueError, match="model.embed_tokens.weight has shape"):
    hf.load_hf_checkpoint(path, vocab_size=VOCAB + 1)


def test_load_requires_config_and_weights(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(BASE))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    hf.load_hf_checkpoint(tmp_path)
