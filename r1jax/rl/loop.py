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
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import checkpoint as ckpt_lib
from r1jax import errors
from r1jax import distributed
from r1jax.model import heads
from r1jax import logger as logger_lib
from r1jax.sampling import rollout as rollout_lib
from r1jax.sampling import sampler as sampler_lib
from r1jax import sharding
from r1jax.rl import head_step
from r1jax.rl import lora_state
from r1jax.rl import step as train_step
from r1jax.evaluation import behaviour
from r1jax.rl import advantages as adv_lib
from r1jax.rl import rollout_mismatch
from r1jax.rl.config import GRPOConfig, PPOConfig
from r1jax.rl.dynamic_sampling import GroupBuffer
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
  rollout_chunks: int = 1
  """Generate each rollout in this many sequential sub-batches of its prompts (the same rows as one
  batch: `rollout.sample`); experiments default to 'auto', the memory plan's choice (`memory.plan`)."""
  memory_limit_gb: float = 0.0
  """Per-device memory the run must fit in (the memory planner's budget); 0 = the device's own
  limit (on CPU: the host's available memory over the CPU devices)."""
  resume: str = "auto"
  """A rerun of a work directory whose checkpoints were made with other settings (`r1jax.workdir`):
  'auto' stops, naming the fields that differ; 'weights' continues these weights with the new
  settings and records the change in <workdir>/run_config.json (a changed model shape or tokenizer
  is refused either way)."""

  def __post_init__(self):
    for f in ("steps", "prompts_per_step", "max_prompt_len", "log_every", "sample_log_every",
              "max_nonfinite", "reward_workers", "max_sampling_rounds"):
      if getattr(self, f) < 1:
        raise ValueError(f"train.{f}={getattr(self, f)} must be >= 1")
    if isinstance(self.rollout_chunks, bool) or not isinstance(self.rollout_chunks, int) or self.rollout_chunks < 1 \
        or self.prompts_per_step % self.rollout_chunks:
      raise ValueError(f"train.rollout_chunks={self.rollout_chunks!r} must be 'auto' or an int >= 1 dividing "
                       f"train.prompts_per_step={self.prompts_per_step}")
    if self.memory_limit_gb < 0:
      raise ValueError(f"train.memory_limit_gb={self.memory_limit_gb} must be >= 0 (0 = the device's limit)")
    if self.resume not in ("auto", "weights"):
      raise ValueError(f"train.resume={self.resume!r} is not one of ('auto', 'weights')")
    if self.on_too_long not in ("skip", "fail"):
      raise ValueError(f"train.on_too_long={self.on_too_long!r} is not one of ('skip', 'fail')")


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


@dataclasses.dataclass
class Groups:
  """G scored completions for each of B prompts: R = B * G rows, prompt-major."""
  idx: list[int]
  """The prompts' indices into the collector's examples (B)."""
  rollout: rollout_lib.Rollout
  total: np.ndarray
  """Total reward per row (R)."""
  per_fn: dict[str, np.ndarray]
  """Unweighted score of every reward term per row."""
  stats: dict
  """Reward errors and timeouts per term."""
  rounds: int = 1
  group_stats: dict = dataclasses.field(default_factory=dict)
  t_gen: float = 0.0
  t_rew: float = 0.0


