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
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
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
  if cfg.vocab_size < 151_646:  # Llama 3 shapes: the Llama-2 SentencePiece tokenizer (32k ids) fits their vocabulary
    shutil.copyfile(SHARED / "tokenizers" / "llama2" / "tokenizer.model", out / "tokenizer.model")
    (out / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True}))
    return out
  with gzip.open(SHARED / "tokenizers" / "qwen2" / "tokenizer.json.gz", "rb") as f:
    (out / "tokenizer.json").write_bytes(f.read())
  shutil.copyfile(SHARED / "tokenizers" / "qwen2" / "added_tokens.json", out / "added_tokens.json")
  tok_lib.load_tokenizer(out)._tok.save(str(out / "tokenizer.json"))  # special tokens inside, as released
  (out / "added_tokens.json").unlink()
  (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
  return out


def stream(cmd: list[str], log: pathlib.Path, timeout: float) -> tuple[int | str, str]:
  """Runs `cmd`, writing each output line to `log` as it comes, behind the seconds since the start
  (what a run that is cut short did, and when). Returns the exit code ('timeout' when cut) and the tail."""
  t0 = time.time()
  lines: list[str] = []
  with open(log, "w") as f, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                              env={**os.environ, "PYTHONUNBUFFERED": "1"}) as p:
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    for line in p.stdout:
      lines.append(f"{time.time() - t0:7.1f} {line}")
      f.write(lines[-1])
      f.flush()
    rc = p.wait()
    timer.cancel()
  return ("timeout" if time.time() - t0 > timeout else rc), "".join(lines[-60:])


def run_one(name: str, steps: int, work: pathlib.Path, tiny: bool, extra: list[str], timeout: int,
            ckpt_root: str = "", log_dir: str = "") -> dict:
  t0 = time.time()
  ckpt = pathlib.Path(ckpt_root or work) / f"hf-{name}"
  if steps == 0:  # (the child process below) build only
    build_checkpoint(name, ckpt, tiny)
    return {"name": name, "build_s": time.time() - t0, "checkpoint": str(ckpt)}
  if not (ckpt_root and (ckpt / "config.json").exists()):  # a kept checkpoint is reused
    # In a child process, so that torch's GPU memory and context are gone before the run starts.
    rc, tail = stream([sys.executable, __file__, f"--names={name}", "--steps=0", f"--ckpt_root={ckpt.parent}"]
                      + (["--tiny"] if tiny else []), pathlib.Path(log_dir or work) / f"{name}-build.log", timeout)
    if rc:
      return {"name": name, "returncode": rc, "error": "building the checkpoint failed:\n" + tail[-3000:]}
  build_s = time.time() - t0
  run = work / f"run-{name}"
  cmd = [sys.executable, str(REPO / "experiments" / "r1_zero.py"), f"--config={REPO}/experiments/r1_zero.py:{name}",
         f"--config.model.hf_checkpoint={ckpt}", f"--config.workdir={run}", f"--config.train.steps={steps}",
         "--config.data.num_eval=8", "--config.train.progress=False"] + extra
  t0 = time.time()
  log = pathlib.Path(log_dir or work) / f"{name}.log"
  rc, tail = stream(cmd, log, timeout)
  res = {"name": name, "returncode": rc, "wall_s": time.time() - t0, "build_s": build_s,
         "command": " ".join(cmd), "log": str(log), "log_tail": tail[-2500:]}
  if rc:
    res["error"] = tail[-4000:]
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
  ap.add_argument("--log_dir", default="", help="each run's output, line by line with elapsed seconds "
                  "(default: the temporary work directory)")
  ap.add_argument("--drop_workdir", action="store_true", help="delete each run's work directory once read "
                  "(checkpoints and the exported model: a small disk)")
  ap.add_argument("--ckpt_root", default="", help="keep the built checkpoints here and reuse them "
                  "(--steps 0: only build)")
  args = ap.parse_args()
  results = []
  with tempfile.TemporaryDirectory() as d:
    for name in args.names.split(","):
      r = run_one(name, args.steps, pathlib.Path(d), args.tiny, args.extra.split(), args.timeout, args.ckpt_root,
                  args.log_dir)
      results.append(r)
      if args.out:  # after every run, so a later one that overruns loses nothing
        pathlib.Path(args.out).write_text(json.dumps({"results": results}, indent=1))
      shutil.rmtree(pathlib.Path(d) / f"hf-{name}", ignore_errors=True)  # kept under --ckpt_root
      if args.drop_workdir:
        shutil.rmtree(pathlib.Path(d) / f"run-{name}", ignore_errors=True)
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
