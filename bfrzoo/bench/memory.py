"""Peak resident memory of one restorer's fp32 forward on the CPU, in a fresh process (what
``bfrzoo bench speed`` runs once per model on CPU, so that no other model's memory is counted)::

    python -m bfrzoo.bench.memory NAME --size 512 --batches 1,16 [--threads 2]

Prints one JSON line: ``rss_after_build_mib`` (the peak while importing torch and building the network) and
``peak_rss_mib`` per batch (the peak during that batch's forward). On Linux the peak is ``VmHWM`` of
``/proc/self/status``, reset before each batch through ``/proc/self/clear_refs`` (``getrusage``'s ``ru_maxrss``
would not do: Linux carries the PARENT's peak over into a child across ``fork`` + ``exec``); elsewhere
``ru_maxrss``, so the batches run in ascending order.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")


def _peak_mib() -> float:
    """This process's peak resident memory (MiB) since it started or since :func:`_reset_peak`."""
    if _STATUS.is_file():
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _reset_peak() -> None:
    """Reset the peak to the current RSS (Linux >= 4.0); a no-op where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--batches", default="1")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from bfrzoo.bench.modes import probe_images
    from bfrzoo.bench.speed import build_for_speed

    net = build_for_speed(args.name)
    out = {"rss_after_build_mib": _peak_mib(), "peak_rss_mib": {}}
    for b in sorted(int(v) for v in args.batches.split(",")):
        _reset_peak()
        with torch.inference_mode():
            net(probe_images(b, args.size))
        out["peak_rss_mib"][str(b)] = _peak_mib()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
