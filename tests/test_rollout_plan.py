"""The rollout planned against memory: chunked rollouts draw the same rows as the whole batch, the
planner picks the fewest chunks that fit, a fixed count is kept and checked, and nothing fitting is
one line and exit status 2 before any work."""
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from r1jax import pipelines
from r1jax import memory
from r1jax import memory_grpo
from r1jax import memory_sampling
from r1jax import model as M
from r1jax.sampling import rollout
from r1jax import sharding
from r1jax.rl import step as train_step
from r1jax.rl.collect import GroupCollector
from r1jax.rl.config import GRPOConfig, TrainConfig
from r1jax.sampling.sampler import SamplingConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
SMALL = M.ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
                      max_seq_len=64)
CFG = M.ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128)
G, N, P, PROMPTS = 8, 64, 32, 8


class _Digits:
  """Decodes ids as their numbers (the rows' text is not what these tests check)."""

  def decode(self, ids):
    return " ".join(map(str, ids))


def _mesh():
  return sharding.make_mesh((1, 1, 1), jax.devices()[:1])


def test_a_chunked_rollout_draws_the_rows_of_the_whole_batch():
  """4 prompts x 3 samples (one batch slot of padding) in 1, 2 and 4 chunks, statically and with
  continuous batching in 2 chunks: the same tokens, masks, lengths, truncation flags and log-probs
  as one call with the same key; the chunks without the whole batch's row numbers differ."""
  params = M.init_params(jax.random.key(0), SMALL)
  scfg = SamplingConfig(max_new_tokens=12, temperature=1.0, num_samples=3, eos_ids=(3, 7, 11), prompt_buckets=(16,))
  prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18]]
  key = jax.random.key(3)
  with jax.set_mesh(_mesh()):
    whole = rollout.sample(params, prompts, key, SMALL, scfg, _Digits(), batch_size=4)
    assert (~whole.truncated).sum() >= 1 and whole.truncated.sum() >= 1  # rows end by EOS and at N
    runs = [(c, scfg) for c in (2, 4)] + [(2, dataclasses.replace(scfg, continuous_batching=True, num_slots=2))]
    for chunks, s in runs:
      got = rollout.sample(params, prompts, key, SMALL, s, _Digits(), batch_size=4, chunks=chunks)
      for k in ("tokens", "mask", "length", "truncated", "prompt_tokens", "prompt_mask"):
        np.testing.assert_array_equal(getattr(got, k), getattr(whole, k), err_msg=f"{chunks} chunks: {k}")
      np.testing.assert_allclose(got.logp, whole.logp, atol=1e-5)
      assert got.texts == whole.texts
    # Each chunk's rows numbered from 0 draw other tokens: the row offset is what makes them equal.
    from r1jax.sampling import sampler
    toks, mask = sampler.pad_prompts(prompts, scfg.prompt_buckets, 0, 4)
    second = jax.device_get(sampler.generate(params, toks[2:], mask[2:], key, SMALL, scfg))
    assert not np.array_equal(second["tokens"][:3], whole.tokens[6:9])
    with pytest.raises(ValueError, match="rollout_chunks=3 must divide the batch of 4 prompts"):
      rollout.sample(params, prompts, key, SMALL, scfg, _Digits(), batch_size=4, chunks=3)


@pytest.fixture(scope="module")
def whole_peak():
  """The unchunked rollout's own peak (arguments + temporaries + outputs), measured."""
  with jax.set_mesh(_mesh()):
    p = memory_sampling.plan_sampling(CFG, SamplingConfig(max_new_tokens=N, num_samples=G), _mesh(), prompts=PROMPTS,
                                      prompt_len=P, limit_bytes=10 ** 12, chunks=1, log=lambda *a: None)
  assert (p.chunks, p.num_slots) == (1, 0) and p.peak_bytes == p.phase.peak
  return p.peak_bytes


