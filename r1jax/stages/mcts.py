"""Stages `value_data`, `value_model` and `search` of experiments/mcts.py: MCTS with a value model
(`r1jax.search`) against sampling at equal generated tokens, on chains of growing depth
(DeepSeek-R1 sec. 4.2, an unsuccessful attempt).

value_data: `mcts.value_samples` samples of the policy on each of `mcts.value_prompts` chains of
every depth in `mcts.depths`, each labelled at every completion token with its outcome (1 iff
`chains.grade` passes): the Monte Carlo value of each prefix. Outputs {'data': <out>/values.npz,
'summary'}.
value_model: the policy's body plus a scalar head (`r1jax.model.heads`) trained with binary cross-entropy
at every completion token, a tenth of the rows held out (AUC of correct vs wrong at the first,
middle and last completion token). Outputs {'model': <out>/model, 'summary'}; a killed run resumes
from <out>/ckpt.
search: per depth, `mcts.problems` held-out chains (none in the pretraining corpus); `mcts.samples`
samples of each, scored by the value model, and one greedy decode (the policy's own mode); per
branching k in `mcts.branching`, token-level and step-level MCTS; best-of-n and majority vote over
each problem's first n samples, n matching that problem's search tokens. Outputs {'summary',
'table'}; the samples of a depth and every finished (depth, k, granularity) cell are kept in <out>
and not redone on a rerun.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import numpy as np

from r1jax.model import heads
from r1jax.rl import head_step
from r1jax import logger as logger_lib
from r1jax.sampling import rollout as rollout_lib
from r1jax import scalar_model
from r1jax import search as search_lib
from r1jax.rl import step as train_step
from r1jax.rewards import extraction
from r1jax.rewards import normalize
from r1jax.tasks import chains

GRANULARITIES = ("token", "step")


@dataclasses.dataclass(frozen=True)
class MCTSConfig:
  """experiments/mcts.py: the tasks, the value model, the search and the sampling baselines."""
  depths: tuple[int, ...] = (2, 3, 4)
  """Chain lengths (operations) of the task sets. The embedded base's corpus holds chains of 2..4
  operations; on 1-operation chains it appends steps it has seen (measured: 0 of 16 solved)."""
  branching: tuple[int, ...] = (2, 4)
  """Children per expansion: top-k tokens (token level) or sampled steps (step level)."""
  problems: int = 32
  """Held-out chains per depth."""
  simulations: int = 8
  """MCTS simulations per decision."""
  c_puct: float = 1.0
  selection: str = "puct"
  """'puct' (AlphaZero) or 'uct' (UCB1 on trees)."""
  step_tokens: int = 24
  """Cap on one step's tokens (a step otherwise ends at its first '.')."""
  max_new_tokens: int = 128
  """Completion cap of every arm (search and samples)."""
  temperature: float = 1.0
  """Of the policy's priors, step samples and the baselines' samples."""
  samples: int = 64
  """Samples per held-out problem for best-of-n and majority vote (n is at most this)."""
  value_prompts: int = 128
  """Training chains per depth for the value model's data."""
  value_samples: int = 4
  """Samples per training chain."""
  value_steps: int = 200
  batch_size: int = 32
  sample_rows: int = 512
  """Rows per sampler call (prompts x samples)."""
  save_every: int = 50
  seed: int = 11
  base: str = ""
  """A base policy directory to start from instead of pretraining one."""
  value_model: str = ""
  """A trained value model (a `value_model` stage's <out>/model) instead of labelling and training one."""
  optim: train_step.OptimConfig = train_step.OptimConfig(learning_rate=5e-4, warmup_steps=10, decay="cosine",
                                                         weight_decay=0.0)

  def __post_init__(self):
    for f in ("problems", "simulations", "step_tokens", "max_new_tokens", "samples", "value_prompts",
              "value_samples", "value_steps", "batch_size", "sample_rows", "save_every"):
      if getattr(self, f) < 1:
        raise ValueError(f"mcts.{f}={getattr(self, f)} must be >= 1")
    for f, lo in (("depths", 1), ("branching", 1)):
      v = getattr(self, f)
      if not v or any(isinstance(x, bool) or not isinstance(x, int) or x < lo for x in v):
        raise ValueError(f"mcts.{f}={v!r} must be a non-empty tuple of ints >= {lo}")
    if self.selection not in search_lib.SELECTIONS:
      raise ValueError(f"mcts.selection={self.selection!r} is not one of {search_lib.SELECTIONS}")
    if self.c_puct < 0 or self.temperature <= 0:
      raise ValueError(f"mcts.c_puct={self.c_puct} must be >= 0 and mcts.temperature={self.temperature} > 0")


