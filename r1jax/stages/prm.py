"""Stages `prm_data` and `prm` of experiments/prm.py: a process reward model (`r1jax.prm`) trained on
the step labels of a policy's own samples, and the RL arms that use it.

prm_data: `prm.samples_per_prompt` samples for each of `prm.num_prompts` training prompts, every
step labelled by checking it (`prm.step_labels`) at the token that ends it. Outputs {'data':
<out>/steps.npz (tokens, mask, target, weight), 'summary'}.
prm: the body from a policy plus a scalar head, binary cross-entropy at step ends, a tenth of the
rows held out; its step accuracy and the PRM score of right and wrong steps are reported. Outputs
{'model': <out>/model, 'summary'}. A killed run resumes from <out>/ckpt.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np

from r1jax import fine_tune
from r1jax.model import heads
from r1jax.rl import head_step
from r1jax import policy_samples
from r1jax import prm as prm_lib
from r1jax import scalar_model
from r1jax.rl import step as train_step
from r1jax.rewards import combine


@dataclasses.dataclass(frozen=True)
class PRMConfig:
  num_prompts: int = 512
  """Training prompts sampled for the step labels."""
  samples_per_prompt: int = 4
  steps: int = 150
  batch_size: int = 32
  weight: float = 1.0
  """Weight of the PRM reward in the process-reward RL arms."""
  save_every: int = 50
  seed: int = 5
  base: str = ""
  """A base policy directory to start from instead of pretraining one (the stages pretrain and
  evaluate_base of experiments/prm.py then read it)."""
  model: str = ""
  """A trained PRM directory (a `prm` stage's <out>/model) instead of labelling and training one."""
  optim: train_step.OptimConfig = train_step.OptimConfig(learning_rate=5e-4, warmup_steps=10, decay="cosine",
                                                         weight_decay=0.0)

  def __post_init__(self):
    for f in ("num_prompts", "samples_per_prompt", "steps", "batch_size", "save_every"):
      if getattr(self, f) < 1:
        raise ValueError(f"prm.{f}={getattr(self, f)} must be >= 1")
    if self.weight < 0:
      raise ValueError(f"prm.weight={self.weight} must be >= 0")


def data(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  cfg = run.prm
  model_cfg, params = ctx.load(run, inputs["policy"])
  k = cfg.samples_per_prompt
  prompts = policy_samples.take(ctx.train_ex, cfg.num_prompts, cfg.seed)
  collector = policy_samples.make_collector(run, ctx, model_cfg, prompts, k, rewards=("accuracy",))
  examples = collector.examples
  B = run.train.prompts_per_step
  key = jax.random.key(cfg.seed)
  rows = {"tokens": [], "mask": [], "target": [], "weight": [], "correct": []}
  for start in range(0, len(examples), B):
    idx = list(range(start, min(start + B, len(examples))))
    ro = collector.sample(params, idx, jax.random.fold_in(key, start))
    exs = [examples[i] for i in idx for _ in range(k)]
    target, weight = prm_lib.label_rollout(ro, exs, ctx.tokenizer)
    _, per_fn, _ = collector.score(ro, idx)
    b = ro.train_batch(k)
    for name, v in (("tokens", b["tokens"]), ("mask", b["mask"]), ("target", target), ("weight", weight),
                    ("correct", per_fn["accuracy"])):
      rows[name].append(np.asarray(v))
  arrays = {k_: np.concatenate(v) for k_, v in rows.items()}
  np.savez(out / "steps.npz", **arrays)
  w = arrays["weight"] > 0
  summary = {"rows": int(len(arrays["tokens"])), "steps": int(w.sum()), "right_steps": float(arrays["target"][w].mean()),
             "rows_without_steps": int((w.sum(1) == 0).sum()), "outcome_accuracy": float(arrays["correct"].mean())}
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  print(f"prm data: {summary}")
  return {"data": str(out / "steps.npz"), "summary": str(out / "summary.json")}


def run(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  cfg = run.prm
  model_cfg, params = ctx.load(run, inputs["policy"])
  d = dict(np.load(inputs["data"]))
  d = {k: d[k] for k in ("tokens", "mask", "target", "weight")}
  order = np.random.default_rng(cfg.seed).permutation(len(d["tokens"]))
  n_eval = max(len(order) // 10, 1)
  held = {k: v[order[:n_eval]] for k, v in d.items()}
  rows = {k: v[order[n_eval:]] for k, v in d.items()}
  ocfg = dataclasses.replace(cfg.optim, total_steps=cfg.steps)
  head = heads.init_scalar_head(jax.random.key(cfg.seed), model_cfg, ctx.mesh)
  state = train_step.init_state(params, train_step.make_optimizer(ocfg), head=head)
  step_fn = head_step.make_value_step(model_cfg, ocfg, "bce", column="after",
                                      shardings=train_step.state_shardings(state), mesh=ctx.mesh)
  state = scalar_model.fit_head(state, step_fn, rows, out, steps=cfg.steps, batch_size=cfg.batch_size,
                                seed=cfg.seed, save_every=cfg.save_every, mesh=ctx.mesh)
  N = held["target"].shape[1]
  v = jax.jit(lambda p, h, t, m: heads.completion_values(p, h, t, m, t.shape[1] - N, model_cfg)[:, 1:])
  p = np.asarray(jax.nn.sigmoid(v(state.params, state.head, held["tokens"], held["mask"])))
  w = held["weight"] > 0
  y = held["target"][w] > 0.5
  summary = {"held_out_steps": int(w.sum()), "held_out_step_accuracy": float(np.mean((p[w] > 0.5) == y)),
             "score_right_steps": float(p[w][y].mean()) if y.any() else None,
             "score_wrong_steps": float(p[w][~y].mean()) if (~y).any() else None,
             "right_share": float(y.mean())}
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  print(f"prm: {summary}")
  scalar_model.save(out / "model", cfg.steps, state.params, state.head, model_cfg, ctx.tokenizer_path)
  return {"model": str(out / "model"), "summary": str(out / "summary.json")}


STAT_TERMS = ("sum", "min", "steps", "repeated_steps", "empty_steps", "tokens_per_step", "step_accuracy")
"""The PRM scorer's terms every RL arm logs (`rewards/prm_<term>/mean`), at weight 0 unless rewarded."""


def rl(run, ctx, inputs: dict, out: pathlib.Path, *, form: str) -> dict:
  """GRPO from inputs['policy'] with the format reward and: the accuracy reward (form 'outcome'),
  or the PRM's sum-form or min-form score (accuracy then logged at weight 0). Every arm logs the
  PRM's scores and the step statistics."""
  if form not in ("outcome",) + prm_lib.FORMS:
    raise ValueError(f"PRM RL form={form!r} is not one of {('outcome',) + prm_lib.FORMS}")
  cfg = run.prm
  rm_cfg, rm_params, rm_head = scalar_model.load(inputs["prm"], ctx.mesh, ctx.rules)
  scorer = prm_lib.Scorer(rm_cfg, rm_params, rm_head, ctx.tokenizer)
  specs = combine.default_specs(run.rewards)
  if form != "outcome":
    specs = [dataclasses.replace(s, weight=0.0) if s.name == "accuracy" else s for s in specs]
  extra = [(f"prm_{t}", scorer.fn(t), cfg.weight if t == form else 0.0) for t in STAT_TERMS]
  return fine_tune.grpo(run, ctx, inputs["policy"], out, specs=specs, extra_rewards=extra)
