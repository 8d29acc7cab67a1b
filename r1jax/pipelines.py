"""The experiments' pipelines: each owns its config sections and its stages (`Pipeline`), and
`run` takes one config through them: resolve it (`config.resolve`), check the machine
(`preflight`), build what the stages share once (`stages.context`), plan the memory, run the
stages (`pipeline.run`).

R1_ZERO (experiments/r1_zero.py), --config.stage:
- 'r1_zero': evaluate the base model, GRPO with the R1 template and rule rewards, evaluate
  again, print a summary table, write plots and `summary.json`.
- 'train': the base model and GRPO, without the held-out evaluations (sweeps, timing runs).
- 'pretrain': only build (or load) the base model.
- 'evaluate': only evaluate the base model.
- 'average': average the parameters of the run's last-k (or chosen) GRPO checkpoints into
  `workdir/policy_avg` (sharded: each checkpoint is read into the mesh, never gathered).

R1 (experiments/r1.py): 'all' or one stage name of `stages.R1_STAGES`; DISTILL
(experiments/distill.py) distills a given teacher.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Callable, Mapping

from absl import logging as absl_logging
import jax
import ml_collections
from ml_collections import config_dict

from r1jax import config as config_lib
from r1jax import config_sections
from r1jax import curation_filters
from r1jax import distributed
from r1jax import errors
from r1jax import pipeline
from r1jax import preflight
from r1jax import sharding
from r1jax import stages as stages_lib
from r1jax import workdir as workdir_lib
from r1jax.config import Run
from r1jax.logger import format_table, plot_run
from r1jax.sft import loop as sft_loop
from r1jax.stages import context
from r1jax.stages import (average, cold_start_data, distill, mcts, prm, rejection_sampling, reward_model,
                          rl_all)


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """An experiment's stages and the config sections they add to `config.LIBRARY_SECTIONS`."""
  sections: Mapping[str, type]
  stages: Callable[[Run], list]
  """The stage list of a resolved config."""
  selections: Mapping[str, tuple | None]
  """--config.stage values -> the stages each runs (None: all)."""
  planned: tuple | None = None
  """The --config.stage values that train, so plan the memory first (None: all)."""


R1_ZERO = Pipeline({"average": average.AverageConfig}, lambda run: stages_lib.r1_zero(),
                   stages_lib.R1_ZERO_SELECTIONS, planned=("r1_zero", "train"))
R1_SECTIONS = {"r1": stages_lib.R1Config, "cold_start": cold_start_data.ColdStartConfig,
               "curation": curation_filters.FilterConfig, "sft": sft_loop.SFTConfig,
               "rejection": rejection_sampling.RejectionConfig, "reward_model": reward_model.RewardModelConfig,
               "rl_all": rl_all.RLAllConfig, "distill": distill.DistillConfig, "prm": prm.PRMConfig,
               "mcts": mcts.MCTSConfig}
"""The sections experiments/r1.py adds to `base_config()` (one dataclass each)."""
R1 = Pipeline(R1_ZERO.sections | R1_SECTIONS, stages_lib.r1,
              {"all": None} | {name: (name,) for name in stages_lib.R1_STAGES})
DISTILL = dataclasses.replace(R1, stages=stages_lib.distill_stages)


