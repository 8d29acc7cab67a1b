"""Checkpoint round trips on a simulated (2, 2, 2) mesh, restore onto other meshes, averaging."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from r1jax import checkpoint as ckpt
from r1jax import checkpoint_average
from r1jax import checkpoint_store
from r1jax import errors

AXES = ("data", "fsdp", "tensor")


def make_mesh(shape):
  return jax.sharding.Mesh(np.array(jax.devices()).reshape(shape), AXES)


SPECS = {  # leaf -> PartitionSpec on the save mesh
    "params/w": P("fsdp", "tensor"),
    "params/emb": P(("data", "fsdp"), None),
    "params/b": P("tensor"),
    "opt/mu": P("fsdp", "tensor"),
    "step": P(),
    "key": P(),
}


def make_state(mesh, seed: int):
  """A train-state-like pytree: bf16/f32 params, f32 moments, int32 step, a typed PRNG key."""
  rng = np.random.default_rng(seed)
  put = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
  return {
      "params": {
          "w": put(jnp.asarray(rng.standard_normal((8, 4)), jnp.bfloat16), SPECS["params/w"]),
          "emb": put(jnp.asarray(rng.standard_normal((16, 6)), jnp.float32), SPECS["params/emb"]),
          "b": put(jnp.asarray(rng.standard_normal((6,)), jnp.float32), SPECS["params/b"]),
      },
      "opt": {"mu": put(jnp.asarray(rng.standard_normal((8, 4)), jnp.float32), SPECS["opt/mu"])},
      "step": put(jnp.int32(100 + seed), SPECS["step"]),
      "key": put(jax.random.key(seed), SPECS["key"]),
  }


def abstract(state, mesh=None, specs=None):
  """ShapeDtypeStructs of `state`, on its own shardings or on `mesh` with `specs` (path -> spec)."""
  def f(path, x):
    sharding = x.sharding if mesh is None else NamedSharding(mesh, specs[checkpoint_store.path_str(path)])
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
  return jax.tree_util.tree_map_with_path(f, state)


def host(x):
  """NumPy copy of a leaf (key data for typed keys)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  return np.asarray(jax.device_get(x))


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    assert x.dtype == y.dtype, checkpoint_store.path_str(path)
    np.testing.assert_array_equal(host(x), host(y), err_msg=checkpoint_store.path_str(path))


@pytest.fixture(scope="module")
def mesh():
  return make_mesh((2, 2, 2))


def saved_run(directory, mesh, steps, keep=10, async_save=False):
  """Save make_state(mesh, seed=s) as step s for each s; returns {step: state}."""
  states = {}
  with ckpt.Checkpointer(ckpt.CheckpointConfig(str(directory), save_every=1, keep=keep,
                                               async_save=async_save)) as c:
    for s in steps:
      states[s] = make_state(mesh, s)
      assert c.save(s, states[s], {"step": s, "data_position": [s, 7], "seed": 0})
    c.wait()
  return states


def test_round_trip_exact_with_requested_shardings(tmp_path, mesh):
  state = make_state(mesh, 1)
  meta = {"step": 1, "data_position": {"epoch": 0, "index": 48}, "seed": 3,
          "config": {"grpo": {"beta": 0.0, "loss_type": "dr_grpo"}}}
  cfg = ckpt.CheckpointConfig(str(tmp_path), save_every=1, keep=2, async_save=False)
  with ckpt.Checkpointer(cfg) as c:
    c.save(1, state, meta)
  target = abstract(state)
  with ckpt.Checkpointer(cfg) as c:
    assert c.latest_step() == 1
    got, got_meta = c.restore(None, target)
  assert_trees_equal(got, state)
  assert got_meta == meta
  for x, t in zip(jax.tree.leaves(got), jax.tree.leaves(target)):
    assert x.sharding == t.sharding
  assert got["key"].dtype == state["key"].dtype  # typed key comes back typed
  np.testing.assert_array_equal(host(jax.random.uniform(got["key"], (3,))),
                                host(jax.random.uniform(state["key"], (3,))))


