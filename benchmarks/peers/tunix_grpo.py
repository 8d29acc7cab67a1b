"""The r1jax GRPO-step workload (benchmarks/grpo_step.py) run through Google's Tunix (google-tunix 0.1.7).

    python benchmarks/peers/tunix_grpo.py --preset qwen2.5-0.5b --out tunix_grpo.json
    python benchmarks/peers/tunix_grpo.py --preset tiny --steps 1          # CPU smoke test

Workload, as in grpo_step.py: a Qwen2.5 shape with RANDOM weights built with Tunix's own model
(`tunix.models.qwen2.model.ModelConfig.qwen2p5_0p5b()` / `qwen2p5_1p5b()` -> `Qwen2`, random-initialised by
Tunix's `tunix.models.dummy_model_creator.create_dummy_model`, N(0, 0.02) for every parameter), 16 prompts x
G = 8 samples = 128 completions, 256-token prompts, exactly 512 generated tokens each, temperature 1.0 (top_p
1.0, no top-k: plain categorical sampling), beta = 0.04 with a reference model (a second, separately
allocated copy with the same weights), mu = num_iterations = 1, AdamW lr 1e-6 with r1jax's other optimizer
settings (clip_by_global_norm 1.0, b2 0.99, weight decay 0.1 on matrices), ONE optimizer step per GRPO step
covering all 128 completions, a pure-Python reward returning random numbers. Everything goes through Tunix's
own GRPO stack: `GRPOLearner.train` -> `RLCluster` (actor, reference and rollout colocated on one
single-device mesh ('fsdp', 'tp') = (1, 1), so the rollout shares the actor's weights and no weight sync
happens) -> vanilla rollout (`tunix.generate.sampler.Sampler`: jitted prefill + `lax.while_loop` decode with
a KV cache of prompt_len + new_tokens) -> `InferenceWorker` reference log-probs -> `rl.trainer.Trainer`
(nnx.jit train step: policy forward/backward, GRPO loss + KL, optax update).

Precision: `ModelConfig.dtype = bfloat16` (compute), `param_dtype` left at Tunix's default float32 for the
actor (AdamW master weights), the sampler (it reads the actor's arrays) and the reference copy. The KV cache
is bf16. Tunix's Qwen2 returns float32 logits over the full vocabulary.

Batching: Tunix's knobs are in prompts (x G rows). rollout_micro_batch_size = 16: one sampler call makes all
128 completions, as r1jax does. mini_batch_size = 16: one optimizer step per GRPO step.
train_micro_batch_size = --micro_batch prompts (gradient accumulation over 16 / micro_batch micro-steps,
Tunix wraps the optimizer in optax.MultiSteps, still ONE AdamW update); Tunix also runs the reference pass in
chunks of the same size (compute_logps_micro_batch_size defaults to it). Tunix's loss materialises float32
logits [rows, 768, 151936] (plus their gradient and the entropy over them), so the full 128 rows cannot fit
in one micro-step. With --micro_batch auto (default) the script runs itself in a child process with
micro_batch 16, 8, 4, 2, 1 prompts and keeps the first that does not run out of device memory (XLA's default
preallocation, 75 % of the GPU, applies; sizes whose rough estimate exceeds 1.25x that budget, from
nvidia-smi, are skipped to save failed compiles; tiny: 16). --remat none|block|decoder selects Tunix's
Qwen2 RematConfig; default none (Tunix's default). block and decoder do NOT work with Tunix 0.1.7 + flax 0.12
here: the shared model's nnx.remat also runs inside the sampler's lax.while_loop decode and raises
flax.errors.TraceContextError ("Cannot mutate Param from a different trace level"), so unlike r1jax (remat
'dots') the Tunix update runs without rematerialisation, in smaller micro-batches.

EOS: the in-memory tokenizer (a `tokenizers` WordLevel model over the words "t0".."t{V-1}" with ids 0..V-1 =
the model's vocabulary, whitespace pre-tokenizer, wrapped in transformers.PreTrainedTokenizerFast) puts
<pad>, <eos> and <unk> at ids V, V+1, V+2, outside the model's logits, so the sampler can never emit EOS or
pad and every completion is exactly new_tokens long (checked on every step's rollout output; a prompt of 256
words is checked to be exactly 256 tokens). There is no BOS token.

Phases (seconds per GRPO step; each wrapper calls jax.block_until_ready on what the wrapped call returns or
updates before it stops its clock):
  step_s          GRPOLearner._run_global_step (+ RLCluster.sync_weights, never called here): everything Tunix
                  does for one GRPO step: the data thread's generation, reference pass, rewards, advantages
                  and metric buffering, then the main thread's update(s). Tunix runs data preparation in a
                  worker thread, but with colocated actor and rollout it does not overlap it with training
                  (async loading is off and examples are queued only once the whole batch is prepared), so the
                  phases below run one after another.
  generate_s      RLCluster.generate: tokenizing the 128 prompt strings, the sampler's prefill + decode loop,
                  copying the token buffer to the host, slicing out the completions and detokenizing them.
  ref_logprobs_s  RLCluster.get_ref_per_token_logps (the reference model's forward over 128 x 768 tokens in
                  chunks of micro_batch x G rows) + RLCluster.get_old_per_token_logps (not called with mu = 1:
                  Tunix's loss uses the current log-probs detached as the old ones).
  update_s        RLCluster.update_actor, summed over the micro-steps: sharding the TrainExample, the jitted
                  train step (policy forward with full-vocabulary float32 logits, GRPO clipped loss + beta * KL,
                  entropy metric, backward, optax.MultiSteps / clip / AdamW), Tunix's metric buffering.
  other_s         step_s - generate_s - ref_logprobs_s - update_s: padding completions, building masks,
                  the reward function, advantages, metric buffering, queue hand-off.
Warm-up steps (--warmup, default 1: compilation) are excluded; each key is the median over --steps measured
steps. tokens_per_s = rows * (prompt_len + new_tokens) / step_s; generated_tokens_per_s = rows * new_tokens /
generate_s; peak_bytes = jax.devices()[0].memory_stats()["peak_bytes_in_use"] over the whole run.
Prints one line `RESULT {json}`; --out PATH also writes the json.

Compatibility: Tunix 0.1.7 was released against older JAX; `_compat()` below only fills in what is missing
(jax.interpreters.pxla.thread_resources, jax.experimental.shard_map.shard_map, Mesh as a context manager)
if the installed JAX has removed it; it reports what it patched under "compat_patches".
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

PRESETS = ("qwen2.5-0.5b", "qwen2.5-1.5b", "tiny")
from workload import word_tokenizer, workload_parser  # noqa: E402

OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory")


def _compat() -> list[str]:
  """Patches APIs that Tunix 0.1.7 uses and newer JAX may have removed; returns what it patched."""
  import types

  import jax
  from jax._src import mesh as mesh_lib
  patched = []
  import jax.interpreters.pxla as pxla
  try:
    pxla.thread_resources  # noqa: B018  (deprecated in JAX 0.8.2)
  except AttributeError:
    pxla.thread_resources = mesh_lib.thread_resources
    patched.append("jax.interpreters.pxla.thread_resources")
  try:
    from jax.experimental.shard_map import shard_map  # noqa: F401
  except ImportError:
    mod = types.ModuleType("jax.experimental.shard_map")

    def shard_map(f, mesh, in_specs, out_specs, check_rep=True):
      return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check_rep)

    mod.shard_map = shard_map
    sys.modules["jax.experimental.shard_map"] = mod
    patched.append("jax.experimental.shard_map")
  Mesh = jax.sharding.Mesh
  if not hasattr(Mesh, "__enter__"):  # `with mesh:` (Tunix enters role meshes that way)
    def _enter(self):
      self._r1jax_cm = jax.set_mesh(self)
      self._r1jax_cm.__enter__()
      return self

    def _exit(self, *exc):
      return self._r1jax_cm.__exit__(*exc)

    Mesh.__enter__, Mesh.__exit__ = _enter, _exit
    patched.append("jax.sharding.Mesh.__enter__/__exit__ -> jax.set_mesh")
  return patched


def build_tokenizer(vocab_size: int):
  """"t{i}" -> i for i < vocab_size; <pad>, <eos>, <unk> beyond the model's vocabulary (never sampled)."""
  return word_tokenizer(range(vocab_size), {"<pad>": vocab_size, "<eos>": vocab_size + 1, "<unk>": vocab_size + 2})


