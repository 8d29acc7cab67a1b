"""The benchmark scripts run on CPU at tiny sizes (so they do not rot): every command their docstrings
print, with flags appended that shrink it (later flags win); no timings are asserted."""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

import documented

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
# The workload of a GRPO step at its tiniest, for r1jax and the peers alike (benchmarks/peers/workload.py).
TINY_STEP = ["--preset", "tiny", "--prompts", "2", "--G", "4", "--prompt_len", "32", "--new_tokens", "16", "--steps", "1"]
# Each documented command: the flags its runner below appends to make it CPU-sized (later flags win).
TINY = {
    "python benchmarks/code_sandbox.py --completions 128 --workers 0,2,4,8 --out code_sandbox.json":
        ["--completions", "8", "--workers", "0,2", "--repeats", "1"],
    "python benchmarks/continuous_batching.py --preset qwen2.5-0.5b --prompts 64 --G 8 --slots 128 "
    "--out $OUT/cb.json": ["--tiny", "--slots", "2"],
    "python benchmarks/eval_throughput.py --preset qwen2.5-0.5b --problems 512 --k 4 --max_new_tokens 512 "
    "--batch_size 256 --slots 1024 --out $OUT/eval_throughput.json": ["--tiny"],
    # No peers: their packages are not installed here (each peer's script has its own runner).
    "python benchmarks/grpo_step.py --preset qwen2.5-0.5b --peers tunix,trl --out grpo.json": TINY_STEP + ["--peers", ""],
    "python benchmarks/model_bench.py --presets qwen2.5-0.5b,qwen2.5-1.5b --out results.json":
        ["--smoke", "--presets", "tiny", "--decode_batches", "2", "--prompt_len", "8", "--new_tokens", "4",
         "--train_batch", "2", "--seq", "16"],
    "python benchmarks/named_configs.py --names qwen2.5-0.5b,qwen2.5-1.5b,qwen2.5-7b --steps 3 --out named.json":
        ["--tiny", "--names", "qwen2.5-0.5b", "--steps", "2"],
    "python benchmarks/pipeline_gpu.py --name qwen2.5-0.5b --out pipeline.json":
        ["--tiny", "--steps", "1", "--prompts", "2", "--sft_examples", "8"],
    "python benchmarks/rollout_plan.py --name qwen3-1.7b --out plan_dir": ["--name", "tiny"],
    "python benchmarks/peers/trl_grpo.py --preset qwen2.5-0.5b --out trl_grpo.json": TINY_STEP,
    "python benchmarks/peers/trl_grpo.py --preset tiny --steps 1": TINY_STEP,
    "python benchmarks/peers/trl_grpo.py --preset qwen2.5-0.5b --continuous_batching 1": TINY_STEP,
    "python benchmarks/peers/tunix_grpo.py --preset qwen2.5-0.5b --out tunix_grpo.json": TINY_STEP,
    "python benchmarks/peers/tunix_grpo.py --preset tiny --steps 1": TINY_STEP,
}


def benchmark_commands() -> list[tuple[str, str]]:
  """(script, command) for every `python ...` command in the benchmark scripts' module docstrings;
  script relative to benchmarks/ (`peers/trl_grpo.py`)."""
  return [(f.relative_to(BENCHMARKS).as_posix(), c) for f in sorted(BENCHMARKS.rglob("*.py"))
          for c in documented.commands_in(documented.module_docstring(f.read_text()))]


def _commands(script: str) -> list[str]:
  return [c for s, c in benchmark_commands() if s == script]


def test_every_documented_benchmark_command_has_a_runner():
  """Each command a benchmark's docstring prints has its shrinking flags in TINY, and each script
  with one a runner below that takes its commands (a new command or script needs one)."""
  listed = benchmark_commands()
  assert {c for _, c in listed} == set(TINY) and len(listed) == len(TINY) == 13
  assert all(c.split()[1] == f"benchmarks/{s}" for s, c in listed)
  runners = re.findall(r'(?:_commands|_peer_results)\("([\w/.]+)"', pathlib.Path(__file__).read_text())
  assert set(runners) == {s for s, _ in listed}


