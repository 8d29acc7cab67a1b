r"""DeepSeek-R1: the multi-stage pipeline from a base model, beside an R1-Zero run of the same RL steps.

base -> cold_start_data (curated teacher samples) -> cold_start_sft -> reasoning_rl (GRPO +
language consistency) -> rejection_sampling (+ generated non-reasoning tasks) -> sft (of the
BASE, 2 epochs) -> reward_model (Bradley-Terry on rule-decided pairs) -> rl_all (rule rewards +
reward model) -> [average] -> distill (a smaller student). The embedded default runs on a CPU
without network and ends with one table (held-out accuracy, strict format rate, language
consistency, mean length after every stage) and plots/stages.png:

    python experiments/r1.py

Kill it at any point and run the same command again: finished stages are skipped (their records
are in <workdir>/stages/), the interrupted one resumes from its own checkpoint.
`--config.stage=NAME` runs one stage (`stages.R1_STAGES`) from the work directory's earlier outputs,
or from given paths, e.g. SFT of the base on another run's rejection samples:

    python experiments/r1.py --config.stage=sft --config.inputs=data=runs/r1/rejection_sampling/data.jsonl

Every field can be set from the shell (`--config.r1.reasoning_rl_steps=40`, `--config.curation.min_language_share=0.9`).

Named configs for a Hugging Face base on GSM8K on one GPU (the R1-Zero named configs' model,
lengths and GRPO settings, and the stages' sizes below; `NAMED` lists them), e.g.

    python experiments/r1.py --config=experiments/r1.py:qwen2.5-0.5b --config.model.hf_checkpoint=/ckpt/Qwen2.5-0.5B

Their distillation runs separately (`experiments/distill.py`, with a smaller pretrained student);
any stage's input can be replaced by a file of your own, also in a whole run:
`--config.inputs=cold_start_sft.data=my_cold_start.jsonl` (STAGE.NAME=PATH).
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # also when run as experiments/X.py
sys.path.insert(0, REPO)  # run from a checkout without installing

from r1jax import experiment  # noqa: E402
from r1jax import config_sections  # noqa: E402
from r1jax import pipelines  # noqa: E402
from r1jax.recipes import R1_NAMED as NAMED  # noqa: E402
from r1jax.recipes import R1_TINY as TINY  # noqa: E402


def get_config(name: str | None = None):
  """The embedded default, or the named real-model config `name` (a key of NAMED)."""
  if name and name not in NAMED:
    raise ValueError(f"config name {name!r} is not one of {sorted(NAMED)}")
  return config_sections.apply_overrides(pipelines.r1_config(), NAMED[name] if name else TINY,
                                         f"config {name or 'default'}")


if __name__ == "__main__":
  experiment.main(run_fn=pipelines.run_r1)
