r"""The figures of EXPERIMENTS.md, one per claim, drawn from the run records' own tables (so a
figure cannot disagree with its table) into docs/figures/:

    python experiments/figures.py

`--out DIR` writes them elsewhere. A table the script reads that is missing or renamed in
EXPERIMENTS.md is a one-line error naming it. Each run's own curves (every metric over RL steps,
entry beside entry) are in that run's `<root>/plots`, written by the sweep's `--gather`.
"""
import argparse
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
NUM = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def numbers(cell: str) -> list[float]:
  """The numbers of a table cell in order ('26.2% -> 98.8%' -> [26.2, 98.8]; '1,952' -> [1952])."""
  return [float(x) for x in NUM.findall(re.sub(r"(?<=\d),(?=\d{3})", "", cell))]


def table(text: str, header_start: str) -> list[dict]:
  """The rows (header -> cell) of the markdown table whose header line starts with `header_start`."""
  lines = text.splitlines()
  starts = [i for i, l in enumerate(lines) if l.startswith(header_start)]
  if len(starts) != 1:
    raise ValueError(f"EXPERIMENTS.md: {len(starts)} tables start with {header_start!r} (need exactly one)")
  cells = lambda l: [c.strip() for c in l.strip().strip("|").split("|")]
  head, rows = cells(lines[starts[0]]), []
  for l in lines[starts[0] + 2:]:
    if not l.startswith("|"):
      break
    rows.append(dict(zip(head, cells(l))))
  return rows


def early_late(rows, col):
  """(first, last) of 'a -> b' cells (None where the cell has no pair)."""
  out = []
  for r in rows:
    v = numbers(r[col])
    out.append((v[0], v[1]) if len(v) >= 2 else (None, None))
  return out


def bars_early_late(ax, labels, pairs, title, ylabel):
  import numpy as np
  x = np.arange(len(labels))
  ax.bar(x - 0.2, [np.nan if p[0] is None else p[0] for p in pairs], 0.4, label="first 5 RL steps")
  ax.bar(x + 0.2, [np.nan if p[1] is None else p[1] for p in pairs], 0.4, label="last 5 RL steps")
  ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
  ax.set_title(title, fontsize=9)
  ax.set_ylabel(ylabel)
  ax.legend(fontsize=7)


def short(label: str) -> str:
  return re.sub(r"\s*\((third call|reflections end wrong; third call|reflections end wrong)\)", "", label).replace(
      "(accuracy + format)", "").replace("(PRM sum + format)", "").replace("(PRM min + format)", "").strip()


