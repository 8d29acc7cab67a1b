"""TensorFlow Datasets -> examples, without TensorFlow.

TFDS's random-access data source (`builder.as_data_source`, ArrayRecord files) reads prepared
datasets with NumPy only, so `tensorflow-datasets` works here without `tensorflow`. The dataset
must already be prepared in the ArrayRecord format (`file_format='array_record'`); nothing is
downloaded (no network at run time).
"""
from __future__ import annotations

from r1jax.data.config import DataConfig
from r1jax.data.jsonl import BadRowError, normalize_row

PIP_REQUIREMENT = "tensorflow-datasets>=4.9"


def _import_tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError(f"data.source='tfds' needs `pip install '{PIP_REQUIREMENT}'` "
                      "(tensorflow itself is not needed)") from e
  return tfds


def load_tfds(cfg: DataConfig) -> list[dict]:
  """Examples of split `cfg.tfds_split` of a prepared TFDS dataset: the directory `cfg.path`
  (holding dataset_info.json), else `cfg.tfds_name` under `cfg.tfds_data_dir`. Rows are mapped
  with the configured field names, as JSONL rows are; bad rows fail or are skipped."""
  import warnings

  tfds = _import_tfds()
  if cfg.path:
    builder = tfds.builder_from_directory(cfg.path)
    label = cfg.path
  else:
    builder = tfds.builder(cfg.tfds_name, data_dir=cfg.tfds_data_dir or None, try_gcs=False)
    label = cfg.tfds_name
    if not builder.is_prepared():
      raise FileNotFoundError(f"data.tfds_name={cfg.tfds_name!r} is not prepared under {builder.data_dir}; "
                              "prepare it where a network is reachable (file_format='array_record') "
                              "and point data.tfds_data_dir at it")
  splits = sorted(builder.info.splits)
  if cfg.tfds_split not in splits:
    raise ValueError(f"data.tfds_split={cfg.tfds_split!r} is not a split of {label}; it has {splits}")
  source = builder.as_data_source(split=cfg.tfds_split)
  n = len(source) if cfg.max_examples is None else min(len(source), cfg.max_examples)
  examples, problems = [], []
  for i in range(n):
    where = f"{label}[{cfg.tfds_split}]#{i}"
    try:
      examples.append(normalize_row(source[i], cfg, where, default_id=f"{builder.name}-{cfg.tfds_split}-{i}"))
    except BadRowError as e:
      if cfg.on_bad_line == "fail":
        raise
      problems.append(str(e))
  if problems:
    warnings.warn(f"skipped {len(problems)} bad row(s) of {label} (data.on_bad_line='skip'): {problems[:5]}",
                  stacklevel=2)
  return examples
