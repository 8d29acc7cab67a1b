"""The named real-model configs' documented command, run for a few GRPO steps on GSM8K.

    python benchmarks/named_configs.py --names qwen2.5-0.5b,qwen2.5-1.5b,qwen2.5-7b --steps 3 --out named.json

For each name: a random-weight Hugging Face checkpoint of that shape is built with
`transformers` (the Qwen2 tokenizer from ../shared/data), then `experiments/r1_zero.py
--config=experiments/r1_zero.py:NAME --config.model.hf_checkpoint=DIR` runs with no memory flag
(only the step count, the held-out size and the progress bar overridden). Reported per name:
what the memory planner chose and why, the per-phase peaks it measured, step time split
(generate / reward / update), tokens/s and the device's peak memory from the run's metrics.
`--tiny` shrinks every shape (a CPU smoke test of the script itself).
"""
from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def build_checkpoint(name: str, out: pathlib.Path, tiny: bool) -> pathlib.Path:
  """A randomly initialized transformers model of the named config's preset, saved with a tokenizer."""
  import torch
  import transformers

  sys.path.insert(0, str(REPO))
  from r1jax.model import hf_config
  from r1jax import model as M
  from r1jax.model import presets
  from r1jax import tokenizer as tok_lib
  spec = __import__("importlib.util").util.spec_from_file_location("r1_zero", REPO / "experiments" / "r1_zero.py")
  mod = __import__("importlib.util").util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = presets.PRESETS[mod.NAMED[name]["model.preset"]]
  if tiny:
    cfg = M.ModelConfig(**{**cfg.__dict__, "d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1,
                           "head_dim": 16, "d_ff": 64})
  config = hf_config.config_to_hf(cfg, "bfloat16")
  hf_cfg = transformers.AutoConfig.for_model(**config)
  # On a GPU machine the random init runs there: torch initializes on CPU in one thread (a 7B
  # shape took 282 s on 16 cores that way).
  with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.bfloat16)
  model.save_pretrained(out)
  with gzip.open(SHARED / "tokenizers" / "qwen2" / "tokenizer.json.gz", "rb") as f:
    (out / "tokenizer.json").write_bytes(f.read())
  shutil.copyfile(SHARED / "tokenizers" / "qwen2" / "added_tokens.json", out / "added_tokens.json")
  tok_lib.load_tokenizer(out)._tok.save(str(out / "tokenizer.json"))  # special tokens inside, as released
  (out / "added_tokens.json").unlink()
  (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
  return out


def run_one(name: str, steps: int, work: pathlib.Path, tiny: bool, extra: list[str], timeout: int,
            ckpt_root: str = "") -> dict:
  t0 = time.time()
  ckpt = pathlib.Path(ckpt_root or work) / f"hf-{name}"
  if steps == 0:  # (the child process below) build only
    build_checkpoint(name, ckpt, tiny)
    return {"name": name, "build_s": time.time() - t0, "checkpoint": str(ckpt)}
  if not (ckpt_root and (ckpt / "config.json").exists()):  # a kept checkpoint is reused
    # In a child process, so that torch's GPU memory and context are gone before the run starts.
    subprocess.run([sys.executable, __file__, f"--names={name}", "--steps=0", f"--ckpt_root={ckpt.parent}"]
                   + (["--tiny"] if tiny else []), check=True, capture_output=True)
  build_s = time.time() - t0
  run = work / f"run-{name}"
  cmd = [sys.executable, str(REPO / "experiments" / "r1_zero.py"), f"--config={REPO}/experiments/r1_zero.py:{name}",
         f"--config.model.hf_checkpoint={ckpt}", f"--config.workdir={run}", f"--config.train.steps={steps}",
         "--config.data.num_eval=8", "--config.train.progress=False"] + extra
  t0 = time.time()
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired as e:
    out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    return {"name": name, "returncode": "timeout", "wall_s": time.time() - t0, "command": " ".join(cmd),
            "error": out[-3000:]}
  res = {"name": name, "returncode": p.returncode, "wall_s": time.time() - t0, "build_s": build_s,
         "command": " ".join(cmd), "log_tail": p.stdout[-2500:]}
  if p.returncode:
    res["error"] = (p.stdout[-2000:] + p.stderr[-3000:])
    return res
  plan = json.loads((run / "memory_plan.json").read_text())
  rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
  last = rows[1:] or rows  # the first step includes compiles
  mean = lambda k: sum(r.get(k, 0.0) for r in last) / len(last)
  res |= {"plan": plan, "step_s": mean("time/step"), "generate_s": mean("time/generate"),
          "reward_s": mean("time/reward"), "update_s": mean("time/update"),
          "tokens_per_s": mean("tokens_per_second"), "peak_gib": max(r.get("memory/peak_gib", 0.0) for r in rows),
          "mean_completion_tokens": mean("completions/mean_length")}
  return res


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--names", default="qwen2.5-0.5b,qwen2.5-1.5b,qwen2.5-7b")
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--tiny", action="store_true", help="tiny shapes (CPU smoke test)")
  ap.add_argument("--extra", default="", help="extra --config overrides, space separated")
  ap.add_argument("--out", default="")
  ap.add_argument("--timeout", type=int, default=3600, help="seconds per named run")
  ap.add_argument("--ckpt_root", default="", help="keep the built checkpoints here and reuse them "
                  "(--steps 0: only build)")
  args = ap.parse_args()
  results = []
  with tempfile.TemporaryDirectory() as d:
    for name in args.names.split(","):
      r = run_one(name, args.steps, pathlib.Path(d), args.tiny, args.extra.split(), args.timeout, args.ckpt_root)
      results.append(r)
      if args.out:  # after every run, so a later one that overruns loses nothing
        pathlib.Path(args.out).write_text(json.dumps({"results": results}, indent=1))
      shutil.rmtree(pathlib.Path(d) / f"hf-{name}", ignore_errors=True)  # kept under --ckpt_root
      print(json.dumps({k: v for k, v in r.items() if k != "plan"} | (
          {"remat": r["plan"]["remat"], "grad_accum": r["plan"]["grad_accum"]} if "plan" in r else {})), flush=True)
  print("| config | remat | grad_accum | step s | generate s | update s | tokens/s | peak GiB |")
  print("|---|---|---|---|---|---|---|---|")
  for r in results:
    if "plan" in r:
      print(f"| {r['name']} | {r['plan']['remat']} | {r['plan']['grad_accum']} | {r['step_s']:.2f} | "
            f"{r['generate_s']:.2f} | {r['update_s']:.2f} | {r['tokens_per_s']:.0f} | {r['peak_gib']:.1f} |")
    elif "returncode" in r:
      print(f"| {r['name']} | failed (rc {r['returncode']}) | | | | | | |")


if __name__ == "__main__":
  main()
