#!/usr/bin/env bash
# Create .venv and install bfrzoo into it (idempotent). Usage: bash scripts/setup.sh [--test]
#   --test   also install the test extras (pytest, scikit-image, ...).
# torch 2.14.1 / torchvision 0.29.1 come from the machine's local files where pip has them, else from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "bfrzoo needs Python >= 3.11 (found $("$PYTHON" --version)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
extras="[photos]"  # MTCNN for `bfrzoo restore` on whole photos (facenet-pytorch 2.5.3: no torch pin)
[ "${1:-}" = "--test" ] && extras="[photos,test]"
.venv/bin/python -m pip install -q -e ".${extras}"
# facexlib's RetinaFace (used when its weight file is present): --no-deps, or pip adds opencv-python (a second
# OpenCV next to opencv-python-headless) and numba; bfrzoo imports only its detection network, which needs neither.
.venv/bin/python -m pip install -q --no-deps "facexlib==0.3.0"
echo "bfrzoo installed in $(pwd)/.venv"
