"""Samples of a policy as `curation.Sample`s: k completions per prompt, scored by the rule rewards
in parallel (the RL loop's `GroupCollector`), with their provenance."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax

from r1jax import curation
from r1jax import memory_sampling
from r1jax import templates
from r1jax.sampling import rollout as rollout_lib
from r1jax.sampling import sampler as sampler_lib
from r1jax.rl import collect
from r1jax.rewards import combine
from r1jax.tasks import general


def policy_samples(run, ctx, params, model_cfg, examples: Sequence[dict], k: int, seed: int, policy: str,
                   step: int | None = None, temperature: float | None = None) -> list[curation.Sample]:
  """k samples per example (prompt-major), each with scores accuracy and format (the rule
  rewards) and provenance {policy, step, seed, sample_index}."""
  collector = make_collector(run, ctx, model_cfg, examples, k, temperature)
  examples = collector.examples
  B = run.train.prompts_per_step
  key = jax.random.key(seed)
  out = []
  for start in range(0, len(examples), B):
    idx = list(range(start, min(start + B, len(examples))))
    ro = collector.sample(params, idx, jax.random.fold_in(key, start))
    _, per_fn, _ = collector.score(ro, idx)
    for r, text in enumerate(ro.texts):
      ex = examples[idx[r // k]]
      out.append(curation.Sample(
          prompt=templates.format_prompt(ex["question"], ctx.template), completion=text, answer=str(ex["final"]),
          num_tokens=int(ro.length[r]), truncated=bool(ro.truncated[r]),
          source={"policy": policy, "step": step, "seed": seed, "sample_index": r % k}, example=dict(ex),
          scores={"accuracy": float(per_fn["accuracy"][r]), "format": float(per_fn["format"][r])}))
  # Generated general tasks are graded by their exact-words grader (`curation_filters.default_grader`),
  # not the math grader the accuracy reward uses.
  return [dataclasses.replace(s, scores={**s.scores, "accuracy": general.grade(s.completion, s.example)})
          if s.example.get("task") == general.TASK else s for s in out]


def make_collector(run, ctx, model_cfg, examples: Sequence[dict], k: int, temperature: float | None = None,
                   rewards: Sequence[str] = ("accuracy", "format")) -> collect.GroupCollector:
  """A `collect.GroupCollector` of k samples per prompt for `examples` (those whose prompt fits
  train.max_prompt_len: `collector.examples`), scored by the named rule rewards; its batches of
  train.prompts_per_step prompts are generated in the chunks the memory plans for k samples
  (`memory_sampling.plan_sampling`; a fixed train.rollout_chunks is kept and checked; on CPU only under
  train.memory_limit_gb, else as the GRPO plan chose)."""
  from r1jax import memory
  tcfg = run.train
  examples, prompt_ids, _ = rollout_lib.encode_prompts(examples, ctx.tokenizer, ctx.template, tcfg.max_prompt_len)
  P = sampler_lib.bucket_for(max(len(p) for p in prompt_ids), run.sampling.prompt_buckets)
  scfg = dataclasses.replace(run.sampling, num_samples=k, prompt_buckets=(P,),
                             temperature=run.sampling.temperature if temperature is None else temperature)
  limit = int(tcfg.memory_limit_gb * memory.GiB) or None
  if limit is not None or jax.devices()[0].platform != "cpu":  # on CPU, as evaluation: only under a given limit
    splan = memory_sampling.plan_sampling(
        model_cfg, scfg, ctx.mesh, prompts=tcfg.prompts_per_step, prompt_len=P, rules=ctx.rules, limit_bytes=limit,
        chunks=run.rollout_chunks, name="policy sampling", resident_name="held", log=lambda *a: None,
        knobs=f"lower train.prompts_per_step={tcfg.prompts_per_step}, the samples per prompt ({k}) or "
              f"grpo.max_completion_length={scfg.max_new_tokens}")
    tcfg = dataclasses.replace(tcfg, rollout_chunks=splan.chunks)
    scfg = dataclasses.replace(scfg, num_slots=splan.num_slots)
  specs = [s for s in combine.default_specs(run.rewards) if s.name in rewards]
  return collect.GroupCollector(model_cfg, scfg, ctx.tokenizer, examples, prompt_ids, specs, tcfg,
                                run.grpo.max_completion_length)


def take(examples: Sequence[dict], n: int, seed: int) -> list[dict]:
  """n examples in a seeded order (all if n >= len)."""
  import numpy as np
  order = np.random.default_rng(seed).permutation(len(examples))
  return [examples[i] for i in order[:n]]


def cap_per_prompt(samples: Sequence[curation.Sample], n: int) -> list[curation.Sample]:
  """The first `n` samples of each prompt, in input order."""
  seen: dict[str, int] = {}
  out = []
  for s in samples:
    seen[s.prompt] = seen.get(s.prompt, 0) + 1
    if seen[s.prompt] <= n:
      out.append(s)
  return out
