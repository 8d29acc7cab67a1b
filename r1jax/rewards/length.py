"""DAPO soft overlong punishment (arXiv 2503.14476, "overlong reward shaping"), in TOKENS.

With L the completion length in tokens, Lmax the maximum length and C the buffer:
    R(L) = 0                    if L <= Lmax - C
         = (Lmax - C - L) / C   if Lmax - C < L <= Lmax   (linear from 0 down to -1)
         = -1                   if L > Lmax
It needs token counts, which a text reward `fn(completion, example)` does not see: the trainer
adds `weight * soft_overlong_punishment(length_B, ...)` to the total reward.
"""
from __future__ import annotations

import numpy as np


def soft_overlong_punishment(length_B, max_length: int, buffer: int) -> np.ndarray:
  """Per-completion penalty in [-1, 0]; `length_B` in tokens (any shape, int or float)."""
  if not 0 < buffer <= max_length:
    raise ValueError(f"overlong buffer={buffer} must satisfy 0 < buffer <= max_length={max_length}")
  L = np.asarray(length_B, dtype=np.float64)
  inside = (max_length - buffer - L) / buffer
  return np.where(L <= max_length - buffer, 0.0, np.where(L <= max_length, inside, -1.0))
