"""Plan how a batch of prompts is generated within the memory: a GRPO step's rollout
(`memory_grpo.plan`), evaluation and rejection sampling, compiled and measured as the update is.

Where the whole rollout (prompts x samples rows at once) does not fit beside what stays
resident, it is generated in `rollout_chunks` sequential sub-batches of the prompts
(`rollout.sample`), or, with `sampling.continuous_batching`, decoded in fewer `num_slots` slots.
The rule, fastest first: decoding reads every weight once a step whatever the rows, so one pass
over all rows beats two over halves; fewest chunks first, and with continuous batching the most
slots first (one chunk), then more chunks at the fewest slots. Peak memory falls along that list,
so its most frugal entry is compiled first (nothing fits: the run stops) and the fastest that fits
is found by bisection.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from r1jax import errors
from r1jax import sharding
from r1jax.memory import GiB, HEADROOM, DoesNotFitError, Phase, device_limit_bytes, phase
from r1jax.model import config as model_config
from r1jax.model.config import ModelConfig
from r1jax.sampling import sampler as sampler_lib


@dataclasses.dataclass
class SamplingPlan:
  """How a batch of prompts is generated within the memory (`plan_sampling`)."""
  chunks: int
  num_slots: int
  """0: continuous batching off (or every row a slot where nothing was measured)."""
  peak_bytes: int
  phase: Phase | None
  tried: list[dict]
  reason: str


def sampling_options(prompts: int, rows_per_prompt: int, shards: int, *, chunks="auto", continuous: bool = False,
                     num_slots: int = 0) -> list[tuple[int, int]]:
  """(chunks, slots) to try, fastest first and peak memory falling (see the module docstring).

  Chunk counts halve the prompts while each chunk keeps a whole number of prompts per data shard;
  slot counts halve the chunk's rows down to one a shard. A fixed `chunks` (an int) or `num_slots`
  (> 0) is the only value of its kind tried."""
  divides = lambda c: prompts % c == 0 and (prompts % shards or (prompts // c) % shards == 0)
  if chunks != "auto":
    if not prompts % int(chunks) == 0:
      raise errors.ConfigError(f"rollout_chunks={chunks} must divide the {prompts} prompts of a rollout")
    cs = [int(chunks)]
  else:
    cs = [c for c in (2 ** i for i in range(prompts.bit_length())) if divides(c)]
  if not continuous:
    return [(c, 0) for c in cs]
  if num_slots:
    return [(c, num_slots) for c in cs]
  slots = [prompts // cs[0] * rows_per_prompt]
  while slots[-1] % 2 == 0 and slots[-1] // 2 >= shards and (slots[-1] // 2) % shards == 0:
    slots.append(slots[-1] // 2)
  # the most slots first in one chunk, then more chunks at the fewest slots (capped by a chunk's rows)
  return [(cs[0], m) for m in slots] + [(c, min(slots[-1], prompts // c * rows_per_prompt)) for c in cs[1:]]


def plan_sampling(model_cfg: ModelConfig, scfg: sampler_lib.SamplingConfig, mesh, *, prompts: int,
                  prompt_len: int, limit_bytes: int | None = None, resident_bytes: int = 0, params=None,
                  chunks="auto", rules=None, name: str = "generate", resident_name: str = "resident",
                  knobs: str = "fewer prompts or samples per batch, or a shorter max_new_tokens",
                  log=print) -> SamplingPlan:
  """The fastest way to generate `scfg.num_samples` completions for each of `prompts` prompts of
  `prompt_len` tokens that fits: (chunks, slots) from `sampling_options`, each compiled (abstract
  inputs, nothing allocated) and its peak, plus `resident_bytes` held beside it (what stays on the
  device besides the parameters the sampler reads) and the finished chunks' outputs, held
  against HEADROOM x `limit_bytes` (None: the device's limit). DoesNotFitError if nothing fits.

  params: the parameters generated with (arrays or ShapeDtypeStructs; default: `model_cfg`'s
    shapes with the run's shardings). mesh: the run's, or None (one device, no batch sharding).
    chunks: 'auto' or a fixed count (still measured). With `scfg.continuous_batching`,
    `scfg.num_slots` 0 is planned, a positive value kept.
  """
  limit = device_limit_bytes() if limit_bytes is None else int(limit_bytes)
  shards = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
  options = sampling_options(prompts, scfg.num_samples, shards, chunks=chunks, continuous=scfg.continuous_batching,
                             num_slots=scfg.num_slots)
  if limit is None:
    return SamplingPlan(*options[0], 0, None, [], "no memory limit is known: the fastest setting, not measured")
  budget = int(limit * HEADROOM)
  if params is None:
    shardings = model_config.param_shardings(model_cfg, mesh, rules)
    params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          model_config.abstract_params(model_cfg), shardings)
  key = jax.eval_shape(lambda: jax.random.key(0))
  measured: dict = {}
  tried: list[dict] = []

  def peak(opt) -> int:
    if opt not in measured:
      c, m = opt
      b = prompts // c
      sh = sharding.batch_sharding(mesh) if mesh is not None and b % shards == 0 else None
      toks = jax.ShapeDtypeStruct((b, prompt_len), jnp.int32, sharding=sh)
      pmask = jax.ShapeDtypeStruct((b, prompt_len), jnp.bool_, sharding=sh)
      ph = phase(name, sampler_lib.generate.lower(params, toks, pmask, key, cfg=model_cfg,
                                                  scfg=dataclasses.replace(scfg, num_slots=m)).compile())
      # the finished chunks' outputs wait on the device until the last chunk is read back
      pk = ph.peak + resident_bytes + (c - 1) * (ph.outputs - ph.aliased)
      measured[opt] = (ph, pk)
      tried.append({"rollout_chunks": c, "num_slots": m, "peak_gib": pk / GiB, "fits": pk <= budget})
      log(f"memory plan: {name} in {c} chunk(s)" + (f", {m} slots" if m else "") +
          f": peak {pk / GiB:.2f} GiB per device of {budget / GiB:.2f} GiB -> {'fits' if pk <= budget else 'too large'}")
    return measured[opt][1]

  if peak(options[-1]) > budget:
    ph, pk = measured[options[-1]]
    c, m = options[-1]
    raise DoesNotFitError(
        f"{name} needs {pk / GiB:.2f} GiB per device ({resident_name} {resident_bytes / GiB:.2f} GiB, {name} "
        f"arguments {ph.arguments / GiB:.2f} GiB and temporaries {ph.temporaries / GiB:.2f} GiB) but the limit is "
        f"{budget / GiB:.2f} GiB ({HEADROOM:.0%} of {limit / GiB:.2f}) even in {c} chunk(s)"
        + (f" of {m} slots" if m else "") + f" of {prompts} prompts x {scfg.num_samples} samples; {knobs}")
  lo, hi = 0, len(options) - 1
  while lo < hi:
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if peak(options[mid]) <= budget else (mid + 1, hi)
  (c, m), (ph, pk) = options[hi], measured[options[hi]]
  why = (f"{c} chunk(s)" + (f" of {m} slots" if m else "") + f": the fastest whose peak ({pk / GiB:.2f} GiB) fits "
         f"{budget / GiB:.2f} GiB")
  return SamplingPlan(c, m, pk, ph, tried, why)
