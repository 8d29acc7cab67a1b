#!/usr/bin/env bash
# Issue 12's measurements on one H200 in one device call (10 minutes at most):
#
#     OUT=$OUT bash benchmarks/issue12_gpu.sh
#
# Stages in order of priority, each given the time left of BUDGET seconds (default 570) and skipped
# when under a minute is left; each writes $OUT/<stage>.json and $OUT/<stage>.log and prints its
# tail. STAGES (space-separated names) picks a subset, e.g. STAGES="r1zero_static" for a second call.
#   ceilings       model_bench.py --presets '': HBM copy/read 4-16 GiB, bf16 matmul 8192-16384^3, vs spec (~30 s)
#   cb05           continuous vs static batching, 0.5B, 256 rows, 64 slots, lognormal mean 1k max 8k (~2-3 min)
#   r1zero_cont    GRPO step, 1.5B, 16 prompts x 8, 8k completions (lognormal mean 1k), 64 slots (~3.5 min)
#   fuse           decode of 0.5B at 128/256 rows (Pallas, per-layer buffers) with and without fused
#                  q/k/v and gate/up projections, kernel profile (~1.5 min)
#   r1zero_static  the same with static batching (~3.5 min; likely needs a second call)
#   g05            the issue-5 0.5B GRPO step (fixed 512 tokens) against the new ceilings, with the
#                  sampler-vs-trainer mismatch (bf16 Pallas decode vs cuDNN training path) (~1.5 min)
#   g05f / ppo05   the issue-5 0.5B step, remat dots + fused log-prob head, GRPO vs PPO with a
#                  critic of the policy's size (issue 14, experiment 3) (~1.5 min each)
#   g15f / ppo15   the same at the 1.5B shape with remat full (dots: 132 GiB of update temporaries) (~1 min each)
#   cbuf_decode    decode of 0.5B at 128 rows, the in-step shape (prompt 256, 512 new tokens), Pallas, with a
#                  kernel profile, under three XLA command-buffer (CUDA graph) settings: XLA's default,
#                  + WHILE/CONDITIONAL (the whole decode loop as one graph), and none (~1 min each)
#   cbuf_step      the issue-5 0.5B step (remat dots, fused head) under the same three settings (~1.5 min each)
#   cap24          the 0.5B step inside a 24 GB pool (XLA_PYTHON_CLIENT_MEM_FRACTION=0.155 of 139 GiB),
#                  remat full + fused head (~1.5 min)
set -u
OUT=${OUT:-/tmp/issue12}
BUDGET=${BUDGET:-570}
STAGES=${STAGES:-"ceilings cb05 r1zero_cont g05 fuse r1zero_static"}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.95}
start=$(date +%s)
CB_WHILE="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1"
CB_OFF="--xla_gpu_enable_command_buffer="
# The cbuf stages' loop head: one run per setting, \$v names it in the output files.
CB_LOOP="for v in default while off; do f=; [ \$v = while ] && f='$CB_WHILE'; [ \$v = off ] && f='$CB_OFF'; \
  echo \"-- XLA_FLAGS=\$f\"; XLA_FLAGS=\"\$f\""
R1ZERO="--preset qwen2.5-1.5b --prompts 16 --G 8 --prompt_len 256 --new_tokens 8192 --lengths lognormal \
  --mean_len 1000 --remat full --grad_accum 8 --steps 1"

run_stage() {
  local name=$1
  local left=$((BUDGET - ($(date +%s) - start)))
  if [ "$left" -lt 60 ]; then
    echo "== $name: SKIPPED ($left s of the budget left)"
    return
  fi
  local cmd
  case $name in
    ceilings) cmd="python3 benchmarks/model_bench.py --presets '' --out $OUT/ceilings.json" ;;
    cb05) cmd="python3 benchmarks/continuous_batching.py --preset qwen2.5-0.5b --prompts 32 --G 8 --slots 64 \
      --mean_len 1000 --max_len 8192 --out $OUT/cb05.json" ;;
    r1zero_cont) cmd="python3 benchmarks/grpo_step.py $R1ZERO --slots 64 --timeout $left --out $OUT/r1zero_cont.json" ;;
    r1zero_static) cmd="python3 benchmarks/grpo_step.py $R1ZERO --timeout $left --out $OUT/r1zero_static.json" ;;
    g05) cmd="python3 benchmarks/grpo_step.py --preset qwen2.5-0.5b --steps 3 --timeout $left --out $OUT/g05.json" ;;
    g05f) cmd="python3 benchmarks/grpo_step.py --preset qwen2.5-0.5b --remat dots --logprob_impl fused --steps 3 \
      --timeout $left --out $OUT/g05f.json" ;;
    ppo05) cmd="python3 benchmarks/grpo_step.py --preset qwen2.5-0.5b --remat dots --logprob_impl fused --steps 3 \
      --algo ppo --timeout $left --out $OUT/ppo05.json" ;;
    g15f) cmd="python3 benchmarks/grpo_step.py --preset qwen2.5-1.5b --remat full --logprob_impl fused --steps 3 \
      --timeout $left --out $OUT/g15f.json" ;;
    ppo15) cmd="python3 benchmarks/grpo_step.py --preset qwen2.5-1.5b --remat full --logprob_impl fused --steps 3 \
      --algo ppo --timeout $left --out $OUT/ppo15.json" ;;
    cap24) cmd="XLA_PYTHON_CLIENT_MEM_FRACTION=0.155 python3 benchmarks/grpo_step.py --preset qwen2.5-0.5b --remat full \
      --logprob_impl fused --steps 3 --timeout $left --out $OUT/cap24.json" ;;
    fuse) cmd="python3 benchmarks/model_bench.py --presets qwen2.5-0.5b --decode_batches 128,256 --decode_attention pallas \
      --unroll_decode 1 --decode_variants rbg --fuse_projections 0,1 --skip prefill,train --profile --out $OUT/fuse.json" ;;
    cbuf_decode) cmd="$CB_LOOP python3 benchmarks/model_bench.py --presets qwen2.5-0.5b --decode_batches 128 \
      --prompt_len 256 --new_tokens 512 --decode_attention pallas --unroll_decode 1 --fuse_projections 0 --skip prefill,train \
      --profile --out $OUT/cbuf_decode_\$v.json; done" ;;
    cbuf_step) cmd="$CB_LOOP python3 benchmarks/grpo_step.py --preset qwen2.5-0.5b --remat dots \
      --logprob_impl fused --steps 3 --timeout 200 --out $OUT/cbuf_step_\$v.json; done" ;;
    *) echo "unknown stage $name"; return ;;
  esac
  echo "== $name ($left s left): $cmd"
  timeout "$left" bash -c "$cmd" > "$OUT/$name.log" 2>&1
  echo "== $name: rc=$? at $(($(date +%s) - start)) s"
  grep -v "^running\|^ *\[r1jax\] RESULT" "$OUT/$name.log" | tail -n "${TAIL:-8}"
}

nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
for s in $STAGES; do run_stage "$s"; done