def problem_sets(cfg: MCTSConfig, exclude) -> dict[int, tuple[list[dict], list[dict]]]:
  """{depth: (held-out problems, value-model prompts)}: distinct chains of exactly `depth`
  operations; the held-out ones are not chains of `exclude` (the pretraining examples)."""
  seen = {tuple(map(tuple, ex["steps"])) for ex in exclude}
  out = {}
  for d in cfg.depths:
    pool = chains.generate(cfg.problems + cfg.value_prompts, seed=cfg.seed * 100 + d, min_ops=d, max_ops=d)
    fresh = [i for i, ex in enumerate(pool) if tuple(map(tuple, ex["steps"])) not in seen][:cfg.problems]
    if len(fresh) < cfg.problems:
      raise ValueError(f"mcts.problems={cfg.problems}: only {len(fresh)} chains of {d} operations are not in the "
                       f"pretraining data; ask for fewer")
    out[d] = ([pool[i] for i in fresh], [ex for i, ex in enumerate(pool) if i not in set(fresh)])
  return out


def _prompts(run, ctx, examples):
  exs, ids, _ = rollout_lib.encode_prompts(examples, ctx.tokenizer, ctx.template, run.train.max_prompt_len)
  return exs, ids


def prompt_len(run, ctx, sets) -> int:
  """The longest prompt of all the experiment's chains: one sampler shape (one compile) for all."""
  return max(len(p) for held, value in sets.values() for p in _prompts(run, ctx, held + value)[1])


