"""Evaluation throughput: r1jax's evaluation path vs transformers' `generate`, in generated tokens/s.

    python benchmarks/eval_throughput.py --preset qwen2.5-0.5b --problems 512 --k 4 --max_new_tokens 512 \
        --batch_size 256 --slots 1024 --out $OUT/eval_throughput.json

Workload: `problems x k` rows from random prompts (lengths uniform in [prompt_len / 2, prompt_len]),
random bf16 weights of the preset's shape (built from its config: nothing is downloaded). Random
weights almost never emit EOS, so EOS is off and each row's completion length is forced instead
(printed as `lengths`): `--lengths max` (every row generates max_new_tokens, as a base model that
rambles to its cap does) or `--lengths lognormal` (mean `--mean_len`, sigma 1, clipped to
[1, max_new_tokens]: a long-tailed mix, as EOS would end rows).
r1jax: `harness.evaluate` (the path of experiments/evaluate.py and of the in-run evaluation stage):
continuous-batching slots over grouped sampler calls while a thread pool grades finished rows, each
completion graded against a reference that needs math-verify. Timed after a warm-up over the same
calls, one token a row (every prompt bucket's program compiled: compiles excluded); the time includes decoding to text and all the grading.
transformers: `model.generate` (torch, CUDA when available, sdpa attention, bf16 there), same
sampling (temperature 0.6, top-p `--top_p`: 0.95 as R1's protocol), on the first `--hf_rows` rows
in batches of `--hf_batch` rows, each batch generating its longest row's length (what EOS would
allow); tokens/s counts the rows' lengths only. Timed after a warm-up batch.
Prints one JSON line: tokens/s of each, the ratio, and the workload.
`--tiny`: the tiny model and a small workload on CPU, to check the script (tests/test_benchmarks.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])  # run from a checkout without installing

import jax  # noqa: E402
import numpy as np  # noqa: E402

from r1jax.model import hf_config  # noqa: E402
from r1jax import model as M  # noqa: E402
from r1jax.model import presets  # noqa: E402
from r1jax import sharding  # noqa: E402
from r1jax.evaluation import harness  # noqa: E402

T0 = time.perf_counter()


def log(msg: str) -> None:
  """A progress line on stderr, behind the seconds since the start (what a cut-short call did, and when)."""
  print(f"{time.perf_counter() - T0:7.1f} s  {msg}", file=sys.stderr, flush=True)


REFERENCE = r"\frac{\sqrt{3}}{2}"
ANSWERS = (r"\frac{\sqrt3}{2}", r"\frac{1}{2}\sqrt{3}", r"\frac{\sqrt{2}}{2}")  # need math-verify to grade


class RandomTextTokenizer:
  """Decodes token ids to printable text ending in a boxed answer (the ids pick which), so grading
  does the work a real completion's would."""
  def decode(self, ids):
    text = "".join(chr(33 + i % 94) for i in ids)
    return f"{text} The answer is \\boxed{{{ANSWERS[sum(ids) % len(ANSWERS)]}}}."


