"""The DeepSeek-R1 pipeline's named config on a random-weight Hugging Face checkpoint, a few steps a stage.

    python benchmarks/pipeline_gpu.py --name qwen2.5-0.5b --out pipeline.json

Builds the checkpoint as benchmarks/named_configs.py does, then runs `experiments/r1.py
--config=experiments/r1.py:NAME` with every stage shortened (a few steps, a few prompts). A random
base answers nothing correctly, so the curated files it would produce are empty; the SFT stages and
the reward model get GSM8K reference solutions instead (`--config.inputs=cold_start_sft.data=...,
sft.data=...,reward_model.samples=...`: each reference completion beside a wrong one), so every
stage does its real work at the real size. Reported per stage: wall seconds, the device's peak
memory at the stage's end (the process's peak so far: JAX cannot reset it) and the RL/SFT steps'
times. `--tiny` shrinks the shape (a CPU smoke test of this script).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def _module(name: str, path: pathlib.Path):
  spec = importlib.util.spec_from_file_location(name, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def reference_data(rows: list[dict], tokenizer, out: pathlib.Path) -> dict:
  """sft.jsonl (each row's reference solution in the R1 format) and pairs.jsonl (that completion and
  a wrong one per prompt: one 'correct' preference pair each), as `curation.Sample`s."""
  from r1jax import curation
  from r1jax import templates
  sft, pairs = [], []
  for i, ex in enumerate(rows):
    solution = " ".join(ex["answer"].split("####")[0].split())
    prompt = templates.format_prompt(ex["question"], templates.R1_ZERO_TEMPLATE)
    good = f"<think> {solution} </think> <answer> {ex['final']} </answer>"
    bad = f"<think> {solution} </think> <answer> {int(float(ex['final'])) + 1} </answer>"
    src = {"policy": "gsm8k reference", "step": None, "seed": 0, "sample_index": i}
    s = curation.Sample(prompt, good, str(ex["final"]), len(tokenizer.encode(good)), False, src, dict(ex),
                        {"accuracy": 1.0, "format": 1.0})
    sft.append(s)
    pairs += [s, curation.Sample(prompt, bad, str(ex["final"]), len(tokenizer.encode(bad)), False, src, dict(ex),
                                 {"accuracy": 0.0, "format": 1.0})]
  curation.write_jsonl(out / "sft.jsonl", sft)
  curation.write_jsonl(out / "pairs.jsonl", pairs)
  return {"sft": str(out / "sft.jsonl"), "pairs": str(out / "pairs.jsonl")}


def short(steps: int, prompts: int, tiny: bool) -> list[str]:
  """Every stage a few steps on a few prompts (the named config's lengths and shapes kept)."""
  out = [f"--config.r1.reasoning_rl_steps={steps}", f"--config.r1.rl_all_steps={steps}",
         "--config.r1.compare_r1_zero=False", f"--config.cold_start.num_prompts={prompts}",
         f"--config.rejection.num_prompts={prompts}", f"--config.rejection.num_general={prompts}",
         f"--config.rl_all.general_prompts={prompts}", f"--config.reward_model.steps={steps}",
         f"--config.data.num_eval={prompts}", "--config.train.progress=False"]
  if tiny:
    out += ["--config.train.prompts_per_step=2", "--config.grpo.num_generations=2", "--config.grpo.num_minibatches=1",
            "--config.grpo.max_completion_length=8", "--config.eval.max_new_tokens=8", "--config.data.num_train=16",
            "--config.eval.batch_size=2", "--config.sft.seq_len=512", "--config.sft.batch_size=4",
            "--config.reward_model.batch_size=4", "--config.cold_start.samples_per_prompt=2",
            "--config.rejection.samples_per_prompt=2", "--config.train.reward_workers=2",
            "--config.model.logits_chunk=256", "--config.curation.max_tokens=8"]
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--name", default="qwen2.5-0.5b")
  ap.add_argument("--steps", type=int, default=2, help="RL and reward-model steps per stage")
  ap.add_argument("--prompts", type=int, default=16, help="prompts per data stage and per evaluation")
  ap.add_argument("--sft_examples", type=int, default=64)
  ap.add_argument("--tiny", action="store_true")
  ap.add_argument("--timeout", type=int, default=3600)
  ap.add_argument("--out", default="")
  ap.add_argument("--workdir", default="")
  args = ap.parse_args()
  from r1jax import tokenizer as tok_lib
  named = _module("named_configs", REPO / "benchmarks" / "named_configs.py")
  root = pathlib.Path(args.workdir or tempfile.mkdtemp())
  t0 = time.time()
  ckpt = root / f"hf-{args.name}"
  if not (ckpt / "config.json").exists():  # in a child process, so torch's GPU memory is gone after
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "named_configs.py"), f"--names={args.name}",
                    "--steps=0", f"--ckpt_root={root}"] + (["--tiny"] if args.tiny else []), check=True)
  build_s = time.time() - t0
  rows = [json.loads(l) for l in (SHARED / "gsm8k_train.jsonl").read_text().splitlines()[:args.sft_examples]]
  files = reference_data(rows, tok_lib.load_tokenizer(ckpt), root)
  work = root / "run"
  cmd = [sys.executable, str(REPO / "experiments" / "r1.py"), f"--config={REPO}/experiments/r1.py:{args.name}",
         f"--config.model.hf_checkpoint={ckpt}", f"--config.workdir={work}",
         f"--config.inputs=cold_start_sft.data={files['sft']},sft.data={files['sft']},"
         f"reward_model.samples={files['pairs']}"] + short(args.steps, args.prompts, args.tiny)
  t0 = time.time()
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    rc, log = p.returncode, p.stdout + p.stderr
  except subprocess.TimeoutExpired as e:
    rc, log = "timeout", (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
  stages = {}
  for rec in sorted((work / "stages").glob("*.json"), key=lambda f: f.stat().st_mtime):
    r = json.loads(rec.read_text())
    stages[rec.stem] = {"wall_s": r["wall_seconds"], "peak_gib_so_far": r.get("device_peak_gib_so_far")}
    metrics = work / rec.stem / "metrics.jsonl"
    if metrics.exists():
      steps = [json.loads(l) for l in metrics.read_text().splitlines()]
      times = [s.get("time/step") for s in steps if s.get("time/step")]
      stages[rec.stem] |= {"steps": len(steps), "step_s": times[1:] or times}
  plan = json.loads((work / "memory_plan.json").read_text()) if (work / "memory_plan.json").exists() else None
  res = {"name": args.name, "returncode": rc, "build_s": build_s, "wall_s": time.time() - t0, "command": " ".join(cmd),
         "plan": plan, "stages": stages, "log_tail": log[-4000:]}
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(res, indent=1))
  print("| stage | wall s | device peak so far GiB | step s |")
  print("|---|---|---|---|")
  for name, s in stages.items():
    peak = f"{s['peak_gib_so_far']:.1f}" if s["peak_gib_so_far"] is not None else "-"
    st = ", ".join(f"{t:.2f}" for t in s.get("step_s", []))
    print(f"| {name} | {s['wall_s']:.1f} | {peak} | {st} |")
  print(f"returncode {rc}, wall {res['wall_s']:.0f} s")
  if rc != 0:
    print(log[-3000:])


if __name__ == "__main__":
  main()
