r"""A process reward model in RL, the approach DeepSeek-R1 tried and dropped (sec. 4.2): a PRM
scoring each step invites reward hacking, costs a model and its labels, and fine-grained steps are
hard to define.

The embedded world: the chains of experiments/aha.py, whose steps ("12 plus 7 equals 19") can each
be checked. Stages: the tiny base pretrained on chains; `prm_data`, its own samples with every step
labelled by checking it (`r1jax.prm.step_labels`) at the token ending it; `prm`, a scalar head on
the base's body trained on those labels (binary cross-entropy); then three GRPO arms from the base
with the format reward and either the accuracy reward (outcome-only), the sum of the PRM's step
scores (sum-form) or their minimum (min-form, Cheng et al. 2025, arXiv 2504.15275); each arm
evaluated on held-out chains. Every arm logs the PRM's score, the verified accuracy, steps per
response, tokens per step, repeated and empty steps, and the KL:

    python experiments/prm.py --config.workdir=runs/prm

`--config.prm.base=DIR` starts from a given base policy, `--config.prm.model=DIR` uses a trained PRM
(a run's `prm/model`), e.g. to rerun the RL arms alone with other settings.
Reproduced means: under the sum form the PRM score rises while held-out accuracy stalls or falls
(the policy states more, repeated, steps), and outcome-only does not. Stages skip when finished
and resume when killed, as in experiments/r1.py.
"""
import functools
import json
import os
import pathlib
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # also when run as experiments/X.py
sys.path.insert(0, REPO)  # run from a checkout without installing

import numpy as np  # noqa: E402

from r1jax import experiment  # noqa: E402
from r1jax import config_sections  # noqa: E402
from r1jax import pipelines  # noqa: E402
from r1jax.recipes import AHA  # noqa: E402
from r1jax import stages as stages_lib  # noqa: E402
from r1jax.logger import format_table  # noqa: E402
from r1jax.stages import evaluate, pretrain  # noqa: E402
from r1jax.stages import prm as prm_stage  # noqa: E402

CONFIG = AHA | {"workdir": "runs/prm", "stage": "all", "train.steps": 40}
ARMS = ("outcome", "sum", "min")
WINDOW = 5
"""Steps averaged at the start and at the end of RL."""
CURVES = {"prm score (sum)": "rewards/prm_sum/mean", "prm score (min)": "rewards/prm_min/mean",
          "accuracy": "rewards/accuracy/mean", "steps": "rewards/prm_steps/mean",
          "repeated steps": "rewards/prm_repeated_steps/mean", "empty steps": "rewards/prm_empty_steps/mean",
          "tokens per step": "rewards/prm_tokens_per_step/mean", "step accuracy": "rewards/prm_step_accuracy/mean",
          "kl": "kl", "length": "completions/mean_length"}


def get_config():
  return config_sections.apply_overrides(pipelines.r1_config(), CONFIG, "config prm")


def stages(base: str = "", model: str = ""):
  """The experiment's stages; with a given `base` policy no pretraining, with a given PRM `model`
  no labelling and training (`prm.base`, `prm.model`)."""
  policy = base or "pretrain.policy"
  out = [] if base else [stages_lib.Stage("pretrain", pretrain.run, "base")]
  out += [stages_lib.Stage("evaluate_base", evaluate.run, "base/eval", {"policy": policy})]
  if not model:
    out += [stages_lib.Stage("prm_data", prm_stage.data, "prm_data", {"policy": policy}),
            stages_lib.Stage("prm", prm_stage.run, "prm", {"policy": policy, "data": "prm_data.data"})]
  for arm in ARMS:
    out += [stages_lib.Stage(f"rl_{arm}", functools.partial(prm_stage.rl, form=arm), f"rl_{arm}",
                             {"policy": policy, "prm": model or "prm.model"}),
            stages_lib.Stage(f"evaluate_{arm}", evaluate.run, f"rl_{arm}/eval", {"policy": f"rl_{arm}.policy"})]
  return out


def curves(metrics_file, window: int = WINDOW) -> dict:
  """First-`window` and last-`window` step means of every curve in CURVES."""
  rows = [json.loads(l) for l in pathlib.Path(metrics_file).read_text().splitlines()]
  out = {}
  for name, key in CURVES.items():
    vals = [r[key] for r in rows if key in r]
    if vals:
      out[name] = (float(np.mean(vals[:window])), float(np.mean(vals[-window:])))
  return out


def plot(per_arm: dict, path: pathlib.Path) -> pathlib.Path:
  """PRM score (the arm's own form; sum for outcome-only) and verified accuracy over RL steps, per arm."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  keys = ("rewards/prm_sum/mean", "rewards/prm_min/mean", "rewards/accuracy/mean", "rewards/prm_repeated_steps/mean")
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
  for ax, key in zip(axes, keys):
    for arm, rows in per_arm.items():
      ax.plot([r["step"] for r in rows if key in r], [r[key] for r in rows if key in r], label=arm)
    ax.set_title(key.split("/")[1].replace("prm_", "prm "))
    ax.set_xlabel("RL step")
  axes[0].legend()
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def run(cfg) -> dict:
  run_cfg = pipelines.validate(cfg)
  p = run_cfg.prm
  ctx = pipelines.run(cfg, stages=stages(p.base, p.model), given={}).ctx
  workdir = ctx.workdir
  ev = lambda d: json.loads((workdir / d / "eval" / "summary.json").read_text())
  base = ev("base")
  table, summary = [("base", base["pass@1"], base["format_rate"], "-", "-", "-", "-", "-")], {"base": base["pass@1"]}
  per_arm = {}
  for arm in ARMS:
    rows = [json.loads(l) for l in (workdir / f"rl_{arm}" / "metrics.jsonl").read_text().splitlines()]
    per_arm[arm] = rows
    c = curves(workdir / f"rl_{arm}" / "metrics.jsonl")
    e = ev(f"rl_{arm}")
    score = c["prm score (min)" if arm == "min" else "prm score (sum)"]
    fmt = lambda p: f"{p[0]:.2f} -> {p[1]:.2f}"
    table.append((arm, e["pass@1"], e["format_rate"], fmt(score), fmt(c["accuracy"]), fmt(c["steps"]),
                  fmt(c["repeated steps"]), f"{c['kl'][1]:.3g}" if "kl" in c else "-"))
    summary[arm] = {"pass@1": e["pass@1"], "format_rate": e["format_rate"], "mean_length": e["mean_length"]} | {
        f"{k} early": v[0] for k, v in c.items()} | {f"{k} late": v[1] for k, v in c.items()}
  prm_dir = pathlib.Path(p.model).parent if p.model else workdir / "prm"  # a given PRM: its stage's summaries
  summary["prm"] = json.loads((prm_dir / "summary.json").read_text())
  summary["prm_data"] = json.loads((prm_dir.parent / "prm_data" / "summary.json").read_text())
  summary["plot"] = str(plot(per_arm, workdir / "plots" / "prm.png"))
  print(format_table(table, ("arm", "held-out pass@1", "format", "PRM score (arm's form) early -> late",
                             "train accuracy", "steps / response", "repeated steps", "KL (late)")))
  (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  return summary


if __name__ == "__main__":
  experiment.main(run_fn=run)
