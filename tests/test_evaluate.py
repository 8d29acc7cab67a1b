"""The evaluation harness end to end on CPU, and its bad-input errors."""
import dataclasses
import json
import pathlib
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from r1jax import datasets
from r1jax import policy as policy_lib
from r1jax.evaluation import experiment as eval_experiment
from r1jax import model as M
from r1jax import sharding
from r1jax import templates
from r1jax import tokenizer as tok_lib
from r1jax.rl import step as TS
from r1jax.sft import step as sft_step

REPO = pathlib.Path(__file__).resolve().parents[1]
ANSWER = " <think> I add. </think> <answer> 4 </answer>"


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
  """A tiny model taught (by a few SFT steps) to answer '4' to every question, saved as a policy."""
  d = tmp_path_factory.mktemp("policy")
  qs = [f"What is {a} + {b}?" for a in range(8) for b in range(8)]
  texts = [templates.format_prompt(q, templates.R1_ZERO_TEMPLATE) + ANSWER for q in qs]
  tok = tok_lib.train_sentencepiece(texts, 500, d / "tok.model", model_type="bpe")
  cfg = M.ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                      d_ff=64)
  ids = [[tok.bos_id] + tok.encode(t) + [tok.eos_id] for t in texts]
  T = max(map(len, ids))
  toks = np.zeros((len(ids), T), np.int32)
  mask = np.zeros((len(ids), T), bool)
  lmask = np.zeros((len(ids), T), bool)
  for i, (row, t) in enumerate(zip(ids, texts)):
    toks[i, :len(row)], mask[i, :len(row)] = row, True
    lmask[i, len(row) - len(tok.encode(ANSWER)) - 1:len(row)] = True  # learn the answer and EOS
  o = TS.OptimConfig(learning_rate=1e-2)
  state = TS.init_state(M.init_params(jax.random.key(0), cfg), TS.make_optimizer(o))
  step = sft_step.make_sft_step(cfg, o)
  for _ in range(70):  # loss 0.004 by step 61
    state, m = step(state, {"tokens": toks, "mask": mask, "loss_mask": lmask})
  assert float(m["loss"]) < 0.05
  policy_lib.save_policy(d / "policy", 1, state.params, cfg, d / "tok.model")
  return d / "policy"


def _cfg(policy, tmp_path, datasets_spec, **eval_over):
  spec = __import__("importlib.util").util.spec_from_file_location("ev", REPO / "experiments" / "evaluate.py")
  mod = __import__("importlib.util").util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.checkpoint = str(policy)
  c.datasets = datasets_spec
  c.out_dir = str(tmp_path / "eval")
  c.progress = False
  c.eval.update(dict(num_samples=3, max_new_tokens=24, batch_size=4) | eval_over)
  return c


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def test_evaluation_end_to_end(policy, tmp_path):
  # 4 of 10 problems have reference 4; one has "004" (leading zeros still equal 4).
  rows = [{"question": f"What is {a} + {b}?", "final": f} for (a, b, f) in
          [(1, 3, "4"), (2, 2, "4"), (0, 4, "004"), (3, 1, "4"), (2, 3, "5"), (1, 1, "2"), (3, 3, "6"),
           (5, 2, "7"), (0, 0, "0"), (6, 1, "7")]]
  path = _write_jsonl(tmp_path / "d.jsonl", rows)
  res = eval_experiment.run(_cfg(policy, tmp_path, f"toy={path}"))["toy"]
  out = tmp_path / "eval"
  samples = [json.loads(l) for l in (out / "toy" / "samples.jsonl").read_text().splitlines()]
  assert len(samples) == 30 and json.loads((out / "summary.json").read_text())["toy"]["pass@1"] == res["pass@1"]
  # pass@1 is the mean of the per-sample verdicts (3 samples for every problem).
  assert res["pass@1"] == pytest.approx(np.mean([s["correct"] for s in samples]))
  # The model answers 4: exactly the four problems whose reference is 4 are solved.
  solved = {s["problem_id"] for s in samples if s["correct"]}
  assert res["pass@1"] == pytest.approx(0.4, abs=0.05) and len(solved) == 4
  assert res["format_rate"] > 0.9 and res["cons@3"] == pytest.approx(0.4)
  assert {"problem_id", "completion", "extracted", "correct", "verdict"} <= set(samples[0])


