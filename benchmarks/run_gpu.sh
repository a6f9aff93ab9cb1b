#!/usr/bin/env bash
# Every GPU benchmark in ONE call: a device session is 30 minutes on a bare machine, so nothing is left for later.
#   bash benchmarks/run_gpu.sh            # writes benchmarks/results/{degradation,gpen_speed,psfrgan_speed}.{md,json}
# On the device machine (torch, Lightning, torchmetrics preinstalled) the package runs from the checkout through
# PYTHONPATH, no install needed. With $OUT set (the device tool's return folder) the tables are copied there too.
# PEAK_TFLOPS: the GPU's dense bf16 peak for the "% of peak" column (989 = H100 SXM).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 BFRZOO_OFFLINE=1
PY=${PYTHON:-python}
"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print(torch.__version__, torch.cuda.get_device_name())'
"$PY" benchmarks/degradation.py
"$PY" benchmarks/gpen_speed.py --compile --peak-tflops "${PEAK_TFLOPS:-989}"
"$PY" benchmarks/psfrgan_speed.py
if [ -n "${OUT:-}" ]; then
  cp benchmarks/results/*.md benchmarks/results/*.json "$OUT"/
fi