def figures(text: str, out: pathlib.Path) -> list[pathlib.Path]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  out.mkdir(parents=True, exist_ok=True)
  written = []

  def save(fig, name):
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

  # 1. The aha moment: reflection early vs late, and the length ratio, both H200 runs.
  runs = [("H200, chains of 2-3 operations, 40 steps",
           table(text, "| entry | RL steps | held-out pass@1 base -> final | training accuracy | reflection rate")),
          ("H200, chains of 2-6 operations, 60 steps",
           table(text, "| entry | held-out pass@1 base -> final | training accuracy | reflection rate | mean length"))]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, (title, rows) in zip(axes, runs):
    labels = [short(r["entry"]) for r in rows]
    bars_early_late(ax, labels, early_late(rows, "reflection rate"), title, "reflection rate of rollouts")
    for i, r in enumerate(rows):
      ratio = numbers(r["mean length"])[-1]
      ax.annotate(f"length {ratio:.2f}x", (i, 0), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
  fig.suptitle("Aha moment: RL removes reflection and shortens answers (not reproduced)", fontsize=10)
  save(fig, "aha")

  # 2. Language consistency: English share and accuracy against alpha.
  rows = table(text, "| alpha | RL steps | held-out pass@1 base -> final")
  done = [r for r in rows if len(numbers(r["held-out pass@1 base -> final"])) == 2]
  alpha = [numbers(r["alpha"])[0] for r in done]
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
  a1.plot(alpha, [numbers(r["held-out CoT English share base -> final"])[1] for r in done], "o-", label="after RL")
  a1.plot(alpha, [numbers(r["held-out CoT English share base -> final"])[0] for r in done], "x--", label="base")
  a1.set(xlabel="alpha (weight of accuracy)", ylabel="held-out CoT English share", title="consistency")
  a2.plot(alpha, [numbers(r["held-out pass@1 base -> final"])[1] for r in done], "o-", label="after RL")
  a2.plot(alpha, [numbers(r["held-out pass@1 base -> final"])[0] for r in done], "x--", label="base")
  a2.set(xlabel="alpha (weight of accuracy)", ylabel="held-out pass@1 (%)", title="accuracy")
  for a in (a1, a2):
    a.invert_xaxis()
    a.legend(fontsize=7)
  fig.suptitle("Language consistency reward R = alpha R_acc + (1 - alpha) R_lang", fontsize=10)
  save(fig, "language")

  # 3. GRPO vs PPO: accuracy and FLOPs.
  rows = table(text, "| arm | models trained | held-out pass@1")
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.4))
  names = [r["arm"] for r in rows]
  a1.bar(names, [numbers(r["held-out pass@1 (base 9.8%)"])[0] for r in rows])
  a1.set(ylabel="held-out pass@1 (%)", title="accuracy after 80 steps")
  a2.bar(names, [numbers(r["FLOPs of the 80 steps"])[0] for r in rows])
  a2.set(ylabel="FLOPs", title="compute of the 80 steps")
  fig.suptitle("GRPO vs PPO with a critic (CPU run)", fontsize=10)
  save(fig, "grpo_vs_ppo")

  # 4. Distillation vs RL at equal compute.
  rows = table(text, "| arm | FLOPs | pass@1 (512 x 4)")
  fig, ax = plt.subplots(figsize=(7, 3.6))
  x = np.arange(len(rows))
  ax.bar(x - 0.2, [numbers(r["pass@1 (512 x 4)"])[0] for r in rows], 0.4, label="pass@1")
  ax.bar(x + 0.2, [numbers(r["pass@4"])[0] for r in rows], 0.4, label="pass@4")
  ax.set_xticks(x, [r["arm"].replace("**", "") for r in rows], rotation=15, ha="right", fontsize=8)
  ax.set(ylabel="held-out accuracy (%)", title="Distillation vs direct RL of the student at equal FLOPs")
  ax.legend(fontsize=7)
  save(fig, "distill_vs_rl")

  # 5. Cold-start size: accuracy against N, curated and random.
  rows = table(text, "| N | curated: after SFT | curated: after RL")
  fig, ax = plt.subplots(figsize=(7, 4))
  for col, style in (("curated: after SFT", "o--"), ("curated: after RL", "o-"), ("random: after SFT", "s--"),
                     ("random: after RL (correct examples)", "s-")):
    pts = [(numbers(r["N"])[0], numbers(r[col])[0]) for r in rows if numbers(r[col])]
    ax.plot(*zip(*pts), style, label=col)
  ax.set_xscale("symlog", linthresh=10)
  ax.set(xlabel="cold-start examples N (0 = RL from the base)", ylabel="held-out pass@1 (%)",
         title="Cold-start size, then the same 20 RL steps (not reproduced in shape)")
  ax.legend(fontsize=7)
  save(fig, "cold_start")

  # 6. The PRM: the score each arm is trained on against its accuracy (the GPU run).
  rows = table(text, "| arm (reward) | held-out pass@1 (base 21.1%)")
  labels = [short(r["arm (reward)"]) for r in rows]
  fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(12, 3.6))
  bars_early_late(a1, labels, early_late(rows, "PRM score of the arm's form, first -> last 5 steps"),
                  "PRM score (the arm's form)", "score")
  bars_early_late(a2, labels, early_late(rows, "training accuracy"), "training accuracy (verified)", "%")
  a3.bar(labels, [numbers(r["held-out pass@1 (base 21.1%)"])[0] for r in rows])
  a3.tick_params(axis="x", labelsize=8, rotation=20)
  a3.set(title="held-out pass@1", ylabel="%")
  fig.suptitle("Process reward model in RL: the sum form hacks the PRM", fontsize=10)
  save(fig, "prm")

  # 7. MCTS: tokens per problem with depth and branching; accuracy against sampling at equal tokens.
  rows = table(text, "| depth | k | search | search acc")
  fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
  for kind in ("token", "step"):
    for k in sorted({r["k"] for r in rows}):
      sel = [r for r in rows if r["search"] == kind and r["k"] == k]
      depth = [numbers(r["depth"])[0] for r in sel]
      a1.plot(depth, [numbers(r["tokens / problem"])[0] for r in sel], "o-" if kind == "token" else "s--",
              label=f"{kind}-level, k = {k}")
  a1.set(xlabel="chain depth (operations)", ylabel="tokens per problem", title="cost of MCTS")
  a1.legend(fontsize=7)
  x = np.arange(len(rows))
  a2.bar(x - 0.27, [numbers(r["search acc"])[0] for r in rows], 0.27, label="MCTS")
  a2.bar(x, [numbers(r["best-of-n acc"])[0] for r in rows], 0.27, label="best-of-n (value model)")
  a2.bar(x + 0.27, [numbers(r["majority acc"])[0] for r in rows], 0.27, label="majority vote")
  a2.set_xticks(x, [f"d{r['depth']} k{r['k']} {r['search'][0]}" for r in rows], rotation=60, fontsize=7)
  a2.set(ylabel="accuracy", title="at equal generated tokens")
  a2.legend(fontsize=7)
  fig.suptitle("MCTS with a value model vs sampling", fontsize=10)
  save(fig, "mcts")
  return written


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--out", default=str(REPO / "docs" / "figures"))
  ap.add_argument("--record", default=str(REPO / "EXPERIMENTS.md"))
  a = ap.parse_args(argv)
  try:
    paths = figures(pathlib.Path(a.record).read_text(), pathlib.Path(a.out))
  except (ValueError, KeyError, IndexError) as e:
    print(f"figures: {e}" if isinstance(e, ValueError) else f"figures: {e!r}", file=sys.stderr)
    return 2
  for p in paths:
    print(p)
  return 0


if __name__ == "__main__":
  sys.exit(main())
