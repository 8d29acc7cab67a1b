"""reasoning-gym tasks -> examples that carry what the task's own verifier needs.

Each example stores `rg_dataset` (the registered name) and `rg_entry` (the generated entry,
made JSON-plain so it survives checkpoints, logs and worker processes); with extra options it
also stores `rg_config`, so the scorer is rebuilt with the same options
(`r1jax.rewards.combine.reasoning_gym_reward`).
"""
from __future__ import annotations

import difflib
import json
from typing import Callable

from r1jax.data.config import DataConfig


def _json_plain(x):
  """Tuples to lists and so on, exactly as a JSON round trip would leave them."""
  return json.loads(json.dumps(x))


def load_reasoning_gym(cfg: DataConfig) -> list[dict]:
  """`cfg.rg_size` examples of each task in `cfg.rg_tasks`, generated with `cfg.seed`,
  interleaved round-robin so any prefix (`max_examples`) mixes the tasks."""
  import reasoning_gym  # about a second to import; only this source needs it
  from reasoning_gym.factory import DATASETS

  per_task = []
  for name in cfg.rg_tasks:
    if name not in DATASETS:
      close = difflib.get_close_matches(name, DATASETS, n=3)
      raise ValueError(f"data.rg_tasks has {name!r}, not a reasoning-gym dataset"
                       + (f"; did you mean {close}?" if close else f"; known: {sorted(DATASETS)}"))
    kwargs = cfg.rg_kwargs.get(name, {})
    try:
      ds = reasoning_gym.create_dataset(name, size=cfg.rg_size, seed=cfg.seed, **kwargs)
    except TypeError as e:  # an unknown option of that dataset's config
      raise ValueError(f"data.rg_kwargs[{name!r}]={kwargs}: {e}") from None
    rows = []
    for i, entry in enumerate(ds):
      ex = {"id": f"rg/{name}/{cfg.seed}/{i}", "question": entry["question"], "final": str(entry["answer"]),
            "rg_dataset": name, "rg_entry": _json_plain(entry)}
      if kwargs:
        ex["rg_config"] = _json_plain(dict(kwargs, size=cfg.rg_size, seed=cfg.seed))
      rows.append(ex)
    per_task.append(rows)
  examples = [rows[i] for i in range(cfg.rg_size) for rows in per_task]
  return examples[:cfg.max_examples] if cfg.max_examples else examples


def scorer(example: dict) -> Callable[[str | None, dict], float]:
  """The example's own reasoning-gym `score_answer(answer, entry) -> float in [0, 1]`."""
  import reasoning_gym
  if example.get("rg_config"):
    return reasoning_gym.create_dataset(example["rg_dataset"], **example["rg_config"]).score_answer
  return reasoning_gym.get_score_answer_fn(example["rg_dataset"])
