"""Benchmark: degradation throughput (images/s) at 512x512, GPU path (if CUDA) and CPU path in one run.

    python benchmarks/degradation.py [--preset common] [--batch 32] [--repeats 5] [--cpu-batch 8] [--cpu-repeats 3]

Each timing: one warm-up call, then ``repeats`` timed calls (``torch.cuda.synchronize`` around each on GPU);
the median is reported. Writes ``benchmarks/results/degradation.md`` and ``.json`` (device, torch version,
git commit, date). Target on an H100: >= 2,000 images/s and >= 20x the CPU path.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from _common import ROOT, device_name, git_commit, median_seconds, utc_now, write_results
from bfrzoo.data import Degrader
from bfrzoo.io import list_images, read_image

SAMPLE = ROOT / "bfrzoo" / "assets" / "sample" / "faces512" / "images"


def _batch(n: int, device: torch.device) -> torch.Tensor:
    files = list_images(SAMPLE)
    return torch.stack([read_image(files[i % len(files)]) for i in range(n)]).to(device)


def time_path(preset: str, device: torch.device, batch: int, repeats: int) -> dict:
    """Median images/s of ``Degrader(preset)`` on ``device`` for ``(batch, 3, 512, 512)`` inputs."""
    hq = _batch(batch, device)
    degrader = Degrader(preset, seed=0)
    seeds = itertools.count()  # seed 0 for the warm-up call (kernels, FFT plans, allocator), then 1, 2, ...
    med = median_seconds(lambda: degrader(hq, seed=next(seeds)), device, repeats, warmup=1)
    return {"device": device.type, "batch": batch, "repeats": repeats, "median_s": med, "images_per_s": batch / med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="common")
    ap.add_argument("--batch", type=int, default=32, help="GPU batch size")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--cpu-batch", type=int, default=8)
    ap.add_argument("--cpu-repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "degradation"))
    args = ap.parse_args()

    rows = []
    gpu_name = None
    if torch.cuda.is_available():
        gpu_name = device_name(torch.device("cuda", 0))
        rows.append(time_path(args.preset, torch.device("cuda"), args.batch, args.repeats) | {"name": gpu_name})
    cpu = torch.device("cpu")
    rows.append(time_path(args.preset, cpu, args.cpu_batch, args.cpu_repeats) | {"name": device_name(cpu)})
    speedup = rows[0]["images_per_s"] / rows[-1]["images_per_s"] if gpu_name else None
    result = {
        "benchmark": "degradation throughput, 512x512 RGB",
        "preset": args.preset,
        "torch": torch.__version__,
        "commit": git_commit(dirty_paths=("bfrzoo/data", "benchmarks/degradation.py", "benchmarks/_common.py")),
        "date": utc_now(),
        "rows": rows,
        "gpu_over_cpu": speedup,
        "target": ">= 2000 images/s on an H100 and >= 20x CPU",
    }
    lines = [
        f"# Degradation throughput (preset `{args.preset}`, 512x512)",
        "",
        f"torch {result['torch']}, commit `{result['commit']}`, {result['date']}. Median of repeats after one warm-up.",
        "",
        "| path | device | batch | median s/batch | images/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['device'].upper()} | {r['name']} | {r['batch']} | {r['median_s']:.4f} | {r['images_per_s']:.1f} |")
    if speedup is not None:
        lines += ["", f"GPU / CPU: {speedup:.1f}x. Target: {result['target']}."]
    else:
        lines += ["", "No CUDA device in this run: CPU row only. Target: " + result["target"] + "."]
    write_results(result, lines, Path(args.out))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
