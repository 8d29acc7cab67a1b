"""Verifiable problems from JSONL files: GSM8K, MATH and AIME field layouts, strict or lenient,
and code tasks (HumanEval, or the 'code' layout: question, tests, entry_point, prelude).

A math example is a dict with 'id', 'question', 'final' (the reference answer) and, where the
file has them, 'subject' and 'level'. A code example has 'id', 'question', 'tests' (Python
sources, each passing when it raises nothing), 'entry_point' and 'prelude' (code run before the
program; see `r1jax.rewards.code`), and 'task_kind' = 'code'. Files may be gzipped ('.gz').
Bad lines are reported by file and line number.
"""
from __future__ import annotations

import ast
import dataclasses
import gzip
import json
import logging
import pathlib

from r1jax import errors
from r1jax.rewards import extraction

# question field, answer field, optional id/subject/level fields of known layouts.
LAYOUTS = {
    "gsm8k": {"question": "question", "final": "final"},
    "aime": {"question": "question", "final": "final"},
    "math": {"question": "problem", "final": "answer", "subject": "type", "level": "level"},
    "math_solution": {"question": "problem", "final": "solution", "subject": "type", "level": "level"},
    # Code: the question field, then where the tests are.
    "humaneval": {"question": "prompt", "final": "test"},
    "code": {"question": "question", "final": "tests"},
}
CODE_LAYOUTS = ("humaneval", "code")

CODE_QUESTION = ("Complete the following Python function. Give the complete function in one ```python code "
                 "block inside <answer> </answer>.\n\n```python\n{code}```")


def humaneval_tests(test_src: str, entry_point: str) -> list[str]:
  """HumanEval's `check(candidate)` as one test per assert that calls the candidate (so partial
  credit and "which test failed" exist): every other statement of `check` stays in each test, in
  order. A `check` with at most one such assert is one test."""
  tree = ast.parse(test_src)
  check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
  if check is None:
    raise ValueError("HumanEval test has no check(candidate) function")
  calls_candidate = lambda n: isinstance(n, ast.Assert) and any(
      isinstance(x, ast.Name) and x.id == "candidate" for x in ast.walk(n.test))
  asserts = [i for i, n in enumerate(check.body) if calls_candidate(n)]
  call = f"\ncheck({entry_point})\n"
  if len(asserts) <= 1:
    return [test_src + call]
  tests = []
  for keep in asserts:
    body = [n for i, n in enumerate(check.body) if i == keep or i not in asserts]
    module = ast.Module([n if n is not check else ast.FunctionDef(**{**vars(check), "body": body})
                         for n in tree.body], type_ignores=[])
    tests.append(ast.unparse(ast.fix_missing_locations(module)) + call)
  return tests


def _code_example(row: dict, layout: str, question_field: str, lineno_id: str) -> dict | str:
  """A code example from a row, or a message saying which field is missing or malformed."""
  if layout == "humaneval":
    for f in ("prompt", "test", "entry_point"):
      if not isinstance(row.get(f), str) or not row[f].strip():
        return f"no {f!r} (a HumanEval row needs prompt, test and entry_point)"
    try:
      tests = humaneval_tests(row["test"], row["entry_point"])
    except (SyntaxError, ValueError) as e:
      return f"field 'test' is not a HumanEval check(candidate) ({e})"
    ex = {"question": CODE_QUESTION.format(code=row["prompt"]), "prelude": row["prompt"], "tests": tests,
          "entry_point": row["entry_point"]}
    if isinstance(row.get("canonical_solution"), str):
      ex["canonical_solution"] = row["canonical_solution"]
  else:
    q, tests = row.get(question_field), row.get("tests")
    if not isinstance(q, str) or not q.strip():
      return f"no question in field {question_field!r}"
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
      return "field 'tests' must be a non-empty list of Python sources"
    ex = {"question": q, "tests": list(tests), "prelude": str(row.get("prelude") or ""),
          "entry_point": str(row.get("entry_point") or "")}
  return {"id": str(row.get("task_id", row.get("id", lineno_id))), **ex, "task_kind": "code"}


@dataclasses.dataclass(frozen=True)
class JsonlConfig:
  """Where the problems are and how their fields are named."""
  path: str = ""
  layout: str = "gsm8k"
  """A key of LAYOUTS; 'math_solution' takes the last \\boxed{} of the solution as the answer."""
  question_field: str = ""
  """Overrides the layout's question field when set."""
  answer_field: str = ""
  """Overrides the layout's answer field when set."""
  on_bad_line: str = "fail"
  """'fail' raises on a malformed line or a row without an answer; 'skip' drops and counts it."""
  max_examples: int = 0
  """Keep the first n examples (0 = all)."""

  def __post_init__(self):
    if self.layout not in LAYOUTS:
      raise ValueError(f"data.layout={self.layout!r} is not one of {sorted(LAYOUTS)}")
    if self.on_bad_line not in ("fail", "skip"):
      raise ValueError(f"data.on_bad_line={self.on_bad_line!r} is not one of ('fail', 'skip')")
    if self.max_examples < 0:
      raise ValueError(f"data.max_examples={self.max_examples} must be >= 0")


