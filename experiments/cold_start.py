r"""Cold-start size (DeepSeek-R1 sec. 2.3.1): how many curated long chain-of-thought examples the
cold start needs before reasoning RL.

As in R1, the cold-start data come from an R1-Zero policy's readable outputs: once for the whole
sweep (<root>/_pool) the tiny base is pretrained, R1-Zero is trained from it (`r1.reasoning_rl_steps`
+ `r1.rl_all_steps` GRPO steps) and answers `cold_start.num_prompts` training prompts k times, the
base's own samples giving each prompt's pass rate. Each entry then SFTs the base on N of those
samples, curated (correct, strict format, readable, not overlong, one a prompt, in informativeness
order) or drawn at random from all of them (unfiltered), runs the same reasoning-RL budget
(`r1.reasoning_rl_steps` steps), and evaluates the held-out problems after the SFT and after RL:

    python experiments/cold_start.py --root runs/cold_start

Reproduced means: accuracy after RL rises steeply up to a few hundred curated examples, then
saturates, and random selection stays below curated at equal N. Same options as
experiments/aha.py (`--index`, `--gather`, `--set FIELD=VALUE`, applied to the pool too).
"""
import dataclasses
import json
import os
import pathlib
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # also when run as experiments/X.py
sys.path.insert(0, REPO)  # run from a checkout without installing

from r1jax import curation  # noqa: E402
from r1jax import config_sections  # noqa: E402
from r1jax import pipelines  # noqa: E402
from r1jax.recipes import R1_TINY  # noqa: E402
from r1jax import stages as stages_lib  # noqa: E402
from r1jax import sweep as sweep_lib  # noqa: E402
from r1jax.stages import cold_start_data  # noqa: E402

CONFIG = R1_TINY | {"r1.compare_r1_zero": True, "r1.distill": False, "cold_start.num_prompts": 2048,
                    "cold_start.samples_per_prompt": 4, "cold_start.per_prompt": 1}
SIZES = (0, 10, 30, 100, 300, 1000, 2000)
ENTRY_KEYS = ("cold_start.max_examples", "cold_start.selection")
"""What differs between entries; the shared pool is built from the rest of the overrides."""
POOL = ("pretrain", "evaluate_base", "r1_zero", "evaluate_r1_zero", "cold_start_data")
ENTRY = ("cold_start_sft", "evaluate_cold_start_sft", "reasoning_rl", "evaluate_reasoning_rl")
CURVES = ("rewards/accuracy/mean", "completions/mean_length")


def get_config():
  return config_sections.apply_overrides(pipelines.r1_config(), CONFIG, "config cold_start")


def sweep():
  return ([{"cold_start.max_examples": n} for n in SIZES]
          + [{"cold_start.max_examples": n, "cold_start.selection": "random"} for n in SIZES if n])


def _stages(run_cfg, names, **inputs):
  out = [s for s in stages_lib.r1(run_cfg) if s.name in names]
  return [dataclasses.replace(s, inputs=s.inputs | inputs[s.name]) if s.name in inputs else s for s in out]


def pool(overrides: dict, root: pathlib.Path) -> dict:
  """The base, the R1-Zero teacher and its candidates, built once for every entry of the sweep
  (skipped when complete: the pipeline's records); cold_start_data's outputs and the base policy."""
  common = {k: v for k, v in overrides.items() if k not in ENTRY_KEYS}
  cfg = config_sections.apply_overrides(get_config(), common | {"workdir": str(root / "_pool")}, "cold_start pool")
  run_cfg = pipelines.validate(cfg)
  out = pipelines.run(cfg, stages=_stages(run_cfg, POOL, cold_start_data={"teacher": "r1_zero.policy"}), given={}).outputs
  return out["cold_start_data"] | {"base": out["pretrain"]["policy"]}


def run(overrides, workdir):
  workdir = pathlib.Path(workdir)
  shared = pool(dict(overrides), workdir.parent)
  cfg = config_sections.apply_overrides(get_config(), dict(overrides) | {"workdir": str(workdir)}, "sweep entry")
  run_cfg = pipelines.validate(cfg)
  chosen, counts = cold_start_data.choose(curation.read_samples(shared["candidates"]), run_cfg.cold_start,
                                          run_cfg.curation)
  workdir.mkdir(parents=True, exist_ok=True)
  curation.write_jsonl(workdir / "data.jsonl", chosen)
  pipelines.run(cfg, stages=_stages(run_cfg, ENTRY), given={
      "cold_start_sft.policy": shared["base"], "cold_start_sft.data": str(workdir / "data.jsonl")})
  curve = workdir / "metrics.jsonl"  # where the sweep's curve plots look
  if not curve.exists():
    curve.symlink_to("reasoning_rl/metrics.jsonl")
  ev = lambda stage: json.loads((workdir / stage / "eval" / "summary.json").read_text())
  sft_ev, rl_ev = ev("cold_start_sft"), ev("reasoning_rl")
  teacher = json.loads((workdir.parent / "_pool" / "r1_zero" / "eval" / "summary.json").read_text())
  return ({"examples": len(chosen), "examples_correct": sum(s.scores["accuracy"] == 1.0 for s in chosen),
           "candidates": counts["total"], "sft_accuracy": sft_ev["pass@1"], "sft_format_rate": sft_ev["format_rate"],
           "final_accuracy": rl_ev["pass@1"], "final_format_rate": rl_ev["format_rate"],
           "teacher_accuracy": teacher["pass@1"]}
          | sweep_lib.curve_summary(curve, keys=CURVES))


if __name__ == "__main__":
  sweep_lib.main(sweep(), run, default_root="runs/cold_start", curves=CURVES)