def test_restore_onto_other_mesh(tmp_path, mesh):
  states = saved_run(tmp_path, mesh, [1])
  other = make_mesh((8, 1, 1))
  specs = {"params/w": P("data", None), "params/emb": P(None, "tensor"), "params/b": P(),
           "opt/mu": P(("data", "fsdp"), None), "step": P(), "key": P()}
  target = abstract(states[1], other, specs)
  with ckpt.Checkpointer(ckpt.CheckpointConfig(str(tmp_path))) as c:
    got, _ = c.restore(1, target)
  assert_trees_equal(got, states[1])
  assert got["params"]["w"].sharding == NamedSharding(other, P("data", None))
  assert got["params"]["w"].addressable_shards[0].data.shape == (1, 4)


def test_save_every_and_keep(tmp_path, mesh):
  cfg = ckpt.CheckpointConfig(str(tmp_path), save_every=2, keep=2, async_save=False)
  state = make_state(mesh, 0)
  with ckpt.Checkpointer(cfg) as c:
    saved = [s for s in range(1, 8) if c.save(s, state, {"step": s})]
    assert c.save(9, state, {"step": 9}, force=True)
    c.wait()
    assert saved == [2, 4, 6]
    assert c.all_steps() == [6, 9]
  assert sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit()) == [6, 9]


def test_async_save_then_wait_then_restore(tmp_path, mesh):
  states = saved_run(tmp_path, mesh, [3, 5], async_save=True)
  with ckpt.Checkpointer(ckpt.CheckpointConfig(str(tmp_path), async_save=True)) as c:
    assert c.latest_step() == 5
    got, meta = c.restore(3, abstract(states[3]))
  assert_trees_equal(got, states[3])
  assert meta == {"step": 3, "data_position": [3, 7], "seed": 0}


def test_unfinished_save_leaves_previous_step_restorable(tmp_path, mesh):
  states = saved_run(tmp_path, mesh, [1, 2])
  # What a kill mid-save leaves behind: step 3 still in its temporary folder, half written.
  tmp = tmp_path / "3.orbax-checkpoint-tmp"
  shutil.copytree(tmp_path / "2", tmp)
  for f in tmp.rglob("*"):
    if f.is_file() and f.name != "_CHECKPOINT_METADATA":
      f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
  # A reader that does not clean up (averaging) ignores it ...
  assert checkpoint_average.average_checkpoints(tmp_path, tmp_path / "avg", abstract(states[2]), last_k=1) == [2]
  assert tmp.exists()
  # ... and reopening the run directory resumes from the last complete step and removes it.
  with ckpt.Checkpointer(ckpt.CheckpointConfig(str(tmp_path))) as c:
    assert c.latest_step() == 2
    got, meta = c.restore(None, abstract(states[2]))
  assert_trees_equal(got, states[2])
  assert meta["step"] == 2
  assert not tmp.exists()


