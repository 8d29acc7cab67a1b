"""The r1jax GRPO-step workload (benchmarks/grpo_step.py) run through Hugging Face TRL's GRPOTrainer.

    python benchmarks/peers/trl_grpo.py --preset qwen2.5-0.5b --out trl_grpo.json
    python benchmarks/peers/trl_grpo.py --preset tiny --steps 1          # CPU smoke test
    python benchmarks/peers/trl_grpo.py --preset qwen2.5-0.5b --continuous_batching 1   # TRL at its fastest without vLLM

Workload, as in grpo_step.py: a Qwen2.5 shape with RANDOM weights (`transformers.Qwen2Config` ->
`Qwen2ForCausalLM`, saved to a temporary folder so that TRL loads the policy and builds its reference model
from it the way a TRL user's `GRPOTrainer("path", ...)` does), 16 prompts x G = 8 samples = 128 completions,
256-token prompts, exactly 512 generated tokens each (`generation_kwargs={"min_new_tokens": 512}` masks EOS;
every completion's length is checked), temperature 1.0, beta = 0.04 with a separate reference model,
mu = num_iterations = 1, AdamW at lr 1e-6, ONE optimizer step per GRPO step covering all 128 completions
(per_device_train_batch_size = --micro_batch, gradient_accumulation_steps = steps_per_generation =
128 / micro_batch: one HF `generate` call makes all 128 and the micro-batches' gradients accumulate into one
`optimizer.step()`). By default micro_batch = 128 (no accumulation, like r1jax's default grad_accum = 1) with
gradient checkpointing on (r1jax rematerializes); with `--grad_ckpt 0` it defaults to 16. TRL runs the
reference-model pass in chunks of micro_batch rows too. Generation is plain Hugging Face `generate` (no vLLM,
no continuous batching), or with `--continuous_batching 1` TRL's `use_transformers_continuous_batching`
(transformers' `generate_batch`: paged KV cache, requests scheduled as they finish; TRL's fastest generation
without vLLM, which needs a torch the GPU machine lacks; `min_new_tokens` may not hold there, so completion
lengths are counted, not required, and tokens/s uses the tokens generated). Rewards are random
numbers from a pure-Python function. No network: the tokenizer is a `tokenizers` WordLevel model over the
words "t3".."t{V-1}" (ids 0/1/2 = <eos>/<pad>/<unk>) with a whitespace pre-tokenizer, so a prompt of 256
space-separated words is exactly 256 tokens (checked, and checked again on what TRL tokenizes).

Precision: by default the model is bf16 (weights, AdamW states and compute; `dtype=bfloat16` as TRL users load
it) with TRL's default `bf16=True` autocast. r1jax keeps fp32 parameters and computes in bf16; `--dtype
float32` gives TRL's closest equivalent (fp32 weights + bf16 autocast in the loss passes; generation then runs
in fp32, since TRL's HF-generate path has no autocast).

Phases (seconds per GRPO step; each timer calls torch.cuda.synchronize() before it starts and after it ends,
steps are delimited by a TrainerCallback's on_step_begin / on_step_end, also synchronized):
  step_s          on_step_begin -> on_step_end of one optimizer step: everything TRL does for it (generation,
                  scoring, all micro-batch forward/backward passes, grad clipping, optimizer.step, zero_grad).
                  Excludes only the dataloader prefetch before on_step_begin and the logging after on_step_end
                  (loop_step_s, on_step_end -> on_step_end, includes those too).
  generate_s      GRPOTrainer._generate: tokenizing the 128 prompts, the HF `model.generate` call (with its
                  unwrap / gradient-checkpointing toggle), extracting completions, decoding them to text,
                  length metrics. hf_generate_s is the `model.generate` call alone.
  ref_logprobs_s  every _get_per_token_logps_and_entropies call made under torch.no_grad() inside
                  _generate_and_score_completions: the reference model's forward over 128 x 768 tokens in
                  micro-batches (and the old-policy pass, if TRL ran one: with mu = 1 and steps aligned it does
                  not, it reuses the current log-probs detached, as r1jax uses the sampler's; see
                  old_logprobs_passes).
  scoring_other_s the rest of _generate_and_score_completions: padding, reward function, group advantages,
                  metric gathering.
  update_s        step_s - (generate_s + ref_logprobs_s + scoring_other_s): the per-micro-batch loss
                  forward (_compute_loss: policy forward with the fused log-prob/entropy head, GRPO + KL loss)
                  and backward (with gradient checkpointing if on), buffer shuffle/split, grad-norm clipping
                  (TRL default max_grad_norm = 1.0), the AdamW step, zero_grad, trainer bookkeeping.
                  loss_forward_s (grad-enabled log-prob passes) and optimizer_s (on_pre_optimizer_step ->
                  on_optimizer_step) are parts of it, reported separately.
Warm-up steps (--warmup, default 1) are excluded; each key is the median over --steps measured steps.
tokens_per_s = rows * (prompt_len + new_tokens) / step_s; generated_tokens_per_s = rows * new_tokens /
generate_s; peak_bytes = torch.cuda.max_memory_allocated() over the whole run.
Prints one line `RESULT {json}`; --out PATH also writes the json.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import torch  # noqa: E402
from workload import word_tokenizer, workload_parser  # noqa: E402

PRESETS = {
    # same shapes as r1jax.model.PRESETS
    "tiny": dict(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, tie_word_embeddings=False, rope_theta=10000.0),
    "qwen2.5-0.5b": dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, intermediate_size=4864, tie_word_embeddings=True, rope_theta=1e6),
    "qwen2.5-1.5b": dict(vocab_size=151936, hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, intermediate_size=8960, tie_word_embeddings=True, rope_theta=1e6),
}
EOS, PAD, UNK, FIRST_WORD = 0, 1, 2, 3


def build_tokenizer(vocab_size):
  return word_tokenizer(range(FIRST_WORD, vocab_size), {"<eos>": EOS, "<pad>": PAD, "<unk>": UNK},
                        padding_side="left", truncation_side="left")


def build_model_dir(preset, dtype, path, seed):
  from transformers import Qwen2Config, Qwen2ForCausalLM
  cfg = Qwen2Config(**PRESETS[preset], max_position_embeddings=32768, rms_norm_eps=1e-6, bos_token_id=None,
                    eos_token_id=EOS, pad_token_id=PAD, use_cache=True)
  torch.manual_seed(seed)
  model = Qwen2ForCausalLM(cfg).to(dtype)
  model.generation_config.eos_token_id = EOS
  model.generation_config.pad_token_id = PAD
  model.generation_config.bos_token_id = None
  model.save_pretrained(path)
  n = sum(p.numel() for p in model.parameters())
  del model
  return n


class _Timers:
  """Accumulates synchronized wall time per phase for the current step."""

  def __init__(self, cuda):
    self.cuda = cuda
    self.cur = {}

  def sync(self):
    if self.cuda:
      torch.cuda.synchronize()

  def add(self, key, dt):
    self.cur[key] = self.cur.get(key, 0.0) + dt

  def wrap(self, key, fn, classify=None, after=None):
    def wrapped(*args, **kwargs):
      self.sync()
      t0 = time.perf_counter()
      out = fn(*args, **kwargs)
      self.sync()
      k = classify(*args, **kwargs) if classify else key
      self.add(k, time.perf_counter() - t0)
      self.add(k + "#calls", 1)
      if after:
        after(out)
      return out
    return wrapped


def main():
  ap = workload_parser(__doc__.split("\n")[0], PRESETS)
  ap.add_argument("--micro_batch", type=int, default=0,
                  help="per_device_train_batch_size; gradient accumulation = rows / micro_batch (one optimizer "
                       "step either way). 0 (default): all rows in one micro-batch with gradient checkpointing, "
                       "16 without")
  ap.add_argument("--grad_ckpt", type=int, default=1, help="gradient checkpointing (TRL's default, 1) or not (0)")
  ap.add_argument("--dtype", default="", choices=["", "bfloat16", "float32"],
                  help="model weight dtype; default bfloat16 on GPU, float32 on CPU")
  ap.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, eager, flash_attention_2...)")
  ap.add_argument("--workdir", default="", help="where the random model is saved (default: a temp dir)")
  ap.add_argument("--continuous_batching", type=int, default=0,
                  help="1: TRL's use_transformers_continuous_batching (transformers' generate_batch) instead of generate")
  a = ap.parse_args()

  import datasets
  import transformers
  import trl
  from transformers import TrainerCallback
  from trl import GRPOConfig, GRPOTrainer

  cuda = torch.cuda.is_available()
  dtype_name = a.dtype or ("bfloat16" if cuda else "float32")
  dtype = getattr(torch, dtype_name)
  R = a.prompts * a.G
  a.micro_batch = a.micro_batch or (R if a.grad_ckpt else min(R, 16))
  if R % a.micro_batch:
    raise SystemExit(f"rows {R} must be a multiple of --micro_batch {a.micro_batch}")
  accum = R // a.micro_batch
  vocab = PRESETS[a.preset]["vocab_size"]

  # Tokenizer and prompts: 256 space-separated words = 256 tokens, 16 distinct prompts per step.
  tok = build_tokenizer(vocab)
  rng = random.Random(a.seed)
  n_rows = a.prompts * (a.warmup + a.steps)
  prompts = [" ".join(f"t{rng.randrange(FIRST_WORD, vocab)}" for _ in range(a.prompt_len)) for _ in range(n_rows)]
  assert len(set(prompts)) == n_rows
  lens = {len(ids) for ids in tok(prompts)["input_ids"]}
  assert lens == {a.prompt_len}, f"prompts tokenize to lengths {lens}, not {a.prompt_len}"
  ds = datasets.Dataset.from_dict({"prompt": prompts})

  def random_reward(completions, **kwargs):
    return [rng.random() for _ in completions]

  workdir = a.workdir or tempfile.mkdtemp(prefix="trl_grpo_bench_")
  model_dir = os.path.join(workdir, "model")
  try:
    n_params = build_model_dir(a.preset, dtype, model_dir, a.seed)
    tok.save_pretrained(model_dir)

    cfg = GRPOConfig(
        output_dir=os.path.join(workdir, "out"),
        model_init_kwargs={"dtype": dtype_name, "attn_implementation": a.attn},
        per_device_train_batch_size=a.micro_batch,
        gradient_accumulation_steps=accum,  # steps_per_generation defaults to it: one generation, one step
        num_generations=a.G,
        max_completion_length=a.new_tokens,
        generation_kwargs={"min_new_tokens": a.new_tokens},  # EOS suppressed: every completion is full length
        temperature=1.0, top_p=1.0, top_k=0,
        beta=0.04,
        num_iterations=1,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        gradient_checkpointing=bool(a.grad_ckpt),
        bf16=cuda,
        mask_truncated_completions=False,
        max_steps=a.warmup + a.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        log_completions=False,
        seed=a.seed,
        dataloader_num_workers=0,
        use_transformers_continuous_batching=bool(a.continuous_batching),
    )

    timers = _Timers(cuda)
    steps = []  # per-step dicts
    losses = []
    check = {"bad_prompt": 0, "bad_completion": 0, "rows": [], "completion_tokens": []}

    class StepTimer(TrainerCallback):
      def __init__(self):
        self.t_begin = self.t_pre = self.t_last_end = None

      def on_step_begin(self, args, state, control, **kw):
        timers.sync()
        timers.cur = {}
        self.t_begin = time.perf_counter()

      def on_pre_optimizer_step(self, args, state, control, **kw):
        timers.sync()
        self.t_pre = time.perf_counter()

      def on_optimizer_step(self, args, state, control, **kw):
        timers.sync()
        timers.add("optimizer", time.perf_counter() - self.t_pre)

      def on_step_end(self, args, state, control, **kw):
        timers.sync()
        t = time.perf_counter()
        rec = dict(timers.cur, step=t - self.t_begin)
        rec["loop_step"] = (t - self.t_last_end) if self.t_last_end is not None else float("nan")
        self.t_last_end = t
        steps.append(rec)

      def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
          losses.append(float(logs["loss"]))

    trainer = GRPOTrainer(model=model_dir, reward_funcs=random_reward, args=cfg, train_dataset=ds,
                          processing_class=tok, callbacks=[StepTimer()])
    assert trainer.ref_model is not None, "TRL did not build a reference model"

    def check_rollout(out):
      prompt_ids, completion_ids = out[0], out[1]
      check["rows"].append(len(completion_ids))
      check["bad_prompt"] += sum(len(p) != a.prompt_len for p in prompt_ids)
      check["bad_completion"] += sum(len(c) != a.new_tokens for c in completion_ids)
      check["completion_tokens"].append(sum(len(c) for c in completion_ids))

    def classify_logps(model, *args, **kwargs):
      if torch.is_grad_enabled():
        return "loss_forward"
      return "ref_logprobs" if model is trainer.ref_model else "old_logprobs"

    trainer._generate = timers.wrap("generate", trainer._generate, after=check_rollout)
    trainer._generate_and_score_completions = timers.wrap("gen_and_score", trainer._generate_and_score_completions)
    trainer._get_per_token_logps_and_entropies = timers.wrap(
        "logps", trainer._get_per_token_logps_and_entropies, classify=classify_logps)
    trainer.training_step = timers.wrap("training_step", trainer.training_step)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    gen_method = "generate_batch" if a.continuous_batching else "generate"
    setattr(policy, gen_method, timers.wrap("hf_generate", getattr(policy, gen_method)))

    trainer.train()
    ref_p = next(trainer.ref_model.parameters())

    assert trainer.state.global_step == a.warmup + a.steps, trainer.state.global_step
    assert check["bad_prompt"] == 0 and (a.continuous_batching or check["bad_completion"] == 0), check
    assert check["rows"] == [R] * (a.warmup + a.steps), check["rows"]
    meas = steps[a.warmup:]
    assert len(meas) == a.steps
    for s in meas:
      assert s.get("generate#calls") == 1 and s.get("hf_generate#calls") == 1, s
      assert s.get("training_step#calls") == accum and s.get("ref_logprobs#calls") == 1, s

    def med(key):
      return statistics.median(s.get(key, 0.0) for s in meas)

    gen, ref_lp, old_lp = med("generate"), med("ref_logprobs"), med("old_logprobs")
    gs, tot = med("gen_and_score"), med("step")
    per_step_update = [s["step"] - s.get("gen_and_score", 0.0) for s in meas]
    per_step_other = [s.get("gen_and_score", 0.0) - s.get("generate", 0.0) - s.get("ref_logprobs", 0.0)
                      - s.get("old_logprobs", 0.0) for s in meas]
    gen_tokens = statistics.median(check["completion_tokens"][a.warmup:])  # R * new_tokens unless short
    tokens = R * a.prompt_len + gen_tokens
    res = {
        "preset": a.preset,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "rows": R,
        "generate_s": gen,
        "ref_logprobs_s": ref_lp + old_lp,
        "update_s": statistics.median(per_step_update),
        "step_s": tot,
        "tokens_per_s": tokens / tot,
        "generated_tokens_per_s": gen_tokens / gen,
        "short_completions": check["bad_completion"],
        "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "system": "trl",
        "trl": trl.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        # finer split and config notes
        "hf_generate_s": med("hf_generate"),
        "scoring_other_s": statistics.median(per_step_other),
        "gen_and_score_s": gs,
        "loss_forward_s": med("loss_forward"),
        "optimizer_s": med("optimizer"),
        "loop_step_s": med("loop_step"),
        "old_logprobs_passes": sum(s.get("old_logprobs#calls", 0) for s in meas),
        "prompt_len": a.prompt_len,
        "new_tokens": a.new_tokens,
        "completion_tokens_checked": (f"{check['bad_completion']} of {R * len(check['rows'])} completions shorter than "
                                      f"{a.new_tokens} tokens (continuous batching does not hold min_new_tokens)"
                                      if a.continuous_batching else f"all {R * len(check['rows'])} completions x {a.new_tokens} tokens"),
        "num_generations": a.G,
        "micro_batch": a.micro_batch,
        "grad_accum": accum,
        "steps_per_generation": cfg.steps_per_generation,
        "optimizer_steps_per_grpo_step": 1,
        "gradient_checkpointing": bool(a.grad_ckpt),
        "param_dtype": dtype_name,
        "autocast_bf16": bool(cfg.bf16),
        "attn_implementation": trainer.model.config._attn_implementation,
        "optim": getattr(cfg.optim, "value", str(cfg.optim)),
        "max_grad_norm": cfg.max_grad_norm,
        "loss_type": cfg.loss_type,
        "beta": cfg.beta,
        "n_params": n_params,
        "ref_model": f"{ref_p.dtype} on {ref_p.device}",
        "warmup_steps": a.warmup,
        "measured_steps": a.steps,
        "step_s_all": [s["step"] for s in meas],
        "losses": losses,
        "generation": ("transformers generate_batch (continuous batching, paged cache) through TRL's "
                       "use_transformers_continuous_batching, no vLLM" if a.continuous_batching else
                       "HF generate, DynamicCache, min_new_tokens=max_new_tokens (EOS masked), no vLLM"),
    }
  finally:
    if not a.workdir:
      shutil.rmtree(workdir, ignore_errors=True)

  print("RESULT " + json.dumps(res), flush=True)
  print(f"{a.preset} (trl {trl.__version__}): step {tot:.2f} s = generate {gen:.2f} + ref log-probs "
        f"{res['ref_logprobs_s']:.2f} + other {res['scoring_other_s']:.2f} + update {res['update_s']:.2f}; "
        f"{tokens / tot:,.0f} tokens/s; peak {res['peak_bytes'] or 0:,} bytes")
  if a.out:
    with open(a.out, "w") as f:
      json.dump(res, f)


if __name__ == "__main__":
  main()
