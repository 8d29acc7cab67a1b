"""End to end: the GRPO loop resumes bit-identically, and every experiment file runs two steps."""
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from r1jax import checkpoint as ckpt_lib
from r1jax import model as M
from r1jax.model import presets
from r1jax import sharding
from r1jax import templates
from r1jax import tokenizer as tok_lib
from r1jax.rl import loop as train
from r1jax.rl import step as train_step
from r1jax.rl.config import GRPOConfig, TrainConfig
from r1jax.rewards import combine
from r1jax.sampling.sampler import SamplingConfig
from r1jax.tasks import arithmetic

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  train_ex, _ = arithmetic.split(64, 8, seed=1)
  d = tmp_path_factory.mktemp("tok")
  docs = [templates.format_prompt(e["question"], templates.R1_ZERO_TEMPLATE) + " <think> " + e["solution"]
          + " </think> <answer> " + e["final"] + " </answer>" for e in train_ex]
  tok = tok_lib.train_sentencepiece(docs, 600, d / "t.model", model_type="bpe")
  cfg = M.ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                      d_ff=64)
  return train_ex, tok, cfg


def _run(setup, workdir, steps, devices=1, **grpo):
  train_ex, tok, cfg = setup
  mesh = sharding.make_mesh(sharding.MeshConfig(fsdp=-1), jax.devices()[:devices])
  with jax.set_mesh(mesh):
    params = M.init_sharded(jax.random.key(0), cfg, mesh)
    g = GRPOConfig(**({"num_generations": 4, "beta": 0.04, "max_completion_length": 12} | grpo))
    s = SamplingConfig(max_new_tokens=12, temperature=1.0, num_samples=4, eos_ids=(tok.eos_id,), pad_id=tok.pad_id)
    return train.run_grpo(
        model_cfg=cfg, params=params, tokenizer=tok, examples=train_ex,
        reward_specs=combine.default_specs({"accuracy": 1.0, "format": 1.0}),
        template=templates.R1_ZERO_TEMPLATE,
        tcfg=TrainConfig(steps=steps, prompts_per_step=4, max_prompt_len=256, progress=False),
        gcfg=g, ocfg=train_step.OptimConfig(learning_rate=1e-2), scfg=s,
        ckcfg=ckpt_lib.CheckpointConfig(str(workdir / "ckpt"), save_every=2, keep=2), mesh=mesh, workdir=workdir)


def test_resume_is_bit_identical(setup, tmp_path):
  full = _run(setup, tmp_path / "full", 4)
  _run(setup, tmp_path / "split", 2)  # "killed" after its step-2 checkpoint
  resumed = _run(setup, tmp_path / "split", 4)  # the same command again: resumes at step 2
  assert len(resumed["history"]) == 2
  a = jax.tree.leaves(jax.device_get(full["state"]))
  b = jax.tree.leaves(jax.device_get(resumed["state"]))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  # The params moved (the comparison is not between two untouched initializations).
  train_ex, tok, cfg = setup
  init = M.init_params(jax.random.key(0), cfg)
  assert not np.array_equal(jax.device_get(full["state"].params["embed"]), np.asarray(init["embed"]))
  # Metrics carry the TRL names, logged every step across the restart.
  rows = [json.loads(l) for l in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  for k in ("reward", "rewards/accuracy/mean", "frac_reward_zero_std", "completions/mean_length", "kl",
            "clip_ratio/low_mean", "entropy", "grad_norm", "learning_rate", "time/generate", "tokens_per_second",
            "aha/reflection_rate"):
    assert k in rows[-1], k


@pytest.mark.slow
def test_resume_on_another_device_count(setup, tmp_path):
  """A run stopped after its step-2 checkpoint on 2 devices, started again on 4, reads that
  checkpoint straight into the 4-device shardings (the same values) and continues to step 4."""
  first = _run(setup, tmp_path, 2, devices=2)
  resumed = _run(setup, tmp_path, 4, devices=4)
  assert len(resumed["history"]) == 2 and int(resumed["state"].step) == 4
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  wq = resumed["state"].params["layers"]["wq"]
  assert len(wq.sharding.device_set) == 4 and wq.sharding.shard_shape(wq.shape)[1] == wq.shape[1] // 4
  # What run_grpo restored at step 2, read again into the 4-device run's shardings: the 2-device state.
  abstract = resumed["state"].abstract().tree()  # the checkpoint holds the state's members by name
  with ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(tmp_path / "ckpt"), async_save=False)) as ck:
    at_2, _ = ck.restore(2, abstract)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(at_2), jax.device_get(first["state"].tree()))
  assert all(len(x.sharding.device_set) == 4 for x in jax.tree.leaves(at_2))
  assert not np.array_equal(jax.device_get(resumed["state"].params["embed"]),
                            jax.device_get(first["state"].params["embed"]))


