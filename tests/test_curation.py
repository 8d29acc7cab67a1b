"""Curation: every filter rule on hand-made samples, the fixed order and the count table, dedup,
informativeness ordering and selection, the preference rule's priority, JSONL with provenance.

Pure Python, no JAX; numeric references only (the grader decides numbers at once, no sandbox)."""
import dataclasses
import json

import pytest

from r1jax import curation as cur
from r1jax import curation_filters as filters
from r1jax import curation_selection as selection
from r1jax import templates
from r1jax.tasks import general

CFG = filters.FilterConfig(min_tokens=3, max_tokens=10)


def mk(cot="so 3 plus 4 is 7", ans="7", *, answer="7", prompt="p1", num_tokens=5, truncated=False, **kw):
  completion = f"<think> {cot} </think> <answer> {ans} </answer>"
  return cur.Sample(prompt, kw.pop("completion", completion), answer, num_tokens, truncated,
                    {"policy": "runs/r1_zero/policy", "step": 40, "seed": 0, "sample_index": 0}, **kw)


# Unique filler words: no n-gram of a filler repeats, and no two samples share one.
FILL = [f"w{i}" for i in range(100)]
SENT = "we add the two numbers and get seven"  # 8 distinct words: one 8-gram
LOOP12 = "xyzuvwpqrstk"  # 12 distinct characters: no shorter period


def ngram_cot(copies):
  # SENT occurs `copies` times, separated by distinct fillers, so its 8-gram occurs exactly `copies`
  # times and every 8-gram that straddles a filler occurs once.
  return " ".join(f"{SENT} {FILL[i]}" for i in range(copies))


@pytest.mark.parametrize("name,sample,cfg,reason", [
    ("overlong", mk(truncated=False), CFG, None),
    ("overlong", mk(truncated=True), CFG, "overlong"),
    ("length", mk(num_tokens=2), CFG, "too_short"),
    ("length", mk(num_tokens=3), CFG, None),  # bounds are inclusive
    ("length", mk(num_tokens=10), CFG, None),
    ("length", mk(num_tokens=11), CFG, "too_long"),
    ("length", mk(num_tokens=10**6), filters.FilterConfig(), None),  # max_tokens None: no upper bound
    ("format", mk(), CFG, None),
    ("format", mk(completion="<think> x </think> 7"), CFG, "format"),
    ("format", mk(completion="<think> x </think> <answer> 7 </answer> <answer> 8 </answer>"), CFG, "format"),
    ("format", mk(completion="x </think> <answer> 7 </answer>"), CFG, "format"),
    ("format", mk(completion="x </think> <answer> 7 </answer>"), filters.FilterConfig(think_in_prompt=True), None),
    ("repetition", mk(cot=ngram_cot(4)), CFG, None),  # max_ngram_repeats = 4 occurrences allowed
    ("repetition", mk(cot=ngram_cot(5)), CFG, "repetition"),
    ("repetition", mk(cot=ngram_cot(5)), filters.FilterConfig(max_ngram_repeats=5), None),
    ("repetition", mk(cot="I am sure " + "!" * 31), CFG, None),  # 31 < min_suffix_chars = 32
    ("repetition", mk(cot="I am sure " + "!" * 32), CFG, "repetition"),
    ("repetition", mk(cot="I am sure " + "ab" * 16), CFG, "repetition"),
    ("repetition", mk(cot="start " + LOOP12 * 3), CFG, None),  # 36 chars but 3 < suffix_repeats = 4
    ("repetition", mk(cot="start " + LOOP12 * 4), CFG, "repetition"),
    ("repetition", mk(cot="start " + LOOP12 * 4 + " then the end"), CFG, None),  # not at the end
    # The answer is outside the CoT: a loop there is not counted.
    ("repetition", mk(ans="7 " + "!" * 40), CFG, None),
    # Share of English words in the CoT: 19 of 20 (each Han character is a word) = 0.95 >= 0.95.
    ("language", mk(cot=" ".join(["seven"] * 19) + " 是"), CFG, None),
    ("language", mk(cot=" ".join(["seven"] * 18) + " 是是"), CFG, "language"),  # 18 / 20 = 0.9
    ("language", mk(cot="3 + 4 = 7"), CFG, None),  # no words: no other language
    ("language", mk(cot="three plus four", ans="七"), CFG, None),  # only the CoT counts
    ("language", mk(cot="三加四等于七"), filters.FilterConfig(language="zh"), None),
    ("language", mk(cot="三加四等于七"), CFG, "language"),
    ("correct", mk(ans="7"), CFG, None),
    ("correct", mk(ans="7.0"), CFG, None),  # the answer grader: numbers by value
    ("correct", mk(ans="8"), CFG, "incorrect"),
    ("correct", mk(completion="no answer at all"), CFG, "incorrect"),
    # A sampler's precomputed accuracy (compute_rewards) is used, not regraded.
    ("correct", mk(ans="8", scores={"accuracy": 1.0}), CFG, None),
    ("correct", mk(ans="7", scores={"accuracy": 0.0}), CFG, "incorrect"),
    # Generated general tasks: exact words in order ('dog fox' is not 'fox dog').
    ("correct", mk(ans="fox dog", answer="fox dog", example={"task": general.TASK}), CFG, None),
    ("correct", mk(ans="dog fox", answer="fox dog", example={"task": general.TASK}), CFG, "incorrect"),
])
def test_each_filter_keeps_and_drops_with_its_reason(name, sample, cfg, reason):
  assert filters.FILTERS[name](sample, cfg) == reason
  kept, counts = filters.filter_samples([sample], cfg, (name,))
  assert (kept == []) == (reason is not None)
  assert counts["kept"] == (reason is None) and (reason is None or counts[reason] == 1)


