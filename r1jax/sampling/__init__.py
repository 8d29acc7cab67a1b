"""Sampling: the sampler (prefill, decode, sampling methods), its typed saved state, and rollouts."""
