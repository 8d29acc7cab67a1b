"""Sharding on 8 simulated CPU devices: sharded forward equals the un-sharded one, parameters sit
exactly where the rules table says, checkpoints load straight into those shardings."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from r1jax.model import hf
from r1jax.model import hf_export
from r1jax import model as M
from r1jax import sharding as S

# Every dimension but kv heads (2) divides every mesh axis, so tensor=4 exercises the fallback.
CFG = M.ModelConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=8, n_kv_heads=2, head_dim=8, d_ff=128,
                    qkv_bias=True)
MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 2, 4)]
B, T = 8, 16


def _single_device_mesh():
  return S.make_mesh((1, 1, 1), devices=jax.devices()[:1])


def _inputs():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, CFG.vocab_size, size=(B, T)).astype(np.int32)
  mask = np.arange(T)[None] >= rng.integers(0, T // 2, size=B)[:, None]  # left padding
  return tokens, mask, np.asarray(M.positions_from_mask(mask))


def _forward(cfg):
  return jax.jit(lambda p, t, q, m: M.forward(p, t, q, cfg, mask_BxT=m)[0])


def _max_rel_err(got, want):
  return np.abs(np.asarray(got) - want).max() / np.abs(want).max()


def _untie(params):
  """The tied model's parameters: the same tree without lm_head (logits use embed.T)."""
  return {k: v for k, v in params.items() if k != "lm_head"}


@pytest.fixture(scope="module")
def reference():
  """Un-sharded parameters (one device) and their logits, untied and tied."""
  params = M.init_sharded(jax.random.key(0), CFG, _single_device_mesh())
  tokens, mask, pos = _inputs()
  logits = {tie: np.asarray(_forward(dataclasses.replace(CFG, tie_embeddings=tie))(
      _untie(params) if tie else params, tokens, pos, mask)) for tie in (False, True)}
  return params, logits


@pytest.fixture(scope="module", params=MESHES, ids=str)
def sharded(request):
  """(mesh shape, mesh, parameters materialized sharded on it by `init_sharded`)."""
  mesh = S.make_mesh(request.param)
  return request.param, mesh, M.init_sharded(jax.random.key(0), CFG, mesh)


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_sharded_forward_equals_single_device(sharded, reference, tie):
  _, mesh, params = sharded
  ref_params, ref_logits = reference
  # Sharded random init draws the same numbers as the un-sharded one.
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  cfg = dataclasses.replace(CFG, tie_embeddings=tie)
  tokens, mask, pos = _inputs()
  with jax.set_mesh(mesh):
    batch = NamedSharding(mesh, S.logical_to_spec(("batch", "length"), (B, T), mesh))
    assert batch.spec == P(("data", "fsdp"), None)
    args = [jax.device_put(x, batch) for x in (tokens, pos, mask)]
    got = _forward(cfg)(_untie(params) if tie else params, *args)
  want_spec = S.logical_to_spec(("batch", "length", "act_vocab"), got.shape, mesh)
  assert got.sharding.is_equivalent_to(NamedSharding(mesh, want_spec), got.ndim)
  # Same math, different reduction order: contractions over D, F, heads and vocab are split into
  # partial sums over <= 4 shards and all-reduced. Each reordering moves a float32 sum by a few
  # ulps (~1e-7 relative); through 2 layers, softmax and the output projection that stays below
  # 1e-6 of the logit scale (observed <= 5e-7), so 1e-5 leaves headroom yet catches any real
  # error (a wrong collective or mask moves logits by >= 1e-3 of their scale).
  assert _max_rel_err(got, ref_logits[tie]) < 1e-5


def _expected_specs(mesh_shape):
  """Hand-written placements under DEFAULT_RULES (independent of logical_to_spec)."""
  common = {
      ("embed",): P("tensor", "fsdp"), ("lm_head",): P("fsdp", "tensor"), ("final_norm",): P(None),
      ("layers", "attn_norm"): P(None, None),
      ("layers", "wq"): P(None, "fsdp", "tensor", None), ("layers", "wo"): P(None, "tensor", None, "fsdp"),
      ("layers", "w_gate"): P(None, "fsdp", "tensor"), ("layers", "w_down"): P(None, "tensor", "fsdp"),
      ("layers", "bq"): P(None, "tensor", None),
  }
  if mesh_shape == (1, 2, 4):  # 2 kv heads do not divide tensor=4: replicated over it
    common |= {("layers", "wk"): P(None, "fsdp", None, None), ("layers", "bk"): P(None, None, None)}
  else:
    common |= {("layers", "wk"): P(None, "fsdp", "tensor", None), ("layers", "bk"): P(None, "tensor", None)}
  return common


