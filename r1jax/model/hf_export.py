"""Export to Hugging Face: safetensors and config.json that `transformers` loads as Qwen2, Qwen3 or
Llama, and the tokenizer files beside them.

Export pulls one layer of one parameter to host at a time and streams it into (optionally sharded)
safetensors files.
"""
from __future__ import annotations

import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import distributed
from r1jax.model.config import ModelConfig, Params
from r1jax.model.hf import _layouts, _Layout
from r1jax.model.hf_config import config_to_hf
from r1jax.model.hf_files import INDEX_FILE, SINGLE_FILE, _NP_TO_ST, _write_safetensors


def _to_hf(x: np.ndarray, lay: _Layout) -> np.ndarray:
  """One layer of our parameter in the HF tensor layout."""
  dims, i = [], 0
  for n in lay.split:
    dims.append(math.prod(x.shape[i:i + n]))
    i += n
  x = x.reshape(dims)
  return x.T if lay.transpose else x


@jax.jit
def _layer_of(x, i):
  return jax.lax.dynamic_index_in_dim(x, i, keepdims=False)


def _to_host(x: jax.Array) -> np.ndarray:
  return np.asarray(distributed.to_host(x))


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

  from r1jax import tokenizer_kinds
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  if source:
    src = pathlib.Path(source)
    added = src / "added_tokens.json"
    listed = added.is_file() and isinstance(json.loads(added.read_text()), list)
    rewrite = isinstance(tokenizer, tokenizer_kinds.HFTokenizer) and (listed or not (src / "tokenizer.json").is_file())
    for name in TOKENIZER_FILES:
      if (src / name).is_file() and not (rewrite and name in ("tokenizer.json", "added_tokens.json")):
        shutil.copyfile(src / name, path / name)
    if rewrite:
      tokenizer._tok.save(str(path / "tokenizer.json"))
    if (src / "tokenizer_config.json").is_file():
      return
  special = tokenizer.special_tokens_map
  if isinstance(tokenizer, tokenizer_kinds.HFTokenizer):
    if not (path / "tokenizer.json").is_file():
      tokenizer._tok.save(str(path / "tokenizer.json"))
    conf = {"tokenizer_class": "PreTrainedTokenizerFast"}
  elif isinstance(tokenizer, tokenizer_kinds.SentencePieceTokenizer):
    shutil.copyfile(tokenizer.source, path / "tokenizer.model")
    # No EOS added on encode and no dummy prefix: the ids r1jax trained on; BOS as r1jax adds it.
    conf = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": tokenizer.add_bos, "add_eos_token": False,
            "add_prefix_space": False, "legacy": False, "unk_token": tokenizer.id_to_piece(tokenizer._sp.unk_id())}
  else:
    raise TypeError(f"cannot export a tokenizer of type {type(tokenizer).__name__}")
  if tokenizer.chat_template:
    conf["chat_template"] = tokenizer.chat_template
  (path / "tokenizer_config.json").write_text(json.dumps(conf | special, indent=2))
