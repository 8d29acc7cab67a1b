"""One GRPO step on one device: r1jax against Tunix and TRL, and r1jax against the hardware limits.

    python benchmarks/grpo_step.py --preset qwen2.5-0.5b --peers tunix,trl --out grpo.json

Several GPUs: `--mesh data,fsdp,tensor` (-1: the remaining devices) and `--rules fsdp|data|tensor`
(`sharding.RULES`) over every visible GPU of one process, or one process per GPU through
jax.distributed: `NUM_PROCESSES=2 tpu_scripts/launch_local_gpus.sh benchmarks/grpo_step.py
--system r1jax --distributed 1 --mesh 1,2,1` (each process supplies its share of the prompts).

Workload (issue 5): random weights, 16 prompts x G = 8 samples, 256-token prompts, 512 generated
tokens each (EOS suppressed), beta = 0.04 with a reference model, mu = 1, one optimizer step; the
update and reference passes with the fused log-prob head (`--logprob_impl fused`, the faster and
smaller one; `chunked` is the library's default).
r1jax: parameters fp32 (AdamW master copy) or bf16 (`--param_dtype`), compute bf16; the sampler
reads the same arrays (cast once to bf16 per generate call). The peers run the same workload
from `benchmarks/peers/` in their own processes (their packages installed, never copied here).
Tokens/s counts prompt + completion tokens of all rows over the whole step; the median of
`--steps` steps after one warm-up step (which compiles, and generates one token a row).

Against the limits, in the same process: the HBM bandwidth (best of copy and read-only over
4-16 GiB) and the bf16 matmul rate (best over 8192^3-16384^3) measured first, after a clock ramp
(`model_bench.ceilings`, printed beside the spec values); decode as bytes per step (weights in the
compute dtype, the tied embedding twice, the KV cache at the mean context) over the bandwidth, per
generated token (only with fixed lengths and static batching); the update as 6 x matmul parameters
x tokens + attention FLOPs over the matmul rate (MFU; the forward recomputed by rematerialization
is not credited). Memory: resident arrays by component, each jitted phase's temporary buffers from
XLA's compiled memory analysis, and the measured peak.

Long-tailed lengths (`--lengths lognormal --mean_len 1000`: each row's cap drawn once, EOS still
suppressed) and continuous batching (`--slots M`), e.g. the R1-Zero length regime (issue 12):
`--preset qwen2.5-1.5b --new_tokens 8192 --lengths lognormal --remat full --grad_accum 8 --steps 1
[--slots 64]`.

Qwen2.5-7B with fp32 master weights on one GPU (issue 12): AdamW moments stored in bf16
(`optim.state_dtype`) and the update in grpo.num_minibatches optimizer steps (no gradient
accumulator beside the gradients): `--preset qwen2.5-7b --param_dtype float32 --state_dtype bfloat16
--minibatches 4 --remat full --beta 0.001 --logprob_impl fused --steps 2`.

LoRA (`--lora_rank 64`, `--lora_base_dtype bfloat16|int8`): adapters on every projection trained,
the base frozen and read as the reference (no copy); time it beside the full step at the same
shape, e.g. `--preset qwen2.5-1.5b --lora_rank 64` and the same command without it. The rollout
decodes with the adapters merged into W (`sampling.merge_lora`, an int8 base excepted);
`--lora_merge_rollout 0` decodes with them beside W, as training runs them.

`--rollout_weights int8|fp8` (`sampling.rollout_weights`): the sampler decodes with an 8-bit copy of
the projections, the trainer keeps its weights; `rollout_mismatch` in the output then includes the
quantization's, and the decode roofline counts the 8-bit bytes (`decode_weights_bytes`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import continuous_batching  # noqa: E402
import model_bench  # noqa: E402

from r1jax import distributed  # noqa: E402
from r1jax.model.lora import LoRAConfig  # noqa: E402
from r1jax.model import attention  # noqa: E402
from r1jax import model as M  # noqa: E402
from r1jax.model import presets  # noqa: E402
from r1jax.sampling import sampler as S  # noqa: E402
from r1jax import sharding  # noqa: E402
from r1jax.rl import lora_state  # noqa: E402
from r1jax.rl import step as TS  # noqa: E402
from r1jax.rl import rollout_mismatch  # noqa: E402
from r1jax.rl.config import GRPOConfig, PPOConfig  # noqa: E402
from r1jax.rl.update import Critic, minibatches  # noqa: E402

GB = 1e9


def nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def temp_bytes(jitted, *args) -> int | None:
  try:
    return int(jitted.lower(*args).compile().memory_analysis().temp_size_in_bytes)
  except Exception:  # memory analysis is not available on every backend
    return None


def run_r1jax(a, ceilings_fn):
  """The r1jax step; `ceilings_fn()` is measured after the run's peak memory is read (its 16 GiB
  arrays would otherwise be that peak)."""
  cfg = presets.preset(a.preset, dtype="bfloat16", param_dtype=a.param_dtype, remat=a.remat,
                 decode_attention=a.decode_attention)
  if a.preset == "tiny":
    cfg = presets.preset("tiny", decode_attention=a.decode_attention)
  cfg = dataclasses.replace(cfg, unroll_decode=bool(a.unroll_decode), logprob_impl=a.logprob_impl,
                            decode_kv_splits=a.decode_splits)
  mcfg = sharding.MeshConfig(*(int(x) for x in a.mesh.split(",")), rules=a.rules)
  mesh = sharding.make_mesh(mcfg)
  with jax.set_mesh(mesh):
    params = M.init_sharded(jax.random.key(0), cfg, mesh, sharding.rules_table(a.rules))
    to_compute = jax.jit(lambda p: jax.tree.map(lambda x: x.astype(cfg.compute_dtype), p))
    lcfg = LoRAConfig(rank=a.lora_rank, alpha=2.0 * max(a.lora_rank, 1), base_dtype=a.lora_base_dtype)
    # LoRA: the reference is the frozen base itself (adapters off), no copy.
    ref = to_compute(params) if not lcfg.enabled else None  # a new copy
    g = GRPOConfig(num_generations=a.G, beta=a.beta, max_completion_length=a.new_tokens, grad_accum=a.grad_accum,
                   num_minibatches=a.minibatches)
    o = TS.OptimConfig(learning_rate=1e-6, state_dtype=a.state_dtype)
    if lcfg.enabled:  # the adapters trained, the base frozen beside them (r1jax.model.lora)
      state = lora_state.init_state(params, cfg, lcfg, TS.make_optimizer(o), 0)
      ref = state.frozen
    else:
      state = TS.init_state(params, TS.make_optimizer(o))
    del params
    update = TS.make_grpo_step(cfg, g, o, 1.0, TS.state_shardings(state), mesh)
    critic = critic_state = None
    if a.algo == "ppo" and lcfg.enabled:
      sys.exit("--algo ppo with --lora_rank: the critic is a full model; benchmark them apart")
    if a.algo == "ppo":  # PPO's critic as the trainer builds it: the policy's weights + a head, its own AdamW
      g = dataclasses.replace(g, advantage_estimator="gae")
      critic, critic_state = Critic.build(cfg, state.params, PPOConfig(), g, o, 0, mesh)
    ref_cfg = cfg if a.preset == "tiny" or lcfg.enabled else presets.preset(a.preset, dtype="bfloat16", param_dtype="bfloat16",
                                                           logprob_impl=a.logprob_impl)
    ref_fn = TS.make_logprob_fn(ref_cfg, 1.0, a.grad_accum)  # in the update's micro-batches, as the trainer runs it
    scfg = S.SamplingConfig(max_new_tokens=a.new_tokens, temperature=1.0, num_samples=a.G, eos_ids=(0,),
                            suppress_eos=True, prompt_buckets=(a.prompt_len,), continuous_batching=a.slots > 0,
                            num_slots=a.slots, merge_lora=bool(a.lora_merge_rollout), rollout_weights=a.rollout_weights)
    R = a.prompts * a.G
    # Completion lengths: all new_tokens, or long-tailed (each row's cap drawn once, the same every step).
    caps = (np.full(R, a.new_tokens, np.int32) if a.lengths == "fixed" else
            continuous_batching.lognormal_lengths(R, a.mean_len, 1.0, a.new_tokens, seed=0))
    rng = np.random.default_rng(1)
    host = {"prompts": rng.integers(1, cfg.vocab_size, (a.prompts, a.prompt_len)).astype(np.int32)}
    host["pmask"] = np.ones_like(host["prompts"], bool)
    # Each process supplies only its rows (all of them with one process).
    mine = distributed.process_rows(a.prompts)
    local = distributed.process_batch({k: v[mine] for k, v in host.items()}, mesh)
    prompts, pmask = local["prompts"], local["pmask"]
    advs = [rng.normal(0, 1, R).astype(np.float32) for _ in range(a.steps + 1)]
    # The warm-up step (it compiles) generates one token a row: same shapes, a fraction of the time.
    step_caps = [np.ones_like(caps)] + [caps] * a.steps
    gen = jax.jit(lambda p, t, m, k, c: S.generate(p, t, m, k, cfg, scfg, c))
    times, temps = [], {}
    for i in range(a.steps + 1):
      caps_dev = distributed.process_batch(step_caps[i][distributed.process_rows(R)], mesh)
      t0 = time.perf_counter()
      out = gen(state.policy(), prompts, pmask, jax.random.key(i), caps_dev)
      jax.block_until_ready(out["tokens"])
      t1 = time.perf_counter()
      assert int(out["mask"].sum()) == step_caps[i].sum(), "every row must generate its cap's tokens"
      batch = {"tokens": jnp.concatenate([jnp.repeat(prompts, a.G, 0), out["tokens"]], 1),
               "mask": jnp.concatenate([jnp.repeat(pmask, a.G, 0), out["mask"]], 1),
               "completion_mask": out["mask"].astype(jnp.float32), "old_logp": out["logp"],
               "adv": distributed.process_batch(advs[i][distributed.process_rows(R)], mesh)}
      batch = TS.shard_batch(batch, mesh)  # rows over data x fsdp (several devices)
      if lcfg.enabled:
        ref = state.frozen  # (the step donates the state: this step's base)
      batch["ref_logp"] = ref_fn(ref, batch)
      jax.block_until_ready(batch["ref_logp"])
      tc = time.perf_counter()
      if critic is not None:  # the critic's values, GAE on an outcome reward, the critic's update (loop.run_grpo's path)
        host_b = {k: np.asarray(batch[k]) for k in ("tokens", "mask", "completion_mask")}
        host_b = critic.advantages(critic_state, host_b, advs[i])
        critic_state, _ = critic.train(critic_state, host_b, i)
        batch["adv"] = TS.shard_batch({"adv": host_b["adv"]}, mesh)["adv"]
      critic_s = time.perf_counter() - tc
      t2 = time.perf_counter()
      if i == a.steps:  # untimed: the trainer's log-probs of the sampled tokens under the sampling weights
        trainer_logp = ref_fn(to_compute(state.policy()), batch)
        mismatch = jax.device_get(rollout_mismatch.logprob_mismatch(trainer_logp, batch["old_logp"],
                                                                    batch["completion_mask"]))
        del trainer_logp
      # grpo.num_minibatches optimizer steps, their rows sliced from the host copy the trainer
      # already holds (fetched here, untimed) and sent one minibatch at a time (timed)
      host_rows = jax.device_get(batch) if a.minibatches > 1 else None
      untimed = time.perf_counter() - t2
      t2 = time.perf_counter()
      mbs = list(minibatches(host_rows, batch, g, 0, i, mesh)) if a.minibatches > 1 else [batch]
      if i == 0:
        temps = {"generate": temp_bytes(gen, state.policy(), prompts, pmask, jax.random.key(0), caps_dev),
                 "ref_logprobs": temp_bytes(ref_fn, ref, batch), "update": temp_bytes(update, state, mbs[0])}
      for mb in mbs:
        state, m = update(state, mb)
      jax.block_until_ready(m["loss"])
      t3 = time.perf_counter()
      if i:  # the first step compiles
        times.append((t1 - t0, t2 - t1 - critic_s - untimed, critic_s, t3 - t2, t3 - t0 - untimed))
    gen_s, lp_s, critic_s, upd_s, tot = np.median(np.asarray(times), axis=0)

    # Against the limits.
    ref = state.frozen if lcfg.enabled else ref
    itemsize = jnp.dtype(cfg.dtype).itemsize
    # The weights the decode reads (the 8-bit projections with --rollout_weights int8 / fp8).
    dweights = jax.eval_shape(lambda p: S.decode_weights(p, cfg, scfg), state.policy())
    w_bytes = nbytes(dweights) + (dweights["embed"].size * dweights["embed"].dtype.itemsize if cfg.tie_embeddings else 0)
    ctx = a.prompt_len + a.new_tokens / 2
    kv_step = 2 * cfg.n_layers * R * ctx * cfg.n_kv_heads * cfg.head_dim * itemsize
    decode_step_s = gen_s / a.new_tokens  # includes the (small) prefill
    T = a.prompt_len + a.new_tokens
    upd_flops = R * T * 3 * (2 * model_bench.matmul_params(cfg) + model_bench.attn_flops_fwd(cfg, T))
    stats = jax.devices()[0].memory_stats() or {}
    held = {"params": nbytes(state.params), "optimizer_state": nbytes(state.opt_state),
            "reference": nbytes(ref) if not lcfg.enabled else 0}
    if lcfg.enabled:
      held["frozen_base"] = nbytes(state.frozen)
    if critic_state is not None:
      held["critic"] = nbytes(critic_state.trained()) + nbytes(critic_state.opt_state)
    del ref, state, batch, critic_state
    now = jax.devices()[0].memory_stats() or {}
    ceil = ceilings_fn(now["bytes_limit"] - now["bytes_in_use"] if "bytes_limit" in now else None)
    kv_cache = 2 * cfg.n_layers * R * T * cfg.n_kv_heads * cfg.head_dim * itemsize
    return {"system": "r1jax", "ceilings": ceil, "preset": a.preset, "device": jax.devices()[0].device_kind, "jax": jax.__version__,
            "devices": jax.device_count(), "processes": jax.process_count(), "mesh": list(mesh.devices.shape),
            "rules": a.rules,
            "rows": R, "param_dtype": cfg.param_dtype, "state_dtype": a.state_dtype, "minibatches": a.minibatches,
            "beta": a.beta, "remat": cfg.remat, "grad_accum": a.grad_accum,
            "logprob_impl": cfg.logprob_impl,
            "decode_attention": attention.decode_attention_impl(cfg),
            "algo": a.algo, "lora_rank": a.lora_rank, "lora_base_dtype": a.lora_base_dtype if a.lora_rank else None,
            "lora_merge_rollout": bool(a.lora_merge_rollout) if a.lora_rank else None,
            "rollout_weights": a.rollout_weights, "decode_weights_bytes": w_bytes,
            "generate_s": gen_s, "ref_logprobs_s": lp_s, "critic_s": critic_s, "update_s": upd_s,
            "step_s": tot,
            "rollout_mismatch": {k: float(v) for k, v in mismatch.items()}, "lengths": a.lengths, "slots": a.slots, "generated_tokens": int(caps.sum()),
            "tokens_per_s": R * T / tot, "generated_tokens_per_s": int(caps.sum()) / gen_s,
            "decode_roofline_frac": ((w_bytes + kv_step) / ceil["bandwidth_Bps"] / decode_step_s
                                     if a.lengths == "fixed" and not a.slots else None),
            "update_mfu": upd_flops / upd_s / ceil["bf16_matmul_flops"] if ceil["bf16_matmul_flops"] else None,
            "memory": held | {"kv_cache": kv_cache,
                       "temp_generate": temps.get("generate"), "temp_ref_logprobs": temps.get("ref_logprobs"),
                       "temp_update": temps.get("update")},
            "peak_bytes": stats.get("peak_bytes_in_use"), "bytes_limit": stats.get("bytes_limit")}


PEERS = {"trl_cb": ("trl", "--continuous_batching", "1")}
"""Peer names that run another peer's script with flags: trl_cb is TRL with transformers' continuous
batching (`use_transformers_continuous_batching`) instead of `generate`."""


def run_system(name, a):
  """One system's benchmark in its own process, so each has the device to itself: its last
  'RESULT {json}' line, or the error. r1jax is this script with --system r1jax."""
  here = os.path.dirname(os.path.abspath(__file__))
  peer, *flags = PEERS.get(name, (name,))
  script = os.path.join(here, "grpo_step.py") if name == "r1jax" else os.path.join(here, "peers", f"{peer}_grpo.py")
  cmd = [sys.executable, script, "--preset", a.preset, "--steps", str(a.steps), "--prompts", str(a.prompts),
         "--G", str(a.G), "--prompt_len", str(a.prompt_len), "--new_tokens", str(a.new_tokens)]
  if name == "r1jax":
    cmd += ["--system", "r1jax", "--mesh", a.mesh, "--rules", a.rules, "--remat", a.remat, "--param_dtype", a.param_dtype, "--grad_accum",
            str(a.grad_accum), "--minibatches", str(a.minibatches), "--state_dtype", a.state_dtype, "--beta", str(a.beta), "--decode_attention", a.decode_attention, "--unroll_decode", str(a.unroll_decode),
            "--decode_splits", str(a.decode_splits),
            "--logprob_impl", a.logprob_impl, "--lengths", a.lengths, "--mean_len", str(a.mean_len), "--slots", str(a.slots),
            "--algo", a.algo, "--lora_rank", str(a.lora_rank), "--lora_base_dtype", a.lora_base_dtype,
            "--lora_merge_rollout", str(a.lora_merge_rollout), "--rollout_weights", a.rollout_weights]
  else:
    extra = dict(x.split("=", 1) for x in filter(None, a.peer_args.split(";")))
    cmd += list(flags) + extra.get(name, "").split()
  print("running", " ".join(cmd), flush=True)
  t = time.perf_counter()
  try:
    env = os.environ | {"XLA_FLAGS": a.xla_flags} if name == "r1jax" and a.xla_flags is not None else None
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, env=env)
  except subprocess.TimeoutExpired as e:
    return {"system": name, "error": f"timeout after {a.timeout} s: {str(e.stdout or '')[-500:]}"}
  res = [json.loads(l[len("RESULT "):]) for l in p.stdout.splitlines() if l.startswith("RESULT ")]
  for l in p.stdout.splitlines():
    if not l.startswith("RESULT "):
      print(f"  [{name}] {l}", flush=True)
  if p.returncode or not res:
    tail = (p.stdout + p.stderr)[-3000:]
    print(f"{name} failed (rc {p.returncode}, {time.perf_counter() - t:.0f} s):\n{tail}", flush=True)
    return {"system": name, "error": tail[-800:]}
  return res[-1] | {"system": name}


def table(results, base):
  head = "| system | step (s) | generate | log-probs | critic | update | tokens/s | r1jax speed-up | peak memory |"
  lines = [head, "|" + "---|" * 9]
  for r in results:
    if "error" in r:
      lines.append(f"| {r['system']} | failed: {r['error'][-120:]!r} ||||||||")
      continue
    ratio = base["tokens_per_s"] / r["tokens_per_s"]
    name = r["system"] + (" (PPO)" if r.get("algo") == "ppo" else "") + (
        f" (LoRA r={r['lora_rank']})" if r.get("lora_rank") else "") + (
        f" ({r['rollout_weights']} rollout)" if r.get("rollout_weights", "compute") != "compute" else "")
    critic = f"{r['critic_s']:.2f}" if r.get("algo") == "ppo" else "-"
    lines.append(f"| {name} | {r['step_s']:.2f} | {r['generate_s']:.2f} | {r['ref_logprobs_s']:.2f} | {critic} | "
                 f"{r['update_s']:.2f} | {r['tokens_per_s']:,.0f} | {ratio:.2f}x | "
                 f"{(r.get('peak_bytes') or 0) / GB:.1f} GB |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="qwen2.5-0.5b")
  ap.add_argument("--prompts", type=int, default=16)
  ap.add_argument("--G", type=int, default=8)
  ap.add_argument("--prompt_len", type=int, default=256)
  ap.add_argument("--new_tokens", type=int, default=512)
  ap.add_argument("--steps", type=int, default=4, help="measured steps after one warm-up step")
  ap.add_argument("--remat", default="dots")
  ap.add_argument("--mesh", default="1,-1,1", help="data,fsdp,tensor sizes over all devices (-1: the rest)")
  ap.add_argument("--rules", default="fsdp", help=f"parameter rules table, one of {tuple(sharding.RULES)}")
  ap.add_argument("--distributed", type=int, default=0,
                  help="1: join the processes of tpu_scripts/launch_local_gpus.sh (jax.distributed) first")
  ap.add_argument("--param_dtype", default="float32", help="policy parameters and AdamW state dtype")
  ap.add_argument("--grad_accum", type=int, default=1)
  ap.add_argument("--minibatches", type=int, default=1, help="grpo.num_minibatches: optimizer steps per batch")
  ap.add_argument("--state_dtype", default="params", help="optim.state_dtype: AdamW moments' storage dtype")
  ap.add_argument("--beta", type=float, default=0.04, help="KL coefficient (a reference model when > 0)")
  ap.add_argument("--logprob_impl", default="fused", choices=("chunked", "fused"),
                  help="model.logprob_impl of the update and reference passes (fused: 2.11 s and 72.7 GB vs "
                       "chunked 2.24 s and 77.8 GB at the 0.5B workload on one H100, issue 31)")
  ap.add_argument("--decode_attention", default="auto")
  ap.add_argument("--algo", default="grpo", choices=("grpo", "ppo"),
                  help="ppo: PPO with a critic of the policy's size (values, GAE, critic update in the step)")
  ap.add_argument("--lora_rank", type=int, default=0,
                  help="> 0: train LoRA adapters of this rank on every projection (alpha 2 x rank), the base frozen")
  ap.add_argument("--lora_base_dtype", default="params", help="lora.base_dtype: 'params', 'bfloat16' or 'int8'")
  ap.add_argument("--lora_merge_rollout", type=int, default=1, choices=(0, 1),
                  help="sampling.merge_lora: 1 generates with the adapters merged into W, 0 beside it")
  ap.add_argument("--rollout_weights", default="compute", choices=tuple(S.ROLLOUT_WEIGHTS),
                  help="sampling.rollout_weights: the decode's projections in the compute dtype, int8 or fp8 (e4m3)")
  ap.add_argument("--peers", default="", help="comma list of: tunix, trl, trl_cb (TRL with continuous batching)")
  ap.add_argument("--out", default="")
  ap.add_argument("--decode_splits", type=int, default=0, help="model.decode_kv_splits of the Pallas decode kernel")
  ap.add_argument("--xla_flags", default=None, help="XLA_FLAGS of the r1jax process only (the peers keep the caller's)")
  ap.add_argument("--unroll_decode", type=int, default=1, help="1: per-layer KV-cache buffers (model.unroll_decode)")
  ap.add_argument("--peer_args", default="", help="extra arguments of each peer's script: 'tunix=--micro_batch 2;trl=--micro_batch 32'")
  ap.add_argument("--lengths", default="fixed", choices=("fixed", "lognormal"),
                  help="completion lengths: all new_tokens, or lognormal (mean --mean_len, capped at new_tokens)")
  ap.add_argument("--mean_len", type=float, default=1000.0)
  ap.add_argument("--slots", type=int, default=0, help="> 0: continuous batching with this many slots")
  ap.add_argument("--system", default="", help="internal: run only r1jax in this process")
  ap.add_argument("--timeout", type=int, default=900, help="seconds per system")
  a = ap.parse_args()
  if a.distributed:
    distributed.initialize()
  if a.system == "r1jax":
    small = a.preset == "tiny" or jax.default_backend() == "cpu"
    def ceilings_fn(free):  # the copy's two arrays must fit in what the run left free (a capped run)
      if small:
        return model_bench.ceilings(**model_bench.SMOKE_CEILINGS)
      sizes = tuple(g * model_bench.GiB for g in (4, 8, 16) if not free or 2.5 * g * model_bench.GiB < free)
      return model_bench.ceilings(sizes=sizes or (model_bench.GiB,))
    r = run_r1jax(a, ceilings_fn)
    ceil = r["ceilings"]
    print(f"device {r['device']}  jax {jax.__version__}  {model_bench.describe(ceil)}")
    print(f"r1jax {a.preset}: step {r['step_s']:.2f} s = generate {r['generate_s']:.2f} + ref log-probs "
          f"{r['ref_logprobs_s']:.2f} + update {r['update_s']:.2f}; {r['tokens_per_s']:,.0f} tokens/s; "
          f"{r['generated_tokens_per_s']:,.0f} generated tokens/s; decode {r['decode_roofline_frac'] or 0:.0%} of roofline; update MFU {r['update_mfu'] or 0:.0%}; peak "
          f"{(r['peak_bytes'] or 0) / GB:.1f} GB")
    print("sampler vs trainer log-probs: " + ", ".join(f"{k} {v:.3g}" for k, v in r["rollout_mismatch"].items()))
    print("memory (GB): " + ", ".join(f"{k} {v / GB:.1f}" for k, v in r["memory"].items() if v is not None))
    print("RESULT " + json.dumps(r), flush=True)
    return
  results = [run_system(name, a) for name in ["r1jax"] + list(filter(None, a.peers.split(",")))]
  if "error" in results[0]:
    sys.exit("r1jax failed")
  print(table(results, results[0]))
  if a.out:
    with open(a.out, "w") as f:
      json.dump({"args": vars(a), "results": results}, f, indent=1)


if __name__ == "__main__":
  main()
