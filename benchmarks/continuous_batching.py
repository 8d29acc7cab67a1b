"""Continuous vs static batching on a long-tailed length distribution, in generated tokens/s.

    python benchmarks/continuous_batching.py --preset qwen2.5-0.5b --prompts 64 --G 8 --slots 128 \
        --out $OUT/cb.json

Workload: `prompts x G` rows of random prompts (`--prompt_len` tokens), random bf16 weights; each
row's completion length is drawn once from a lognormal (mean `--mean_len`, sigma `--sigma`,
clipped to [1, --max_len]) from `--seed` and forced as the row's cap (EOS suppressed), so both
modes generate exactly the same tokens. Static: the rows in consecutive batches of `slots` rows
(`slots / G` prompts each), every batch decoding until its longest row ends. Continuous
(`sampling.continuous_batching`): all rows through `slots` slots, each refilled as its row ends.
Tokens/s = the rows' total length / wall time, compiles excluded (compiled ahead, then timed).
`--tiny`: the tiny model and a small workload on CPU, to check the script (tests/test_benchmarks.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import model as M

from r1jax.model import presets
from r1jax.sampling import sampler as S


def lognormal_lengths(rows: int, mean: float, sigma: float, max_len: int, seed: int) -> np.ndarray:
  """Lengths with E = mean before clipping to [1, max_len] (mu = log(mean) - sigma^2 / 2)."""
  x = np.random.default_rng(seed).lognormal(np.log(mean) - sigma ** 2 / 2, sigma, rows)
  return np.clip(np.round(x), 1, max_len).astype(np.int32)


def timed(compiled, *args, **kwargs):
  t = time.perf_counter()
  out = jax.block_until_ready(compiled(*args, **kwargs))
  return time.perf_counter() - t, out


def run(cfg, params, prompts, lengths, scfg, slots):
  """Static (batches of `slots` rows) and continuous (`slots` slots) over the same rows."""
  G = scfg.num_samples
  key = jax.random.key(0)
  pmask = jnp.ones_like(prompts, bool)
  per = slots // G  # prompts per static batch
  static = S.generate.lower(params, prompts[:per], pmask[:per], key, cfg=cfg, scfg=scfg, max_len_R=lengths[:slots]).compile()
  t_static, steps = 0.0, 0
  for i in range(0, len(prompts), per):
    dt, out = timed(static, params, prompts[i:i + per], pmask[i:i + per], key, max_len_R=lengths[i * G:(i + per) * G])
    assert (np.asarray(out["length"]) == lengths[i * G:(i + per) * G]).all()
    t_static += dt
    steps += int(out["steps"])
  c = dataclasses.replace(scfg, continuous_batching=True, num_slots=slots)
  cont = S.generate.lower(params, prompts, pmask, key, cfg=cfg, scfg=c, max_len_R=lengths).compile()
  t_cont, out = timed(cont, params, prompts, pmask, key, max_len_R=lengths)
  assert (np.asarray(out["length"]) == lengths).all()
  ntok = int(lengths.sum())
  return {"slots": slots, "rows": len(lengths), "generated_tokens": ntok,
          "static_s": t_static, "static_steps": steps, "static_tokens_per_s": ntok / t_static,
          "continuous_s": t_cont, "continuous_steps": int(out["steps"]), "continuous_tokens_per_s": ntok / t_cont,
          "speedup": t_static / t_cont}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="qwen2.5-0.5b")
  ap.add_argument("--prompts", type=int, default=64)
  ap.add_argument("--G", type=int, default=8)
  ap.add_argument("--prompt_len", type=int, default=256)
  ap.add_argument("--mean_len", type=float, default=1000.0)
  ap.add_argument("--sigma", type=float, default=1.0)
  ap.add_argument("--max_len", type=int, default=8192)
  ap.add_argument("--slots", default="128", help="comma list; each a multiple of G")
  ap.add_argument("--refills_per_step", type=int, default=2)
  ap.add_argument("--decode_attention", default="auto")
  ap.add_argument("--unroll_decode", type=int, default=1)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--tiny", action="store_true", help="tiny model and workload (CPU smoke run)")
  ap.add_argument("--out", default="")
  a = ap.parse_args()
  if a.tiny:
    a.preset, a.prompts, a.G, a.prompt_len, a.mean_len, a.max_len = "tiny", 4, 2, 8, 6.0, 24
    a.slots = "4" if a.slots == "128" else a.slots
  cfg = presets.preset(a.preset) if a.preset == "tiny" else presets.preset(a.preset, dtype="bfloat16", param_dtype="bfloat16")
  cfg = dataclasses.replace(cfg, decode_attention=a.decode_attention, unroll_decode=bool(a.unroll_decode))
  params = jax.jit(lambda k: M.init_params(k, cfg))(jax.random.key(0))
  rows = a.prompts * a.G
  lengths = lognormal_lengths(rows, a.mean_len, a.sigma, a.max_len, a.seed)
  prompts = jnp.asarray(np.random.default_rng(a.seed + 1).integers(1, cfg.vocab_size, (a.prompts, a.prompt_len)),
                        jnp.int32)
  scfg = S.SamplingConfig(max_new_tokens=a.max_len, temperature=1.0, num_samples=a.G, eos_ids=(0,), suppress_eos=True,
                          prompt_buckets=(a.prompt_len,), refills_per_step=a.refills_per_step)
  print(f"device {jax.devices()[0].device_kind}  {a.preset}: {rows} rows, lengths mean {lengths.mean():.0f} "
        f"median {np.median(lengths):.0f} max {lengths.max()} (lognormal sigma {a.sigma}, cap {a.max_len})", flush=True)
  results = []
  for slots in map(int, a.slots.split(",")):
    if slots % a.G or rows % slots:
      raise SystemExit(f"--slots {slots} must be a multiple of --G {a.G} and divide the {rows} rows")
    r = run(cfg, params, prompts, lengths, scfg, slots)
    results.append(r)
    print(f"slots {slots:4d}: static {r['static_tokens_per_s']:10,.0f} tok/s ({r['static_s']:.2f} s, "
          f"{r['static_steps']} steps)  continuous {r['continuous_tokens_per_s']:10,.0f} tok/s ({r['continuous_s']:.2f} s, "
          f"{r['continuous_steps']} steps)  speed-up {r['speedup']:.2f}x", flush=True)
  if a.out:
    with open(a.out, "w") as f:
      json.dump({"args": vars(a), "device": jax.devices()[0].device_kind, "jax": jax.__version__,
                 "lengths": lengths.tolist(), "results": results}, f, indent=1)


if __name__ == "__main__":
  main()