def test_the_plan_generates_in_the_fewest_chunks_that_fit_and_records_them(whole_peak, tmp_path, capsys):
  """A limit under the whole rollout (and the rest of the train state) but above half of it: the
  run's plan (`pipelines.plan_memory`) takes 2 chunks, the most frugal (8) having been measured
  first; the rollout's setting is printed on the memory plan line, recorded in memory_plan.json
  and in the run's train config, which the GRPO loop's collector samples with."""
  mesh = _mesh()
  g = GRPOConfig(num_generations=G, max_completion_length=N, beta=0.04)
  ocfg = train_step.OptimConfig()
  state = memory_grpo.abstract_state(CFG, ocfg, mesh, True)
  resident = memory.per_device_bytes(state) - memory.per_device_bytes(state.params)
  limit_gb = 0.9 * (whole_peak + resident) / memory.HEADROOM / memory.GiB
  run = dataclasses.replace(
      pipelines.validate(pipelines.base_config()), model=CFG, grpo=g, optim=ocfg,
      sampling=SamplingConfig(max_new_tokens=N, num_samples=G),
      train=TrainConfig(prompts_per_step=PROMPTS, max_prompt_len=P, memory_limit_gb=limit_gb),
      remat="none", grad_accum=PROMPTS * G, rollout_chunks="auto", mesh=sharding.MeshConfig())
  with jax.set_mesh(mesh):
    planned, summary = pipelines.plan_memory(run, mesh, tmp_path)
  tried = {t["rollout_chunks"]: t for t in summary["rollout_tried"]}
  assert list(tried) == [8, 2, 1] and not tried[1]["fits"] and tried[2]["fits"] and tried[8]["fits"]
  assert tried[1]["peak_gib"] * memory.GiB == whole_peak + resident
  assert tried[2]["peak_gib"] < 0.9 * tried[1]["peak_gib"]
  assert summary["rollout_chunks"] == 2 and planned.train.rollout_chunks == 2
  recorded = json.loads((tmp_path / "memory_plan.json").read_text())
  assert recorded["rollout_chunks"] == 2 and recorded["asked"]["train.rollout_chunks"] == "auto"
  assert "train.rollout_chunks=2 " in capsys.readouterr().out


def test_a_fixed_chunk_count_is_kept_and_still_checked(whole_peak):
  mesh = _mesh()
  scfg = SamplingConfig(max_new_tokens=N, num_samples=G)
  limit = int(0.9 * whole_peak / memory.HEADROOM)
  with jax.set_mesh(mesh):
    p = memory_sampling.plan_sampling(CFG, scfg, mesh, prompts=PROMPTS, prompt_len=P, limit_bytes=limit, chunks=2,
                                      log=lambda *a: None)
    assert (p.chunks, [t["rollout_chunks"] for t in p.tried]) == (2, [2])
    with pytest.raises(memory.DoesNotFitError, match=r"generate needs .* GiB per device .* even in 1 chunk\(s\) "
                                                     r"of 8 prompts x 8 samples"):
      memory_sampling.plan_sampling(CFG, scfg, mesh, prompts=PROMPTS, prompt_len=P, limit_bytes=limit, chunks=1,
                                    log=lambda *a: None)


def test_the_options_run_fastest_first():
  """Fewest chunks first; with continuous batching the most slots first, then more chunks at the
  fewest slots; a chunk keeps whole prompts on every data shard."""
  assert memory_sampling.sampling_options(8, 4, 1) == [(1, 0), (2, 0), (4, 0), (8, 0)]
  assert memory_sampling.sampling_options(8, 4, 4) == [(1, 0), (2, 0)]
  assert memory_sampling.sampling_options(8, 4, 1, chunks=2) == [(2, 0)]
  assert memory_sampling.sampling_options(4, 2, 2, continuous=True) == [(1, 8), (1, 4), (1, 2), (2, 2)]
  assert memory_sampling.sampling_options(4, 2, 1, continuous=True, num_slots=3) == [(1, 3), (2, 3), (4, 3)]