def workload(a, vocab_size: int):
  rng = np.random.default_rng(a.seed)
  prompts = [rng.integers(1, vocab_size, rng.integers(a.prompt_len // 2, a.prompt_len + 1)).tolist()
             for _ in range(a.problems)]
  rows = a.problems * a.k
  if a.lengths == "max":
    caps = np.full(rows, a.max_new_tokens, np.int32)
  else:
    x = rng.lognormal(np.log(a.mean_len) - 0.5, 1.0, rows)
    caps = np.clip(np.round(x), 1, a.max_new_tokens).astype(np.int32)
  return prompts, caps


def run_r1jax(a, cfg, params, prompts, caps) -> dict:
  ecfg = harness.EvalConfig(num_samples=a.k, max_new_tokens=a.max_new_tokens, batch_size=a.batch_size,
                            num_slots=a.slots, max_prompt_len=a.prompt_len, top_p=a.top_p)
  exs = [{"question": "", "final": REFERENCE, "id": str(i)} for i in range(len(prompts))]
  tok = RandomTextTokenizer()
  mesh = sharding.make_mesh(sharding.MeshConfig())
  with jax.set_mesh(mesh):
    ev = lambda lengths: harness.evaluate(params, cfg, tok, exs, "", ecfg, eos_ids=(), pad_id=0, progress=False,
                                          prompt_ids=prompts, max_len_R=lengths)
    log("r1jax: warm-up (plans, compiles every prompt bucket's call: one token a row)")
    ev(np.ones_like(caps))
    log("r1jax: timed evaluation")
    t = time.perf_counter()
    s = ev(caps)
    dt = time.perf_counter() - t
    log(f"r1jax: {s['generated_tokens'] / dt:,.0f} tokens/s ({dt:.1f} s)")
  assert s["generated_tokens"] == int(caps.sum()) and s["problems"] == len(prompts), s
  return {"tokens_per_s": s["generated_tokens"] / dt, "seconds": dt, "generated_tokens": s["generated_tokens"],
          "pass@1": s["pass@1"], "timeouts": s["timeouts"]}


def run_transformers(a, cfg, prompts, caps) -> dict:
  import torch
  import transformers
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  dtype = torch.bfloat16 if dev == "cuda" else torch.float32
  hf_cfg = hf_config.config_to_hf(cfg)
  conf = transformers.AutoConfig.for_model(**hf_cfg)
  torch.manual_seed(a.seed)
  log(f"transformers: building the model on {dev}")
  with torch.device(dev):  # initialized where it runs (torch initializes on one CPU thread otherwise)
    model = transformers.AutoModelForCausalLM.from_config(conf, attn_implementation="sdpa", dtype=dtype).eval()
  rows = [(prompts[r // a.k], int(caps[r])) for r in range(min(a.hf_rows, len(caps)))]

  def batch(rs):
    P = max(len(p) for p, _ in rs)
    ids = torch.zeros((len(rs), P), dtype=torch.long)
    mask = torch.zeros((len(rs), P), dtype=torch.long)
    for i, (p, _) in enumerate(rs):  # left-padded, as r1jax pads
      ids[i, P - len(p):] = torch.tensor(p)
      mask[i, P - len(p):] = 1
    n = max(c for _, c in rs)
    with torch.no_grad():
      model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), do_sample=True, temperature=0.6,
                     top_p=a.top_p, top_k=0, max_new_tokens=n, min_new_tokens=n, pad_token_id=0, eos_token_id=None)
    if dev == "cuda":
      torch.cuda.synchronize()

  log("transformers: warm-up batch")
  batch(rows[:min(a.hf_batch, len(rows))][:2])  # warm-up
  log("transformers: timed batches")
  t = time.perf_counter()
  for i in range(0, len(rows), a.hf_batch):
    batch(rows[i:i + a.hf_batch])
  dt = time.perf_counter() - t
  ntok = sum(c for _, c in rows)
  return {"tokens_per_s": ntok / dt, "seconds": dt, "generated_tokens": ntok, "rows": len(rows),
          "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__,
          "transformers": transformers.__version__}


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="qwen2.5-0.5b")
  ap.add_argument("--problems", type=int, default=512)
  ap.add_argument("--k", type=int, default=4)
  ap.add_argument("--prompt_len", type=int, default=128)
  ap.add_argument("--max_new_tokens", type=int, default=512)
  ap.add_argument("--lengths", choices=("max", "lognormal"), default="max")
  ap.add_argument("--mean_len", type=float, default=300.0)
  ap.add_argument("--batch_size", type=int, default=256, help="problems per sampler call (eval.batch_size)")
  ap.add_argument("--slots", type=int, default=1024, help="eval.num_slots")
  ap.add_argument("--hf_rows", type=int, default=256, help="rows transformers generates (a prefix of the workload)")
  ap.add_argument("--hf_batch", type=int, default=128)
  ap.add_argument("--top_p", type=float, default=0.95, help="eval.top_p (1.0 skips the sort over the vocabulary)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--tiny", action="store_true", help="tiny model and workload (CPU smoke run)")
  ap.add_argument("--out", default="")
  a = ap.parse_args(argv)
  if a.tiny:
    a.preset, a.problems, a.k, a.prompt_len, a.max_new_tokens = "tiny", 6, 2, 12, 16
    a.lengths, a.mean_len, a.batch_size, a.slots, a.hf_rows, a.hf_batch = "lognormal", 8.0, 4, 4, 6, 3
  if a.preset == "tiny":
    cfg = presets.preset("tiny")
  else:
    cfg = presets.preset(a.preset, dtype="bfloat16", param_dtype="bfloat16")
  log(f"{a.preset}: initializing the parameters on {jax.devices()[0].device_kind}")
  params = jax.jit(lambda k: M.init_params(k, cfg))(jax.random.key(a.seed))
  prompts, caps = workload(a, cfg.vocab_size)
  ours = run_r1jax(a, cfg, params, prompts, caps)
  theirs = run_transformers(a, cfg, prompts, caps)
  result = {"preset": a.preset, "device": jax.devices()[0].device_kind, "jax": jax.__version__,
            "problems": a.problems, "k": a.k, "rows": len(caps), "max_new_tokens": a.max_new_tokens,
            "lengths": (f"every row max_new_tokens={a.max_new_tokens} (random weights, EOS off)" if a.lengths == "max"
                        else f"lognormal mean {a.mean_len} sigma 1 clipped to [1, {a.max_new_tokens}], forced "
                             f"(random weights, EOS off): mean {caps.mean():.1f}"),
            "batch_size": a.batch_size, "slots": a.slots, "top_p": a.top_p, "r1jax": ours, "transformers": theirs,
            "ratio": ours["tokens_per_s"] / theirs["tokens_per_s"]}
  line = json.dumps(result)
  print(line, flush=True)
  if a.out:
    with open(a.out, "w") as f:
      f.write(line + "\n")


if __name__ == "__main__":
  main()
