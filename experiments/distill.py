r"""Distillation (DeepSeek-R1 sec. 2.4): SFT of a smaller student on samples of a teacher policy, no RL.

The student base is a smaller transformer (`distill.d_model`, `distill.n_layers`, ...) pretrained
here on the base corpus (or given: `--config.inputs=student=DIR`); the teacher's samples on
training prompts are kept when correct and readable, and the student is fine-tuned on them. Ends
with the table of teacher, student base and distilled student (held-out accuracy, strict format
rate, language consistency, mean length) and plots/stages.png. After `python experiments/r1.py`:

    python experiments/distill.py --config.distill.teacher=runs/r1/rl_all/policy

Stages skip when finished and resume when killed, as in experiments/r1.py.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # also when run as experiments/X.py
sys.path.insert(0, REPO)  # run from a checkout without installing

from r1jax import experiment  # noqa: E402
from r1jax import config_sections  # noqa: E402
from r1jax import pipelines  # noqa: E402
from r1jax.recipes import R1_TINY  # noqa: E402



def get_config():
  return config_sections.apply_overrides(pipelines.r1_config(), R1_TINY | {"workdir": "runs/distill"}, "config default")


if __name__ == "__main__":
  experiment.main(check=pipelines.validate_distill, run_fn=pipelines.run_distill)
