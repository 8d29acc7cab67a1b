"""The experiment config: generated from the library dataclasses, every field settable from the
shell, cross-section checks before any work, one-line errors with exit status 2."""
import dataclasses
import pathlib
import re
import subprocess
import sys

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from r1jax import config_sections
from r1jax import sharding
from r1jax import pipelines
from r1jax.evaluation import experiment as eval_experiment
from r1jax import model as M
from r1jax.model import presets
from r1jax.rl import step as train_step
from r1jax.evaluation import harness
from r1jax.rl.config import GRPOConfig
from r1jax.sampling.sampler import SamplingConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
R1_ZERO = REPO / "experiments" / "r1_zero.py"
R1 = REPO / "experiments" / "r1.py"
EVALUATE = REPO / "experiments" / "evaluate.py"

# A valid value other than the default for fields the generic rule below cannot guess.
SPECIAL = {
    "stage": "evaluate", "workdir": "/tmp/r1jax-cfg", "template": "Q: {prompt} A:",
    "model.dtype": "bfloat16", "model.param_dtype": "bfloat16", "model.remat": "full",
    "model.attention_impl": "xla", "model.decode_attention": "xla", "model.decode_gemm": "pallas", "sampling.rollout_weights": "fp8",
    "model.rope_scaling.kind": "linear",
    "model.vocab_size": 600, "model.d_model": 64, "model.n_layers": 2, "model.n_heads": 2, "model.n_kv_heads": 1,
    "model.head_dim": 16, "model.d_ff": 96, "model.max_seq_len": 1024, "model.logits_chunk": 1024,
    "model.logprob_impl": "fused", "model.vocab_chunk": 4096, "model.rope_theta": 5e5, "model.rms_eps": 1e-5, "model.rope_scaling.factor": 2.0,
    "model.rope_scaling.low_freq_factor": 2.0, "model.rope_scaling.high_freq_factor": 8.0,
    "model.rope_scaling.original_max_position": 4096, "model.rope_scaling.beta_fast": 16.0,
    "model.rope_scaling.beta_slow": 2.0, "model.rope_scaling.mscale": 0.5, "model.rope_scaling.mscale_all_dim": 0.5,
    "model.rope_scaling.attention_factor": 1.5, "model.rope_scaling.truncate": False,
    "tokenizer.path": "/tmp/tok.model", "tokenizer.model_type": "unigram",
    "mesh.fsdp": 8, "mesh.data": 2, "mesh.tensor": 2, "mesh.rules": "tensor",
    "data.source": "reasoning_gym", "data.path": "/tmp/x.jsonl", "data.eval_path": "/tmp/y.jsonl",
    "data.layout": "math", "data.on_bad_line": "skip", "data.rg_tasks": "leg_counting",
    "grpo.loss_type": "dr_grpo", "grpo.scale_rewards": "batch", "grpo.importance_sampling_level": "sequence",
    "grpo.tis": "sequence", "lora.targets": "q,v", "lora.base_dtype": "int8", "lora.mode": "auto",
    "grpo.grad_accum": "2", "train.rollout_chunks": "2", "eval.rollout_chunks": "2", "optim.decay": "cosine", "pretrain.optim.decay": "constant",
    "rewards.language_target": "zh", "rewards.answer_extraction": "last_number", "eval.answer_extraction": "last_number",
    "train.on_too_long": "fail", "train.resume": "weights", "checkpoint.directory": "/tmp/ck",
    "average.steps": "10,20", "sampling.eos_ids": (7,), "sampling.prompt_buckets": (64, 128),
    "sampling.pad_id": 5, "eval.group_by": ("subject",), "eval.language": "zh", "inputs": "policy=/tmp/p",
    "curation.language": "zh", "cold_start.teacher": "/tmp", "distill.teacher": "/tmp", "cold_start.selection": "random", "grpo.advantage_estimator": "gae",
    "sft.optim.decay": "constant", "reward_model.optim.decay": "constant", "prm.optim.decay": "constant", "prm.base": "/tmp", "prm.model": "/tmp",
    "mcts.depths": (1, 3), "mcts.branching": (3,), "mcts.selection": "uct", "mcts.base": "/tmp",
    "mcts.value_model": "/tmp", "mcts.optim.decay": "constant",
} | {f"{s}optim.state_dtype": "bfloat16" for s in ("", "pretrain.", "sft.", "reward_model.", "prm.", "mcts.")}
# Fields that need a companion setting to be valid (a derived field must agree with its source).
COMPANIONS = {
    "sampling.num_samples": {"grpo.num_generations": 4},
    "grpo.tis": {"grpo.recompute_old_logp": True},
    "sampling.max_new_tokens": {"grpo.max_completion_length": 24},
    "model.preset": {"model.vocab_size": 151936},
    "mesh.data": {"mesh.fsdp": -1}, "mesh.tensor": {"mesh.fsdp": -1}, "inputs": {"stage": "evaluate"},
}
SKIP = {"model.hf_checkpoint"}  # needs a checkpoint directory: tests/test_docs.py runs it


