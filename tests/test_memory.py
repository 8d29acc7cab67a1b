"""The memory planner: compiled memory of sampler, reference pass and update against a budget."""
import dataclasses

import jax
import pytest

from r1jax import errors
from r1jax import memory
from r1jax import memory_grpo
from r1jax import preflight
from r1jax import model as M
from r1jax import sharding
from r1jax.rl import step as train_step
from r1jax.rl.config import GRPOConfig
from r1jax.sampling.sampler import SamplingConfig

CFG = M.ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=128)
G, N, P, PROMPTS = 8, 64, 32, 8


def _plan(ocfg=train_step.OptimConfig(), **kw):
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  g = GRPOConfig(num_generations=G, max_completion_length=N, beta=0.04)
  with jax.set_mesh(mesh):
    return memory_grpo.plan(CFG, g, ocfg, SamplingConfig(max_new_tokens=N, num_samples=G), mesh,
                            prompts_per_step=PROMPTS, prompt_len=P, log=lambda *a: None, **kw)


@pytest.fixture(scope="module")
def unlimited():
  return _plan(limit_bytes=10 ** 12, remat="none", grad_accum=1)


def test_phases_are_measured_and_the_state_is_counted(unlimited):
  p = unlimited
  assert set(p.phases) == {"generate", "reference", "update"}
  # The resident state: fp32 params, AdamW mu and nu, and the fp32 reference copy.
  n = CFG.num_params()
  assert p.state_bytes == pytest.approx(4 * n * 4, rel=0.01)
  # The update holds the 64-row minibatch's activations: far more than its parameter arguments.
  assert p.phases["update"].temporaries > 10 * 4 * n
  assert all(ph.peak >= ph.temporaries > 0 for ph in p.phases.values())


def test_bf16_moments_are_counted(unlimited):
  """optim.state_dtype='bfloat16' (fp32 master weights, bf16 AdamW moments): the planner's train
  state holds 4 + 2 + 2 bytes a parameter and the reference's 4, not 16."""
  p = _plan(train_step.OptimConfig(state_dtype="bfloat16"), limit_bytes=10 ** 12, remat="none", grad_accum=1)
  n = CFG.num_params()
  assert p.state_bytes == pytest.approx(12 * n, rel=0.01)
  assert unlimited.state_bytes - p.state_bytes == pytest.approx(4 * n, rel=0.01)


@pytest.mark.slow
def test_auto_picks_the_cheapest_setting_that_fits(unlimited):
  full = unlimited.tried[0]["update_peak_gib"] * memory.GiB
  # A budget below the whole-minibatch update but far above half of it: grad_accum 2 without remat.
  p = _plan(limit_bytes=int(0.8 * full / memory.HEADROOM))
  assert (p.remat, p.grad_accum) == ("none", 2)
  # The most frugal grad_accum first (64 rows: 64 micro-batches), then bisection down to 2.
  assert p.tried[0]["grad_accum"] == 64 and p.tried[0]["fits"]
  assert {(t["grad_accum"], t["fits"]) for t in p.tried} >= {(1, False), (2, True)}
  assert all(t["remat"] == "none" for t in p.tried) and len(p.tried) <= 1 + 6
  assert p.summary()["grad_accum"] == 2 and "fits" in p.reason
  # A fixed grad_accum leaves only remat to choose: recompute must then save the memory.
  q = _plan(limit_bytes=int(0.8 * full / memory.HEADROOM), grad_accum=1)
  assert q.grad_accum == 1 and q.remat in ("dots", "full")
  assert {k: q.tried[0][k] for k in ("remat", "grad_accum", "update_peak_gib", "fits")} == {
      "remat": "none", "grad_accum": 1, "update_peak_gib": pytest.approx(full / memory.GiB), "fits": False}
  assert len([t for t in q.tried if t["remat"] == "none"]) == 1


def test_the_reference_pass_is_measured_in_the_updates_micro_batches(unlimited):
  """The reference pass runs in grad_accum micro-batches of rows (train_step.make_logprob_fn):
  the plan measures it at the grad_accum it picks, with fewer temporaries than the whole pass,
  and counts it in each setting's peak."""
  p = _plan(limit_bytes=10 ** 12, remat="none", grad_accum=4)
  assert p.phases["reference"].temporaries < unlimited.phases["reference"].temporaries
  (t,) = p.tried
  # its peak: the pass's own (one parameter copy as argument) plus the rest of the resident state
  assert t["grad_accum"] == 4 and p.phases["reference"].peak < t["reference_peak_gib"] * memory.GiB < (
      p.phases["reference"].peak + p.state_bytes)