SOURCES = {
    "synthetic": ["--config.checkpoint.save_every=1"],
    "reasoning_gym": ["--config.data.source=reasoning_gym", "--config.data.rg_tasks=basic_arithmetic",
                      "--config.train.max_prompt_len=512", "--config.eval.max_prompt_len=512"],
    # GSM8K and HumanEval mixed: each prompt scored by its own checker (answer grader / sandbox).
    "math_and_code": ["--config.data.source=jsonl", "--config.train.max_prompt_len=512",
                      "--config.eval.max_prompt_len=512", "--config.rewards.code_timeout_s=5.0"],
}


@pytest.mark.slow
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_r1_zero_two_step_smoke(source, tmp_path, shared_data):
  """experiments/r1_zero.py runs two GRPO steps end to end on each data source, and writes its outputs."""
  # (GSM8K alone, the plain jsonl source, is the math_and_code run's first file.)
  paths = {"math_and_code": f"{shared_data / 'gsm8k_train.jsonl'},{shared_data / 'humaneval.jsonl.gz'}:humaneval"}
  extra = SOURCES[source] + ([f"--config.data.path={paths[source]}"] if source in paths else [])
  args = [sys.executable, str(REPO / "experiments" / "r1_zero.py"), f"--config.workdir={tmp_path}",
          "--config.train.steps=2", "--config.optim.total_steps=2", "--config.pretrain.steps=20",
          "--config.pretrain.optim.total_steps=20", "--config.pretrain.optim.warmup_steps=2",
          "--config.data.num_train=200", "--config.data.num_eval=16", "--config.eval.batch_size=16",
          "--config.train.progress=False", "--config.model.n_layers=1", "--config.model.d_model=32",
          "--config.model.head_dim=8", "--config.model.d_ff=64"] + extra
  out = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  for k in ("base_accuracy", "final_accuracy", "format_rate", "wall_seconds"):
    assert 0 <= summary[k] and (k == "wall_seconds" or summary[k] <= 1)
  assert (tmp_path / "plots" / "reward.png").exists()
  ev = json.loads((tmp_path / "eval_final" / "summary.json").read_text())
  # No held-out problem is dropped: a few HumanEval prompts exceed 512 tokens (those longer than the
  # tiny model's context less the new tokens are scored wrong), all 16 in the denominator.
  assert len((tmp_path / "eval_final" / "samples.jsonl").read_text().splitlines()) == 16 and ev["problems"] == 16
  longer = ev["prompts_too_long"] + ev["prompts_longer_than_max_prompt_len"]
  assert longer <= (3 if source == "math_and_code" else 0)
  if source == "math_and_code":  # code rows went through the sandbox, in training and in evaluation
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/accuracy/code_no_code" in r for r in rows)
    samples = [json.loads(l) for l in (tmp_path / "eval_final" / "samples.jsonl").read_text().splitlines()]
    assert {"passed", "failed", "timeout", "crashed", "no_code"} & {s["verdict"] for s in samples if "tests_total" in s}
  if source != "synthetic":
    return
  # The trained policy is saved and experiments/evaluate.py evaluates it (its two-step smoke).
  ev = subprocess.run([sys.executable, str(REPO / "experiments" / "evaluate.py"), f"--config.checkpoint={tmp_path / 'policy'}",
                       f"--config.out_dir={tmp_path / 'ev'}", "--config.max_examples=4", "--config.eval.num_samples=2",
                       "--config.progress=False"], capture_output=True, text=True, timeout=300)
  assert ev.returncode == 0, ev.stderr[-3000:]
  assert json.loads((tmp_path / "ev" / "summary.json").read_text())["arithmetic"]["samples"] == 8
  # The averaging stage over the run's two checkpoints.
  av = subprocess.run(args + ["--config.stage=average", "--config.average.last_k=2"], capture_output=True,
                      text=True, timeout=300, cwd=tmp_path)
  assert av.returncode == 0, av.stderr[-3000:]
  assert "averaged the parameters of steps [1, 2]" in av.stdout
  assert (tmp_path / "policy_avg").is_dir()
  # The averaged policy is also written as a Hugging Face directory, with the same weights.
  from safetensors.numpy import load_file
  from r1jax import policy as policy_lib
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  with jax.set_mesh(mesh):
    _, avg_params, _ = policy_lib.load_policy(tmp_path / "policy_avg", mesh)
  exported = load_file(tmp_path / "policy_avg_hf" / "model.safetensors")
  np.testing.assert_array_equal(exported["model.norm.weight"], np.asarray(avg_params["final_norm"]))
  np.testing.assert_array_equal(exported["model.embed_tokens.weight"], np.asarray(avg_params["embed"]))