def test_repetition_measures_against_hand_counts():
  assert filters.max_ngram_count(ngram_cot(5), 8) == 5
  assert filters.max_ngram_count("a b a b a", 2) == 2  # 'a b' twice, 'b a' twice
  assert filters.max_ngram_count("x a b a b", 2) == 2  # the last window counts
  assert filters.max_ngram_count("a b", 3) == 0
  assert filters.repeated_suffix("x " + "ab" * 5 + "  ", 3) == 10
  assert filters.repeated_suffix("x " + "ab" * 2, 3) == 0
  assert filters.repeated_suffix("aaaa", 2) == 4  # a x 4 (also aa x 2): 4 characters


def test_filters_run_in_a_fixed_order_and_count_by_first_reason():
  samples = [
      mk(),  # kept
      mk(ans="8", truncated=True, num_tokens=50),  # overlong, also too long and wrong
      mk(ans="8", num_tokens=50),  # too_long before incorrect
      mk(completion="no tags, 8", num_tokens=1),  # too_short before format
      mk(completion="<think> 是是是 </think> 7"),  # format before language
      mk(cot="!" * 40, ans="8"),  # repetition before incorrect
      mk(cot="三 plus 四", ans="8"),  # language before incorrect
      mk(ans="8"),  # incorrect
      mk(cot=" so 3  plus 4 is 7 "),  # a duplicate of the first, up to whitespace
      mk(prompt="p2"),  # the same completion for another prompt is kept
      mk(prompt="p2", ans="7.0", num_tokens=6),  # kept: a distinct completion
  ]
  calls = []
  grader = lambda c, ex: calls.append(c) or filters.default_grader(c, ex)
  kept, counts = filters.filter_samples(samples, CFG, grader=grader)
  assert [s.prompt for s in kept] == ["p1", "p2", "p2"]
  assert kept[0].completion == samples[0].completion and kept[2].num_tokens == 6
  assert counts == {"total": 11, "kept": 3, "overlong": 1, "too_short": 1, "too_long": 1, "format": 1,
                    "repetition": 1, "language": 1, "incorrect": 1, "duplicate": 1}
  # Only the samples that passed every cheaper filter were graded, once each.
  assert len(calls) == 5
  # The order is fixed: filters given in another order give the same result.
  assert filters.filter_samples(samples, CFG, tuple(reversed(filters.ORDER)))[1] == counts
  # A subset counts only its own reasons.
  _, some = filters.filter_samples(samples, CFG, ("correct", "overlong"))
  assert some == {"total": 11, "kept": 4, "overlong": 1, "incorrect": 6}
  with pytest.raises(ValueError, match="unknown filters \\['speling'\\]"):
    filters.filter_samples(samples, CFG, ("speling",))