def test_nothing_fits_stops_before_any_work_naming_sizes_and_knobs():
  with pytest.raises(memory.DoesNotFitError, match=r"generate needs .* GiB per device .* lower train.prompts_per_step") as e:
    _plan(limit_bytes=2 * 1024 ** 2)
  # an fp32 model without LoRA is told both; a bf16 state with bf16 moments (the 7B named configs) and
  # LoRA on is told neither, only more devices
  assert "optim.state_dtype='bfloat16' or model.param_dtype='bfloat16' or LoRA (lora.rank=64), or add devices" in str(e.value)
  from r1jax.model.lora import LoRAConfig
  bf16 = dataclasses.replace(CFG, param_dtype="bfloat16")
  said = memory_grpo._state_knobs(bf16, train_step.OptimConfig(), LoRAConfig(rank=8))
  assert said == "or add devices (mesh.fsdp)"
  assert memory_grpo._state_knobs(CFG, train_step.OptimConfig(state_dtype="bfloat16"), None) == (
      "use model.param_dtype='bfloat16' or LoRA (lora.rank=64), or add devices (mesh.fsdp)")


@pytest.mark.slow  # the full suite's (CI time): the planner against the host; its choices under explicit limits run in CI
def test_cpu_plans_against_the_hosts_available_memory(monkeypatch):
  """On CPU the devices share the host's memory: the limit is MemAvailable over the CPU devices,
  measured as on a GPU; a host too small stops the run before any work."""
  monkeypatch.setattr(memory, "host_available_bytes", lambda: 8 * 64 * 1024 ** 3)
  assert memory.device_limit_bytes() == 8 * 64 * 1024 ** 3 // jax.local_device_count("cpu")
  p = _plan()
  assert p.limit_bytes == memory.device_limit_bytes() and p.phases and "fits" in p.reason
  monkeypatch.setattr(memory, "host_available_bytes", lambda: jax.local_device_count("cpu") * 2 * 1024 ** 2)
  with pytest.raises(memory.DoesNotFitError, match="generate needs"):
    _plan()


def test_no_known_limit_plans_nothing(monkeypatch):
  monkeypatch.setattr(memory, "host_available_bytes", lambda: None)
  p = _plan()
  assert (p.remat, p.grad_accum, p.phases) == ("none", 1, {}) and "no device or host memory limit" in p.reason


def test_disk_need_counts_what_a_run_writes_and_a_full_disk_stops_before_work(tmp_path, monkeypatch):
  """The bytes on disk: the train state as a checkpoint really stores it (an initialized state's
  arrays, not the formula), times the checkpoints alive at once, plus the policies."""
  import numpy as np
  from r1jax import preflight
  from r1jax import pipelines
  params = M.init_params(jax.random.key(0), CFG)
  ocfg = train_step.OptimConfig()
  state = train_step.init_state(params, train_step.make_optimizer(ocfg), ref_params=params)
  real = sum(np.asarray(x).nbytes for x in jax.tree.leaves(state.tree()) if np.asarray(x).dtype != object)
  need = preflight.disk_need(CFG, ocfg, True, [120], save_every=50, keep=3)
  assert need["state_bytes"] == pytest.approx(real, abs=64)  # the step counter's few bytes aside
  assert need["checkpoints"] == 3  # saves at 50, 100 and the last step (120)
  assert preflight.disk_need(CFG, ocfg, True, [1000], 50, 3)["checkpoints"] == 4  # keep + the one in flight
  assert need["bytes"] == pytest.approx(3 * real + 2 * 4 * CFG.num_params(), abs=256)
  preflight.check_free_disk(need, tmp_path / "new" / "dir", free_bytes=need["bytes"])  # fits exactly
  with pytest.raises(ValueError, match=r"disk: .* GiB free, this run writes up to .* GiB \(3 checkpoints of the"):
    preflight.check_free_disk(need, tmp_path, free_bytes=need["bytes"] - 1)
  # In validation, before anything is built: a one-line config error.
  import shutil
  monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 12, 10 ** 12 - 1000, 1000))
  cfg = pipelines.base_config()
  cfg.workdir = str(tmp_path)
  run = pipelines.validate(cfg)  # a config is valid on any machine
  with pytest.raises(ValueError, match="disk: .* lower checkpoint.keep or raise checkpoint.save_every"):
    preflight.check_disk(cfg, run)
  cfg.stage = "evaluate"  # writes no checkpoint
  preflight.check_disk(cfg, pipelines.validate(cfg))


