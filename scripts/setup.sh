#!/usr/bin/env bash
# Create .venv and install bfrzoo into it (idempotent). Usage: bash scripts/setup.sh [--test]
#   --test   also install the test extras (pytest, scikit-image).
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
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
.venv/bin/python -m pip install -q -e ".${extras}"
echo "bfrzoo installed in $(pwd)/.venv"
