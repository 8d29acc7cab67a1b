"""JSON Lines files -> examples, with errors that name the file, the line and the field.

`normalize_row` is shared with the other file-like sources (TFDS): it maps a source row onto the
example shape of `r1jax.data.config` using the configured field names and answer format.
"""
from __future__ import annotations

import json
import pathlib
import re
import warnings
from typing import Any, Mapping

from r1jax.data.config import DataConfig

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K_CALC = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations: 48/2 = <<48/2=24>>24
_GSM8K_FINAL = re.compile(r"\n?####\s*(.*)\s*$", re.S)


class BadRowError(ValueError):
  """A row that cannot become an example; the message starts with its location ('file:line')."""


def last_boxed(text: str) -> str | None:
  """Content of the last \\boxed{...} (or \\fbox{...}) in `text`, braces balanced; None if absent."""
  starts = [m.end() for m in _BOXED.finditer(text)]
  if not starts:
    return None
  depth, i = 1, starts[-1]
  for j in range(i, len(text)):
    depth += {"{": 1, "}": -1}.get(text[j], 0)
    if depth == 0:
      return text[i:j]
  return None  # unbalanced braces


def _plain(v: Any) -> Any:
  """Bytes (TFDS text) to str and NumPy scalars to Python values; everything else unchanged."""
  if isinstance(v, bytes):
    return v.decode("utf-8")
  if hasattr(v, "item") and getattr(v, "shape", None) == ():
    return _plain(v.item())
  return v


def _final(raw: str, cfg: DataConfig) -> str | None:
  if cfg.answer_format == "boxed":
    return last_boxed(raw)
  if cfg.answer_format == "gsm8k":
    m = _GSM8K_FINAL.search(raw)
    return m.group(1).strip().replace(",", "") if m else None
  return raw


def _clean_solution(text: str) -> str:
  """GSM8K's worked answers carry calculator annotations and a '#### N' line; drop both."""
  return _GSM8K_FINAL.sub("", _GSM8K_CALC.sub("", text)).strip()


def normalize_row(row: Mapping[str, Any], cfg: DataConfig, where: str, default_id: str) -> dict:
  """One source row as an example. Raises BadRowError starting with `where` ('file:line')."""
  if not isinstance(row, Mapping):
    raise BadRowError(f"{where}: expected a JSON object, got {type(row).__name__}")
  row = {k: _plain(v) for k, v in row.items()}
  for name in ("question_field", "answer_field"):
    key = getattr(cfg, name)
    if key not in row:
      raise BadRowError(f"{where}: missing field {key!r} (data.{name}); the row has {sorted(row)}")
    if row[key] is None or not str(row[key]).strip():
      raise BadRowError(f"{where}: empty field {key!r} (data.{name})")
  final = _final(str(row[cfg.answer_field]), cfg)
  if final is None or not final.strip():
    raise BadRowError(f"{where}: field {cfg.answer_field!r} has no final answer in "
                      f"data.answer_format={cfg.answer_format!r}: {str(row[cfg.answer_field])[-80:]!r}")
  ex = {"id": str(row[cfg.id_field]) if row.get(cfg.id_field) is not None else default_id,
        "question": str(row[cfg.question_field]).strip(), "final": final.strip()}
  if cfg.solution_field and row.get(cfg.solution_field):
    ex["solution"] = _clean_solution(str(row[cfg.solution_field]))
  for key in ("subject", "level"):
    if row.get(key) is not None:
      ex[key] = row[key]
  return ex


def read_jsonl(path, cfg: DataConfig) -> tuple[list[dict], list[str]]:
  """(examples, problems): problems are 'file:line: reason' for each row skipped under
  `on_bad_line='skip'`; with 'fail' the first bad row raises BadRowError with that text."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"data.path={str(path)!r}: no such file")
  examples, problems, first_line_of = [], [], {}
  with path.open(encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if cfg.max_examples is not None and len(examples) >= cfg.max_examples:
        break
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise BadRowError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
        ex = normalize_row(row, cfg, where, default_id=f"{path.stem}-{lineno}")
        if ex["id"] in first_line_of:
          raise BadRowError(f"{where}: duplicate id {ex['id']!r} (first at line {first_line_of[ex['id']]})")
      except BadRowError as e:
        if cfg.on_bad_line == "fail":
          raise
        problems.append(str(e))
        continue
      first_line_of[ex["id"]] = lineno
      examples.append(ex)
  return examples, problems


def load_jsonl(path, cfg: DataConfig) -> list[dict]:
  """Examples of a JSON Lines file; bad rows raise, or with `on_bad_line='skip'` are dropped
  with one warning that counts them and shows the first few locations."""
  examples, problems = read_jsonl(path, cfg)
  if problems:
    shown = "\n  ".join(problems[:5])
    warnings.warn(f"skipped {len(problems)} bad line(s) of {path} (data.on_bad_line='skip'):\n  {shown}",
                  stacklevel=2)
  return examples