def test_lora_checkpoints_are_counted_as_adapters_and_auto_is_checked_again_once_planned(tmp_path, monkeypatch):
  """With LoRA a checkpoint holds the adapters and their moments (what `TrainState.tree` of a real
  LoRA state holds, the frozen base not), policies stay whole; lora.mode='auto' is checked before
  work at LoRA's size and again at full fine-tuning's when the plan chooses it."""
  import numpy as np
  from r1jax import preflight
  from r1jax import pipelines
  from r1jax.model import lora as lora_lib
  params = M.init_params(jax.random.key(0), CFG)
  ocfg = train_step.OptimConfig()
  lcfg = lora_lib.LoRAConfig(rank=4)
  from r1jax.rl import lora_state
  state = lora_state.init_state(params, CFG, lcfg, train_step.make_optimizer(ocfg), seed=0)
  real = sum(np.asarray(x).nbytes for x in jax.tree.leaves(state.tree()) if np.asarray(x).dtype != object)
  need = preflight.disk_need(CFG, ocfg, True, [120], save_every=50, keep=3, lora=lcfg)
  assert need["state_bytes"] == pytest.approx(real, abs=64)
  full = preflight.disk_need(CFG, ocfg, True, [120], save_every=50, keep=3)
  assert need["bytes"] - 3 * need["state_bytes"] == full["bytes"] - 3 * full["state_bytes"]  # the same policies
  assert preflight.disk_need(CFG, ocfg, True, [120], 50, 3, lora=lora_lib.LoRAConfig())["bytes"] == full["bytes"]
  import shutil
  cfg = pipelines.base_config()
  cfg.workdir, cfg.train.steps, cfg.checkpoint.save_every, cfg.checkpoint.keep = str(tmp_path), 120, 50, 3
  run = pipelines.validate(cfg)
  sizes = [preflight.disk_need(run.model, run.optim, run.grpo.uses_reference, [120], 50, 3, lora=lo)["bytes"]
           for lo in (lcfg, None)]
  free = sum(sizes) // 2  # holds LoRA's checkpoints, not full fine-tuning's
  monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 12, 10 ** 12 - free, free))
  cfg.lora.rank = 4
  preflight.check_disk(cfg, pipelines.validate(cfg))  # LoRA fits
  cfg.lora.mode = "auto"
  preflight.check_disk(cfg, pipelines.validate(cfg))  # before the plan: LoRA's size
  cfg.lora.rank = 0
  with pytest.raises(ValueError, match="disk: "):
    preflight.check_disk(cfg, pipelines.validate(cfg))  # full fine-tuning (what 'auto' may choose) does not
  # The run: 'auto' passes the check before work; the plan chooses full fine-tuning (stood in for
  # here: the planner's own tests measure its choice); the run stops before any stage, one config error.
  cfg.lora.rank, cfg.data.num_train, cfg.pretrain.steps = 4, 64, 1
  ran = []
  monkeypatch.setattr(pipelines, "plan_memory", lambda run, mesh, workdir: (
      dataclasses.replace(run, lora=dataclasses.replace(run.lora, rank=0)),
      {"remat": "none", "grad_accum": 1, "rollout_chunks": 1, "num_slots": 0, "lora_rank": 0}))
  monkeypatch.setattr(pipelines.pipeline, "run", lambda *a, **k: ran.append(1))
  with pytest.raises(errors.ConfigError, match="disk: .*lora.mode='auto' chose full fine-tuning"):
    pipelines.run(cfg)
  assert not ran


def test_a_ppo_critic_is_planned_resident_and_its_update_measured(unlimited):
  """grpo.advantage_estimator='gae': the critic's body, head and AdamW state are counted in the
  resident state (about the policy's parameters and moments again), its update is a measured
  phase, and every setting's peak holds the other model's state beside the running program."""
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  g = GRPOConfig(num_generations=G, max_completion_length=N, beta=0.04, advantage_estimator="gae")
  with jax.set_mesh(mesh):
    p = memory_grpo.plan(CFG, g, train_step.OptimConfig(), SamplingConfig(max_new_tokens=N, num_samples=G), mesh,
                         prompts_per_step=PROMPTS, prompt_len=P, log=lambda *a: None, limit_bytes=10 ** 12,
                         remat="none", grad_accum=1)
  n = CFG.num_params()
  critic = p.state_bytes - unlimited.state_bytes
  assert critic == pytest.approx(3 * 4 * (n + CFG.d_model + 1), rel=0.01)  # fp32 body + head, AdamW mu and nu
  assert set(p.phases) == {"generate", "reference", "update", "critic_update"}
  (t,) = p.tried
  assert t["update_peak_gib"] * memory.GiB == p.phases["update"].peak + critic
  assert t["critic_update_peak_gib"] * memory.GiB == p.phases["critic_update"].peak + unlimited.state_bytes


