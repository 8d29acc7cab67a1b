"""Scaling over devices: every rules table's GRPO update equals the un-sharded one, two CPU
processes joined by jax.distributed compute the one-process step, and a train state saved on 2
devices resumes on 1 and on 4."""
import os
import pathlib
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import checkpoint as ckpt_lib
from r1jax import checkpoint_store
from r1jax import distributed
from r1jax import pipelines
from r1jax import model as M
from r1jax import sharding as S
from r1jax.rl import step as TS
from r1jax.rl.config import GRPOConfig

import distributed_grpo_worker as worker

REPO = pathlib.Path(__file__).resolve().parents[1]
CFG = M.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64)
R, P, N = 8, 5, 6
OPT = TS.OptimConfig(learning_rate=1e-3)
GRPO = GRPOConfig(num_generations=4, beta=0.04, max_completion_length=N)


def _batch():
  rng = np.random.default_rng(0)
  mask = np.ones((R, P + N), bool)
  mask[::2, :2] = False  # left-padded prompts
  return {"tokens": rng.integers(1, CFG.vocab_size, (R, P + N)).astype(np.int32), "mask": mask,
          "completion_mask": np.ones((R, N), np.float32),
          "old_logp": rng.normal(-4, 0.3, (R, N)).astype(np.float32),
          "ref_logp": rng.normal(-4, 0.3, (R, N)).astype(np.float32), "adv": rng.normal(0, 1, R).astype(np.float32)}


@pytest.fixture(scope="module")
def unsharded_step():
  """Params and loss after one GRPO update on one device, no shardings given."""
  params = M.init_sharded(jax.random.key(0), CFG, S.make_mesh((1, 1, 1), jax.devices()[:1]))
  state, m = TS.make_grpo_step(CFG, GRPO, OPT, 1.0)(TS.init_state(params, TS.make_optimizer(OPT)), _batch())
  return jax.device_get(state.params), float(m["loss"])


# Hand-written placements on a (data, fsdp, tensor) = (2, 2, 2) mesh, independent of logical_to_spec.
EXPECTED = {
    "fsdp": {"embed": jax.sharding.PartitionSpec("tensor", "fsdp"),
             "lm_head": jax.sharding.PartitionSpec("fsdp", "tensor"),
             "layers/wq": jax.sharding.PartitionSpec(None, "fsdp", "tensor", None),
             "layers/w_down": jax.sharding.PartitionSpec(None, "tensor", "fsdp")},
    "tensor": {"embed": jax.sharding.PartitionSpec("tensor", None),
               "lm_head": jax.sharding.PartitionSpec(None, "tensor"),
               "layers/wq": jax.sharding.PartitionSpec(None, None, "tensor", None),
               "layers/w_down": jax.sharding.PartitionSpec(None, "tensor", None)},
    "data": {},  # every parameter whole on every device
}


def _specs(tree):
  return {checkpoint_store.path_str(p): x.sharding.spec for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


# Data parallelism (the plainest table, also under tests/test_sharding.py) in the slow tier (CI time).
@pytest.mark.parametrize("rules", [pytest.param(r, marks=pytest.mark.slow) if r == "data" else r for r in S.RULES])
def test_every_rules_table_updates_as_the_unsharded_step(rules, unsharded_step):
  mesh = S.make_mesh(S.MeshConfig(data=2, fsdp=2, tensor=2, rules=rules))
  with jax.set_mesh(mesh):
    params = M.init_sharded(jax.random.key(0), CFG, mesh, S.rules_table(rules))  # the same numbers
    state = TS.init_state(params, TS.make_optimizer(OPT))
    specs = _specs(state.params)
    for path, spec in EXPECTED[rules].items():
      assert specs[path] == spec, (rules, path)
    if rules == "data":
      assert all(all(a is None for a in s) for s in specs.values())
    # The optimizer state lives where its parameter does (FSDP shards the AdamW moments too).
    moments = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
               if hasattr(s, "mu")]
    assert moments and all(_specs(m.mu) == specs == _specs(m.nu) for m in moments)
    step = TS.make_grpo_step(CFG, GRPO, OPT, 1.0, TS.state_shardings(state), mesh)
    new, m = step(state, TS.shard_batch(_batch(), mesh))
  want_params, want_loss = unsharded_step
  assert _specs(new.params) == specs  # the step keeps the table's placement
  np.testing.assert_allclose(float(m["loss"]), want_loss, rtol=1e-5, atol=1e-7)
  # Same tolerance as the grad-accum mesh test: reordered float32 sums over <= 4 shards.
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), y, atol=2e-6), new.params, want_params)


