#!/usr/bin/env bash
# The named configs and evaluation on one GPU, in device calls of at most 10 minutes: each part
# capped, every run's output written line by line (with elapsed seconds) under $OUT as it comes.
#   OUT=dir bash benchmarks/issue30_gpu.sh PART...   (repo root, ../shared/data present)
# Parts:
#   eval     evaluation throughput at the Qwen2.5-0.5B shape: r1jax's evaluation path (1,024 slots)
#            vs transformers' generate, 2,048 rows x 512 tokens
#   NAME     a named config's documented command (experiments/r1_zero.py:NAME on a random-weight
#            checkpoint of its shape), 2 GRPO steps, no memory flag; its held-out evaluations cut
#            to 8 problems x 64 tokens (STAGE=train: none, for the 7B / 8B runs to fit a call)
#   lora     the GRPO step at the Qwen2.5-1.5B shape, full fine-tuning vs LoRA rank 64
#            (benchmarks/grpo_step.py, the same workload, remat full: dots asks 132 GiB at this shape)
#   loradots the GRPO step at the Qwen2.5-1.5B shape with LoRA rank 64 at remat dots (the adapters'
#            products recomputed: transformer.dots_saveable_but_rank) beside LoRA at remat full
#   math500  experiments/evaluate.py on MATH-500 (500 problems, 64 tokens each) with a random-weight
#            checkpoint of the 0.5B shape (the qwen2.5-0.5b part's, else built)
set -uo pipefail
OUT=${OUT:-/tmp/issue30}
CAP=${CAP:-240}
mkdir -p "$OUT" /tmp/ckpt
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/gpu.txt"
stamp() { echo "== $(date +%T) $*"; }
for part in "$@"; do
  stamp "$part"
  case $part in
    eval)
      timeout 300 python3 benchmarks/eval_throughput.py --preset qwen2.5-0.5b --problems 512 --k 4 \
        --max_new_tokens 512 --batch_size 256 --slots 1024 --hf_rows 128 --hf_batch 128 \
        --out "$OUT/eval_throughput.json" 2>&1 | grep -v -i warning | tee "$OUT/eval.log" | tail -n 3 ;;
    lora)
      for r in 0 64; do
        timeout 150 python3 benchmarks/grpo_step.py --preset qwen2.5-1.5b --remat full --steps 2 --lora_rank $r \
          --out "$OUT/grpo_step_1.5b_lora$r.json" 2>&1 | grep -v -i warning | tee "$OUT/lora$r.log" | tail -n 2
      done ;;
    loradots)
      for remat in dots full; do
        timeout 150 python3 benchmarks/grpo_step.py --preset qwen2.5-1.5b --remat $remat --steps 2 --lora_rank 64 \
          --out "$OUT/grpo_step_1.5b_lora64_$remat.json" 2>&1 | grep -v -i warning | tee "$OUT/lora64_$remat.log" | tail -n 2
      done ;;
    math500)
      [ -e /tmp/ckpt/hf-qwen2.5-0.5b/config.json ] || python3 benchmarks/named_configs.py --names qwen2.5-0.5b \
        --steps 0 --ckpt_root /tmp/ckpt >/dev/null
      timeout 200 python3 experiments/evaluate.py --config.hf_checkpoint=/tmp/ckpt/hf-qwen2.5-0.5b \
        --config.datasets=math500=$PWD/.gpudata/math500.jsonl:math --config.eval.num_samples=1 \
        --config.eval.max_new_tokens=64 --config.progress=False --config.out_dir="$OUT/math500" 2>&1 \
        | grep -v -i warning | tee "$OUT/math500.log" | tail -n 25 ;;
    *)
      python3 benchmarks/named_configs.py --names "$part" --steps 2 --timeout "$CAP" --ckpt_root /tmp/ckpt \
        --log_dir "$OUT" --out "$OUT/named_$part.json" --drop_workdir \
        "--extra=--config.eval.max_new_tokens=64${STAGE:+ --config.stage=$STAGE}" 2>&1 | tail -n 1
      [ "$part" = qwen2.5-0.5b ] || rm -rf "/tmp/ckpt/hf-$part" ;;
  esac
done
stamp done
