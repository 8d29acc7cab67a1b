"""LoRA (`r1jax.model.lora`) against independent computations: jax.grad of the loss with the effective
weight W + s A B written out, the base model's own log-probs, transformers on the merged export."""
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import checkpoint as ckpt_lib
from r1jax.model import lora as L
from r1jax import model as M
from r1jax import sharding
from r1jax.rl import loop as train
from r1jax.rl import lora_state
from r1jax.rl import step as TS
from r1jax.rl.config import GRPOConfig
from r1jax.rl.update import PolicyUpdate

CFG = M.ModelConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
                    logits_chunk=24, qkv_bias=True)
LCFG = L.LoRAConfig(rank=4, alpha=8.0)
P, N, R = 5, 6, 8


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  toks = rng.integers(1, CFG.vocab_size, (R, P + N)).astype(np.int32)
  mask = np.ones((R, P + N), bool)
  mask[::2, :2] = False  # left-padded prompts
  cmask = np.ones((R, N), np.float32)
  cmask[1, 3:] = 0
  mask[1, P + 3:] = False
  return {"tokens": toks, "mask": mask, "completion_mask": cmask,
          "old_logp": rng.normal(-4, 0.3, (R, N)).astype(np.float32),
          "ref_logp": rng.normal(-4, 0.3, (R, N)).astype(np.float32),
          "adv": rng.normal(0, 1, R).astype(np.float32)}


def _mesh_put(tree, mesh):
  """A copy committed to the mesh (the steps donate their state)."""
  return jax.device_put(jax.tree.map(jnp.copy, tree), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def _effective(params, adapters, scale):
  """W + s A B per adapted projection, written out here (not `lora.merge`)."""
  layers = dict(params["layers"])
  for name, k in (("wq", 1), ("wk", 1), ("wv", 1), ("wo", 2), ("w_gate", 1), ("w_up", 1), ("w_down", 1)):
    a, b = adapters["layers"][f"{name}_lora_a"], adapters["layers"][f"{name}_lora_b"]
    W = layers[name]
    a2 = a.reshape(a.shape[0], -1, a.shape[-1])  # L x in x r
    b2 = b.reshape(b.shape[0], b.shape[1], -1)  # L x r x out
    delta = jnp.matmul(a2, b2).reshape(W.shape)
    layers[name] = W + scale * delta
  return dict(params, layers=layers)


def _full_logp(params, b, temperature=1.0):
  """Full logits, log_softmax, gather (no chunked head)."""
  pos = M.positions_from_mask(b["mask"])
  logits, _ = M.forward(params, b["tokens"], pos, CFG, mask_BxT=b["mask"])
  lp = jax.nn.log_softmax(logits / temperature, -1)
  return jnp.take_along_axis(lp[:, :-1], b["tokens"][:, 1:, None], -1)[..., 0][:, P - 1:]


def _grpo_loss(logp, b, beta=0.04, eps=0.2):
  m, A = b["completion_mask"], b["adv"][:, None]
  lp = jnp.where(m > 0, logp, 0.0)
  ratio = jnp.exp(lp - jnp.where(m > 0, b["old_logp"], 0.0))
  surr = jnp.minimum(ratio * A, jnp.clip(ratio, 1 - eps, 1 + eps) * A)
  d = jnp.where(m > 0, b["ref_logp"], 0.0) - lp
  per_tok = -(surr - beta * (jnp.exp(d) - d - 1))
  return jnp.mean((per_tok * m).sum(1) / m.sum(1))


def _trained_adapters(seed=1):
  """Adapters as after some training: A as initialized, B nonzero."""
  ad = L.init_adapters(jax.random.key(seed), CFG, LCFG)
  return jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(seed + 1), x.shape), ad)


