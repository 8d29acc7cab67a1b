"""A Hugging Face checkpoint's files: safetensors read and written, tensors looked up across the
shards of an index, and a check that the files are whole before any work.

The safetensors files are read and written with a small local codec (8-byte header length, JSON
header, raw little-endian bytes) rather than `safetensors.safe_open`: its numpy framework cannot
produce bfloat16, and the torch/flax ones would add a runtime dependency or a device copy.
"""
from __future__ import annotations

import json
import math
import pathlib
import struct
from typing import Callable

import jax
import ml_dtypes
import numpy as np

from r1jax import errors


_ST_TO_NP = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16),
             "F64": np.dtype("<f8")}
_NP_TO_ST = {v: k for k, v in _ST_TO_NP.items()}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


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
