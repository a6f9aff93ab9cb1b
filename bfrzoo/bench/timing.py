"""Timing done properly: warm-up, device synchronisation, several repeats, the median and the spread, and
several candidates timed INTERLEAVED (round-robin, the order rotated every round), so that a slow spell of a
shared machine hits every candidate alike and the ratios between them hold."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA runs asynchronously; a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Seconds per call of ``repeats`` timed calls: ``median_s`` and the spread ``iqr_pct`` (inter-quartile
    range over the median, in percent; 0 for fewer than 2 calls), ``min_s`` and ``max_s``."""

    median_s: float
    iqr_pct: float
    min_s: float
    max_s: float
    repeats: int

    @classmethod
    def of(cls, seconds: list[float]) -> Timing:
        med = statistics.median(seconds)
        if len(seconds) >= 2:
            q = statistics.quantiles(seconds, n=4, method="inclusive")
            iqr = 100.0 * (q[2] - q[0]) / med if med > 0 else 0.0
        else:
            iqr = 0.0
        return cls(med, iqr, min(seconds), max(seconds), len(seconds))


def time_interleaved(
    fns: Mapping[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, Timing]:
    """Time every ``fns[k]()``: ``warmup`` untimed calls each, then ``repeats`` rounds in which each candidate is
    called once between two synchronisations (round ``r`` starts at candidate ``r mod len(fns)``)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    synchronize(device)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            synchronize(device)
            t0 = time.perf_counter()
            fns[name]()
            synchronize(device)
            seconds[name].append(time.perf_counter() - t0)
    return {n: Timing.of(s) for n, s in seconds.items()}
