#!/usr/bin/env bash
# Copy the checkout to every host of a TPU VM pod slice and install r1jax with TPU jax.
#
#   tpu_scripts/setup_pod.sh TPU_NAME ZONE
set -euo pipefail
TPU_NAME=$1; ZONE=$2
REPO_DIR=${REPO_DIR:-r1jax}
gcloud compute tpus tpu-vm scp --recurse "$(git rev-parse --show-toplevel)" "$TPU_NAME:$REPO_DIR" --zone "$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd $REPO_DIR && python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[tpu]'"
