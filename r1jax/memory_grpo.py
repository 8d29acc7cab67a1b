"""Plan a GRPO run's memory before it starts: compile, measure, choose remat and grad_accum.

The sampler, the reference log-prob pass and the update step are lowered on abstract inputs of
the run's shapes (nothing is allocated) and compiled; XLA's compiled memory analysis gives each
one's arguments, outputs and temporaries. The train state (parameters, AdamW moments, reference)
stays resident throughout, so a phase's peak is the state plus what the phase adds. With
`model.remat='auto'` and / or `grpo.grad_accum='auto'` the planner walks the settings from the
cheapest (no recompute, the whole minibatch at once) to the most frugal and takes the first that
fits in the device's memory (per remat setting, its most frugal grad_accum is compiled first: if that
does not fit the setting is skipped, else the fewest micro-batches that fit are found by bisection); where nothing fits it raises before any work, naming the sizes and
the knobs that would help.

The rollout is planned by `memory_sampling.plan_sampling`, once, beside the rest of the train state.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from r1jax import sharding
from r1jax.memory import GiB, HEADROOM, DoesNotFitError, Phase, device_limit_bytes, per_device_bytes, phase
from r1jax.memory_sampling import SamplingPlan, plan_sampling, sampling_options
from r1jax.model import config as model_config
from r1jax.model.config import ModelConfig
from r1jax.rl import step as train_step
from r1jax.sampling import sampler as sampler_lib


REMAT_ORDER = ("none", "dots", "full")
"""From the least recompute to the least memory."""


def abstract_state(model_cfg, ocfg, mesh, with_ref: bool, rules=None, lora=None) -> train_step.TrainState:
  """Shapes and shardings of the GRPO train state, with nothing allocated; with an enabled `lora`
  (`r1jax.model.lora.LoRAConfig`) the adapters, their optimizer state and the frozen base (no reference copy)."""
  shardings = model_config.param_shardings(model_cfg, mesh, rules)
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        model_config.abstract_params(model_cfg), shardings)
  optimizer = train_step.make_optimizer(ocfg)
  if lora is not None and lora.enabled:
    from r1jax.rl import lora_state
    return lora_state.abstract_state(params, model_cfg, lora, optimizer)
  opt = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                     jax.eval_shape(optimizer.init, params), train_step.opt_state_shardings(optimizer, params))
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return train_step.TrainState(params, opt, jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
                               params if with_ref else None)


def abstract_critic(model_cfg, ocfg, mesh, rules=None) -> train_step.TrainState:
  """Shapes and shardings of a PPO critic's state (`update.Critic`): the body, a scalar head, and
  AdamW over both."""
  from r1jax.model import heads
  shardings = model_config.param_shardings(model_cfg, mesh, rules)
  params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        model_config.abstract_params(model_cfg), shardings)
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  head = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                      jax.eval_shape(lambda: heads.init_scalar_head(jax.random.key(0), model_cfg)))
  optimizer = train_step.make_optimizer(ocfg)
  opt = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                     jax.eval_shape(optimizer.init, (params, head)),
                     train_step.opt_state_shardings(optimizer, (params, head)))
  return train_step.TrainState(params, opt, jax.ShapeDtypeStruct((), jnp.int32, sharding=rep), None, head)


def _batch(rows: int, P: int, N: int, mesh, with_ref: bool) -> dict:
  sh = sharding.batch_sharding(mesh)
  s = lambda shape, dt: jax.ShapeDtypeStruct(shape, dt, sharding=sh)
  b = {"tokens": s((rows, P + N), jnp.int32), "mask": s((rows, P + N), jnp.bool_),
       "completion_mask": s((rows, N), jnp.float32), "old_logp": s((rows, N), jnp.float32),
       "adv": s((rows,), jnp.float32)}
  if with_ref:
    b["ref_logp"] = s((rows, N), jnp.float32)
  return b


@dataclasses.dataclass
class Plan:
  remat: str
  grad_accum: int
  limit_bytes: int | None
  state_bytes: int
  phases: dict[str, Phase]
  tried: list[dict]
  reason: str
  rollout_chunks: int = 1
  """Sequential sub-batches of the prompts the rollout is generated in (`rollout.sample`)."""
  num_slots: int = 0
  """Continuous-batching decode slots (`SamplingConfig.num_slots`; 0: not continuous batching)."""
  sampling: "SamplingPlan | None" = None

  def summary(self) -> dict[str, Any]:
    return {"remat": self.remat, "grad_accum": self.grad_accum, "rollout_chunks": self.rollout_chunks,
            "num_slots": self.num_slots, "reason": self.reason,
            "rollout_tried": [] if self.sampling is None else self.sampling.tried,
            "limit_gib": None if self.limit_bytes is None else self.limit_bytes / GiB,
            "state_gib": self.state_bytes / GiB,
            "phases_peak_gib": {k: v.peak / GiB for k, v in self.phases.items()},
            "phases_temporaries_gib": {k: v.temporaries / GiB for k, v in self.phases.items()},
            "tried": self.tried}


def _accum_options(rows_per_update: int, shards: int, fixed) -> list[int]:
  if fixed != "auto":
    return [int(fixed)]
  out, a = [], 1
  while rows_per_update % (shards * a) == 0 and rows_per_update // (shards * a) >= 1:
    out.append(a)
    a *= 2
  return out or [1]


def _state_knobs(model_cfg: ModelConfig, ocfg, lora) -> str:
  """The end of every refusal's advice: the train state's knobs not already at their smallest (a
  bf16 named config is not told to use bf16), then more devices."""
  knobs = []
  if model_cfg.param_dtype != "bfloat16":
    knobs += ["optim.state_dtype='bfloat16'"] * (ocfg.state_dtype != "bfloat16") + ["model.param_dtype='bfloat16'"]
  if lora is None or not lora.enabled:
    knobs.append("LoRA (lora.rank=64)")
  return (f"use {' or '.join(knobs)}, or " if knobs else "or ") + "add devices (mesh.fsdp)"


def plan(model_cfg: ModelConfig, gcfg, ocfg, scfg: sampler_lib.SamplingConfig, mesh, *,
         prompts_per_step: int, prompt_len: int, remat="auto", grad_accum="auto",
         limit_bytes: int | None = None, temperature: float = 1.0, rules=None, log=print,
         rollout_chunks="auto", lora=None) -> Plan:
  """Choose (remat, grad_accum) and the rollout's (chunks, slots) for the run's shapes; see the
  module docstring. `lora` (a LoRAConfig that is enabled): the state and update are LoRA's.

  Args:
    remat / grad_accum / rollout_chunks: 'auto' or a fixed value (a fixed value is still measured
      and checked); with `scfg.continuous_batching`, `scfg.num_slots` 0 is planned, else kept.
    limit_bytes: per-device memory to fit in; None = the device's own limit (on CPU the host's
      available memory over the CPU devices; where none is known, the cheapest setting is taken
      and nothing is compiled or checked).
    rules: the parameters' rules table (default `sharding.DEFAULT_RULES`).
    lora: an enabled `r1jax.model.lora.LoRAConfig` plans the LoRA state and update (`plan_lora` chooses).
  """
  limit = device_limit_bytes() if limit_bytes is None else int(limit_bytes)
  budget = None if limit is None else int(limit * HEADROOM)
  G = gcfg.num_generations
  rows = prompts_per_step * G
  rows_update = rows // gcfg.num_minibatches
  shards = sharding.batch_shards(mesh)
  P, N = prompt_len, gcfg.max_completion_length
  with_ref = gcfg.uses_reference
  remats = REMAT_ORDER if remat == "auto" else (remat,)
  accums = _accum_options(rows_update, shards, grad_accum)

  scfg = dataclasses.replace(scfg, num_samples=G)
  if budget is None:
    c, m = sampling_options(prompts_per_step, G, shards, chunks=rollout_chunks,
                            continuous=scfg.continuous_batching, num_slots=scfg.num_slots)[0]
    return Plan(remats[0], accums[0], None, 0, {}, [], "no device or host memory limit is known and "
                "train.memory_limit_gb is 0: the cheapest setting, not measured", c, m)
  base = dataclasses.replace(model_cfg, remat="none")
  state = abstract_state(base, ocfg, mesh, with_ref, rules, lora)
  # PPO (grpo.advantage_estimator='gae'): the critic's state stays resident beside the policy's,
  # and its update is one more program, measured at every setting tried.
  critic = (abstract_critic(base, ocfg, mesh, rules) if getattr(gcfg, "advantage_estimator", "grpo") == "gae"
            else None)
  critic_bytes = 0 if critic is None else per_device_bytes(critic)
  more = _state_knobs(model_cfg, ocfg, lora)
  state_bytes = per_device_bytes(state) + critic_bytes
  phases: dict[str, Phase] = {}
  params_bytes = per_device_bytes(state.policy())
  # Sampling does not depend on remat or grad_accum: planned once, the rest of the state resident.
  splan = plan_sampling(base, scfg, mesh, prompts=prompts_per_step, prompt_len=P, limit_bytes=limit,
                        resident_bytes=state_bytes - params_bytes, params=state.policy(), chunks=rollout_chunks,
                        resident_name="the rest of the train state", log=log, knobs=(
      f"lower train.prompts_per_step={prompts_per_step}, grpo.num_generations={G} or "
      f"grpo.max_completion_length={N}, {more}"))
  phases["generate"] = splan.phase
  # The reference pass (the trainer's pi_old is the same program) runs in grad_accum x
  # num_minibatches micro-batches of rows, as the update does: measured here at the most frugal
  # grad_accum (if that does not fit, nothing does), and below at each grad_accum tried.
  use_ref_pass = with_ref or gcfg.recompute_old_logp
  ref_batch = _batch(rows, P, N, mesh, with_ref) if use_ref_pass else None
  ref_phases: dict[int, Phase] = {}

  def ref_phase(a: int) -> Phase:
    if a not in ref_phases:
      fn = train_step.make_logprob_fn(base, temperature, a * gcfg.num_minibatches)
      ref_phases[a] = phase("reference", fn.lower(state.policy(), ref_batch).compile())
    return ref_phases[a]

  def resident_peak(ph: Phase) -> int:  # a pass over one parameter copy, the rest of the state resident
    return ph.peak + state_bytes - params_bytes
  if use_ref_pass:
    phases["reference"] = ref_phase(accums[-1])
  # Each of the two reads one copy of the parameters (its arguments); the rest of the state stays resident.
  fixed_peaks = {k: resident_peak(v) for k, v in phases.items()} | {"generate": splan.peak_bytes}
  for k, pk in fixed_peaks.items():
    if pk > budget:
      raise DoesNotFitError(
          f"{k} needs {pk / GiB:.2f} GiB per device (train state {state_bytes / GiB:.2f} GiB, "
          f"{k} temporaries {phases[k].temporaries / GiB:.2f} GiB) but the limit is {budget / GiB:.2f} GiB "
          f"({HEADROOM:.0%} of {limit / GiB:.2f}); lower train.prompts_per_step={prompts_per_step}, "
          f"grpo.num_generations={G} or grpo.max_completion_length={N}, {more}")
  tried = []
  upd_state = state  # the reference rides through the update (donated, aliased): among its arguments
  mb = _batch(rows_update, P, N, mesh, with_ref)
  if gcfg.tis != "none":
    mb["sampler_logp"] = mb["old_logp"]
  shardings = jax.tree.map(lambda x: x.sharding, upd_state)
  measured: dict = {}
  critic_phases: dict = {}

  def fits(r: str, a: int) -> bool:
    if (r, a) not in measured:
      cfg = dataclasses.replace(model_cfg, remat=r)
      g = dataclasses.replace(gcfg, grad_accum=a)
      step = train_step.make_grpo_step(cfg, g, ocfg, temperature, shardings=shardings, mesh=mesh)
      ph = phase("update", step.lower(upd_state, mb).compile())
      ref_peak = resident_peak(ref_phase(a)) if use_ref_pass else 0
      upd_peak = ph.peak + critic_bytes  # the critic waits, resident
      critic_peak = 0
      if critic is not None:
        from r1jax.rl import head_step
        cstep = head_step.make_value_step(cfg, ocfg, "mse", column="before", clip=0.2, grad_accum=a,
                                          shardings=jax.tree.map(lambda x: x.sharding, critic), mesh=mesh)
        cb = {k: mb[k] for k in ("tokens", "mask")} | {"target": mb["old_logp"], "weight": mb["completion_mask"],
                                                       "old_values": mb["old_logp"]}
        cph = phase("critic_update", cstep.lower(critic, cb).compile())
        critic_peak = cph.peak + state_bytes - critic_bytes  # the policy's state resident
        critic_phases[r, a] = cph
      peak = max(upd_peak, ref_peak, critic_peak)
      measured[r, a] = (ph, peak, peak <= budget)
      tried.append({"remat": r, "grad_accum": a, "update_peak_gib": upd_peak / GiB,
                    "reference_peak_gib": ref_peak / GiB, "fits": peak <= budget}
                   | ({"critic_update_peak_gib": critic_peak / GiB} if critic is not None else {}))
      log(f"memory plan: remat={r} grad_accum={a}: update peak {upd_peak / GiB:.2f}, reference pass "
          f"{ref_peak / GiB:.2f}" + (f", critic update {critic_peak / GiB:.2f}" if critic is not None else "")
          + f" GiB per device of {budget / GiB:.2f} GiB -> {'fits' if peak <= budget else 'too large'}")
    return measured[r, a][2]

  # Per remat: if its most frugal grad_accum does not fit, none does (one compile, not one per
  # option); otherwise bisect for the fewest micro-batches that fit (peak falls with grad_accum).
  for r in remats:
    if not fits(r, accums[-1]):
      continue
    lo, hi = 0, len(accums) - 1
    while lo < hi:
      mid = (lo + hi) // 2
      lo, hi = (lo, mid) if fits(r, accums[mid]) else (mid + 1, hi)
    ph, peak, _ = measured[r, accums[hi]]
    phases["update"] = ph
    if critic is not None:
      phases["critic_update"] = critic_phases[r, accums[hi]]
    if use_ref_pass:
      phases["reference"] = ref_phase(accums[hi])
      fixed_peaks["reference"] = resident_peak(phases["reference"])
    why = (f"the cheapest setting whose peak ({max([peak] + list(fixed_peaks.values())) / GiB:.2f} GiB) "
           f"fits {budget / GiB:.2f} GiB")
    return Plan(r, accums[hi], limit, state_bytes, phases, tried, why + f"; the rollout in {splan.reason}",
                splan.chunks, splan.num_slots, splan)
  raise DoesNotFitError(
      f"no setting fits: the update needs >= {min(t['update_peak_gib'] for t in tried):.2f} GiB per device "
      f"(tried remat {list(remats)} x grad_accum {accums}; train state {state_bytes / GiB:.2f} GiB) but the "
      f"limit is {budget / GiB:.2f} GiB; lower train.prompts_per_step={prompts_per_step} or "
      f"grpo.max_completion_length={N}, raise grpo.num_minibatches={gcfg.num_minibatches}, {more}")


def plan_lora(model_cfg, gcfg, ocfg, scfg, mesh, *, lora, log=print, **kwargs):
  """`plan` with `lora` (an `r1jax.model.lora.LoRAConfig`) resolved: (plan, the LoRA config the run uses).
  lora.mode='auto' plans full fine-tuning first and, when no setting of it fits, LoRA at lora.rank
  (the returned config's rank is 0 when full fine-tuning was chosen); 'on' plans LoRA, rank 0 full."""
  if lora.enabled and lora.mode == "auto":
    try:
      return plan(model_cfg, gcfg, ocfg, scfg, mesh, log=log, **kwargs), dataclasses.replace(lora, rank=0)
    except DoesNotFitError as e:
      log(f"memory plan: full fine-tuning does not fit ({e}); planning LoRA at lora.rank={lora.rank}")
  return plan(model_cfg, gcfg, ocfg, scfg, mesh, log=log, lora=lora if lora.enabled else None, **kwargs), lora