KILLED_MID_SAVE = """
import os, signal
import jax, jax.numpy as jnp
from r1jax import checkpoint as ckpt
from r1jax import errors
c = ckpt.Checkpointer(ckpt.CheckpointConfig({directory!r}, save_every=1, keep=3, async_save=True))
w = jnp.ones((2048, 2048), jnp.float32)
c.save(1, {{"w": w}}, {{"step": 1}})
c.wait()
c.save(2, {{"w": w * 2}}, {{"step": 2}})  # returns while the background write is running
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_process_killed_during_async_save(tmp_path):
  repo = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
             PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
  code = textwrap.dedent(KILLED_MID_SAVE.format(directory=str(tmp_path)))
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=120)
  assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
  unfinished = [d for d in os.listdir(tmp_path) if "orbax-checkpoint-tmp" in d]
  mesh = make_mesh((8, 1, 1))
  target = {"w": jax.ShapeDtypeStruct((2048, 2048), jnp.float32, sharding=NamedSharding(mesh, P("data")))}
  with ckpt.Checkpointer(ckpt.CheckpointConfig(str(tmp_path))) as c:
    # The kill may land before step 2's write began (on a loaded machine), mid-write (its
    # temporary directory left behind), or, rarely, after it finished: never is a half-written
    # step the latest, and the latest restores whole.
    expected = c.latest_step()
    assert expected == 1 if unfinished else expected in (1, 2), (expected, unfinished)
    got, meta = c.restore(None, target)
  assert meta == {"step": expected}
  np.testing.assert_array_equal(host(got["w"]), np.full((2048, 2048), expected, np.float32))


def test_average_three_checkpoints_matches_numpy(tmp_path, mesh):
  states = saved_run(tmp_path / "run", mesh, [10, 20, 30, 40])
  target = abstract(states[10])
  used = checkpoint_average.average_checkpoints(tmp_path / "run", tmp_path / "avg", target, steps=[30, 10, 20])
  assert used == [10, 20, 30]
  with ckpt.Checkpointer(ckpt.CheckpointConfig(str(tmp_path / "avg"))) as c:
    assert c.all_steps() == [30]
    got, meta = c.restore(30, target)
  assert meta["averaged_steps"] == [10, 20, 30] and meta["step"] == 30
  for name in ("w", "emb", "b"):
    ref = np.mean([host(states[s]["params"][name]).astype(np.float64) for s in used], axis=0)
    x = got["params"][name]
    assert x.dtype == states[10]["params"][name].dtype
    assert x.sharding == target["params"][name].sharding
    if x.dtype == jnp.bfloat16:
      # A float32 mean of bf16 values, rounded once to bf16: within half a bf16 ulp (2^-8 rel).
      np.testing.assert_allclose(host(x).astype(np.float64), ref, rtol=2.0 ** -8, atol=0)
      assert not np.array_equal(host(x), host(states[30]["params"][name]))
    else:
      np.testing.assert_allclose(host(x), ref, rtol=1e-6, atol=1e-7)
  ref_mu = np.mean([host(states[s]["opt"]["mu"]).astype(np.float64) for s in used], axis=0)
  np.testing.assert_allclose(host(got["opt"]["mu"]), ref_mu, rtol=1e-6, atol=1e-7)
  # Integer and key leaves come from the last averaged step.
  assert int(got["step"]) == 130
  np.testing.assert_array_equal(host(got["key"]), host(states[30]["key"]))


def test_average_last_k_and_select(tmp_path, mesh):
  states = saved_run(tmp_path / "run", mesh, [1, 2, 3, 4])
  target = abstract(states[1])
  used = checkpoint_average.average_checkpoints(tmp_path / "run", tmp_path / "avg", target, last_k=2,
                                                select=lambda path: path.startswith("params/"))
  assert used == [3, 4]
  with ckpt.Checkpointer(ckpt.CheckpointConfig(str(tmp_path / "avg"))) as c:
    got, _ = c.restore(4, target)
  ref = (host(states[3]["params"]["emb"]).astype(np.float64) + host(states[4]["params"]["emb"])) / 2
  np.testing.assert_allclose(host(got["params"]["emb"]), ref, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(host(got["opt"]["mu"]), host(states[4]["opt"]["mu"]))  # not selected
  assert int(got["step"]) == 104


def test_errors(tmp_path, mesh):
  states = saved_run(tmp_path / "run", mesh, [1, 2])
  target = abstract(states[1])
  run, avg = tmp_path / "run", tmp_path / "avg"
  with pytest.raises(FileNotFoundError, match=r"step 7 not found in .*run.*available steps: \[1, 2\]"):
    with ckpt.Checkpointer(ckpt.CheckpointConfig(str(run))) as c:
      c.restore(7, target)
  with pytest.raises(FileNotFoundError, match=r"\[5\] not found in .*run.*available steps: \[1, 2\]"):
    checkpoint_average.average_checkpoints(run, avg, target, steps=[1, 5])
  with pytest.raises(ValueError, match="steps is empty"):
    checkpoint_average.average_checkpoints(run, avg, target, steps=[])
  with pytest.raises(ValueError, match="exactly one of"):
    checkpoint_average.average_checkpoints(run, avg, target)
  with pytest.raises(ValueError, match=r"last_k=3 but .* holds only 2"):
    checkpoint_average.average_checkpoints(run, avg, target, last_k=3)
  with pytest.raises(ValueError, match="no floating-point leaf"):
    checkpoint_average.average_checkpoints(run, avg, target, last_k=2, select=lambda p: p == "step")
  with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
    with ckpt.Checkpointer(ckpt.CheckpointConfig(str(tmp_path / "empty"))) as c:
      c.restore(None, target)
  # Mismatched structures: a missing leaf, and a leaf of another shape.
  fewer = {k: v for k, v in target.items() if k != "opt"}
  with pytest.raises(ValueError, match=r"does not match abstract_state.*only in the checkpoint \['opt/mu'\]"):
    checkpoint_average.average_checkpoints(run, avg, fewer, last_k=2)
  wrong = jax.tree.map(lambda x: x, target)
  wrong["params"]["b"] = jax.ShapeDtypeStruct((12,), jnp.float32, sharding=target["params"]["b"].sharding)
  with pytest.raises(ValueError, match=r"'params/b' was saved with shape \(6,\), abstract_state asks for \(12,"):
    with ckpt.Checkpointer(ckpt.CheckpointConfig(str(run))) as c:
      c.restore(2, wrong)
  no_sharding = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target)
  with pytest.raises(ValueError, match="without a sharding"):
    with ckpt.Checkpointer(ckpt.CheckpointConfig(str(run))) as c:
      c.restore(2, no_sharding)
  with pytest.raises(ValueError, match="JSON-serializable"):
    with ckpt.Checkpointer(ckpt.CheckpointConfig(str(run), save_every=1)) as c:
      c.save(3, states[1], {"position": np.arange(3)})
  with pytest.raises(ValueError, match=r"checkpoint.keep=0 must be an int >= 1"):
    ckpt.CheckpointConfig(str(run), keep=0)
  assert not avg.exists() or not any(d.isdigit() for d in os.listdir(avg))


def test_host_memory_cap_chosen_from_state_and_host_and_a_capped_save_restores_exactly(tmp_path, mesh):
  G = 10 ** 9
  assert ckpt.save_cap_gb(57 * G, host_bytes=128 * G) == 32  # 7B state, bf16 moments: capped at a quarter
  assert ckpt.save_cap_gb(20 * G, host_bytes=128 * G) is None  # fits beside everything else: no cap
  assert ckpt.save_cap_gb(1, 3, host_bytes=128 * G) == 3  # given explicitly: always
  with pytest.raises(ValueError, match=r"checkpoint.host_memory_gb=-1 must be an int >= 0"):
    ckpt.CheckpointConfig(str(tmp_path), host_memory_gb=-1)
  states = {}
  with ckpt.Checkpointer(ckpt.CheckpointConfig(str(tmp_path), save_every=1, keep=2, host_memory_gb=1)) as c:
    for s in (1, 2, 3):  # the capped manager replaces the first one at the first save, then is kept
      states[s] = make_state(mesh, s)
      assert c.save(s, states[s], {"step": s})
      assert c.all_steps() == [max(1, s - 1), s][-min(s, 2):]  # synchronous: on disk at return
    assert c._capped == 1
  with ckpt.Checkpointer(ckpt.CheckpointConfig(str(tmp_path))) as c:
    got, meta = c.restore(None, abstract(states[3]))
  assert_trees_equal(got, states[3])
  assert meta["step"] == 3


# ----------------------------------------------------------------------------- damaged checkpoints


def _truncate_array_files(step_dir: pathlib.Path) -> None:
  """Halve the step's array data files (as a full disk or a cut copy leaves them)."""
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]  # OCDBT data
  assert files
  for f in files:
    f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])