def test_bad_config_fails_before_compiling(tmp_path):
  args = [sys.executable, str(REPO / "experiments" / "r1_zero.py"), f"--config.workdir={tmp_path}",
          "--config.grpo.loss_type=foo"]
  out = subprocess.run(args, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert "grpo.loss_type='foo' is not one of" in out.stderr
  assert not (tmp_path / "base").exists()  # nothing was built


def test_every_sweep_entry_is_a_valid_config():
  import importlib.util
  spec = importlib.util.spec_from_file_location("r1_zero", REPO / "experiments" / "r1_zero.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  from r1jax import experiment, pipelines
  for i in range(len(mod.sweep())):
    cfg = experiment.with_sweep(mod.get_config(), mod.sweep(), i)
    run = pipelines.validate(cfg)
    for key, value in mod.sweep()[i].items():
      section, field = key.split(".")
      if section in ("grpo", "train"):
        assert getattr(getattr(run, section), field) == value
  with pytest.raises(ValueError, match="unknown config field"):
    experiment.with_sweep(mod.get_config(), [{"grpo.nope": 1}], 0)


def test_too_long_prompts_are_skipped_or_fail(setup):
  from r1jax.sampling import rollout
  train_ex, tok, _ = setup
  long = dict(train_ex[0], question="What is " + " + ".join(["1"] * 200) + "?", id="long")
  kept, ids, dropped = rollout.encode_prompts([train_ex[0], long], tok, templates.R1_ZERO_TEMPLATE, 256)
  assert [e["id"] for e in kept] == [train_ex[0]["id"]] and dropped == 1
  with pytest.raises(ValueError, match=r"example 'long': prompt has \d+ tokens, more than .*max_prompt_len=256"):
    rollout.encode_prompts([long], tok, templates.R1_ZERO_TEMPLATE, 256, on_too_long="fail")


def test_nonfinite_losses_stop_the_run_with_a_clear_message(setup, tmp_path):
  """An absurd learning rate blows the parameters up; the following NaN updates are skipped and
  the run stops after train.max_nonfinite of them in a row, keeping the last good checkpoint."""
  train_ex, tok, cfg = setup
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  with jax.set_mesh(mesh):
    params = M.init_sharded(jax.random.key(0), cfg, mesh)
    s = SamplingConfig(max_new_tokens=8, temperature=1.0, num_samples=4, eos_ids=(tok.eos_id,), pad_id=tok.pad_id)
    with pytest.raises(train.NonFiniteError, match="2 consecutive steps had NaN/inf"):
      train.run_grpo(model_cfg=cfg, params=params, tokenizer=tok, examples=train_ex,
                     reward_specs=combine.default_specs({"accuracy": 1.0, "format": 1.0}),
                     template=templates.R1_ZERO_TEMPLATE,
                     tcfg=TrainConfig(steps=8, prompts_per_step=4, max_prompt_len=256, max_nonfinite=2,
                                      progress=False),
                     gcfg=GRPOConfig(num_generations=4, beta=0.0, max_completion_length=8, scale_rewards="none"),
                     ocfg=train_step.OptimConfig(learning_rate=1e30, max_grad_norm=1e30), scfg=s,
                     ckcfg=ckpt_lib.CheckpointConfig(str(tmp_path / "ckpt"), save_every=1, keep=2),
                     mesh=mesh, workdir=tmp_path)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows[-1]["nonfinite"] == 1 and rows[-2]["nonfinite"] == 1


@pytest.mark.slow  # the full suite's (CI time): the loop's dynamic sampling test runs in CI
def test_dapo_variant_runs_dynamic_sampling_mu_and_minibatches(setup, tmp_path):
  """DAPO settings through the loop: token-mean loss, clip-higher, no reference, dynamic sampling,
  overlong punishment, mu = 2 inner iterations over 2 minibatches, truncated completions masked."""
  train_ex, tok, cfg = setup
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  with jax.set_mesh(mesh):
    params = M.init_sharded(jax.random.key(0), cfg, mesh)
    g = GRPOConfig(num_generations=4, beta=0.0, loss_type="token_mean", eps_high=0.28, mu=2, num_minibatches=2,
                   dynamic_sampling=True, mask_truncated_completions=True, max_completion_length=8)
    s = SamplingConfig(max_new_tokens=8, temperature=1.0, num_samples=4, eos_ids=(tok.eos_id,), pad_id=tok.pad_id)
    out = train.run_grpo(
        model_cfg=cfg, params=params, tokenizer=tok, examples=train_ex,
        reward_specs=combine.default_specs({"accuracy": 1.0, "format": 1.0, "tag_count": 1.0}),
        template=templates.R1_ZERO_TEMPLATE,
        tcfg=TrainConfig(steps=2, prompts_per_step=4, max_prompt_len=256, progress=False,
                         overlong_weight=1.0, overlong_buffer=4, max_sampling_rounds=3),
        gcfg=g, ocfg=train_step.OptimConfig(learning_rate=1e-3), scfg=s,
        ckcfg=ckpt_lib.CheckpointConfig(str(tmp_path / "ckpt"), save_every=1, keep=1), mesh=mesh, workdir=tmp_path)
  assert out["state"].ref_params is None  # beta = 0: no reference model at all
  m = out["history"][-1]
  assert 1 <= m["sampling_rounds"] <= 3 and "kl" not in m
  assert "rewards/overlong/mean" in m and m["rewards/overlong/mean"] <= 0
  # 2 inner iterations x 2 minibatches = 4 optimizer steps per rollout.
  assert int(out["state"].step) == 8


@pytest.mark.slow
def test_reference_reset_every_n_steps(setup, tmp_path):
  """With ref_reset_every=2 the reference equals the policy right after step 2 and 4; without it
  the reference stays the initial parameters."""
  out = _run(setup, tmp_path / "reset", 4, ref_reset_every=2)
  st = jax.device_get(out["state"])
  jax.tree.map(np.testing.assert_array_equal, st.ref_params, st.params)
  kept = jax.device_get(_run(setup, tmp_path / "keep", 2)["state"])
  init = jax.device_get(M.init_sharded(jax.random.key(0), setup[2], sharding.make_mesh((1, 1, 1), jax.devices()[:1])))
  jax.tree.map(np.testing.assert_array_equal, kept.ref_params, init)
  assert not np.array_equal(kept.params["embed"], init["embed"])
  # With a reference and 2 minibatches x mu 2, the reference log-probs are sliced with the rows.
  mb = jax.device_get(_run(setup, tmp_path / "mb", 2, num_minibatches=2, mu=2)["state"])
  assert int(mb.step) == 8 and all(np.isfinite(x).all() for x in jax.tree.leaves(mb.params))


def test_model_presets_survive_config_overrides():
  """A preset chosen by name keeps every field (rope scaling included) under shell overrides."""
  import dataclasses
  from r1jax import pipelines
  cfg = pipelines.base_config()
  cfg.model.preset, cfg.model.dtype, cfg.model.vocab_size = "llama3.1-8b", "bfloat16", 128256
  got = pipelines.validate(cfg).model
  assert got == dataclasses.replace(presets.PRESETS["llama3.1-8b"], dtype="bfloat16")
  cfg.model.rope_scaling.factor = 4.0  # one rope field: the preset's others stay
  assert pipelines.validate(cfg).model.rope_scaling == dataclasses.replace(
      presets.PRESETS["llama3.1-8b"].rope_scaling, factor=4.0)
  cfg.model.rope_scaling.kind = "none"
  assert pipelines.validate(cfg).model.rope_scaling is None
  cfg.model.vocab_size = None  # a released model's preset without its checkpoint: refused
  with pytest.raises(ValueError, match="model.hf_checkpoint='' but model.preset='llama3.1-8b'"):
    pipelines.validate(cfg)
  cfg = pipelines.base_config()
  cfg.model.remat = "sometimes"
  with pytest.raises(ValueError, match="model.remat='sometimes' is not one of"):
    pipelines.validate(cfg)


@pytest.mark.slow
def test_r1_zero_lora_smoke(tmp_path):
  """experiments/r1_zero.py with --config.lora.rank=8: two GRPO steps of adapters on the tiny model;
  the plan records the rank, the checkpoint holds the adapters only, the policy is the merged model."""
  args = [sys.executable, str(REPO / "experiments" / "r1_zero.py"), f"--config.workdir={tmp_path}",
          "--config.train.steps=2", "--config.optim.total_steps=2", "--config.pretrain.steps=20",
          "--config.pretrain.optim.total_steps=20", "--config.pretrain.optim.warmup_steps=2",
          "--config.data.num_train=200", "--config.data.num_eval=16", "--config.eval.batch_size=16",
          "--config.train.progress=False", "--config.model.n_layers=1", "--config.model.d_model=32",
          "--config.model.head_dim=8", "--config.model.d_ff=64", "--config.lora.rank=8"]
  out = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "lora.rank=8" in out.stdout
  assert json.loads((tmp_path / "memory_plan.json").read_text())["lora_rank"] == 8
  size = lambda d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
  assert size(tmp_path / "ckpt" / "2") < size(tmp_path / "policy") / 1.5  # adapters and their moments only
  assert (tmp_path / "policy_hf" / "model.safetensors").exists()
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(rows) == 2 and all(r["nonfinite"] == 0 for r in rows)


@pytest.mark.slow
def test_the_train_stage_skips_the_evaluations_and_a_full_run_after_it_reuses_its_stages(tmp_path):
  """--config.stage=train: the base and GRPO (memory planned, checkpoints, metrics), no held-out
  evaluation; --config.stage=r1_zero afterwards finds both stages complete and runs the evaluations."""
  args = [sys.executable, str(REPO / "experiments" / "r1_zero.py"), f"--config.workdir={tmp_path}",
          "--config.train.steps=2", "--config.optim.total_steps=2", "--config.pretrain.steps=10",
          "--config.pretrain.optim.total_steps=10", "--config.pretrain.optim.warmup_steps=2",
          "--config.data.num_train=200", "--config.data.num_eval=8", "--config.eval.batch_size=8",
          "--config.train.progress=False", "--config.model.n_layers=1", "--config.model.d_model=32",
          "--config.model.head_dim=8", "--config.model.d_ff=64"]
  out = subprocess.run(args + ["--config.stage=train"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "memory plan:" in out.stdout and "no held-out evaluation" in out.stdout
  assert not (tmp_path / "eval_base").exists() and not (tmp_path / "eval_final").exists()
  assert not (tmp_path / "summary.json").exists() and (tmp_path / "policy_hf" / "model.safetensors").exists()
  assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
  full = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=tmp_path)
  assert full.returncode == 0, full.stderr[-3000:]
  assert "stage pretrain: complete, skipped" in full.stdout and "stage r1_zero: complete, skipped" in full.stdout
  assert "stage evaluate_final: running" in full.stdout
  assert json.loads((tmp_path / "summary.json").read_text())["train_steps"] == 2
