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
from r1jax import errors
from r1jax import logger as logger_lib
from r1jax.sampling import rollout as rollout_lib
from r1jax.sampling import sampler as sampler_lib
from r1jax import sharding
from r1jax.rl import lora_state
from r1jax.rl import step as train_step
from r1jax.evaluation import behaviour
from r1jax.rl import advantages as adv_lib
from r1jax.rl.collect import GroupCollector, Groups, iterate_prompts
from r1jax.rl.config import GRPOConfig, PPOConfig, TrainConfig
from r1jax.rl.update import Critic, PolicyUpdate, build_batch
from r1jax.rewards import aha


class NonFiniteError(RuntimeError):
  pass


def _validate(tcfg: TrainConfig, gcfg: GRPOConfig, scfg, mesh):
  if scfg.num_samples != gcfg.num_generations:
    raise ValueError(f"sampling.num_samples={scfg.num_samples} must equal grpo.num_generations="
                     f"{gcfg.num_generations}")
  gcfg.check_rows(tcfg.prompts_per_step, sharding.batch_shards(mesh))
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


def step_metrics(groups: Groups, update_metrics: list[dict], G: int, times: dict) -> dict:
  """One step's logged metrics: update means, rewards, completions, timings."""
  ro = groups.rollout
  m = {k: np.mean([sm[k] for sm in update_metrics]) for k in update_metrics[0]}
  m |= reward_metrics(groups.per_fn, groups.total, groups.stats, G) | completion_metrics(ro)
  if "accuracy" in groups.per_fn:  # the aha curves: does reflecting pay, do wrong answers grow longer
    correct = np.asarray(groups.per_fn["accuracy"]) >= 1.0
    refl = behaviour.reflection_flags(ro.texts)
    m |= {f"aha/{k}": v for k, v in (behaviour.correct_given(correct, refl, "reflected")
                                     | behaviour.length_by_correctness(ro.length, correct)).items()
          if np.isfinite(v)}  # a P(correct | reflected) of a batch without reflection is not logged
  ntok = int(ro.length.sum())
  m |= {"time/generate": groups.t_gen, "time/reward": groups.t_rew, "time/update": times["update"],
        "time/step": times["step"], "tokens_per_second": ntok / times["step"],
        "generate_tokens_per_second": ntok / max(groups.t_gen, 1e-9), "sampling_rounds": groups.rounds,
        **{f"dynamic_sampling/{k}": v for k, v in groups.group_stats.items()}}
  mem = jax.local_devices()[0].memory_stats()  # None on CPU
  if mem and "peak_bytes_in_use" in mem:
    m["memory/peak_gib"] = mem["peak_bytes_in_use"] / 2 ** 30
  return m