def test_bad_mesh_settings_name_the_field():
  with pytest.raises(ValueError, match=r"mesh.rules='foo' is not one of \('fsdp', 'data', 'tensor'\)"):
    S.MeshConfig(rules="foo")
  cfg = pipelines.base_config()
  cfg.mesh.rules = "foo"
  with pytest.raises(ValueError, match=r"mesh.rules='foo' is not one of"):
    pipelines.validate(cfg)
  with pytest.raises(ValueError, match=r"mesh.data=2, mesh.fsdp=2, mesh.tensor=1 needs 4 devices, but 8 are "
                                       r"available; the sizes must multiply to 8"):
    S.MeshConfig(data=2, fsdp=2).shape(8)
  env = {distributed.ENV_COORDINATOR: "127.0.0.1:1234", distributed.ENV_NUM_PROCESSES: "2"}
  with pytest.raises(ValueError, match="R1JAX_PROCESS_ID='' must be a non-negative integer"):
    distributed.process_args(env)
  with pytest.raises(ValueError, match=r"R1JAX_PROCESS_ID=2 must lie in \[0, R1JAX_NUM_PROCESSES=2\)"):
    distributed.process_args(env | {distributed.ENV_PROCESS_ID: "2"})
  assert distributed.process_args({}) == {}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # the full suite's (CI time)
