"""Reinforcement learning: GRPO (and PPO with a critic) from the maths to the loop.

The maths, arrays in and arrays out, no model code:
- `config`: `GRPOConfig`, the frozen hyperparameters of the update (and `PPOConfig`; `TrainConfig`, the loop's).
- `advantages`: outcome (group-relative), process-supervision and GAE advantages.
- `losses`: the clipped surrogate + k3 KL loss, its aggregation variants, token log-probs, entropy.
- `dynamic_sampling`: DAPO's host-side filter and buffer of informative groups.
- `rollout_mismatch`: importance weights between the sampler's and the trainer's log-probs.
On the model:
- `step`: the optimizer, `TrainState` and the jitted GRPO update step and log-probs.
- `head_step`: the losses and jitted steps of a scalar head (reward model, PPO critic, PRM, value model).
- `lora_state`: the train state of a LoRA run (adapters beside the frozen base).
- `collect`: groups of scored completions (`GroupCollector`), the prompts drawn for them.
- `update`: a step's batch, minibatches, policy update (`PolicyUpdate`) and PPO critic (`Critic`).
- `loop`: the GRPO loop (collect groups -> batch -> update -> log -> checkpoint), `run_grpo`.
"""
from r1jax.rl.config import GRPOConfig

__all__ = ["GRPOConfig"]