def model_config(preset: str, remat: str):
  import jax.numpy as jnp
  from tunix.models.qwen2 import model as qwen2

  if preset == "qwen2.5-0.5b":
    cfg = qwen2.ModelConfig.qwen2p5_0p5b()
  elif preset == "qwen2.5-1.5b":
    cfg = qwen2.ModelConfig.qwen2p5_1p5b()
  else:  # a small Qwen2 shape for CPU tests
    cfg = qwen2.ModelConfig(num_layers=2, vocab_size=512, embed_dim=64, hidden_dim=128, num_heads=4,
                            head_dim=16, num_kv_heads=2, rope_theta=10_000, norm_eps=1e-6,
                            use_tied_embedding=True)
  return dataclasses.replace(cfg, dtype=jnp.bfloat16, remat_config=qwen2.RematConfig[remat.upper()])


SHAPES = {  # layers, vocab, embed, hidden, heads, head_dim, params (for the memory estimate only)
    "qwen2.5-0.5b": (24, 151936, 896, 4864, 14, 64, 0.494e9),
    "qwen2.5-1.5b": (28, 151936, 1536, 8960, 12, 128, 1.54e9),
}


def estimate_bytes(a, rows: int) -> float:
  """Rough peak device bytes of Tunix's train micro-step with `rows` rows (the largest phase here)."""
  L, V, D, F, H, hd, n = SHAPES[a.preset]
  T, C = a.prompt_len + a.new_tokens, a.new_tokens
  logits = T * V * 2 + C * V * 4 * 3  # bf16 lm-head output; f32 logits, their gradient, entropy temporaries
  layer = T * T * H * 6 + T * (F * 6 + D * 24 + H * hd * 8)  # attention probs f32+bf16, MLP, norms, qkv
  acts = {"none": L * layer, "block": L * T * D * 12 + layer, "decoder": L * T * D * 2 + layer}[a.remat]
  fixed = n * 4 * 5  # fp32 params, grads, AdamW mu and nu, fp32 reference copy
  return fixed + rows * (logits + acts)


