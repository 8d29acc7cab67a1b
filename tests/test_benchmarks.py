"""The benchmark scripts run on CPU at tiny sizes (so they do not rot); no timings are asserted."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the full suite's (CI time)
def test_grpo_step_benchmark_runs_and_reports(tmp_path):
  out = tmp_path / "grpo.json"
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grpo_step.py"), "--preset", "tiny", "--prompts",
                      "2", "--G", "4", "--prompt_len", "32", "--new_tokens", "16", "--steps", "1", "--grad_accum",
                      "2", "--mesh", "2,2,2", "--rules", "tensor", "--lengths", "lognormal", "--mean_len", "6", "--slots", "4",
                      "--out", str(out)], capture_output=True, text=True, env=env,
                     timeout=600)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
  assert "| r1jax |" in p.stdout
  r = json.loads(out.read_text())["results"][0]
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
  out = tmp_path / "ppo.json"
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grpo_step.py"), "--preset", "tiny", "--prompts",
                      "2", "--G", "4", "--prompt_len", "32", "--new_tokens", "16", "--steps", "1", "--algo", "ppo",
                      "--mesh", "1,-1,1", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
  assert "| r1jax (PPO) |" in p.stdout
  r = json.loads(out.read_text())["results"][0]
  assert r["algo"] == "ppo" and r["critic_s"] > 0 and r["step_s"] >= r["critic_s"] + r["update_s"]
  mem = r["memory"]  # body + head (d_model + 1 floats), and AdamW's two moments of both (+ count)
  d = (mem["critic"] - 3 * mem["params"] - 8) / 3
  assert d > 0 and d == int(d)


@pytest.mark.slow
@pytest.mark.parametrize("base_dtype", ["int8", "bfloat16"])
def test_grpo_step_benchmark_lora(tmp_path, base_dtype):
  """--lora_rank: adapters trained beside the frozen base, which is also the reference: no reference
  copy, AdamW state of the adapters only; rollouts with the adapters merged (bfloat16) or beside W (int8)."""
  out = tmp_path / "lora.json"
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grpo_step.py"), "--preset", "tiny", "--prompts",
                      "2", "--G", "4", "--prompt_len", "32", "--new_tokens", "16", "--steps", "1", "--lora_rank", "8",
                      "--lora_base_dtype", base_dtype, "--mesh", "1,-1,1", "--out", str(out)],
                     capture_output=True, text=True, env=env, timeout=600)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
  assert "| r1jax (LoRA r=8) |" in p.stdout
  r = json.loads(out.read_text())["results"][0]
  mem = r["memory"]
  assert r["lora_rank"] == 8 and r["lora_base_dtype"] == base_dtype and mem["reference"] == 0 and r["lora_merge_rollout"]
  assert mem["optimizer_state"] == 2 * mem["params"] + 8 and 0 < mem["params"] < mem["frozen_base"]
  assert r["tokens_per_s"] > 0 and r["step_s"] >= r["generate_s"] > 0


def test_code_sandbox_benchmark_runs_and_reports(tmp_path):
  out = tmp_path / "code.json"
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "code_sandbox.py"), "--completions", "8", "--workers",
                      "0,2", "--repeats", "1", "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
  assert "| workers | wall s | programs/s |" in p.stdout
  r = json.loads(out.read_text())["results"]
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
  out = tmp_path / "cb.json"
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "continuous_batching.py"), "--tiny", "--slots", "2",
                      "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
  assert "speed-up" in p.stdout
  r = json.loads(out.read_text())
  lengths = r["lengths"]
  assert len(lengths) == 8 and max(lengths) > 2 * min(lengths)  # long-tailed, capped at --max_len
  assert [x["slots"] for x in r["results"]] == [2]
  for x in r["results"]:
    assert x["generated_tokens"] == sum(lengths) and x["static_tokens_per_s"] > 0 and x["continuous_tokens_per_s"] > 0
    # Static batches run to their longest row; refilled slots need fewer steps for the same tokens.
    assert sum(lengths) / x["slots"] <= x["continuous_steps"] < x["static_steps"]


@pytest.mark.slow  # the full suite's (CI time): a GPU benchmark's CPU smoke
def test_eval_throughput_benchmark_runs_and_reports(tmp_path):
  out = tmp_path / "ev.json"
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "eval_throughput.py"), "--tiny", "--out", str(out)],
                     capture_output=True, text=True, env=env, timeout=600)
  assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
  r = json.loads(out.read_text())
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
