"""The settings the experiment files share, as dotted overrides of their config
(`config_sections.apply_overrides`): the R1-Zero embedded default and real-model configs
(experiments/r1_zero.py), the R1 pipeline's (experiments/r1.py) and the aha world's
(experiments/aha.py), which the other experiments start from.
"""
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The embedded default: a tiny base pretrained here, generated arithmetic, short completions.
R1_ZERO_TINY = {
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
R1_ZERO_NAMED = {
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
R1_ZERO_NAMED["smollm2-135m"] = {
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
R1_ZERO_CPU_NAMED = ("smollm2-135m",)
"""Named configs sized for a CPU (the others are the GPU configs experiments/r1.py builds its pipeline on)."""


# The R1-Zero embedded default (tiny base pretrained here, generated arithmetic), with an RL budget
# of 30 steps split over the pipeline's two RL stages, so the whole run fits in about 20 minutes.
# Held-out: 512 problems x 4 samples (pass@1 over 4), so that one run's accuracy has a standard
# error near 1.5 points rather than the ~3 of 256 x 1. Rejection sampling over 2048 prompts (~1,700
# examples kept; 256 and 1024 prompts gave ~230 and ~860, and an SFT of the base at 50.7% and 59.6%
# where 2048 gives 69.2%), and RL for all scenarios at a quarter of R1-Zero's learning rate
# (BENCHMARKS.md, the pipeline on CPU).
R1_TINY = R1_ZERO_TINY | {
    "r1.reasoning_rl_steps": 20, "r1.rl_all_steps": 10, "r1.rl_all_learning_rate": 5e-5, "checkpoint.save_every": 10,
    "cold_start.num_prompts": 256, "rejection.num_prompts": 2048, "rejection.num_general": 64,
    "data.num_eval": 512, "eval.num_samples": 4,
}


def _real(name: str) -> dict:
  """A real base (REFERENCE.md sec. 3 scaled to one GPU): cold start of ~2k curated examples from
  the base's own samples, reasoning RL then RL for all scenarios, rejection sampling of 4 samples
  over 4k prompts, SFT of the base for 2 epochs, no distillation inside the pipeline."""
  rl = R1_ZERO_NAMED[name]
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


R1_NAMED = {name: _real(name) for name in R1_ZERO_NAMED if name not in R1_ZERO_CPU_NAMED}
"""Real-model configs: `--config=experiments/r1.py:NAME`; each needs `--config.model.hf_checkpoint=DIR`."""


# The R1-Zero default's tiny base and GRPO, on chains; completions long enough for a restart.
AHA = R1_ZERO_TINY | {
    "data.source": "chains", "data.num_train": 6000, "data.num_eval": 256,
    "grpo.max_completion_length": 256, "eval.max_new_tokens": 256, "train.overlong_buffer": 32,
    "train.steps": 80, "traces.reflect_rate": 0.05,
}
