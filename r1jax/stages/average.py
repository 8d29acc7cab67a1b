"""Stage `average`: the mean of an RL stage's last `average.last_k` (or chosen) checkpoints'
parameters, read sharded into the mesh and never gathered.

Inputs: {'checkpoints': an RL stage's checkpoint directory, 'policy': that stage's policy (model
config)}. Outputs: {'policy': <out>/policy_avg} (and <out>/policy_avg_hf).
"""
from __future__ import annotations

import dataclasses
import pathlib
import shutil

from r1jax import checkpoint as ckpt_lib
from r1jax import checkpoint_average
from r1jax.rl import step as train_step


@dataclasses.dataclass(frozen=True)
class AverageConfig:
  """The mean of these GRPO checkpoints' parameters -> <stage dir>/policy_avg."""
  last_k: int = 3
  """Average the last k checkpoints."""
  steps: str = ""
  """Comma-separated steps ('40,60,80'); overrides last_k."""

  def __post_init__(self):
    if self.last_k < 1:
      raise ValueError(f"average.last_k={self.last_k} must be >= 1")
    if any(not x.strip().isdigit() for x in self.steps.split(",") if x.strip()):
      raise ValueError(f"average.steps={self.steps!r} must be comma-separated step numbers")


def run(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  model_cfg, params = ctx.load(run, inputs["policy"])
  state = train_step.init_state(params, train_step.make_optimizer(run.optim),
                                ref_params=params if run.grpo.uses_reference else None)
  abstract = state.abstract().tree()
  del state
  acfg = run.average
  steps = [int(x) for x in acfg.steps.split(",") if x.strip()] or None
  tmp = out / "ckpt_avg"
  shutil.rmtree(tmp, ignore_errors=True)  # a killed earlier attempt's partial mean
  used = checkpoint_average.average_checkpoints(inputs["checkpoints"], tmp, abstract, steps=steps,
                                                last_k=None if steps else acfg.last_k,
                                                select=lambda path: path.startswith("params"))
  with ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(tmp), save_every=1, keep=1, async_save=False)) as ck:
    avg, _ = ck.restore(None, abstract)
  policy = ctx.save(run, out / "policy_avg", max(used), avg["params"], model_cfg, hf_export=True)
  print(f"averaged the parameters of steps {used} into {policy}")
  return {"policy": policy, "averaged_steps": used}