def leaves(cfg: ml_collections.ConfigDict, prefix=""):
  for k in cfg.keys():
    v = cfg[k]
    if isinstance(v, ml_collections.ConfigDict):
      yield from leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v, cfg.get_type(k)


def new_value(path, default, typ):
  if path in SPECIAL:
    return SPECIAL[path]
  if path == "model.preset":
    return "qwen2.5-0.5b"
  if path in COMPANIONS:
    return next(iter(COMPANIONS[path].values()))
  if typ is bool:
    return not default
  if typ is int:
    return 1 if default is None else default + 1
  if typ is float:
    return 0.5 if not default else default / 2
  if typ is str:
    return "x" if not default else default + "x"
  raise AssertionError(f"no test value for {path} ({typ})")


def shell(value) -> str:
  return repr(value) if isinstance(value, tuple) else str(value)


def parse(config_file, argv):
  """What the shell gives the experiment (config_flags reads the overrides from sys.argv)."""
  saved, sys.argv = sys.argv, ["prog"] + argv
  try:
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", str(config_file), flag_values=fv, lock_config=False)
    fv(sys.argv)
    return fv.config
  finally:
    sys.argv = saved


def reached(run, cfg, path):
  """Where a config field ends up after validation."""
  head, *rest = path.split(".")
  if not rest:
    return cfg[head]
  field = rest[-1]
  if path == "model.remat":
    return run.remat
  if path == "grpo.grad_accum":
    return str(run.grad_accum)
  if path == "train.rollout_chunks":
    return str(run.rollout_chunks)
  if path == "model.preset":  # every model field the config leaves unset comes from the preset
    preset = presets.PRESETS[cfg.model.preset]
    unset = [f.name for f in dataclasses.fields(M.ModelConfig) if cfg.model.get(f.name) is None]
    assert len(unset) > 3 and all(getattr(run.model, f) == getattr(preset, f) for f in unset), unset
    return cfg.model.preset
  if head == "model" and rest[0] == "rope_scaling":
    return getattr(run.model.rope_scaling, field)
  if len(rest) == 2:  # a nested section: pretrain.optim, sft.optim, reward_model.optim
    return getattr(getattr(getattr(run, head), rest[0]), field)
  return getattr(getattr(run, head), field)


def test_every_field_of_every_section_is_settable_from_the_shell():
  base = pipelines.base_config()
  paths = [(p, d, t) for p, d, t in leaves(base) if p not in SKIP]
  assert len(paths) > 120  # every section, not a handful
  for path, default, typ in paths:
    value = new_value(path, default, typ)
    assert value != default, path
    extra = COMPANIONS.get(path, {})
    argv = [f"--config.{k}={shell(v)}" for k, v in extra.items()] + [f"--config.{path}={shell(value)}"]
    cfg = parse(R1_ZERO, argv)
    run = pipelines.validate(cfg)
    got = reached(run, cfg, path)
    assert got == value, (path, got, value)


def test_every_field_of_the_pipeline_sections_is_settable_from_the_shell():
  """experiments/r1.py adds one section per pipeline stage config; each field reaches its dataclass."""
  paths = [(p, d, t) for p, d, t in leaves(pipelines.r1_config()) if p.split(".")[0] in pipelines.R1_SECTIONS]
  assert len(paths) > 50
  for path, default, typ in paths:
    value = new_value(path, default, typ)
    assert value != default, path
    cfg = parse(R1, [f"--config.{path}={shell(value)}"])
    assert reached(pipelines.validate(cfg), cfg, path) == value, path
  cfg = parse(R1, ["--config.stage=rl_all"])
  assert pipelines.validate(cfg) and cfg.stage == "rl_all"
  with pytest.raises(ValueError, match=re.escape("stage='nope' is not one of ('all', 'pretrain'")):
    pipelines.validate(parse(R1, ["--config.stage=nope"]))
  with pytest.raises(ValueError, match=re.escape("inputs='policy': each entry is NAME=PATH")):
    pipelines.validate(parse(R1, ["--config.stage=sft", "--config.inputs=policy"]))
  with pytest.raises(ValueError, match=re.escape("inputs='data=x' with stage='all': 'data' must name its stage")):
    pipelines.validate(parse(R1, ["--config.inputs=data=x"]))
  with pytest.raises(ValueError, match=re.escape("'nope.data' must name its stage")):
    pipelines.validate(parse(R1, ["--config.inputs=sft.data=x,nope.data=y"]))
  assert pipelines.validate(parse(R1, ["--config.inputs=sft.data=x,cold_start_sft.data=y"]))


