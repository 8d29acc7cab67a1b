"""One GRPO step (sample, reference log-probs, update) of a tiny model on a mesh over the devices
of every process; run by tests/test_distributed.py in one process and, through
tpu_scripts/launch_local_gpus.sh, in two CPU processes joined by jax.distributed:

    NUM_PROCESSES=2 tpu_scripts/launch_local_gpus.sh tests/distributed_grpo_worker.py --out DIR

Each process supplies only its own prompts and advantages (`distributed.process_rows`) and writes
`DIR/<rules>_p<process>.npz`: the sampled tokens, reference log-probs, loss and updated params,
gathered (replicated) to every process.
"""
import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import checkpoint_store
from r1jax import distributed
from r1jax import model as M
from r1jax.sampling import sampler as S
from r1jax import sharding
from r1jax.rl import step as TS
from r1jax.rl.config import GRPOConfig

CFG = M.ModelConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64)
B, P, G, N = 4, 5, 2, 4  # prompts, prompt length, samples per prompt, new tokens
CASES = {"fsdp": (1, 4, 1), "tensor": (1, 2, 2), "data": (4, 1, 1)}
"""rules table -> mesh (data, fsdp, tensor) over 4 devices."""


def grpo_step(mesh, rules_name: str) -> dict[str, np.ndarray]:
  """Tokens, reference log-probs, loss and new params (host copies) after one GRPO step."""
  rng = np.random.default_rng(0)
  prompts = rng.integers(1, CFG.vocab_size, (B, P)).astype(np.int32)
  pmask = np.ones((B, P), bool)
  pmask[1, :2] = False  # a left-padded prompt
  adv = rng.normal(0, 1, B * G).astype(np.float32)
  gcfg = GRPOConfig(num_generations=G, beta=0.04, max_completion_length=N)
  ocfg = TS.OptimConfig(learning_rate=1e-3)
  scfg = S.SamplingConfig(max_new_tokens=N, temperature=1.0, num_samples=G, prompt_buckets=())
  mine, mine_rows = distributed.process_rows(B), distributed.process_rows(B * G)
  with jax.set_mesh(mesh):
    params = M.init_sharded(jax.random.key(0), CFG, mesh, sharding.rules_table(rules_name))
    ref = jax.tree.map(jnp.copy, params)
    state = TS.init_state(params, TS.make_optimizer(ocfg))
    local = distributed.process_batch({"tokens": prompts[mine], "mask": pmask[mine]}, mesh)
    local_adv = distributed.process_batch({"adv": adv[mine_rows]}, mesh)["adv"]
    out = jax.jit(lambda p, t, m, k: S.generate(p, t, m, k, CFG, scfg))(
        state.params, local["tokens"], local["mask"], jax.random.key(1))

    def build(prompt, out, adv):
      rep = lambda x: jnp.repeat(x, G, axis=0)
      return {"tokens": jnp.concatenate([rep(prompt["tokens"]), out["tokens"]], 1),
              "mask": jnp.concatenate([rep(prompt["mask"]), out["mask"]], 1),
              "completion_mask": out["mask"].astype(jnp.float32), "old_logp": out["logp"], "adv": adv}

    batch = jax.jit(build, out_shardings=sharding.batch_sharding(mesh))(local, out, local_adv)
    batch["ref_logp"] = TS.make_logprob_fn(CFG, 1.0)(ref, batch)
    update = TS.make_grpo_step(CFG, gcfg, ocfg, 1.0, TS.state_shardings(state), mesh)
    state, metrics = update(state, batch)
    result = {"tokens": batch["tokens"], "ref_logp": batch["ref_logp"], "loss": metrics["loss"],
              "grad_norm": metrics["grad_norm"],
              **{f"params/{checkpoint_store.path_str(p)}": x for p, x in jax.tree_util.tree_flatten_with_path(
                  state.params)[0]},
              **{f"shard/{checkpoint_store.path_str(p)}": np.asarray(x.sharding.shard_shape(x.shape)) for p, x in
                 jax.tree_util.tree_flatten_with_path(state.params)[0]}}
    # Every process gets the whole of every array (an all-gather across processes) to write it.
    return distributed.to_host(result)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--out", required=True)
  ap.add_argument("--rules", default="fsdp,tensor", help=f"comma list of {tuple(CASES)}")
  a = ap.parse_args()
  distributed.initialize(timeout_s=60)
  out = pathlib.Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  for name in a.rules.split(","):
    res = grpo_step(sharding.make_mesh(CASES[name]), name)
    np.savez(out / f"{name}_p{jax.process_index()}.npz", processes=jax.process_count(),
             local_devices=jax.local_device_count(), **res)
    print(f"process {jax.process_index()}/{jax.process_count()}: {name} loss {float(res['loss']):.6f}", flush=True)


if __name__ == "__main__":
  main()