def test_adapters_at_init_leave_the_model_exactly_the_base():
  params = M.init_params(jax.random.key(0), CFG, std=0.2)
  ad = L.init_adapters(jax.random.key(1), CFG, LCFG)
  assert all(float(jnp.abs(v).max()) == 0 for k, v in ad["layers"].items() if k.endswith("_lora_b"))
  b = _batch()
  pos = M.positions_from_mask(b["mask"])
  base, _ = M.forward(params, b["tokens"], pos, CFG, mask_BxT=b["mask"])
  adapted, _ = M.forward(L.combine(params, ad, LCFG.scale), b["tokens"], pos, CFG, mask_BxT=b["mask"])
  np.testing.assert_array_equal(np.asarray(adapted), np.asarray(base))


def test_lora_gradient_is_the_full_rank_gradient_restricted_to_the_adapters():
  """jax.grad wrt (A, B) of the step's LoRA loss (adapters applied inside the projections, chunked
  head) equals jax.grad of the same GRPO loss on the explicitly formed W + s A B; one step moves
  the adapters as optax's AdamW on that gradient and leaves the base bit-identical."""
  params = M.init_params(jax.random.key(0), CFG, std=0.2)
  ad = _trained_adapters()
  b = jax.tree.map(jnp.asarray, _batch())
  s = LCFG.scale

  def ref_loss(adapters):
    return _grpo_loss(_full_logp(_effective(params, adapters, s), b), b)
  want_g = jax.jit(jax.grad(ref_loss))(ad)
  assert float(optax.tree.norm(want_g)) > 1e-3

  g = GRPOConfig(num_generations=4, beta=0.04, max_completion_length=N)
  o = TS.OptimConfig(learning_rate=1e-3, weight_decay=0.0, max_grad_norm=1e9)

  def lora_loss(adapters):
    logp, _ = TS.completion_logprobs(L.combine(params, adapters, s), b["tokens"], b["mask"], P, CFG)
    return _grpo_loss(logp, b)
  got_g = jax.jit(jax.grad(lora_loss))(ad)
  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(got_g), jax.tree.leaves(want_g)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))

  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  base_before = jax.tree.map(np.asarray, params)
  state = TS.init_state(_mesh_put(ad, mesh), TS.make_optimizer(o)).replace(frozen=_mesh_put(params, mesh),
                                                                           lora_scale=s)
  step = TS.make_grpo_step(CFG, g, o, 1.0, TS.state_shardings(state), mesh)
  state, m = step(state, b)
  np.testing.assert_allclose(float(m["grad_norm"]), float(optax.tree.norm(want_g)), rtol=1e-4)
  adam = optax.adamw(1e-3, b1=o.b1, b2=o.b2, weight_decay=0.0)
  upd, _ = adam.update(want_g, adam.init(ad), ad)
  want_ad = optax.apply_updates(ad, upd)
  for got, w, gr in zip(jax.tree.leaves(state.params), jax.tree.leaves(want_ad), jax.tree.leaves(want_g)):
    big = np.abs(np.asarray(gr)) > 1e-3 * np.abs(np.asarray(gr)).max()
    np.testing.assert_allclose(np.asarray(got)[big], np.asarray(w)[big], rtol=1e-4, atol=1e-6)
  for _ in range(2):
    state, _ = step(state, jax.tree.map(jnp.asarray, _batch(3)))
  for got, want in zip(jax.tree.leaves(state.frozen), jax.tree.leaves(base_before)):
    np.testing.assert_array_equal(np.asarray(got), want)  # the base gets no update
  # Only the adapters have optimizer state: Adam's moments are the adapters' size.
  assert L.param_bytes(state.opt_state) < 3 * L.param_bytes(state.params) < L.param_bytes(params)