def test_two_processes_compute_the_one_process_step(tmp_path):
  """tpu_scripts/launch_local_gpus.sh starts two CPU processes of 2 devices each; joined by
  jax.distributed (gloo collectives) they run the GRPO step on one (1, 4, 1) mesh, each feeding
  only its own prompts. Sampled tokens, reference log-probs, loss and updated params equal the
  same step in this process on 4 devices."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("R1JAX_")} | {
      # Compiled as this process is (tests/conftest.py's LLVM level), so the two runs differ only by the
      # all-reduce's summation order.
      "JAX_PLATFORMS": "cpu", "NUM_PROCESSES": "2",
      "XLA_FLAGS": " ".join(["--xla_force_host_platform_device_count=2"] + [
          f for f in os.environ.get("XLA_FLAGS", "").split() if f.startswith("--xla_backend_optimization_level")]),
      "COORDINATOR_PORT": str(_free_port()), "PYTHON": sys.executable,
      "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
  cmd = [str(REPO / "tpu_scripts" / "launch_local_gpus.sh"), str(REPO / "tests" / "distributed_grpo_worker.py"),
         "--out", str(tmp_path), "--rules", "fsdp"]
  proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
  try:
    out, _ = proc.communicate(timeout=240)
  finally:
    if proc.poll() is None:  # the launcher and both workers share its process group
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  assert proc.returncode == 0, out[-3000:]
  runs = [dict(np.load(tmp_path / f"fsdp_p{i}.npz")) for i in range(2)]
  for r in runs:
    assert int(r["processes"]) == 2 and int(r["local_devices"]) == 2
  one_process = worker.grpo_step(S.make_mesh(worker.CASES["fsdp"], jax.devices()[:4]), "fsdp")
  unsharded = worker.grpo_step(S.make_mesh((1, 1, 1), jax.devices()[:1]), "fsdp")
  # Parameters really are split 4 ways over both processes' devices (wq's model dimension).
  L, D, H, K = M.param_shapes(worker.CFG)["layers"]["wq"]
  assert tuple(runs[0]["shard/layers/wq"]) == (L, D // 4, H, K)
  for k in one_process:
    if k.startswith(("params/", "tokens", "ref_logp", "loss", "grad_norm")):
      for r in runs:  # both processes hold the same gathered result
        np.testing.assert_array_equal(r[k], runs[0][k], err_msg=k)
      # gloo's cross-process all-reduce sums in another order than the in-process one: values
      # move by float32 rounding (parameters by <= 4e-9 observed, 4e-6 of the step size lr);
      # gradients from one process's rows only would move them by ~lr.
      np.testing.assert_allclose(runs[0][k], one_process[k], rtol=1e-6, atol=1e-8, err_msg=k)
  # Against one device: the sampled tokens are the same and the log-probs, loss and gradient norm
  # agree to float32 reordering. (Parameters are compared with the un-sharded step by the rules
  # test: here the reference equals the policy, so the KL gradient is 0 and some weights' gradients
  # are rounding-sized, where AdamW's first step, lr * g / (|g| + eps), is ill-conditioned.)
  np.testing.assert_array_equal(runs[0]["tokens"], unsharded["tokens"])
  for k in ("ref_logp", "loss", "grad_norm"):
    np.testing.assert_allclose(runs[0][k], unsharded[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_launcher_stops_the_others_when_one_process_fails(tmp_path):
  """Process 1 exits with an error once process 0 runs; process 0 would sleep a minute: the
  launcher stops it and fails. Each process is told its place through the R1JAX_* variables."""
  script = tmp_path / "one_fails.py"
  script.write_text("import os, sys, time\n"
                    "i = os.environ['R1JAX_PROCESS_ID']\n"
                    "open(i + '.tmp', 'w').write(os.environ['R1JAX_NUM_PROCESSES'] + ' ' + "
                    "os.environ['R1JAX_COORDINATOR_ADDRESS'] + ' ' + os.environ['CUDA_VISIBLE_DEVICES'])\n"
                    "os.rename(i + '.tmp', i)  # whole, or not at all\n"
                    "if i == '1':\n"
                    "  while not os.path.exists('0'): time.sleep(0.01)  # process 0 is running\n"
                    "  sys.exit(3)\n"
                    "time.sleep(60)\n")
  env = dict(os.environ, NUM_PROCESSES="2", COORDINATOR_PORT="12345", PYTHON=sys.executable)
  p = subprocess.run([str(REPO / "tpu_scripts" / "launch_local_gpus.sh"), str(script)], env=env, cwd=tmp_path,
                     capture_output=True, text=True, timeout=30)
  assert p.returncode == 1, p.stderr
  assert [(tmp_path / str(i)).read_text() for i in range(2)] == ["2 127.0.0.1:12345 0", "2 127.0.0.1:12345 1"]


def _train_state(devices, params=None):
  """A GRPO train state (params, AdamW moments after one step, step counter) on a 1-D fsdp mesh."""
  mesh = S.make_mesh(S.MeshConfig(fsdp=-1), devices)
  shardings = M.param_shardings(CFG, mesh)
  with jax.set_mesh(mesh):
    params = jax.device_put(M.init_params(jax.random.key(3), CFG, std=0.2) if params is None else params, shardings)
    state = TS.init_state(params, TS.make_optimizer(OPT))
  return mesh, state


@pytest.mark.slow  # the full suite's (CI time)
def test_checkpoint_saved_on_2_devices_restores_on_1_and_4(tmp_path):
  mesh2, state = _train_state(jax.devices()[:2])
  with jax.set_mesh(mesh2):
    step = TS.make_grpo_step(CFG, GRPO, OPT, 1.0, TS.state_shardings(state), mesh2)
    state, _ = step(state, TS.shard_batch(_batch(), mesh2))
  assert state.params["layers"]["wq"].sharding.shard_shape(state.params["layers"]["wq"].shape)[1] == 16
  saved = jax.device_get(state)
  with ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(tmp_path), async_save=False)) as ck:
    ck.save(1, state, {"step": 1}, force=True)
  for n in (1, 4):
    mesh, like = _train_state(jax.devices()[:n])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    with ckpt_lib.Checkpointer(ckpt_lib.CheckpointConfig(str(tmp_path), async_save=False)) as ck:
      restored, meta = ck.restore(None, abstract)
    assert meta == {"step": 1} and int(restored.step) == 1
    for x, want in zip(jax.tree.leaves(restored), jax.tree.leaves(abstract)):
      assert x.sharding == want.sharding and len(x.sharding.device_set) == n
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), saved)
