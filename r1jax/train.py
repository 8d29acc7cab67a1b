"""The GRPO training loop: sample -> reward -> advantages -> update, with checkpoints.

The sampler and the update share the same parameter arrays on the same mesh (no copies).
Randomness is `fold_in(seed, step)` and the data position is saved, so a run killed at any
moment and restarted with the same command resumes from its last checkpoint and, on CPU,
continues bit-identically.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import checkpoint as ckpt_lib
from r1jax import distributed
from r1jax import logger as logger_lib
from r1jax import rollout as rollout_lib
from r1jax import sampler as sampler_lib
from r1jax import train_step
from r1jax.grpo import advantages as adv_lib
from r1jax.grpo import rollout_mismatch
from r1jax.grpo.config import GRPOConfig
from r1jax.grpo.dynamic_sampling import GroupBuffer
from r1jax.rewards import aha
from r1jax.rewards import combine
from r1jax.rewards import length as length_lib


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The loop around the update step."""
  steps: int = 100
  """Policy updates (rollout batches) to run."""
  prompts_per_step: int = 16
  """Questions per rollout; rows = prompts_per_step * grpo.num_generations."""
  max_prompt_len: int = 256
  on_too_long: str = "skip"
  """Prompts over max_prompt_len: 'skip' (counted) or 'fail'."""
  seed: int = 0
  log_every: int = 1
  sample_log_every: int = 10
  """Write a few completions to samples.jsonl every this many steps."""
  max_nonfinite: int = 5
  """Stop after this many consecutive updates with NaN/inf loss or gradient."""
  reward_timeout_s: float = 5.0
  reward_workers: int = 2
  overlong_weight: float = 0.0
  """DAPO soft overlong punishment (in tokens) added to the reward with this weight; 0 = off."""
  overlong_buffer: int = 16
  """Its buffer C: the penalty ramps from 0 at max_completion_length - C to -1 at the maximum."""
  max_sampling_rounds: int = 4
  """DAPO dynamic sampling: most rollout rounds per step to fill the batch with informative groups."""
  progress: bool = True
  """Progress bars (tqdm)."""
  memory_limit_gb: float = 0.0
  """Per-device memory the run must fit in (the memory planner's budget); 0 = the device's own
  limit (CPU reports none, so there nothing is checked)."""

  def __post_init__(self):
    for f in ("steps", "prompts_per_step", "max_prompt_len", "log_every", "sample_log_every",
              "max_nonfinite", "reward_workers", "max_sampling_rounds"):
      if getattr(self, f) < 1:
        raise ValueError(f"train.{f}={getattr(self, f)} must be >= 1")
    if self.memory_limit_gb < 0:
      raise ValueError(f"train.memory_limit_gb={self.memory_limit_gb} must be >= 0 (0 = the device's limit)")
    if self.on_too_long not in ("skip", "fail"):
      raise ValueError(f"train.on_too_long={self.on_too_long!r} is not one of ('skip', 'fail')")


class NonFiniteError(RuntimeError):
  pass