def test_reference_logprobs_are_the_base_models():
  """With LoRA and beta > 0 the update receives reference log-probs of the base alone (adapters off),
  while the trainer's pi_old (recompute_old_logp) is the adapted policy's."""
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  params = _mesh_put(M.init_params(jax.random.key(0), CFG, std=0.2), mesh)
  g = GRPOConfig(num_generations=4, beta=0.04, max_completion_length=N, recompute_old_logp=True)
  o = TS.OptimConfig(learning_rate=1e-3)
  state = lora_state.init_state(params, CFG, LCFG, TS.make_optimizer(o), seed=0)
  state = state.replace(params=_mesh_put(_trained_adapters(), mesh))
  host = _batch()
  host.pop("ref_logp")
  seen = []
  real = TS.make_grpo_step(CFG, g, o, 1.0, TS.state_shardings(state), mesh)

  def update(st, mb):
    seen.append(jax.tree.map(np.asarray, {k: mb[k] for k in ("ref_logp", "old_logp")}))
    return real(st, mb)
  want_ref = np.asarray(_full_logp(params, host))
  want_old = np.asarray(_full_logp(L.combine(params, state.params, LCFG.scale), host))
  assert np.abs(want_ref - want_old).max() > 1e-2  # the adapters matter
  with jax.set_mesh(mesh):
    PolicyUpdate(update, TS.make_logprob_fn(CFG, 1.0), g, 0, mesh)(state, host, 0)
  m = host["completion_mask"] > 0
  np.testing.assert_allclose(seen[0]["ref_logp"][m], want_ref[m], rtol=0, atol=2e-5)
  np.testing.assert_allclose(seen[0]["old_logp"][m], want_old[m], rtol=0, atol=2e-5)


def test_merged_export_matches_the_adapted_model_in_transformers(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from r1jax.model import hf_export
  params = M.init_params(jax.random.key(0), CFG, std=0.2)
  params["layers"] = dict(params["layers"], bq=0.1 * jnp.ones_like(params["layers"]["bq"]))
  ad = _trained_adapters()
  state = TS.TrainState(ad, None, jnp.zeros((), jnp.int32), frozen=params, lora_scale=LCFG.scale)
  hf_export.save_hf_checkpoint(L.merged(state), CFG, tmp_path)
  ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32,
                                                          attn_implementation="eager").eval()
  b = _batch()
  pos = M.positions_from_mask(b["mask"])
  got, _ = M.forward(L.combine(params, ad, LCFG.scale), b["tokens"], pos, CFG, mask_BxT=b["mask"])
  with torch.no_grad():
    want = ref(input_ids=torch.tensor(b["tokens"], dtype=torch.long),
               attention_mask=torch.tensor(b["mask"].astype(np.int64)),
               position_ids=torch.tensor(np.asarray(pos), dtype=torch.long)).logits.float().numpy()
  got, m = np.asarray(got), b["mask"]
  base, _ = M.forward(params, b["tokens"], pos, CFG, mask_BxT=b["mask"])
  assert np.abs(np.asarray(base) - got)[m].max() > 0.1  # the export is not the base's
  assert np.abs(want[m]).max() > 1.0
  rel = np.abs(got[m] - want[m]).max() / np.abs(want[m]).max()
  assert rel < 1e-5, rel