def test_the_config_is_generated_from_the_dataclass_defaults():
  """The experiment file overrides only what differs: untouched fields equal the library's defaults."""
  base = pipelines.base_config()
  for section, cls in (("grpo", GRPOConfig), ("optim", train_step.OptimConfig), ("eval", harness.EvalConfig)):
    defaults = config_sections.dataclass_defaults(cls)
    for k, v in base[section].items():
      if k not in ("grad_accum", "total_steps"):
        assert (list(v) if isinstance(v, tuple) else v) == defaults[k], (section, k)
  # A new dataclass field appears in the shell config without editing any experiment file.
  assert set(base.sampling) == {f.name for f in dataclasses.fields(SamplingConfig)}
  assert set(base.model) == {f.name for f in dataclasses.fields(M.ModelConfig)} | {"preset", "hf_checkpoint"}


def test_evaluate_config_fields_are_settable():
  for path, default, typ in leaves(eval_experiment.config()):
    if not path.startswith(("eval.", "mesh.")):
      continue
    value = new_value(path, default, typ)
    extra = COMPANIONS.get(path, {})
    cfg = parse(EVALUATE, [f"--config.{k}={shell(v)}" for k, v in extra.items()] + [f"--config.{path}={shell(value)}"])
    head, field = path.split(".")
    assert getattr(config_sections.to_dataclass({"eval": harness.EvalConfig, "mesh": sharding.MeshConfig}[head],
                                                cfg[head], head), field) == value, path


ERRORS = [
    (["--config.grpo.loss_type=foo"], "grpo.loss_type='foo' is not one of"),
    (["--config.grpo.num_minibatches=5"], "128 rows must split into grpo.num_minibatches=5"),
    (["--config.sampling.max_new_tokens=64"], "sampling.max_new_tokens=64 must equal grpo.max_completion_length=40"),
    (["--config.model.n_heads=3"], "model.n_heads=3 must be a multiple of model.n_kv_heads=2"),
    (["--config.data.source=jsonl", "--config.data.path=/nonexistent.jsonl"], "data.path='/nonexistent.jsonl': no such"),
    (["--config.grpo.grad_accum=zero"], "grpo.grad_accum='zero' must be 'auto' or an int >= 1"),
    ([f"--config={R1_ZERO}:qwen2.5-0.5b"], "model.hf_checkpoint='' but model.preset='qwen2.5-0.5b'"),
]
"""Errors `validate` raises (checked in-process below; the first also through the shell)."""


@pytest.mark.parametrize("argv, message", ERRORS)
def test_validate_names_the_field_the_value_and_what_is_allowed(argv, message):
  first = [a for a in argv if a.startswith("--config=")]
  cfg = parse(first[0].split("=", 1)[1] if first else R1_ZERO, [a for a in argv if a not in first])
  with pytest.raises(ValueError, match=re.escape(message)):
    pipelines.validate(cfg)


@pytest.mark.parametrize("argv, message", [
    ERRORS[0],
    (["--config.grpo.nope=1"], "unknown config field 'grpo.nope'"),
    (["--config.grpo.beta=abc"], "--config.grpo.beta=abc: could not convert"),
    ([f"--config={R1_ZERO}:nope"], "config name 'nope' is not one of"),
    (["extra_positional"], "unexpected arguments"),
])
def test_config_errors_are_one_line_with_status_2_before_any_work(tmp_path, argv, message):
  work = tmp_path / "run"
  first = [a for a in argv if a.startswith("--config=")]  # a config file comes before its overrides
  argv = first + [f"--config.workdir={work}"] + [a for a in argv if a not in first]
  out = subprocess.run([sys.executable, str(R1_ZERO), *argv], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.strip() and not l.startswith(("I1", "W1", "WARNING:"))]
  assert lines == [lines[-1]] and lines[0].startswith("config error: ") and message in lines[0], out.stderr[-2000:]
  assert not work.exists()  # nothing was written, trained or compiled


