#!/usr/bin/env bash
# Set up and run the main job: train the U-Net baseline at demo scale on the embedded sample faces, then test it.
# Leaves runs/unet/logs/version_N/{checkpoints/,restorer.pt,test_metrics.md,test_grid.png}. Extra arguments go
# to `bfrzoo fit` (e.g. --recipe gpen, --trainer.max_epochs 2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=${WANDB_MODE:-offline}
recipe=unet
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = "--recipe" ]; then recipe=$2; shift 2; else args+=("$1"); shift; fi
done
exec .venv/bin/bfrzoo fit --recipe "$recipe" --demo "${args[@]}"
