#!/usr/bin/env bash
# Issue 30 on one GPU, in one device call (each step capped, results under $OUT as they come):
#  1. evaluation throughput at the Qwen2.5-0.5B shape, r1jax's evaluation path vs transformers' generate;
#  2. the qwen3-1.7b named config's documented command, 2 GRPO steps, no memory flag (the planner
#     plans the rollout: refused before this issue on an 80 GB card);
#  3. the qwen2.5-7b named config's memory plan without weights (lora.mode='auto': full fine-tuning
#     or LoRA, what the card holds).
# Usage (repo root, ../shared/data present): OUT=dir bash benchmarks/issue30_gpu.sh
set -uo pipefail
OUT=${OUT:-/tmp/issue30}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
echo "== $(date +%T) 1. evaluation throughput"
timeout 200 python3 benchmarks/eval_throughput.py --preset qwen2.5-0.5b --hf_rows 128 --out "$OUT/eval_throughput.json" 2>&1 \
  | grep -v Warning | tail -n 8
echo "== $(date +%T) 2. qwen3-1.7b, 2 GRPO steps"
timeout 300 python3 benchmarks/named_configs.py --names qwen3-1.7b --steps 2 --out "$OUT/named_qwen3.json" \
  "--extra=--config.eval.max_new_tokens=64" 2>&1 | tail -n 6
echo "== $(date +%T) 3. qwen2.5-7b's plan"
timeout 90 python3 benchmarks/rollout_plan.py --name qwen2.5-7b --out "$OUT/plan7b" 2>&1 | grep -v Warning | tail -n 12
echo "== $(date +%T) done"