DAMAGE = {"truncated_array_files": _truncate_array_files,
          "missing_state": lambda step_dir: shutil.rmtree(step_dir / "state")}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_newest_step_falls_back_to_the_newest_intact_one(tmp_path, mesh, damage, capsys):
  states = saved_run(tmp_path, mesh, [1, 2, 3])
  DAMAGE[damage](tmp_path / "3")
  cfg = ckpt.CheckpointConfig(str(tmp_path), save_every=1, keep=10, async_save=False)
  with ckpt.Checkpointer(cfg) as c:
    assert c.latest_step() == 3
    got, meta, step = c.restore_intact(abstract(states[1]))
    assert step == 2 and meta["step"] == 2 and c.all_steps() == [1, 2]
    assert_trees_equal(got, states[2])
    assert c.save(3, states[3], {"step": 3})  # the damaged step no longer blocks the next save
  said = [l for l in capsys.readouterr().out.splitlines() if "cannot be read" in l]
  assert len(said) == 1 and "step(s) [3]" in said[0] and "resuming from step 2" in said[0], said
  assert (tmp_path / "3.unreadable" / "meta").is_dir()  # kept for inspection
  records = [json.loads(l) for l in (tmp_path / "restores.jsonl").read_text().splitlines()]
  assert [(r["restored"], [u["step"] for u in r["unreadable"]]) for r in records] == [(2, [3])]
  with ckpt.Checkpointer(cfg) as c:
    got, meta, step = c.restore_intact(abstract(states[1]))
  assert step == 3 and meta == {"step": 3}
  assert_trees_equal(got, states[3])


