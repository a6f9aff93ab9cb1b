"""Dense peak throughput of known accelerators, for the model FLOPs utilisation (MFU) column of
``bfrzoo bench speed``: achieved FLOP/s (FlopCounterMode's forward count x images/s) over the device's peak for
the mode's dtype. Unknown devices (every CPU among them) get ``None``, printed "n/a".

Figures: the vendors' data sheets, dense (no 2:4 sparsity), tensor cores for bf16; ``fp32`` is the plain FP32
peak, because the fp32 rows run with TF32 off (true fp32). Matched by substring of
``torch.cuda.get_device_name()``, the first match wins (so the PCIe / NVL parts come before their SXM names).
"""
from __future__ import annotations

#: (substring of the device name, {dtype: dense peak TFLOP/s}).
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"fp32": 51.2, "bf16": 756.0}),
    ("H100 NVL", {"fp32": 60.0, "bf16": 835.0}),
    ("H200", {"fp32": 67.0, "bf16": 989.4}),
    ("H100", {"fp32": 67.0, "bf16": 989.4}),
    ("A100", {"fp32": 19.5, "bf16": 312.0}),
    ("L40S", {"fp32": 91.6, "bf16": 362.1}),
    ("L4", {"fp32": 30.3, "bf16": 121.0}),
    ("RTX 4090", {"fp32": 82.6, "bf16": 165.2}),
    ("V100", {"fp32": 15.7}),
)


def peak_tflops(device_name: str, dtype: str) -> float | None:
    """The dense peak TFLOP/s of ``device_name`` for ``dtype`` (``"fp32"`` or ``"bf16"``), ``None`` if unknown."""
    for key, peaks in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peaks.get(dtype)
    return None