def test_bad_inputs(policy, tmp_path):
  bad = _write_jsonl(tmp_path / "bad.jsonl", [{"question": "q1", "final": "1"}, {"question": "q2"}])
  with pytest.raises(ValueError, match=r"bad.jsonl:2: no answer in field 'final'"):
    eval_experiment.run(_cfg(policy, tmp_path, f"x={bad}"))
  mal = tmp_path / "mal.jsonl"
  mal.write_text('{"question": "q", "final": "1"}\n{"question": oops}\n')
  with pytest.raises(ValueError, match=r"mal.jsonl:2: malformed JSON"):
    eval_experiment.run(_cfg(policy, tmp_path, f"x={mal}"))
  ex, skipped = datasets.load_jsonl(datasets.JsonlConfig(path=str(mal), on_bad_line="skip"))
  assert len(ex) == 1 and skipped == 1
  with pytest.raises(ValueError, match="checkpoint=./nonexistent.: no such directory"):
    eval_experiment.run(_cfg("/nonexistent", tmp_path, "arithmetic"))
  with pytest.raises(ValueError, match="eval.num_samples=0 must be >= 1"):
    eval_experiment.run(_cfg(policy, tmp_path, "arithmetic", num_samples=0))
  c = _cfg(policy, tmp_path, "arithmetic")
  c.template = "Solve this."
  with pytest.raises(ValueError, match=r"or a text with a \{prompt\} slot"):
    eval_experiment.run(c)


def test_real_files_load(shared_data):
  for name, n, layout in [("gsm8k_test.jsonl", 1319, "gsm8k"), ("gsm8k_train.jsonl", 7473, "gsm8k"),
                          ("aime2024.jsonl", 30, "aime")]:
    ex, skipped = datasets.load_jsonl(datasets.JsonlConfig(path=str(shared_data / name), layout=layout))
    assert len(ex) == n and skipped == 0
    assert all(e["question"] and e["final"] for e in ex)


def test_math_layout_reads_math_and_math500_rows(tmp_path):
  """The 'math' layout: MATH's rows (type, level) and MATH-500's (subject, level, unique_id) keep
  their subject, level and id."""
  rows = [{"problem": "1+1?", "answer": "2", "type": "Algebra", "level": "Level 1"},
          {"problem": "2+2?", "answer": "4", "subject": "Prealgebra", "level": 2, "unique_id": "test/prealgebra/1.json"}]
  path = tmp_path / "m.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  ex, _ = datasets.load_jsonl(datasets.JsonlConfig(path=str(path), layout="math"))
  assert [(e["subject"], e["level"], e["final"]) for e in ex] == [("Algebra", "Level 1", "2"), ("Prealgebra", 2, "4")]
  assert ex[0]["id"] == "m:1" and ex[1]["id"] == "test/prealgebra/1.json"


