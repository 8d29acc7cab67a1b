#!/usr/bin/env bash
# Run an r1jax experiment on every host of a TPU VM pod slice (multi-host through jax.distributed).
#
#   tpu_scripts/launch_pod.sh TPU_NAME ZONE experiments/r1_zero.py --config.model.hf_checkpoint=/gcs/Qwen2.5-7B ...
#
# Each host runs the same command; --config.distributed=True makes the experiment call
# jax.distributed.initialize(), which reads the TPU topology from the metadata server.
set -euo pipefail
TPU_NAME=$1; ZONE=$2; shift 2
REPO_DIR=${REPO_DIR:-r1jax}
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd $REPO_DIR && . .venv/bin/activate && python $* --config.distributed=True"
