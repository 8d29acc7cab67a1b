"""The mutation check (tests/mutation_check.py) cannot rot: every planted bug still applies."""
import importlib.util
import pathlib
import sys

_PATH = pathlib.Path(__file__).with_name("mutation_check.py")
_spec = importlib.util.spec_from_file_location("mutation_check", _PATH)
mutation_check = sys.modules.setdefault("mutation_check", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(mutation_check)


def test_every_mutation_snippet_occurs_once_in_the_code():
  assert mutation_check.check_snippets() == []


def test_every_bug_named_in_the_issue_is_a_mutation():
  named = {m.name for m in mutation_check.MUTATIONS if m.issue}
  assert named == {"step_policy_gradient_zero", "loop_rewards_grouping_swapped", "loop_ref_logp_from_policy",
                   "loop_ignores_scale_rewards", "loop_ignores_mask_truncated", "loop_dynamic_sampling_off",
                   "sampler_ignores_temperature", "sampler_top_p_off", "optimizer_no_clipping"}
  assert len(mutation_check.MUTATIONS) >= 40