def test_several_damaged_steps_and_none_readable(tmp_path, mesh):
  states = saved_run(tmp_path, mesh, [1, 2, 3])
  _truncate_array_files(tmp_path / "3")
  shutil.rmtree(tmp_path / "2" / "state")
  cfg = ckpt.CheckpointConfig(str(tmp_path), save_every=1, keep=10, async_save=False)
  with ckpt.Checkpointer(cfg) as c:
    got, _, step = c.restore_intact(abstract(states[1]))
  assert step == 1 and sorted(os.listdir(tmp_path)) == ["1", "2.unreadable", "3.unreadable", "restores.jsonl"]
  assert_trees_equal(got, states[1])
  shutil.rmtree(tmp_path / "1" / "state")
  with ckpt.Checkpointer(cfg) as c:
    with pytest.raises(errors.UserError, match=f"checkpoint: {tmp_path}: no step can be read \\(steps \\[1\\]"):
      c.restore_intact(abstract(states[1]))
  assert (tmp_path / "1").is_dir()  # nothing moved when nothing reads


def test_another_tree_is_not_taken_for_damage(tmp_path, mesh):
  """A checkpoint of another shape (another config) stops the restore; no step is set aside."""
  states = saved_run(tmp_path, mesh, [1, 2])
  other = jax.tree.map(lambda x: x, abstract(states[1]))
  other["params"]["b"] = jax.ShapeDtypeStruct((7,), jnp.float32, sharding=other["params"]["b"].sharding)
  with ckpt.Checkpointer(ckpt.CheckpointConfig(str(tmp_path))) as c:
    with pytest.raises(checkpoint_store.StructureError, match="params/b"):
      c.restore_intact(other)
    assert c.all_steps() == [1, 2]
  assert not (tmp_path / "restores.jsonl").exists()


def test_a_kill_during_a_checkpoint_write_resumes_from_the_last_complete_step(tmp_path):
  """The kill of test_process_killed_during_async_save, then what a rerun does: restore_intact
  takes the last complete step whole (a half-written one is never a step, nor set aside), and the
  step the kill interrupted is written again."""
  repo = pathlib.Path(__file__).resolve().parents[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
             PYTHONPATH=os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_MID_SAVE.format(directory=str(tmp_path)))],
                        env=env, capture_output=True, timeout=120)
  assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
  mesh = make_mesh((8, 1, 1))
  target = {"w": jax.ShapeDtypeStruct((2048, 2048), jnp.float32, sharding=NamedSharding(mesh, P("data")))}
  cfg = ckpt.CheckpointConfig(str(tmp_path), save_every=1, keep=3, async_save=False)
  with ckpt.Checkpointer(cfg) as c:
    got, meta, step = c.restore_intact(target)
    np.testing.assert_array_equal(host(got["w"]), np.full((2048, 2048), step, np.float32))
    assert meta == {"step": step} and step in (1, 2)
    if step == 1:
      assert c.save(2, {"w": got["w"] * 2}, {"step": 2})
  assert not any(n.endswith(".unreadable") or "orbax-checkpoint-tmp" in n for n in os.listdir(tmp_path))
  assert not (tmp_path / "restores.jsonl").exists()
  with ckpt.Checkpointer(cfg) as c:
    got, meta, step = c.restore_intact(target)
  assert step == 2 and meta == {"step": 2}
  np.testing.assert_array_equal(host(got["w"]), np.full((2048, 2048), 2, np.float32))


def test_a_resumed_run_logs_each_step_once(tmp_path):
  from r1jax import logger
  for name in ("metrics.jsonl", "samples.jsonl"):
    rows = "".join(json.dumps({"step": s, "x": s}) + "\n" for s in (1, 2, 3, 4, 5))
    (tmp_path / name).write_text(rows + '{"step": 6, "x"')  # a kill mid-line
  log = logger.MetricsLogger(tmp_path, tensorboard=False, resume_step=3)  # the checkpoint restored: step 3
  log.log(4, {"x": 40.0})
  log.log_samples(4, [{"x": 40}])
  log.close()
  for name in ("metrics.jsonl", "samples.jsonl"):
    rows = [json.loads(l) for l in (tmp_path / name).read_text().splitlines()]
    assert [(r["step"], r["x"]) for r in rows] == [(1, 1), (2, 2), (3, 3), (4, 40)], name
