"""The jit-compiled steps: GRPO policy update and log-probabilities (the SFT update: `r1jax.sft.step`).

Each is a pure function `(state, batch) -> (state, metrics)` compiled once with explicit
in/out shardings and the state donated. A batch row is a left-padded prompt of P tokens
followed by N completion tokens; logits at position t score token t + 1.

Shape letters: R rows, P prompt length, N completion length, T = P + N.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from r1jax.model import transformer as model_lib
from r1jax.model.config import ModelConfig
from r1jax.rl import losses as loss_lib
from r1jax.rl.config import GRPOConfig
from r1jax.sharding import batch_sharding, constrain, logical_to_spec


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with linear warmup, then constant or cosine decay, and global-norm clipping."""
  learning_rate: float = 1e-6
  warmup_steps: int = 0
  decay: str = "constant"
  """'constant' or 'cosine' (to 10% over total_steps)."""
  total_steps: int = 1000
  b1: float = 0.9
  b2: float = 0.99
  weight_decay: float = 0.1
  max_grad_norm: float = 1.0
  state_dtype: str = "params"
  """Storage dtype of AdamW's moments: 'params' (their parameter's dtype), 'float32' or 'bfloat16'
  (with fp32 parameters: an fp32 master copy with moments at half the memory). The update itself
  runs in float32 either way."""

  def __post_init__(self):
    if self.state_dtype not in ("params", "float32", "bfloat16"):
      raise ValueError(f"optim.state_dtype={self.state_dtype!r} is not one of ('params', 'float32', 'bfloat16')")
    if self.learning_rate <= 0:
      raise ValueError(f"optim.learning_rate={self.learning_rate} must be > 0")
    if self.decay not in ("constant", "cosine"):
      raise ValueError(f"optim.decay={self.decay!r} is not one of ('constant', 'cosine')")
    if self.warmup_steps < 0 or self.total_steps < 1:
      raise ValueError(f"optim.warmup_steps={self.warmup_steps} must be >= 0 and "
                       f"optim.total_steps={self.total_steps} >= 1")


def schedule(cfg: OptimConfig) -> optax.Schedule:
  warm = optax.linear_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1))
  if cfg.decay == "cosine":
    rest = optax.cosine_decay_schedule(cfg.learning_rate, max(cfg.total_steps - cfg.warmup_steps, 1), 0.1)
  else:
    rest = optax.constant_schedule(cfg.learning_rate)
  return optax.join_schedules([warm, rest], [cfg.warmup_steps]) if cfg.warmup_steps else rest


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  opt = optax.chain(
      optax.clip_by_global_norm(cfg.max_grad_norm),
      optax.adamw(schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                  mask=_decay_mask),
  )
  return opt if cfg.state_dtype == "params" else stored_in(opt, jnp.dtype(cfg.state_dtype))


def stored_in(inner: optax.GradientTransformation, dtype) -> optax.GradientTransformation:
  """`inner` with its floating-point state kept in `dtype` between updates: each update reads it
  back as float32, runs `inner` and rounds the new state to `dtype` (counts stay integers)."""
  def cast(tree, dt):
    return jax.tree.map(lambda x: x.astype(dt) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

  def init(params):
    return cast(inner.init(params), dtype)

  def update(grads, state, params=None):
    updates, state = inner.update(grads, cast(state, jnp.float32), params)
    return updates, cast(state, dtype)
  return optax.GradientTransformation(init, update)


_MATRICES = {"embed", "lm_head", "wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"}


def _decay_mask(params):
  """Weight decay on matrices only, not on norms and biases."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[-1].key in _MATRICES or path[-1].key.endswith(("_lora_a", "_lora_b")), params)


# ----------------------------------------------------------------------------- state


def opt_state_shardings(optimizer: optax.GradientTransformation, params):
  """Where the optimizer state lives: each per-parameter leaf (Adam's moments) in its parameter's
  sharding, counts replicated. `params`: arrays or ShapeDtypeStructs with NamedShardings.

  Left to itself, `jit(optimizer.init)` replicates the zeros it creates (they depend on no sharded
  input), which would keep a whole copy of the moments on every device under FSDP.
  """
  mesh = jax.tree.leaves(params)[0].sharding.mesh
  rep = NamedSharding(mesh, PartitionSpec())
  return optax.tree_utils.tree_map_params(optimizer, lambda _, p: p.sharding, jax.eval_shape(optimizer.init, params),
                                          params, transform_non_params=lambda _: rep)


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["params", "opt_state", "step", "ref_params", "head", "frozen"], meta_fields=["lora_scale"])
@dataclasses.dataclass(frozen=True)
class TrainState:
  """What an update step carries, by name. A member a stage does not use is None (no leaves)."""
  params: Any
  """The policy (or reward model / critic body): the transformer's parameters."""
  opt_state: Any
  """AdamW state of the trained members: of `params`, or of `(params, head)` when a head is trained."""
  step: Any
  """Applied updates (int32 scalar; skipped non-finite updates do not count)."""
  ref_params: Any = None
  """GRPO's KL reference (beta > 0), carried through updates unchanged."""
  head: Any = None
  """A scalar head on the transformer (`r1jax.model.heads`): reward model now, critic / PRM later."""
  frozen: Any = None
  """With LoRA (`r1jax.model.lora`): the frozen base, `params` being the adapters. Never updated and never
  checkpointed (`tree` leaves it out: it is read from the policy at start)."""
  lora_scale: float = 0.0
  """With LoRA: alpha / rank."""

  def replace(self, **changes) -> "TrainState":
    return dataclasses.replace(self, **changes)

  def tree(self) -> dict:
    """The members that are set, as the dict a checkpoint holds ({'params': ..., 'opt_state': ...}); not
    the frozen LoRA base."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None and f.name not in ("frozen", "lora_scale")}

  @classmethod
  def from_tree(cls, tree: dict) -> "TrainState":
    return cls(**tree)

  def abstract(self) -> "TrainState":
    """Shapes, dtypes and shardings only: the target `Checkpointer.restore` reads into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), self)

  def policy(self):
    """The parameters the model runs: `params`, or with LoRA the frozen base with the adapters."""
    if self.frozen is None:
      return self.params
    from r1jax.model import lora
    return lora.combine(self.frozen, self.params, self.lora_scale)

  def trained(self):
    """The members the optimizer updates."""
    return self.params if self.head is None else (self.params, self.head)