def test_checkpoint_holds_only_the_adapters_and_resumes(tmp_path):
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  big = M.ModelConfig(vocab_size=512, d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=256)
  params = _mesh_put(M.init_params(jax.random.key(0), big), mesh)
  o = TS.OptimConfig()
  state = lora_state.init_state(params, big, LCFG, TS.make_optimizer(o), seed=0)
  state = state.replace(params=jax.tree.map(lambda x: x + 1.0, state.params))
  cfg = ckpt_lib.CheckpointConfig(str(tmp_path / "ckpt"), save_every=1, async_save=False)
  with ckpt_lib.Checkpointer(cfg) as c:
    c.save(1, train.checkpoint_tree(state), {"step": 1, "data_position": {"epoch": 0, "index": 4}, "seed": 0},
           force=True)
  on_disk = sum(f.stat().st_size for f in pathlib.Path(cfg.directory).rglob("*") if f.is_file())
  assert on_disk < L.param_bytes(params) / 2, (on_disk, L.param_bytes(params))  # a full one is ~3x the params
  tree = train.checkpoint_tree(state)
  assert set(tree) == {"params", "opt_state", "step"}
  assert all(k.endswith(("_lora_a", "_lora_b")) for k in tree["params"]["layers"]) and set(tree["params"]) == {"layers"}
  fresh = lora_state.init_state(params, big, LCFG, TS.make_optimizer(o), seed=0)
  with ckpt_lib.Checkpointer(cfg) as c:
    got, start, pos = train.restore_latest(c, fresh, seed=0)
  assert start == 1 and pos["index"] == 4
  for a, w in zip(jax.tree.leaves(got.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(w))
  assert got.frozen is fresh.frozen and got.lora_scale == LCFG.scale


@pytest.mark.parametrize("base_dtype", ["int8", "bfloat16"])
def test_quantized_base_is_dequantized_in_the_matmul(base_dtype):
  """An int8 base runs as its dequantized weights would (x @ W_int8 * scale = x @ (W_int8 * scale)),
  within int8 rounding of the float base; the sampler's fused q/k/v, gate/up copy agrees."""
  params = M.init_params(jax.random.key(0), CFG, std=0.2)
  lc = L.LoRAConfig(rank=4, alpha=8.0, base_dtype=base_dtype)
  frozen = L.frozen_base(params, lc)
  ad = _trained_adapters()
  b = _batch()
  pos = M.positions_from_mask(b["mask"])
  fwd = lambda p: np.asarray(M.forward(p, b["tokens"], pos, CFG, mask_BxT=b["mask"])[0])
  got = fwd(L.combine(frozen, ad, lc.scale))
  fused = dict(L.combine(frozen, ad, lc.scale))
  fused["layers"] = M.fuse_projections(fused["layers"])
  np.testing.assert_allclose(fwd(fused), got, rtol=1e-5, atol=1e-5)
  # The dequantized weights, formed here: int8 x per-output-channel scale (bf16: the stored bits).
  deq = dict(params, layers=dict(params["layers"]))
  for name, k in L.IN_DIMS.items():
    w = np.asarray(frozen["layers"][name]).astype(np.float32)
    if base_dtype == "int8":
      scale = np.asarray(frozen["layers"][f"{name}_qscale"])
      w = w * scale.reshape(scale.shape[:1] + (1,) * k + scale.shape[1:])
      # Symmetric rounding to 127 levels of max |W| over the input dims: within half a step.
      assert np.all(np.abs(w - np.asarray(params["layers"][name])) <= scale.max() / 2 * 1.0001)
    deq["layers"][name] = jnp.asarray(w)
  if base_dtype == "bfloat16":
    deq = jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), deq)
  np.testing.assert_allclose(got, fwd(L.combine(deq, ad, lc.scale)), rtol=1e-4, atol=1e-4)
  assert np.abs(got - fwd(L.combine(params, ad, lc.scale))).max() > 0  # it is not the float base
  if base_dtype == "int8":
    assert frozen["layers"]["wq"].dtype == jnp.int8 and frozen["layers"]["wq_qscale"].shape == (2, 4, 8)
    assert L.param_bytes(frozen["layers"]["w_up"]) == L.param_bytes(params["layers"]["w_up"]) // 4


def test_config_errors():
  for kw, field in (({"rank": -1}, "lora.rank"), ({"alpha": 0.0}, "lora.alpha"), ({"targets": "q,x"}, "lora.targets"),
                    ({"targets": ""}, "lora.targets"), ({"base_dtype": "int4"}, "lora.base_dtype"),
                    ({"mode": "maybe"}, "lora.mode")):
    with pytest.raises(ValueError, match=field):
      L.LoRAConfig(**kw)
  assert L.LoRAConfig(rank=2, targets="q, down").weights() == ("wq", "w_down")


