"""Hugging Face interop for Qwen2 / Qwen3 / Llama checkpoints: config mapping, sharded loading, export.

Loading places every tensor straight into its target sharding with
`jax.make_array_from_callback`; each callback reads only its device's slice from the memory-mapped
safetensors files, and stacked L x ... arrays are filled one layer at a time, so host memory
peaks at about one parameter's worth, never the whole model twice. Export pulls one layer of one
parameter to host at a time and streams it into (optionally sharded) safetensors files.

The safetensors files are read and written with a small local codec (8-byte header length, JSON
header, raw little-endian bytes) rather than `safetensors.safe_open`: its numpy framework cannot
produce bfloat16, and the torch/flax ones would add a runtime dependency or a device copy.

Layouts (HF Linear weights are out x in): q_proj (N*H) x D -> wq D x N x H; o_proj D x (N*H) ->
wo N x H x D; gate/up F x D -> D x F; down D x F -> F x D; lm_head V x D -> D x V. RoPE is the
same 'rotate half' layout on both sides, so no permutation is needed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import struct
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from r1jax import distributed
from r1jax import errors
from r1jax.model import config as model_config
from r1jax.model.config import ModelConfig, Params, RopeScaling
from r1jax import sharding

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama", "mistral")
_DEFAULT_MAX_POSITIONS = {"qwen2": 32768, "qwen3": 32768, "llama": 2048, "mistral": 131072}
_ST_TO_NP = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16),
             "F64": np.dtype("<f8")}
_NP_TO_ST = {v: k for k, v in _ST_TO_NP.items()}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


# ----------------------------------------------------------------------------- config


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


def _to_hf(x: np.ndarray, lay: _Layout) -> np.ndarray:
  """One layer of our parameter in the HF tensor layout."""
  dims, i = [], 0
  for n in lay.split:
    dims.append(math.prod(x.shape[i:i + n]))
    i += n
  x = x.reshape(dims)
  return x.T if lay.transpose else x


# ----------------------------------------------------------------------------- safetensors files


def _bad_file(path, why: str) -> errors.UserError:
  return errors.UserError("Hugging Face checkpoint", path, why,
                          "copy or download the file again (it is truncated or not a safetensors file)")


def read_safetensors_header(path: pathlib.Path) -> tuple[dict, int]:
  """(header without its metadata, its length): checked against the file's size, so a truncated
  file is named before any tensor is read."""
  size = path.stat().st_size
  with open(path, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise _bad_file(path, f"{size} bytes, shorter than a safetensors header")
    (n,) = struct.unpack("<Q", head)
    if 8 + n > size:
      raise _bad_file(path, f"its header claims {n} bytes but the file holds {size}")
    try:
      header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError):
      raise _bad_file(path, "its header is not JSON") from None
  if not isinstance(header, dict):
    raise _bad_file(path, "its header is not a JSON object")
  header.pop("__metadata__", None)
  try:
    end = max((int(h["data_offsets"][1]) for h in header.values()), default=0)
  except (KeyError, TypeError, IndexError, ValueError):
    raise _bad_file(path, "a tensor entry of its header has no data_offsets") from None
  if 8 + n + end > size:
    raise _bad_file(path, f"the file holds {size} bytes but its tensors end at byte {8 + n + end}")
  return header, n


def check_checkpoint(path, field: str = "model.hf_checkpoint") -> None:
  """Before any work: a Hugging Face directory's config.json parses and every safetensors file
  it names is whole (headers against file sizes; no tensor is read)."""
  path = pathlib.Path(path)
  conf = path / "config.json"
  if not conf.is_file():
    raise errors.UserError("Hugging Face checkpoint", f"{field}={str(path)!r}", "no config.json there",
                           "give a directory holding config.json, *.safetensors and tokenizer files")
  try:
    json.loads(conf.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise errors.UserError("Hugging Face checkpoint", conf, f"not valid JSON ({e})", "restore the file") from None
  if (path / SINGLE_FILE).exists():
    files = [path / SINGLE_FILE]
  elif (path / INDEX_FILE).exists():
    try:
      files = [path / f for f in sorted(set(json.loads((path / INDEX_FILE).read_text())["weight_map"].values()))]
    except (ValueError, KeyError, TypeError, AttributeError):
      raise errors.UserError("Hugging Face checkpoint", path / INDEX_FILE, "not an index with a weight_map",
                             "restore the file") from None
  else:
    raise errors.UserError("Hugging Face checkpoint", f"{field}={str(path)!r}",
                           f"neither {SINGLE_FILE} nor {INDEX_FILE} there", "give a Hugging Face model directory")
  for f in files:
    if not f.is_file():
      raise _bad_file(f, "missing (named by the index)")
    read_safetensors_header(f)


class _SafetensorsFile:
  """Memory-mapped, zero-copy views of the tensors of one .safetensors file."""

  def __init__(self, path: pathlib.Path):
    self.header, n = read_safetensors_header(path)
    self._base = 8 + n
    self._mm = np.memmap(path, np.uint8, mode="r")
    self.path = path

  def __getitem__(self, name: str) -> np.ndarray:
    h = self.header[name]
    if h["dtype"] not in _ST_TO_NP:
      raise ValueError(f"{self.path}: tensor {name} has dtype {h['dtype']}; supported: {sorted(_ST_TO_NP)}")
    begin, end = h["data_offsets"]
    return self._mm[self._base + begin:self._base + end].view(_ST_TO_NP[h["dtype"]]).reshape(h["shape"])


class _Checkpoint:
  """Tensor lookup across `model.safetensors` or the shards named by its index."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    if (path / SINGLE_FILE).exists():
      self._files = {SINGLE_FILE: _SafetensorsFile(path / SINGLE_FILE)}
      self._where = {name: SINGLE_FILE for name in self._files[SINGLE_FILE].header}
    elif (path / INDEX_FILE).exists():
      self._files = {}
      self._where = json.loads((path / INDEX_FILE).read_text())["weight_map"]
    else:
      raise FileNotFoundError(f"{path} has neither {SINGLE_FILE} nor {INDEX_FILE}")

  def __getitem__(self, name: str) -> np.ndarray:
    if name not in self._where:
      raise KeyError(f"tensor {name!r} not found in the checkpoint at {self.path}")
    file = self._where[name]
    if file not in self._files:
      self._files[file] = _SafetensorsFile(self.path / file)
    return self._files[file][name]


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