def _open_text(path: pathlib.Path):
  """The file as text; a `.gz` must be gzip (its magic bytes checked before any line is read)."""
  if path.suffix != ".gz":
    return open(path, encoding="utf-8")
  with open(path, "rb") as f:
    magic = f.read(2)
  if magic != b"\x1f\x8b":
    raise errors.UserError("data file", path, "named .gz but not gzip-compressed",
                           "compress it with gzip or drop the .gz from its name")
  return gzip.open(path, "rt", encoding="utf-8")


def load_jsonl(cfg: JsonlConfig, on_bad_line_field: str = "data.on_bad_line") -> tuple[list[dict], int]:
  """(examples, number of skipped lines). Errors name the file, the line and the field; a file
  that cannot be read as text (a truncated gzip, another encoding) is a UserError naming it.
  `on_bad_line_field` is the setting the error's hint names (evaluate.py's is `on_bad_line`)."""
  path = pathlib.Path(cfg.path)
  if not path.is_file():
    raise FileNotFoundError(f"data.path={cfg.path!r}: no such file")
  try:
    return _read_rows(path, cfg, on_bad_line_field)
  except (OSError, EOFError, UnicodeDecodeError) as e:
    raise errors.UserError("data file", path, f"cannot be read ({type(e).__name__}: {e})",
                           "give a UTF-8 JSONL file (optionally gzip-compressed as .gz)") from None