def test_count_table_rows():
  counts = {"total": 8, "kept": 3, "overlong": 1, "format": 0, "incorrect": 4}
  lines = filters.format_counts(counts).splitlines()
  rows = [line.split() for line in lines[2:]]
  assert lines[0].split()[-2:] == ["samples", "share"] and set(lines[1]) <= {"-", " "}
  assert rows == [["kept", "3", "37.5%"], ["overlong", "1", "12.5%"], ["format", "0", "0.0%"],
                  ["incorrect", "4", "50.0%"], ["total", "8", "100.0%"]]
  assert "-" in filters.format_counts({"total": 0, "kept": 0})


def test_kept_samples_carry_their_scores():
  s = mk(cot="three plus four 是", scores={"reward": 1.5})
  (kept,), _ = filters.filter_samples([s], dataclasses.replace(CFG, min_language_share=0.5))
  # share by hand: 'three', 'plus', 'four' latin, '是' one CJK word: 3 / 4.
  assert kept.scores == {"reward": 1.5, "accuracy": 1.0, "format": 1.0, "language_share": 0.75, "length": 5}
  (ungraded,), _ = filters.filter_samples([s], CFG, ("overlong",))
  assert "accuracy" not in ungraded.scores and ungraded.scores["format"] == 1.0


def test_deduplicate_exact_and_whitespace_per_prompt():
  a, a_ws, a_again = mk(cot="x y"), mk(cot="x\n  y"), mk(cot="x y", num_tokens=9)
  other_prompt = mk(cot="x y", prompt="p2")
  b = mk(cot="x z")
  got = filters.deduplicate([a, a_ws, b, a_again, other_prompt])
  assert got == [filters.score(s, filters.FilterConfig()) for s in (a, b, other_prompt)]  # the first one kept
  exact = filters.deduplicate([a, a_ws, b, a_again, other_prompt], filters.FilterConfig(dedup_whitespace=False))
  assert [s.completion for s in exact] == [a.completion, a_ws.completion, b.completion, a.completion]
  assert [s.prompt for s in exact] == ["p1", "p1", "p1", "p2"]


def test_pass_rates_and_informativeness_order():
  assert selection.pass_rates(["a", "b", "a", "a", "b"], [1, 0, 0, 1, 0]) == {"a": 2 / 3, "b": 0.0}
  rates = {"never": 0.0, "f": 0.875, "half": 0.5, "always": 1.0, "q1": 0.25, "q3": 0.75, "g": 0.125}
  # |r - 0.5|: half 0, q1 = q3 = 0.25 (mapping order breaks the tie), f = g = 0.375, then 0 and 1 as given.
  assert selection.informativeness_order(rates) == ["half", "q1", "q3", "f", "g", "never", "always"]
  flipped = dict(reversed(list(rates.items())))
  assert selection.informativeness_order(flipped) == ["half", "q3", "q1", "g", "f", "always", "never"]
  assert selection.informativeness_order({"x": 1e-9, "y": 1.0}) == ["x", "y"]  # strictly between
  with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
    selection.informativeness_order({"x": 1.5})


def test_select_takes_at_most_k_per_prompt_in_informativeness_order():
  samples = [mk(prompt=p, num_tokens=i + 3) for p in ("easy", "mid", "hard", "none") for i in range(3)]
  rates = {"easy": 1.0, "none": 0.0, "hard": 0.2, "mid": 0.6}
  got = selection.select(samples, rates, n=5, per_prompt=2)
  assert [(s.prompt, s.num_tokens) for s in got] == [("mid", 3), ("mid", 4), ("hard", 3), ("hard", 4), ("easy", 3)]
  assert len(selection.select(samples, rates, n=100, per_prompt=2)) == 8
  assert selection.select(samples, rates, n=0, per_prompt=2) == []
  with pytest.raises(ValueError, match="no pass rate for 1 prompts"):
    selection.select(samples, {"easy": 1.0, "none": 0.0, "hard": 0.2}, n=5, per_prompt=2)


