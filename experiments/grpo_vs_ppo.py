r"""GRPO vs PPO with a critic (DeepSeekMath sec. 4.1, DeepSeek-R1 sec. 2.2.1): GRPO drops the value
model, whose size equals the policy's, and takes the baseline from the group's scores instead.

Both arms run the R1-Zero default (the same tiny base, rewards, G = 8 samples per prompt, length
caps, steps and policy optimizer); PPO adds a critic of the policy's size started from its weights
(`grpo.advantage_estimator=gae`, the `ppo` section: GAE over the outcome reward at the last token,
clipped value loss). Each entry reports held-out pass@1 before and after, the measured step time and
the FLOPs of its steps (2 N a sampled token, 2 N a reference or critic forward token, 6 N a trained
token, over the padded rows the jitted passes compute; N the parameters):

    python experiments/grpo_vs_ppo.py --root runs/grpo_vs_ppo

Reproduced means: GRPO reaches PPO's accuracy (or better) at about half the compute of PPO's
step, and on the GPU (benchmarks/grpo_step.py --algo ppo, BENCHMARKS.md) at a fraction of its
memory. `--index I`, `--gather`, `--set FIELD=VALUE` as in the other sweeps.
"""
import json
import os
import pathlib
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # also when run as experiments/X.py
sys.path.insert(0, REPO)  # run from a checkout without installing

import numpy as np  # noqa: E402

from r1jax import config_sections  # noqa: E402
from r1jax import pipelines  # noqa: E402
from r1jax.recipes import R1_ZERO_TINY  # noqa: E402
from r1jax import sweep as sweep_lib  # noqa: E402

CONFIG = R1_ZERO_TINY | {"ppo.critic_learning_rate": 2e-4}
CURVES = ("rewards/accuracy/mean", "completions/mean_length", "critic/loss")


def get_config():
  return config_sections.apply_overrides(pipelines.base_config(), CONFIG, "config grpo_vs_ppo")


def sweep():
  return [{"grpo.advantage_estimator": "grpo"}, {"grpo.advantage_estimator": "gae"}]


def step_flops(n_params: int, rows: int, prompt_len: int, max_new: int, mean_len: float, beta: float,
               critic: bool) -> float:
  """One step: sampling (2 N per prompt and generated token), the reference pass when beta > 0
  and the update (2 N and 6 N per token of the padded rows, prompt + max_new), and with a critic
  its values (2 N) and update (6 N) over the same rows."""
  T = prompt_len + max_new
  per_row = 2 * (prompt_len + mean_len) + (2 if beta > 0 else 0) * T + 6 * T + (8 * T if critic else 0)
  return float(n_params) * rows * per_row


def run(overrides, workdir):
  cfg = config_sections.apply_overrides(get_config(), dict(overrides) | {"workdir": str(workdir)}, "sweep entry")
  run_cfg = pipelines.validate(cfg)
  summary = pipelines.run_r1_zero(cfg)
  workdir = pathlib.Path(workdir)
  metrics = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  P = int(metrics[0]["prompt_len"])  # the padded prompt width of the run's passes
  g, t = run_cfg.grpo, run_cfg.train
  n = run_cfg.model.num_params()
  rows = t.prompts_per_step * g.num_generations
  critic = g.advantage_estimator == "gae"
  flops = sum(step_flops(n, rows, P, g.max_completion_length, m["completions/mean_length"], g.beta, critic)
              for m in metrics)
  base = json.loads((workdir / "eval_base" / "summary.json").read_text())
  final = json.loads((workdir / "eval_final" / "summary.json").read_text())
  out = {k: v for k, v in summary.items() if k not in ("plots", "memory_plan")} | {
         "algorithm": "ppo" if critic else "grpo", "params": n, "models_trained": 2 if critic else 1,
         "base_pass@1": base["pass@1"], "pass@1": final["pass@1"], "format_rate": final["format_rate"],
         "step_s": float(np.median([m["time/step"] for m in metrics])), "flops": flops,
         "gain_per_pflop": (final["pass@1"] - base["pass@1"]) / (flops / 1e15)}
  if critic:
    out["critic_loss_last"] = metrics[-1]["critic/loss"]
  return out


if __name__ == "__main__":
  sweep_lib.main(sweep(), run, default_root="runs/grpo_vs_ppo", curves=CURVES)
