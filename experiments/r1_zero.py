r"""R1-Zero: pure GRPO from a base model with the R1 template and rule-based rewards.

The embedded default runs on a laptop CPU without network in minutes:

    python experiments/r1_zero.py

Real setups override fields from the shell, e.g. a Hugging Face base model on GSM8K:

    python experiments/r1_zero.py --config.model.hf_checkpoint=/ckpt/Qwen2.5-0.5B \
      --config.data.source=jsonl --config.data.path=../shared/data/gsm8k_train.jsonl \
      --config.data.eval_path=../shared/data/gsm8k_test.jsonl --config.pretrain.steps=0 \
      --config.model.dtype=bfloat16 --config.sampling.max_new_tokens=1024 \
      --config.grpo.max_completion_length=1024 --config.eval.max_new_tokens=1024

`--config.stage=pretrain|evaluate|average` runs one stage only (average: checkpoint averaging of
the run's last `average.last_k` checkpoints into `<workdir>/policy_avg`); `sweep()` lists the ablations and
`--sweep_index=i` runs the i-th (give each its own `--config.workdir`).
"""
import sys

import ml_collections

REPO = __file__.rsplit("/experiments/", 1)[0]
sys.path.insert(0, REPO)  # run from a checkout without installing


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = "r1_zero"
  c.workdir = "runs/r1_zero"
  c.seed = 0
  c.template = "r1_zero"
  c.distributed = False  # multi-host: call jax.distributed.initialize() first (tpu_scripts/launch_pod.sh)

  c.model = dict(preset="tiny", hf_checkpoint="", d_model=128, n_layers=3, n_heads=4, n_kv_heads=2,
                 head_dim=32, d_ff=256, max_seq_len=512, dtype="float32", param_dtype="float32")
  c.tokenizer = dict(path="", vocab_size=800, model_type="bpe")
  c.mesh = dict(data=1, fsdp=-1, tensor=1)

  # source: synthetic (generated arithmetic) | jsonl (GSM8K / MATH / AIME / HumanEval / code layouts; a mix:
  # path="a.jsonl,b.jsonl.gz:humaneval") | reasoning_gym | tfds
  c.data = dict(source="synthetic", path="", eval_path="", layout="gsm8k", question_field="", answer_field="",
                on_bad_line="fail", num_train=8000, num_eval=256, seed=0, rg_tasks="basic_arithmetic",
                tfds_name="", tfds_data_dir="", tfds_train_split="train", tfds_eval_split="test")
  # The tiny base model: next-token pretraining on solved problems (cached in workdir/base).
  c.pretrain = dict(steps=600, batch_size=32, seq_len=128, r1_fraction=0.25, wrong_fraction=0.3,
                    optim=dict(learning_rate=3e-3, warmup_steps=50, decay="cosine", total_steps=600,
                               weight_decay=0.01, max_grad_norm=1.0))

  c.sampling = dict(max_new_tokens=40, temperature=1.0, top_k=0, top_p=1.0)
  c.grpo = dict(num_generations=8, beta=0.001, eps_low=0.2, eps_high=0.2, loss_type="grpo",
                scale_rewards="group", mu=1, num_minibatches=1, grad_accum=1, max_completion_length=40,
                ref_reset_every=0, dynamic_sampling=False, mask_truncated_completions=False)
  c.optim = dict(learning_rate=2e-4, warmup_steps=5, decay="constant", total_steps=80, b1=0.9, b2=0.99,
                 weight_decay=0.0, max_grad_norm=1.0)
  c.rewards = dict(accuracy=1.0, format=1.0, language=0.0, language_alpha=0.8, language_target="en",
                   code_timeout_s=10.0, code_partial_credit=False)
  c.train = dict(steps=80, prompts_per_step=16, max_prompt_len=128, seed=0, sample_log_every=10,
                 reward_timeout_s=5.0, reward_workers=2, overlong_weight=0.0, overlong_buffer=8,
                 progress=True)
  c.eval = dict(num_samples=1, temperature=0.6, top_p=0.95, max_new_tokens=40, max_prompt_len=512, batch_size=64)
  c.checkpoint = dict(save_every=20, keep=3, async_save=True)
  # --config.stage=average: mean of these GRPO checkpoints' parameters -> workdir/policy_avg.
  c.average = dict(last_k=3, steps="")  # steps: "40,60,80" overrides last_k
  return c


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
  from absl import app, flags
  from ml_collections import config_flags

  from r1jax import experiment

  _CONFIG = config_flags.DEFINE_config_dict("config", get_config())
  _SWEEP = flags.DEFINE_integer("sweep_index", -1, "apply sweep()[i] on top of the config")
  app.run(lambda argv: experiment.run(experiment.with_sweep(_CONFIG.value, sweep(), _SWEEP.value)) and None)
