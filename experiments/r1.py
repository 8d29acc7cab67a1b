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
"""
import importlib.util
import sys

REPO = __file__.rsplit("/experiments/", 1)[0]
sys.path.insert(0, REPO)  # run from a checkout without installing

from r1jax import experiment  # noqa: E402

_spec = importlib.util.spec_from_file_location("r1_zero_experiment", f"{REPO}/experiments/r1_zero.py")
r1_zero = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(r1_zero)

# The R1-Zero embedded default (tiny base pretrained here, generated arithmetic), with an RL budget
# of 30 steps split over the pipeline's two RL stages, so the whole run fits in about 20 minutes.
TINY = r1_zero.TINY | {
    "r1.reasoning_rl_steps": 20, "r1.rl_all_steps": 10, "checkpoint.save_every": 10,
    "cold_start.num_prompts": 256, "rejection.num_prompts": 256, "rejection.num_general": 64,
}


def get_config():
  return experiment.apply_overrides(experiment.r1_config(), TINY, "config default")


if __name__ == "__main__":
  experiment.main(run_fn=experiment.run_pipeline)
