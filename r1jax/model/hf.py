"""Loading Hugging Face Qwen2 / Qwen3 / Llama checkpoints, sharded: each parameter's place in the
checkpoint (its layout) and its arrays read straight into their shardings.

Loading places every tensor straight into its target sharding with
`jax.make_array_from_callback`; each callback reads only its device's slice from the memory-mapped
safetensors files, and stacked L x ... arrays are filled one layer at a time, so host memory
peaks at about one parameter's worth, never the whole model twice. The config is mapped by
`r1jax.model.hf_config`, the files read by `r1jax.model.hf_files`, and export is
`r1jax.model.hf_export`.

Layouts (HF Linear weights are out x in): q_proj (N*H) x D -> wq D x N x H; o_proj D x (N*H) ->
wo N x H x D; gate/up F x D -> D x F; down D x F -> F x D; lm_head V x D -> D x V. RoPE is the
same 'rotate half' layout on both sides, so no permutation is needed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.model import config as model_config
from r1jax.model.config import ModelConfig, Params
from r1jax.model.hf_config import config_from_hf
from r1jax.model.hf_files import _Checkpoint
from r1jax import sharding


# ----------------------------------------------------------------------------- tensor layouts


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where one r1jax parameter (one layer of it, if stacked) lives in a HF checkpoint.

  ours = (hf.T if transpose else hf).reshape(shape); `split[j]` is how many of our dimensions
  the j-th dimension of the (transposed) HF tensor is split into (e.g. N*H -> N, H is 2).
  """
  name: str
  """Tensor name; '{}' is the layer index for stacked parameters."""
  shape: tuple[int, ...]
  split: tuple[int, ...]
  transpose: bool = False

  @property
  def hf_shape(self) -> tuple[int, ...]:
    dims, i = [], 0
    for n in self.split:
      dims.append(math.prod(self.shape[i:i + n]))
      i += n
    return tuple(reversed(dims)) if self.transpose else tuple(dims)


def _layouts(cfg: ModelConfig) -> dict[tuple[str, ...], _Layout]:
  """Layout of every parameter of `cfg`, keyed by its path in the params tree."""
  D, N, K, H, F, V = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff, cfg.vocab_size
  p = "model.layers.{}."
  lay = {
      ("embed",): _Layout("model.embed_tokens.weight", (V, D), (1, 1)),
      ("final_norm",): _Layout("model.norm.weight", (D,), (1,)),
      ("layers", "attn_norm"): _Layout(p + "input_layernorm.weight", (D,), (1,)),
      ("layers", "wq"): _Layout(p + "self_attn.q_proj.weight", (D, N, H), (1, 2), True),
      ("layers", "wk"): _Layout(p + "self_attn.k_proj.weight", (D, K, H), (1, 2), True),
      ("layers", "wv"): _Layout(p + "self_attn.v_proj.weight", (D, K, H), (1, 2), True),
      ("layers", "wo"): _Layout(p + "self_attn.o_proj.weight", (N, H, D), (2, 1), True),
      ("layers", "mlp_norm"): _Layout(p + "post_attention_layernorm.weight", (D,), (1,)),
      ("layers", "w_gate"): _Layout(p + "mlp.gate_proj.weight", (D, F), (1, 1), True),
      ("layers", "w_up"): _Layout(p + "mlp.up_proj.weight", (D, F), (1, 1), True),
      ("layers", "w_down"): _Layout(p + "mlp.down_proj.weight", (F, D), (1, 1), True),
  }
  if cfg.qkv_bias:
    lay |= {("layers", "bq"): _Layout(p + "self_attn.q_proj.bias", (N, H), (2,)),
            ("layers", "bk"): _Layout(p + "self_attn.k_proj.bias", (K, H), (2,)),
            ("layers", "bv"): _Layout(p + "self_attn.v_proj.bias", (K, H), (2,))}
  if cfg.qk_norm:
    lay |= {("layers", "q_norm"): _Layout(p + "self_attn.q_norm.weight", (H,), (1,)),
            ("layers", "k_norm"): _Layout(p + "self_attn.k_norm.weight", (H,), (1,))}
  if not cfg.tie_embeddings:
    lay[("lm_head",)] = _Layout("lm_head.weight", (D, V), (1, 1), True)
  want = {tuple(k.key for k in path) for path, _ in
          jax.tree.flatten_with_path(model_config.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))[0]}
  assert set(lay) == want, f"hf layouts {sorted(lay)} out of sync with model params {sorted(want)}"
  return lay


