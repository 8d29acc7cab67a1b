"""The model: the transformer (config, presets, parameters, forward), its log-prob and scalar heads,
LoRA adapters, and Hugging Face / GGUF interop.

`r1jax.model` hands on the public names of the config, RoPE, the transformer and the presets
(`r1jax.model.ModelConfig`, `.PRESETS`, `.preset`, `.init_params`, `.init_sharded`, `.forward`, ...);
the code imports the module that defines each (`from r1jax.model import transformer`, `config`,
`presets`).
"""
from r1jax.model.config import *  # noqa: F401,F403
from r1jax.model.rope import *  # noqa: F401,F403
from r1jax.model.transformer import *  # noqa: F401,F403
from r1jax.model.presets import *  # noqa: F401,F403