def device_budget_bytes() -> float | None:
  """GPU memory XLA may use (total x XLA_PYTHON_CLIENT_MEM_FRACTION, default 0.75), via nvidia-smi."""
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, timeout=30).stdout.split()
    total = float(out[0]) * 2**20
  except Exception:  # no GPU / no nvidia-smi: try every size
    return None
  if os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "").lower() in ("false", "0"):
    return total
  return total * float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75"))


def parse_args(argv=None):
  ap = workload_parser(__doc__.split("\n")[0], PRESETS)
  ap.add_argument("--micro_batch", default="auto",
                  help="train (and reference-pass) micro-batch in prompts, or 'auto': largest of 16,8,4,2,1 "
                       "that fits")
  ap.add_argument("--remat", default="none", choices=("none", "block", "decoder"),
                  help="Tunix RematConfig of the Qwen2 layers (block/decoder crash in Tunix's sampler)")
  return ap.parse_args(argv)


def main():
  a = parse_args()
  if a.micro_batch != "auto":
    run(a, int(a.micro_batch))
    return
  ladder = [m for m in (16, 8, 4, 2, 1) if m <= a.prompts and a.prompts % m == 0]
  budget = device_budget_bytes()
  if a.preset != "tiny" and budget:
    # Skip micro-batches that cannot fit by a wide margin (each out-of-memory try costs a compile and a
    # generation); the estimate is rough, so sizes up to 1.25x the budget are still tried.
    fits = [m for m in ladder if estimate_bytes(a, m * a.G) <= 1.25 * budget]
    ladder = fits or ladder[-1:]
    print(f"[tunix_grpo] device budget {budget / 2**30:.0f} GiB; estimated GiB per micro_batch: "
          + ", ".join(f"{m}: {estimate_bytes(a, m * a.G) / 2**30:.0f}" for m in (16, 8, 4, 2, 1)), flush=True)
  tried = []
  for mb in ladder:
    argv, skip = [], False
    for x in sys.argv[1:]:  # drop --micro_batch auto
      if skip or x.startswith("--micro_batch="):
        skip = False
        continue
      if x == "--micro_batch":
        skip = True
        continue
      argv.append(x)
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--micro_batch", str(mb)]
    print(f"[tunix_grpo] trying micro_batch={mb} prompts ({mb * a.G} rows)", flush=True)
    env = dict(os.environ, TUNIX_GRPO_TRIED=",".join(str(t) for t in tried))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tail = []
    for line in p.stdout:
      sys.stdout.write(line)
      sys.stdout.flush()
      tail = (tail + [line])[-400:]
    rc = p.wait()
    if rc == 0:
      return
    if not any(m in "".join(tail) for m in OOM_MARKERS):
      sys.exit(rc)
    tried.append(mb)
    print(f"[tunix_grpo] micro_batch={mb} ran out of device memory", flush=True)
  sys.exit("[tunix_grpo] out of memory at every micro_batch")


