"""``bfrzoo bench``: the comparison of the zoo's restorers, and the inference-mode choice that uses it.

* :mod:`bfrzoo.bench.speed` (``bfrzoo bench speed``): throughput, latency, memory, FLOPs and model FLOPs
  utilisation of every registered restorer in every inference mode (fp32, channels_last, bf16, torch.compile),
  one training step, on CUDA or CPU, timed interleaved in one process.
* :mod:`bfrzoo.bench.quality` (``bfrzoo bench quality``): every model scored on ONE fixed, seeded degraded test
  set with the full metrics suite, and a no-reference block on real low-quality faces.
* :mod:`bfrzoo.bench.train` (``bfrzoo bench train``): a fixed wall-clock training budget per model (and per paper
  ablation), then ``quality``.
* :mod:`bfrzoo.bench.modes`: the inference modes and :func:`fastest_mode`, which
  :class:`bfrzoo.interface.Restorer` (``mode="auto"``) and ``bfrzoo restore`` consult.

Light at import (torch only): the speed, quality and training parts load their dependencies when called.
"""
from __future__ import annotations

from bfrzoo.bench.modes import (
    DEFAULT_TOLERANCE,
    MODES,
    InferenceMode,
    ModeChoice,
    apply_mode,
    fastest_mode,
    mode_unavailable,
    resolve_mode,
)

__all__ = [
    "DEFAULT_TOLERANCE", "InferenceMode", "MODES", "ModeChoice", "apply_mode", "fastest_mode", "mode_unavailable",
    "resolve_mode",
]
