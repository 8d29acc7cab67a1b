"""Reward functions `fn(completion, example) -> float`, and their parallel, time-limited evaluation.

A reward function is pure and picklable: a module-level function, or a `functools.partial` of one,
because it runs in a worker process that can be killed when it hangs. `example` is the dataset
row: at least 'final' (the reference answer); reasoning-gym rows carry 'rg_dataset' (the
registered dataset name) and 'rg_entry' (the generated entry), optionally 'rg_config'; code rows
carry 'tests' (`r1jax.rewards.code`) and are graded by running them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import numbers
import queue
import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from r1jax.rewards import answer
from r1jax.rewards import extraction
from r1jax.rewards import time_limit
from r1jax.rewards import code as code_lib
from r1jax.rewards import format as format_lib
from r1jax.rewards import language as language_lib

RewardFn = Callable[[str, dict], float]


@dataclasses.dataclass(frozen=True)
class RewardSpec:
  """One term of the total reward: total = sum over specs of weight * fn(completion, example)."""
  name: str
  """Key in the per-function outputs and in the logged metrics (`rewards/{name}/mean`)."""
  fn: RewardFn
  """Picklable (module-level function or a functools.partial of one)."""
  weight: float = 1.0


# ---------------------------------------------------------------- the standard reward functions

@functools.cache
def _rg_scorer(name: str, config_json: str) -> Callable[[str | None, dict], float]:
  # Heavy import (about a second), needed only for reasoning-gym data; cached per worker process.
  import reasoning_gym
  if config_json == "null":
    return reasoning_gym.get_score_answer_fn(name)
  return reasoning_gym.create_dataset(name, **json.loads(config_json)).score_answer


def reasoning_gym_reward(completion: str, example: dict) -> float:
  """The dataset's own `score_answer` on the extracted answer, in [0, 1] (partial credit possible)."""
  scorer = _rg_scorer(example["rg_dataset"], json.dumps(example.get("rg_config"), sort_keys=True))
  return float(scorer(extraction.extract_answer(completion), example["rg_entry"]))


def accuracy_reward(completion: str, example: dict, *, timeout_s: float = 2.0,
                    code: code_lib.CodeConfig = code_lib.CodeConfig(), extract: str = "tagged") -> float:
  """1.0 if the final answer is right (`answer.grade`), else 0.0; reasoning-gym rows use their
  dataset's scorer instead, and code rows the code checker (`code.grade`: the program passes
  its tests in the sandbox)."""
  if code_lib.is_code_example(example):
    return code_lib.grade(completion, example, code).score
  if "rg_dataset" in example:
    return reasoning_gym_reward(completion, example)
  return float(answer.grade(completion, str(example["final"]), timeout_s, extract).correct)


def format_reward(completion: str, example: dict, *, think_in_prompt: bool = False) -> float:
  """R1 format: 1.0 iff the completion is exactly `<think>...</think> <answer>...</answer>`."""
  del example
  return format_lib.strict_format(completion, think_in_prompt=think_in_prompt)


def tag_count_reward(completion: str, example: dict, *, think_in_prompt: bool = False) -> float:
  """open-r1's tag count: 0.25 per correctly counted tag."""
  del example
  return format_lib.tag_count(completion, think_in_prompt=think_in_prompt)


def language_reward(completion: str, example: dict, *, target: str = "en", k: float = 10.0) -> float:
  """Language consistency of the CoT; the example's own 'language' field overrides `target`."""
  return language_lib.language_consistency(completion, example.get("language") or target, k)


# ---------------------------------------------------------------- configuration