def _read_rows(path: pathlib.Path, cfg: JsonlConfig, on_bad_line_field: str) -> tuple[list[dict], int]:
  fields = dict(LAYOUTS[cfg.layout])
  if cfg.question_field:
    fields["question"] = cfg.question_field
  if cfg.answer_field:
    fields["final"] = cfg.answer_field
  out, skipped = [], 0

  def bad(lineno, why):
    nonlocal skipped
    msg = f"{path}:{lineno}: {why}"
    if cfg.on_bad_line == "fail":
      raise errors.UserError("data file", f"{path}:{lineno}", why,
                             f"fix the line, or set {on_bad_line_field}='skip' to drop such lines")
    logging.warning("skipping %s", msg)
    skipped += 1

  with _open_text(path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        bad(lineno, f"malformed JSON ({e.msg})")
        continue
      if not isinstance(row, dict):
        bad(lineno, "not a JSON object")
        continue
      if cfg.layout in CODE_LAYOUTS:
        ex = _code_example(row, cfg.layout, cfg.question_field or fields["question"], f"{path.stem}:{lineno}")
        if isinstance(ex, str):
          bad(lineno, ex)
          continue
        out.append(ex)
        if cfg.max_examples and len(out) >= cfg.max_examples:
          break
        continue
      q, a = row.get(fields["question"]), row.get(fields["final"])
      if not isinstance(q, str) or not q.strip():
        bad(lineno, f"no question in field {fields['question']!r}")
        continue
      if cfg.layout == "math_solution" and isinstance(a, str):
        a = extraction.extract_answer(a)
      if a is None or not str(a).strip():
        bad(lineno, f"no answer in field {fields['final']!r}")
        continue
      rid = next((row[k] for k in ("id", "idx", "unique_id") if k in row), f"{path.stem}:{lineno}")
      ex = {"id": str(rid), "question": q, "final": str(a).strip()}
      if isinstance(row.get("answer"), str) and "####" in row["answer"]:  # GSM8K's worked solution
        ex["solution"] = row["answer"].split("####")[0].strip()
      for k in ("subject", "level"):  # the layout's field (MATH: type), else the row's own (MATH-500: subject)
        src = fields[k] if k in fields and fields[k] in row else k
        if src in row:
          ex[k] = row[src]
      out.append(ex)
      if cfg.max_examples and len(out) >= cfg.max_examples:
        break
  return out, skipped


def reasoning_gym_examples(names: str, size: int, seed: int) -> list[dict]:
  """Procedural tasks from reasoning-gym ('name1,name2'); each carries what its own verifier needs
  (`rg_dataset`, `rg_entry`), so the accuracy reward scores it with the dataset's `score_answer`."""
  import reasoning_gym
  out = []
  for name in filter(None, (n.strip() for n in names.split(","))):
    try:
      ds = reasoning_gym.create_dataset(name, size=size, seed=seed)
    except Exception as e:  # an unknown name: say which and what exists
      raise ValueError(f"data.rg_tasks: reasoning-gym has no dataset {name!r} ({e})") from None
    for i, entry in enumerate(ds):
      entry = json.loads(json.dumps(entry, default=str))  # JSON-safe for worker processes and logs
      out.append({"id": f"{name}/{i}", "question": entry["question"], "final": str(entry["answer"]),
                  "rg_dataset": name, "rg_entry": entry})
  return out


def tfds_examples(name: str, split: str, data_dir: str, question_field: str, answer_field: str,
                  max_examples: int = 0) -> list[dict]:
  """Rows of a TensorFlow Datasets dataset (already prepared under `data_dir`; nothing is
  downloaded), mapped to examples. Needs the `tfds` extra (tensorflow-datasets)."""
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise ImportError("data.source='tfds' needs tensorflow-datasets: pip install 'r1jax[tfds]'") from None
  prepared = pathlib.Path(data_dir or "~/tensorflow_datasets").expanduser() / name
  versions = sorted(p for p in prepared.glob("*") if (p / "dataset_info.json").exists()) if prepared.is_dir() else []
  if versions:  # a prepared directory: readable without the builder's code
    builder = tfds.builder_from_directory(str(versions[-1]))
  else:
    builder = tfds.builder(name, data_dir=data_dir or None)
  ds = builder.as_data_source(split=split)
  out = []
  for i in range(len(ds) if not max_examples else min(max_examples, len(ds))):
    row = ds[i]
    dec = lambda v: v.decode() if isinstance(v, bytes) else str(v)
    if question_field not in row or answer_field not in row:
      raise ValueError(f"tfds {name}/{split} row {i} lacks {question_field!r} or {answer_field!r}; "
                       f"fields: {sorted(row)}")
    out.append({"id": f"{name}/{split}/{i}", "question": dec(row[question_field]), "final": dec(row[answer_field])})
  return out


SOURCES = ("synthetic", "chains", "jsonl", "reasoning_gym", "tfds")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where an experiment's training and held-out problems come from."""
  source: str = "synthetic"
  """'synthetic' (generated arithmetic), 'chains' (multi-step arithmetic chains, `tasks.chains`: a
  slip anywhere is wrong, a check is cheap; the pretraining corpus then follows the `traces`
  section), 'jsonl' (GSM8K / MATH / AIME layouts), 'reasoning_gym' (procedural tasks scored by
  their own verifiers) or 'tfds' (a prepared TFDS directory)."""
  path: str = ""
  """jsonl: the training file, or several mixed in a seeded shuffle, each `path[:layout]`
  ('gsm8k_train.jsonl,humaneval.jsonl.gz:humaneval': math and code, each scored by its checker)."""
  eval_path: str = ""
  """jsonl: the held-out file(s), same form; '' takes the first num_eval rows of `path`."""
  layout: str = "gsm8k"
  """jsonl: field layout, a key of LAYOUTS."""
  question_field: str = ""
  answer_field: str = ""
  on_bad_line: str = "fail"
  num_train: int = 8000
  """Training problems (at most; jsonl files may hold fewer)."""
  num_eval: int = 256
  """Held-out problems."""
  seed: int = 0
  """Generator seed of the synthetic and reasoning-gym problems."""
  chain_min_ops: int = 2
  chain_max_ops: int = 4
  """chains: operations per chain, drawn uniformly in [chain_min_ops, chain_max_ops] (the depth)."""
  rg_tasks: str = "basic_arithmetic"
  """reasoning_gym: comma-separated dataset names."""
  tfds_name: str = ""
  tfds_data_dir: str = ""
  tfds_train_split: str = "train"
  tfds_eval_split: str = "test"

  def __post_init__(self):
    if self.source not in SOURCES:
      raise ValueError(f"data.source={self.source!r} is not one of {SOURCES}")
    JsonlConfig(layout=self.layout, on_bad_line=self.on_bad_line)  # their checks, naming data.<field>
    if self.num_train < 1 or self.num_eval < 1:
      raise ValueError(f"data.num_train={self.num_train} and data.num_eval={self.num_eval} must be >= 1")
    if not 1 <= self.chain_min_ops <= self.chain_max_ops:
      raise ValueError(f"data.chain_min_ops={self.chain_min_ops} and data.chain_max_ops={self.chain_max_ops} "
                       f"must satisfy 1 <= chain_min_ops <= chain_max_ops")
    if self.source == "jsonl":
      for f in ("path",) + (("eval_path",) if self.eval_path else ()):
        files = file_specs(getattr(self, f))
        if not files:
          raise ValueError(f"data.{f}={getattr(self, f)!r}: data.source='jsonl' needs a file")
        for path, layout in files:
          if not pathlib.Path(path).is_file():
            raise ValueError(f"data.{f}={getattr(self, f)!r}: no such file {path!r}")
          if layout and layout not in LAYOUTS:
            raise ValueError(f"data.{f}={getattr(self, f)!r}: layout {layout!r} is not one of {sorted(LAYOUTS)}")
    if self.source == "tfds" and not self.tfds_name:
      raise ValueError("data.tfds_name='' : data.source='tfds' needs a dataset name")


def file_specs(spec: str) -> list[tuple[str, str]]:
  """'a.jsonl,b.jsonl.gz:humaneval' -> [('a.jsonl', ''), ('b.jsonl.gz', 'humaneval')] ('' = data.layout)."""
  return [tuple(item.partition(":")[::2]) for item in filter(None, (x.strip() for x in spec.split(",")))]
