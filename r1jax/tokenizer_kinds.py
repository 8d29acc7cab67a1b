"""The two tokenizers behind `r1jax.tokenizer.Tokenizer`: a SentencePiece model and a Hugging Face
`tokenizers` file, each with the ids of its own library, and the choice of special tokens they
share (the token conventions they follow: `r1jax.tokenizer`'s docstring).
"""
from __future__ import annotations

import pathlib
import re
from typing import Sequence

import sentencepiece as spm
import tokenizers

# Used only when no config names the token. Order matters: a base model's end-of-text comes first.
_EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eot_id|>", "<|im_end|>")
_BOS_NAMES = ("<s>", "<|begin_of_text|>", "<bos>")
_PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>")


def _pick(name: str, configured: str | None, candidates: Sequence[str], lookup, where: str) -> int | None:
  """Id of the configured token (which must exist), else of the first candidate present."""
  if configured is not None:
    i = lookup(configured)
    if i is None:
      raise ValueError(f"{name}={configured!r} (from {where}) is not in the vocabulary")
    return i
  for c in candidates:
    i = lookup(c)
    if i is not None:
      return i
  return None


class _Base:
  """Shared batch helpers and special-id selection."""
  vocab_size: int
  bos_id: int | None
  eos_id: int
  pad_id: int
  chat_template: str | None = None
  add_bos: bool = False
  eos_ids: tuple[int, ...] = ()

  def _set_special(self, meta: dict, where: str) -> None:
    lookup = self.piece_to_id
    self.bos_id = self.bos_id if "bos_token" not in meta else _pick("bos_token", meta["bos_token"], (), lookup, where)
    eos = _pick("eos_token", meta.get("eos_token"), (), lookup, where) if meta.get("eos_token") else self.eos_id
    if eos is None:
      raise ValueError(f"{where}: no end-of-sequence token found (looked for {_EOS_NAMES}); pass "
                       "eos_token='...' to load_tokenizer so the sampler can stop")
    self.eos_id = eos
    pad = _pick("pad_token", meta.get("pad_token"), (), lookup, where) if meta.get("pad_token") else self.pad_id
    self.pad_id = eos if pad is None else pad
    self.chat_template = meta.get("chat_template")
    self.add_bos = bool(meta.get("add_bos_token", self.add_bos)) and self.bos_id is not None
    extra = [int(i) for i in meta.get("generation_eos_ids", ()) if 0 <= int(i) < self.vocab_size]
    self.eos_ids = tuple(dict.fromkeys([self.eos_id] + extra))

  @property
  def special_tokens_map(self) -> dict[str, str]:
    """bos/eos/pad token strings, as Hugging Face passes them to chat templates."""
    out = {"eos_token": self.id_to_piece(self.eos_id), "pad_token": self.id_to_piece(self.pad_id)}
    if self.bos_id is not None:
      out["bos_token"] = self.id_to_piece(self.bos_id)
    return out

  def decode_batch(self, batch: Sequence[Sequence[int]], skip_special: bool = True) -> list[str]:
    """Decode each row of `batch`."""
    return [self.decode(ids, skip_special) for ids in batch]

  def encode_rendered(self, text: str) -> list[int]:
    """Ids of a rendered chat template, whose special-token text (`<s>`) becomes its id as in
    transformers. SentencePiece text between special tokens keeps its dummy prefix (transformers'
    non-legacy Llama tokenizer drops it there), so such prompts can differ after a special token."""
    specials = sorted(set(self.special_tokens_map.values()), key=len, reverse=True)
    out = []
    for part in re.split("(" + "|".join(map(re.escape, specials)) + ")", text):
      if part in specials:
        out.append(self.piece_to_id(part))
      elif part:
        out += self.encode(part)
    return out

  def _check_id(self, i: int) -> int:
    if not 0 <= i < self.vocab_size:
      raise IndexError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
    return int(i)

  def __repr__(self) -> str:
    return (f"{type(self).__name__}({self.source!r}, vocab_size={self.vocab_size}, bos_id={self.bos_id}, "
            f"eos_id={self.eos_id}, pad_id={self.pad_id})")