def _run(cmd: str, tmp_path: pathlib.Path, extra=(), one_device=False, timeout=600) -> subprocess.CompletedProcess:
  """Runs a documented command with its TINY flags and then `extra` appended, in `tmp_path` (its
  relative outputs and `$OUT` land there), the script taken from this checkout, on CPU: the suite's 8
  simulated devices, or one, as a user has."""
  env, argv = documented.split_command(cmd, tmp_path)
  argv[1] = str(ROOT / argv[1])
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu") | env
  if one_device:  # compiled at LLVM level 0 as the suite is (tests/conftest.py)
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
  p = subprocess.run(argv + TINY[cmd] + list(extra), cwd=tmp_path, capture_output=True, text=True, env=env,
                     timeout=timeout)
  assert p.returncode == 0, f"{cmd}\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
  return p


@pytest.mark.slow  # the full suite's (CI time)
def test_grpo_step_benchmark_runs_and_reports(tmp_path):
  (cmd,) = _commands("grpo_step.py")
  p = _run(cmd, tmp_path, ["--grad_accum", "2", "--mesh", "2,2,2", "--rules", "tensor", "--lengths", "lognormal",
                           "--mean_len", "6", "--slots", "4"])
  assert "| r1jax |" in p.stdout
  r = json.loads((tmp_path / "grpo.json").read_text())["results"][0]
  assert r["system"] == "r1jax" and r["rows"] == 8 and r["grad_accum"] == 2
  assert r["mesh"] == [2, 2, 2] and r["rules"] == "tensor" and r["devices"] == 8 and r["processes"] == 1
  assert r["tokens_per_s"] > 0 and r["step_s"] >= r["generate_s"] > 0
  # Long-tailed lengths through 4 continuous-batching slots over the sharded rows.
  assert r["lengths"] == "lognormal" and r["slots"] == 4 and 8 <= r["generated_tokens"] < 8 * 16
  m = r["rollout_mismatch"]  # sampler vs trainer in float32 on CPU: the same log-probs (tests/test_sampler.py)
  assert 0 <= m["mismatch/abs_mean"] <= m["mismatch/abs_max"] < 2e-5 and 0 <= m["mismatch/k3"] < 1e-9
  # The ceilings every fraction is taken against: the best of each kind over sizes and repeats.
  c = r["ceilings"]
  assert c["copy_bandwidth_Bps"] == max(c["detail"]["copy"].values()) > 0
  assert c["read_bandwidth_Bps"] == max(c["detail"]["read"].values()) > 0
  assert c["bandwidth_Bps"] == max(c["copy_bandwidth_Bps"], c["read_bandwidth_Bps"])
  assert c["bf16_matmul_flops"] == max(c["detail"]["matmul"].values())
  assert len(c["detail"]["copy"]) == len(c["detail"]["read"]) == len(c["detail"]["matmul"]) == 2
  assert set(r["memory"]) >= {"params", "optimizer_state", "reference", "kv_cache", "temp_update"}
  assert r["memory"]["optimizer_state"] == 2 * r["memory"]["params"] + 8  # AdamW mu, nu (+ count)


@pytest.mark.slow
def test_grpo_step_benchmark_ppo_with_a_critic(tmp_path):
  """--algo ppo: the critic's values, GAE and update inside the step; the critic held as a second
  policy-sized model with its own AdamW state."""
  (cmd,) = _commands("grpo_step.py")
  p = _run(cmd, tmp_path, ["--algo", "ppo", "--mesh", "1,-1,1"])
  assert "| r1jax (PPO) |" in p.stdout
  r = json.loads((tmp_path / "grpo.json").read_text())["results"][0]
  assert r["algo"] == "ppo" and r["critic_s"] > 0 and r["step_s"] >= r["critic_s"] + r["update_s"]
  mem = r["memory"]  # body + head (d_model + 1 floats), and AdamW's two moments of both (+ count)
  d = (mem["critic"] - 3 * mem["params"] - 8) / 3
  assert d > 0 and d == int(d)


@pytest.mark.slow
@pytest.mark.parametrize("base_dtype", ["int8", "bfloat16"])
def test_grpo_step_benchmark_lora(tmp_path, base_dtype):
  """--lora_rank: adapters trained beside the frozen base, which is also the reference: no reference
  copy, AdamW state of the adapters only; rollouts with the adapters merged (bfloat16) or beside W (int8)."""
  (cmd,) = _commands("grpo_step.py")
  p = _run(cmd, tmp_path, ["--lora_rank", "8", "--lora_base_dtype", base_dtype, "--mesh", "1,-1,1"])
  assert "| r1jax (LoRA r=8) |" in p.stdout
  r = json.loads((tmp_path / "grpo.json").read_text())["results"][0]
  mem = r["memory"]
  assert r["lora_rank"] == 8 and r["lora_base_dtype"] == base_dtype and mem["reference"] == 0 and r["lora_merge_rollout"]
  assert mem["optimizer_state"] == 2 * mem["params"] + 8 and 0 < mem["params"] < mem["frozen_base"]
  assert r["tokens_per_s"] > 0 and r["step_s"] >= r["generate_s"] > 0


