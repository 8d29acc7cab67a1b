"""DAPO dynamic sampling (DAPO sec. 3.2), host side, NumPy.

A group whose G rewards are all equal has zero advantage for every row and so no gradient; DAPO
drops such groups and samples more prompts until the batch holds the requested number of
informative groups: 0 < |{o_i : correct}| < G. Rows are grouped contiguously (prompt i's samples
are rows i*G .. i*G+G-1). Shape letters: B rows, P groups (prompts), G group size.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np


def keep_groups_mask(rewards_B, group_size: int) -> np.ndarray:
  """keep_P: True for groups whose rewards are not all equal (they carry a learning signal)."""
  r_B = np.asarray(rewards_B)
  if r_B.ndim != 1 or group_size < 1 or r_B.shape[0] % group_size:
    raise ValueError(f"rewards of shape {r_B.shape} do not split into groups of group_size={group_size}")
  r_PxG = r_B.reshape(-1, group_size)
  return r_PxG.max(axis=1) > r_PxG.min(axis=1)


def _concat(parts: list):
  if isinstance(parts[0], np.ndarray):
    return np.concatenate(parts, axis=0)
  return [item for part in parts for item in part]


class GroupBuffer:
  """Accumulates informative groups over generation rounds until `num_groups` are held.

  Usage:
    buf = GroupBuffer(num_groups=P, group_size=G)
    while not buf.ready and rounds_left:
      buf.add({"tokens": tokens_BxT, "logp": logp_BxN, "texts": texts}, rewards_B)
    batch, stats = buf.take(allow_uninformative=True)

  `add` takes a dict of per-row values (NumPy arrays with B rows on axis 0, or lists of B items)
  and the rows' rewards; `take` returns exactly num_groups * G rows, informative groups in the
  order they were drawn (then any top-up), rewards under 'rewards', and empties the buffer.
  Kept groups beyond num_groups are discarded (their old log-probs would be stale next step) and
  counted.
  """

  def __init__(self, num_groups: int, group_size: int):
    if num_groups < 1 or group_size < 1:
      raise ValueError(f"num_groups={num_groups} and group_size={group_size} must be >= 1")
    self.num_groups = num_groups
    self.group_size = group_size
    self._reset()

  def _reset(self):
    self._kept: list[dict[str, Any]] = []
    self._dropped: list[dict[str, Any]] = []
    self._keys: tuple[str, ...] | None = None
    self._stats = {"rounds": 0, "groups_drawn": 0, "groups_kept": 0, "groups_dropped": 0}

  @property
  def num_kept(self) -> int:
    """Informative groups held so far."""
    return len(self._kept)

  @property
  def ready(self) -> bool:
    """True once at least num_groups informative groups are held."""
    return len(self._kept) >= self.num_groups

  def add(self, rows: Mapping[str, Any], rewards_B) -> int:
    """Add one generation round; returns how many of its groups were kept."""
    if "rewards" in rows:
      raise ValueError("rows must not hold a 'rewards' entry: pass the rewards as rewards_B")
    rewards_B = np.asarray(rewards_B)
    keep_P = keep_groups_mask(rewards_B, self.group_size)
    B, G = rewards_B.shape[0], self.group_size
    keys = tuple(sorted(rows))
    if self._keys is not None and keys != self._keys:
      raise ValueError(f"round {self._stats['rounds'] + 1} has fields {keys}, earlier rounds {self._keys}")
    self._keys = keys
    for k, v in rows.items():
      if len(v) != B:
        raise ValueError(f"rows[{k!r}] has {len(v)} rows, rewards_B has {B}")
    rows = dict(rows, rewards=rewards_B)
    for p, keep in enumerate(keep_P):
      group = {k: v[p * G:(p + 1) * G] for k, v in rows.items()}
      if keep:
        self._kept.append(group)
      elif len(self._dropped) < self.num_groups:
        self._dropped.append(group)
    self._stats["rounds"] += 1
    self._stats["groups_drawn"] += len(keep_P)
    self._stats["groups_kept"] += int(keep_P.sum())
    self._stats["groups_dropped"] += int((~keep_P).sum())
    return int(keep_P.sum())

  def take(self, allow_uninformative: bool = False) -> tuple[dict[str, Any], dict[str, int]]:
    """The first num_groups kept groups as one batch of num_groups * G rows, and statistics.

    Args:
      allow_uninformative: when fewer than num_groups informative groups were found (e.g. the
        round budget ran out), top up with the first dropped groups instead of raising.

    Returns:
      (batch, stats): batch maps each field (and 'rewards') to its rows; stats has rounds,
      groups_drawn, groups_kept, groups_dropped, groups_surplus (kept but not returned) and
      groups_uninformative (dropped groups used to top up).
    """
    groups = self._kept[:self.num_groups]
    missing = self.num_groups - len(groups)
    if missing and not allow_uninformative:
      raise ValueError(f"only {len(groups)} of {self.num_groups} informative groups after "
                       f"{self._stats['rounds']} rounds; add more rounds or pass allow_uninformative=True")
    if missing > len(self._dropped):
      raise ValueError(f"only {len(groups) + len(self._dropped)} groups drawn, {self.num_groups} needed")
    groups = groups + self._dropped[:missing]
    batch = {k: _concat([g[k] for g in groups]) for k in groups[0]}
    stats = dict(self._stats, groups_surplus=max(len(self._kept) - self.num_groups, 0),
                 groups_uninformative=missing)
    self._reset()
    return batch, stats
