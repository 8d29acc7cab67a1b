"""Decode, prefill and forward+backward throughput of the r1jax transformer against hardware limits.

    python benchmarks/model_bench.py --presets qwen2.5-0.5b,qwen2.5-1.5b --out results.json

Measures, in the same process: the HBM bandwidth (copy and read-only, 4-16 GiB) and the bf16
matmul rate (8192^3-16384^3), best of repeats after a clock ramp, beside the spec values
(`ceilings`); then for each preset with random bf16 weights:
- decode tokens/s at batch 64/256/1024 with a 1024-token prompt, as a fraction of the HBM
  roofline (weights + the KV cache read once per step, over the best measured bandwidth);
- prefill and forward+backward tokens/s at sequence 2048 as MFU against the measured matmul rate.
Decode time is t(prefill + N steps) - t(prefill + 1 step), so the prompt is not counted.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import model as M

from r1jax.model import presets
from r1jax.sampling import sampler as S


def bench(fn, *args, warmup=2, iters=5):
  """Median wall time of fn(*args) in seconds, synchronized."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return float(np.median(times))


SPEC = {"H200": {"bandwidth_Bps": 4.8e12, "bf16_matmul_flops": 989e12},
        "H100": {"bandwidth_Bps": 3.35e12, "bf16_matmul_flops": 989e12}}
"""Spec-sheet limits (SXM, dense bf16) of the devices we measure on, by device-kind substring."""
GiB = 1 << 30