class SentencePieceTokenizer(_Base):
  """A SentencePiece model; ids are exactly `sentencepiece.SentencePieceProcessor`'s."""

  def __init__(self, model: str | pathlib.Path | bytes, meta: dict | None = None, source: str = "<bytes>"):
    if isinstance(model, bytes):
      self._sp = spm.SentencePieceProcessor(model_proto=model)
    else:
      source = str(model)
      self._sp = spm.SentencePieceProcessor(model_file=source)
    self.source = source
    self.vocab_size = self._sp.get_piece_size()
    self.bos_id = self._sp.bos_id() if self._sp.bos_id() >= 0 else None
    self.eos_id = self._sp.eos_id() if self._sp.eos_id() >= 0 else None
    self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else None
    self.add_bos = True  # transformers' LlamaTokenizer default; tokenizer_config.json's add_bos_token wins
    self._set_special(meta or {}, source)
    self._control = {i for i in range(self.vocab_size) if self._sp.is_control(i)}

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    """Token ids of `text`, with BOS first if asked and defined."""
    return self.encode_batch([text], add_bos)[0]

  def encode_batch(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
    """Token ids of each text, encoded on all cores."""
    out = self._sp.encode(list(texts))
    if add_bos and self.bos_id is not None:
      out = [[self.bos_id] + ids for ids in out]
    return out

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    """Text of `ids`. Control tokens (bos/eos/pad) are dropped, or written as their piece."""
    ids = [int(i) for i in ids if 0 <= i < self.vocab_size]
    if skip_special:
      return self._sp.decode(ids)
    parts, run = [], []
    for i in ids:
      if i in self._control:
        parts += [self._sp.decode(run), self._sp.id_to_piece(i)]
        run = []
      else:
        run.append(i)
    return "".join(parts + [self._sp.decode(run)])

  def id_to_piece(self, i: int) -> str:
    """The vocabulary piece of id `i` (SentencePiece spelling, e.g. '▁the')."""
    return self._sp.id_to_piece(self._check_id(i))

  def piece_to_id(self, piece: str) -> int | None:
    """Id of a vocabulary piece, None if absent."""
    i = self._sp.piece_to_id(piece)
    return None if i == self._sp.unk_id() and piece != self._sp.id_to_piece(i) else i


class HFTokenizer(_Base):
  """A Hugging Face `tokenizers` tokenizer; ids are exactly `tokenizers.Tokenizer`'s."""

  def __init__(self, tok: tokenizers.Tokenizer, meta: dict | None = None, added: Sequence[dict] = (),
               source: str = "<tokenizer>"):
    self._tok = tok
    self.source = source
    _add_tokens(tok, added, source)
    self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
    # Guess only among added tokens: Qwen's vocabulary holds '<s>' as ordinary text.
    added_ids = {t.content: i for i, t in tok.get_added_tokens_decoder().items()}
    lookup = added_ids.get
    self.bos_id = _pick("bos_token", None, _BOS_NAMES, lookup, source)
    self.eos_id = _pick("eos_token", None, _EOS_NAMES, lookup, source)
    self.pad_id = _pick("pad_token", None, _PAD_NAMES, lookup, source)
    self._set_special(meta or {}, source)
    if "add_bos_token" not in (meta or {}):  # the post-processor's rule, for the BOS finally chosen
      self.add_bos = _adds_bos_first(tok, self.bos_id)

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    """Token ids of `text` (no post-processor), with BOS first if asked and defined."""
    return self.encode_batch([text], add_bos)[0]

  def encode_batch(self, texts: Sequence[str], add_bos: bool = False) -> list[list[int]]:
    """Token ids of each text, encoded in parallel by the Rust library."""
    out = [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]
    if add_bos and self.bos_id is not None:
      out = [[self.bos_id] + ids for ids in out]
    return out

  def encode_rendered(self, text: str) -> list[int]:
    """Ids of a rendered chat template: `tokenizers` turns added-token text into its ids itself."""
    return self.encode(text)

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    """Text of `ids`; special added tokens are dropped unless `skip_special=False`."""
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

  def decode_batch(self, batch: Sequence[Sequence[int]], skip_special: bool = True) -> list[str]:
    """Decode each row of `batch` in parallel."""
    return self._tok.decode_batch([[int(i) for i in ids] for ids in batch], skip_special_tokens=skip_special)

  def id_to_piece(self, i: int) -> str:
    """The vocabulary token of id `i` (byte-level spelling, e.g. 'Ġthe')."""
    return self._tok.id_to_token(self._check_id(i))

  def piece_to_id(self, piece: str) -> int | None:
    """Id of a vocabulary token, None if absent."""
    return self._tok.token_to_id(piece)


def _adds_bos_first(tok: tokenizers.Tokenizer, bos_id: int | None) -> bool:
  """Whether the tokenizer's post-processor puts `bos_id` in front of an encoded text."""
  if bos_id is None:
    return False
  probe = "a"
  plain = tok.encode(probe, add_special_tokens=False).ids
  full = tok.encode(probe, add_special_tokens=True).ids
  return len(full) > len(plain) and full[0] == bos_id and full[0] not in plain[:1]


def _add_tokens(tok: tokenizers.Tokenizer, added: Sequence[dict], source: str) -> None:
  """Add tokens listed beside the file, each at the id the file gives it, or fail."""
  seen = set()
  for t in sorted(added, key=lambda t: int(t["id"])):
    content, want = t["content"], int(t["id"])
    if (content, want) in seen:
      continue
    seen.add((content, want))
    have = tok.token_to_id(content)
    if have is not None:
      if have != want:
        raise ValueError(f"{source}: added token {content!r} is listed with id {want} but the vocabulary has {have}")
      continue
    if want != tok.get_vocab_size(with_added_tokens=True):
      raise ValueError(f"{source}: added token {content!r} wants id {want}, but the next free id is "
                       f"{tok.get_vocab_size(with_added_tokens=True)}; added ids must be contiguous")
    at = tokenizers.AddedToken(content, single_word=t.get("single_word", False), lstrip=t.get("lstrip", False),
                               rstrip=t.get("rstrip", False), normalized=t.get("normalized", False),
                               special=t.get("special", True))
    (tok.add_special_tokens if t.get("special", True) else tok.add_tokens)([at])
