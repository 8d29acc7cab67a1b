"""The train state of a LoRA run: fresh adapters, trained with their optimizer state, beside the
frozen base stored as `lora.base_dtype` (`r1jax.model.lora`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from r1jax.model.lora import LoRAConfig, _frozen_shardings, adapter_shardings, frozen_base, init_adapters
from r1jax.rl import step as train_step


def init_state(params: dict, model_cfg, lcfg: LoRAConfig, optimizer, seed: int):
  """A `TrainState` of fresh adapters (trained, with their optimizer state) beside the frozen base
  stored as `lcfg.base_dtype` (a new copy unless 'params')."""
  frozen = params
  if lcfg.base_dtype != "params":
    frozen = jax.jit(lambda p: frozen_base(p, lcfg), out_shardings=_frozen_shardings(params, lcfg))(params)
  adapters = jax.jit(lambda k: init_adapters(k, model_cfg, lcfg),
                     out_shardings=adapter_shardings(params, lcfg))(jax.random.fold_in(jax.random.key(seed), 7))
  return train_step.init_state(adapters, optimizer).replace(frozen=frozen, lora_scale=lcfg.scale)


def abstract_state(abstract_params: dict, model_cfg, lcfg: LoRAConfig, optimizer):
  """Shapes and shardings of `init_state`'s result, nothing allocated (the memory planner's)."""
  sds = lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh)
  frozen = abstract_params
  if lcfg.base_dtype != "params":
    frozen = jax.tree.map(sds, jax.eval_shape(lambda p: frozen_base(p, lcfg), abstract_params),
                          _frozen_shardings(abstract_params, lcfg))
  adapters = jax.tree.map(sds, jax.eval_shape(lambda: init_adapters(jax.random.key(0), model_cfg, lcfg)),
                          adapter_shardings(abstract_params, lcfg))
  opt = jax.tree.map(sds, jax.eval_shape(optimizer.init, adapters),
                     train_step.opt_state_shardings(optimizer, adapters))
  rep = NamedSharding(jax.tree.leaves(adapters)[0].sharding.mesh, P())
  return train_step.TrainState(adapters, opt, jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
                               frozen=frozen, lora_scale=lcfg.scale)
