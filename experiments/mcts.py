r"""MCTS with a value model against sampling at equal generated tokens, the approach DeepSeek-R1
tried and dropped (sec. 4.2): token-level search explodes with branching and depth, and a
fine-grained value model is hard to train.

The embedded world: the chains of experiments/aha.py (a tiny base pretrained on solved chains),
held-out chains of 2..4 operations (`mcts.depths`; the base's corpus holds 2..4). Stages: the base; `value_data`, its own samples
on training chains of every depth, each token labelled with the sample's outcome; `value_model`, a
scalar head on the base's body trained on those labels (binary cross-entropy); `search`, per depth
and branching k (`mcts.branching`): token-level MCTS (children: the top-k next tokens) and
step-level MCTS (children: k sampled steps "a plus b equals c."), PUCT with the value model at the
leaves (`r1jax.search`), against best-of-n (by the value model) and majority vote over n samples,
n matching each problem's search tokens, and greedy decoding for reference. Forward passes and
tokens per problem and per solved problem for every arm; a table in <workdir>/report.md and
summary.json:

    python experiments/mcts.py --config.workdir=runs/mcts

`--config.mcts.base=DIR` starts from a given base policy, `--config.mcts.value_model=DIR` uses a
trained value model (a run's `value_model/model`). Reproduced means: token-level cost (forward
passes, tokens per solved problem) grows fastest with depth and branching, and on shallow chains
sampling matches or beats search at the same tokens. Stages skip when finished and resume when
killed (the search stage cell by cell).
"""
import json
import os
import pathlib
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # also when run as experiments/X.py
sys.path.insert(0, REPO)  # run from a checkout without installing

from r1jax import experiment  # noqa: E402
from r1jax import config_sections  # noqa: E402
from r1jax import pipelines  # noqa: E402
from r1jax.recipes import AHA  # noqa: E402
from r1jax import stages as stages_lib  # noqa: E402
from r1jax.stages import mcts as mcts_stage  # noqa: E402
from r1jax.stages import pretrain  # noqa: E402


# The grader reads the <answer> tag, so the base mostly answers in the R1 form (aha's base: a
# quarter): the arms then differ in what they answer, not in whether they use the tag.
CONFIG = AHA | {"workdir": "runs/mcts", "stage": "all", "pretrain.r1_fraction": 0.9}


def get_config():
  return config_sections.apply_overrides(pipelines.r1_config(), CONFIG, "config mcts")


def stages(base: str = "", value_model: str = ""):
  """The experiment's stages; with a given `base` policy no pretraining, with a given `value_model`
  no labelling and training (`mcts.base`, `mcts.value_model`)."""
  policy = base or "pretrain.policy"
  out = [] if base else [stages_lib.Stage("pretrain", pretrain.run, "base")]
  if not value_model:
    out += [stages_lib.Stage("value_data", mcts_stage.data, "value_data", {"policy": policy}),
            stages_lib.Stage("value_model", mcts_stage.value_model, "value_model",
                             {"policy": policy, "data": "value_data.data"})]
  return out + [stages_lib.Stage("search", mcts_stage.run_search, "search",
                                 {"policy": policy, "value_model": value_model or "value_model.model"})]


def run(cfg) -> dict:
  run_cfg = pipelines.validate(cfg)
  m = run_cfg.mcts
  res = pipelines.run(cfg, stages=stages(m.base, m.value_model), given={})
  ctx, out = res.ctx, res.outputs
  summary = json.loads(pathlib.Path(out["search"]["summary"]).read_text())
  vm = pathlib.Path(m.value_model).parent if m.value_model else ctx.workdir / "value_model"
  summary["value_model"] = json.loads((vm / "summary.json").read_text())
  summary["value_data"] = json.loads((vm.parent / "value_data" / "summary.json").read_text())
  table = pathlib.Path(out["search"]["table"]).read_text()
  (ctx.workdir / "report.md").write_text(mcts_stage.markdown(summary["rows"]) + "\n"
                                         + mcts_stage.markdown(summary["depths"], mcts_stage.DEPTH_TABLE))
  (ctx.workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  print(table)
  print(f"value model (held out): {summary['value_model']}\nreport: {ctx.workdir / 'report.md'}")
  return summary


if __name__ == "__main__":
  experiment.main(run_fn=run)