def _bounds(s: slice, n: int) -> tuple[int, int]:
  start, stop, step = s.indices(n)
  assert step == 1, s
  return start, stop


def _read_slice(t_hf: np.ndarray, lay: _Layout, index: tuple[slice, ...]) -> np.ndarray:
  """ours[index] for one layer, reading from the (memory-mapped) HF tensor only the rows and
  columns it needs: the leading factor of each split dimension is sliced in the file."""
  hf_index, inner, local, i = [], [], [], 0
  for n in lay.split:
    dims, sls = lay.shape[i:i + n], index[i:i + n]
    lo, hi = _bounds(sls[0], dims[0])
    rest = math.prod(dims[1:])
    hf_index.append(slice(lo * rest, hi * rest))
    local += [hi - lo, *dims[1:]]
    inner += [slice(None), *sls[1:]]
    i += n
  if lay.transpose:
    x = t_hf[tuple(reversed(hf_index))].T
  else:
    x = t_hf[tuple(hf_index)]
  return x.reshape(local)[tuple(inner)]


# ----------------------------------------------------------------------------- load


def _shard_callback(ckpt: _Checkpoint, lay: _Layout, n_layers: int | None, dtype) -> Callable:
  """`make_array_from_callback` callback for one parameter; identical indices (replicas) share
  one host buffer, and stacked arrays are filled one layer at a time."""
  cache: dict[tuple, np.ndarray] = {}

  def callback(index):
    key = tuple((s.start, s.stop, s.step) for s in index)
    if key in cache:
      return cache[key]
    if n_layers is None:
      out = _read_slice(ckpt[lay.name], lay, index).astype(dtype)  # copies: never hand JAX the mmap
    else:
      lo, hi = _bounds(index[0], n_layers)
      local = tuple(b - a for a, b in (_bounds(s, n) for s, n in zip(index[1:], lay.shape)))
      out = np.empty((hi - lo, *local), dtype)
      for j, layer in enumerate(range(lo, hi)):
        out[j] = _read_slice(ckpt[lay.name.format(layer)], lay, index[1:]).astype(dtype, copy=False)
    cache[key] = out
    return out

  return callback


def load_hf_checkpoint(path, mesh=None, rules=None, **config_overrides) -> tuple[ModelConfig, Params]:
  """(ModelConfig, params) from a Hugging Face Qwen2 / Llama checkpoint folder.

  Args:
    path: folder with config.json and model.safetensors or model.safetensors.index.json + shards.
    mesh: target mesh (default: a 1x1x1 mesh of the first device). rules: logical->mesh rules
      (default `sharding.DEFAULT_RULES`).
    config_overrides: ModelConfig fields, e.g. param_dtype='bfloat16' (the storage dtype the
      tensors are cast to; default float32 whatever the file holds), dtype, remat, max_seq_len.
  Each parameter is created directly in its sharding; no device ever holds more than its shard.
  """
  path = pathlib.Path(path)
  cfg = config_from_hf(json.loads((path / "config.json").read_text()), **config_overrides)
  if mesh is None:
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  shardings = model_config.param_shardings(cfg, mesh, rules)
  dtype = np.dtype(jnp.dtype(cfg.param_dtype))
  ckpt = _Checkpoint(path)
  params: dict[str, Any] = {"layers": {}}
  for key, lay in _layouts(cfg).items():
    stacked = key[0] == "layers"
    first = ckpt[lay.name.format(0) if stacked else lay.name]
    if tuple(first.shape) != lay.hf_shape:
      raise ValueError(f"{path}: tensor {lay.name} has shape {tuple(first.shape)}, but the config implies "
                       f"{lay.hf_shape}")
    shape = ((cfg.n_layers,) if stacked else ()) + lay.shape
    target = shardings["layers"][key[1]] if stacked else shardings[key[0]]
    arr = jax.make_array_from_callback(shape, target, _shard_callback(ckpt, lay, cfg.n_layers if stacked else None,
                                                                       dtype))
    if stacked:
      params["layers"][key[1]] = arr
    else:
      params[key[0]] = arr
  return cfg, params

