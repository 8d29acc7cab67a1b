"""The embedded world for the aha and language experiments: arithmetic chains (answers recomputed
from the question text), the try -> check -> correct corpus at rate p (measured with
`rewards.aha` within binomial tolerance), the control whose reflective traces end wrong, and the
90/10 language mix (measured with `rewards.language`'s own share)."""
import math
import re

import pytest

from r1jax import curation_filters
from r1jax import templates
from r1jax.evaluation import behaviour
from r1jax.rewards import aha
from r1jax.rewards import language
from r1jax.tasks import chains
from r1jax.tasks import second_language
from r1jax.tasks import traces

R1 = templates.R1_ZERO_TEMPLATE
SHORT = "User: {prompt}. Assistant:"
STEP = re.compile(r"(\d+) (plus|minus|times) (\d+) equals (\d+)")
CHECK = re.compile(r"\. ([^.:]+): \d+ (?:plus|minus|times) \d+ equals \d+, (yes|not \d+)\.")
OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


def _tol(p, n):
  """Four binomial standard deviations of a rate p measured on n draws (and one draw's worth)."""
  return 4 * math.sqrt(p * (1 - p) / n) + 1 / n


def _from_question(q):
  """The chain's value from the question text alone, independently of the generator."""
  m = re.fullmatch(r"What is ([\d\s()+*-]+)\?", q)
  if m:
    return eval(m.group(1))  # digits, + - *, parentheses and spaces only (checked by the regex)
  m = re.fullmatch(r"Start with (\d+), (.*)\. What number do you get\?", q)
  v = int(m.group(1))
  for verb in m.group(2).replace("then ", "").split(", "):
    a = re.fullmatch(r"(add|subtract|multiply by) (\d+)", verb)
    b = int(a.group(2))
    v = {"add": v + b, "subtract": v - b, "multiply by": v * b}[a.group(1)]
  return v


def _statements(text):
  """(a, op, b, r, true?) for every step said in the (English) text."""
  return [(int(a), op, int(b), int(r), OPS[op](int(a), int(b)) == int(r)) for a, op, b, r in STEP.findall(text)]


def test_chains_deterministic_distinct_and_splits_disjoint():
  assert chains.generate(300, seed=3) == chains.generate(300, seed=3)
  assert chains.generate(300, seed=3) != chains.generate(300, seed=4)
  train, held = chains.split(2000, 300, seed=0)
  assert len(train) == 2000 and len(held) == 300
  key = lambda ex: tuple(map(tuple, ex["steps"]))
  assert len({key(e) for e in train + held}) == 2300  # distinct chains, so no chain in both splits
  assert not {e["question"] for e in train} & {e["question"] for e in held}
  assert chains.split(500, 300, seed=0)[1] == held  # a larger train set keeps the held-out set
  assert {e["form"] for e in held} == set(chains.FORMS)
  assert {e["subject"] for e in held} == {"chain2", "chain3", "chain4"}
  with pytest.raises(ValueError, match="min_ops=3 and max_ops=2"):
    chains.generate(5, min_ops=3, max_ops=2)


def test_the_chain_depth_comes_from_the_data_config():
  from r1jax.datasets import DataConfig
  from r1jax.stages import context
  train, held = context.load_examples(DataConfig(source="chains", num_train=300, num_eval=50,
                                                 chain_min_ops=1, chain_max_ops=2))
  assert {len(e["steps"]) for e in train + held} == {1, 2}
  assert {e["subject"] for e in held} == {"chain1", "chain2"}
  with pytest.raises(ValueError, match=r"data.chain_min_ops=0 and data.chain_max_ops=2 must satisfy"):
    DataConfig(source="chains", chain_min_ops=0, chain_max_ops=2)


def test_chain_answers_and_solutions_recomputed_from_the_question():
  for ex in chains.generate(1000, seed=1):
    assert ex["final"] == str(_from_question(ex["question"])), ex
    said = _statements(ex["solution"])
    assert all(ok for *_, ok in said) and len(said) == len(ex["steps"]), ex
    assert all(said[i][3] == said[i + 1][0] for i in range(len(said) - 1))  # each step starts from the last
    assert said[-1][3] == int(ex["final"])
    assert all(1 <= v <= 99 for s in said for v in (s[0], s[3]))
    assert all(2 <= b <= 5 for _, op, b, _, _ in said if op == "times")


def test_grader_on_generated_answers():
  for ex in chains.generate(50, seed=2):
    assert chains.grade(f"<think> {ex['solution']} </think> <answer> {ex['final']} </answer>", ex) == 1.0
    assert chains.grade(f"<answer> {int(ex['final']) + 1} </answer>", ex) == 0.0
    assert chains.grade(ex["solution"], ex) == 0.0  # no answer given
  # Documents in the R1 form: what follows the prompt grades as the document says.
  ex = chains.generate(400, seed=2)
  recs = traces.records(ex, R1, 0, 1.0, 0.3, traces.TraceConfig(reflect_rate=0.3, control=True))
  by_id = {e["id"]: e for e in ex}
  for r in recs:
    prompt = templates.format_prompt(by_id[r["id"]]["question"], R1)
    assert r["text"].startswith(prompt)
    completion = r["text"][len(prompt):]
    assert chains.grade(completion, by_id[r["id"]]) == float(r["correct"])
    # RL's accuracy reward agrees
    assert curation_filters.default_grader(completion, by_id[r["id"]]) == float(r["correct"])


