#!/usr/bin/env bash
# Speed round 3 (the decode at the bandwidth limit, the update's memory and MFU, the peers) on one GPU,
# in device calls of at most 10 minutes: each part capped, its output kept under $OUT.
#   OUT=dir bash benchmarks/issue31_gpu.sh PART...   (repo root)
# Parts (the Qwen2.5-0.5B GRPO step of benchmarks/grpo_step.py: 16 prompts x 8 samples, 256 + 512 tokens):
#   decode   the in-step decode at 128 rows (prompt 256, 512 new tokens), Pallas attention, with the kernel
#            profile of one decode step (what each kernel takes), and the ceilings in the same process (~1.5 min)
#   decodevars  the same decode (no profile) with the projections split along K (model.decode_split_k 0, 2,
#            4, 8) x through XLA or the Pallas small-M GEMM (model.decode_gemm; r1jax/model/decode_gemm.py),
#            8 variants in one process, each line printed as it is measured (~6-8 min, unmeasured)
#   writefirst  the same decode (no profile) with each layer's new key/value written into its cache before
#            the Pallas kernel (model.decode_write_first 0, 1: no merge of the new token after it) (~2 min)
#   fp8      the rollout's weights (sampling.rollout_weights): the step with the sampler decoding bf16, int8 and
#            fp8 (e4m3) projections, one process each, the trainer-vs-sampler log-prob mismatch of each in its
#            output (rollout_mismatch); then the decode alone with the three, each program's temporary
#            bytes recorded (a bf16 copy of the 8-bit weights hoisted out of the loop would show there) (~6 min)
#   heads    the step with the chunked vs the fused log-prob head, remat dots (~3 min)
#   memory   the fused-head step at the update settings that could hold the peak under 40 GB: remat dots
#            with grad_accum 2 and 4, remat full (~4.5 min)
#   peers    the fused-head step beside Tunix, TRL and TRL with continuous batching, one process each
#            (their wheels in .whl/: google-tunix 0.1.7, trl 1.16.0 and what the GPU machine lacks of their
#            needs) (~6 min)
set -uo pipefail
OUT=${OUT:-/tmp/issue31}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/gpu.txt"
stamp() { echo "== $(date +%T) $*"; }
step() {  # NAME CAP ARGS...: one grpo_step.py run, its table's last lines printed
  local name=$1 cap=$2; shift 2
  timeout "$cap" python3 benchmarks/grpo_step.py --preset qwen2.5-0.5b --steps 3 --out "$OUT/$name.json" "$@" 2>&1 \
    | grep -v -i warning | tee "$OUT/$name.log" | grep -E "^\||r1jax qwen|sampler vs|memory \(GB\)" | tail -n 8
}
for part in "$@"; do
  stamp "$part"
  case $part in
    decode)
      timeout 120 python3 benchmarks/model_bench.py --presets qwen2.5-0.5b --decode_batches 128 --prompt_len 256 \
        --new_tokens 512 --decode_attention pallas --unroll_decode 1 --skip prefill,train --profile \
        --out "$OUT/decode.json" 2>&1 | grep -v -i warning | tee "$OUT/decode.log" | tail -n 40 ;;
    decodevars)
      timeout 570 python3 benchmarks/model_bench.py --presets qwen2.5-0.5b --decode_batches 128 --prompt_len 256 \
        --new_tokens 512 --decode_attention pallas --unroll_decode 1 --decode_split_k 0,2,4,8 --decode_gemm xla,pallas \
        --skip prefill,train --out "$OUT/decodevars.json" 2>&1 | grep -v -i warning | tee "$OUT/decodevars.log" \
        | grep -E "^device|decode|FAILED" | tail -n 20 ;;
    writefirst)
      timeout 300 python3 benchmarks/model_bench.py --presets qwen2.5-0.5b --decode_batches 128 --prompt_len 256 \
        --new_tokens 512 --decode_attention pallas --unroll_decode 1 --decode_write_first 0,1 \
        --skip prefill,train --out "$OUT/writefirst.json" 2>&1 | grep -v -i warning | tee "$OUT/writefirst.log" \
        | grep -E "^device|decode|FAILED" | tail -n 8 ;;
    fp8)
      for w in compute int8 fp8; do
        step "fp8_step_$w" 110 --remat dots --logprob_impl fused --rollout_weights "$w"
      done
      timeout 200 python3 benchmarks/model_bench.py --presets qwen2.5-0.5b --decode_batches 128 --prompt_len 256 \
        --new_tokens 512 --decode_attention pallas --unroll_decode 1 --rollout_weights compute,int8,fp8 --temp_bytes \
        --skip prefill,train --out "$OUT/fp8_decode.json" 2>&1 | grep -v -i warning | tee "$OUT/fp8_decode.log" \
        | grep -E "^device|decode|FAILED" | tail -n 8 ;;
    heads)
      step heads_chunked 120 --remat dots --logprob_impl chunked
      step heads_fused 120 --remat dots --logprob_impl fused ;;
    memory)
      step mem_dots_ga2 100 --remat dots --logprob_impl fused --grad_accum 2
      step mem_dots_ga4 100 --remat dots --logprob_impl fused --grad_accum 4
      step mem_full 100 --remat full --logprob_impl fused ;;
    peers)
      step peers 360 --remat dots --logprob_impl fused --peers tunix,trl,trl_cb --timeout 170 \
        --peer_args "tunix=--micro_batch 2;trl=--micro_batch 32;trl_cb=--micro_batch 32" ;;
    *) echo "unknown part $part" ;;
  esac
done
stamp done
