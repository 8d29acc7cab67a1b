"""From an ml_collections ConfigDict (the experiment boundary) to the library's frozen dataclasses.

Every section is checked before anything compiles: an unknown key or a bad value raises a
ValueError naming the field (`grpo.loss_type='foo' is not one of ...`).
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

import ml_collections


def to_dataclass(cls, section: ml_collections.ConfigDict | dict | None, prefix: str, **extra):
  """Build `cls` from a config section; unknown keys are an error naming `prefix.key`."""
  values = dict(section or {})
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"unknown config field(s) {', '.join(prefix + '.' + k for k in unknown)}; "
                     f"{prefix} takes {sorted(fields)}")
  hints = typing.get_type_hints(cls)
  for k, v in list(values.items()):
    if isinstance(v, list):
      values[k] = tuple(v)
    if isinstance(v, (ml_collections.ConfigDict, dict)) and dataclasses.is_dataclass(_strip_optional(hints[k])):
      values[k] = to_dataclass(_strip_optional(hints[k]), v, f"{prefix}.{k}")
  values |= extra
  try:
    return cls(**values)
  except TypeError as e:
    raise ValueError(f"{prefix}: {e}") from None


def _strip_optional(t):
  args = [a for a in typing.get_args(t) if a is not type(None)]
  return args[0] if len(args) == 1 and typing.get_origin(t) in (typing.Union, getattr(__import__("types"), "UnionType", None)) else t


def dataclass_defaults(cls) -> dict[str, Any]:
  """A dataclass's defaults as a plain dict (to seed a ConfigDict section)."""
  out = {}
  for f in dataclasses.fields(cls):
    if f.default is not dataclasses.MISSING:
      v = f.default
    elif f.default_factory is not dataclasses.MISSING:
      v = f.default_factory()
    else:
      continue
    out[f.name] = list(v) if isinstance(v, tuple) else v
  return out
