"""Reinforcement learning: GRPO (and PPO with a critic) from the maths to the loop.

The maths, arrays in and arrays out, no model code:
- `config`: `GRPOConfig`, the frozen hyperparameters of the update (and `PPOConfig`).
- `advantages`: outcome (group-relative), process-supervision and GAE advantages.
- `losses`: the clipped surrogate + k3 KL loss, its aggregation variants, token log-probs, entropy.
- `dynamic_sampling`: DAPO's host-side filter and buffer of informative groups.
- `rollout_mismatch`: importance weights between the sampler's and the trainer's log-probs.
On the model:
- `step`: the optimizer, `TrainState` and the jitted GRPO (and SFT) update steps.
- `loop`: the GRPO loop (collect groups -> batch -> update -> log -> checkpoint), `run_grpo`.
"""
from r1jax.rl.config import GRPOConfig

__all__ = ["GRPOConfig"]
