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

import ml_collections

sys.path.insert(0, __file__.rsplit("/experiments/", 1)[0])  # run from a checkout without installing


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.checkpoint = "runs/r1_zero/policy"  # an r1jax policy directory (written by experiments/r1_zero.py)
  c.hf_checkpoint = ""  # or a Hugging Face Qwen2 / Llama directory (takes precedence)
  c.datasets = "arithmetic"  # name=path[:layout],...  layouts: gsm8k, aime, math, math_solution, humaneval, code
  c.max_examples = 0  # per dataset, 0 = all
  c.on_bad_line = "fail"
  c.template = "r1_zero"  # 'r1_zero', 'chat' (the tokenizer's chat template) or text with {prompt}
  c.out_dir = "runs/eval"
  c.seed = 0
  c.mesh = dict(data=1, fsdp=-1, tensor=1)
  c.eval = dict(num_samples=4, temperature=0.6, top_p=0.95, max_new_tokens=40, max_prompt_len=512,
                batch_size=32)
  c.progress = True
  return c


if __name__ == "__main__":
  from absl import app
  from ml_collections import config_flags

  from r1jax import experiment

  _CONFIG = config_flags.DEFINE_config_dict("config", get_config())
  app.run(lambda argv: experiment.run_evaluation(_CONFIG.value) and None)