@dataclasses.dataclass(frozen=True)
class RewardsConfig:
  """Weights of the rule-based rewards (the experiment's `rewards` section)."""
  accuracy: float = 1.0
  """Weight of accuracy_reward (the final answer graded against the reference)."""
  format: float = 1.0
  """Weight of format_reward (strict R1 format)."""
  tag_count: float = 0.0
  """Weight of tag_count_reward (open-r1's 0.25 per correctly counted tag); 0 = not computed."""
  language: float = 0.0
  """Weight of the language-consistency mix; > 0 makes R = alpha*R_acc + (1-alpha)*R_lang."""
  language_alpha: float = 0.8
  """alpha of that mix (DeepSeek-R1: 0.8)."""
  language_target: str = "en"
  """Script or language code of the CoT ('en', 'zh', 'latin', 'cjk', ...)."""
  think_in_prompt: bool = False
  """True when the prompt already ends with <think>."""
  grade_timeout_s: float = 2.0
  """Limit of one math-verify comparison."""
  answer_extraction: str = "tagged"
  """How the accuracy reward finds the answer: 'tagged' (<answer> / \\boxed{}) or 'last_number'
  (that, else the last number: `extraction.EXTRACTIONS`)."""
  code_timeout_s: float = 10.0
  """Wall-clock limit of one program and all its tests (code rows)."""
  code_memory_mb: int = 1024
  """Address-space limit of a program (code rows)."""
  code_partial_credit: bool = False
  """Score a program whose tests ran by the fraction that passed (code rows)."""

  def __post_init__(self):
    if not 0.0 <= self.language_alpha <= 1.0:
      raise ValueError(f"rewards.language_alpha={self.language_alpha} must lie in [0, 1]")
    for f in ("accuracy", "format", "tag_count", "language"):
      if getattr(self, f) < 0:
        raise ValueError(f"rewards.{f}={getattr(self, f)} must be >= 0")
    for f in ("grade_timeout_s", "code_timeout_s", "code_memory_mb"):
      if getattr(self, f) <= 0:
        raise ValueError(f"rewards.{f}={getattr(self, f)} must be > 0")
    extraction.check_extraction(self.answer_extraction, "rewards.answer_extraction")
    if self.language > 0:
      language_lib.resolve_script(self.language_target)  # fail here, not as 0-scored errors in every worker


