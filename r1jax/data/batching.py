"""Deterministic, resumable prompt batches, and length buckets.

Epoch e visits the examples in the order `permutation(seed, e)`; a batch never straddles two
epochs (the short tail of an epoch is dropped, and lands elsewhere in the next epoch's order).
`DataPosition(epoch, index)` is the next batch's place; it is a tuple, so it is saved in JSON
checkpoint metadata as `[epoch, index]` and read back from that list.
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


class DataPosition(NamedTuple):
  """Where the next batch starts: `index` into epoch `epoch`'s permutation."""
  epoch: int = 0
  index: int = 0


def as_position(position) -> DataPosition:
  """None, a DataPosition, `[epoch, index]` (from JSON) or `{'epoch':, 'index':}`."""
  if position is None:
    return DataPosition()
  if isinstance(position, dict):
    return DataPosition(int(position["epoch"]), int(position["index"]))
  epoch, index = position
  return DataPosition(int(epoch), int(index))


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """The visiting order of epoch `epoch`: a permutation of range(num_examples)."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


def iterate_prompts(examples: Sequence[T], batch_size: int, seed: int,
                    start_position=None) -> Iterator[tuple[list[T], DataPosition]]:
  """Endless `(batch, position)`: `batch` holds `batch_size` examples; `position` is where the
  *next* batch starts, so saving it after a step and passing it back as `start_position`
  continues exactly as an uninterrupted run would."""
  n = len(examples)
  if batch_size < 1 or batch_size > n:
    raise ValueError(f"batch_size={batch_size} must lie in [1, {n}] (the number of examples)")
  epoch, index = as_position(start_position)
  per_epoch = n - n % batch_size
  if epoch < 0 or not 0 <= index <= per_epoch or index % batch_size:
    raise ValueError(f"start position (epoch={epoch}, index={index}) is not a batch boundary of these "
                     f"{n} examples with batch_size={batch_size}; was it saved for other data?")
  while True:
    if index >= per_epoch:
      epoch, index = epoch + 1, 0
    order = epoch_order(n, seed, epoch)
    while index < per_epoch:
      batch = [examples[i] for i in order[index:index + batch_size]]
      index += batch_size
      yield batch, DataPosition(epoch, index)


def bucket_length(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= n (padding to few distinct lengths bounds the number of compiles)."""
  if not buckets:
    raise ValueError("buckets is empty; give at least one length")
  if n < 0:
    raise ValueError(f"length {n} is negative")
  fit = [b for b in buckets if b >= n]
  if not fit:
    raise ValueError(f"length {n} exceeds the largest bucket {max(buckets)}; add a larger bucket "
                     "or shorten the input")
  return min(fit)