def sample(run, ctx, params, model_cfg, examples, n: int, seed: int, P: int, temperature: float | None = None
           ) -> tuple[list[dict], dict]:
  """n samples of each example (those whose prompt fits) at `temperature` (default mcts.temperature;
  0 = greedy), prompts left-padded to P tokens: (examples, {'tokens', 'mask': R x (P + N) prompt +
  completion, 'length', 'texts', 'correct': R}), row r = sample r % n of example r // n."""
  cfg = run.mcts
  exs, ids = _prompts(run, ctx, examples)
  scfg = dataclasses.replace(run.sampling, num_samples=n, max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature if temperature is None else temperature, top_k=0,
                             top_p=1.0, prompt_buckets=(P,))
  B = 1 << (min(max(1, cfg.sample_rows // n), len(ids)) - 1).bit_length()  # prompts a call: a power of two
  parts = []
  for start in range(0, len(ids), B):
    ro = rollout_lib.sample(params, ids[start:start + B], jax.random.fold_in(jax.random.key(seed), start), model_cfg,
                            scfg, ctx.tokenizer, batch_size=B)
    b = ro.train_batch(n)
    parts.append({"tokens": b["tokens"], "mask": b["mask"], "length": ro.length, "texts": ro.texts})
  rows = {k: (sum((p[k] for p in parts), []) if k == "texts" else np.concatenate([p[k] for p in parts]))
          for k in parts[0]}
  rows["correct"] = np.asarray([chains.grade(t, exs[r // n]) for r, t in enumerate(rows["texts"])], np.float32)
  return exs, rows


def data(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  cfg = run.mcts
  model_cfg, params = ctx.load(run, inputs["policy"])
  sets = problem_sets(cfg, ctx.train_ex)
  exs, rows = sample(run, ctx, params, model_cfg, [ex for d in cfg.depths for ex in sets[d][1]], cfg.value_samples,
                     cfg.seed, prompt_len(run, ctx, sets))
  N = cfg.max_new_tokens
  comp_mask = rows["mask"][:, -N:].astype(np.float32)
  arrays = {"tokens": rows["tokens"], "mask": rows["mask"], "target": comp_mask * rows["correct"][:, None],
            "weight": comp_mask, "correct": rows["correct"],
            "depth": np.repeat([len(ex["steps"]) for ex in exs], cfg.value_samples)}
  np.savez(out / "values.npz", **arrays)
  summary = {"rows": len(rows["correct"]), "outcome_accuracy": float(rows["correct"].mean()),
             "accuracy_by_depth": {int(d): float(rows["correct"][arrays["depth"] == d].mean()) for d in cfg.depths},
             "mean_length": float(rows["length"].mean())}
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  print(f"value data: {summary}")
  return {"data": str(out / "values.npz"), "summary": str(out / "summary.json")}


def auc(scores, labels) -> float | None:
  """P(score of a positive > score of a negative), ties counting half (None without both classes)."""
  s, y = np.asarray(scores, np.float64), np.asarray(labels) > 0.5
  if y.all() or not y.any():
    return None
  pos, neg = s[y][:, None], s[~y][None, :]
  return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def value_model(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  cfg = run.mcts
  model_cfg, params = ctx.load(run, inputs["policy"])
  d = dict(np.load(inputs["data"]))
  order = np.random.default_rng(cfg.seed).permutation(len(d["tokens"]))
  n_eval = max(len(order) // 10, 1)
  keys = ("tokens", "mask", "target", "weight")
  held = {k: d[k][order[:n_eval]] for k in keys}
  rows = {k: d[k][order[n_eval:]] for k in keys}
  ocfg = dataclasses.replace(cfg.optim, total_steps=cfg.value_steps)
  head = heads.init_scalar_head(jax.random.key(cfg.seed), model_cfg, ctx.mesh)
  state = train_step.init_state(params, train_step.make_optimizer(ocfg), head=head)
  step_fn = head_step.make_value_step(model_cfg, ocfg, "bce", column="after",
                                      shardings=train_step.state_shardings(state), mesh=ctx.mesh)
  state = scalar_model.fit_head(state, step_fn, rows, out, steps=cfg.value_steps, batch_size=cfg.batch_size,
                                seed=cfg.seed, save_every=cfg.save_every, mesh=ctx.mesh)
  N = held["target"].shape[1]
  v = jax.jit(lambda p, h, t, m: heads.completion_values(p, h, t, m, t.shape[1] - N, model_cfg)[:, 1:])
  p_RxN = np.asarray(jax.nn.sigmoid(v(state.params, state.head, held["tokens"], held["mask"])))
  length = held["weight"].sum(1).astype(int)
  y = held["target"][:, 0]
  at = lambda cols: p_RxN[np.arange(len(length)), cols]
  summary = {"held_out_rows": n_eval, "held_out_correct": float(y.mean()),
             "auc_first_token": auc(at(np.zeros_like(length)), y), "auc_middle_token": auc(at(length // 2), y),
             "auc_last_token": auc(at(length - 1), y),
             "token_accuracy": float(np.sum(((p_RxN > 0.5) == (held["target"] > 0.5)) * held["weight"])
                                     / held["weight"].sum())}
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  print(f"value model: {summary}")
  scalar_model.save(out / "model", cfg.value_steps, state.params, state.head, model_cfg, ctx.tokenizer_path)
  return {"model": str(out / "model"), "summary": str(out / "summary.json")}


def _cached(path: pathlib.Path, make):
  """JSON at `path`, made (and written atomically) the first time."""
  if path.exists():
    return json.loads(path.read_text())
  obj = make()
  path.parent.mkdir(parents=True, exist_ok=True)
  path.with_suffix(".tmp").write_text(json.dumps(obj))
  path.with_suffix(".tmp").replace(path)
  return obj


def _baseline_samples(run, ctx, params, model_cfg, value_fn, examples, seed: int, P: int) -> list[dict]:
  """Per problem: the lengths, value-model scores, answer keys and correctness of its samples."""
  n = run.mcts.samples
  _, rows = sample(run, ctx, params, model_cfg, examples, n, seed, P)
  values = np.concatenate([value_fn(rows["tokens"][i:i + 256], rows["mask"][i:i + 256])
                           for i in range(0, len(rows["tokens"]), 256)])
  keys = [extraction.extract_answer(t) for t in rows["texts"]]
  keys = [normalize.normalize_answer(a) if a is not None else None for a in keys]
  return [{"lengths": rows["length"][j * n:(j + 1) * n].tolist(), "values": values[j * n:(j + 1) * n].tolist(),
           "answers": keys[j * n:(j + 1) * n], "correct": rows["correct"][j * n:(j + 1) * n].tolist()}
          for j in range(len(rows["texts"]) // n)]


def _search_cell(run, ctx, params, model_cfg, value, examples, prompt_ids, k: int, granularity: str, seed: int) -> dict:
  cfg = run.mcts
  kw = dict(k=k, max_len=cfg.max_new_tokens, eos_ids=run.sampling.eos_ids, pad_id=ctx.tokenizer.pad_id,
            temperature=cfg.temperature)
  if granularity == "token":
    env = search_lib.TokenEnv(params, value[1:], model_cfg, value[0], prompt_ids, **kw)
  else:
    env = search_lib.StepEnv(params, value[1:], model_cfg, value[0], prompt_ids, boundaries=search_lib.step_boundaries(
        ctx.tokenizer), step_tokens=cfg.step_tokens, key=jax.random.key(seed), **kw)
  t0 = time.time()
  results = search_lib.search(env, [(i, ()) for i in range(len(prompt_ids))], cfg.simulations, cfg.selection,
                              cfg.c_puct)
  problems = []
  for ex, r in zip(examples, results):
    text = ctx.tokenizer.decode(list(r.state[1]))
    problems.append({"id": ex["id"], "text": text, "correct": chains.grade(text, ex), "length": len(r.state[1]),
                     "decisions": r.decisions, "policy_passes": r.cost.policy_passes,
                     "value_passes": r.cost.value_passes, "tokens": r.cost.tokens})
  return {"problems": problems, "wall_seconds": time.time() - t0}


def _per_solved(tokens: float, solved: float):
  return tokens / solved if solved else None


def cell_row(depth: int, k: int, granularity: str, cell: dict, samples: list[dict], greedy_texts=None) -> dict:
  """One search cell against best-of-n and majority vote at each problem's search tokens: accuracy,
  forward passes and tokens per problem, tokens per solved problem (None when none is solved), and
  the share of problems whose search answer is the greedy decode's, word for word."""
  P = cell["problems"]
  arms = [search_lib.sampling_arms(s["lengths"], s["values"], s["answers"], s["correct"], p["tokens"])
          for p, s in zip(P, samples)]
  mean = lambda xs: float(np.mean(xs))
  tokens, sampled = sum(p["tokens"] for p in P), sum(a["tokens"] for a in arms)
  return {"depth": depth, "k": k, "search": granularity, "problems": len(P),
          "accuracy": mean([p["correct"] for p in P]),
          "forward_passes": mean([p["policy_passes"] + p["value_passes"] for p in P]),
          "policy_passes": mean([p["policy_passes"] for p in P]), "value_passes": mean([p["value_passes"] for p in P]),
          "tokens": tokens / len(P), "tokens_per_solved": _per_solved(tokens, sum(p["correct"] for p in P)),
          "decisions": mean([p["decisions"] for p in P]), "length": mean([p["length"] for p in P]),
          "wall_seconds": cell["wall_seconds"],
          "same_as_greedy": None if greedy_texts is None else mean([p["text"] == t for p, t in zip(P, greedy_texts)]),
          "n": mean([a["n"] for a in arms]),
          "n_at_cap": mean([a["n"] == len(s["lengths"]) for a, s in zip(arms, samples)]),
          "sampling_tokens": sampled / len(P),
          "best_of_n": mean([a["best_of_n"] for a in arms]), "majority": mean([a["majority"] for a in arms]),
          "pass_at_n": mean([a["pass_at_n"] for a in arms]),
          "best_of_n_passes": mean([a["best_of_n_passes"] for a in arms]),
          "majority_passes": mean([a["majority_passes"] for a in arms]),
          "best_of_n_tokens_per_solved": _per_solved(sampled, sum(a["best_of_n"] for a in arms)),
          "majority_tokens_per_solved": _per_solved(sampled, sum(a["majority"] for a in arms))}


TABLE = (("depth", "depth"), ("k", "k"), ("search", "search"), ("accuracy", "search acc"),
         ("same_as_greedy", "= greedy"), ("forward_passes", "search fwd/problem"), ("tokens", "search tok/problem"),
         ("tokens_per_solved", "search tok/solved"), ("n", "n (mean)"), ("best_of_n", "best-of-n acc"),
         ("majority", "majority acc"), ("pass_at_n", "pass@n"), ("best_of_n_passes", "best-of-n fwd/problem"),
         ("best_of_n_tokens_per_solved", "best-of-n tok/solved"), ("majority_tokens_per_solved", "majority tok/solved"))
"""The report's columns: (row key, header)."""
DEPTH_TABLE = (("depth", "depth"), ("pass@1", "sample pass@1"), ("sample_length", "sample tokens"),
               ("greedy_accuracy", "greedy acc"), ("greedy_length", "greedy tokens"))
"""The per-depth reference columns: one sample at mcts.temperature, one greedy decode."""


def _cell(v) -> str:
  return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


def markdown(rows, columns=TABLE) -> str:
  """A table of `rows` in markdown (tokens per solved problem '-' where none was solved)."""
  line = lambda cells: "| " + " | ".join(cells) + " |"
  return "\n".join([line([h for _, h in columns]), "|" + "---|" * len(columns)]
                    + [line([_cell(r[key]) for key, _ in columns]) for r in rows]) + "\n"


def plain(rows, columns=TABLE) -> str:
  return logger_lib.format_table([tuple("-" if r[key] is None else r[key] for key, _ in columns) for r in rows],
                                 tuple(h for _, h in columns))


def run_search(run, ctx, inputs: dict, out: pathlib.Path) -> dict:
  cfg = run.mcts
  model_cfg, params = ctx.load(run, inputs["policy"])
  value = scalar_model.load(inputs["value_model"], ctx.mesh, ctx.rules)
  vcfg = value[0]
  scores = jax.jit(lambda p, h, t, m: jax.nn.sigmoid(heads.sequence_scores(p, h, t, m, vcfg)))
  value_fn = lambda t, m: np.asarray(scores(value[1], value[2], t, m))
  sets = problem_sets(cfg, ctx.train_ex)
  P = prompt_len(run, ctx, sets)
  rows, depth_stats = [], {}
  for d in cfg.depths:
    exs, ids = _prompts(run, ctx, sets[d][0])
    samples = _cached(out / f"samples_d{d}.json",
                      lambda: _baseline_samples(run, ctx, params, model_cfg, value_fn, exs, cfg.seed + d, P))
    greedy = _cached(out / f"greedy_d{d}.json", lambda: {k: np.asarray(v).tolist() for k, v in sample(
        run, ctx, params, model_cfg, exs, 1, 0, P, temperature=0.0)[1].items() if k in ("length", "correct", "texts")})
    depth_stats[d] = {"pass@1": float(np.mean([s["correct"] for s in samples])),
                      "sample_length": float(np.mean([s["lengths"] for s in samples])),
                      "greedy_accuracy": float(np.mean(greedy["correct"])),
                      "greedy_length": float(np.mean(greedy["length"]))}
    for k in cfg.branching:
      for g in GRANULARITIES:
        seed = cfg.seed * 1000 + d * 10 + k
        cell = _cached(out / "cells" / f"d{d}_k{k}_{g}.json",
                       lambda: _search_cell(run, ctx, params, model_cfg, value, exs, ids, k, g, seed))
        rows.append(cell_row(d, k, g, cell, samples, greedy["texts"]))
        r = rows[-1]
        print(f"depth {d} k {k} {g}-MCTS: accuracy {r['accuracy']:.3f} ({r['forward_passes']:.0f} passes, "
              f"{r['tokens']:.0f} tokens a problem, {cell['wall_seconds']:.0f} s); best-of-{r['n']:.1f} "
              f"{r['best_of_n']:.3f}, majority {r['majority']:.3f}")
  depth_rows = [{"depth": d} | st for d, st in depth_stats.items()]
  (out / "table.txt").write_text(plain(rows) + "\n\n" + plain(depth_rows, DEPTH_TABLE) + "\n")
  summary = {"rows": rows, "depths": depth_rows}
  (out / "summary.json").write_text(json.dumps(summary, indent=1))
  return {"summary": str(out / "summary.json"), "table": str(out / "table.txt")}
