"""`DataConfig`: where examples come from and how a source's fields map onto an example.

An example is a plain dict:
  id        str, unique within a dataset
  question  str, the problem text the policy sees
  final     str, the reference final answer the reward checks
  solution  str, optional worked reasoning (SFT, pretraining text)
  subject, level              optional, copied when the source has them
  rg_dataset, rg_entry        reasoning-gym only: what that dataset's own `score_answer` needs
  rg_config                   reasoning-gym only, when the dataset was built with extra options
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

SOURCES = ("jsonl", "reasoning_gym", "synthetic", "tfds")
ON_BAD_LINE = ("fail", "skip")
ANSWER_FORMATS = ("plain", "boxed", "gsm8k")
SYNTHETIC_SPLITS = ("train", "eval")

# Field names of known files. 'gsm8k' and 'aime' match the shared data files (which carry a
# normalized `final`); 'gsm8k_raw' reads OpenAI's original rows (answer after '####'); 'math' is
# MATH-500 (with an `answer` column); 'math_boxed' is Hendrycks MATH, whose answer is the last
# \boxed{...} of the solution.
PRESETS: dict[str, dict[str, str]] = {
    "gsm8k": dict(question_field="question", answer_field="final", solution_field="answer",
                  id_field="id", answer_format="plain"),
    "gsm8k_raw": dict(question_field="question", answer_field="answer", solution_field="answer",
                      id_field="id", answer_format="gsm8k"),
    "math": dict(question_field="problem", answer_field="answer", solution_field="solution",
                 id_field="unique_id", answer_format="plain"),
    "math_boxed": dict(question_field="problem", answer_field="solution", solution_field="solution",
                       id_field="id", answer_format="boxed"),
    "aime": dict(question_field="question", answer_field="final", solution_field="solution",
                 id_field="id", answer_format="plain"),
}
_PRESET_FIELDS = ("question_field", "answer_field", "solution_field", "id_field", "answer_format")


def _choice(name: str, value: Any, allowed: tuple) -> None:
  if value not in allowed:
    raise ValueError(f"data.{name}={value!r} is not one of {allowed}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """One dataset. Field-name fields left as None take the value of `preset`."""

  source: str = "jsonl"
  """'jsonl' | 'reasoning_gym' | 'synthetic' | 'tfds'."""
  path: str = ""
  """jsonl: the file. tfds: optionally a prepared dataset directory (holding dataset_info.json)."""
  preset: str = "gsm8k"
  """Field names of a known dataset: a key of `PRESETS`."""
  question_field: str | None = None
  """Row key of the question (None: from the preset)."""
  answer_field: str | None = None
  """Row key of the reference answer (None: from the preset)."""
  solution_field: str | None = None
  """Row key of the worked solution, optional in rows (None: from the preset)."""
  id_field: str | None = None
  """Row key of the id, optional in rows; missing ids become '<file stem>-<line>' (None: preset)."""
  answer_format: str | None = None
  """How `final` is read from the answer field: 'plain' (as is), 'boxed' (last \\boxed{...}),
  'gsm8k' (the number after '####', commas removed). None: from the preset."""
  on_bad_line: str = "fail"
  """A malformed row: 'fail' raises naming file and line; 'skip' drops it and warns with a count."""
  max_examples: int | None = None
  """Keep only the first N examples (in source order); None keeps all."""
  seed: int = 0
  """Seed of generated sources (reasoning_gym, synthetic)."""
  rg_tasks: tuple[str, ...] = ("basic_arithmetic",)
  """reasoning_gym: registered dataset names; their examples are interleaved round-robin."""
  rg_size: int = 1000
  """reasoning_gym: examples generated per task."""
  rg_kwargs: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  """reasoning_gym: extra `create_dataset` options per task name (e.g. difficulty ranges)."""
  num_train: int = 2000
  """synthetic: size of the training split."""
  num_eval: int = 200
  """synthetic: size of the held-out split (disjoint from train by computation)."""
  synthetic_split: str = "train"
  """synthetic: which split `load` returns, 'train' or 'eval'."""
  tfds_name: str = ""
  """tfds: registered dataset name (used when `path` is empty)."""
  tfds_split: str = "train"
  """tfds: split name, e.g. 'train' or 'test'."""
  tfds_data_dir: str = ""
  """tfds: data_dir holding prepared datasets ('' = TFDS default, ~/tensorflow_datasets)."""

  def __post_init__(self):
    _choice("source", self.source, SOURCES)
    _choice("preset", self.preset, tuple(PRESETS))
    for name in _PRESET_FIELDS:  # frozen: fill the preset's values the documented way
      if getattr(self, name) is None:
        object.__setattr__(self, name, PRESETS[self.preset][name])
    for name in ("question_field", "answer_field"):
      if not getattr(self, name):
        raise ValueError(f"data.{name}={getattr(self, name)!r} must name a row key")
    _choice("answer_format", self.answer_format, ANSWER_FORMATS)
    _choice("on_bad_line", self.on_bad_line, ON_BAD_LINE)
    _choice("synthetic_split", self.synthetic_split, SYNTHETIC_SPLITS)
    if self.max_examples is not None and self.max_examples < 1:
      raise ValueError(f"data.max_examples={self.max_examples} must be >= 1, or None for all")
    if isinstance(self.rg_tasks, str):
      object.__setattr__(self, "rg_tasks", (self.rg_tasks,))
    object.__setattr__(self, "rg_tasks", tuple(self.rg_tasks))
    object.__setattr__(self, "rg_kwargs", {k: dict(v) for k, v in dict(self.rg_kwargs).items()})
    if self.source == "jsonl" and not self.path:
      raise ValueError("data.path='' : source 'jsonl' needs the file to read")
    if self.source == "tfds" and not (self.path or self.tfds_name):
      raise ValueError("data.tfds_name='' and data.path='': source 'tfds' needs a dataset name or a "
                       "prepared dataset directory")
    if self.source == "reasoning_gym":
      if not self.rg_tasks:
        raise ValueError("data.rg_tasks=() : source 'reasoning_gym' needs at least one dataset name")
      if self.rg_size < 1:
        raise ValueError(f"data.rg_size={self.rg_size} must be >= 1")
      extra = sorted(set(self.rg_kwargs) - set(self.rg_tasks))
      if extra:
        raise ValueError(f"data.rg_kwargs has options for {extra}, which are not in data.rg_tasks={self.rg_tasks}")
    if self.source == "synthetic" and (self.num_train < 0 or self.num_eval < 0):
      raise ValueError(f"data.num_train={self.num_train}, data.num_eval={self.num_eval} must be >= 0")
