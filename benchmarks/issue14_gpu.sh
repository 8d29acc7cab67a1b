#!/usr/bin/env bash
# Issue 14 on one GPU: every entry of an experiment's sweep side by side, each in its own process
# with a share of the GPU's memory and a wall-clock cap, then the sweep's table. Usage:
#   bash benchmarks/issue14_gpu.sh EXPERIMENT ROOT CAP_SECONDS MEM_FRACTION [--set FIELD=VALUE ...]
# e.g. bash benchmarks/issue14_gpu.sh aha runs/aha_gpu 480 0.15 --set model.d_model=256
# Entries are resumable: a second call with the same ROOT continues them. INDICES="0 2" runs only
# those entries.
set -uo pipefail
EXP=$1 ROOT=$2 CAP=$3 FRAC=$4; shift 4
N=$(python3 -c "import sys; from r1jax import experiment; print(len(experiment.load_experiment(sys.argv[1]).sweep()))" \
  "experiments/$EXP.py")
mkdir -p "$ROOT/logs"
echo "$(date +%T) $EXP: $N entries, cap ${CAP}s, memory fraction $FRAC, $*"
INDICES=${INDICES:-$(seq 0 $((N - 1)))}
for i in $INDICES; do
  XLA_PYTHON_CLIENT_MEM_FRACTION=$FRAC timeout "$CAP" python3 "experiments/$EXP.py" --root "$ROOT" --index "$i" "$@" \
    > "$ROOT/logs/entry$i.log" 2>&1 &
done
wait
echo "$(date +%T) all entries stopped"
for i in $INDICES; do echo "--- entry $i"; tail -n 3 "$ROOT/logs/entry$i.log"; done
python3 "experiments/$EXP.py" --root "$ROOT" --gather "$@" 2>&1 | tail -n 30
# Entries stopped by the cap have no summary: their curves so far, from metrics.jsonl.
python3 - "experiments/$EXP.py" "$ROOT" <<'PY'
import json, sys
from r1jax import experiment, sweep as sweep_lib
m = experiment.load_experiment(sys.argv[1])
aha = m if hasattr(m, "curve_summary") else m.aha
for i, ov in enumerate(m.sweep()):
  d = sweep_lib.entry_dir(sys.argv[2], i, ov)
  f = d / "metrics.jsonl"
  if not f.exists():
    print(f"entry {i} {sweep_lib.label(ov)}: no RL steps"); continue
  n = len(f.read_text().splitlines())
  base = d / "eval_base" / "summary.json"
  acc = json.loads(base.read_text()).get("pass@1") if base.exists() else None
  s = aha.curve_summary(f, keys=m.CURVES)
  print(f"entry {i} {sweep_lib.label(ov)}: {n} RL steps, base accuracy {acc}: "
        + ", ".join(f"{k}={v:.3f}" for k, v in s.items()))
PY