def best_time(fn, *args, warmup=3, repeats=10):
  """Shortest of `repeats` synchronized calls after `warmup`: the ceiling the device can reach."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best


def ceilings(sizes=(4 * GiB, 8 * GiB, 16 * GiB), matmuls=(8192, 12288, 16384), repeats=10, ramp_s=2.0):
  """Measured HBM bandwidth and bf16 matmul rate, the best over sizes and repeats.

  copy: y = x * c (read + write of a `size`-byte bf16 array); read: a float32 sum of it (reads
  only); matmul: m^3 bf16 with float32 accumulation, 2 m^3 FLOPs. The largest matmul runs for
  `ramp_s` seconds first so the clocks have ramped up. 'bandwidth_Bps' is the best of copy and
  read (the decode roofline's ceiling); 'spec' the data-sheet values where the device is known.
  """
  detail = {"copy": {}, "read": {}, "matmul": {}}
  mm = jax.jit(lambda a, b: a @ b)
  m = max(matmuls)
  a = jnp.ones((m, m), jnp.bfloat16)
  t0 = time.perf_counter()
  while time.perf_counter() - t0 < ramp_s:  # clock ramp
    jax.block_until_ready(mm(a, a))
  del a
  for m in matmuls:
    a = jax.random.normal(jax.random.key(1), (m, m), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(2), (m, m), jnp.bfloat16)
    detail["matmul"][m] = 2 * m ** 3 / best_time(mm, a, b, repeats=repeats)
    del a, b
  copy = jax.jit(lambda x: x * jnp.asarray(1.0001, x.dtype))
  read = jax.jit(lambda x: jnp.sum(x, dtype=jnp.float32))
  skipped = []
  for n in sizes:
    try:  # a size that does not fit what the run left (a capped pool, fragmentation) is skipped
      x = jnp.ones((n // 2 // 4096, 4096), jnp.bfloat16)
      detail["copy"][n] = 2 * x.nbytes / best_time(copy, x, repeats=repeats)
      detail["read"][n] = x.nbytes / best_time(read, x, repeats=repeats)
      del x
    except jax.errors.JaxRuntimeError as e:
      if "RESOURCE_EXHAUSTED" not in str(e) or n == min(sizes):
        raise
      skipped.append(n)
      detail["copy"].pop(n, None)
  kind = jax.devices()[0].device_kind
  spec = next((v for k, v in SPEC.items() if k in kind), None)
  out = {"copy_bandwidth_Bps": max(detail["copy"].values()), "read_bandwidth_Bps": max(detail["read"].values()),
         "bf16_matmul_flops": max(detail["matmul"].values()), "spec": spec,
         "detail": {k: {str(s): v for s, v in d.items()} for k, d in detail.items()},
         "skipped_sizes": skipped}
  out["bandwidth_Bps"] = max(out["copy_bandwidth_Bps"], out["read_bandwidth_Bps"])
  return out


SMOKE_CEILINGS = {"sizes": (1 << 20, 1 << 21), "matmuls": (128, 256), "repeats": 2, "ramp_s": 0.0}
"""Tiny sizes for CPU smoke runs."""


def describe(ceil) -> str:
  """The measured ceilings beside the spec values, one line."""
  spec = ceil.get("spec") or {}
  frac = lambda v, k: f" ({v / spec[k]:.0%} of the spec's {spec[k] / 1e12:g})" if k in spec else ""
  return (f"HBM copy {ceil['copy_bandwidth_Bps'] / 1e12:.2f} TB/s, read {ceil['read_bandwidth_Bps'] / 1e12:.2f} TB/s"
          f"{frac(ceil['bandwidth_Bps'], 'bandwidth_Bps')}; bf16 matmul {ceil['bf16_matmul_flops'] / 1e12:.0f} TFLOP/s"
          f"{frac(ceil['bf16_matmul_flops'], 'bf16_matmul_flops')}")


def matmul_params(cfg: M.ModelConfig) -> int:
  """Parameters that take part in matmuls per token (embedding lookup excluded, LM head included)."""
  L, D, N, K, H, F, V = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff,
                         cfg.vocab_size)
  return L * (D * N * H * 2 + D * K * H * 2 + 3 * D * F) + D * V


def attn_flops_fwd(cfg: M.ModelConfig, T: int) -> float:
  """Causal attention forward FLOPs per token averaged over a length-T sequence (QK and PV)."""
  return 2 * 2 * cfg.n_layers * cfg.n_heads * cfg.head_dim * T / 2


def decode_bench(cfg, params, batch, prompt_len, new_tokens, group=8, variant="threefry", profile=False, fuse=True,
                 rollout_weights="compute", temp_bytes=False):
  """variant: 'threefry' (default PRNG), 'rbg' (jax's fast unsafe_rbg PRNG), 'greedy' (no noise).
  rollout_weights: `sampling.rollout_weights` (the projections decoded in 8 bits); the weight bytes
  per step are those of the copy the decode reads (`sampler.decode_weights`). temp_bytes: record the
  generate program's temporary buffers (XLA's memory analysis, one more compile): a compute-dtype
  copy of 8-bit weights made once before the loop would show there."""
  # GRPO-shaped: batch / group prompts, each sampled `group` times from one shared prefill.
  group = group if batch % group == 0 else 1
  prompt = jax.random.randint(jax.random.key(3), (batch // group, prompt_len), 0, cfg.vocab_size)
  mask = jnp.ones_like(prompt, bool)
  mk = lambda n: S.SamplingConfig(max_new_tokens=n, temperature=0.0 if variant == "greedy" else 1.0,
                                  eos_ids=(0,), suppress_eos=True, num_samples=group,
                                  prompt_buckets=(prompt_len,), fuse_projections=fuse, rollout_weights=rollout_weights)
  key = jax.random.key(0, impl="unsafe_rbg" if variant == "rbg" else None)
  gen = lambda s: (lambda p, t, m: S.generate(p, t, m, key, cfg, s))
  t_full = bench(gen(mk(new_tokens)), params, prompt, mask, warmup=1, iters=3)
  t_one = bench(gen(mk(1)), params, prompt, mask, warmup=1, iters=3)
  steps = new_tokens - 1
  dt = (t_full - t_one) / steps
  prof = kernel_profile(gen(mk(new_tokens)), params, prompt, mask, steps=new_tokens) if profile else None
  itemsize = jnp.dtype(cfg.dtype).itemsize
  decoded = jax.eval_shape(lambda p: S.decode_weights(p, cfg, mk(1)), params)
  w_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(decoded))
  if cfg.tie_embeddings:  # the embedding is read again as the output projection
    w_bytes += decoded["embed"].size * decoded["embed"].dtype.itemsize
  temp = None
  if temp_bytes:
    temp = int(S.generate.lower(params, prompt, mask, key, cfg, mk(new_tokens)).compile()
               .memory_analysis().temp_size_in_bytes)
  ctx = prompt_len + new_tokens / 2
  kv_bytes = 2 * cfg.n_layers * batch * ctx * cfg.n_kv_heads * cfg.head_dim * itemsize
  return {"batch": batch, "variant": variant, "step_s": dt, "tokens_per_s": batch / dt, "bytes_per_step": w_bytes + kv_bytes,
          "weights_bytes": w_bytes, "kv_bytes": kv_bytes, "total_s": t_full, "profile": prof,
          "rollout_weights": rollout_weights, "generate_temp_bytes": temp}


def kernel_profile(fn, *args, steps=1, top=18):
  """GPU kernel time of one call of fn, summed by kernel name, per decode step (jax.profiler)."""
  import collections
  import glob
  import tempfile
  jax.block_until_ready(fn(*args))
  d = tempfile.mkdtemp()
  with jax.profiler.trace(d):
    jax.block_until_ready(fn(*args))
  pd = jax.profiler.ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0])
  tot, calls = collections.Counter(), collections.Counter()
  for plane in pd.planes:
    for line in plane.lines if plane.name.startswith("/device:GPU") else ():
      for e in line.events if "stream" in line.name.lower() else ():
        tot[e.name] += e.duration_ns
        calls[e.name] += 1
  busy = sum(tot.values())
  return {"kernels_busy_us_per_step": busy / 1e3 / steps,
          "kernels": [{"name": k[:100], "us_per_step": v / 1e3 / steps, "calls_per_step": calls[k] / steps,
                       "share": v / max(busy, 1)} for k, v in tot.most_common(top)]}


def prefill_bench(cfg, params, batch, T):
  toks = jax.random.randint(jax.random.key(4), (batch, T), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(T), (batch, T))
  f = jax.jit(lambda p, t: M.hidden_states(p, t, pos, cfg)[0][:, -1])
  t = bench(f, params, toks)
  flops = batch * T * (2 * (matmul_params(cfg) - cfg.d_model * cfg.vocab_size) + attn_flops_fwd(cfg, T))
  return {"batch": batch, "seq": T, "s": t, "tokens_per_s": batch * T / t, "flops": flops}


def train_bench(cfg, params, batch, T):
  toks = jax.random.randint(jax.random.key(5), (batch, T + 1), 0, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(T), (batch, T))

  def loss(p):
    h, _ = M.hidden_states(p, toks[:, :-1], pos, cfg)
    return -M.token_logprobs(p, h, toks[:, 1:], cfg)[0].mean()

  g = jax.jit(jax.grad(loss))
  t = bench(g, params, iters=3)
  flops = batch * T * 3 * (2 * matmul_params(cfg) + attn_flops_fwd(cfg, T))
  return {"batch": batch, "seq": T, "s": t, "tokens_per_s": batch * T / t, "flops": flops}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--presets", default="qwen2.5-0.5b,qwen2.5-1.5b")
  ap.add_argument("--decode_batches", default="64,256,1024")
  ap.add_argument("--prompt_len", type=int, default=1024)
  ap.add_argument("--new_tokens", type=int, default=128)
  ap.add_argument("--train_batch", type=int, default=8)
  ap.add_argument("--seq", type=int, default=2048)
  ap.add_argument("--remat", default="none,dots")
  ap.add_argument("--attention", default="auto")
  ap.add_argument("--decode_variants", default="threefry")
  ap.add_argument("--decode_attention", default="xla", help="comma list of xla/pallas")
  ap.add_argument("--profile", action="store_true", help="kernel-time table of each decode run")
  ap.add_argument("--fuse_projections", default="1", help="comma list of 0/1: q/k/v and gate/up as one matmul each")
  ap.add_argument("--decode_splits", default="0", help="comma list of model.decode_kv_splits (0: one per cache block)")
  ap.add_argument("--unroll_decode", default="0", help="comma list of 0/1: decode with unrolled layers")
  ap.add_argument("--decode_split_k", default="0", help="comma list of model.decode_split_k (0: no split)")
  ap.add_argument("--decode_gemm", default="xla", help="comma list of model.decode_gemm: xla/pallas")
  ap.add_argument("--decode_write_first", default="0", help="comma list of 0/1: model.decode_write_first")
  ap.add_argument("--rollout_weights", default="compute",
                  help="comma list of sampling.rollout_weights: compute/int8/fp8 (the projections decoded in 8 bits)")
  ap.add_argument("--temp_bytes", action="store_true", help="record each decode program's temporary buffer bytes")
  ap.add_argument("--skip", default="", help="comma list of: decode,prefill,train")
  ap.add_argument("--out", default="")
  ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on CPU")
  a = ap.parse_args()
  skip = set(a.skip.split(","))
  ceil = ceilings(**SMOKE_CEILINGS) if a.smoke else ceilings()
  print(f"device {jax.devices()[0].device_kind}  jax {jax.__version__}  {describe(ceil)}", flush=True)
  results = {"ceilings": ceil, "jax": jax.__version__, "device": jax.devices()[0].device_kind, "runs": []}
  for name in filter(None, a.presets.split(",")):  # --presets '': the ceilings only
    cfg = presets.preset(name, dtype="bfloat16", param_dtype="bfloat16", attention_impl=a.attention)
    params = jax.jit(lambda k: M.init_params(k, cfg))(jax.random.key(0))
    if "decode" not in skip:
      for b, variant, unroll, att, fuse, ks, sk, gemm, wf, rw in [
          (b, v, u, da, f, k, sk, g, wf, rw) for b in map(int, a.decode_batches.split(","))
          for v in a.decode_variants.split(",") for u in a.unroll_decode.split(",")
          for da in a.decode_attention.split(",") for f in a.fuse_projections.split(",")
          for k in map(int, a.decode_splits.split(",")) for sk in map(int, a.decode_split_k.split(","))
          for g in a.decode_gemm.split(",") for wf in a.decode_write_first.split(",")
          for rw in a.rollout_weights.split(",")]:
        c = dataclasses.replace(cfg, unroll_decode=unroll == "1", decode_attention=att, decode_kv_splits=ks,
                                decode_split_k=sk, decode_gemm=gemm, decode_write_first=wf == "1")
        try:
          r = decode_bench(c, params, b, a.prompt_len, a.new_tokens, variant=variant, profile=a.profile,
                           fuse=fuse == "1", rollout_weights=rw, temp_bytes=a.temp_bytes)
        except Exception as e:  # report and go on: one call measures many variants
          print(f"{name} decode B={b} {att} split_k={sk} gemm={gemm} weights={rw}: FAILED {type(e).__name__}: {str(e)[:1500]}", flush=True)
          continue
        r["unroll_decode"] = unroll == "1"
        r["decode_attention"] = att
        r["fuse_projections"] = fuse == "1"
        r["decode_kv_splits"] = ks
        r["decode_split_k"] = c.decode_split_k  # what the measured config held
        r["decode_gemm"] = c.decode_gemm
        r["decode_write_first"] = c.decode_write_first
        r["roofline_frac"] = r["bytes_per_step"] / ceil["bandwidth_Bps"] / r["step_s"]
        results["runs"].append({"preset": name, "kind": "decode"} | r)
        print(f"{name:14s} decode  B={b:5d} {variant:8s} {att:6s} unroll={unroll} fuse={fuse} splits={ks} split_k={sk} gemm={gemm} "
              f"write_first={wf} weights={rw} ctx~{a.prompt_len}  "
              f"{r['tokens_per_s']:10.0f} tok/s  step {r['step_s'] * 1e3:7.2f} ms  roofline {r['roofline_frac']:.0%}  "
              f"(ideal {r['bytes_per_step'] / ceil['bandwidth_Bps'] * 1e3:.2f} ms)"
              + (f"  temp {r['generate_temp_bytes'] / 1e6:.0f} MB" if r["generate_temp_bytes"] is not None else ""),
              flush=True)
        if r["profile"]:
          p = r["profile"]
          print(f"  wall {r['step_s'] * 1e6:.0f} us per decode step; GPU kernels {p['kernels_busy_us_per_step']:.0f} us "
                f"per step (the whole call / steps: the prefill's share included)")
          for k in p["kernels"]:
            print(f"    {k['us_per_step']:9.1f} us {k['calls_per_step']:6.1f} calls  {k['share']:5.1%}  {k['name']}")
    if "prefill" not in skip:
      r = prefill_bench(cfg, params, a.train_batch, a.seq)
      r["mfu"] = r["flops"] / r["s"] / ceil["bf16_matmul_flops"]
      results["runs"].append({"preset": name, "kind": "prefill"} | r)
      print(f"{name:14s} prefill B={a.train_batch} T={a.seq}  {r['tokens_per_s']:10.0f} tok/s  MFU {r['mfu']:.0%}",
            flush=True)
    if "train" not in skip:
      for remat in a.remat.split(","):
        c = dataclasses.replace(cfg, remat=remat)
        r = train_bench(c, params, a.train_batch, a.seq)
        r["mfu"] = r["flops"] / r["s"] / ceil["bf16_matmul_flops"]
        results["runs"].append({"preset": name, "kind": "fwd+bwd", "remat": remat} | r)
        print(f"{name:14s} fwd+bwd B={a.train_batch} T={a.seq} remat={remat}  {r['tokens_per_s']:10.0f} tok/s  "
              f"MFU {r['mfu']:.0%}", flush=True)
    del params
  if a.out:
    with open(a.out, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