@pytest.mark.slow
def test_grpo_step_benchmark_fp8_rollout(tmp_path):
  """--rollout_weights fp8: the sampler decodes an fp8 copy of the projections, the trainer its float
  weights; the mismatch between their log-probs is then the quantization's, measured (nonzero, where
  the float32 sampler of the compute path matches to < 2e-5), and the decode reads fewer bytes than
  the float32 parameters."""
  (cmd,) = _commands("grpo_step.py")
  _run(cmd, tmp_path, ["--rollout_weights", "fp8", "--mesh", "1,-1,1"])
  r = json.loads((tmp_path / "grpo.json").read_text())["results"][0]
  assert r["rollout_weights"] == "fp8" and r["rollout_mismatch"]["mismatch/abs_mean"] > 1e-4
  # (the bytes' split between the projections and the rest: test_model_bench_decode_rollout_weights)
  assert 0 < r["decode_weights_bytes"] < r["memory"]["params"]


@pytest.mark.slow  # a GPU benchmark's CPU smoke
def test_model_bench_decode_rollout_weights(tmp_path):
  """--rollout_weights compute,int8,fp8: each decode measured with the weights it reads, the 8-bit
  projections half the compute dtype's bytes, and the program's temporary bytes recorded."""
  out = tmp_path / "mb.json"
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "model_bench.py"), "--presets", "tiny",
                      "--decode_batches", "2", "--prompt_len", "8", "--new_tokens", "3", "--rollout_weights",
                      "compute,int8,fp8", "--temp_bytes", "--skip", "prefill,train", "--smoke", "--out", str(out)],
                     capture_output=True, text=True, env=env, timeout=600)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
  runs = json.loads(out.read_text())["runs"]
  assert [r["rollout_weights"] for r in runs] == ["compute", "int8", "fp8"] and "FAILED" not in p.stdout
  assert runs[1]["weights_bytes"] == runs[2]["weights_bytes"] < runs[0]["weights_bytes"]
  assert all(r["tokens_per_s"] > 0 and r["generate_temp_bytes"] > 0 for r in runs)


def test_code_sandbox_benchmark_runs_and_reports(tmp_path):
  (cmd,) = _commands("code_sandbox.py")
  p = _run(cmd, tmp_path, timeout=300)
  assert "| workers | wall s | programs/s |" in p.stdout
  r = json.loads((tmp_path / "code_sandbox.json").read_text())["results"]
  assert [x["workers"] for x in r] == [2 * os.cpu_count(), 2] and all(x["programs_per_s"] > 0 for x in r)
  assert r[0]["verdicts"]["passed"] == 6 and r[0]["verdicts"]["failed"] == 2  # every 4th is a wrong stub


@pytest.mark.slow  # the full suite's (CI time): a GPU benchmark's CPU smoke
def test_model_bench_decode_variants_run_and_report(tmp_path):
  """The decode projections' variants (split-K x XLA / Pallas GEMM, `r1jax.model.decode_gemm`) each
  measured and recorded, over caches written before attention; the Pallas kernels interpreted on CPU."""
  out = tmp_path / "mb.json"
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "model_bench.py"), "--presets", "tiny",
                      "--decode_batches", "4", "--prompt_len", "8", "--new_tokens", "3", "--decode_attention", "pallas",
                      "--unroll_decode", "1", "--decode_split_k", "0,4", "--decode_gemm", "xla,pallas",
                      "--decode_write_first", "1", "--skip",
                      "prefill,train", "--smoke", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
  assert "FAILED" not in p.stdout and p.stdout.count("split_k=4 gemm=pallas") == 1
  runs = json.loads(out.read_text())["runs"]
  assert [(r["decode_split_k"], r["decode_gemm"]) for r in runs] == [(0, "xla"), (0, "pallas"), (4, "xla"), (4, "pallas")]
  assert all(r["kind"] == "decode" and r["decode_attention"] == "pallas" and r["decode_write_first"]
             and r["tokens_per_s"] > 0 for r in runs)


