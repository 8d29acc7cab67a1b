"""One GRPO step of r1jax on one device: generation, reference log-probs, update; median of steps.

    python benchmarks/grpo_step.py --preset qwen2.5-0.5b --out grpo.json

Workload (issue 5): random weights, 16 prompts x G = 8 samples, 256-token prompts, 512 generated
tokens each (EOS suppressed), beta = 0.04 with a reference model, mu = 1, one optimizer step.
Parameters fp32 (AdamW master copy), compute bf16; the sampler reads the same arrays.
Tokens/s counts prompt + completion tokens of all rows over the whole step.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import model as M
from r1jax import sampler as S
from r1jax import sharding
from r1jax import train_step as TS
from r1jax.grpo.config import GRPOConfig


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--preset", default="qwen2.5-0.5b")
  ap.add_argument("--prompts", type=int, default=16)
  ap.add_argument("--G", type=int, default=8)
  ap.add_argument("--prompt_len", type=int, default=256)
  ap.add_argument("--new_tokens", type=int, default=512)
  ap.add_argument("--steps", type=int, default=4, help="measured steps after one warm-up step")
  ap.add_argument("--remat", default="dots")
  ap.add_argument("--out", default="")
  a = ap.parse_args()
  cfg = M.preset(a.preset, dtype="bfloat16", param_dtype="float32", remat=a.remat)
  if a.preset == "tiny":
    cfg = M.preset("tiny")
  mesh = sharding.make_mesh(sharding.MeshConfig(data=1, fsdp=-1, tensor=1))
  with jax.set_mesh(mesh):
    params = M.init_sharded(jax.random.key(0), cfg, mesh)
    ref = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    g = GRPOConfig(num_generations=a.G, beta=0.04, max_completion_length=a.new_tokens)
    o = TS.OptimConfig(learning_rate=1e-6)
    state = TS.init_state(params, TS.make_optimizer(o))
    update = TS.make_grpo_step(cfg, g, o, 1.0, TS.state_shardings(state), mesh)
    ref_cfg = cfg if a.preset == "tiny" else M.preset(a.preset, dtype="bfloat16", param_dtype="bfloat16")
    ref_fn = TS.make_logprob_fn(ref_cfg, 1.0)
    scfg = S.SamplingConfig(max_new_tokens=a.new_tokens, temperature=1.0, num_samples=a.G, eos_ids=(0,),
                            suppress_eos=True, prompt_buckets=(a.prompt_len,))
    prompts = jax.random.randint(jax.random.key(1), (a.prompts, a.prompt_len), 1, cfg.vocab_size)
    pmask = jnp.ones_like(prompts, bool)
    R = a.prompts * a.G
    times = []
    for i in range(a.steps + 1):
      t0 = time.perf_counter()
      out = S.generate(state["params"], prompts, pmask, jax.random.key(i), cfg, scfg)
      jax.block_until_ready(out["tokens"])
      t1 = time.perf_counter()
      batch = {"tokens": jnp.concatenate([jnp.repeat(prompts, a.G, 0), out["tokens"]], 1),
               "mask": jnp.concatenate([jnp.repeat(pmask, a.G, 0), out["mask"]], 1),
               "completion_mask": out["mask"].astype(jnp.float32), "old_logp": out["logp"],
               "adv": jax.random.normal(jax.random.key(100 + i), (R,))}
      batch["ref_logp"] = ref_fn(ref, batch)
      jax.block_until_ready(batch["ref_logp"])
      t2 = time.perf_counter()
      state, m = update(state, batch)
      jax.block_until_ready(m["loss"])
      t3 = time.perf_counter()
      if i:  # the first step compiles
        times.append((t1 - t0, t2 - t1, t3 - t2, t3 - t0))
    gen, lp, upd, tot = np.median(np.asarray(times), axis=0)
    tokens = R * (a.prompt_len + a.new_tokens)
    stats = jax.devices()[0].memory_stats() or {}
    res = {"preset": a.preset, "device": jax.devices()[0].device_kind, "jax": jax.__version__, "rows": R,
           "generate_s": gen, "ref_logprobs_s": lp, "update_s": upd, "step_s": tot, "tokens_per_s": tokens / tot,
           "generated_tokens_per_s": R * a.new_tokens / gen, "peak_bytes": stats.get("peak_bytes_in_use")}
    print(json.dumps(res))
    print(f"{a.preset}: step {tot:.2f} s = generate {gen:.2f} + ref log-probs {lp:.2f} + update {upd:.2f}; "
          f"{tokens / tot:,.0f} tokens/s; peak {res['peak_bytes'] or 0:,} bytes")
    if a.out:
      with open(a.out, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
  main()
