"""What every benchmark script shares: timing with device synchronisation, peak memory, and the provenance
(device, torch version, git commit, date) written next to the results.

Not part of the package; the scripts in this folder import it as ``_common`` (Python puts a script's folder first
on ``sys.path``).
"""
from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def git_commit(dirty_paths: Sequence[str] = ()) -> str:
    """Short commit hash of the checkout (``"unknown"`` outside git); with ``dirty_paths``, ``-dirty`` is
    appended when any of those paths differs from that commit."""
    try:
        head = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
        if not dirty_paths:
            return head
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *dirty_paths], cwd=ROOT).returncode != 0
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def utc_now() -> str:
    """The date of a run: UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's with the number of threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA runs asynchronously; a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak CUDA memory allocated since :func:`reset_peak_memory` (``None`` on CPU)."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """``warmup`` untimed calls, then ``repeats`` calls each timed between two synchronisations: the median."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, int | None]:
    """:func:`median_seconds` and the peak CUDA memory in bytes of the timed calls (the warm-up excluded, so
    one-off allocations such as compilation do not count; ``None`` on CPU)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    reset_peak_memory(device)
    return median_seconds(fn, device, repeats, warmup=0), peak_memory_bytes(device)


def write_results(result: dict[str, Any], lines: Sequence[str], out: Path) -> None:
    """``out.json`` (the full ``result``) and ``out.md`` (the table ``lines``), creating the folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
