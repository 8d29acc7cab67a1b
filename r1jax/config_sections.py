"""One source of truth for configuration: the library's frozen dataclasses.

An experiment's ml_collections ConfigDict is *generated* from the dataclass defaults
(`section`), so every field of every config dataclass can be set from the shell
(`--config.grpo.beta=0.0`) or a notebook (`cfg.grpo.beta = 0.0`), and the experiment file
overrides only what differs. `to_dataclass` goes back: an unknown key or a bad value raises a
ValueError naming the field (`grpo.loss_type='foo' is not one of ...`).

Fields that an experiment derives from other sections (the sampler's group size from
`grpo.num_generations`, its pad id from the tokenizer, ...) are typed placeholders: None until
set, settable from the shell like any other field.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from typing import Any

import ml_collections
from ml_collections import config_dict

from r1jax import errors


def _strip_optional(t):
  args = [a for a in typing.get_args(t) if a is not type(None)]
  if len(args) == 1 and typing.get_origin(t) in (typing.Union, types.UnionType):
    return args[0]
  return t


def _placeholder_type(hint):
  """The type a ConfigDict placeholder of this annotation parses shell values as."""
  t = _strip_optional(hint)
  origin = typing.get_origin(t)
  if origin in (typing.Union, types.UnionType):  # e.g. int | str: the shell gives a string
    return str
  if origin is tuple or t is tuple:
    return tuple
  return t if isinstance(t, type) else str


def _default(f: dataclasses.Field):
  if f.default is not dataclasses.MISSING:
    return f.default
  if f.default_factory is not dataclasses.MISSING:
    return f.default_factory()
  return dataclasses.MISSING


def section(cls, *, derived: tuple[str, ...] = (), all_placeholders: bool = False,
            **overrides) -> ml_collections.ConfigDict:
  """A ConfigDict section holding every field of dataclass `cls` at its default.

  Args:
    derived: fields left as typed placeholders (None = the experiment derives the value).
    all_placeholders: every field is a placeholder (a section whose defaults come from
      elsewhere, e.g. a model preset or a Hugging Face config.json).
    overrides: field values that differ from the dataclass defaults; an unknown name is an error.
  A nested dataclass field becomes a nested section (its own fields placeholders when the
  field's default is None).
  """
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(f"{cls.__name__} has no field(s) {unknown}")
  out = ml_collections.ConfigDict()
  for name, f in fields.items():
    hint = hints[name]
    inner = _strip_optional(hint)
    default = _default(f)
    if dataclasses.is_dataclass(inner):
      sub_placeholders = all_placeholders or default is None or name in derived
      # The field's own default instance (e.g. a stage's optimizer settings), then overrides.
      nested = {} if sub_placeholders or default is dataclasses.MISSING else {
          f.name: getattr(default, f.name) for f in dataclasses.fields(inner)}
      out[name] = section(inner, all_placeholders=sub_placeholders, **(nested | dict(overrides.get(name) or {})))
      continue
    if name in overrides:
      value = overrides[name]
      out[name] = list(value) if isinstance(value, list) else value
      if value is None:
        out[name] = config_dict.placeholder(_placeholder_type(hint))
    elif all_placeholders or name in derived or default is None or default is dataclasses.MISSING:
      out[name] = config_dict.placeholder(_placeholder_type(hint))
    else:
      out[name] = default
  return out


def _is_unset(section_dict) -> bool:
  return all(v is None or (isinstance(v, dict) and _is_unset(v)) for v in section_dict.values())


def to_dataclass(cls, section_cfg: ml_collections.ConfigDict | dict | None, prefix: str, **extra):
  """Build `cls` from a config section; unknown keys are an error naming `prefix.key`.

  Unset placeholders (None) take the dataclass default, unless the default itself is None.
  A nested dataclass section left wholly unset takes the field's default; `kind='none'` in a
  nested section means None (e.g. `--config.model.rope_scaling.kind=none`).
  """
  values = section_cfg.to_dict() if isinstance(section_cfg, ml_collections.ConfigDict) else dict(section_cfg or {})
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"unknown config field(s) {', '.join(prefix + '.' + k for k in unknown)}; "
                     f"{prefix} takes {sorted(fields)}")
  hints = typing.get_type_hints(cls)
  for k, v in list(values.items()):
    inner = _strip_optional(hints[k])
    if isinstance(v, dict) and dataclasses.is_dataclass(inner):
      if v.get("kind") == "none":
        values[k] = None
      elif _is_unset(v):
        del values[k]
      else:
        values[k] = to_dataclass(inner, {a: b for a, b in v.items() if b is not None}, f"{prefix}.{k}")
      continue
    if v is None and _default(fields[k]) is not None:
      del values[k]
    elif isinstance(v, list):
      values[k] = tuple(v)
  values |= extra
  _check_finite(values, prefix)
  try:
    return cls(**values)
  except TypeError as e:
    raise ValueError(f"{prefix}: {e}") from None


def _check_finite(values: dict, prefix: str) -> None:
  """No config number is NaN or infinite (a check like `x <= 0` lets NaN through)."""
  for k, v in values.items():
    if isinstance(v, float) and not math.isfinite(v):
      raise ValueError(f"{prefix}.{k}={v!r} must be a finite number")


def dataclass_defaults(cls) -> dict[str, Any]:
  """A dataclass's defaults as a plain dict."""
  out = {}
  for f in dataclasses.fields(cls):
    v = _default(f)
    if v is not dataclasses.MISSING:
      out[f.name] = list(v) if isinstance(v, tuple) else v
  return out


def int_or_auto(prefix: str, value) -> int | str:
  """'auto', or a positive int given as an int or a digit string (shell values arrive as strings)."""
  if value == "auto":
    return value
  if isinstance(value, str) and value.strip().isdigit():
    value = int(value)
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{prefix}={value!r} must be 'auto' or an int >= 1")
  return value


@errors.config_errors
def apply_overrides(cfg: ml_collections.ConfigDict, overrides: dict, where: str) -> ml_collections.ConfigDict:
  """`cfg` (a copy) with dotted overrides {'grpo.beta': 0.0} applied; an unknown field is an error."""
  cfg = copy.deepcopy(cfg)  # keeps the typed placeholders (to_dict would drop their types)
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    node = cfg
    for p in path:
      if p not in node:
        raise ValueError(f"{where}: unknown config field {key!r}")
      node = node[p]
    if leaf not in node:
      raise ValueError(f"{where}: unknown config field {key!r}")
    if isinstance(node[leaf], str) and isinstance(value, int) and not isinstance(value, bool):
      value = str(value)  # 'auto'-or-int fields (grpo.grad_accum) are strings, as the shell gives them
    try:
      node[leaf] = value
    except TypeError as e:
      node[leaf] = _coerce(node.get_type(leaf), value, f"{where}: {key}", e)
  return cfg


def _coerce(typ, value, name: str, error: TypeError):
  """A number given as text (a sweep's --set optim.learning_rate=nan) as the field's type; else a
  ValueError naming the field."""
  if typ in (int, float) and isinstance(value, str):
    try:
      return typ(value)
    except ValueError:
      pass
  raise ValueError(f"{name}={value!r} is not of the field's type {getattr(typ, '__name__', typ)} ({error})")
