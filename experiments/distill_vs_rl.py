r"""Distillation vs direct RL at equal compute (DeepSeek-R1 sec. 4.1): for a small model, SFT on a
larger RL-trained teacher's samples beats RL of the small model itself.

The teacher: an R1-Zero run of the embedded default (the tiny base pretrained here, then
`r1.reasoning_rl_steps` + `r1.rl_all_steps` GRPO steps), or any policy given with
`--config.distill.teacher=DIR` (e.g. the R1 pipeline's `runs/r1/rl_all/policy`). The student: the
smaller transformer of the `distill` section, pretrained here on the same corpus. Arm (a)
distills: SFT of the student on the teacher's correct, readable samples. Arm (b) runs GRPO on the
student from the same student base, for as many steps as make its FLOPs equal to arm (a)'s,
teacher sampling included (2 N per generated or prompt token of a forward pass, 6 N per trained
token, N the parameters; attention left out at these lengths). Both arms are evaluated on the
held-out problems (pass@1 over k samples, pass@k), and the table gives each arm's FLOPs:

    python experiments/distill_vs_rl.py --config.workdir=runs/distill_vs_rl

Reproduced means: the distilled student's pass@1 is above the RL student's at equal FLOPs.
Stages skip when finished and resume when killed, as in experiments/r1.py.
"""
import dataclasses
import functools
import json
import os
import pathlib
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # also when run as experiments/X.py
sys.path.insert(0, REPO)  # run from a checkout without installing

from r1jax import curation  # noqa: E402
from r1jax import experiment  # noqa: E402
from r1jax import config_sections  # noqa: E402
from r1jax import pipelines  # noqa: E402
from r1jax.recipes import R1_TINY  # noqa: E402
from r1jax import policy as policy_lib  # noqa: E402
from r1jax import policy_samples  # noqa: E402
from r1jax.logger import format_table  # noqa: E402
from r1jax import stages as stages_lib  # noqa: E402
from r1jax import templates  # noqa: E402
from r1jax.stages import evaluate, grpo  # noqa: E402

CONFIG = R1_TINY | {"workdir": "runs/distill_vs_rl"}
TEACHER = ("pretrain", "evaluate_base", "r1_zero", "evaluate_r1_zero")
ARMS = ("student_base", "evaluate_student_base", "distill", "evaluate_distill")


def get_config():
  return config_sections.apply_overrides(pipelines.r1_config(), CONFIG, "config distill_vs_rl")


def _eval(name):
  return stages_lib.Stage(f"evaluate_{name}", evaluate.run, f"{name}/eval", {"policy": f"{name}.policy"})


def rl_step_flops(n_params: int, rows: int, tokens_per_row: float, beta: float) -> float:
  """Sampling (2N a token) + reference pass when beta > 0 (2N) + update (6N) over every token."""
  return (2 + (2 if beta > 0 else 0) + 6) * n_params * rows * tokens_per_row


def distill_flops(n_teacher: int, n_student: int, sampled_tokens: float, trained_tokens: float, epochs: int) -> float:
  """The teacher's sampling (2 N_t a token) + the student's SFT (6 N_s a token, every epoch)."""
  return 2 * n_teacher * sampled_tokens + 6 * n_student * trained_tokens * epochs


def _ntokens(tokenizer, text: str) -> int:
  return len(tokenizer.encode(text))


def run(cfg) -> dict:
  run_cfg = pipelines.validate(cfg)
  teacher = run_cfg.distill.teacher or "r1_zero.policy"
  stages = [s for s in stages_lib.r1(run_cfg) if s.name in ARMS + (TEACHER if teacher == "r1_zero.policy" else ())]
  stages = [dataclasses.replace(s, inputs=s.inputs | {"teacher": teacher}) if s.name == "distill" else s
            for s in stages]
  if teacher != "r1_zero.policy":
    stages.insert(0, stages_lib.Stage("evaluate_teacher", evaluate.run, "teacher/eval", {"policy": teacher}))
  res = pipelines.run(cfg, stages=stages, given={})
  ctx, out = res.ctx, res.outputs
  tok, d, workdir = ctx.tokenizer, run_cfg.distill, ctx.workdir
  n_t = policy_lib.load_config(out["r1_zero"]["policy"] if teacher == "r1_zero.policy" else teacher).num_params()
  n_s = policy_lib.load_config(out["student_base"]["policy"]).num_params()
  ev = lambda name: json.loads((workdir / name / "eval" / "summary.json").read_text())
  # Arm (a)'s FLOPs: every teacher sample generated (prompt + completion), the kept ones trained.
  kept = curation.read_samples(out["distill"]["data"])
  counts = json.loads(pathlib.Path(out["distill"]["counts"]).read_text())
  prompts = [templates.format_prompt(ex["question"], ctx.template)
             for ex in policy_samples.take(ctx.train_ex, d.num_prompts, d.seed)]  # the prompts distill.run samples
  prompt_len = sum(_ntokens(tok, p) for p in prompts) / len(prompts)
  teacher_eval = ev("r1_zero" if teacher == "r1_zero.policy" else "teacher")
  sampled = counts["total"] * (prompt_len + teacher_eval["mean_length"])
  trained = sum(_ntokens(tok, s.prompt) + s.num_tokens for s in kept)
  flops_a = distill_flops(n_t, n_s, sampled, trained, d.epochs)
  # Arm (b): GRPO steps of the student whose planned FLOPs match, at the student base's length.
  rows = run_cfg.train.prompts_per_step * run_cfg.grpo.num_generations
  per_step = rl_step_flops(n_s, rows, prompt_len + ev("student_base")["mean_length"], run_cfg.grpo.beta)
  steps = max(1, round(flops_a / per_step))
  rl = [stages_lib.Stage("student_rl", functools.partial(grpo.run, steps=steps), "student_rl",
                         {"policy": out["student_base"]["policy"]}), _eval("student_rl")]
  pipelines.run(cfg, stages=rl, given={})
  metrics = [json.loads(l) for l in (workdir / "student_rl" / "metrics.jsonl").read_text().splitlines()]
  flops_b = sum(rl_step_flops(n_s, rows, prompt_len + m["completions/mean_length"], run_cfg.grpo.beta)
                for m in metrics)
  k = run_cfg.eval.num_samples
  arms = {"teacher": (teacher_eval, None), "student base": (ev("student_base"), 0.0),
          "(a) distilled student": (ev("distill"), flops_a), "(b) RL student": (ev("student_rl"), flops_b)}
  rows_out = [(name, "-" if f is None else f"{f:.3g}", e["pass@1"], e.get(f"pass@{k}", e["pass@1"]), e["format_rate"],
               e["mean_length"]) for name, (e, f) in arms.items()]
  print(format_table(rows_out, ("arm", "FLOPs", "pass@1", f"pass@{k}", "format_rate", "mean_length")))
  summary = {"teacher_params": n_t, "student_params": n_s, "prompt_len": prompt_len, "rl_steps": steps, "distill_examples": len(kept),
             "flops_distill": flops_a, "flops_rl": flops_b,
             "arms": {name: {"flops": f} | {m: e.get(m) for m in ("pass@1", f"pass@{k}", "format_rate", "mean_length")}
                      for name, (e, f) in arms.items()}}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  return summary


if __name__ == "__main__":
  experiment.main(run_fn=run)