def base_config() -> ml_collections.ConfigDict:
  """Every section of an experiment at the library's defaults (the one source of truth).

  Experiment files start from this and override only what differs. Differences from the bare
  dataclass defaults, all of them experiment-level: the model section's architecture fields are
  placeholders (None: the preset's, or the Hugging Face config.json's, value), `model.remat` and
  `grpo.grad_accum` default to 'auto' (the memory planner chooses), and the fields one section
  derives from another are placeholders: `sampling.num_samples` (= grpo.num_generations),
  `sampling.max_new_tokens` (= grpo.max_completion_length), `sampling.pad_id` (the tokenizer's),
  `optim.total_steps` (= train.steps), `pretrain.optim.total_steps` (= pretrain.steps),
  `checkpoint.directory` (= <workdir>/ckpt). `sampling.eos_ids` adds stop ids to the tokenizer's EOS.
  """
  section, lib = config_sections.section, config_lib.LIBRARY_SECTIONS
  c = ml_collections.ConfigDict()
  c.stage = "r1_zero"
  c.inputs = ""  # NAME=PATH,...: a stage's inputs from given paths instead of this work directory's stages
  # (STAGE.NAME=PATH: one stage's input, also when the whole pipeline runs)
  c.workdir = "runs/r1_zero"
  c.seed = 0
  c.template = "r1_zero"
  c.distributed = False  # several processes: r1jax.distributed.initialize() first (tpu_scripts/launch_*.sh)
  c.model = section(lib["model"], all_placeholders=True)
  c.model.preset = "tiny"
  c.model.hf_checkpoint = ""
  c.model.remat = "auto"
  c.tokenizer = section(lib["tokenizer"])
  c.mesh = section(lib["mesh"])
  c.data = section(lib["data"])
  c.pretrain = section(lib["pretrain"])
  c.traces = section(lib["traces"])  # data.source='chains': the pretraining corpus's behaviours
  c.pretrain.optim.total_steps = config_dict.placeholder(int)
  c.sampling = section(lib["sampling"], derived=("num_samples", "max_new_tokens", "pad_id"))
  c.sampling.prompt_buckets = ()
  c.grpo = section(lib["grpo"], grad_accum="auto")
  c.ppo = section(lib["ppo"])  # the critic of grpo.advantage_estimator='gae'
  c.optim = section(lib["optim"], derived=("total_steps",))
  c.rewards = section(lib["rewards"])
  c.train = section(lib["train"], rollout_chunks="auto")
  c.eval = section(lib["eval"])
  c.checkpoint = section(lib["checkpoint"], derived=("directory",))
  c.average = section(average.AverageConfig)
  c.lora = section(lib["lora"])
  return c


def r1_config() -> ml_collections.ConfigDict:
  """experiments/r1.py's config: every base section plus the pipeline's stages'."""
  c = base_config()
  c.stage = "all"
  c.workdir = "runs/r1"
  for name, cls in R1_SECTIONS.items():
    c[name] = config_sections.section(cls)
  return c


def of(cfg: ml_collections.ConfigDict) -> Pipeline:
  """The pipeline a config is for: R1's when it has the r1 section."""
  return R1 if "r1" in cfg else R1_ZERO


@errors.config_errors
def validate(cfg: ml_collections.ConfigDict, pipe: Pipeline | None = None) -> Run:
  """The config resolved (`config.resolve`) after the pipeline's own checks: its fields, stage
  name and inputs, and the policies its sections name."""
  pipe = pipe or of(cfg)
  known = set(config_lib.TOP_LEVEL) | set(config_lib.LIBRARY_SECTIONS) | set(pipe.sections)
  unknown = sorted(set(cfg) - known)
  if unknown:
    raise ValueError(f"unknown config field(s) {unknown}; the top level takes {sorted(known)}")
  allowed = tuple(pipe.selections)
  if cfg.stage not in allowed:
    raise ValueError(f"stage={cfg.stage!r} is not one of {allowed}")
  run = config_lib.resolve(cfg, pipe.sections)
  if cfg.stage in config_lib.WHOLE_RUN_STAGES:
    for name in run.inputs:
      stage, dot, _ = name.partition(".")
      if not dot or stage not in allowed:
        raise ValueError(f"inputs={cfg.inputs!r} with stage={cfg.stage!r}: {name!r} must name its stage "
                         f"(STAGE.NAME=PATH, e.g. sft.data=FILE; stages: {allowed[1:]}), or set --config.stage=NAME")
  for field, path in preflight.policy_fields(cfg):
    if not pathlib.Path(path).is_dir():
      raise ValueError(f"{field}={path!r}: no such directory (give an r1jax policy or a Hugging Face model directory)")
  if not cfg.model.hf_checkpoint and cfg.stage in ("evaluate", "r1_zero", "train", "average") and run.pretrain.steps == 0:
    print("note: pretrain.steps=0: the tiny base model stays randomly initialized")
  return run


@dataclasses.dataclass(frozen=True)
class Result:
  """What `run` ran: the Run as planned, the context the stages shared, their outputs by name and
  the memory plan's summary (None when nothing trained)."""
  run: Run
  ctx: context.Context
  outputs: dict
  plan: dict | None


