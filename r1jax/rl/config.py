"""Hyperparameters of the GRPO update (DeepSeekMath sec. 4.1, DeepSeek-R1, DAPO, Dr. GRPO, GSPO), of PPO's critic,
and of the loop around the update (`TrainConfig`)."""
from __future__ import annotations

import dataclasses

LOSS_TYPES = ("grpo", "token_mean", "dr_grpo")
"""Loss aggregations, see `r1jax.rl.losses.aggregate`."""
LOSS_TYPE_ALIASES = {"bnpo": "token_mean", "dapo": "token_mean"}
"""Names peers use for the same aggregation; resolved to the canonical name on construction."""
SCALE_REWARDS = ("group", "batch", "none")
IMPORTANCE_SAMPLING_LEVELS = ("token", "sequence")
TIS_LEVELS = ("none", "token", "sequence")
ADVANTAGE_ESTIMATORS = ("grpo", "gae")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
  """One GRPO update: sampling group, clipped objective, KL, aggregation, optimizer.

  Invalid values raise a ValueError naming `grpo.<field>` at construction, before anything compiles.
  `loss_type` aliases ('bnpo', 'dapo') are stored as their canonical name ('token_mean').
  """
  num_generations: int = 8
  """G: completions sampled per prompt; rows of one prompt are contiguous in every batch."""
  beta: float = 0.001
  """KL coefficient (R1 Nature: 0.001; DeepSeekMath: 0.04). 0 disables the KL term and no
  reference model is needed."""
  eps_low: float = 0.2
  """Lower clip range: the ratio is clipped below at 1 - eps_low."""
  eps_high: float = 0.2
  """Upper clip range: the ratio is clipped above at 1 + eps_high (DAPO clip-higher: 0.28)."""
  loss_type: str = "grpo"
  """Aggregation of per-token losses: 'grpo' (mean over sequences of per-sequence token means),
  'token_mean' (alias 'bnpo', 'dapo': sum over tokens / valid tokens in the batch), 'dr_grpo'
  (sum over tokens / (num sequences * max_completion_length)). Dr. GRPO proper also needs
  scale_rewards='none'; the two are separate knobs so each fix can be ablated alone."""
  scale_rewards: str = "group"
  """Advantage scaling after subtracting the group mean: 'group' (divide by the group's std),
  'batch' (divide by the whole batch's std), 'none' (Dr. GRPO)."""
  mu: int = 1
  """Inner iterations over each rollout batch (pi_old fixed during them). With mu = 1 the ratio is
  1 at the update point: the loss value is ~0 but its gradient is not."""
  num_minibatches: int = 1
  """Optimizer steps per inner iteration; the rollout rows are split into this many minibatches."""
  grad_accum: int = 1
  """Micro-batches per minibatch: the jitted step runs them one after another and sums their
  gradients (weighted so the result is the whole minibatch's gradient) before one optimizer step.
  A memory knob: activations shrink by this factor; the update is the same up to float rounding."""
  max_completion_length: int = 256
  """Completion tokens per row (N); also the 'dr_grpo' normalizer."""
  ref_reset_every: int = 0
  """Reset the reference model to the current policy every this many steps (R1: 400); 0 = never."""
  dynamic_sampling: bool = False
  """DAPO dynamic sampling: drop groups whose rewards are all equal and resample to refill."""
  mask_truncated_completions: bool = False
  """Exclude completions that hit max_completion_length without EOS from the loss (DAPO)."""
  importance_sampling_level: str = "token"
  """'token': per-token ratio (GRPO); 'sequence': exp(mean_t log ratio) per sequence (GSPO)."""
  recompute_old_logp: bool = False
  """pi_old from the trainer's own forward pass over the rollout (one more forward, the cost of the
  reference pass) instead of the sampler's log-probs; the sampler's are kept for `tis` and the
  logged rollout-vs-trainer mismatch (`grpo.rollout_mismatch`). Off: no extra pass, no mismatch."""
  tis: str = "none"
  """Truncated importance sampling against the sampler/trainer mismatch (Yao et al. 2025, as verl and
  slime): the clipped surrogate of each token is weighted by min(pi_old_trainer / pi_sampler, tis_cap)
  per 'token', or per 'sequence' by min(prod_t of that ratio, tis_cap); 'none' = off. Needs
  recompute_old_logp."""
  tis_cap: float = 2.0
  """C, the cap of the TIS weight."""
  advantage_estimator: str = "grpo"
  """'grpo': group-relative advantages of the G samples of a prompt (no critic); 'gae': PPO with a
  critic (a value model of the policy's size, the `ppo` section), per-token GAE advantages from the
  outcome reward at the last token (verl's `algorithm.adv_estimator`)."""

  @property
  def uses_reference(self) -> bool:
    """beta > 0: the KL term needs the reference policy's log-probs (beta 0 builds no reference)."""
    return self.beta > 0

  def check_rows(self, prompts_per_step: int, shards: int, grad_accum: int | None = None) -> None:
    """A step's rows split into `num_minibatches` minibatches, each into `grad_accum` (default
    this config's) micro-batches over the `shards` data x fsdp devices; else a ValueError."""
    rows, accum = prompts_per_step * self.num_generations, self.grad_accum if grad_accum is None else grad_accum
    if rows % self.num_minibatches or (rows // self.num_minibatches) % (shards * accum):
      raise ValueError(f"train.prompts_per_step * grpo.num_generations = {rows} rows must split into "
                       f"grpo.num_minibatches={self.num_minibatches} minibatches, each divisible by "
                       f"grpo.grad_accum={accum} x the data*fsdp mesh size {shards}")

  def __post_init__(self):
    if isinstance(self.loss_type, str) and self.loss_type in LOSS_TYPE_ALIASES:
      object.__setattr__(self, "loss_type", LOSS_TYPE_ALIASES[self.loss_type])
    self.validate()

  def validate(self) -> None:
    """Raise ValueError naming the field, its value and what is allowed."""
    _one_of("loss_type", self.loss_type, LOSS_TYPES,
            extra=f" (aliases: {', '.join(f'{k!r}' for k in LOSS_TYPE_ALIASES)} -> 'token_mean')")
    _one_of("scale_rewards", self.scale_rewards, SCALE_REWARDS)
    _one_of("importance_sampling_level", self.importance_sampling_level, IMPORTANCE_SAMPLING_LEVELS)
    _one_of("tis", self.tis, TIS_LEVELS)
    _one_of("advantage_estimator", self.advantage_estimator, ADVANTAGE_ESTIMATORS)
    for name in ("dynamic_sampling", "mask_truncated_completions", "recompute_old_logp"):
      if not isinstance(getattr(self, name), bool):
        raise ValueError(f"grpo.{name}={getattr(self, name)!r} must be a bool")
    _at_least("num_generations", self.num_generations, 2, "a group needs >= 2 samples to have a spread")
    _at_least("mu", self.mu, 1)
    _at_least("num_minibatches", self.num_minibatches, 1)
    _at_least("grad_accum", self.grad_accum, 1)
    _at_least("max_completion_length", self.max_completion_length, 1)
    _at_least("ref_reset_every", self.ref_reset_every, 0, "0 = never")
    if not self.beta >= 0:
      raise ValueError(f"grpo.beta={self.beta!r} must be >= 0 (0 disables the KL term)")
    if not 0 <= self.eps_low < 1:
      raise ValueError(f"grpo.eps_low={self.eps_low!r} must be in [0, 1) so that 1 - eps_low > 0")
    if not self.eps_high >= 0:
      raise ValueError(f"grpo.eps_high={self.eps_high!r} must be >= 0")
    if isinstance(self.tis_cap, bool) or not isinstance(self.tis_cap, (int, float)) or not self.tis_cap > 0:
      raise ValueError(f"grpo.tis_cap={self.tis_cap!r} must be a number > 0")
    if self.tis != "none" and not self.recompute_old_logp:
      raise ValueError(f"grpo.tis={self.tis!r} needs grpo.recompute_old_logp=True (the weight compares the "
                       "trainer's log-probs with the sampler's), or grpo.tis='none'")

def _one_of(name: str, value, allowed: tuple[str, ...], extra: str = "") -> None:
  if value not in allowed:
    raise ValueError(f"grpo.{name}={value!r} is not one of {allowed}{extra}")


def _at_least(name: str, value, lo: int, why: str = "") -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < lo:
    raise ValueError(f"grpo.{name}={value!r} must be an int >= {lo}" + (f" ({why})" if why else ""))


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """The critic of PPO (grpo.advantage_estimator='gae'): a transformer of the policy's size started
  from the policy's weights, with a scalar head (`r1jax.model.heads`), trained on the GAE returns with the
  clipped value loss over the same minibatches and inner iterations as the policy."""
  gamma: float = 1.0
  """Discount per token (1: the outcome reward counts fully at every token, as verl and OpenRLHF use)."""
  lam: float = 0.95
  """GAE's lambda: 1 = Monte-Carlo returns, 0 = one-step TD."""
  value_clip: float = 0.2
  """Clip range of the value loss around the rollout-time values (0 = unclipped MSE)."""
  critic_learning_rate: float = 1e-5
  critic_warmup_steps: int = 0
  """Steps in which only the critic is trained (the policy waits for a value baseline)."""
  whiten_advantages: bool = True
  """Normalize the advantages over the batch's valid tokens (mean 0, std 1)."""

  def __post_init__(self):
    for name in ("gamma", "lam"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ValueError(f"ppo.{name}={v!r} must be a number in [0, 1]")
    if not self.value_clip >= 0:
      raise ValueError(f"ppo.value_clip={self.value_clip!r} must be >= 0 (0 = unclipped)")
    if not self.critic_learning_rate > 0:
      raise ValueError(f"ppo.critic_learning_rate={self.critic_learning_rate!r} must be > 0")
    if isinstance(self.critic_warmup_steps, bool) or not isinstance(self.critic_warmup_steps, int) or \
        self.critic_warmup_steps < 0:
      raise ValueError(f"ppo.critic_warmup_steps={self.critic_warmup_steps!r} must be an int >= 0")
    if not isinstance(self.whiten_advantages, bool):
      raise ValueError(f"ppo.whiten_advantages={self.whiten_advantages!r} must be a bool")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The loop around the update step."""
  steps: int = 100
  """Policy updates (rollout batches) to run."""
  prompts_per_step: int = 16
  """Questions per rollout; rows = prompts_per_step * grpo.num_generations."""
  max_prompt_len: int = 256
  on_too_long: str = "skip"
  """Prompts over max_prompt_len: 'skip' (counted) or 'fail'."""
  seed: int = 0
  log_every: int = 1
  sample_log_every: int = 10
  """Write a few completions to samples.jsonl every this many steps."""
  max_nonfinite: int = 5
  """Stop after this many consecutive updates with NaN/inf loss or gradient."""
  reward_timeout_s: float = 5.0
  reward_workers: int = 2
  overlong_weight: float = 0.0
  """DAPO soft overlong punishment (in tokens) added to the reward with this weight; 0 = off."""
  overlong_buffer: int = 16
  """Its buffer C: the penalty ramps from 0 at max_completion_length - C to -1 at the maximum."""
  max_sampling_rounds: int = 4
  """DAPO dynamic sampling: most rollout rounds per step to fill the batch with informative groups."""
  progress: bool = True
  """Progress bars (tqdm)."""
  rollout_chunks: int = 1
  """Generate each rollout in this many sequential sub-batches of its prompts (the same rows as one
  batch: `rollout.sample`); experiments default to 'auto', the memory plan's choice (`memory_grpo.plan`)."""
  memory_limit_gb: float = 0.0
  """Per-device memory the run must fit in (the memory planner's budget); 0 = the device's own
  limit (on CPU: the host's available memory over the CPU devices)."""
  resume: str = "auto"
  """A rerun of a work directory whose checkpoints were made with other settings (`r1jax.workdir`):
  'auto' stops, naming the fields that differ; 'weights' continues these weights with the new
  settings and records the change in <workdir>/run_config.json (a changed model shape or tokenizer
  is refused either way)."""

  def __post_init__(self):
    for f in ("steps", "prompts_per_step", "max_prompt_len", "log_every", "sample_log_every",
              "max_nonfinite", "reward_workers", "max_sampling_rounds"):
      if getattr(self, f) < 1:
        raise ValueError(f"train.{f}={getattr(self, f)} must be >= 1")
    if isinstance(self.rollout_chunks, bool) or not isinstance(self.rollout_chunks, int) or self.rollout_chunks < 1 \
        or self.prompts_per_step % self.rollout_chunks:
      raise ValueError(f"train.rollout_chunks={self.rollout_chunks!r} must be 'auto' or an int >= 1 dividing "
                       f"train.prompts_per_step={self.prompts_per_step}")
    if self.memory_limit_gb < 0:
      raise ValueError(f"train.memory_limit_gb={self.memory_limit_gb} must be >= 0 (0 = the device's limit)")
    if self.resume not in ("auto", "weights"):
      raise ValueError(f"train.resume={self.resume!r} is not one of ('auto', 'weights')")
    if self.on_too_long not in ("skip", "fail"):
      raise ValueError(f"train.on_too_long={self.on_too_long!r} is not one of ('skip', 'fail')")
