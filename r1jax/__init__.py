"""r1jax: DeepSeek-R1 style reasoning RL in JAX."""

__version__ = "0.1.0"
