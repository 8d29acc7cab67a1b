#!/usr/bin/env bash
# Run an r1jax experiment on one multi-GPU host (all local GPUs form one mesh).
#
#   tpu_scripts/launch_gpu.sh experiments/r1_zero.py --config.mesh.fsdp=-1 ...
set -euo pipefail
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
exec python "$@"
