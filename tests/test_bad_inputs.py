"""Bad inputs and faults at every entry point: one line naming the field or file, exit status 2.

The table runs each command line as a user would type it (`python experiments/X.py ARGS`), in
forked children of one process that imported r1jax once (`entry_point_forks.py`): every case
stops in validation or in the work-directory check, before any tokenizer, model or compile. The
silent cases (a NaN learning rate, a changed config, a changed tokenizer) have tests of their own
below; a damaged checkpoint and a kill during a checkpoint's write are in test_checkpoint.py, and
the end-to-end resume over a damaged checkpoint is in the slow tier here.
"""
import fcntl
import gzip
import json
import math
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

import pytest

from r1jax import errors
from r1jax import experiment
from r1jax import pipelines
from r1jax import config_sections
from r1jax import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
EXP = REPO / "experiments"
R1_ZERO, R1, DISTILL, EVALUATE = (str(EXP / f"{n}.py") for n in ("r1_zero", "r1", "distill", "evaluate"))
AHA, LANGUAGE, PRM, MCTS = (str(EXP / f"{n}.py") for n in ("aha", "language", "prm", "mcts"))
QWEN = f"--config={R1_ZERO}:qwen2.5-0.5b"  # a named config for a Hugging Face base
GOOD = '{"question": "What is 1 + 1?", "final": "2"}\n'


def _safetensors(path: pathlib.Path, cut: int = 0) -> None:
  """A one-tensor safetensors file, its last `cut` bytes missing."""
  header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
  data = struct.pack("<Q", len(header)) + header + bytes(16)
  path.write_bytes(data[:len(data) - cut])


def _hf_dir(root: pathlib.Path, name: str, config: str = '{"model_type": "qwen2"}', cut: int = 0,
            weights: bool = True) -> pathlib.Path:
  d = root / name
  d.mkdir()
  (d / "config.json").write_text(config)
  if weights:
    _safetensors(d / "model.safetensors", cut)
  return d


def _make_files(d: pathlib.Path) -> None:
  (d / "good.jsonl").write_text(GOOD * 5)
  (d / "malformed.jsonl").write_text(GOOD + '{"question": "2 + 2", \n' + GOOD)
  (d / "noanswer.jsonl").write_text(GOOD + '{"question": "What is 2 + 2?"}\n' + GOOD)
  (d / "noquestion.jsonl").write_text(GOOD + '{"final": "4"}\n')
  (d / "array.jsonl").write_text('[1, 2]\n' + GOOD)
  (d / "empty.jsonl").write_text("")
  (d / "blank.jsonl").write_text("\n\n  \n")
  (d / "latin1.jsonl").write_bytes(GOOD.encode() + '{"question": "caf\xe9", "final": "1"}\n'.encode("latin-1"))
  (d / "notgz.jsonl.gz").write_text(GOOD * 5)
  whole = gzip.compress((GOOD * 400).encode())
  (d / "truncated.jsonl.gz").write_bytes(whole[:len(whole) // 2])
  (d / "code.jsonl").write_text('{"question": "write f", "tests": []}\n')
  (d / "tok.model").write_bytes(b"not a sentencepiece model")
  (d / "afile").write_text("x")
  _hf_dir(d, "hf_truncated", cut=8)
  _hf_dir(d, "hf_badjson", config="{model_type: qwen2")
  _hf_dir(d, "hf_noweights", weights=False)
  short = _hf_dir(d, "hf_header", weights=False)
  (short / "model.safetensors").write_bytes(struct.pack("<Q", 10 ** 6) + b"{}")
  idx = _hf_dir(d, "hf_index", weights=False)
  (idx / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}}))
  (d / "policy" / "1").mkdir(parents=True)  # a policy directory's shape (a checkpoint step folder)
  (d / "rundir" / "policy" / "1").mkdir(parents=True)
  (d / "rundir" / "config.json").write_text("{}")  # a run's directory holds its resolved config
  (d / "notpolicy").mkdir()
  for name, body in STUB_RUNS.items():  # entry points whose run stops as a diverged run or a bug would
    (d / f"{name}.py").write_text(STUB.format(repo=str(REPO), body=body))
  # A work directory whose checkpoints were made with the default config (its record, a stage).
  cfg = experiment.load_experiment(R1_ZERO).get_config()
  cfg.workdir = str(d / "run")
  workdir_lib.record(cfg, None)
  (d / "run" / "stages").mkdir()