@pytest.mark.parametrize("p,control", [(0.0, False), (0.05, False), (0.3, False), (0.05, True)])
def test_reflection_rate_is_p_within_binomial_tolerance(p, control):
  ex = chains.generate(2000, seed=5)
  cfg = traces.TraceConfig(reflect_rate=p, control=control, restart_share=0.25, minority_share=0.1,
                           docs_per_example=2)
  # The R1 template's instruction says nothing reflective (the p = 0 case scans it; the others use a
  # short template, as aha on the long one costs seconds).
  recs = traces.records(ex, R1 if p == 0 else SHORT, 11, 0.25, 0.2, cfg)
  n = len(recs)
  assert n == 4000
  texts = [r["text"] for r in recs]
  refl = behaviour.reflection_flags(texts, normalize=second_language.to_latin)
  rest = behaviour.restart_flags(texts, normalize=second_language.to_latin)
  # aha sees exactly the reflective documents: nothing else in the corpus (template included) reflects.
  assert list(refl) == [r["kind"] in traces.REFLECTIVE for r in recs]
  assert list(rest) == [r["kind"] == "restart" for r in recs]
  assert abs(refl.mean() - p) <= _tol(p, n)
  if p == 0:
    assert refl.sum() == 0
  else:
    assert abs(rest[refl].mean() - 0.25) <= _tol(0.25, refl.sum())
    confirm = sum(r["kind"] == "confirm" for r in recs) / refl.sum()
    assert abs(confirm - 0.25) <= _tol(0.25, refl.sum())
  wrong = sum(r["kind"] == "wrong" for r in recs) / n
  assert abs(wrong - 0.2) <= _tol(0.2, n)
  # Without normalizing, the Greek reflections are invisible to aha: the language really differs.
  plain = behaviour.reflection_flags(texts)
  assert list(plain) == [r["kind"] in traces.REFLECTIVE and r["lang"] == "en" for r in recs]


@pytest.mark.parametrize("control", [False, True])
def test_traces_slip_reflect_and_recompute_and_the_control_ends_wrong(control):
  ex = chains.generate(600, seed=6)
  by_id = {e["id"]: e for e in ex}
  recs = traces.records(ex, R1, 1, 0.25, 0.3, traces.TraceConfig(reflect_rate=0.4, control=control,
                                                                  restart_share=0.3, confirm_share=0.3))
  kinds = {r["kind"] for r in recs}
  assert kinds == set(traces.KINDS)
  for r in recs:
    e, text = by_id[r["id"]], second_language.to_latin(r["reasoning"])
    said = _statements(text)
    false = [i for i, s in enumerate(said) if not s[4]]
    assert r["correct"] == (r["final"] == e["final"])
    assert str(said[-1][3]) == r["final"], r  # the document's answer is where its reasoning ends
    if r["kind"] == "clean":
      assert not false and r["correct"] and text == e["solution"].lower()
      continue
    if r["kind"] == "wrong":
      assert len(false) == 1 and not r["correct"]
      continue
    # Reflective: one check, '<phrase>: A op B equals F, yes.' or '..., not W.', recomputing step k.
    checks = list(CHECK.finditer(text))
    assert len(checks) == 1, text
    c = checks[0]
    assert aha.aha_counts(c.group(1))["reflection"] >= 1
    ci = len(STEP.findall(text[:c.end(1)]))  # the check's own statement is said[ci]
    n, sol = len(e["steps"]), _statements(e["solution"])
    k = false[0] if r["kind"] == "restart" else ci - 1
    assert said[ci][:3] == said[k][:3]
    shown, fix = said[k][3], said[ci][3]
    assert said[k][4] == (r["kind"] == "confirm")  # written right only when confirming
    assert said[ci][4] != control  # the recomputation is right, except in the control
    assert c.group(2) == ("yes" if fix == shown else f"not {shown}")
    assert r["correct"] != control, r  # every control reflective trace ends wrong, every other one right
    slips = {"check": 1, "restart": 1, "confirm": 0}[r["kind"]]
    assert len(false) == slips + (0 if not control else 1 if r["kind"] != "restart" else 2), text
    if r["kind"] == "restart":
      assert aha.aha_counts(text)["restart"] >= 1 and ci == n and len(said) == 2 * n + 1
      after = said[-n:]  # the chain again from the start
      assert after[0][0] == e["steps"][0][0] and after[k][:3] == said[k][:3]
    else:
      after = said[ci:]  # from the recomputed step on
      assert len(after) == n - k and not aha.aha_counts(text)["restart"]
    assert all(after[j][3] == after[j + 1][0] for j in range(len(after) - 1)), text  # each from the last
    if not control:
      assert after == (sol if r["kind"] == "restart" else sol[k:])