def _validate(tcfg: TrainConfig, gcfg: GRPOConfig, scfg, mesh):
  rows = tcfg.prompts_per_step * gcfg.num_generations
  if scfg.num_samples != gcfg.num_generations:
    raise ValueError(f"sampling.num_samples={scfg.num_samples} must equal grpo.num_generations="
                     f"{gcfg.num_generations}")
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if rows % gcfg.num_minibatches or (rows // gcfg.num_minibatches) % (shards * gcfg.grad_accum):
    raise ValueError(f"train.prompts_per_step * grpo.num_generations = {rows} rows must split into "
                     f"grpo.num_minibatches={gcfg.num_minibatches} minibatches, each divisible by "
                     f"grpo.grad_accum={gcfg.grad_accum} x the data*fsdp mesh size {shards}")
  if scfg.max_new_tokens != gcfg.max_completion_length:
    raise ValueError(f"sampling.max_new_tokens={scfg.max_new_tokens} must equal "
                     f"grpo.max_completion_length={gcfg.max_completion_length}")


def reward_metrics(rewards: dict[str, np.ndarray], total: np.ndarray, stats: dict, G: int) -> dict:
  m = {"reward": total.mean(), "reward_std": total.std()}
  for name, v in rewards.items():
    m[f"rewards/{name}/mean"] = v.mean()
    m[f"rewards/{name}/std"] = v.std()
  for key, counts in stats.items():
    for name, c in counts.items():
      m[f"rewards/{name}/{key}"] = c
  return m | {k: float(v) for k, v in adv_lib.group_stats(total, G).items()}


def completion_metrics(ro: rollout_lib.Rollout) -> dict:
  L = ro.length.astype(np.float64)
  m = {"completions/mean_length": L.mean(), "completions/min_length": L.min(),
       "completions/max_length": L.max(), "completions/clipped_ratio": ro.truncated.mean()}
  m |= {f"aha/{k}": v for k, v in aha.batch_metrics(ro.texts).items()}
  return m


def run_grpo(*, model_cfg, params, tokenizer, examples: Sequence[dict], reward_specs, template: str,
             tcfg: TrainConfig, gcfg: GRPOConfig, ocfg: train_step.OptimConfig, scfg, ckcfg, mesh,
             workdir) -> dict[str, Any]:
  """Train `params` with GRPO on `examples`; resumes from `ckcfg.directory` if it holds a checkpoint.

  Returns the final train state (params, opt_state, step) and the reference params if any.
  """
  _validate(tcfg, gcfg, scfg, mesh)
  G = gcfg.num_generations
  examples, prompt_ids, dropped = rollout_lib.encode_prompts(examples, tokenizer, template,
                                                            tcfg.max_prompt_len, tcfg.on_too_long)
  if not examples:
    raise ValueError(f"none of the {dropped} training prompts fits train.max_prompt_len={tcfg.max_prompt_len} "
                     f"tokens; raise it")
  # One prompt length for the whole run (the longest prompt, or the bucket that holds it): one
  # compile of the sampler and of the update.
  P = sampler_lib.bucket_for(max(len(p) for p in prompt_ids), scfg.prompt_buckets)
  scfg = dataclasses.replace(scfg, prompt_buckets=(P,))
  optimizer = train_step.make_optimizer(ocfg)
  state = train_step.init_state(params, optimizer)
  use_ref = gcfg.beta > 0
  if use_ref:
    state["ref_params"] = jax.tree.map(jnp.copy, params)
  shardings = train_step.state_shardings(state)
  update = train_step.make_grpo_step(model_cfg, gcfg, ocfg, scfg.temperature or 1.0,
                                     shardings={k: v for k, v in shardings.items() if k != "ref_params"},
                                     mesh=mesh)
  # Reference log-probs, and the trainer's pi_old with grpo.recompute_old_logp (the same program).
  ref_logp_fn = (train_step.make_logprob_fn(model_cfg, scfg.temperature or 1.0)
                 if use_ref or gcfg.recompute_old_logp else None)

  checkpointer = ckpt_lib.Checkpointer(ckcfg)
  position = {"epoch": 0, "index": 0}
  start = 0
  latest = checkpointer.latest_step()
  if latest is not None:
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    state, meta = checkpointer.restore(latest, abstract)
    start = int(meta["step"])
    position = meta["data_position"]
    if meta.get("seed", tcfg.seed) != tcfg.seed:
      raise ValueError(f"train.seed={tcfg.seed} but the checkpoint in {ckcfg.directory} was written with seed "
                       f"{meta['seed']}: resuming would not continue the same random stream")
    print(f"resumed from {ckcfg.directory} at step {start}")
  it = iterate_prompts(len(examples), tcfg.prompts_per_step, tcfg.seed, position)

  # Process 0 logs into workdir, the others (same metrics) beside it.
  rank = jax.process_index()
  log = logger_lib.MetricsLogger(workdir if rank == 0 else pathlib.Path(workdir) / f"process_{rank}")
  base_key = jax.random.key(tcfg.seed)
  bad_in_a_row = 0
  pbar = None
  if tcfg.progress:
    from tqdm.auto import tqdm
    pbar = tqdm(total=tcfg.steps, initial=start, desc="grpo", dynamic_ncols=True)
  history = []
  try:
    for step in range(start, tcfg.steps):
      t0 = time.perf_counter()
      key = jax.random.fold_in(base_key, step)
      # ---- sample (and, with dynamic sampling, resample until groups carry signal)
      buf = GroupBuffer(tcfg.prompts_per_step, G) if gcfg.dynamic_sampling else None
      group_stats = {}
      t_gen = t_rew = 0.0
      rounds = 0
      while True:
        idx, position = next(it)
        ta = time.perf_counter()
        ro = rollout_lib.sample(state["params"], [prompt_ids[i] for i in idx], jax.random.fold_in(key, rounds),
                                model_cfg, scfg, tokenizer, batch_size=tcfg.prompts_per_step)
        tb = time.perf_counter()
        exs = [examples[i] for i in idx for _ in range(G)]
        total, per_fn, stats = combine.compute_rewards(ro.texts, exs, reward_specs,
                                                       timeout_s=tcfg.reward_timeout_s,
                                                       num_workers=tcfg.reward_workers)
        if tcfg.overlong_weight:
          per_fn["overlong"] = length_lib.soft_overlong_punishment(ro.length, gcfg.max_completion_length,
                                                                   tcfg.overlong_buffer)
          total = total + tcfg.overlong_weight * per_fn["overlong"]
        t_gen += tb - ta
        t_rew += time.perf_counter() - tb
        rounds += 1
        if buf is None:
          break
        buf.add(ro.rows(G) | {"idx": np.repeat(idx, G)} | {f"reward/{k}": v for k, v in per_fn.items()}, total)
        if buf.ready or rounds >= tcfg.max_sampling_rounds:
          # The first prompts_per_step informative groups across rounds (topped up if too few).
          rows, group_stats = buf.take(allow_uninformative=True)
          ro = rollout_lib.Rollout.from_rows(rows, G, scfg.pad_id)
          idx, total = list(rows["idx"][::G]), rows["rewards"]
          per_fn = {k[len("reward/"):]: v for k, v in rows.items() if k.startswith("reward/")}
          break
      adv = np.asarray(adv_lib.group_advantages(total, G, gcfg.scale_rewards), np.float32)
      host = ro.train_batch(G) | {"adv": adv}
      host["completion_mask"] = host["completion_mask"].astype(np.float32)
      if gcfg.mask_truncated_completions:
        host["completion_mask"] = host["completion_mask"] * (~ro.truncated)[:, None]
      batch = train_step.shard_batch(host, mesh)  # the one host -> device copy of the rollout
      # ---- reference log-probs and updates
      tc = time.perf_counter()
      if use_ref:
        batch["ref_logp"] = ref_logp_fn(state["ref_params"], batch)
      mismatch = {}
      if gcfg.recompute_old_logp:  # one more forward pass: the trainer's pi_old
        batch, mismatch = rollout_mismatch.with_trainer_old_logp(batch, ref_logp_fn(state["params"], batch))
        if gcfg.num_minibatches > 1:
          host |= {k: np.asarray(distributed.to_host(batch[k])) for k in ("old_logp", "sampler_logp")}
      ref = state.pop("ref_params", None)
      step_metrics = []
      rows = len(adv)
      mb = rows // gcfg.num_minibatches
      if gcfg.num_minibatches > 1 and use_ref:
        host["ref_logp"] = np.asarray(distributed.to_host(batch["ref_logp"]))
      for it_mu in range(gcfg.mu):
        perm = np.random.default_rng([tcfg.seed, step, it_mu]).permutation(rows)
        for j in range(gcfg.num_minibatches):
          if gcfg.num_minibatches == 1:  # the whole batch, already on the devices
            minibatch = batch
          else:  # slice on the host, send each minibatch once
            sel = np.sort(perm[j * mb:(j + 1) * mb])
            minibatch = train_step.shard_batch(jax.tree.map(lambda x: x[sel], host), mesh)
          state, m = update(state, minibatch)
          step_metrics.append(m)
      if ref is not None:
        state["ref_params"] = ref
        if gcfg.ref_reset_every and (step + 1) % gcfg.ref_reset_every == 0:
          state["ref_params"] = jax.tree.map(jnp.copy, state["params"])
      step_metrics = jax.device_get(step_metrics)
      t_upd = time.perf_counter() - tc
      # ---- metrics
      m = {k: np.mean([sm[k] for sm in step_metrics]) for k in step_metrics[0]}
      nonfinite = int(sum(sm["nonfinite"] for sm in step_metrics))
      bad_in_a_row = bad_in_a_row + 1 if nonfinite else 0
      m |= reward_metrics(per_fn, total, stats, G) | completion_metrics(ro) | jax.device_get(mismatch)
      dt = time.perf_counter() - t0
      ntok = int(ro.length.sum())
      m |= {"time/generate": t_gen, "time/reward": t_rew, "time/update": t_upd, "time/step": dt,
            "tokens_per_second": ntok / dt, "generate_tokens_per_second": ntok / max(t_gen, 1e-9),
            "sampling_rounds": rounds, **{f"dynamic_sampling/{k}": v for k, v in group_stats.items()},
            "prompts_dropped_too_long": dropped}
      mem = jax.local_devices()[0].memory_stats()  # None on CPU
      if mem and "peak_bytes_in_use" in mem:
        m["memory/peak_gib"] = mem["peak_bytes_in_use"] / 2 ** 30
      if (step + 1) % tcfg.log_every == 0:
        log.log(step + 1, m)
      if (step + 1) % tcfg.sample_log_every == 0 or step == start:
        log.log_samples(step + 1, [{"question": examples[i]["question"], "final": examples[i].get("final"),
                                    "completion": ro.texts[r * G], "reward": float(total[r * G])}
                                   for r, i in enumerate(idx[:4])])
      history.append(m)
      if pbar is not None:
        pbar.update(1)
        pbar.set_postfix(reward=f"{m['reward']:.3f}", len=f"{m['completions/mean_length']:.0f}")
      if nonfinite:
        print(f"step {step + 1}: non-finite loss or gradient in {nonfinite} update(s); skipped them")
      if bad_in_a_row >= tcfg.max_nonfinite:
        raise NonFiniteError(f"{bad_in_a_row} consecutive steps had NaN/inf loss or gradients "
                             f"(train.max_nonfinite={tcfg.max_nonfinite}); stopping. Lower the learning rate "
                             f"or check the data; the last good checkpoint is in {ckcfg.directory}")
      # The RNG needs no state of its own: every key is fold_in(PRNGKey(seed), step).
      checkpointer.save(step + 1, state, {"step": step + 1, "data_position": position, "seed": tcfg.seed},
                        force=step + 1 == tcfg.steps)
  finally:
    checkpointer.wait()
    checkpointer.close()
    log.close()
    if pbar is not None:
      pbar.close()
  return {"state": state, "history": history}


def iterate_prompts(num_examples: int, batch_size: int, seed: int, position: dict):
  """Yield (indices, position after them): shuffled epochs, resumable from a saved position.

  position = {'epoch': e, 'index': i} means epoch e's permutation has been consumed up to i.
  """
  e, i = int(position["epoch"]), int(position["index"])
  while True:
    perm = np.random.default_rng([seed, e]).permutation(num_examples)
    while i + batch_size <= num_examples:
      i += batch_size
      yield [int(x) for x in perm[i - batch_size:i]], {"epoch": e, "index": i}
    e, i = e + 1, 0