@dataclasses.dataclass(frozen=True)
class GroupCollector:
  """Sample G completions per prompt and score them: what GRPO, rejection sampling and
  evaluation-style scoring share. `prompt_ids[i]` is `examples[i]`'s tokenized prompt."""
  model_cfg: Any
  scfg: Any
  tokenizer: Any
  examples: Sequence[dict]
  prompt_ids: Sequence[Sequence[int]]
  reward_specs: Sequence[combine.RewardSpec]
  tcfg: TrainConfig
  max_completion_length: int
  extra_rewards: Sequence[tuple[str, Callable, float]] = ()
  """(name, fn(rollout, examples) -> scores_R, weight): rewards that are not `str -> float`
  functions, e.g. a reward model's scores."""

  def score(self, ro: rollout_lib.Rollout, idx: Sequence[int]):
    """(total_R, per_fn, stats) for the rows of `ro`, whose prompts are examples[idx]."""
    tcfg, G = self.tcfg, self.scfg.num_samples
    examples = self.examples
    exs = [examples[i] for i in idx for _ in range(G)]
    total, per_fn, stats = combine.compute_rewards(ro.texts, exs, self.reward_specs, timeout_s=tcfg.reward_timeout_s,
                                                   num_workers=tcfg.reward_workers)
    for name, fn, weight in self.extra_rewards:
      per_fn[name] = np.asarray(fn(ro, exs), np.float64)
      total = total + weight * per_fn[name]
    if tcfg.overlong_weight:
      per_fn["overlong"] = length_lib.soft_overlong_punishment(ro.length, self.max_completion_length,
                                                               tcfg.overlong_buffer)
      total = total + tcfg.overlong_weight * per_fn["overlong"]
    return total, per_fn, stats

  def sample(self, params, idx: Sequence[int], key) -> rollout_lib.Rollout:
    return rollout_lib.sample(params, [self.prompt_ids[i] for i in idx], key, self.model_cfg, self.scfg,
                              self.tokenizer, batch_size=self.tcfg.prompts_per_step, chunks=self.tcfg.rollout_chunks)

  def collect(self, params, it, key, dynamic_sampling: bool = False) -> tuple[Groups, dict]:
    """One batch of groups from the prompt iterator `it`; with dynamic sampling, rounds of
    prompts until prompts_per_step groups carry signal (DAPO). Returns (groups, data position)."""
    tcfg, G = self.tcfg, self.scfg.num_samples
    buf = GroupBuffer(tcfg.prompts_per_step, G) if dynamic_sampling else None
    group_stats = {}
    t_gen = t_rew = 0.0
    rounds = 0
    while True:
      idx, position = next(it)
      ta = time.perf_counter()
      ro = self.sample(params, idx, jax.random.fold_in(key, rounds))
      tb = time.perf_counter()
      total, per_fn, stats = self.score(ro, idx)
      t_gen += tb - ta
      t_rew += time.perf_counter() - tb
      rounds += 1
      if buf is None:
        break
      buf.add(ro.rows(G) | {"idx": np.repeat(idx, G)} | {f"reward/{k}": v for k, v in per_fn.items()}, total)
      if buf.ready or rounds >= tcfg.max_sampling_rounds:
        # The first prompts_per_step informative groups across rounds (topped up if too few).
        rows, group_stats = buf.take(allow_uninformative=True)
        ro = rollout_lib.Rollout.from_rows(rows, G, self.scfg.pad_id)
        idx, total = list(rows["idx"][::G]), rows["rewards"]
        per_fn = {k[len("reward/"):]: v for k, v in rows.items() if k.startswith("reward/")}
        break
    return Groups(list(idx), ro, total, per_fn, stats, rounds, group_stats, t_gen, t_rew), position


def build_batch(groups: Groups, gcfg: GRPOConfig) -> dict:
  """The host batch of the update: prompt + completion rows, group advantages, completion mask
  (truncated rows masked out when grpo.mask_truncated_completions)."""
  G, ro, total = gcfg.num_generations, groups.rollout, groups.total
  adv = np.asarray(adv_lib.group_advantages(total, G, gcfg.scale_rewards), np.float32)
  host = ro.train_batch(G) | {"adv": adv}
  host["completion_mask"] = host["completion_mask"].astype(np.float32)
  if gcfg.mask_truncated_completions:
    host["completion_mask"] = host["completion_mask"] * (~ro.truncated)[:, None]
  return host


def minibatches(host: dict, batch: dict, gcfg: GRPOConfig, seed: int, step: int, mesh):
  """The grpo.mu x grpo.num_minibatches minibatches of a step's batch, in update order: each inner
  iteration a fresh permutation of the rows (`default_rng([seed, step, iteration])`), cut into
  num_minibatches; one minibatch is the whole batch already on the devices (`batch`), more are
  sliced from `host` and sent one at a time. The policy and a PPO critic see the same ones."""
  rows = len(host["tokens"])
  mb = rows // gcfg.num_minibatches
  for it_mu in range(gcfg.mu):
    perm = np.random.default_rng([seed, step, it_mu]).permutation(rows)
    for j in range(gcfg.num_minibatches):
      if gcfg.num_minibatches == 1:
        yield batch
      else:
        sel = np.sort(perm[j * mb:(j + 1) * mb])
        yield train_step.shard_batch(jax.tree.map(lambda x: x[sel], host), mesh)