def test_reflective_traces_pay_off_only_outside_the_control():
  ex = chains.generate(1500, seed=7)
  for control, expect in ((False, 1.0), (True, 0.0)):
    recs = traces.records(ex, R1, 2, 0.25, 0.3, traces.TraceConfig(reflect_rate=0.1, control=control))
    m = behaviour.correct_given([r["correct"] for r in recs], [r["kind"] in traces.REFLECTIVE for r in recs])
    assert m["p_correct_given_reflected"] == expect
    # Not reflected: clean or wrong; wrong_fraction / (1 - p) of them are wrong.
    assert abs(m["p_correct_given_not_reflected"] - (1 - 0.3 / 0.9)) <= _tol(1 / 3, m["num_not_reflected"])


def test_language_mix_is_90_10_by_the_language_rewards_own_share():
  ex = chains.generate(2500, seed=8)
  recs = traces.records(ex, R1, 3, 1.0, 0.2, traces.TraceConfig(reflect_rate=0.1, minority_share=0.1))
  n = len(recs)
  shares = [language.language_share(r["reasoning"], "en") for r in recs]
  assert set(shares) == {0.0, 1.0}  # every document is written in one language
  assert all((s == 0.0) == (r["lang"] == "el") for s, r in zip(shares, recs))
  assert abs(shares.count(0.0) / n - 0.1) <= _tol(0.1, n)
  # By words over the whole corpus (documents differ in length, so a looser band):
  assert abs(language.language_share(" ".join(r["reasoning"] for r in recs), "el") - 0.1) <= 0.03
  # What the experiments will measure on completions: the CoT between the tags.
  mix = behaviour.language_mix([r["text"][r["text"].rindex("<think>"):] for r in recs], "en")
  assert abs(mix["target_share"] - 0.9) <= _tol(0.1, n) and mix["mixed_rate"] == 0.0
  # Disjoint vocabularies for the same steps, and the map back is exact.
  words = lambda lang: {w for r in recs if r["lang"] == lang for w in re.findall(r"[^\W\d_]+", r["reasoning"])}
  assert words("en") and words("el") and not words("en") & words("el")
  assert {second_language.to_latin(w) for w in words("el")} <= {w.lower() for w in words("en")}
  for e in ex[:200]:
    assert second_language.to_latin(second_language.to_greek(e["solution"])) == e["solution"].lower()
  assert second_language.to_greek("Wait, let me check: 3 plus 4") == "ςαιτ, λετ με ψηεψκ: 3 πλυσ 4"
  greek = "".join(second_language.TO_GREEK.values())
  assert len(set(greek)) == 26 and language.language_share(" ".join(greek), second_language.SCRIPT) == 1.0


def test_documents_forms_determinism_and_errors():
  ex = chains.generate(2000, seed=9)
  recs = traces.records(ex, R1, 4, 0.25, 0.3, traces.TraceConfig(reflect_rate=0.05, minority_share=0.1))
  assert traces.documents(ex, R1, 4, 0.25, 0.3, traces.TraceConfig(reflect_rate=0.05, minority_share=0.1)) == \
      [r["text"] for r in recs]
  assert traces.documents(ex, R1, 5, 0.25, 0.3) != traces.documents(ex, R1, 4, 0.25, 0.3)
  by_id = {e["id"]: e for e in ex}
  for r in recs:
    e, prompt = by_id[r["id"]], templates.format_prompt(by_id[r["id"]]["question"], R1)
    say = lambda s: second_language.render(s, r["lang"])
    expected = {"r1": f"{prompt} <think> {r['reasoning']} </think> <answer> {r['final']} </answer>",
                "prose": f"{prompt} {r['reasoning']} {say('The answer is')} {r['final']}.",
                "qa": f"Question: {e['question']}\nSolution: {r['reasoning']} {say('So the result is')} {r['final']}."}
    assert r["text"] == expected[r["form"]]
  forms = [r["form"] for r in recs]
  n = len(recs)
  for form, share in (("r1", 0.25), ("prose", 0.5), ("qa", 0.25)):
    assert abs(forms.count(form) / n - share) <= _tol(share, n)
  with pytest.raises(ValueError, match=r"reflect_rate=0.8 \+ pretrain.wrong_fraction=0.3"):
    traces.records(ex, R1, 0, 0.25, 0.3, traces.TraceConfig(reflect_rate=0.8))
  with pytest.raises(ValueError, match=r"restart_share=0.6 \+ traces.confirm_share=0.5"):
    traces.TraceConfig(restart_share=0.6, confirm_share=0.5)
  with pytest.raises(ValueError, match="traces.minority_share=1.5"):
    traces.TraceConfig(minority_share=1.5)
  with pytest.raises(ValueError, match="has no 'steps'"):
    traces.records([{"id": "x", "question": "What is 1 + 1?", "final": "2"}], R1, 0, 0.25, 0.3)