STUB = """import sys
sys.path.insert(0, {repo!r})
from r1jax import experiment
from r1jax.rl import loop as train
from r1jax.evaluation import experiment as eval_experiment


def get_config():
  c = eval_experiment.config()
  c.workdir = "runs/stub"
  return c


def run(cfg):
  {body}


if __name__ == "__main__":
  experiment.main(check=lambda cfg: {{}}, run_fn=run)
"""
STUB_RUNS = {"diverged": 'raise train.NonFiniteError("5 consecutive steps had NaN/inf loss or gradients '
                         '(train.max_nonfinite=5); stopping")',
             "internal_bug": 'raise KeyError("a bug")'}

# (id, script, arguments, what the line must name). {d}: the folder of bad files, {w}: a fresh
# work directory of the case's own.
CASES = [
    # Numbers that must be finite.
    ("lr_nan", R1_ZERO, ["--config.optim.learning_rate=nan"], "optim.learning_rate=nan"),
    ("lr_inf", R1_ZERO, ["--config.optim.learning_rate=inf"], "optim.learning_rate=inf"),
    ("beta_nan", R1_ZERO, ["--config.grpo.beta=nan"], "grpo.beta=nan"),
    ("temperature_inf", R1_ZERO, ["--config.sampling.temperature=-inf"], "sampling.temperature=-inf"),
    ("pretrain_lr_nan", R1_ZERO, ["--config.pretrain.optim.learning_rate=nan"], "pretrain.optim.learning_rate"),
    ("memory_limit_nan", R1_ZERO, ["--config.train.memory_limit_gb=nan"], "train.memory_limit_gb"),
    ("rollout_chunks_zero", R1_ZERO, ["--config.train.rollout_chunks=0"], "train.rollout_chunks=0"),
    ("rollout_chunks_not_dividing", R1_ZERO, ["--config.train.rollout_chunks=3"], "train.rollout_chunks=3"),
    ("eval_rollout_chunks", EVALUATE, ["--config.checkpoint={d}/policy", "--config.eval.rollout_chunks=5"],
     "eval.rollout_chunks='5'"),
    ("sft_lr_nan", R1, ["--config.sft.optim.learning_rate=nan"], "sft.optim.learning_rate"),
    ("curation_nan", R1, ["--config.curation.min_language_share=nan"], "curation.min_language_share"),
    ("eval_temperature_nan", EVALUATE, ["--config.checkpoint={d}/policy", "--config.eval.temperature=nan"],
     "eval.temperature"),
    ("sweep_lr_nan", AHA, ["--root", "{w}", "--index", "0", "--set", "optim.learning_rate=nan"], "optim.learning_rate"),
    # Config values and flags.
    ("unknown_field", R1_ZERO, ["--config.grpo.betaa=1"], "'grpo.betaa'"),
    ("unknown_section", R1_ZERO, ["--config.grpox.beta=1"], "grpox"),
    ("not_a_number", R1_ZERO, ["--config.grpo.beta=abc"], "grpo.beta"),
    ("steps_zero", R1_ZERO, ["--config.train.steps=0"], "train.steps"),
    ("resume_choice", R1_ZERO, ["--config.train.resume=maybe"], "train.resume"),
    ("on_bad_line_choice", R1_ZERO, ["--config.data.on_bad_line=maybe"], "data.on_bad_line"),
    ("stage_name", R1_ZERO, ["--config.stage=nope"], "stage='nope'"),
    ("config_name", R1_ZERO, [f"--config={R1_ZERO}:nope"], "'nope'"),
    ("positional", R1_ZERO, ["extra"], "unexpected arguments"),
    ("sweep_index", R1_ZERO, ["--sweep_index=99"], "sweep_index=99"),
    ("lora_rank", R1_ZERO, ["--config.lora.rank=-1"], "lora.rank=-1"),
    ("lora_alpha", R1_ZERO, ["--config.lora.rank=8", "--config.lora.alpha=0"], "lora.alpha=0"),
    ("lora_alpha_nan", R1_ZERO, ["--config.lora.alpha=nan"], "lora.alpha"),
    ("lora_targets", R1_ZERO, ["--config.lora.targets=q,qkv"], "lora.targets"),
    ("lora_base_dtype", R1_ZERO, ["--config.lora.base_dtype=int4"], "lora.base_dtype='int4'"),
    ("lora_mode", R1_ZERO, ["--config.lora.mode=maybe"], "lora.mode='maybe'"),
    ("lora_ref_reset", R1_ZERO, ["--config.lora.rank=8", "--config.grpo.ref_reset_every=10"], "grpo.ref_reset_every=10"),
    ("template", R1_ZERO, ["--config.template=no slot"], "template="),
    ("r1_stage_name", R1, ["--config.stage=nope"], "stage='nope'"),
    ("sweep_unknown_field", LANGUAGE, ["--root", "{w}", "--index", "0", "--set", "grpo.nope=1"], "grpo.nope"),
    ("sweep_not_a_number", AHA, ["--root", "{w}", "--index", "0", "--set", "optim.learning_rate=abc"],
     "optim.learning_rate"),
    # Data files.
    ("jsonl_missing", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/none.jsonl"], "data.path="),
    ("jsonl_malformed", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/malformed.jsonl"],
     "malformed.jsonl:2"),
    ("jsonl_no_answer", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/noanswer.jsonl"],
     "noanswer.jsonl:2"),
    ("jsonl_no_question", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/noquestion.jsonl"],
     "noquestion.jsonl:2"),
    ("jsonl_not_object", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/array.jsonl"],
     "array.jsonl:1"),
    ("jsonl_empty", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/empty.jsonl"], "empty.jsonl"),
    ("jsonl_blank", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/blank.jsonl"], "blank.jsonl"),
    ("jsonl_encoding", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/latin1.jsonl"], "latin1.jsonl"),
    ("num_eval_all_rows", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/good.jsonl"],
     "data.num_eval"),
    ("eval_path_empty", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/good.jsonl",
                                  "--config.data.eval_path={d}/empty.jsonl"], "data.eval_path"),
    ("gz_not_gzip", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/notgz.jsonl.gz"],
     "notgz.jsonl.gz: named .gz but not gzip-compressed"),
    ("gz_truncated", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/truncated.jsonl.gz"],
     "truncated.jsonl.gz"),
    ("code_no_tests", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/code.jsonl:code"], "code.jsonl:1"),
    ("layout_unknown", R1_ZERO, ["--config.data.source=jsonl", "--config.data.path={d}/good.jsonl:nope"],
     "layout 'nope'"),
    # Tokenizers and Hugging Face checkpoints.
    ("tokenizer_garbage", R1_ZERO, ["--config.tokenizer.path={d}/tok.model"], "tokenizer.path="),
    ("tokenizer_missing", R1_ZERO, ["--config.tokenizer.path={d}/none.model"], "tokenizer.path="),
    ("hf_missing", R1_ZERO, [QWEN, "--config.model.hf_checkpoint={d}/none"], "model.hf_checkpoint="),
    ("hf_truncated", R1_ZERO, [QWEN, "--config.model.hf_checkpoint={d}/hf_truncated"], "hf_truncated/model.safetensors"),
    ("hf_bad_config", R1_ZERO, [QWEN, "--config.model.hf_checkpoint={d}/hf_badjson"], "hf_badjson/config.json"),
    ("hf_no_weights", R1_ZERO, [QWEN, "--config.model.hf_checkpoint={d}/hf_noweights"], "model.hf_checkpoint="),
    ("hf_header_too_long", R1_ZERO, [QWEN, "--config.model.hf_checkpoint={d}/hf_header"], "hf_header/model.safetensors"),
    ("hf_missing_shard", R1_ZERO, [QWEN, "--config.model.hf_checkpoint={d}/hf_index"], "model-00001-of-00002.safetensors"),
    ("hf_not_a_config_dir", R1_ZERO, [QWEN, "--config.model.hf_checkpoint={d}/notpolicy"], "model.hf_checkpoint="),
    # Work directories and stage inputs.
    ("workdir_unwritable", R1_ZERO, ["--config.workdir=/proc/x"], "workdir='/proc/x'"),
    ("workdir_is_file", R1_ZERO, ["--config.workdir={d}/afile/run"], "workdir="),
    ("input_missing", R1_ZERO, ["--config.inputs=r1_zero.policy={d}/none"], "r1_zero.policy="),
    ("r1_input_missing", R1, ["--config.stage=sft", "--config.inputs=data={d}/none.jsonl"], "data="),
    ("r1_upstream_missing", R1, ["--config.stage=sft"], "stage 'sft'"),
    ("r1_teacher_missing", R1, ["--config.cold_start.teacher={d}/none"], "cold_start.teacher="),
    ("r1_workdir_unwritable", R1, ["--config.workdir=/proc/x"], "workdir='/proc/x'"),
    ("prm_base_not_policy", PRM, ["--config.prm.base={d}/notpolicy"], "prm.base="),
    ("mcts_value_model_missing", MCTS, ["--config.mcts.value_model={d}/none"], "mcts.value_model="),
    # A work directory whose checkpoints were made with another config.
    ("changed_learning_rate", R1_ZERO, ["--config.workdir={d}/run", "--config.optim.learning_rate=1e-3"],
     "optim.learning_rate=0.0002 (now 0.001)"),
    ("changed_model_shape", R1_ZERO, ["--config.workdir={d}/run", "--config.model.d_model=64"],
     "model.d_model=128 (now 64)"),
    ("changed_tokenizer", R1_ZERO, ["--config.workdir={d}/run", "--config.tokenizer.vocab_size=600"],
     "tokenizer.vocab_size=800 (now 600)"),
    ("changed_data_seed", R1_ZERO, ["--config.workdir={d}/run", "--config.data.seed=3"], "data.seed=0 (now 3)"),
    ("changed_shape_resume_weights", R1_ZERO, ["--config.workdir={d}/run", "--config.model.n_layers=2",
                                              "--config.train.resume=weights"], "model.n_layers=3"),
    ("diverged", "{d}/diverged.py", [], "train.max_nonfinite=5"),
    # Distillation's teacher.
    ("distill_no_teacher", DISTILL, [], "distill.teacher=''"),
    ("distill_teacher_missing", DISTILL, ["--config.distill.teacher={d}/none"], "distill.teacher="),
    ("distill_teacher_run_dir", DISTILL, ["--config.distill.teacher={d}/rundir"], "give {d}/rundir/policy"),
    ("distill_teacher_not_policy", DISTILL, ["--config.distill.teacher={d}/notpolicy"], "distill.teacher="),
    ("distill_teacher_hf_truncated", DISTILL, ["--config.distill.teacher={d}/hf_truncated"],
     "hf_truncated/model.safetensors"),
    # Evaluation.
    ("eval_run_dir", EVALUATE, ["--config.checkpoint={d}/rundir"], "this is a run directory; give {d}/rundir/policy"),
    ("eval_checkpoint_missing", EVALUATE, ["--config.checkpoint={d}/none"], "checkpoint="),
    ("eval_not_policy", EVALUATE, ["--config.checkpoint={d}/notpolicy"], "checkpoint="),
    ("eval_hf_truncated", EVALUATE, ["--config.hf_checkpoint={d}/hf_truncated"], "hf_truncated/model.safetensors"),
    ("eval_dataset_malformed", EVALUATE, ["--config.checkpoint={d}/policy", "--config.datasets=m={d}/malformed.jsonl"],
     "malformed.jsonl:2"),
    ("eval_dataset_empty", EVALUATE, ["--config.checkpoint={d}/policy", "--config.datasets=m={d}/empty.jsonl"],
     "empty.jsonl"),
    ("eval_dataset_missing", EVALUATE, ["--config.checkpoint={d}/policy", "--config.datasets=m={d}/none.jsonl"],
     "none.jsonl"),
    ("eval_dataset_not_gzip", EVALUATE, ["--config.checkpoint={d}/policy", "--config.datasets=m={d}/notgz.jsonl.gz"],
     "notgz.jsonl.gz: named .gz but not gzip-compressed"),
    ("eval_datasets_form", EVALUATE, ["--config.checkpoint={d}/policy", "--config.datasets=nameonly"], "nameonly"),
    ("eval_out_dir_unwritable", EVALUATE, ["--config.checkpoint={d}/policy", "--config.out_dir=/proc/x"],
     "out_dir='/proc/x'"),
    ("eval_on_bad_line", EVALUATE, ["--config.checkpoint={d}/policy", "--config.on_bad_line=maybe"], "on_bad_line="),
]
LOG_PREFIXES = ("I1", "W1", "E1", "WARNING:")  # absl / XLA log lines, not the program's own


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  """{case id: (exit status, output, the folder of bad files)} of every case, run in one process's
  forked children; once per test run: pytest-xdist workers share the first one's results."""
  run = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # one id per `pytest -n N` run, shared by its workers
  shared = pathlib.Path(tempfile.gettempdir()) / f"r1jax-bad-inputs-{run}" if run else tmp_path_factory.mktemp("bad")
  shared.mkdir(exist_ok=True)
  with open(shared / "lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits here, then reads what this one wrote
    done = shared / "results.json"
    if not done.exists():
      tmp = shared / "results.tmp"
      tmp.write_text(json.dumps(_run_cases(shared / "files")))
      tmp.replace(done)
    out = json.loads(done.read_text())
  return {cid: (code, text, pathlib.Path(d)) for cid, (code, text, d) in out.items()}


def _run_cases(d: pathlib.Path) -> dict:
  shutil.rmtree(d, ignore_errors=True)
  d.mkdir()
  _make_files(d)
  jobs = []
  for cid, script, argv, _ in CASES + [("internal_bug", "{d}/internal_bug.py", [], "")]:
    script = script.format(d=d)
    w = d / "w" / cid
    w.parent.mkdir(exist_ok=True)
    argv = [a.format(d=d, w=w) for a in argv]
    if script not in (AHA, LANGUAGE) and not any(a.startswith("--config.workdir=") for a in argv):
      key = "--config.out_dir=" if script == EVALUATE else "--config.workdir="
      argv = [a for a in argv if a.startswith("--config=")] + (
          [] if any(a.startswith(key) for a in argv) else [f"{key}{w}"]) + [a for a in argv if not a.startswith("--config=")]
    jobs.append({"script": script, "argv": argv, "cwd": str(d), "out": str(d / f"{cid}.out")})
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0",
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, str(REPO / "tests" / "entry_point_forks.py")], input=json.dumps(jobs),
                        capture_output=True, text=True, timeout=600, env=env, cwd=d)
  assert proc.returncode == 0, proc.stderr[-3000:]
  codes = json.loads(proc.stdout.strip().splitlines()[-1])
  ids = [c[0] for c in CASES] + ["internal_bug"]
  return {cid: (code, pathlib.Path(j["out"]).read_text(), str(d)) for cid, j, code in zip(ids, jobs, codes)}


def test_the_table_covers_fifty_cases_across_the_entry_points():
  assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)
  assert {R1_ZERO, R1, DISTILL, EVALUATE, AHA, LANGUAGE, PRM, MCTS} <= {c[1] for c in CASES}


@pytest.mark.parametrize("cid, script, argv, names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_it_with_status_2(results, cid, script, argv, names):
  code, output, d = results[cid]
  lines = [l for l in output.splitlines() if l.strip() and not l.startswith(LOG_PREFIXES)]
  assert code == 2, output[-3000:]
  assert "Traceback" not in output, output[-3000:]
  assert len(lines) == 1 and lines[0].startswith(("error: ", "config error: ")), output[-3000:]
  assert names.format(d=d) in lines[0], lines[0]
  assert "\\n" not in lines[0] and "\\'" not in lines[0], lines[0]  # no escaped text


def test_an_internal_error_keeps_its_traceback(results):
  code, output, _ = results["internal_bug"]
  assert code == 1 and "Traceback" in output and "KeyError: 'a bug'" in output, output[-3000:]


def test_a_refused_rerun_writes_nothing(results):
  """The config-change cases stopped before the run wrote its config or record."""
  d = results["changed_learning_rate"][2]
  assert sorted(p.name for p in (d / "run").iterdir()) == ["run_config.json", "stages"]
  fields = json.loads((d / "run" / "run_config.json").read_text())["fields"]
  assert fields["optim.learning_rate"] == 2e-4 and fields["model.d_model"] == 128


# ----------------------------------------------------------------------------- the silent cases


def _float_leaves(cfg, prefix=""):
  for k in cfg.keys():
    v = cfg[k]
    if hasattr(v, "keys"):
      yield from _float_leaves(v, f"{prefix}{k}.")
    elif cfg.get_type(k) is float:
      yield f"{prefix}{k}"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_no_float_field_takes_nan_or_inf(bad):
  """Every float field of every section (the pipeline's included) refuses NaN and +-inf by name."""
  r1 = experiment.load_experiment(R1).get_config()
  fields = list(_float_leaves(r1))
  assert len(fields) > 40 and "optim.learning_rate" in fields
  for field in fields:
    cfg = config_sections.apply_overrides(r1, {field: bad}, "test")
    with pytest.raises(errors.ConfigError, match=f"{field}={bad!r} must be a finite number"):
      pipelines.validate(cfg)


def _recorded(tmp_path, **overrides):
  cfg = experiment.load_experiment(R1_ZERO).get_config()
  cfg = config_sections.apply_overrides(cfg, {"workdir": str(tmp_path / "run")} | overrides, "test")
  return cfg


def test_a_changed_config_is_refused_and_resume_weights_continues(tmp_path):
  first = _recorded(tmp_path)
  workdir_lib.check_and_record(first)
  (tmp_path / "run" / "ckpt").mkdir()  # the run has results now
  assert workdir_lib.check(first) is None  # the same config: resumes as before
  assert workdir_lib.check(_recorded(tmp_path, **{"train.steps": 500, "eval.num_samples": 8,
                                                  "checkpoint.save_every": 7, "mesh.fsdp": 1})) is None
  changed = _recorded(tmp_path, **{"optim.learning_rate": 1e-3, "grpo.beta": 0.0})
  with pytest.raises(errors.UserError, match=r"grpo.beta=0.001 \(now 0.0\); optim.learning_rate=0.0002 \(now 0.001\)"
                                             r".*--config.workdir=DIR, or --config.train.resume=weights"):
    workdir_lib.check(changed)
  go_on = _recorded(tmp_path, **{"optim.learning_rate": 1e-3, "grpo.beta": 0.0, "train.resume": "weights"})
  workdir_lib.check_and_record(go_on)
  record = json.loads((tmp_path / "run" / workdir_lib.RECORD).read_text())
  assert record["fields"]["optim.learning_rate"] == 1e-3
  assert record["history"][0]["changed"] == ["grpo.beta=0.001 (now 0.0)", "optim.learning_rate=0.0002 (now 0.001)"]
  assert workdir_lib.check(changed) is None  # the new settings are this directory's now


@pytest.mark.parametrize("field, value", [("tokenizer.vocab_size", 600), ("model.d_model", 64),
                                          ("tokenizer.model_type", "unigram")])
def test_a_changed_tokenizer_or_shape_is_refused_even_with_resume_weights(tmp_path, field, value):
  workdir_lib.check_and_record(_recorded(tmp_path))
  (tmp_path / "run" / "base").mkdir()
  for resume in ("auto", "weights"):
    with pytest.raises(errors.UserError, match=f"{field}=.* cannot be continued"):
      workdir_lib.check(_recorded(tmp_path, **{field: value, "train.resume": resume}))


def test_a_record_without_results_does_not_bind(tmp_path):
  """A run that stopped before its first stage wrote anything may be rerun with other settings."""
  workdir_lib.check_and_record(_recorded(tmp_path))
  (tmp_path / "run" / "config.json").write_text("{}")
  assert workdir_lib.check(_recorded(tmp_path, **{"optim.learning_rate": 1e-3})) is None


# ----------------------------------------------------------------------------- end to end (slow tier)

TINY_RUN = ["--config.train.steps=2", "--config.pretrain.steps=4", "--config.pretrain.optim.warmup_steps=1",
            "--config.data.num_train=64", "--config.data.num_eval=8", "--config.eval.batch_size=8",
            "--config.eval.max_new_tokens=16", "--config.train.progress=False", "--config.model.n_layers=1",
            "--config.model.d_model=32", "--config.model.head_dim=8", "--config.model.d_ff=64",
            "--config.checkpoint.save_every=1", "--config.train.prompts_per_step=4",
            "--config.grpo.num_generations=4", "--config.grpo.max_completion_length=16"]


def _r1_zero(workdir, *argv):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
  return subprocess.run([sys.executable, R1_ZERO, f"--config.workdir={workdir}", *TINY_RUN, *argv],
                        capture_output=True, text=True, timeout=600, cwd=workdir.parent, env=env)


def _rows(path):
  return [json.loads(l) for l in path.read_text().splitlines()]


def _untimed(row):
  """A metrics row without its wall-clock measurements."""
  return {k: v for k, v in row.items() if not (k.startswith("time/") or "per_second" in k)}


@pytest.mark.slow
def test_a_run_refuses_a_changed_config_and_survives_a_damaged_checkpoint(tmp_path):
  w = tmp_path / "run"
  out = _r1_zero(w)
  assert out.returncode == 0, out.stderr[-3000:]
  first = _rows(w / "metrics.jsonl")
  assert [r["step"] for r in first] == [1, 2]
  # Another learning rate: refused before anything is written.
  written = (w / "config.json").stat().st_mtime_ns
  out = _r1_zero(w, "--config.optim.learning_rate=1e-3")
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "optim.learning_rate=0.0002 (now 0.001)" in out.stderr.strip().splitlines()[-1]
  assert (w / "config.json").stat().st_mtime_ns == written
  # The newest checkpoint damaged, one more step asked for: step 1 is restored, step 2 is
  # trained again to the same numbers, step 3 follows, and no step is logged twice.
  _truncate_array_files(w / "ckpt" / "2")
  out = _r1_zero(w, "--config.train.steps=3")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "step(s) [2] cannot be read" in out.stdout and f"resumed from {w / 'ckpt'} at step 1" in out.stdout
  again = _rows(w / "metrics.jsonl")
  assert [r["step"] for r in again] == [1, 2, 3]
  assert _untimed(again[1]) == _untimed(first[1])
  assert json.loads((w / "ckpt" / "restores.jsonl").read_text())["restored"] == 1
  # Continue these weights with another learning rate, on request.
  out = _r1_zero(w, "--config.train.steps=4", "--config.optim.learning_rate=1e-3", "--config.train.resume=weights")
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"resumed from {w / 'ckpt'} at step 3" in out.stdout
  history = json.loads((w / workdir_lib.RECORD).read_text())["history"]
  assert [h["changed"] for h in history] == [["optim.learning_rate=0.0002 (now 0.001)"]]
  assert [r["step"] for r in _rows(w / "metrics.jsonl")] == [1, 2, 3, 4]


def _truncate_array_files(step_dir: pathlib.Path) -> None:
  from test_checkpoint import _truncate_array_files as truncate
  truncate(step_dir)