def init_state(params, optimizer: optax.GradientTransformation, *, ref_params=None, head=None) -> TrainState:
  """Train state: parameters (and `head`, trained with them), optimizer state, step, optional
  reference. Sharding follows the parameters."""
  trained = params if head is None else (params, head)
  sh = jax.tree.leaves(params)[0].sharding
  out_sh = opt_state_shardings(optimizer, trained) if isinstance(sh, NamedSharding) else None
  opt_state = jax.jit(optimizer.init, out_shardings=out_sh)(trained)
  state = TrainState(params, opt_state, jnp.zeros((), jnp.int32), ref_params, head)
  if isinstance(sh, NamedSharding):
    # Scalars (step, Adam counts) on the same mesh, replicated, so every call of the step sees
    # the same input shardings as its outputs and nothing recompiles.
    rep = NamedSharding(sh.mesh, PartitionSpec())
    state = jax.tree.map(lambda x: x if isinstance(x.sharding, NamedSharding) and x.sharding.mesh == sh.mesh
                         else jax.device_put(x, rep), state)
  return state


def state_shardings(state: TrainState):
  return jax.tree.map(lambda x: x.sharding, state)


def shard_batch(batch: dict, mesh) -> dict:
  def put(x):
    spec = logical_to_spec(("batch",) + (None,) * (x.ndim - 1), x.shape, mesh)
    return jax.device_put(x, NamedSharding(mesh, spec))
  return jax.tree.map(put, batch)


# ----------------------------------------------------------------------------- log-probs


def completion_logprobs(params, tokens_RxT, mask_RxT, prompt_len: int, cfg: ModelConfig,
                        temperature: float = 1.0):
  """log p and entropy of the N = T - P completion tokens under `params` (R x N, float32)."""
  positions = model_lib.positions_from_mask(mask_RxT)
  h, _ = model_lib.hidden_states(params, tokens_RxT[:, :-1], positions[:, :-1], cfg, mask_BxT=mask_RxT[:, :-1])
  return model_lib.token_logprobs(params, h[:, prompt_len - 1:], tokens_RxT[:, prompt_len:], cfg, temperature)