@pytest.mark.slow  # the full suite's (CI time): a GPU benchmark's CPU smoke
def test_continuous_batching_benchmark_runs_and_reports(tmp_path):
  (cmd,) = _commands("continuous_batching.py")
  p = _run(cmd, tmp_path, timeout=300)
  assert "speed-up" in p.stdout
  r = json.loads((tmp_path / "cb.json").read_text())
  lengths = r["lengths"]
  assert len(lengths) == 8 and max(lengths) > 2 * min(lengths)  # long-tailed, capped at --max_len
  assert [x["slots"] for x in r["results"]] == [2]
  for x in r["results"]:
    assert x["generated_tokens"] == sum(lengths) and x["static_tokens_per_s"] > 0 and x["continuous_tokens_per_s"] > 0
    # Static batches run to their longest row; refilled slots need fewer steps for the same tokens.
    assert sum(lengths) / x["slots"] <= x["continuous_steps"] < x["static_steps"]


@pytest.mark.slow  # the full suite's (CI time): a GPU benchmark's CPU smoke
def test_eval_throughput_benchmark_runs_and_reports(tmp_path):
  (cmd,) = _commands("eval_throughput.py")
  p = _run(cmd, tmp_path)
  r = json.loads((tmp_path / "eval_throughput.json").read_text())
  assert json.loads(p.stdout.strip().splitlines()[-1]) == r  # the printed JSON line
  assert r["rows"] == 12 and "EOS off" in r["lengths"]
  # Every row generated exactly its forced length (r1jax asserts its total internally too).
  assert r["r1jax"]["generated_tokens"] > r["transformers"]["generated_tokens"] > 0
  assert r["ratio"] == pytest.approx(r["r1jax"]["tokens_per_s"] / r["transformers"]["tokens_per_s"])
  # Two of the three answers the tokenizer writes equal the reference under math-verify.
  assert 0 < r["r1jax"]["pass@1"] < 1 and r["r1jax"]["timeouts"] == 0


def test_named_configs_streams_each_run_to_its_log_and_cuts_an_overrun(tmp_path):
  """benchmarks/named_configs.py's `stream`: every output line lands in the log as it comes, behind
  the seconds since the start; the exit code comes back; a run past its time is killed and reported
  as 'timeout' with what it printed before."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("named_configs", ROOT / "benchmarks" / "named_configs.py")
  named = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(named)
  log = tmp_path / "run.log"
  rc, tail = named.stream([sys.executable, "-c", "import sys; print('one'); print('two', file=sys.stderr); sys.exit(3)"],
                          log, timeout=60)
  lines = log.read_text().splitlines()
  assert rc == 3 and [l.split()[1] for l in lines] == ["one", "two"] and tail.splitlines() == lines
  assert all(float(l.split()[0]) >= 0 for l in lines)
  rc, tail = named.stream([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                          log, timeout=2)
  assert rc == "timeout" and "started" in tail and "started" in log.read_text()


@pytest.mark.slow  # the full suite's (CI time): a GPU benchmark's CPU smoke
def test_model_bench_runs_and_reports(tmp_path):
  """benchmarks/model_bench.py: the ceilings, then decode, prefill and forward+backward of the tiny
  preset, each measured (tokens/s > 0) and set against the ceilings it measured."""
  (cmd,) = _commands("model_bench.py")
  p = _run(cmd, tmp_path)
  r = json.loads((tmp_path / "results.json").read_text())
  c = r["ceilings"]
  assert c["bandwidth_Bps"] > 0 and c["bf16_matmul_flops"] > 0 and "device cpu" in p.stdout
  assert [(x["preset"], x["kind"], x.get("remat")) for x in r["runs"]] == [
      ("tiny", "decode", None), ("tiny", "prefill", None), ("tiny", "fwd+bwd", "none"), ("tiny", "fwd+bwd", "dots")]
  assert all(x["tokens_per_s"] > 0 for x in r["runs"])
  decode = r["runs"][0]
  assert decode["batch"] == 2 and decode["roofline_frac"] == pytest.approx(
      decode["bytes_per_step"] / c["bandwidth_Bps"] / decode["step_s"])
  assert all(x["mfu"] == pytest.approx(x["flops"] / x["s"] / c["bf16_matmul_flops"]) for x in r["runs"][1:])


@pytest.mark.slow  # the full suite's (CI time): a GPU benchmark's CPU smoke
def test_named_configs_benchmark_runs_and_reports(tmp_path):
  """benchmarks/named_configs.py --tiny on its first name: the tiny checkpoint built in a child
  process, the named config's R1-Zero run shortened as tests/test_docs.py shortens README's command
  (`--extra`), its memory plan and step times read back from the run."""
  from test_docs import SHORT
  (cmd,) = _commands("named_configs.py")
  p = _run(cmd, tmp_path, ["--extra=" + " ".join(SHORT["r1_zero.py:hf"]), f"--log_dir={tmp_path}"], one_device=True,
           timeout=900)
  (r,) = json.loads((tmp_path / "named.json").read_text())["results"]
  assert r["name"] == "qwen2.5-0.5b" and r["returncode"] == 0, r.get("error")
  assert r["plan"]["limit_gib"] > 0 and "fits" in r["plan"]["reason"]
  assert r["step_s"] >= r["generate_s"] > 0 and r["update_s"] > 0 and r["tokens_per_s"] > 0
  assert (tmp_path / "qwen2.5-0.5b.log").read_text().strip() and "| qwen2.5-0.5b | " in p.stdout


@pytest.mark.slow  # the full suite's (CI time): a GPU benchmark's CPU smoke
def test_pipeline_gpu_benchmark_runs_and_reports(tmp_path):
  """benchmarks/pipeline_gpu.py --tiny: every stage of experiments/r1.py's named config on the tiny
  checkpoint with the GSM8K reference data, each stage's wall time recorded."""
  (cmd,) = _commands("pipeline_gpu.py")
  p = _run(cmd, tmp_path, [f"--workdir={tmp_path / 'work'}"], one_device=True, timeout=900)
  r = json.loads((tmp_path / "pipeline.json").read_text())
  assert r["returncode"] == 0, r["log_tail"]
  assert {"cold_start_sft", "sft", "reward_model"} <= set(r["stages"]) and r["plan"] is not None
  assert all(s["wall_s"] > 0 for s in r["stages"].values()) and "returncode 0" in p.stdout