def test_tfds_dataset_built_locally(tmp_path):
  """A TFDS dataset prepared on this machine (array_record, no TensorFlow, no network) loads as examples."""
  tfds = pytest.importorskip("tensorflow_datasets")

  class ToyMath(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
          {"question": tfds.features.Text(), "answer": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(10), "test": self._generate_examples(4)}

    def _generate_examples(self, n):
      for i in range(n):
        yield i, {"question": f"What is {i} + 1?", "answer": str(i + 1)}

  ToyMath(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  ex = datasets.tfds_examples("toy_math", "test", str(tmp_path), "question", "answer")
  assert sorted((e["question"], e["final"]) for e in ex) == [(f"What is {i} + 1?", str(i + 1)) for i in range(4)]
  with pytest.raises(ValueError, match="lacks 'problem'"):
    datasets.tfds_examples("toy_math", "train", str(tmp_path), "problem", "answer")


def test_code_rows_graded_by_the_sandbox_give_pass_at_k(shared_data):
  """A planted right program scores 1, a wrong one 0; pass@1 and pass@k over k samples as for math."""
  from r1jax.evaluation import harness, metrics
  from r1jax.rewards import code
  ex, _ = datasets.load_jsonl(datasets.JsonlConfig(path=str(shared_data / "humaneval.jsonl.gz"), layout="humaneval",
                                                   max_examples=2))
  ecfg = harness.EvalConfig(num_samples=2)
  right = [f"<think> ok </think> <answer>\n```python\n{e['canonical_solution']}```\n</answer>" for e in ex]
  texts = [right[0], "<answer>```python\n    return None\n```</answer>", right[1], right[1]]
  graded = harness.grade_texts(texts, ex, ecfg, code.CodeConfig())
  assert [g["correct"] for g in graded] == [True, False, True, True]
  assert [g["verdict"] for g in graded] == ["passed", "failed", "passed", "passed"]
  assert graded[0]["tests_passed"] == graded[0]["tests_total"] == len(ex[0]["tests"])
  rows = [dict(g, problem_id=ex[r // 2]["id"]) for r, g in enumerate(graded)]
  s = metrics.summarize(rows, 2)
  assert s["pass@1"] == pytest.approx(0.75) and s["pass@2"] == 1.0 and s["cons@2"] == pytest.approx(1.0)


def test_humaneval_evaluation_end_to_end(policy, tmp_path, shared_data):
  """experiments/evaluate.py's path on HumanEval with a tiny model: it runs; its programs score ~0."""
  c = _cfg(policy, tmp_path, f"humaneval={shared_data / 'humaneval.jsonl.gz'}", max_prompt_len=4096,
           max_new_tokens=8, num_samples=2)
  c.max_examples = 3
  res = eval_experiment.run(c)["humaneval"]
  samples = [json.loads(l) for l in (tmp_path / "eval" / "humaneval" / "samples.jsonl").read_text().splitlines()]
  assert res["samples"] == len(samples) == 6 and res["pass@1"] == 0.0
  assert res["code/no_code"] == 6 and all(s["verdict"] == "no_code" and s["tests_total"] > 1 for s in samples)


def _loaded(policy):
  from r1jax import policy as policy_lib
  mesh = sharding.make_mesh(sharding.MeshConfig())
  with jax.set_mesh(mesh):
    return policy_lib.load_policy(policy, mesh)


def test_no_problem_is_dropped(policy, tmp_path, capsys):
  """A prompt over max_prompt_len takes a longer bucket; one over the model's context less the new
  tokens is scored wrong, counted in the denominator and shown in the table."""
  from r1jax.sampling import rollout
  from r1jax.evaluation import harness
  model_cfg, params, tok = _loaded(policy)
  qs = ["What is 1 + 3?", "What is 2 + 2? " + "Add the two numbers. " * 6, "What is 3 + 1? " + "Think. " * 60]
  exs = [{"question": q, "final": "4", "id": f"p{i}"} for i, q in enumerate(qs)]
  lens = [len(p) for p in rollout.encode_prompts(exs, tok, templates.R1_ZERO_TEMPLATE, 10**9)[1]]
  assert lens[0] < lens[1] < lens[2]
  N = 24
  model_cfg = dataclasses.replace(model_cfg, max_seq_len=lens[1] + N)  # the third cannot fit at all
  ecfg = harness.EvalConfig(num_samples=3, max_new_tokens=N, batch_size=2, num_slots=4, max_prompt_len=lens[0])
  mesh = sharding.make_mesh(sharding.MeshConfig())
  with jax.set_mesh(mesh):
    res = harness.evaluate_datasets(params, model_cfg, tok, [("toy", exs)], templates.R1_ZERO_TEMPLATE, ecfg,
                                    tmp_path / "eval", progress=False)["toy"]
  samples = [json.loads(l) for l in (tmp_path / "eval" / "toy" / "samples.jsonl").read_text().splitlines()]
  assert [s["problem_id"] for s in samples] == ["p0"] * 3 + ["p1"] * 3 + ["p2"] * 3
  assert res["problems"] == 3 and res["prompts_too_long"] == 1 and res["prompts_longer_than_max_prompt_len"] == 1
  assert all(s["length"] > 0 and s["verdict"] != "prompt_too_long" for s in samples[:6])
  assert all(s["verdict"] == "prompt_too_long" and not s["correct"] and s["length"] == 0 for s in samples[6:])
  assert res["pass@1"] == pytest.approx(np.mean([s["correct"] for s in samples]))  # over all 9 samples
  assert res["generated_tokens"] == sum(s["length"] for s in samples)
  table = capsys.readouterr().out.splitlines()
  assert table[0].split()[:5] == ["dataset", "problems", "too", "long", "(wrong)"]
  assert table[2].split()[:3] == ["toy", "3", "1"]


def test_continuous_and_static_evaluation_agree(policy, tmp_path):
  """Slots refilled as rows end, over grouped calls, give each row the tokens of static batches."""
  from r1jax.evaluation import harness
  model_cfg, params, tok = _loaded(policy)
  exs = [{"question": f"What is {a} + {b}?", "final": str(a + b), "id": f"{a}{b}"} for a in range(3) for b in range(2)]
  out = {}
  mesh = sharding.make_mesh(sharding.MeshConfig())
  for slots in (0, 2):
    ecfg = harness.EvalConfig(num_samples=2, max_new_tokens=16, batch_size=4, num_slots=slots)
    with jax.set_mesh(mesh):
      harness.evaluate(params, model_cfg, tok, exs, templates.R1_ZERO_TEMPLATE, ecfg, eos_ids=(tok.eos_id,),
                       pad_id=tok.pad_id, out_dir=tmp_path / str(slots), progress=False)
    out[slots] = [json.loads(l) for l in (tmp_path / str(slots) / "samples.jsonl").read_text().splitlines()]
  assert len(out[0]) == 12
  assert [(s["completion"], s["correct"]) for s in out[0]] == [(s["completion"], s["correct"]) for s in out[2]]


def test_rows_keep_their_problems_through_slots_and_calls(policy, tmp_path):
  """Each row's forced length (EOS off) comes back on its own problem and sample, across calls,
  refilled slots and the padding rows of a last, partial call."""
  from r1jax.evaluation import harness
  model_cfg, params, tok = _loaded(policy)
  exs = [{"question": f"What is {a} + 1?", "final": str(a + 1), "id": f"q{a}"} for a in range(6)]
  caps = np.random.default_rng(0).permutation(np.arange(1, 13)).astype(np.int32)
  for chunks in ("1", "2"):  # the memory plan's chunks: calls of half the problems
    ecfg = harness.EvalConfig(num_samples=2, max_new_tokens=16, batch_size=4, num_slots=3, rollout_chunks=chunks)
    with jax.set_mesh(sharding.make_mesh(sharding.MeshConfig())):
      res = harness.evaluate(params, model_cfg, tok, exs, templates.R1_ZERO_TEMPLATE, ecfg, eos_ids=(),
                             pad_id=tok.pad_id, out_dir=tmp_path / chunks, progress=False, max_len_R=caps)
    samples = [json.loads(l) for l in (tmp_path / chunks / "samples.jsonl").read_text().splitlines()]
    assert [(s["problem_id"], s["sample"]) for s in samples] == [(f"q{a}", s) for a in range(6) for s in range(2)]
    assert [s["length"] for s in samples] == caps.tolist() and res["generated_tokens"] == caps.sum()