def test_evaluate_config_errors_exit_2(tmp_path):
  out = subprocess.run([sys.executable, str(EVALUATE), f"--config.checkpoint={tmp_path / 'none'}"],
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and "config error: checkpoint=" in out.stderr and "no such directory" in out.stderr


def test_a_resolved_run_is_frozen_and_the_memory_plan_returns_a_new_one(tmp_path, monkeypatch):
  """config.resolve: every section a frozen dataclass, 'auto' kept as asked beside the placeholder
  in use; the memory plan's choices come as a new Run, the one given is unchanged. (The planner's
  own choice here is remat none, grad_accum 1, the placeholders' values: its plan is taken with
  other choices so that carrying them is seen.)"""
  import jax
  from r1jax import memory_grpo
  real_plan = memory_grpo.plan
  monkeypatch.setattr(memory_grpo, "plan", lambda *a, **k: dataclasses.replace(real_plan(*a, **k), remat="full",
                                                                               grad_accum=2))
  cfg = config_sections.apply_overrides(pipelines.base_config(), {
      "model.preset": "tiny-r1-zero", "model.vocab_size": 64, "model.n_layers": 1, "model.d_model": 32,
      "model.head_dim": 8, "model.d_ff": 64, "grpo.num_generations": 4, "grpo.max_completion_length": 8,
      "train.prompts_per_step": 2, "train.max_prompt_len": 16}, "test")
  run = pipelines.validate(cfg)
  assert (run.remat, run.grad_accum) == ("auto", "auto") and (run.model.remat, run.grpo.grad_accum) == ("none", 1)
  assert run.from_tokenizer == ("sampling.pad_id",)  # model.vocab_size is given
  with pytest.raises(dataclasses.FrozenInstanceError):
    run.grpo = None
  before = dataclasses.replace(run)
  mesh = sharding.make_mesh(run.mesh)
  with jax.set_mesh(mesh):
    planned, summary = pipelines.plan_memory(run, mesh, tmp_path)
  assert run == before
  assert (planned.model.remat, planned.grpo.grad_accum) == (summary["remat"], summary["grad_accum"]) == ("full", 2)
  assert dataclasses.replace(planned, model=run.model, grpo=run.grpo) == run
  assert summary["asked"] == {"model.remat": "auto", "grpo.grad_accum": "auto", "train.rollout_chunks": "auto",
                              "sampling.num_slots": 0, "lora.rank": 0, "lora.mode": "on"}


def test_derived_facts_of_the_sections():
  """GRPOConfig.uses_reference, GRPOConfig.check_rows and MeshConfig.batch_shards against what
  they stand for: a KL term, a reshape of the step's rows, the mesh's data x fsdp axes."""
  import jax
  import numpy as np
  assert not GRPOConfig(beta=0.0).uses_reference and GRPOConfig(beta=0.04).uses_reference
  for prompts, G, mb, accum, shards in [(p, g, m, a, s) for p in (2, 3, 4) for g in (2, 4) for m in (1, 2, 3)
                                         for a in (1, 2) for s in (1, 2, 8)]:
    try:  # the rows laid out as (minibatch, micro-batch, shard, rows of each)
      np.arange(prompts * G).reshape(mb, accum, shards, -1)
      fits = True
    except ValueError:
      fits = False
    gcfg = GRPOConfig(num_generations=G, num_minibatches=mb, grad_accum=accum)
    if fits:
      gcfg.check_rows(prompts, shards)
    else:
      with pytest.raises(ValueError, match=f"{prompts * G} rows must split into grpo.num_minibatches={mb}"):
        gcfg.check_rows(prompts, shards)
  for shape in [dict(data=2, fsdp=-1), dict(fsdp=2, tensor=4), dict(data=2, fsdp=2, tensor=2), dict(fsdp=1, tensor=-1)]:
    mcfg = sharding.MeshConfig(**shape)
    mesh = sharding.make_mesh(mcfg)
    assert mcfg.batch_shards(jax.device_count()) == sharding.batch_shards(mesh) == mesh.shape["data"] * mesh.shape["fsdp"]
