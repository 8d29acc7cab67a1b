"""SFT rows: a prompt and its completion tokenized with a loss mask on the completion only, packed
several to a row (each in its own attention segment), and shuffled batches over epochs.

A row's arrays (T tokens): tokens, mask (real tokens), loss_mask (tokens to learn: the completion
and its EOS, never the prompt), segments (example id within the row, -1 for padding), positions
(RoPE positions counted from each example's first token).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from r1jax import tokenizer as tok_lib


def encode(pairs: Sequence[tuple[str, str]], tokenizer, max_len: int) -> tuple[list[tuple[list[int], list[bool]]], int]:
  """(prompt, completion) texts -> [(ids, loss_mask)]: BOS + prompt + completion + EOS, the loss on
  completion + EOS. Pairs longer than `max_len` tokens are dropped; returns (rows, dropped)."""
  prompts = tokenizer.encode_batch([p for p, _ in pairs])
  completions = tokenizer.encode_batch([c for _, c in pairs])
  bos = tok_lib.bos_prefix(tokenizer)
  out, dropped = [], 0
  for p, c in zip(prompts, completions):
    ids = bos + list(p) + list(c) + [tokenizer.eos_id]
    if len(ids) > max_len:
      dropped += 1
      continue
    n_prompt = len(bos) + len(p)
    out.append((ids, [False] * n_prompt + [True] * (len(ids) - n_prompt)))
  return out, dropped


def pack(rows: Sequence[tuple[list[int], list[bool]]], seq_len: int, pad_id: int, packing: bool = True) -> dict:
  """Rows of `seq_len` tokens: examples placed first-fit in order (packing) or one per row."""
  bins: list[list[int]] = []
  used: list[int] = []
  for i, (ids, _) in enumerate(rows):
    if len(ids) > seq_len:
      raise ValueError(f"SFT example {i} has {len(ids)} tokens, more than the row length {seq_len}")
    j = next((j for j, u in enumerate(used) if u + len(ids) <= seq_len), None) if packing else None
    if j is None:
      bins.append([])
      used.append(0)
      j = len(bins) - 1
    bins[j].append(i)
    used[j] += len(ids)
  R = len(bins)
  out = {"tokens": np.full((R, seq_len), pad_id, np.int32), "mask": np.zeros((R, seq_len), bool),
         "loss_mask": np.zeros((R, seq_len), bool), "segments": np.full((R, seq_len), -1, np.int32),
         "positions": np.zeros((R, seq_len), np.int32)}
  for r, members in enumerate(bins):
    t = 0
    for s, i in enumerate(members):
      ids, lm = rows[i]
      n = len(ids)
      out["tokens"][r, t:t + n] = ids
      out["mask"][r, t:t + n] = True
      out["loss_mask"][r, t:t + n] = lm
      out["segments"][r, t:t + n] = s
      out["positions"][r, t:t + n] = np.arange(n)
      t += n
  return out


def batches(num_rows: int, batch_size: int, epochs: int, seed: int, start: int = 0) -> Iterator[np.ndarray]:
  """Row indices of every step: each epoch a fresh permutation, cut into full batches (the last
  partial batch is topped up from the epoch's start). Step `start` onward (resume)."""
  per_epoch = max(-(-num_rows // batch_size), 1)
  for step in range(start, epochs * per_epoch):
    e, b = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, e]).permutation(num_rows)
    idx = np.arange(b * batch_size, (b + 1) * batch_size) % num_rows
    yield perm[idx]


def steps_per_epoch(num_rows: int, batch_size: int) -> int:
  return max(-(-num_rows // batch_size), 1)


def pack_documents(docs, tokenizer, seq_len: int):
  """Tokenize documents (BOS ... EOS) and pack the stream into full rows of `seq_len` tokens,
  so no compute goes to padding (documents may straddle rows, as in GPT pretraining)."""
  stream = []
  for ids in tokenizer.encode_batch(docs):
    stream += tok_lib.bos_prefix(tokenizer) + list(ids) + [tokenizer.eos_id]
  n = len(stream) // seq_len
  toks = np.asarray(stream[:n * seq_len], np.int32).reshape(n, seq_len)
  return toks, np.ones_like(toks, bool)