def test_lora_auto_plans_full_fine_tuning_first_then_lora_where_it_does_not_fit():
  """lora.mode='auto' (the 7B / 8B named configs): full fine-tuning when a setting of it fits; else
  LoRA at lora.rank, whose resident state is the frozen base plus small adapters (no reference copy,
  no moments of the base). A model whose state dominates its activations (one row per micro-batch)."""
  from r1jax.model.lora import LoRAConfig
  cfg = M.ModelConfig(vocab_size=512, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=64, d_ff=1024)
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  g = GRPOConfig(num_generations=2, max_completion_length=16, beta=0.04)
  lora = LoRAConfig(rank=4, mode="auto")

  def run(limit, lcfg):
    with jax.set_mesh(mesh):
      return memory_grpo.plan_lora(cfg, g, train_step.OptimConfig(), SamplingConfig(max_new_tokens=16, num_samples=2),
                                   mesh, prompts_per_step=2, prompt_len=16, log=lambda *a: None, remat="full",
                                   grad_accum=4, limit_bytes=limit, lora=lcfg)
  full, chosen = run(10 ** 12, lora)
  assert chosen.rank == 0  # it fits: full fine-tuning
  low, on = run(10 ** 12, LoRAConfig(rank=4, mode="on"))
  assert on.rank == 4
  n = cfg.num_params()
  assert full.state_bytes == pytest.approx(16 * n, rel=0.01)  # params, two moments, the reference
  from r1jax.model import lora as lora_lib
  import math
  r = sum(math.prod(s) for s in lora_lib.adapter_shapes(cfg, lora)["layers"].values())
  assert r < n / 20
  assert low.state_bytes == pytest.approx(4 * n + 12 * r, rel=0.01)  # the base once; adapters and their moments
  need = lambda p: max(max(t["update_peak_gib"], t["reference_peak_gib"]) for t in p.tried) * memory.GiB
  assert need(low) < need(full) / 2
  between = int((need(low) + need(full)) / 2 / memory.HEADROOM)
  p, chosen = run(between, lora)
  assert chosen.rank == 4 and p.state_bytes == low.state_bytes and "fits" in p.reason
  with pytest.raises(memory.DoesNotFitError):
    run(between, LoRAConfig(rank=0))


def test_the_r1_pipelines_disk_need_counts_lora_adapters_for_its_rl_checkpoints(tmp_path, monkeypatch):
  """experiments/r1.py with LoRA: its RL stages' checkpoints hold the adapters (fine_tune.grpo passes
  run.lora), so the check counts those; its SFT checkpoints and exported policies stay whole."""
  import shutil
  from r1jax import pipelines
  cfg = pipelines.r1_config()
  cfg.workdir, cfg.checkpoint.save_every, cfg.checkpoint.keep = str(tmp_path), 50, 3
  full = pipelines.validate(cfg)
  r, ck = full.r1, full.checkpoint
  steps = [r.reasoning_rl_steps, r.rl_all_steps] + ([r.reasoning_rl_steps + r.rl_all_steps] if r.compare_r1_zero else [])
  cfg.lora.rank = 4
  run = pipelines.validate(cfg)
  args = (run.model, run.optim, run.grpo.uses_reference, steps, ck.save_every, ck.keep)
  with_lora = preflight.disk_need(*args, policies=len(steps) * 2 + 4, sft_runs=2, lora=run.lora)
  whole = preflight.disk_need(*args, policies=len(steps) * 2 + 4, sft_runs=2)
  assert with_lora["bytes"] < whole["bytes"] and with_lora["params_bytes"] == whole["params_bytes"]
  free = (with_lora["bytes"] + whole["bytes"]) // 2
  monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 12, 10 ** 12 - free, free))
  preflight.check_disk(cfg, run)  # LoRA's checkpoints fit
  with pytest.raises(ValueError, match="disk: "):
    preflight.check_disk(cfg, full)  # full fine-tuning's do not