def run(cfg: ml_collections.ConfigDict, pipe: Pipeline | None = None, *, stages=None, only: set | None = None,
        given: dict | None = None) -> Result:
  """The configured stages of `pipe` (default: the config's, `of`) in cfg.workdir, after the memory
  plan; `stages` (a list, or a function of the Run) replaces the pipeline's, `only` the stage
  selection of --config.stage, `given` the inputs of --config.inputs."""
  if cfg.get("distributed", False):  # before anything creates the backends
    distributed.initialize()
  pipe = pipe or of(cfg)
  run_cfg, stages, only, given = prepare(cfg, pipe, stages, only, given)
  workdir_lib.check_and_record(cfg)  # before anything else is written
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every save at INFO
  ctx, run_cfg = context.build(run_cfg)
  with jax.set_mesh(ctx.mesh):
    resolved = ml_collections.ConfigDict(cfg.to_dict())
    plan = None
    if pipe.planned is None or cfg.stage in pipe.planned:  # before any weights are loaded or trained
      run_cfg, plan = plan_memory(run_cfg, ctx.mesh, ctx.workdir)
      resolved.model.remat, resolved.grpo.grad_accum = plan["remat"], str(plan["grad_accum"])
      resolved.train.rollout_chunks, resolved.sampling.num_slots = str(plan["rollout_chunks"]), plan["num_slots"]
      resolved.lora.rank = plan["lora_rank"]
      if run_cfg.lora.mode == "auto" and not run_cfg.lora.enabled:  # full fine-tuning chosen: its checkpoints
        try:
          preflight.check_disk(cfg, run_cfg)
        except ValueError as e:
          raise errors.ConfigError(f"{e} (lora.mode='auto' chose full fine-tuning; lora.mode='on' writes "
                                   f"adapters only)") from e
    (ctx.workdir / "config.json").write_text(resolved.to_json_best_effort(indent=1))
    out = pipeline.run(run_cfg, ctx, stages, fingerprint(cfg), only=only, given=given)
  return Result(run_cfg, ctx, out, plan)


@errors.config_errors
def prepare(cfg: ml_collections.ConfigDict, pipe: Pipeline, stages=None, only: set | None = None,
            given: dict | None = None) -> tuple[Run, list, set | None, dict]:
  """Before any work (the entry point's one check: a bad value or file is one line, status 2): the
  config resolved (`validate`), this machine checked (`preflight`), the stages chosen and their
  inputs found. (run, stages, the selected stage names or None, the given inputs)."""
  run_cfg = validate(cfg, pipe)
  try:
    preflight.check_before_work(cfg, run_cfg)
  except FileNotFoundError as e:
    raise errors.ConfigError(str(e)) from e
  chosen = stages is None  # the pipeline's stages: --config.stage selects among them
  stages = pipe.stages(run_cfg) if stages is None else stages(run_cfg) if callable(stages) else stages
  if chosen and only is None and pipe.selections.get(cfg.stage) is not None:
    only = set(pipe.selections[cfg.stage])
    names = [s.name for s in stages]
    if not only <= set(names):
      raise ValueError(f"stage={cfg.stage!r} is not part of this configuration's pipeline {names}")
  given = run_cfg.inputs if given is None else given
  pipeline.check_inputs(cfg.workdir, stages, only, given)  # before the tokenizer and compiles
  return run_cfg, stages, only, given


