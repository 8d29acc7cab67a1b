"""Stage `reward_model`: a scalar-head transformer (`r1jax.model.heads`) trained with the Bradley-Terry
loss on preference pairs. At the embedded default the pairs are decided by rules among a policy's
samples of one prompt (`curation_selection.preference_pairs`: correct, then in the target language, then
concise is preferred). The body starts from a policy; a tenth of the pairs is held out and the
model's accuracy on them is reported. A killed run resumes from <out>/ckpt.

Inputs: {'policy' (the body's start), 'samples' (JSONL of curation.Sample)}. Outputs: {'model':
<out>/model (params + head + model config), 'pairs': <out>/pairs.jsonl, 'summary': <out>/summary.json}.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np

from r1jax import curation
from r1jax import curation_selection
from r1jax.model import heads
from r1jax.rl import head_step
from r1jax import scalar_model
from r1jax.rl import step as train_step
from r1jax.sft import data as data_lib


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
  steps: int = 40
  batch_size: int = 16
  """Pairs per step."""
  weight: float = 1.0
  """Weight of the reward model's score (a sigmoid, in [0, 1]) in rl_all's reward on general prompts."""
  max_pairs: int = 4000
  save_every: int = 20
  seed: int = 0
  optim: train_step.OptimConfig = train_step.OptimConfig(learning_rate=5e-4, warmup_steps=5, decay="cosine",
                                                         weight_decay=0.0)

  def __post_init__(self):
    for f in ("steps", "batch_size", "max_pairs", "save_every"):
      if getattr(self, f) < 1:
        raise ValueError(f"reward_model.{f}={getattr(self, f)} must be >= 1")
    if self.weight < 0:
      raise ValueError(f"reward_model.weight={self.weight} must be >= 0")


def encode_pairs(pairs, tokenizer) -> dict:
  """chosen / rejected rows, BOS + prompt + completion + EOS, right-padded to one length."""
  rows, _ = data_lib.encode([(p.prompt, c) for p in pairs for c in (p.chosen, p.rejected)], tokenizer, 10 ** 9)
  T = max(len(ids) for ids, _ in rows)
  toks = np.full((len(rows), T), tokenizer.pad_id, np.int32)
  for i, (ids, _) in enumerate(rows):
    toks[i, :len(ids)] = ids
  mask = np.arange(T)[None] < np.asarray([len(ids) for ids, _ in rows])[:, None]
  return {"chosen_tokens": toks[0::2], "chosen_mask": mask[0::2], "rejected_tokens": toks[1::2],
          "rejected_mask": mask[1::2]}


def run(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  rcfg = run.reward_model
  model_cfg, params = ctx.load(run, inputs["policy"])
  pairs = curation_selection.preference_pairs(curation.read_samples(inputs["samples"]), run.curation)
  pairs = [pairs[i] for i in np.random.default_rng(rcfg.seed).permutation(len(pairs))[:rcfg.max_pairs]]
  curation.write_jsonl(out / "pairs.jsonl", pairs)
  if len(pairs) < 2:
    raise ValueError(f"reward_model: {len(pairs)} preference pairs from {inputs['samples']}; need >= 2 (sample "
                     f"more per prompt: rejection.samples_per_prompt)")
  data = encode_pairs(pairs, ctx.tokenizer)
  n_eval = max(len(pairs) // 10, 1)
  held, train_rows = ({k: v[:n_eval] for k, v in data.items()}, {k: v[n_eval:] for k, v in data.items()})
  ocfg = dataclasses.replace(rcfg.optim, total_steps=rcfg.steps)
  head = heads.init_scalar_head(jax.random.key(rcfg.seed), model_cfg, ctx.mesh)
  state = train_step.init_state(params, train_step.make_optimizer(ocfg), head=head)
  step_fn = head_step.make_reward_model_step(model_cfg, ocfg, train_step.state_shardings(state), ctx.mesh)
  state = scalar_model.fit_head(state, step_fn, train_rows, out, steps=rcfg.steps, batch_size=rcfg.batch_size,
                                seed=rcfg.seed, save_every=rcfg.save_every, mesh=ctx.mesh)
  score = jax.jit(lambda p, h, t, m: heads.sequence_scores(p, h, t, m, model_cfg))
  margin = np.asarray(score(state.params, state.head, held["chosen_tokens"], held["chosen_mask"])
                      - score(state.params, state.head, held["rejected_tokens"], held["rejected_mask"]))
  summary = {"pairs": len(pairs), "held_out_pairs": n_eval, "held_out_accuracy": float(np.mean(margin > 0)),
             "reasons": {r: sum(p.reason == r for p in pairs) for r in ("correct", "language", "concise")}}
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  print(f"reward model: {len(pairs)} pairs {summary['reasons']}, held-out pair accuracy "
        f"{summary['held_out_accuracy']:.3f}")
  scalar_model.save(out / "model", rcfg.steps, state.params, state.head, model_cfg, ctx.tokenizer_path)
  return {"model": str(out / "model"), "pairs": str(out / "pairs.jsonl"), "summary": str(out / "summary.json")}