def run(a, micro_batch: int):
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import jax
  patches = _compat()
  import flax
  from flax import nnx
  import jax.numpy as jnp
  import numpy as np
  import optax
  import tunix
  from tunix.models import dummy_model_creator
  from tunix.models.qwen2 import model as qwen2
  from tunix.rl import rl_cluster as rl_cluster_lib
  from tunix.rl.grpo import grpo_learner
  from tunix.rl.rollout import base_rollout

  if a.prompts % micro_batch:
    raise SystemExit(f"--micro_batch {micro_batch} must divide --prompts {a.prompts}")
  R = a.prompts * a.G
  cfg = model_config(a.preset, a.remat)
  V = cfg.vocab_size
  tokenizer = build_tokenizer(V)
  assert tokenizer.bos_token_id is None and tokenizer.pad_token_id == V and tokenizer.eos_token_id == V + 1

  rng = np.random.default_rng(a.seed)
  n_batches = a.warmup + a.steps
  batches = []
  for _ in range(n_batches):
    ids = rng.integers(0, V, size=(a.prompts, a.prompt_len))
    batches.append({"prompts": np.array([" ".join(f"t{i}" for i in row) for row in ids])})
  for b in batches:  # every prompt is exactly prompt_len in-vocabulary tokens, no BOS/EOS added
    for text in b["prompts"]:
      enc = tokenizer.encode(str(text))
      assert len(enc) == a.prompt_len and max(enc) < V, (len(enc), a.prompt_len)

  dev = jax.devices()[0]
  mesh = jax.sharding.Mesh(np.array([dev]).reshape(1, 1), ("fsdp", "tp"))
  actor = dummy_model_creator.create_dummy_model(qwen2.Qwen2, cfg, mesh=mesh, random_seed=a.seed)
  reference = dummy_model_creator.create_dummy_model(qwen2.Qwen2, cfg, mesh=mesh, random_seed=a.seed)
  actor_params = nnx.state(actor, nnx.Param)
  n_params = sum(int(x.size) for x in jax.tree.leaves(actor_params))
  param_dtypes = sorted({str(x.dtype) for x in jax.tree.leaves(actor_params)})
  ref_dtypes = sorted({str(x.dtype) for x in jax.tree.leaves(nnx.state(reference, nnx.Param))})

  def decay_mask(params):
    return jax.tree.map(lambda x: getattr(x, "ndim", 0) >= 2, params)

  optimizer = optax.chain(
      optax.clip_by_global_norm(1.0),
      optax.adamw(1e-6, b1=0.9, b2=0.99, weight_decay=0.1, mask=decay_mask),
  )
  training_config = rl_cluster_lib.RLTrainingConfig(
      actor_optimizer=optimizer,
      eval_every_n_steps=10**9,
      max_steps=n_batches,
      mini_batch_size=a.prompts,
      train_micro_batch_size=micro_batch,
      rollout_micro_batch_size=a.prompts,
      compute_logps_micro_batch_size=None,  # Tunix default: train_micro_batch_size
      checkpoint_root_directory=None,
      metrics_logging_options=None,
      pbar_description=None,
  )
  rollout_config = base_rollout.RolloutConfig(
      max_tokens_to_generate=a.new_tokens,
      max_prompt_length=a.prompt_len,
      kv_cache_size=a.prompt_len + a.new_tokens,
      temperature=1.0,
      top_p=1.0,
      top_k=None,
  )
  role_to_mesh = {rl_cluster_lib.Role.ACTOR: mesh, rl_cluster_lib.Role.REFERENCE: mesh,
                  rl_cluster_lib.Role.ROLLOUT: mesh}
  cluster = rl_cluster_lib.RLCluster(
      actor=actor, reference=reference, tokenizer=tokenizer,
      cluster_config=rl_cluster_lib.ClusterConfig(
          role_to_mesh=role_to_mesh, rollout_engine="vanilla", offload_to_cpu=False,
          training_config=training_config, rollout_config=rollout_config))
  algo = grpo_learner.GRPOConfig(num_generations=a.G, num_iterations=1, beta=0.04, epsilon=0.2)
  reward_rng = np.random.default_rng(a.seed + 1)

  def random_reward(prompts, completions, **kwargs):
    return reward_rng.standard_normal(len(completions)).tolist()

  learner = grpo_learner.GRPOLearner(rl_cluster=cluster, algo_config=algo, reward_fns=[random_reward])

  # ---- timers: wrap Tunix's methods on the instances -------------------------------------------------------
  steps: list[dict] = []
  lengths: list[tuple[int, int, int]] = []

  def cur():
    return steps[-1] if steps else {}

  def add(key, dt):
    s = cur()
    s[key] = s.get(key, 0.0) + dt
    s[key + "#calls"] = s.get(key + "#calls", 0) + 1

  def actor_state():
    return jax.tree.leaves((nnx.state(cluster.actor_trainer.model), nnx.state(cluster.actor_trainer.optimizer)))

  def wrap(obj, name, key, sync):
    orig = getattr(obj, name)

    def timed(*args, **kw):
      t0 = time.perf_counter()
      out = orig(*args, **kw)
      sync(out)
      add(key, time.perf_counter() - t0)
      return out

    setattr(obj, name, timed)

  def sync_generate(out):
    jax.block_until_ready(out.tokens)
    ls = [len(t) for t in out.tokens]
    lengths.append((len(ls), min(ls), max(ls)))

  wrap(cluster, "generate", "generate", sync_generate)
  wrap(cluster, "get_ref_per_token_logps", "ref_logprobs", jax.block_until_ready)
  wrap(cluster, "get_old_per_token_logps", "old_logprobs", jax.block_until_ready)
  wrap(cluster, "update_actor", "update", lambda _: jax.block_until_ready(actor_state()))
  wrap(cluster, "sync_weights", "sync", lambda _: jax.block_until_ready(actor_state()))
  orig_global_step = learner._run_global_step

  def timed_global_step(*args, **kw):
    steps.append({})
    t0 = time.perf_counter()
    out = orig_global_step(*args, **kw)
    jax.block_until_ready(actor_state())
    cur()["global_step"] = time.perf_counter() - t0
    return out

  learner._run_global_step = timed_global_step

  t_start = time.perf_counter()
  learner.train(batches)
  wall = time.perf_counter() - t_start

  if len(steps) != n_batches:
    raise RuntimeError(f"Tunix ran {len(steps)} GRPO steps, expected {n_batches}")
  for s in steps:
    s["step"] = s["global_step"] + s.get("sync", 0.0)
  bad = [x for x in lengths if x[0] != R or x[1] != a.new_tokens or x[2] != a.new_tokens]
  if bad or len(lengths) != n_batches:
    raise RuntimeError(f"completions not all {R} x {a.new_tokens} tokens: (rows, min, max) per call = {lengths}")
  updates_per_step = [s.get("update#calls", 0) for s in steps]
  if cluster.actor_trainer.train_steps != n_batches:
    raise RuntimeError(f"{cluster.actor_trainer.train_steps} optimizer steps for {n_batches} GRPO steps")

  meas = steps[a.warmup:]

  def med(key):
    return statistics.median(s.get(key, 0.0) for s in meas)

  gen, ref_lp, old_lp, upd, tot = med("generate"), med("ref_logprobs"), med("old_logprobs"), med("update"), \
      med("step")
  other = statistics.median(s["step"] - s.get("generate", 0.0) - s.get("ref_logprobs", 0.0)
                            - s.get("old_logprobs", 0.0) - s.get("update", 0.0) for s in meas)
  losses, kls = [], []
  try:
    ml = cluster.actor_trainer.metrics_logger
    losses = [float(x) for x in ml.get_metric_history("actor", "loss", "train")]
    kls = [float(x) for x in ml.get_metric_history("actor", "kl", "train")]
  except Exception as e:  # metrics are informative only
    losses = [f"unavailable: {e}"]
  stats = dev.memory_stats() or {}
  tokens = R * (a.prompt_len + a.new_tokens)
  res = {
      "preset": a.preset,
      "device": dev.device_kind,
      "rows": R,
      "generate_s": gen,
      "ref_logprobs_s": ref_lp + old_lp,
      "update_s": upd,
      "step_s": tot,
      "tokens_per_s": tokens / tot,
      "generated_tokens_per_s": R * a.new_tokens / gen,
      "peak_bytes": stats.get("peak_bytes_in_use"),
      "system": "tunix",
      "tunix": getattr(tunix, "__version__", "?"),
      "jax": jax.__version__,
      "flax": flax.__version__,
      "optax": optax.__version__,
      # finer split and config notes
      "other_s": other,
      "old_logprobs_passes": sum(s.get("old_logprobs#calls", 0) for s in meas),
      "weight_syncs": sum(s.get("sync#calls", 0) for s in meas),
      "prompt_len": a.prompt_len,
      "new_tokens": a.new_tokens,
      "num_generations": a.G,
      "completion_tokens_checked": f"all {R} completions x {a.new_tokens} tokens on each of {n_batches} steps",
      "micro_batch_prompts": micro_batch,
      "micro_batch_rows": micro_batch * a.G,
      "micro_batches_tried_oom": [int(x) for x in os.environ.get("TUNIX_GRPO_TRIED", "").split(",") if x],
      "grad_accum": a.prompts // micro_batch,
      "update_calls_per_step": updates_per_step[a.warmup:],
      "optimizer_steps_per_grpo_step": 1,
      "rollout_rows_per_call": R,
      "ref_logprob_rows_per_call": micro_batch * a.G,
      "remat": a.remat,
      "compute_dtype": str(jnp.dtype(cfg.dtype)),
      "param_dtype": param_dtypes,
      "ref_param_dtype": ref_dtypes,
      "kv_cache_dtype": str(jnp.dtype(cfg.dtype)),
      "logits_dtype": "float32 (Tunix Qwen2 returns float32 logits)",
      "n_params": n_params,
      "init": "tunix.models.dummy_model_creator.create_dummy_model (N(0, 0.02) for all params)",
      "optimizer": "clip_by_global_norm(1.0) + adamw(lr 1e-6, b1 0.9, b2 0.99, wd 0.1 on ndim>=2)",
      "loss": f"grpo, loss_agg_mode {algo.loss_agg_mode}, epsilon {algo.epsilon}, beta {algo.beta}, "
              f"kl {algo.kl_loss_mode}",
      "sampling": "tunix vanilla rollout (Sampler: prefill + lax.while_loop decode), temperature 1.0, "
                  "top_p 1.0, EOS/pad ids outside the model vocabulary",
      "mesh": "single device ('fsdp','tp')=(1,1); actor, reference, rollout colocated",
      "compat_patches": patches,
      "warmup_steps": a.warmup,
      "measured_steps": a.steps,
      "step_s_all": [s["step"] for s in meas],
      "generate_s_all": [s.get("generate", 0.0) for s in meas],
      "update_s_all": [s.get("update", 0.0) for s in meas],
      "train_wall_s": wall,
      "losses": losses,
      "kl": kls,
  }
  print("RESULT " + json.dumps(res), flush=True)
  print(f"{a.preset} (tunix {res['tunix']}, micro_batch {micro_batch}): step {tot:.2f} s = generate {gen:.2f} "
        f"+ ref log-probs {res['ref_logprobs_s']:.2f} + other {other:.2f} + update {upd:.2f}; "
        f"{tokens / tot:,.0f} tokens/s; peak {res['peak_bytes'] or 0:,} bytes", flush=True)
  if a.out:
    with open(a.out, "w") as f:
      json.dump(res, f)


if __name__ == "__main__":
  main()
