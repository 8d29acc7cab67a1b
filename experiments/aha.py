r"""The aha moment (DeepSeek-R1 sec. 2.2.4), made measurable: does RL grow reflection out of a base
that reflects a little?

The embedded world: multi-step arithmetic chains (`data.source=chains`: a slip anywhere is wrong,
re-computing one step is cheap) and a tiny base pretrained on solved chains of which a share p
(`traces.reflect_rate`) slip, say so ("wait, let me check"), and correct the step or restart; the
control's reflective traces end wrong. Published small-scale work says reflection grows under RL
only when the base already shows it inside some successful rollouts (Gandhi et al. 2025,
arXiv 2503.01307) and that part of the length growth is the 1/|o| normalisation of GRPO's loss
(Dr. GRPO, arXiv 2503.20783), so the sweep holds p = 0 / 0.05 / 0.2, the control, and Dr. GRPO.
Each entry reports the reflection rate and mean length of its first and last RL steps, their
ratios, P(correct | reflected) vs not, and the lengths of correct and wrong answers:

    python experiments/aha.py --root runs/aha

Reproduced means: with p > 0 reflection at least 3x its early rate and mean length +30% while
accuracy rises; with p = 0 neither. `--index I` runs one entry (or the scheduler's index),
`--gather` tabulates finished ones, `--set FIELD=VALUE` changes every entry (e.g. `--set
train.steps=40`). EXPERIMENTS.md records the runs.
"""
import os
import pathlib
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # also when run as experiments/X.py
sys.path.insert(0, REPO)  # run from a checkout without installing

from r1jax import config_sections  # noqa: E402
from r1jax import pipelines  # noqa: E402
from r1jax import sweep as sweep_lib  # noqa: E402
from r1jax.recipes import AHA as CONFIG  # noqa: E402

CURVES = ("aha/reflection_rate", "completions/mean_length", "rewards/accuracy/mean",
          "aha/p_correct_given_reflected", "aha/mean_length_wrong")
WINDOW = 5
"""Steps averaged at the start and at the end of RL."""


def get_config():
  return config_sections.apply_overrides(pipelines.base_config(), CONFIG, "config aha")


def sweep():
  return [{"traces.reflect_rate": 0.0}, {"traces.reflect_rate": 0.05}, {"traces.reflect_rate": 0.2},
          {"traces.reflect_rate": 0.2, "traces.control": True},
          {"traces.reflect_rate": 0.2, "grpo.loss_type": "dr_grpo", "grpo.scale_rewards": "none"}]


def curve_summary(metrics_file, window: int = WINDOW, keys=CURVES) -> dict:
  """`sweep.curve_summary` of this experiment's curves."""
  return sweep_lib.curve_summary(metrics_file, keys, window)


def run(overrides, workdir):
  cfg = config_sections.apply_overrides(get_config(), dict(overrides) | {"workdir": str(workdir)}, "sweep entry")
  summary = pipelines.run_r1_zero(cfg)
  return {k: v for k, v in summary.items() if k not in ("plots", "memory_plan")} | curve_summary(
      pathlib.Path(workdir) / "metrics.jsonl")


if __name__ == "__main__":
  sweep_lib.main(sweep(), run, default_root="runs/aha", curves=CURVES)