@dataclasses.dataclass(frozen=True)
class Critic:
  """PPO's value model (grpo.advantage_estimator='gae'): the critic's values of a rollout, the GAE
  advantages and returns built on them, and the critic's updates on the returns."""
  values_fn: Callable
  """Jitted `(params, head, batch) -> V_RxN`, the value before each completion token."""
  update: Callable
  """The jitted `head_step.make_value_step` (clipped MSE on the returns)."""
  pcfg: PPOConfig
  gcfg: GRPOConfig
  seed: int
  mesh: Any

  @classmethod
  def build(cls, model_cfg, params, pcfg: PPOConfig, gcfg: GRPOConfig, ocfg: train_step.OptimConfig, seed: int,
            mesh):
    """(critic, its initial state): the policy's weights copied, a fresh scalar head, AdamW at
    ppo.critic_learning_rate."""
    cocfg = dataclasses.replace(ocfg, learning_rate=pcfg.critic_learning_rate, warmup_steps=0)
    head = heads.init_scalar_head(jax.random.key(seed + 1), model_cfg, mesh)
    state = train_step.init_state(jax.tree.map(jnp.copy, params), train_step.make_optimizer(cocfg), head=head)
    N = gcfg.max_completion_length

    def values_fn(p, h, batch):
      P = batch["tokens"].shape[1] - N
      return heads.completion_values(p, h, batch["tokens"], batch["mask"], P, model_cfg)[:, :N]

    update = head_step.make_value_step(model_cfg, cocfg, "mse", column="before", clip=pcfg.value_clip,
                                       grad_accum=gcfg.grad_accum, shardings=train_step.state_shardings(state),
                                       mesh=mesh)
    return cls(jax.jit(values_fn), update, pcfg, gcfg, seed, mesh), state

  def advantages(self, critic_state, host: dict, total_R) -> dict:
    """`host` with adv (R x N: GAE over the outcome reward at each row's last token, whitened with
    ppo.whiten_advantages), returns and old_values (R x N) for the critic."""
    pcfg = self.pcfg
    batch = train_step.shard_batch({k: host[k] for k in ("tokens", "mask")}, self.mesh)
    v = np.asarray(distributed.to_host(self.values_fn(critic_state.params, critic_state.head, batch)), np.float32)
    m = host["completion_mask"]
    adv, ret = adv_lib.gae_advantages(adv_lib.outcome_token_rewards(total_R, m), v, m, pcfg.gamma, pcfg.lam)
    if pcfg.whiten_advantages:
      adv = adv_lib.whiten(adv, m)
    return host | {"adv": np.asarray(adv, np.float32), "returns": np.asarray(ret, np.float32), "old_values": v * m}

  def train(self, critic_state, host: dict, step: int):
    """The critic's updates over the step's minibatches; (state, mean metrics prefixed critic/)."""
    keys = ("tokens", "mask", "returns", "completion_mask", "old_values")
    h = {k: host[k] for k in keys}
    out = []
    for mb in minibatches(h, train_step.shard_batch(h, self.mesh), self.gcfg, self.seed, step, self.mesh):
      critic_state, m = self.update(critic_state, {"tokens": mb["tokens"], "mask": mb["mask"],
                                                   "target": mb["returns"], "weight": mb["completion_mask"],
                                                   "old_values": mb["old_values"]})
      out.append(m)
    out = jax.device_get(out)
    return critic_state, {f"critic/{k}": float(np.mean([m[k] for m in out])) for k in out[0]}


@dataclasses.dataclass(frozen=True)
class PolicyUpdate:
  """Reference log-probs (and with grpo.recompute_old_logp the trainer's pi_old), then grpo.mu passes
  over grpo.num_minibatches minibatches of a batch. Returns (state, per-update metrics, the
  sampler-vs-trainer mismatch metrics)."""
  update: Callable
  """The jitted `train_step.make_grpo_step`."""
  ref_logp_fn: Callable | None
  """Log-probs of the batch's completions under given parameters (reference, or trainer pi_old)."""
  gcfg: GRPOConfig
  seed: int
  mesh: Any

  def __call__(self, state: train_step.TrainState, host: dict, step: int):
    gcfg, mesh = self.gcfg, self.mesh
    batch = train_step.shard_batch(host, mesh)  # the one host -> device copy of the rollout
    ref_logp_fn = self.ref_logp_fn
    # With LoRA the reference is the frozen base alone (adapters off): no second copy of the weights.
    reference = state.frozen if state.frozen is not None and gcfg.beta > 0 else state.ref_params
    if reference is not None:
      batch["ref_logp"] = ref_logp_fn(reference, batch)
    mismatch = {}
    if gcfg.recompute_old_logp:  # one more forward pass: the trainer's pi_old
      batch, mismatch = rollout_mismatch.with_trainer_old_logp(batch, ref_logp_fn(state.policy(), batch))
      if gcfg.num_minibatches > 1:
        host |= {k: np.asarray(distributed.to_host(batch[k])) for k in ("old_logp", "sampler_logp")}
    step_metrics = []
    if gcfg.num_minibatches > 1 and reference is not None:
      host["ref_logp"] = np.asarray(distributed.to_host(batch["ref_logp"]))
    for minibatch in minibatches(host, batch, gcfg, self.seed, step, mesh):
      state, m = self.update(state, minibatch)
      step_metrics.append(m)
    if state.ref_params is not None:
      if gcfg.ref_reset_every and (step + 1) % gcfg.ref_reset_every == 0:
        state = state.replace(ref_params=jax.tree.map(jnp.copy, state.params))
    return state, jax.device_get(step_metrics), mismatch


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
