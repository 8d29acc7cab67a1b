"""The pipeline's stages on tiny data, with the sampler replaced by a stand-in whose completions
are known (correct / unformatted / wrong / looping / mixed-language / duplicate / truncated), so
every stage's outputs can be checked exactly: the cold-start filter rules, informativeness order
and provenance; the rejection-sampling mix and its raw samples; the rule-decided preference pairs
and the reward model; rl_all's rewards; the R1 stage graph (SFT starts from the base); and the
pipeline's resume after an interruption inside a stage and at a stage boundary."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from r1jax import curation
from r1jax import curation_filters
from r1jax import pipelines
from r1jax import config_sections
from r1jax import pipeline
from r1jax import policy as policy_lib
from r1jax.sampling import rollout
from r1jax.sampling import sampler as S
from r1jax import scalar_model
from r1jax import stages as stages_lib
from r1jax.rl import loop as train
from r1jax.rl import step as TS
from r1jax.sft import step as sft_step
from r1jax.stages import cold_start_data, context, pretrain, rejection_sampling, reward_model, rl_all, sft
from r1jax.tasks import general

K = 8  # samples per prompt
TINY = {"model.d_model": 32, "model.n_layers": 1, "model.n_heads": 4, "model.n_kv_heads": 2, "model.head_dim": 8,
        "model.d_ff": 64, "model.max_seq_len": 512, "model.remat": "none", "tokenizer.vocab_size": 600,
        "data.num_train": 64, "data.num_eval": 8, "pretrain.steps": 0, "train.progress": False,
        "train.prompts_per_step": 8, "train.reward_workers": 2, "train.reward_timeout_s": 60.0,
        "grpo.num_generations": K, "grpo.max_completion_length": 48, "grpo.grad_accum": 1,
        "cold_start.num_prompts": 8, "cold_start.samples_per_prompt": K, "cold_start.epochs": 3,
        "rejection.num_prompts": 8, "rejection.samples_per_prompt": K, "rejection.num_general": 4,
        "sft.batch_size": 8, "sft.packing": False, "sft.save_every": 2, "reward_model.steps": 3,
        "reward_model.batch_size": 8}


def easy(ex: dict) -> bool:
  return ex.get("task") == general.TASK or sum(map(ord, ex["question"])) % 2 == 1


def completions(ex: dict) -> list[tuple[str, bool]]:
  """(text, truncated) of the K samples of a prompt. 'Mixed' problems: one sample per filter
  reason and two kept; 'easy' ones: K correct, formatted, distinct samples."""
  final, sol = str(ex["final"]), ex.get("solution", "we compute it")
  if easy(ex):
    return [(f"<think> {sol} check {g} </think> <answer> {final} </answer>", False) for g in range(K)]
  ok = f"<think> {sol} </think> <answer> {final} </answer>"
  return [(ok, False),
          (f"The answer is {final}.", False),  # format
          (f"<think> {sol} </think> <answer> {int(final) + 1} </answer>", False),  # incorrect
          (f"<think> {' '.join(['add'] * 40)} </think> <answer> {final} </answer>", False),  # repetition
          (f"<think> 我们 把 两 个 数 相加 {sol} </think> <answer> {final} </answer>", False),  # language
          (ok.replace(" </think>", "   </think>"), False),  # duplicate (up to whitespace)
          (ok, True),  # overlong: hit the length cap
          (f"<think> {sol} so it is {final} </think> <answer> {final} </answer>", False)]


class StandIn:
  """Replaces rollout.sample: the completions above for each prompt (found by its question)."""

  def __init__(self, examples):
    self.examples = examples
    self.calls = 0

  def __call__(self, params, prompt_ids, key, cfg, scfg, tokenizer, batch_size=None, chunks=1):
    assert scfg.num_samples == K
    self.calls += 1
    toks, pmask = S.pad_prompts(prompt_ids, scfg.prompt_buckets, scfg.pad_id)
    texts, trunc = [], []
    for p in prompt_ids:
      text = tokenizer.decode(list(p))
      ex = max((e for e in self.examples if e["question"] in text), key=lambda e: len(e["question"]))
      for t, tr in completions(ex):
        texts.append(t)
        trunc.append(tr)
    N = scfg.max_new_tokens
    ids = [tokenizer.encode(t)[:N] for t in texts]
    tokens, mask = np.zeros((len(texts), N), np.int32), np.zeros((len(texts), N), bool)
    for r, x in enumerate(ids):
      tokens[r, :len(x)], mask[r, :len(x)] = x, True
    return rollout.Rollout(toks, pmask, tokens, np.zeros((len(texts), N), np.float32), mask, mask.sum(1),
                           np.asarray(trunc), texts)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """A context of the R1 config at tiny size and its (untrained) base policy."""
  work = tmp_path_factory.mktemp("r1")
  cfg = config_sections.apply_overrides(pipelines.r1_config(), TINY | {"workdir": str(work)}, "test")
  ctx, run = context.build(pipelines.validate(cfg))
  with jax.set_mesh(ctx.mesh):
    base = pretrain.run(run, ctx, {}, work / "base")["policy"]
  return run, ctx, base


@pytest.fixture
def stand_in(world, monkeypatch):
  run, ctx, _ = world
  s = StandIn(list(ctx.train_ex) + general.generate(run.rejection.num_general, seed=run.rejection.seed))
  monkeypatch.setattr(rollout, "sample", s)
  return s


def test_cold_start_data_keeps_correct_readable_samples_in_informativeness_order(world, stand_in, tmp_path):
  run, ctx, base = world
  with jax.set_mesh(ctx.mesh):
    out = cold_start_data.run(run, ctx, {"teacher": base, "student": base}, tmp_path)
  rows = curation.read_samples(out["data"])  # also checks every row's provenance fields
  counts = json.loads(open(out["counts"]).read())
  prompts = {s.prompt for s in rows}
  n_mixed = sum(not easy(s.example) for s in rows) // 2
  assert 0 < n_mixed < len(prompts)  # both kinds of prompt
  # One sample per reason on every mixed prompt, two kept; easy prompts keep all K (then capped).
  for reason in ("overlong", "format", "incorrect", "repetition", "language", "duplicate"):
    assert counts[reason] == n_mixed, (reason, counts)
  assert counts["total"] == 8 * K and counts["selected"] == len(rows) == 2 * len(prompts) == 16
  for s in rows:
    assert s.scores["accuracy"] == 1.0 and s.scores["format"] == 1.0 and not s.truncated
    assert s.source == {"policy": base, "step": None, "seed": run.cold_start.seed,
                        "sample_index": s.source["sample_index"]}
    assert s.completion == completions(s.example)[s.source["sample_index"]][0]  # provenance points at it
    assert s.source["sample_index"] in ((0, 7) if s.scores["student_pass_rate"] < 1 else (0, 1))
  # Informativeness: prompts the student solves sometimes (0 < pass rate < 1) before those it always solves.
  rates = [s.scores["student_pass_rate"] for s in rows]
  assert 0 < rates[0] < 1 and rates == sorted(rates)
  assert stand_in.calls == 1  # teacher == student: its samples give the pass rates



def test_cold_start_random_selection_is_uniform_over_all_candidates_and_zero_selects_none(world, stand_in, tmp_path):
  """selection='random' (the cold-start-size control) draws max_examples of every teacher candidate,
  failing ones included, seeded; max_examples=0 selects nothing (the policy then passes through SFT)."""
  run, ctx, base = world
  cs = run.cold_start
  with jax.set_mesh(ctx.mesh):
    out = cold_start_data.run(run, ctx, {"teacher": base, "student": base}, tmp_path / "curated")
  cands = curation.read_samples(out["candidates"])
  assert len(cands) == 8 * K and all("student_pass_rate" in c.scores for c in cands)
  fcfg = run.curation
  chosen, counts = cold_start_data.choose(cands, dataclasses.replace(cs, selection="random", max_examples=20), fcfg)
  want = sorted(np.random.default_rng(cs.seed).permutation(len(cands))[:20])
  assert [c.completion for c in chosen] == [cands[i].completion for i in want]
  assert counts["selected"] == 20 and any(c.scores["accuracy"] == 0 or c.scores["format"] == 0 for c in chosen)
  for selection in ("random", "curated"):
    none, counts = cold_start_data.choose(cands, dataclasses.replace(cs, selection=selection, max_examples=0), fcfg)
    assert none == [] and counts["selected"] == 0
  curated, _ = cold_start_data.choose(cands, cs, fcfg)
  assert [c.completion for c in curated] == [c.completion for c in curation.read_samples(out["data"])]
  with pytest.raises(ValueError, match="cold_start.selection='best' is not one of"):
    cold_start_data.ColdStartConfig(selection="best")

def test_rejection_sampling_mix_raw_samples_and_reward_model_pairs(world, stand_in, tmp_path):
  run, ctx, base = world
  rc = run.rejection
  with jax.set_mesh(ctx.mesh):
    out = rejection_sampling.run(run, ctx, {"policy": base}, tmp_path / "rs")
  raw = curation.read_samples(out["samples"])
  assert len(raw) == (rc.num_prompts + rc.num_general) * K
  mix = curation.read_samples(out["data"])
  gen = [s for s in mix if s.source["policy"] == "generated"]
  reasoning = [s for s in mix if s.source["policy"] == base]
  assert len(gen) == rc.num_general and len(reasoning) == 2 * rc.num_prompts and len(mix) == len(gen) + len(reasoning)
  for s in gen:  # the reference answer in the R1 format
    assert s.completion == curation.reference_completion(s.example) and general.grade(s.completion, s.example) == 1
  for s in reasoning:
    assert s.scores["accuracy"] == 1.0 and s.scores["format"] == 1.0 and s.example.get("task") != general.TASK
  counts = json.loads(open(out["counts"]).read())
  assert counts["kept"] - counts["over_per_prompt"] == counts["reasoning_in_mix"] == len(reasoning)
  assert "kept / dropped by" in open(tmp_path / "rs" / "counts.txt").read()
  # Preference pairs from the raw samples: chosen beats rejected by the first rule that decides.
  with jax.set_mesh(ctx.mesh):
    rm = reward_model.run(run, ctx, {"policy": base, "samples": out["samples"]}, tmp_path / "rm")
  by_text = {(s.prompt, s.completion): s for s in raw}
  pairs = [json.loads(l) for l in open(rm["pairs"])]
  assert {p["reason"] for p in pairs} == {"correct", "language", "concise"}
  for p in pairs:
    c, r = by_text[p["prompt"], p["chosen"]], by_text[p["prompt"], p["rejected"]]
    if p["reason"] == "correct":
      assert c.scores["accuracy"] == 1 and r.scores["accuracy"] == 0
    elif p["reason"] == "language":
      assert curation_filters.in_language(c, run.curation) and not curation_filters.in_language(r, run.curation)
    else:
      assert c.num_tokens <= 0.8 * r.num_tokens
  summary = json.loads(open(rm["summary"]).read())
  assert summary["pairs"] == len(pairs) and 0 <= summary["held_out_accuracy"] <= 1
  # The reward model scores general rows only (sigmoid in (0, 1)); rl_all's accuracy skips them.
  with jax.set_mesh(ctx.mesh):
    cfg, params, head = scalar_model.load(rm["model"], ctx.mesh, ctx.rules)
    fn = rl_all.reward_model_scorer(cfg, params, head)
    exs = [ctx.train_ex[0], general.generate(1, seed=9)[0]]
    stand_in.examples.append(exs[1])
    ids = rollout.encode_prompts(exs, ctx.tokenizer, ctx.template, 256)[1]
    scfg = S.SamplingConfig(max_new_tokens=48, num_samples=K, eos_ids=(ctx.tokenizer.eos_id,), pad_id=0)
    ro = stand_in(params, ids, None, cfg, scfg, ctx.tokenizer)
    s = fn(ro, [e for e in exs for _ in range(K)])
  assert (s[:K] == 0).all() and ((0 < s[K:]) & (s[K:] < 1)).all()
  assert rl_all.reasoning_accuracy("<answer> 3 </answer>", {"final": "3", "task": general.TASK}) == 0.0
  assert rl_all.reasoning_accuracy("<answer> 3 </answer>", {"final": "3"}) == 1.0


def test_r1_stage_graph_sft_starts_from_the_base_and_rl_budgets_match(world):
  run, ctx, _ = world
  st = {s.name: s for s in stages_lib.r1(run)}
  assert st["sft"].inputs == {"policy": "pretrain.policy", "data": "rejection_sampling.data"}
  assert st["cold_start_sft"].inputs["policy"] == "pretrain.policy"
  assert st["reasoning_rl"].inputs == {"policy": "cold_start_sft.policy"}
  assert st["rl_all"].inputs == {"policy": "sft.policy", "reward_model": "reward_model.model"}
  r = run.r1
  assert st["r1_zero"].fn.keywords["steps"] == r.reasoning_rl_steps + r.rl_all_steps
  assert (st["reasoning_rl"].fn.keywords["steps"], st["rl_all"].fn.keywords["steps"]) == (r.reasoning_rl_steps,
                                                                                          r.rl_all_steps)
  assert st["reasoning_rl"].fn.keywords["language"] and set(st) <= set(stages_lib.R1_STAGES)



def test_rl_all_learning_rate_reaches_its_optimizer_and_only_its_own(world, tmp_path, monkeypatch):
  """r1.rl_all_learning_rate replaces optim.learning_rate in rl_all's GRPO run; the other RL stages
  keep optim's (0 = optim's for rl_all too)."""
  run, ctx, base = world
  seen = []

  class Stop(Exception):
    pass

  def capture(**kw):
    seen.append(kw["ocfg"].learning_rate)
    raise Stop
  monkeypatch.setattr(train, "run_grpo", capture)
  for lr in (3e-5, 0.0):
    lr_run = dataclasses.replace(run, r1=dataclasses.replace(run.r1, rl_all_learning_rate=lr))
    st = {s.name: s for s in stages_lib.r1(lr_run)}
    with jax.set_mesh(ctx.mesh):
      for name, inputs in (("rl_all", {"policy": base, "reward_model": None}), ("reasoning_rl", {"policy": base})):
        monkeypatch.setattr(rl_all.scalar_model, "load", lambda *a: (None, None, None))
        with pytest.raises(Stop):
          st[name].fn(lr_run, ctx, inputs, tmp_path / name)
  optim_lr = run.optim.learning_rate
  assert seen == [3e-5, optim_lr, optim_lr, optim_lr] and optim_lr != 3e-5

@pytest.mark.slow
def test_pipeline_resumes_inside_a_stage_and_skips_finished_ones(world, stand_in, tmp_path, monkeypatch):
  """Killed inside cold_start_sft (after its step-2 checkpoint), the same run again skips
  pretrain and cold_start_data (their records) and ends with the uninterrupted run's policy."""
  run, ctx, _ = world
  stages = [s for s in stages_lib.r1(run) if s.name in ("pretrain", "cold_start_data", "cold_start_sft")]

  def run_in(workdir, fp="a"):
    with jax.set_mesh(ctx.mesh):
      out = pipeline.run(run, dataclasses.replace(ctx, workdir=workdir), stages, fp)
      return out, jax.device_get(policy_lib.load_policy(out["cold_start_sft"]["policy"], ctx.mesh)[1])

  full, want = run_in(tmp_path / "full")
  make, calls = sft_step.make_sft_step, []

  def dies_at_step_3(*a, **k):
    step = make(*a, **k)

    def f(state, batch):
      calls.append(1)
      if len(calls) == 3:
        raise KeyboardInterrupt("killed")
      return step(state, batch)
    f.lower = step.lower  # the memory planner compiles it first (on CPU too: against the host's memory)
    return f

  monkeypatch.setattr(sft_step, "make_sft_step", dies_at_step_3)
  with pytest.raises(KeyboardInterrupt):
    run_in(tmp_path / "split")
  assert pipeline.read_record(tmp_path / "split", "cold_start_data") is not None
  assert pipeline.read_record(tmp_path / "split", "cold_start_sft") is None
  sampled = stand_in.calls
  calls.clear()
  monkeypatch.setattr(sft_step, "make_sft_step", make)
  _, got = run_in(tmp_path / "split")
  assert stand_in.calls == sampled  # cold_start_data was not run again
  rows = [json.loads(l)["step"] for l in (tmp_path / "split" / "cold_start_sft" / "metrics.jsonl").read_text().splitlines()]
  assert rows == [1, 2, 3, 4, 5, 6]  # steps 1-2 before the kill, 3-6 after resuming at the step-2 checkpoint
  jax.tree.map(np.testing.assert_array_equal, got, want)
  # Everything recorded: a third run skips all; another config reruns them (here: resumes, same result).
  _, again = run_in(tmp_path / "split")
  assert stand_in.calls == sampled
  _, other = run_in(tmp_path / "split", fp="b")
  assert stand_in.calls == sampled + 1
  jax.tree.map(np.testing.assert_array_equal, other, want)


def test_load_config_reads_the_model_without_its_parameters(world, tmp_path):
  """policy.load_config gives the config load_policy restores, for a policy directory and for its
  Hugging Face export (distill_vs_rl counts parameters with it)."""
  from r1jax.model import hf
  from r1jax.model import hf_export
  run, ctx, base = world
  cfg, params, _ = policy_lib.load_policy(base, ctx.mesh)
  assert policy_lib.load_config(base) == cfg
  hf_export.save_hf_checkpoint(params, cfg, tmp_path / "hf")
  hf_cfg, _ = hf.load_hf_checkpoint(tmp_path / "hf")
  assert policy_lib.load_config(tmp_path / "hf") == hf_cfg and hf_cfg.num_params() == cfg.num_params()
