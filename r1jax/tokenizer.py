"""One tokenizer interface over SentencePiece `.model` files and Hugging Face `tokenizer.json`.

`load_tokenizer(path)` accepts:
  * a SentencePiece model file (`*.model`),
  * a Hugging Face tokenizer file (`*.json`, or gzipped `*.json.gz`),
  * a directory holding `tokenizer.json`, `tokenizer.json.gz` or `tokenizer.model` (first found wins).
Beside the file it reads, when present, `tokenizer_config.json` (bos/eos/pad tokens, chat template,
`add_bos_token`, `added_tokens_decoder`), `chat_template.jinja` (where transformers 5 writes the chat
template), `special_tokens_map.json`, `added_tokens.json` and `generation_config.json` (its
`eos_token_id`, one id or a list: every one stops sampling, see `eos_ids`).

Each checkpoint's own token conventions, as transformers applies them: `add_bos` says whether the
tokenizer puts BOS in front of a text it encodes with special tokens (`tokenizer(text)`): the
config's `add_bos_token` where it names one, else what the `tokenizer.json` post-processor adds
(Llama-3: `<|begin_of_text|>`; Qwen2.5 and SmolLM2: nothing); a SentencePiece model adds its BOS
(as transformers' LlamaTokenizer does) unless the config says otherwise. A BOS *named* in a config
is not a reason to add one.

`encode` never adds special tokens unless asked (`add_bos=True`), and never parses special-token
text for SentencePiece (as `sentencepiece` itself does); Hugging Face files keep the `tokenizers`
rule that added tokens in the text (`<|im_end|>`) become their ids. `decode` drops ids outside
the vocabulary (the model's embedding table is often padded past the tokenizer's size).

`train_sentencepiece` builds a small byte-fallback model in-process for CPU experiments.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import pathlib
from typing import Iterable, Protocol, Sequence, runtime_checkable

import sentencepiece as spm
import tokenizers

from r1jax.tokenizer_kinds import HFTokenizer, SentencePieceTokenizer

ALLOWED = ("a SentencePiece '*.model' file", "a Hugging Face '*.json' or '*.json.gz' file",
           "a directory holding tokenizer.json, tokenizer.json.gz or tokenizer.model")
_DIR_FILES = ("tokenizer.json", "tokenizer.json.gz", "tokenizer.model")
REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


@runtime_checkable
class Tokenizer(Protocol):
  """What the rest of r1jax needs from a tokenizer."""
  vocab_size: int
  """Ids are in [0, vocab_size), added tokens included."""
  bos_id: int | None
  eos_id: int
  pad_id: int
  """The pad token if the tokenizer defines one, else eos."""
  chat_template: str | None
  """Jinja chat template from tokenizer_config.json or chat_template.jinja, if any."""
  add_bos: bool
  """Whether encoding a text with special tokens (transformers' `tokenizer(text)`) puts BOS first."""
  eos_ids: tuple[int, ...]
  """Every id that ends a generation: eos_id and generation_config.json's eos_token_id(s)."""

  def encode(self, text: str, add_bos: bool = False) -> list[int]: ...
  def encode_batch(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]: ...
  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str: ...
  def decode_batch(self, batch: Sequence[Sequence[int]], skip_special: bool = True) -> list[str]: ...
  def id_to_piece(self, i: int) -> str: ...
  def piece_to_id(self, piece: str) -> int | None: ...


def _token_str(v) -> str | None:
  """tokenizer_config.json stores a token as a string or as {"content": ...}."""
  if isinstance(v, dict):
    return v.get("content")
  return v


def _read_sidecars(folder: pathlib.Path) -> tuple[dict, list[dict]]:
  """(special token names and chat template, added tokens as dicts with 'id' and 'content')."""
  meta, added = {}, []
  for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the config wins
    f = folder / name
    if f.is_file():
      cfg = json.loads(f.read_text())
      for key in ("bos_token", "eos_token", "pad_token"):
        if key in cfg:
          meta[key] = _token_str(cfg[key])
      if isinstance(cfg.get("chat_template"), str):
        meta["chat_template"] = cfg["chat_template"]
      if isinstance(cfg.get("add_bos_token"), bool):
        meta["add_bos_token"] = cfg["add_bos_token"]
      for i, tok in cfg.get("added_tokens_decoder", {}).items():
        added.append({**tok, "id": int(i)})
  if "chat_template" not in meta and (folder / "chat_template.jinja").is_file():
    meta["chat_template"] = (folder / "chat_template.jinja").read_text()
  f = folder / "generation_config.json"
  if f.is_file():
    eos = json.loads(f.read_text()).get("eos_token_id")
    meta["generation_eos_ids"] = tuple(int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None)
  f = folder / "added_tokens.json"
  if f.is_file():
    data = json.loads(f.read_text())
    if isinstance(data, dict):  # the {"<tok>": id} form written by slow tokenizers
      data = [{"content": c, "id": i, "special": True} for c, i in data.items()]
    added.extend(data)
  return meta, added


def bos_prefix(tokenizer) -> list[int]:
  """[BOS] where the tokenizer's own rule puts it in front of an encoded text (`add_bos`), else []."""
  return [tokenizer.bos_id] if tokenizer.bos_id is not None and getattr(tokenizer, "add_bos", True) else []


def load_tokenizer(path: str | pathlib.Path, *, bos_token: str | None = None, eos_token: str | None = None,
                   pad_token: str | None = None) -> Tokenizer:
  """Load the tokenizer at `path` (see the module docstring for what is accepted).

  `bos_token` / `eos_token` / `pad_token` override what the files say (e.g. '<|im_end|>' as EOS
  for an instruct model).
  """
  p = pathlib.Path(path)
  if not p.exists():
    raise FileNotFoundError(f"tokenizer path {str(p)!r} does not exist; expected one of: {'; '.join(ALLOWED)}")
  if p.is_dir():
    found = [p / n for n in _DIR_FILES if (p / n).is_file()]
    if not found:
      raise FileNotFoundError(f"directory {str(p)!r} holds none of {_DIR_FILES}")
    p = found[0]
  meta, added = _read_sidecars(p.parent)
  for key, value in (("bos_token", bos_token), ("eos_token", eos_token), ("pad_token", pad_token)):
    if value is not None:
      meta[key] = value
  name = p.name.lower()
  if name.endswith(".model"):
    return SentencePieceTokenizer(p, meta)
  if name.endswith(".json.gz"):
    with gzip.open(p, "rt", encoding="utf-8") as f:
      return HFTokenizer(tokenizers.Tokenizer.from_str(f.read()), meta, added, str(p))
  if name.endswith(".json"):
    return HFTokenizer(tokenizers.Tokenizer.from_file(str(p)), meta, added, str(p))
  raise ValueError(f"cannot tell the tokenizer format of {str(p)!r}; expected one of: {'; '.join(ALLOWED)}")


def train_sentencepiece(texts: Iterable[str], vocab_size: int, out_path: str | pathlib.Path,
                        user_defined_symbols: Sequence[str] = REASONING_TAGS, *, model_type: str = "unigram",
                        pad_id: int = 0, unk_id: int = 1, bos_id: int = 2, eos_id: int = 3,
                        split_digits: bool = True, max_sentence_length: int = 1 << 16,
                        num_threads: int = 1) -> SentencePieceTokenizer:
  """Train a SentencePiece model on `texts`, write it to `out_path`, and load it.

  Byte fallback makes any UTF-8 text round-trip; identity normalization, no extra-whitespace
  removal and no dummy prefix make decode(encode(s)) == s exactly and decode(a + b) ==
  decode(a) + decode(b). `user_defined_symbols` (the R1 tags) are always single tokens.
  One thread and no input sampling make two runs on the same texts give the same model.
  `vocab_size` must leave room past the 256 byte pieces, the 4 special ids and the symbols; if
  the corpus is too small for it, the model comes out smaller (read `.vocab_size`).
  """
  floor = 256 + 4 + len(user_defined_symbols)
  if vocab_size <= floor:
    raise ValueError(f"vocab_size={vocab_size} must exceed {floor} (256 byte pieces + 4 special ids + "
                     f"{len(user_defined_symbols)} user symbols)")
  if model_type not in ("unigram", "bpe"):
    raise ValueError(f"model_type={model_type!r} is not one of ('unigram', 'bpe')")
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type=model_type,
      user_defined_symbols=list(user_defined_symbols), byte_fallback=True, character_coverage=1.0,
      normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
      split_digits=split_digits, allow_whitespace_only_pieces=True, hard_vocab_limit=False,
      pad_id=pad_id, unk_id=unk_id, bos_id=bos_id, eos_id=eos_id, input_sentence_size=0,
      shuffle_input_sentence=False, max_sentence_length=max_sentence_length, num_threads=num_threads,
      minloglevel=2)
  out = pathlib.Path(out_path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_bytes(model.getvalue())
  return SentencePieceTokenizer(out)


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """Which tokenizer an experiment uses (a Hugging Face checkpoint's own tokenizer wins)."""
  path: str = ""
  """A tokenizer.json / tokenizer.model file or a folder holding one; '' trains a SentencePiece
  model on the experiment's corpus (cached in <workdir>/base)."""
  vocab_size: int = 800
  """Size of the trained SentencePiece vocabulary."""
  model_type: str = "bpe"
  """SentencePiece algorithm of the trained tokenizer: 'bpe' or 'unigram'."""

  def __post_init__(self):
    if self.vocab_size < 8:
      raise ValueError(f"tokenizer.vocab_size={self.vocab_size} must be >= 8")
    if self.model_type not in ("bpe", "unigram"):
      raise ValueError(f"tokenizer.model_type={self.model_type!r} is not one of ('bpe', 'unigram')")
