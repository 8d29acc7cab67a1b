"""Test setup: 8 simulated CPU devices for sharding tests, and the shared real data."""
import os
import pathlib

# Must happen before jax is imported anywhere: sharding tests need several devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("R1JAX_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The real data files (GSM8K, AIME, tokenizers) shipped beside the repo, never copied into it."""
  if not SHARED_DATA.is_dir():
    raise FileNotFoundError(
        f"shared data not found at {SHARED_DATA}; set R1JAX_SHARED_DATA to the folder holding gsm8k_test.jsonl")
  return SHARED_DATA
