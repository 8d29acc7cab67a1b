r"""Evaluate a policy: pass@1 over k samples, pass@k and cons@k, per dataset (and subject / level).

The DeepSeek-R1 protocol by default: temperature 0.6, top-p 0.95, k samples per problem.

    python experiments/evaluate.py                      # the default R1-Zero run's policy
    python experiments/evaluate.py --config.hf_checkpoint=/ckpt/Qwen2.5-1.5B --config.eval.num_samples=16 \
      --config.datasets=gsm8k=../shared/data/gsm8k_test.jsonl,aime24=../shared/data/aime2024.jsonl:aime \
      --config.eval.max_new_tokens=4096 --config.eval.max_prompt_len=1024

Outputs in `--config.out_dir`: a printed table, summary.json, and <dataset>/samples.jsonl with
every sample (problem id, completion, extracted answer, verdict).
"""
import sys

sys.path.insert(0, __file__.rsplit("/experiments/", 1)[0])  # run from a checkout without installing

from r1jax import experiment  # noqa: E402
from r1jax.evaluation import experiment as eval_experiment  # noqa: E402


def get_config():
  return eval_experiment.config()


if __name__ == "__main__":
  experiment.main(check=eval_experiment.validate, run_fn=eval_experiment.run)
