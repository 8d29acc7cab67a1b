"""Groups of scored completions, GRPO's unit of data: the prompts of a step drawn from a resumable
shuffled stream (`iterate_prompts`), G completions sampled for each and scored by the reward terms
(`GroupCollector`), with DAPO's dynamic sampling over rounds of prompts.

What GRPO, rejection sampling and evaluation-style scoring share.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np

from r1jax.sampling import rollout as rollout_lib
from r1jax.rl.config import TrainConfig
from r1jax.rl.dynamic_sampling import GroupBuffer
from r1jax.rewards import combine
from r1jax.rewards import length as length_lib


@dataclasses.dataclass
class Groups:
  """G scored completions for each of B prompts: R = B * G rows, prompt-major."""
  idx: list[int]
  """The prompts' indices into the collector's examples (B)."""
  rollout: rollout_lib.Rollout
  total: np.ndarray
  """Total reward per row (R)."""
  per_fn: dict[str, np.ndarray]
  """Unweighted score of every reward term per row."""
  stats: dict
  """Reward errors and timeouts per term."""
  rounds: int = 1
  group_stats: dict = dataclasses.field(default_factory=dict)
  t_gen: float = 0.0
  t_rew: float = 0.0


@dataclasses.dataclass(frozen=True)
class GroupCollector:
  """Sample G completions per prompt and score them: what GRPO, rejection sampling and
  evaluation-style scoring share. `prompt_ids[i]` is `examples[i]`'s tokenized prompt."""
  model_cfg: Any
  scfg: Any
  tokenizer: Any
  examples: Sequence[dict]
  prompt_ids: Sequence[Sequence[int]]
  reward_specs: Sequence[combine.RewardSpec]
  tcfg: TrainConfig
  max_completion_length: int
  extra_rewards: Sequence[tuple[str, Callable, float]] = ()
  """(name, fn(rollout, examples) -> scores_R, weight): rewards that are not `str -> float`
  functions, e.g. a reward model's scores."""

  def score(self, ro: rollout_lib.Rollout, idx: Sequence[int]):
    """(total_R, per_fn, stats) for the rows of `ro`, whose prompts are examples[idx]."""
    tcfg, G = self.tcfg, self.scfg.num_samples
    examples = self.examples
    exs = [examples[i] for i in idx for _ in range(G)]
    total, per_fn, stats = combine.compute_rewards(ro.texts, exs, self.reward_specs, timeout_s=tcfg.reward_timeout_s,
                                                   num_workers=tcfg.reward_workers)
    for name, fn, weight in self.extra_rewards:
      per_fn[name] = np.asarray(fn(ro, exs), np.float64)
      total = total + weight * per_fn[name]
    if tcfg.overlong_weight:
      per_fn["overlong"] = length_lib.soft_overlong_punishment(ro.length, self.max_completion_length,
                                                               tcfg.overlong_buffer)
      total = total + tcfg.overlong_weight * per_fn["overlong"]
    return total, per_fn, stats

  def sample(self, params, idx: Sequence[int], key) -> rollout_lib.Rollout:
    return rollout_lib.sample(params, [self.prompt_ids[i] for i in idx], key, self.model_cfg, self.scfg,
                              self.tokenizer, batch_size=self.tcfg.prompts_per_step, chunks=self.tcfg.rollout_chunks)

  def collect(self, params, it, key, dynamic_sampling: bool = False) -> tuple[Groups, dict]:
    """One batch of groups from the prompt iterator `it`; with dynamic sampling, rounds of
    prompts until prompts_per_step groups carry signal (DAPO). Returns (groups, data position)."""
    tcfg, G = self.tcfg, self.scfg.num_samples
    buf = GroupBuffer(tcfg.prompts_per_step, G) if dynamic_sampling else None
    group_stats = {}
    t_gen = t_rew = 0.0
    rounds = 0
    while True:
      idx, position = next(it)
      ta = time.perf_counter()
      ro = self.sample(params, idx, jax.random.fold_in(key, rounds))
      tb = time.perf_counter()
      total, per_fn, stats = self.score(ro, idx)
      t_gen += tb - ta
      t_rew += time.perf_counter() - tb
      rounds += 1
      if buf is None:
        break
      buf.add(ro.rows(G) | {"idx": np.repeat(idx, G)} | {f"reward/{k}": v for k, v in per_fn.items()}, total)
      if buf.ready or rounds >= tcfg.max_sampling_rounds:
        # The first prompts_per_step informative groups across rounds (topped up if too few).
        rows, group_stats = buf.take(allow_uninformative=True)
        ro = rollout_lib.Rollout.from_rows(rows, G, self.scfg.pad_id)
        idx, total = list(rows["idx"][::G]), rows["rewards"]
        per_fn = {k[len("reward/"):]: v for k, v in rows.items() if k.startswith("reward/")}
        break
    return Groups(list(idx), ro, total, per_fn, stats, rounds, group_stats, t_gen, t_rew), position


def iterate_prompts(num_examples: int, batch_size: int, seed: int, position: dict):
  """Yield (indices, position after them): shuffled epochs, resumable from a saved position.

  position = {'epoch': e, 'index': i} means epoch e's permutation has been consumed up to i.
  """
  e, i = int(position["epoch"]), int(position["index"])
  while True:
    perm = np.random.default_rng([seed, e]).permutation(num_examples)
    while i + batch_size <= num_examples:
      i += batch_size
      yield [int(x) for x in perm[i - batch_size:i]], {"epoch": e, "index": i}
    e, i = e + 1, 0