def _leaf(tree, key):
  for k in key:
    tree = tree[k]
  return tree


def test_param_shardings_follow_the_rules_table(sharded):
  mesh_shape, mesh, params = sharded
  axes = M.param_axes(CFG)
  is_axes = lambda x: isinstance(x, tuple)
  for (path, ax), arr in zip(jax.tree.flatten_with_path(axes, is_leaf=is_axes)[0], jax.tree.leaves(params)):
    assert arr.sharding.spec == S.logical_to_spec(ax, arr.shape, mesh, S.DEFAULT_RULES), path
  for key, spec in _expected_specs(mesh_shape).items():
    assert _leaf(params, key).sharding.spec == spec, (key, mesh_shape)
  if mesh_shape == (2, 2, 2):
    # Real partitioning, not just a label: each device holds a quarter of wq (fsdp x tensor).
    L, D, N, H = M.param_shapes(CFG)["layers"]["wq"]
    assert {s.data.shape for s in params["layers"]["wq"].addressable_shards} == {(L, D // 2, N // 2, H)}


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (1, 2, 4)], ids=str)
@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_load_hf_checkpoint_onto_mesh(tmp_path, mesh_shape, param_dtype):
  """Every device's shard of every loaded parameter is the right slice of the saved values."""
  saved = M.init_params(jax.random.key(1), CFG, std=0.3)
  hf_export.save_hf_checkpoint(saved, CFG, tmp_path)
  mesh = S.make_mesh(mesh_shape)
  cfg, params = hf.load_hf_checkpoint(tmp_path, mesh=mesh, param_dtype=param_dtype)
  assert cfg == dataclasses.replace(CFG, param_dtype=param_dtype)
  want_shardings = M.param_shardings(cfg, mesh)
  for arr, want_sharding, full in zip(jax.tree.leaves(params), jax.tree.leaves(want_shardings),
                                      jax.tree.leaves(saved)):
    assert arr.sharding == want_sharding
    assert arr.dtype == jnp.dtype(param_dtype)
    full = np.asarray(full.astype(param_dtype))
    for shard in arr.addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), full[shard.index])
  assert _leaf(params, ("layers", "wq")).sharding.spec == _expected_specs(mesh_shape)[("layers", "wq")]
  assert _leaf(params, ("layers", "wk")).sharding.spec == _expected_specs(mesh_shape)[("layers", "wk")]
  # Default placement: one device, fully replicated.
  _, single = hf.load_hf_checkpoint(tmp_path, param_dtype=param_dtype)
  assert all(len(a.sharding.device_set) == 1 for a in jax.tree.leaves(single))
  jax.tree.map(np.testing.assert_array_equal, single, params)


def test_mesh_config_resolves_and_validates():
  assert S.MeshConfig(data=2, fsdp=-1, tensor=2).shape(8) == (2, 2, 2)
  assert S.MeshConfig().shape(8) == (1, 8, 1)
  mesh = S.make_mesh((2, 2, 2))
  assert mesh.axis_names == S.MESH_AXES and mesh.devices.shape == (2, 2, 2)
  for bad, msg in [
      (S.MeshConfig(data=0), "mesh.data=0 is invalid"),
      (S.MeshConfig(tensor=-2), "mesh.tensor=-2 is invalid"),
      (S.MeshConfig(data=-1, fsdp=-1), "at most one axis may be -1"),
      (S.MeshConfig(data=3, fsdp=-1), "8 devices are not divisible by 3"),
      (S.MeshConfig(data=2, fsdp=2, tensor=1), r"needs 4 devices, but 8 are available"),
  ]:
    with pytest.raises(ValueError, match=msg):
      bad.shape(8)
  with pytest.raises(ValueError, match="needs 16 devices"):
    S.make_mesh((2, 4, 2))


def test_logical_to_spec_rejects_unknown_axis():
  with pytest.raises(KeyError, match="'experts' has no rule"):
    S.logical_to_spec(("experts", "embed"))
