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
from r1jax import config as config_lib  # noqa: E402
from r1jax import pipelines  # noqa: E402

r1_zero = experiment.load_experiment(f"{REPO}/experiments/r1_zero.py")

# The R1-Zero embedded default (tiny base pretrained here, generated arithmetic), with an RL budget
# of 30 steps split over the pipeline's two RL stages, so the whole run fits in about 20 minutes.
# Held-out: 512 problems x 4 samples (pass@1 over 4), so that one run's accuracy has a standard
# error near 1.5 points rather than the ~3 of 256 x 1. Rejection sampling over 2048 prompts (~1,700
# examples kept; 256 and 1024 prompts gave ~230 and ~860, and an SFT of the base at 50.7% and 59.6%
# where 2048 gives 69.2%), and RL for all scenarios at a quarter of R1-Zero's learning rate
# (BENCHMARKS.md, the pipeline on CPU).
TINY = r1_zero.TINY | {
    "r1.reasoning_rl_steps": 20, "r1.rl_all_steps": 10, "r1.rl_all_learning_rate": 5e-5, "checkpoint.save_every": 10,
    "cold_start.num_prompts": 256, "rejection.num_prompts": 2048, "rejection.num_general": 64,
    "data.num_eval": 512, "eval.num_samples": 4,
}



def _real(name: str) -> dict:
  """A real base (REFERENCE.md sec. 3 scaled to one GPU): cold start of ~2k curated examples from
  the base's own samples, reasoning RL then RL for all scenarios, rejection sampling of 4 samples
  over 4k prompts, SFT of the base for 2 epochs, no distillation inside the pipeline."""
  rl = r1_zero.NAMED[name]
  completion = rl["grpo.max_completion_length"]
  return rl | {
      "r1.reasoning_rl_steps": 400, "r1.rl_all_steps": 100, "r1.distill": False,
      "cold_start.num_prompts": 4000, "cold_start.samples_per_prompt": 4, "cold_start.per_prompt": 1,
      "cold_start.max_examples": 2000, "cold_start.epochs": 2,
      "rejection.num_prompts": 4000, "rejection.samples_per_prompt": 4, "rejection.num_general": 1000,
      "curation.max_tokens": completion,
      "sft.seq_len": rl["train.max_prompt_len"] + completion, "sft.batch_size": 32,
      "sft.optim.learning_rate": 1e-5, "sft.optim.weight_decay": 0.0, "sft.save_every": 50,
      "reward_model.steps": 200, "reward_model.batch_size": 16, "reward_model.optim.learning_rate": 5e-6,
      "reward_model.save_every": 50,
  }


NAMED = {name: _real(name) for name in r1_zero.NAMED if name not in r1_zero.CPU_NAMED}
"""Real-model configs: `--config=experiments/r1.py:NAME`; each needs `--config.model.hf_checkpoint=DIR`."""


def get_config(name: str | None = None):
  """The embedded default, or the named real-model config `name` (a key of NAMED)."""
  if name and name not in NAMED:
    raise ValueError(f"config name {name!r} is not one of {sorted(NAMED)}")
  return config_lib.apply_overrides(pipelines.r1_config(), NAMED[name] if name else TINY,
                                    f"config {name or 'default'}")


if __name__ == "__main__":
  experiment.main(run_fn=pipelines.run_r1)