def test_adapters_are_sharded_like_their_weights_and_the_sharded_step_equals_the_unsharded():
  """On a 4 x 2 (fsdp x tensor) mesh: A is placed like its W's input dims, B like W's output dims, the
  rank replicated; one LoRA step there gives the loss and adapters of the same step on one device."""
  g = GRPOConfig(num_generations=4, beta=0.04, max_completion_length=N)
  o = TS.OptimConfig(learning_rate=1e-3)
  b = _batch(4)
  one = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  params = M.init_params(jax.random.key(0), CFG, std=0.2)
  ad = _trained_adapters()
  state = TS.init_state(_mesh_put(ad, one), TS.make_optimizer(o)).replace(frozen=_mesh_put(params, one),
                                                                           lora_scale=LCFG.scale)
  want_state, want_m = TS.make_grpo_step(CFG, g, o, 1.0, TS.state_shardings(state), one)(state, b)
  mesh = sharding.make_mesh(sharding.MeshConfig(fsdp=4, tensor=2))
  with jax.set_mesh(mesh):
    sharded = jax.device_put(params, M.param_shardings(CFG, mesh))
    state = lora_state.init_state(sharded, CFG, LCFG, TS.make_optimizer(o), seed=0)
    spec = lambda x: tuple(x.sharding.spec) + (None,) * (x.ndim - len(x.sharding.spec))
    placed = 0
    for name, k in L.IN_DIMS.items():
      w, a_, b_ = (spec(x) for x in (sharded["layers"][name], state.params["layers"][f"{name}_lora_a"],
                                      state.params["layers"][f"{name}_lora_b"]))
      assert a_ == w[:k + 1] + (None,) and b_ == (w[0], None) + w[k + 1:], (name, w, a_, b_)
      placed += sum(x is not None for x in a_ + b_)
    assert placed >= 7  # fsdp on the model dim, tensor on heads / mlp: not all replicated
    state = state.replace(params=jax.device_put(ad, jax.tree.map(lambda x: x.sharding, state.params)))
    got_state, got_m = TS.make_grpo_step(CFG, g, o, 1.0, TS.state_shardings(state), mesh)(state, b)
  np.testing.assert_allclose(float(got_m["loss"]), float(want_m["loss"]), rtol=1e-5)
  for got, want in zip(jax.tree.leaves(got_state.params), jax.tree.leaves(want_state.params)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-6)


def test_remat_dots_with_lora_keeps_the_projections_and_recomputes_the_low_rank_products(monkeypatch):
  """remat 'dots' with adapters (`transformer.dots_saveable_but_rank`): the same gradients as no
  remat and as plain 'dots'; of the activations plain 'dots' saves it drops exactly the (x A) B
  outputs (as large as every projection's output: LoRA asked more than full fine-tuning) and keeps
  the projections' own; XLA's compiled memory drops with them."""
  import dataclasses
  from jax._src.ad_checkpoint import saved_residuals
  from r1jax.model import transformer
  cfg = dataclasses.replace(CFG, d_model=128, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=512, logits_chunk=64)
  B, T, rank = 2, 128, 4
  params = M.init_params(jax.random.key(0), cfg)
  adapters = L.init_adapters(jax.random.key(1), cfg, L.LoRAConfig(rank=rank, alpha=8.0))
  adapters = {"layers": {k: v if k.endswith("_lora_a") else 0.02 * jax.random.normal(jax.random.key(2), v.shape)
                         for k, v in adapters["layers"].items()}}
  tokens = jax.random.randint(jax.random.key(3), (B, T), 1, cfg.vocab_size)
  pos = jnp.broadcast_to(jnp.arange(T), (B, T))
  w = jax.random.normal(jax.random.key(4), (B, T, cfg.d_model))

  def grads(remat):
    """(gradient, bytes of the per-token activations saved for the backward pass, XLA's temporaries)."""
    c = dataclasses.replace(cfg, remat=remat)
    loss = lambda a: jnp.sum(transformer.hidden_states(L.combine(params, a, 2.0), tokens, pos, c)[0] * w)
    saved = sum(np.prod(a.shape) * a.dtype.itemsize for a, _ in saved_residuals(loss, adapters)
                if a.shape[:3] == (cfg.n_layers, B, T))
    if remat == "full":  # its activations only
      return None, saved, None
    compiled = jax.jit(jax.grad(loss)).lower(adapters).compile()
    return compiled(adapters), saved, compiled.memory_analysis().temp_size_in_bytes

  none, _, _ = grads("none")
  _, full_saved, _ = grads("full")
  ours, ours_saved, ours_bytes = grads("dots")
  monkeypatch.setattr(transformer, "dots_saveable_but_rank", lambda r: jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
  plain, plain_saved, plain_bytes = grads("dots")
  for g in (ours, plain):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(b).max())), g, none)
  # The outputs of q, k, v, o, gate, up, down per token and layer (float32): the projections' and,
  # of the same sizes, (x A) B's (the backward needs all but the last one's, whose output is only added).
  out_dims = cfg.n_heads * cfg.head_dim + 2 * cfg.n_kv_heads * cfg.head_dim + cfg.d_model + 2 * cfg.d_ff + cfg.d_model
  outputs = cfg.n_layers * B * T * out_dims * 4
  assert plain_saved - ours_saved >= 0.75 * outputs  # the low-rank products: recomputed
  assert ours_saved - full_saved >= 0.75 * outputs  # the projections' outputs: still saved
  assert plain_bytes - ours_bytes >= 0.5 * outputs