def test_preference_pairs_priority_correct_then_language_then_concise():
  mixed = "三 加 四 is seven"  # 3 of 5 words CJK: share 0.4
  a = mk(cot="three plus four is seven and so on", num_tokens=100)  # correct, English, long
  b = mk(ans="8", num_tokens=10)  # wrong, English, short
  c = mk(cot=mixed, num_tokens=10)  # correct, mixed, short
  d = mk(cot="three plus four", num_tokens=50)  # correct, English, half of a
  e = mk(cot="3 + 4", num_tokens=45)  # correct, no words (in language), 45 > 0.8 * 50
  other = mk(prompt="p2", ans="8", num_tokens=1)  # alone in its prompt: no pair
  near = [mk(prompt="p3", num_tokens=45), mk(prompt="p3", cot="three plus four", num_tokens=50)]  # a tie
  edge = [mk(prompt="p4", num_tokens=40), mk(prompt="p4", cot="three plus four", num_tokens=50)]  # 40 = 0.8 * 50
  pairs = selection.preference_pairs([a, b, c, d, e, other, *near, *edge])
  got = [(p.chosen, p.rejected, p.reason) for p in pairs]
  A, B, C, D, E = (s.completion for s in (a, b, c, d, e))
  assert got == [
      (A, B, "correct"),  # correctness beats length
      (A, C, "language"),  # language beats length
      (D, A, "concise"),  # 50 <= 0.8 * 100
      (E, A, "concise"),
      (C, B, "correct"),  # correctness beats language
      (D, B, "correct"),
      (E, B, "correct"),
      (D, C, "language"),
      (E, C, "language"),
      # d, e: 45 vs 50 is within the ratio: a tie, no pair
      (edge[0].completion, edge[1].completion, "concise"),
  ]
  assert [p.prompt for p in pairs] == ["p1"] * 9 + ["p4"]


def test_jsonl_round_trip_with_provenance(tmp_path):
  samples = [mk(cot="三 plus 四", scores={"accuracy": 1.0, "language_share": None}, example={"question": "3+4?"}),
             mk(prompt="p2", truncated=True)]
  path = tmp_path / "data" / "cold_start.jsonl"
  assert cur.write_jsonl(path, samples) == 2
  assert cur.read_samples(path) == samples
  first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
  assert first["source"] == {"policy": "runs/r1_zero/policy", "step": 40, "seed": 0, "sample_index": 0}
  assert "三" in path.read_text(encoding="utf-8")  # written as UTF-8, not escaped


@pytest.mark.parametrize("edit,message", [
    (lambda r: r.pop("completion"), "missing fields \\['completion'\\]"),
    (lambda r: r.update(num_tokens="5"), "field 'num_tokens' is str, expected int"),
    (lambda r: r.update(num_tokens=True), "field 'num_tokens' is bool, expected int"),
    (lambda r: r["source"].pop("seed"), "source lacks \\['seed'\\]"),
    (lambda r: r.update(colour="red"), "unknown fields \\['colour'\\]"),
])
def test_read_samples_names_the_bad_line(tmp_path, edit, message):
  row = dataclasses.asdict(mk())
  edit(row)
  path = tmp_path / "bad.jsonl"
  path.write_text(json.dumps(dataclasses.asdict(mk())) + "\n\n" + json.dumps(row) + "\n")
  with pytest.raises(ValueError, match=f"bad.jsonl:3: {message}") as e:
    cur.read_samples(path)
  assert "\n" not in str(e.value)
  path.write_text("{not json\n")
  with pytest.raises(ValueError, match="bad.jsonl:1: not JSON"):
    cur.read_samples(path)


def test_reference_samples_of_general_tasks_pass_every_filter():
  class WordTokenizer:
    encode = staticmethod(str.split)

  examples = general.generate(10, seed=3)
  samples = cur.reference_samples(examples, templates.R1_ZERO_TEMPLATE, WordTokenizer(), seed=3)
  kept, counts = filters.filter_samples(samples, filters.FilterConfig(language="en", min_language_share=1.0))
  assert counts["kept"] == 10 and len(kept) == 10
  s = samples[1]
  assert s.prompt == templates.format_prompt(examples[1]["question"], templates.R1_ZERO_TEMPLATE)
  assert s.num_tokens == len(s.completion.split()) and not s.truncated
  assert s.source == {"policy": "generated", "step": None, "seed": 3, "sample_index": 1}
  assert s.answer == examples[1]["final"] and s.example["task"] == general.TASK


def test_filter_config_errors_name_the_field():
  with pytest.raises(ValueError, match="min_language_share=1.5"):
    filters.FilterConfig(min_language_share=1.5)
  with pytest.raises(ValueError, match="max_tokens=2"):
    filters.FilterConfig(min_tokens=3, max_tokens=2)
  with pytest.raises(ValueError, match="language target 'klingon'"):
    filters.FilterConfig(language="klingon")