def plan_memory(run_cfg: Run, mesh, workdir: pathlib.Path) -> tuple[Run, dict]:
  """Resolve model.remat / grpo.grad_accum / train.rollout_chunks ('auto': the cheapest setting
  that fits) and lora.mode='auto' (full fine-tuning where it fits, else LoRA) before any rollout:
  (the Run with the plan's choices, the plan's summary); writes <workdir>/memory_plan.json."""
  from r1jax import memory
  from r1jax import memory_grpo
  tcfg, gcfg, scfg, asked_lora = run_cfg.train, run_cfg.grpo, run_cfg.sampling, run_cfg.lora
  limit = int(tcfg.memory_limit_gb * memory.GiB) if tcfg.memory_limit_gb else None
  plan, lcfg = memory_grpo.plan_lora(run_cfg.model, gcfg, run_cfg.optim, scfg, mesh,
                                     prompts_per_step=tcfg.prompts_per_step, prompt_len=tcfg.max_prompt_len,
                                     remat=run_cfg.remat, grad_accum=run_cfg.grad_accum, limit_bytes=limit,
                                     temperature=scfg.temperature or 1.0,
                                     rules=sharding.rules_table(run_cfg.mesh.rules),
                                     rollout_chunks=run_cfg.rollout_chunks, lora=asked_lora)
  gcfg = dataclasses.replace(gcfg, grad_accum=plan.grad_accum)
  ocfg = run_cfg.optim
  if lcfg.enabled:  # (lora.mode='auto' chose LoRA, or 'on')
    if gcfg.ref_reset_every:
      print(f"note: LoRA: the reference is the frozen base (adapters off); grpo.ref_reset_every="
            f"{gcfg.ref_reset_every} -> 0")
      gcfg = dataclasses.replace(gcfg, ref_reset_every=0)
    if lcfg.learning_rate:
      ocfg = dataclasses.replace(ocfg, learning_rate=lcfg.learning_rate)
  slots_asked = scfg.num_slots or "auto" if scfg.continuous_batching else 0
  summary = plan.summary() | {"lora_rank": lcfg.rank, "learning_rate": ocfg.learning_rate,
                              "asked": {"model.remat": run_cfg.remat, "grpo.grad_accum": run_cfg.grad_accum,
                                        "train.rollout_chunks": run_cfg.rollout_chunks,
                                        "sampling.num_slots": slots_asked,
                                        "lora.rank": asked_lora.rank, "lora.mode": asked_lora.mode}}
  (workdir / "memory_plan.json").write_text(json.dumps(summary, indent=1))
  measured = (f"; train state {plan.state_bytes / memory.GiB:.2f} GiB per device; per program (arguments + "
              "temporaries + outputs) "
              + ", ".join(f"{k} {v.peak / memory.GiB:.2f} GiB" for k, v in plan.phases.items())) if plan.phases else ""
  slots = f" sampling.num_slots={plan.num_slots}" if plan.num_slots else ""
  lora = f" lora.rank={lcfg.rank}" if asked_lora.enabled else ""
  print(f"memory plan: model.remat={plan.remat} grpo.grad_accum={plan.grad_accum} "
        f"train.rollout_chunks={plan.rollout_chunks}{slots}{lora} ({plan.reason}){measured}")
  return dataclasses.replace(run_cfg, model=dataclasses.replace(run_cfg.model, remat=plan.remat), grpo=gcfg,
                             optim=ocfg, lora=lcfg, train=dataclasses.replace(tcfg, rollout_chunks=plan.rollout_chunks),
                             sampling=dataclasses.replace(scfg, num_slots=plan.num_slots)), summary


def fingerprint(cfg: ml_collections.ConfigDict) -> str:
  """What a finished stage's record is checked against: the config, less what only picks stages
  or paths or shows progress."""
  d = cfg.to_dict()
  for k in ("stage", "inputs"):
    d.pop(k, None)
  d.get("train", {}).pop("progress", None)
  return json.dumps(d, sort_keys=True, default=str)


# ----------------------------------------------------------------------------- the experiments' runs