def default_specs(cfg: RewardsConfig | Mapping[str, Any]) -> list[RewardSpec]:
  """Reward specs from a RewardsConfig (or a dict of its fields).

  accuracy and format are always computed (weight 0 still logs them); tag_count and language only
  with a positive weight. With language weight w > 0 the accuracy weight is multiplied by alpha and
  the language weight is w * (1 - alpha), so w = accuracy = 1 gives R = 0.8 R_acc + 0.2 R_lang.
  """
  if not isinstance(cfg, RewardsConfig):
    known = {f.name for f in dataclasses.fields(RewardsConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
      raise ValueError(f"unknown rewards config keys {unknown}; allowed: {sorted(known)}")
    cfg = RewardsConfig(**cfg)
  alpha, tip = cfg.language_alpha, cfg.think_in_prompt
  acc_w, lang_w = cfg.accuracy, cfg.language
  if lang_w > 0:
    acc_w, lang_w = acc_w * alpha, lang_w * (1 - alpha)
  code_cfg = code_lib.CodeConfig.with_timeout(cfg.code_timeout_s, cfg.code_memory_mb, cfg.code_partial_credit)
  specs = [
      RewardSpec("accuracy", functools.partial(accuracy_reward, timeout_s=cfg.grade_timeout_s, code=code_cfg,
                                               extract=cfg.answer_extraction), acc_w),
      RewardSpec("format", functools.partial(format_reward, think_in_prompt=tip), cfg.format),
  ]
  if cfg.tag_count > 0:
    specs.append(RewardSpec("tag_count", functools.partial(tag_count_reward, think_in_prompt=tip), cfg.tag_count))
  if lang_w > 0:
    specs.append(RewardSpec("language", functools.partial(language_reward, target=cfg.language_target), lang_w))
  return specs


# ---------------------------------------------------------------- parallel evaluation

def _as_reward(value: Any) -> tuple[str, float | str]:
  if isinstance(value, numbers.Real) and math.isfinite(float(value)):
    return "ok", float(value)
  return "error", f"returned {value!r}, not a finite number"


def _code_config(fn: RewardFn) -> code_lib.CodeConfig | None:
  """The code settings of an accuracy reward (which grades code rows), None for any other function."""
  if getattr(fn, "func", fn) is not accuracy_reward:
    return None
  return getattr(fn, "keywords", {}).get("code", code_lib.CodeConfig())


def compute_rewards(completions: Sequence[str], examples: Sequence[dict], specs: Sequence[RewardSpec],
                    timeout_s: float = 5.0, num_workers: int = 4, code_workers: int = 0,
                    ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, dict[str, int]]]:
  """Scores B completions with every spec, in `num_workers` worker processes.

  Code rows (`code.is_code_example`) are graded for the accuracy reward in `code_workers`
  sandboxes at once (0: `code.default_workers()`), each its own process started from this one,
  under the sandbox's limits rather than `timeout_s`; the verdicts are counted in stats as
  'code_passed', 'code_failed', 'code_timeout', ... (present when the batch has code rows).

  Each call `fn(completion, example)` gets `timeout_s` seconds of wall clock (the worker is killed
  and replaced when it overruns). A call that raises, overruns or returns a non-finite / non-number
  scores 0 and is counted; this function does not raise for them. Workers start by forkserver
  (never a fork of the trainer), so a script calling this needs the `if __name__ == "__main__":`
  guard, as with any spawn-based multiprocessing.

  Returns:
    total_B: float64 [B], sum of weight * score.
    per_fn: name -> float64 [B] unweighted scores.
    stats: {'errors': {name: count}, 'timeouts': {name: count}}.
  """
  B, F = len(completions), len(specs)
  if len(examples) != B:
    raise ValueError(f"{B} completions but {len(examples)} examples; need one example per completion")
  names = [s.name for s in specs]
  if len(set(names)) != F:
    raise ValueError(f"reward spec names must be unique, got {names}")
  if timeout_s <= 0 or num_workers < 1:
    raise ValueError(f"timeout_s={timeout_s} must be > 0 and num_workers={num_workers} >= 1")

  score_FxB = np.zeros((F, B), np.float64)
  status_FxB = np.full((F, B), "ok", dtype=object)
  first_error: dict[int, str] = {}
  code_rows = [i for i in range(B) if code_lib.is_code_example(examples[i])]
  code_stats: dict[str, dict[str, int]] = {}
  pregraded = set()
  for j, spec in enumerate(specs):
    cfg = _code_config(spec.fn)
    if cfg is None or not code_rows:
      continue
    verdicts = code_lib.grade_many([completions[i] for i in code_rows], [examples[i] for i in code_rows], cfg,
                                   num_workers=code_workers)
    for i, v in zip(code_rows, verdicts):
      score_FxB[j, i] = v.score
      pregraded.add((j, i))
    for reason, count in code_lib.verdict_counts(verdicts).items():
      code_stats.setdefault(f"code_{reason}", {})[spec.name] = count
  tasks: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
  for i in range(B):
    for j in range(F):
      if (j, i) not in pregraded:
        tasks.put((j, i))

  def work():
    with time_limit.borrowed_sandbox() as box:
      while True:
        try:
          j, i = tasks.get_nowait()
        except queue.Empty:
          return
        try:
          status, value = box.call(specs[j].fn, (completions[i], examples[i]), timeout_s)
        except Exception as e:  # noqa: BLE001 - e.g. a worker that cannot start
          status, value = "error", f"{type(e).__name__}: {e}"
        if status == "ok":
          status, value = _as_reward(value)
        status_FxB[j, i] = status
        if status == "ok":
          score_FxB[j, i] = value
        elif status == "error":
          first_error.setdefault(j, str(value))

  threads = [threading.Thread(target=work, daemon=True) for _ in range(min(num_workers, B * F - len(pregraded)))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()

  for j, msg in first_error.items():
    logging.getLogger(__name__).warning("reward %r failed on %d of %d completions (scored 0), first: %s",
                                        names[j], int((status_FxB[j] == "error").sum()), B, msg)
  weights_F = np.array([s.weight for s in specs], np.float64)
  total_B = weights_F @ score_FxB if F else np.zeros(B)
  per_fn = {n: score_FxB[j] for j, n in enumerate(names)}
  stats = {key: {n: int((status_FxB[j] == status).sum()) for j, n in enumerate(names)}
           for key, status in (("errors", "error"), ("timeouts", "timeout"))}
  return total_B, per_fn, stats | code_stats