# ----------------------------------------------------------------------------- save


@jax.jit
def _layer_of(x, i):
  return jax.lax.dynamic_index_in_dim(x, i, keepdims=False)


def _to_host(x: jax.Array) -> np.ndarray:
  return np.asarray(distributed.to_host(x))


def _write_safetensors(file: pathlib.Path, entries: list[tuple[str, tuple[int, ...], np.dtype, Callable]]):
  """Stream tensors into one safetensors file; `fetch()` is called for one tensor at a time.
  Several processes: all fetch (an all-gather each), process 0 writes."""
  if jax.process_index():
    for *_, fetch in entries:
      fetch()
    return
  header, offset = {}, 0
  for name, shape, dt, _ in entries:
    size = math.prod(shape) * dt.itemsize
    header[name] = {"dtype": _NP_TO_ST[dt], "shape": list(shape), "data_offsets": [offset, offset + size]}
    offset += size
  header["__metadata__"] = {"format": "pt"}
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-len(raw) % 8)  # the data buffer starts 8-byte aligned
  with open(file, "wb") as f:
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for name, shape, dt, fetch in entries:
      x = fetch()
      assert x.shape == tuple(shape) and x.dtype == dt, (name, x.shape, x.dtype, shape, dt)
      f.write(np.ascontiguousarray(x).tobytes())


