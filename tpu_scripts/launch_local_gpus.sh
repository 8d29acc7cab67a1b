#!/usr/bin/env bash
# One process per GPU of this host, joined into one mesh through jax.distributed (the code path of a
# multi-host TPU pod or GPU cluster):
#
#   tpu_scripts/launch_local_gpus.sh experiments/r1_zero.py --config.distributed=True --config.mesh.fsdp=-1 ...
#
# NUM_PROCESSES processes (default: the GPUs nvidia-smi lists); process i sees GPU i only
# (CUDA_VISIBLE_DEVICES) and finds the others through R1JAX_COORDINATOR_ADDRESS (127.0.0.1:
# COORDINATOR_PORT, default a free port), R1JAX_NUM_PROCESSES and R1JAX_PROCESS_ID, which
# r1jax.distributed.initialize() reads. PYTHON picks the interpreter. When one process fails the
# others are stopped and the script exits with status 1.
set -euo pipefail
PYTHON=${PYTHON:-python}
N=${NUM_PROCESSES:-$(nvidia-smi -L | wc -l)}
PORT=${COORDINATOR_PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop EXIT
for ((i = 0; i < N; i++)); do
  CUDA_VISIBLE_DEVICES=$i R1JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT R1JAX_NUM_PROCESSES=$N R1JAX_PROCESS_ID=$i \
    "$PYTHON" "$@" &
  pids+=($!)
done
status=0
for ((i = 0; i < N; i++)); do
  wait -n || { status=1; stop; }
done
exit $status