def test_nothing_fits_is_one_line_and_exit_status_2_before_any_work(tmp_path):
  work = tmp_path / "run"
  out = subprocess.run([sys.executable, str(REPO / "experiments" / "r1_zero.py"), f"--config.workdir={work}",
                        "--config.train.memory_limit_gb=0.0001"], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600)
  assert out.returncode == 2, out.stderr[-2000:]
  (line,) = out.stderr.strip().splitlines()
  assert line.startswith("error: memory plan: generate needs ") and "lower train.prompts_per_step=" in line
  assert not (work / "ckpt").exists() and not (work / "pretrain").exists()


def test_evaluation_batches_are_planned_under_a_limit(whole_peak):
  """The evaluation harness's batch (eval.batch_size problems x eval.num_samples) in the fewest
  chunks that fit beside the parameters; a fixed count kept; on CPU without a limit, one."""
  from r1jax.evaluation import harness
  params = M.init_params(jax.random.key(0), CFG)
  ecfg = harness.EvalConfig(batch_size=PROMPTS, num_samples=G, max_new_tokens=N)
  scfg = SamplingConfig(max_new_tokens=N, num_samples=G)
  assert harness.sampling_chunks(params, CFG, scfg, ecfg, P) == 1
  assert harness.sampling_chunks(params, CFG, scfg, dataclasses.replace(ecfg, rollout_chunks="4"), P, 1) == 4
  assert harness.sampling_chunks(params, CFG, scfg, ecfg, P, int(0.9 * whole_peak / memory.HEADROOM)) == 2
  with pytest.raises(memory.DoesNotFitError, match=r"evaluation sampling needs .* lower eval.batch_size=8"):
    harness.sampling_chunks(params, CFG, scfg, ecfg, P, 1024)


def test_the_grpo_collector_samples_in_the_planned_chunks(monkeypatch):
  """train.rollout_chunks (what the plan resolved) reaches the GRPO loop's rollout: its batch of
  train.prompts_per_step prompts goes to the sampler in that many sub-batches."""
  from r1jax.sampling import sampler
  params = M.init_params(jax.random.key(0), SMALL)
  scfg = SamplingConfig(max_new_tokens=4, num_samples=2, prompt_buckets=(8,))
  tcfg = TrainConfig(prompts_per_step=4, rollout_chunks=2)
  collector = GroupCollector(SMALL, scfg, _Digits(), [{}] * 4, [[5, 6], [7], [8, 9, 10], [11]], [], tcfg, 4)
  shapes, real = [], sampler.generate
  monkeypatch.setattr(sampler, "generate", lambda p, t, *a, **k: shapes.append(t.shape) or real(p, t, *a, **k))
  with jax.set_mesh(_mesh()):
    ro = collector.sample(params, [0, 1, 2, 3], jax.random.key(1))
  assert shapes == [(2, 8), (2, 8)] and ro.tokens.shape == (8, 4)


@pytest.mark.slow
def test_continuous_batching_takes_the_most_slots_that_fit(whole_peak):
  """sampling.continuous_batching with num_slots=0: under a limit below all 64 rows decoding at once
  the plan takes fewer slots in one chunk (the most that fit), measured from the most frugal;
  a given num_slots is kept."""
  mesh = _mesh()
  scfg = SamplingConfig(max_new_tokens=N, num_samples=G, continuous_batching=True)
  with jax.set_mesh(mesh):
    full = memory_sampling.plan_sampling(CFG, dataclasses.replace(scfg, num_slots=PROMPTS * G), mesh, prompts=PROMPTS,
                                         prompt_len=P, limit_bytes=10 ** 12, chunks=1, log=lambda *a: None)
    p = memory_sampling.plan_sampling(CFG, scfg, mesh, prompts=PROMPTS, prompt_len=P,
                                      limit_bytes=int(0.8 * full.peak_bytes / memory.HEADROOM), log=lambda *a: None)
  tried = {(t["rollout_chunks"], t["num_slots"]): t["fits"] for t in p.tried}
  assert p.chunks == 1 and 1 <= p.num_slots < PROMPTS * G and tried[1, p.num_slots]
  assert tried[8, 1] and not tried.get((1, 2 * p.num_slots), False)
  assert (1, 2 * p.num_slots) in tried or 2 * p.num_slots == PROMPTS * G