def run_grpo(*, model_cfg, params, tokenizer, examples: Sequence[dict], reward_specs, template: str,
             tcfg: TrainConfig, gcfg: GRPOConfig, ocfg: train_step.OptimConfig, scfg, ckcfg, mesh,
             workdir, extra_rewards=(), ppo: PPOConfig = PPOConfig(), lora=None) -> dict[str, Any]:
  """Train `params` with GRPO on `examples` (or PPO with a critic: grpo.advantage_estimator='gae',
  the critic per `ppo`); resumes from `ckcfg.directory` if it holds a checkpoint.

  Each step: collect groups (sample + score) -> build the batch (-> the critic's values, GAE, the
  critic's update) -> update -> log -> checkpoint.
  Returns {'state': the final TrainState (params, opt_state, step, ref_params), 'history': metrics,
  'critic': the critic's TrainState or None}. With `lora` (an enabled `lora.LoRAConfig`) the state's
  params are the adapters and its `frozen` the base (`lora.merged` gives the full parameters).
  """
  _validate(tcfg, gcfg, scfg, mesh)
  G = gcfg.num_generations
  examples, prompt_ids, dropped = rollout_lib.encode_prompts(examples, tokenizer, template,
                                                            tcfg.max_prompt_len, tcfg.on_too_long)
  if not examples:
    raise errors.UserError("training prompts", f"train.max_prompt_len={tcfg.max_prompt_len}",
                           f"none of the {dropped} training prompts fits in that many tokens", "raise it")
  # One prompt length for the whole run (the longest prompt, or the bucket that holds it): one
  # compile of the sampler and of the update.
  P = sampler_lib.bucket_for(max(len(p) for p in prompt_ids), scfg.prompt_buckets)
  scfg = dataclasses.replace(scfg, prompt_buckets=(P,))
  use_ref = gcfg.uses_reference
  if lora is not None and lora.enabled:
    state = lora_state.init_state(params, model_cfg, lora, train_step.make_optimizer(ocfg), tcfg.seed)
  else:
    state = train_step.init_state(params, train_step.make_optimizer(ocfg),
                                  ref_params=jax.tree.map(jnp.copy, params) if use_ref else None)
  update = PolicyUpdate(
      train_step.make_grpo_step(model_cfg, gcfg, ocfg, scfg.temperature or 1.0,
                                shardings=train_step.state_shardings(state), mesh=mesh),
      # Reference log-probs, and the trainer's pi_old with grpo.recompute_old_logp (the same program).
      train_step.make_logprob_fn(model_cfg, scfg.temperature or 1.0, gcfg.grad_accum * gcfg.num_minibatches)
      if use_ref or gcfg.recompute_old_logp
      else None,
      gcfg, tcfg.seed, mesh)
  collector = GroupCollector(model_cfg, scfg, tokenizer, examples, prompt_ids, reward_specs, tcfg,
                             gcfg.max_completion_length, tuple(extra_rewards))

  critic, critic_state = (Critic.build(model_cfg, params, ppo, gcfg, ocfg, tcfg.seed, mesh)
                           if gcfg.advantage_estimator == "gae" else (None, None))

  checkpointer = ckpt_lib.Checkpointer(ckcfg)
  restored = restore_latest(checkpointer, state, tcfg.seed, critic_state)
  (state, start, position), critic_state = restored[:3], (restored[3] if critic is not None else None)
  it = iterate_prompts(len(examples), tcfg.prompts_per_step, tcfg.seed, position)

  # Process 0 logs into workdir, the others (same metrics) beside it.
  rank = jax.process_index()
  log = logger_lib.MetricsLogger(workdir if rank == 0 else pathlib.Path(workdir) / f"process_{rank}",
                                 resume_step=start)
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
      groups, position = collector.collect(state.policy(), it, jax.random.fold_in(base_key, step), gcfg.dynamic_sampling)
      host = build_batch(groups, gcfg)
      tc = time.perf_counter()
      critic_metrics = {}
      if critic is not None:
        host = critic.advantages(critic_state, host, groups.total)
        critic_state, critic_metrics = critic.train(critic_state, host, step)
        critic_metrics["time/critic"] = time.perf_counter() - tc
      if critic is not None and step < ppo.critic_warmup_steps:  # the policy waits for a baseline
        update_metrics, mismatch = [{"nonfinite": 0}], {}
      else:
        state, update_metrics, mismatch = update(state, host, step)
      t_upd = time.perf_counter() - tc
      m = step_metrics(groups, update_metrics, G, {"update": t_upd, "step": time.perf_counter() - t0})
      m |= critic_metrics
      m["prompts_dropped_too_long"] = dropped
      m["prompt_len"] = P  # the padded prompt width every pass of the step computes
      nonfinite = int(sum(sm["nonfinite"] for sm in update_metrics))
      bad_in_a_row = bad_in_a_row + 1 if nonfinite else 0
      m |= jax.device_get(mismatch)
      if (step + 1) % tcfg.log_every == 0:
        log.log(step + 1, m)
      if (step + 1) % tcfg.sample_log_every == 0 or step == start:
        log.log_samples(step + 1, [{"question": examples[i]["question"], "final": examples[i].get("final"),
                                    "completion": groups.rollout.texts[r * G], "reward": float(groups.total[r * G])}
                                   for r, i in enumerate(groups.idx[:4])])
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
      checkpointer.save(step + 1, checkpoint_tree(state, critic_state), {"step": step + 1, "data_position": position, "seed": tcfg.seed},
                        force=step + 1 == tcfg.steps)
  finally:
    checkpointer.wait()
    checkpointer.close()
    log.close()
    if pbar is not None:
      pbar.close()
  return {"state": state, "history": history, "critic": critic_state}


def checkpoint_tree(state: train_step.TrainState, critic_state=None) -> dict:
  """What a checkpoint holds: the state's members, and a PPO critic's under 'critic'."""
  return state.tree() if critic_state is None else state.tree() | {"critic": critic_state.tree()}


def restore_latest(checkpointer: ckpt_lib.Checkpointer, state: train_step.TrainState, seed: int, critic_state=None):
  """(state, start step, data position): the newest checkpoint that reads whole
  (`Checkpointer.restore_intact`: a damaged newer one is reported and set aside), or `state` at
  step 0; with a `critic_state`, (state, start, position, critic state)."""
  abstract = checkpoint_tree(state.abstract(), None if critic_state is None else critic_state.abstract())
  found = checkpointer.restore_intact(abstract) if checkpointer.latest_step() is not None else None
  if found is None:
    return (state, 0, {"epoch": 0, "index": 0}) + (() if critic_state is None else (critic_state,))
  tree, meta, _ = found
  if meta.get("seed", seed) != seed:
    raise ValueError(f"train.seed={seed} but the checkpoint in {checkpointer.directory} was written with seed "
                     f"{meta['seed']}: resuming would not continue the same random stream")
  print(f"resumed from {checkpointer.directory} at step {int(meta['step'])}")
  restored = lambda t: train_step.TrainState.from_tree(t).replace(frozen=state.frozen, lora_scale=state.lora_scale)
  if critic_state is None:
    return restored(tree), int(meta["step"]), meta["data_position"]
  critic_tree = tree.pop("critic")
  return (restored(tree), int(meta["step"]), meta["data_position"],
          train_step.TrainState.from_tree(critic_tree))