def _merged_np(params, adapters, scale):
  """W + s A B per adapted projection in NumPy float64 (an independent `lora.merge`)."""
  out = {}
  for name, k in L.IN_DIMS.items():
    w = np.asarray(params["layers"][name], np.float64)
    if f"{name}_lora_a" in adapters["layers"]:
      a = np.asarray(adapters["layers"][f"{name}_lora_a"], np.float64)
      b = np.asarray(adapters["layers"][f"{name}_lora_b"], np.float64)
      ab = np.stack([a[l].reshape(-1, a.shape[-1]) @ b[l].reshape(b.shape[1], -1) for l in range(a.shape[0])])
      w = w + scale * ab.reshape(w.shape)
    out[name] = w
  return out


def test_merge_combined_is_w_plus_scaled_a_b_on_the_combined_tree():
  """The sampler's merge of the tree the model runs (B already scaled by `combine`) is `lora.merge` of
  the base and adapters, and W + s A B in float64; projections without adapters are untouched."""
  params = M.init_params(jax.random.key(0), CFG, std=0.2)
  lc = L.LoRAConfig(rank=4, alpha=8.0, targets="q,o,down")
  ad = L.init_adapters(jax.random.key(1), CFG, lc)
  ad = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.key(2), x.shape), ad)
  got = L.merge_combined(L.combine(params, ad, lc.scale), jnp.float32)
  assert set(got["layers"]) == set(params["layers"]) and got["embed"] is params["embed"]
  want, ref = L.merge(params, ad, lc.scale), _merged_np(params, ad, lc.scale)
  for name in L.IN_DIMS:
    np.testing.assert_allclose(np.asarray(got["layers"][name]), ref[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(got["layers"][name]), np.asarray(want["layers"][name]), rtol=1e-6, atol=1e-7)
  assert np.abs(ref["wq"] - np.asarray(params["layers"]["wq"])).max() > 0.1  # the adapters matter
  assert all(got["layers"][n] is params["layers"][n] for n in ("wk", "wv", "w_gate", "w_up"))
  bf = L.merge_combined(L.combine(params, ad, lc.scale), jnp.bfloat16)["layers"]["w_down"]
  assert bf.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(bf, np.float64), ref["w_down"], rtol=2 ** -8, atol=1e-6)
  assert L.merge_combined(params, jnp.float32) is params  # no adapters: nothing to merge


def _greedy(policy, scfg, cfg):
  from r1jax.sampling import sampler as S
  from r1jax.sampling import sampling_state
  rng = np.random.default_rng(3)
  prompts = [list(rng.integers(1, cfg.vocab_size, size=n)) for n in (5, 9, 3)]
  toks, mask = S.pad_prompts(prompts, scfg.prompt_buckets, pad_id=0)
  out = jax.device_get(S.generate(policy, toks, mask, jax.random.key(1), cfg, scfg))
  dparams, _ = sampling_state.prefill(policy, toks, mask, cfg, scfg, 4)  # the weights it decodes with
  layers = dparams["layers"]  # one dict per layer (cfg.unroll_decode): stacked again
  return prompts, out, jax.tree.map(lambda *a: jnp.stack(a), *layers) if isinstance(layers, list) else layers


