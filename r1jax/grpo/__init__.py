"""GRPO math, arrays in and arrays out; no model code.

- `config`: `GRPOConfig`, the frozen hyperparameters of the update.
- `advantages`: outcome (group-relative) and process-supervision advantages.
- `loss`: the clipped surrogate + k3 KL loss, its aggregation variants, token log-probs, entropy.
- `dynamic_sampling`: DAPO's host-side filter and buffer of informative groups.
"""
from r1jax.grpo.config import GRPOConfig

__all__ = ["GRPOConfig"]
