"""Which attention implementations run on this device, and do they agree with XLA's."""
import jax
import jax.numpy as jnp
import numpy as np

from r1jax import model as M

from r1jax.model import presets

for impl in ("xla", "cudnn"):
  cfg = presets.preset("qwen2.5-0.5b", n_layers=2, dtype="bfloat16", param_dtype="bfloat16", attention_impl=impl)
  p = M.init_params(jax.random.key(0), cfg)
  toks = jax.random.randint(jax.random.key(1), (4, 512), 0, cfg.vocab_size)
  mask = jnp.ones_like(toks, bool).at[0, :100].set(False)
  pos = M.positions_from_mask(mask)
  try:
    out = jax.jit(lambda p, t: M.hidden_states(p, t, pos, cfg, mask_BxT=mask)[0])(p, toks)
    if impl == "xla":
      ref = out
    err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref.astype(jnp.float32))[:, 100:]))
    print(f"attention {impl}: ok, max |diff| vs xla on real positions = {err:.3g}")
  except Exception as e:  # report, don't stop the benchmark call
    print(f"attention {impl}: FAILED {type(e).__name__}: {str(e)[:300]}")