def run_r1_zero(cfg: ml_collections.ConfigDict) -> dict:
  """experiments/r1_zero.py: the configured stage(s) of R1_ZERO; the full run writes `summary.json`."""
  t_start = time.time()
  res = run(cfg, R1_ZERO)
  if cfg.stage == "pretrain":
    return {"num_params": res.run.model.num_params()}
  if cfg.stage == "average":
    return {"averaged_steps": res.outputs["average"]["averaged_steps"]}
  if cfg.stage == "train":
    summary = {"train_steps": res.run.train.steps, "memory_plan": {k: res.plan[k] for k in ("remat", "grad_accum", "reason")},
               "wall_seconds": time.time() - t_start}
    print(f"wall time {summary['wall_seconds']:.0f} s; {summary['train_steps']} GRPO steps (no held-out "
          f"evaluation: --config.stage=r1_zero runs them); metrics and policy in {res.ctx.workdir}")
    return summary
  base = json.loads(pathlib.Path(res.outputs["evaluate_base"]["summary"]).read_text())
  if cfg.stage == "evaluate":
    return base
  final = json.loads(pathlib.Path(res.outputs["evaluate_final"]["summary"]).read_text())
  workdir = res.ctx.workdir
  plots = plot_run(workdir)
  summary = {"base_accuracy": base["pass@1"], "final_accuracy": final["pass@1"],
             "base_format_rate": base["format_rate"], "format_rate": final["format_rate"],
             "base_mean_length": base["mean_length"], "final_mean_length": final["mean_length"],
             "eval_problems": len(res.ctx.eval_ex), "train_steps": res.run.train.steps,
             "memory_plan": {k: res.plan[k] for k in ("remat", "grad_accum", "reason")},
             "wall_seconds": time.time() - t_start, "plots": [str(p) for p in plots]}
  (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  rows = [(k, base[k], final[k]) for k in ("pass@1", "format_rate", "mean_length", "reflection_rate")
          if k in base]
  print(format_table(rows, ("held-out metric", "base", "after GRPO")))
  print(f"wall time {summary['wall_seconds']:.0f} s; summary, metrics and plots in {workdir}")
  return summary


TABLE_ROWS = (("teacher", "evaluate_teacher"), ("base", "evaluate_base"), ("R1-Zero", "evaluate_r1_zero"), ("cold start SFT", "evaluate_cold_start_sft"),
              ("reasoning RL", "evaluate_reasoning_rl"), ("SFT of base on rejection samples", "evaluate_sft"),
              ("RL all scenarios", "evaluate_rl_all"), ("checkpoint average", "evaluate_average"),
              ("student base", "evaluate_student_base"), ("distilled student", "evaluate_distill"))
TABLE_METRICS = ("pass@1", "format_rate", "language_consistency", "mean_length")


def stage_table(workdir) -> list[tuple]:
  """(row name, held-out pass@1, strict format rate, language consistency, mean length) of every
  evaluation stage that has run in `workdir`."""
  rows = []
  for label, stage in TABLE_ROWS:
    rec = pipeline.read_record(workdir, stage)
    if rec is not None:
      m = json.loads(pathlib.Path(rec["outputs"]["summary"]).read_text())
      rows.append((label,) + tuple(m[k] for k in TABLE_METRICS))
  return rows


def run_r1(cfg: ml_collections.ConfigDict, pipe: Pipeline = R1, header: str = "after stage") -> dict:
  """experiments/r1.py (and distill.py): the configured stage, or all of them, then the table of
  every evaluated stage (also `<workdir>/summary.json` and `<workdir>/plots/stages.png`)."""
  t_start = time.time()
  res = run(cfg, pipe)
  workdir = res.ctx.workdir
  rows = stage_table(workdir)
  names = [s.name for s in pipe.stages(res.run)]
  summary = {"rows": {r[0]: dict(zip(TABLE_METRICS, r[1:])) for r in rows},
             "stage_seconds": {n: (pipeline.read_record(workdir, n) or {}).get("wall_seconds") for n in names},
             "wall_seconds": time.time() - t_start}
  if cfg.stage == "all":
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
  if rows:
    from r1jax.logger import plot_stages
    summary["plot"] = str(plot_stages(rows, TABLE_METRICS, workdir / "plots" / "stages.png"))
    print(format_table(rows, (f"held-out, {header}",) + TABLE_METRICS))
  print(f"wall time {summary['wall_seconds']:.0f} s; stages, table and plot in {workdir}")
  return summary


@errors.config_errors
def validate_distill(cfg: ml_collections.ConfigDict) -> Run:
  """experiments/distill.py's checks: `validate`, and a teacher is given."""
  if not cfg.distill.teacher:
    raise ValueError("distill.teacher='' : give the teacher policy or Hugging Face directory "
                     "(--config.distill.teacher=runs/r1/rl_all/policy)")
  return validate(cfg, DISTILL)


def run_distill(cfg: ml_collections.ConfigDict) -> dict:
  """experiments/distill.py: the student shares the teacher's tokenizer."""
  from r1jax import policy as policy_lib
  teacher = cfg.distill.teacher
  if not cfg.tokenizer.path and not cfg.model.hf_checkpoint:
    tok = teacher if policy_lib.is_hf(teacher) else policy_lib.tokenizer_path(teacher)
    cfg = config_sections.apply_overrides(cfg, {"tokenizer.path": str(tok)}, "distill")
  return run_r1(cfg, DISTILL, "distillation")