def strided_micro_batches(x, A: int):
  """R x ... -> A x R/A x ...: micro-batch j holds rows j, j + A, ..., so each stays spread over
  the batch-sharded devices (the update's grad_accum and the micro-batched log-prob pass)."""
  return x.reshape(x.shape[0] // A, A, *x.shape[1:]).swapaxes(0, 1)


def make_logprob_fn(cfg: ModelConfig, temperature: float, micro_batches: int = 1):
  """Jitted `(params, batch) -> logp_RxN` (reference / old-policy log-probs), over the rows in
  `micro_batches` sequential micro-batches (rows j, j + A, ...: each spread over the batch-sharded
  devices, as the update's grad_accum splits them), so its temporaries are 1/A of one pass's."""
  A = micro_batches

  def fn(params, batch):
    toks, mask = batch["tokens"], batch["mask"]
    P = toks.shape[1] - batch["completion_mask"].shape[1]
    if A == 1:
      return completion_logprobs(params, toks, mask, P, cfg, temperature)[0]

    def one(tm):
      t, m = (constrain(x, ("batch", None)) for x in tm)
      return completion_logprobs(params, t, m, P, cfg, temperature)[0]
    out_AxRxN = jax.lax.map(one, (strided_micro_batches(toks, A), strided_micro_batches(mask, A)))
    return out_AxRxN.swapaxes(0, 1).reshape(toks.shape[0], -1)
  return jax.jit(fn)


# ----------------------------------------------------------------------------- GRPO


def finite_update(state, grads, loss, optimizer):
  """Apply the optimizer unless loss or gradients are NaN/inf; then keep the old state.

  A `lax.cond`, not a select between old and new trees: the update happens in place in the
  donated buffers, with no second copy of the parameters and optimizer state alive.
  """
  gnorm = optax.tree.norm(grads) if hasattr(optax, "tree") else optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)

  def apply(params, opt_state):
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  trained, opt_state = jax.lax.cond(finite, apply, lambda p, o: (p, o), state.trained(), state.opt_state)
  params, head = (trained, state.head) if state.head is None else trained
  new = state.replace(params=params, head=head, opt_state=opt_state, step=state.step + finite.astype(jnp.int32))
  return new, gnorm, finite


def make_grpo_step(cfg: ModelConfig, gcfg: GRPOConfig, ocfg: OptimConfig, temperature: float,
                   shardings: Any | None = None, mesh=None) -> Callable:
  """Jitted GRPO update `(state, batch) -> (state, metrics)` on one minibatch.

  batch: tokens_RxT, mask_RxT (real tokens), completion_mask_RxN, old_logp_RxN (sampling-time),
  ref_logp_RxN (only when beta > 0), adv_R; sampler_logp_RxN when old_logp is the trainer's
  (grpo.recompute_old_logp), for TIS.
  """
  optimizer = make_optimizer(ocfg)
  lr = schedule(ocfg)

  A = gcfg.grad_accum

  def loss_fn(params, mb, weight, state):
    P = mb["tokens"].shape[1] - mb["completion_mask"].shape[1]
    policy = state.replace(params=params).policy()  # with LoRA: differentiated wrt the adapters only
    logp, ent = completion_logprobs(policy, mb["tokens"], mb["mask"], P, cfg, temperature)
    loss, m = loss_lib.grpo_loss(logp, mb["old_logp"], mb.get("ref_logp"), mb["adv"], mb["completion_mask"], gcfg,
                                 mb.get("sampler_logp"))
    m = dict(m)
    m["entropy"] = loss_lib.masked_mean(ent, mb["completion_mask"])
    return loss * weight, m

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step(state, batch):
    if A == 1:
      (loss, metrics), grads = grad_fn(state.params, batch, 1.0, state)
    else:
      micro = jax.tree.map(lambda x: strided_micro_batches(x, A), batch)
      tokens_j = jnp.sum(micro["completion_mask"], axis=(1, 2))
      # Loss weights making the sum over micro-batches the whole minibatch's loss: equal shares
      # for per-row normalizations, token shares for the token mean.
      if gcfg.loss_type == "token_mean":
        weights = tokens_j / jnp.maximum(jnp.sum(tokens_j), 1.0)
      else:
        weights = jnp.full((A,), 1.0 / A)
      token_share = tokens_j / jnp.maximum(jnp.sum(tokens_j), 1.0)

      def body(acc, xs):
        mb, w, share = xs
        mb = jax.tree.map(lambda x: constrain(x, ("batch",) + (None,) * (x.ndim - 1)), mb)
        (l, m), g = grad_fn(state.params, mb, w, state)
        acc_g, acc_l, acc_m = acc
        return (jax.tree.map(jnp.add, acc_g, g), acc_l + l,
                jax.tree.map(lambda a, b: a + share * b, acc_m, m)), None

      (_, m0), _ = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), 1.0, state)
      zeros = lambda t: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), t)
      # The metrics are token-weighted means over the micro-batches.
      (grads, loss, metrics), _ = jax.lax.scan(body, (zeros(state.params), jnp.float32(0.0), zeros(m0)),
                                               (micro, weights, token_share))
    new_state, gnorm, finite = finite_update(state, grads, loss, optimizer)
    metrics |= {"loss": loss, "grad_norm": gnorm, "learning_rate": lr(state.step),
                "nonfinite": (~finite).astype(jnp.int32)}
    return new_state, metrics

  return jit_step(step, shardings, mesh)


def jit_step(step, shardings, mesh):
  if shardings is None:
    return jax.jit(step, donate_argnums=0)
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(step, in_shardings=(shardings, batch_sharding(mesh)), out_shardings=(shardings, replicated),
                 donate_argnums=0)