def save_hf_checkpoint(params: Params, cfg: ModelConfig, path, dtype: str | None = None,
                       max_shard_bytes: int = 5 * 10**9) -> None:
  """Write config.json and safetensors that `transformers` loads as Qwen2 (cfg.qkv_bias) or Llama.

  Args:
    dtype: storage dtype of the tensors ('float32', 'bfloat16', 'float16'); default: the
      parameters' own dtype.
    max_shard_bytes: above this the tensors are split over model-0000i-of-0000n.safetensors
      files with a model.safetensors.index.json, as `save_pretrained` does.
  Stale model.safetensors / index / shard files in `path` are removed first. One layer of one
  parameter is on the host at a time. Several processes: every one calls this, process 0 writes.
  """
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  out_dtype = np.dtype(jnp.dtype(dtype or params["embed"].dtype))
  if out_dtype not in _NP_TO_ST:
    raise ValueError(f"save dtype={dtype!r} is not one of 'float32', 'bfloat16', 'float16'")
  layouts = _layouts(cfg)

  def entry(name, lay, get):
    return (name, lay.hf_shape, out_dtype, lambda: _to_hf(_to_host(get()), lay).astype(out_dtype))

  entries = [entry(layouts[("embed",)].name, layouts[("embed",)], lambda: params["embed"])]
  layer_keys = [k for k in layouts if k[0] == "layers"]
  for i in range(cfg.n_layers):
    for key in layer_keys:
      lay = layouts[key]
      entries.append(entry(lay.name.format(i), lay, lambda k=key[1], i=i: _layer_of(params["layers"][k], i)))
  for key in [("final_norm",)] + ([] if cfg.tie_embeddings else [("lm_head",)]):
    entries.append(entry(layouts[key].name, layouts[key], lambda k=key[0]: params[k]))

  shards, size = [[]], 0
  for e in entries:
    n = math.prod(e[1]) * out_dtype.itemsize
    if shards[-1] and size + n > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(e)
    size += n
  writer = jax.process_index() == 0
  for stale in [path / SINGLE_FILE, path / INDEX_FILE, *path.glob("model-*-of-*.safetensors")] if writer else []:
    stale.unlink(missing_ok=True)
  if len(shards) == 1:
    _write_safetensors(path / SINGLE_FILE, shards[0])
  else:
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
      _write_safetensors(path / name, shard)
    index = {"metadata": {"total_size": sum(math.prod(e[1]) for e in entries) * out_dtype.itemsize},
             "weight_map": {e[0]: name for name, shard in zip(names, shards) for e in shard}}
    if writer:
      (path / INDEX_FILE).write_text(json.dumps(index, indent=2))
  if writer:
    (path / "config.json").write_text(json.dumps(config_to_hf(cfg, jnp.dtype(out_dtype).name), indent=2))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "added_tokens.json", "chat_template.jinja", "generation_config.json")


def save_tokenizer(tokenizer, path, source: str | None = None) -> None:
  """Tokenizer files beside an export, so `transformers.AutoTokenizer.from_pretrained(path)` works
  and gives the ids r1jax trained on.

  With `source` (the Hugging Face directory the model came from) its tokenizer files are copied
  unchanged where transformers reads them as they are; where it would not (a gzipped
  tokenizer.json, the list form of added_tokens.json), tokenizer.json is written from the loaded
  tokenizer, added tokens included. Without `source` a `tokenizers` tokenizer is written as
  tokenizer.json and a SentencePiece model as tokenizer.model, each with a tokenizer_config.json
  naming the special tokens, the BOS rule (`add_bos_token`) and the chat template.
  """
  import shutil

  from r1jax import tokenizer as tok_lib
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  if source:
    src = pathlib.Path(source)
    added = src / "added_tokens.json"
    listed = added.is_file() and isinstance(json.loads(added.read_text()), list)
    rewrite = isinstance(tokenizer, tok_lib.HFTokenizer) and (listed or not (src / "tokenizer.json").is_file())
    for name in TOKENIZER_FILES:
      if (src / name).is_file() and not (rewrite and name in ("tokenizer.json", "added_tokens.json")):
        shutil.copyfile(src / name, path / name)
    if rewrite:
      tokenizer._tok.save(str(path / "tokenizer.json"))
    if (src / "tokenizer_config.json").is_file():
      return
  special = tokenizer.special_tokens_map
  if isinstance(tokenizer, tok_lib.HFTokenizer):
    if not (path / "tokenizer.json").is_file():
      tokenizer._tok.save(str(path / "tokenizer.json"))
    conf = {"tokenizer_class": "PreTrainedTokenizerFast"}
  elif isinstance(tokenizer, tok_lib.SentencePieceTokenizer):
    shutil.copyfile(tokenizer.source, path / "tokenizer.model")
    # No EOS added on encode and no dummy prefix: the ids r1jax trained on; BOS as r1jax adds it.
    conf = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": tokenizer.add_bos, "add_eos_token": False,
            "add_prefix_space": False, "legacy": False, "unk_token": tokenizer.id_to_piece(tokenizer._sp.unk_id())}
  else:
    raise TypeError(f"cannot export a tokenizer of type {type(tokenizer).__name__}")
  if tokenizer.chat_template:
    conf["chat_template"] = tokenizer.chat_template
  (path / "tokenizer_config.json").write_text(json.dumps(conf | special, indent=2))