@pytest.mark.slow  # the full suite's (CI time): a benchmark script's smoke
def test_rollout_plan_benchmark_plans_a_named_config_without_weights(tmp_path):
  """benchmarks/rollout_plan.py (the GPU measurement of a named config's plan) on the tiny default:
  the run's plan line, and memory_plan.json with the rollout's setting beside remat and grad_accum."""
  (cmd,) = _commands("rollout_plan.py")
  out = _run(cmd, tmp_path, ["--set", "train.rollout_chunks=2"])
  plan = json.loads((tmp_path / "plan_dir" / "memory_plan.json").read_text())
  assert plan["rollout_chunks"] == 2 and plan["asked"]["train.rollout_chunks"] == 2
  assert [t["rollout_chunks"] for t in plan["rollout_tried"]] == [2]
  assert f"grpo.grad_accum={plan['grad_accum']} train.rollout_chunks=2 " in out.stdout


def _peer_results(script: str, tmp_path: pathlib.Path) -> list[dict]:
  """Each documented command of a peer's script at the tiny GRPO-step workload: its RESULT line."""
  results = []
  for i, cmd in enumerate(_commands(script)):
    (tmp_path / str(i)).mkdir()
    p = _run(cmd, tmp_path / str(i), timeout=900)
    (line,) = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    results.append(json.loads(line.removeprefix("RESULT ")))
  return results


@pytest.mark.slow  # the full suite's (CI time); needs `trl`, which CI does not install: skipped there
def test_trl_peer_commands_run(tmp_path):
  """benchmarks/peers/trl_grpo.py's three commands (generate and continuous batching) on the tiny
  workload. Skipped where TRL is not installed (CI, this repo's environment)."""
  pytest.importorskip("trl")
  for r in _peer_results("peers/trl_grpo.py", tmp_path):
    assert r["step_s"] > 0 and r["tokens_per_s"] > 0


@pytest.mark.slow  # the full suite's (CI time); needs `google-tunix`, which CI does not install: skipped there
def test_tunix_peer_commands_run(tmp_path):
  """benchmarks/peers/tunix_grpo.py's two commands on the tiny workload (the micro-batch ladder in
  child processes). Skipped where Tunix is not installed (CI, this repo's environment)."""
  pytest.importorskip("tunix")
  for r in _peer_results("peers/tunix_grpo.py", tmp_path):
    assert r["step_s"] > 0 and r["tokens_per_s"] > 0
