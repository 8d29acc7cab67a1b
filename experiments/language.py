r"""Language consistency (DeepSeek-R1 sec. 2.3.2): the language reward trades a little accuracy for
a chain of thought in one language.

The embedded world: arithmetic chains whose base was pretrained on reasoning written 90% in English
and 10% in a second script (`traces.minority_share=0.1`: the same English in Greek letters, which
`rewards.language` measures as another language), with try -> check -> correct traces at p = 0.05.
RL rewards correctness (alpha = 1) or R = alpha R_acc + (1 - alpha) R_lang for alpha in 0.9, 0.8
(DeepSeek-R1's), 0.6, 0.4. Each entry reports held-out accuracy and the held-out CoTs' share of
English words (`language_consistency`), and the same over its first and last RL steps:

    python experiments/language.py --root runs/language

Reproduced means: consistency rises as alpha falls, and accuracy drops a few points (arXiv
2506.05850 measured such a cost). Same options as experiments/aha.py (`--index`, `--gather`,
`--set FIELD=VALUE`).
"""
import json
import os
import pathlib
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # also when run as experiments/X.py
sys.path.insert(0, REPO)  # run from a checkout without installing

from r1jax import config_sections  # noqa: E402
from r1jax import pipelines  # noqa: E402
from r1jax.recipes import AHA  # noqa: E402
from r1jax import sweep as sweep_lib  # noqa: E402

CONFIG = AHA | {"traces.minority_share": 0.1, "traces.reflect_rate": 0.05, "rewards.language_target": "en"}
CURVES = ("rewards/language/mean", "rewards/accuracy/mean", "completions/mean_length")


def get_config():
  return config_sections.apply_overrides(pipelines.base_config(), CONFIG, "config language")


def sweep():
  return [{"rewards.language": 0.0}] + [{"rewards.language": 1.0, "rewards.language_alpha": a}
                                        for a in (0.9, 0.8, 0.6, 0.4)]


def run(overrides, workdir):
  cfg = config_sections.apply_overrides(get_config(), dict(overrides) | {"workdir": str(workdir)}, "sweep entry")
  summary = pipelines.run_r1_zero(cfg)
  final = json.loads((pathlib.Path(workdir) / "eval_final" / "summary.json").read_text())
  base = json.loads((pathlib.Path(workdir) / "eval_base" / "summary.json").read_text())
  return ({k: v for k, v in summary.items() if k not in ("plots", "memory_plan")}
          | {"base_language_consistency": base["language_consistency"],
             "language_consistency": final["language_consistency"]}
          | sweep_lib.curve_summary(pathlib.Path(workdir) / "metrics.jsonl", keys=CURVES))


if __name__ == "__main__":
  sweep_lib.main(sweep(), run, default_root="runs/language", curves=CURVES)
