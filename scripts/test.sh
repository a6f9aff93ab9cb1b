#!/usr/bin/env bash
# Set up and run the whole test suite (CPU only, offline). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 BFRZOO_OFFLINE=1 WANDB_MODE=disabled
exec .venv/bin/python -m pytest -q "$@"