@pytest.mark.parametrize("fuse", [False, pytest.param(True, marks=pytest.mark.slow)])  # CI time
def test_sampler_decodes_with_the_adapters_merged(fuse):
  """sampling.merge_lora: generation reads W + A sB (no adapter left beside W, fused q/k/v and gate/up
  too), draws the unmerged model's greedy tokens with its log-probs to 1e-5 (float32), and those are
  the teacher-forced argmax of the weights W + s A B written out (`_effective`)."""
  from r1jax.sampling import sampler as S
  params = M.init_params(jax.random.key(0), CFG, std=0.2)
  ad = _trained_adapters()
  policy = L.combine(params, ad, LCFG.scale)
  scfg = S.SamplingConfig(max_new_tokens=10, temperature=0.0, prompt_buckets=(16,), fuse_projections=fuse)
  prompts, on, layers = _greedy(policy, scfg, CFG)
  _, off, unmerged = _greedy(policy, dataclasses.replace(scfg, merge_lora=False), CFG)
  assert not any("_lora_" in k for k in layers) and sum("_lora_" in k for k in unmerged) == 14
  ref = _merged_np(params, ad, LCFG.scale)
  if fuse:
    np.testing.assert_allclose(np.asarray(layers["w_qkv"]), np.concatenate([ref[n] for n in ("wq", "wk", "wv")], -2),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layers["w_gate_up"]), np.concatenate([ref["w_gate"], ref["w_up"]], -1),
                               rtol=1e-5, atol=1e-6)
  for name in L.IN_DIMS:
    if name in layers:
      np.testing.assert_allclose(np.asarray(layers[name]), ref[name], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(on["tokens"], off["tokens"])
  np.testing.assert_allclose(on["logp"], off["logp"], atol=1e-5)
  eff = _effective(params, ad, LCFG.scale)
  for i, p in enumerate(prompts):
    seq = list(p) + list(on["tokens"][i])
    logits = np.asarray(M.forward(eff, jnp.asarray([seq]), jnp.arange(len(seq))[None], CFG)[0][0])
    np.testing.assert_array_equal(on["tokens"][i], logits[len(p) - 1:len(seq) - 1].argmax(-1))
  base = jax.device_get(S.generate(params, *S.pad_prompts(prompts, (16,), 0), jax.random.key(1), CFG, scfg))
  assert (base["tokens"] != on["tokens"]).any()  # the adapters change what is drawn


@pytest.mark.slow  # the full suite's (CI time): test_rollout_weights checks the int8 base's projections are kept
def test_sampler_keeps_the_adapters_beside_an_int8_base():
  """An int8 base is not merged (that would store its projections in the compute dtype): the sampler
  decodes with the adapters beside W_int8, as with merge_lora off."""
  from r1jax.sampling import sampler as S
  params = M.init_params(jax.random.key(0), CFG, std=0.2)
  lc = L.LoRAConfig(rank=4, alpha=8.0, base_dtype="int8")
  policy = L.combine(L.frozen_base(params, lc), _trained_adapters(), lc.scale)
  scfg = S.SamplingConfig(max_new_tokens=10, temperature=0.0, prompt_buckets=(16,))
  _, on, layers = _greedy(policy, scfg, CFG)
  _, off, _ = _greedy(policy, dataclasses.replace(scfg, merge_lora=False), CFG)
  assert layers["wq"].dtype == jnp.int8 and sum("_lora_" in k for k in layers) == 14
  np.testing.assert_array_equal(on["tokens"], off["tokens"])
  np.testing.assert_array_equal(on["logp"], off["logp"])
