"""Benchmark: degradation throughput at 512x512 real faces: the torch path, the fast CPU (OpenCV) path and a plain
per-image OpenCV reference loop of the same preset, plus the DataModule's delivery rate; CUDA rows if present.

    python benchmarks/degradation.py [--preset all] [--batch 8] [--batches 8] [--repeats 3] [--workers 4] [--dm-batches 30]

Per-core figures: one process, ``torch.set_num_threads(1)`` and ``cv2.setNumThreads(1)``, batches of the first
8 faces of ``bfrzoo/assets/sample/faces512/images`` (decoded once, outside the timings), batch ``b`` seeded with
``stable_seed(0, "bench", preset, b)``; after one warm-up batch each, every batch runs once through the torch
path and ``--repeats`` times through the fast path and the reference, alternating, keeping each one's fastest
run. The rate is images per CPU-second of the process (``time.process_time``: on a shared machine other
processes' load moves the wall clock much more than the CPU time; the wall-clock rates are in the JSON too).

* torch path: ``Degrader(preset)(hq, seed=batch_seed)``, the batched executor the DataModule runs on a device
  (and, before ``degrade_on``, in CPU workers). It draws its parameters per batch, so its draws differ from the
  two paths below (same distribution).
* fast CPU path: :func:`bfrzoo.data.cpu_degradations.degrade_tensor` with ``image_seeds(batch_seed, 8)``, what
  ``FaceDataModule(degrade_on="workers")``'s collate runs: ``(N, 3, H, W)`` tensor in, tensor out.
* OpenCV reference: the loop one would write by hand with bfrzoo's sampler: per image ``sample_params(preset, 1)``
  with the same per-image seed as the fast path (so both do the same work), ``cv2.GaussianBlur`` /
  ``cv2.filter2D`` (bfrzoo's anisotropic and motion kernels) / ``cv2.blur`` / ``cv2.medianBlur`` (uint8),
  ``cv2.resize`` (area down, bilinear up), ``cv2.randn`` noise, ``cv2.imencode`` / ``imdecode``, on BGR float32
  HWC arrays, returning a list of HWC arrays (no batch tensor: the cheapest possible output).

DataModule rows: ``FaceDataModule(size=512, batch_size=8, num_workers=--workers, degrade_on="workers")`` on the
faces512 images (linked repeatedly into a temporary folder, so one epoch is long), iterated by a no-op step
(``on_after_batch_transfer`` and nothing else), clocked after ``2 * workers + 1`` warm-up batches (start-up and
prefetch): batches/s, and images per CPU-second of the main process and its workers (``/proc/<pid>/stat``), to
set against the reference's per-core rate.

Writes ``benchmarks/results/degradation.md`` and ``.json`` (device, torch / OpenCV versions, commit, date, load).
Target: the fast CPU path >= 0.9x the OpenCV reference per core for every preset; on an H100, the torch path
>= 2,000 images/s. ``--no-cpu`` runs the CUDA rows only (without OpenCV installed, they are all that runs).
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, device_name, git_commit, median_seconds, utc_now, write_results

from bfrzoo.data import PRESETS, Degrader
from bfrzoo.data.degradations import gaussian_kernels, motion_kernels, sample_params, stable_seed
from bfrzoo.data.presets import BLUR_KINDS, DegradationPreset, get_preset
from bfrzoo.io import list_images, read_image

SAMPLE = ROOT / "bfrzoo" / "assets" / "sample" / "faces512" / "images"
PATHS = ("bfrzoo/data", "bfrzoo/io.py", "benchmarks/degradation.py", "benchmarks/_common.py")


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, Linux) or the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return device_name(torch.device("cpu")).split(" (")[0]


def _faces(n: int) -> torch.Tensor:
    files = list_images(SAMPLE)
    return torch.stack([read_image(files[i % len(files)]) for i in range(n)]).contiguous()


def _batch_seed(preset: str, b: int) -> int:
    return stable_seed(0, "bench", preset, b)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _row(times: list[tuple[float, float]], images_per_batch: int) -> dict:
    wall, cpu = sum(t[0] for t in times), sum(t[1] for t in times)
    images = images_per_batch * len(times)
    return {"batches": len(times), "wall_s": wall, "cpu_s": cpu, "images_per_s": images / wall, "images_per_cpu_s": images / cpu}


# ------------------------------------------------------------------------------------------ the reference loop
def reference_image(img: np.ndarray, p, preset: DegradationPreset) -> np.ndarray:
    """The hand-written OpenCV degradation of one BGR float32 image for one sample's parameters ``p``."""
    import cv2

    h, w = img.shape[:2]
    kind = BLUR_KINDS[int(p.blur_kind)]
    if kind == "gaussian":
        r = int(torch.ceil(3 * p.sigma_x).clamp(1, preset.gaussian_kernel // 2))
        x = cv2.GaussianBlur(img, (2 * r + 1, 2 * r + 1), float(p.sigma_x), borderType=cv2.BORDER_REFLECT_101)
    elif kind == "aniso_gaussian":
        size = min(2 * int(torch.ceil(3 * torch.maximum(p.sigma_x, p.sigma_y))) + 1, preset.gaussian_kernel)
        x = cv2.filter2D(img, -1, gaussian_kernels(p.sigma_x, p.sigma_y, p.theta, size)[0].numpy())
    elif kind == "average":
        x = cv2.blur(img, (int(p.box_size),) * 2)
    elif kind == "median":
        u8 = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
        x = cv2.medianBlur(u8, int(p.box_size)).astype(np.float32) / 255
    else:
        size = int(p.motion_length) // 2 * 2 + 1
        x = cv2.filter2D(img, -1, motion_kernels(p.motion_length, p.motion_angle, size)[0].numpy())
    lh, lw = int(p.lq_height), int(p.lq_width)
    lq = cv2.resize(x, (lw, lh), interpolation=cv2.INTER_AREA if lh <= h else cv2.INTER_LINEAR)
    noise = np.empty_like(lq)
    cv2.randn(noise, (0.0,) * 3, (float(p.noise_sigma) / 255,) * 3)
    u8 = np.clip((lq + noise) * 255 + 0.5, 0, 255).astype(np.uint8)
    _, buf = cv2.imencode(".jpg", u8, (cv2.IMWRITE_JPEG_QUALITY, int(p.quality)))
    lq = cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float32) / 255
    up = cv2.resize(lq, (w, h), interpolation=cv2.INTER_LINEAR if lh <= h else cv2.INTER_AREA)
    return np.clip(up, 0, 1)


def reference_batch(images: list[np.ndarray], preset: DegradationPreset, seeds: list[int]) -> list[np.ndarray]:
    out = []
    for img, s in zip(images, seeds):
        p = sample_params(preset, 1, img.shape[0], img.shape[1], torch.Generator().manual_seed(s))
        out.append(reference_image(img, p, preset))
    return out


# ------------------------------------------------------------------------------------------ rows
def cpu_rows(preset: str, hq: torch.Tensor, batches: int, repeats: int) -> dict:
    """The three CPU paths on the same batches. Per batch: the torch path once; the fast path and the reference
    ``repeats`` times each, alternating, keeping each one's fastest run (what the code costs, not what other
    processes on a shared machine took from it). One untimed warm-up batch each."""
    import cv2

    from bfrzoo.data.cpu_degradations import degrade_tensor, image_seeds

    n = hq.shape[0]
    bgr = [np.ascontiguousarray(x.permute(1, 2, 0).numpy()[..., ::-1]) for x in hq]
    degrader = Degrader(preset, seed=0)
    p = get_preset(preset)
    paths = {
        "torch": lambda b: degrader(hq, seed=_batch_seed(preset, b)),
        "fast_cpu": lambda b: degrade_tensor(hq, p, image_seeds(_batch_seed(preset, b), n)),
        "opencv_reference": lambda b: reference_batch(bgr, p, image_seeds(_batch_seed(preset, b), n)),
    }
    for run in paths.values():
        run(-1)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for b in range(batches):
        times["torch"].append(_timed(lambda: paths["torch"](b)))
        runs: dict[str, list[tuple[float, float]]] = {"fast_cpu": [], "opencv_reference": []}
        for _ in range(repeats):
            for name in runs:
                runs[name].append(_timed(lambda: paths[name](b)))
        for name, r in runs.items():
            times[name].append(min(r, key=lambda t: t[1]))
    assert cv2.getNumThreads() == 1 and torch.get_num_threads() == 1
    rows = {name: _row(t, n) for name, t in times.items()}
    ref = rows["opencv_reference"]["images_per_cpu_s"]
    return {
        "preset": preset, "batch": n, "repeats": repeats, **rows,
        "fast_over_reference": rows["fast_cpu"]["images_per_cpu_s"] / ref,
        "torch_over_reference": rows["torch"]["images_per_cpu_s"] / ref,
    }


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of live processes, from ``/proc/<pid>/stat`` (Linux)."""
    total = 0.0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children() -> list[int]:
    pids: list[int] = []
    for task in Path("/proc/self/task").glob("*/children"):
        pids += [int(p) for p in task.read_text().split()]
    return pids


def datamodule_row(preset: str, workers: int, batches: int, batch: int) -> dict:
    """Batches delivered to a no-op step in one long epoch: wall rate, and images per CPU-second of the main
    process and its workers together (the per-core rate, whatever else the machine runs).

    The data root is a temporary plain folder of links to the faces512 images, repeated so that one epoch holds
    the warm-up (the first ``2 * workers + 1`` batches: start-up and the prefetched batches) and the
    ``batches`` timed ones: a real training set's epochs are long, the sample's 9-batch epochs are mostly
    start-up.
    """
    import tempfile

    from bfrzoo.data import FaceDataModule

    torch.set_num_threads(1)
    warmup = 2 * workers + 1  # the DataLoader's default prefetch_factor is 2 batches per worker
    files = list_images(SAMPLE)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range((warmup + batches + 1) * batch):
            src = files[i % len(files)]
            (Path(tmp) / f"{i:05d}{src.suffix}").symlink_to(src)
        dm = FaceDataModule(root=tmp, size=512, preset=preset, batch_size=batch, num_workers=workers, seed=0, degrade_on="workers")
        got, t0, c0 = 0, 0.0, 0.0
        for b in dm.train_dataloader():
            dm.on_after_batch_transfer(b, 0)  # the no-op step
            got += 1
            if got == warmup:
                t0, c0 = time.perf_counter(), _cpu_seconds([os.getpid(), *_children()])
            if got == warmup + batches:
                seconds, cpu = time.perf_counter() - t0, _cpu_seconds([os.getpid(), *_children()]) - c0
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {
        "preset": preset, "workers": workers, "batch": batch, "warmup_batches": warmup, "batches": batches,
        "wall_s": seconds, "cpu_s": cpu, "batches_per_s": batches / seconds, "images_per_s": batches * batch / seconds,
        "cores": cores, "images_per_cpu_s": batches * batch / cpu,
    }


def gpu_row(preset: str, batch: int, repeats: int) -> dict:
    dev = torch.device("cuda")
    hq = _faces(batch).to(dev)
    degrader = Degrader(preset, seed=0)
    seeds = iter(range(10**6))
    med = median_seconds(lambda: degrader(hq, seed=next(seeds)), dev, repeats, warmup=1)
    return {"preset": preset, "device": device_name(dev), "batch": batch, "median_s": med, "images_per_s": batch / med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="all", help="a preset name or 'all'")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=8, help="timed batches per CPU path and preset")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each batch for the fast path and the reference")
    ap.add_argument("--workers", type=int, default=4, help="DataModule workers (the recipes' default)")
    ap.add_argument("--dm-batches", type=int, default=30, help="timed DataModule batches (0: none)")
    ap.add_argument("--gpu-batch", type=int, default=32)
    ap.add_argument("--gpu-repeats", type=int, default=10)
    ap.add_argument("--no-cpu", action="store_true", help="CUDA rows only (e.g. on a machine without OpenCV)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "degradation"))
    args = ap.parse_args()
    presets = sorted(PRESETS) if args.preset == "all" else [get_preset(args.preset).name]

    commit = git_commit(dirty_paths=PATHS)
    result: dict = {
        "benchmark": "degradation throughput, 512x512 RGB real faces",
        "presets": presets, "torch": torch.__version__, "commit": commit, "date": utc_now(),
        "cpu": _cpu_model(), "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "cpu_rows": [], "datamodule_rows": [], "gpu_rows": [],
        "target": "fast CPU path >= 0.9x the OpenCV reference per core, every preset; torch path >= 2000 images/s on an H100",
    }
    if torch.cuda.is_available():
        result["gpu_rows"] = [gpu_row(p, args.gpu_batch, args.gpu_repeats) for p in presets]
    try:
        import cv2
    except ImportError:  # a device machine without OpenCV (benchmarks/run_gpu.sh): the CUDA rows still count
        cv2 = None
        print("OpenCV is not installed: no CPU rows (pip install 'opencv-python-headless<5' for them)", flush=True)
    if cv2 is not None and not args.no_cpu:
        result["opencv"] = cv2.__version__
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        hq = _faces(args.batch)
        for p in presets:
            result["cpu_rows"].append(cpu_rows(p, hq, args.batches, args.repeats))
            print(result["cpu_rows"][-1], flush=True)
        for p in presets if args.dm_batches > 0 else ():
            result["datamodule_rows"].append(datamodule_row(p, args.workers, args.dm_batches, args.batch))
            print(result["datamodule_rows"][-1], flush=True)
    result["load_average_end"] = os.getloadavg()
    lines = render(result)
    write_results(result, lines, Path(args.out))
    print("\n".join(lines))


def render(result: dict) -> list[str]:
    la0, la1 = result["load_average_start"][0], result["load_average_end"][0]
    lines = [
        "# Degradation throughput (512x512 real faces)",
        "",
        f"torch {result['torch']}, OpenCV {result.get('opencv', '-')}, commit `{result['commit']}`, {result['date']}, "
        f"CPU {result['cpu']} ({result['cores']} cores); 1-minute load average {la0:.1f} at the start and {la1:.1f} at the end (a shared machine: "
        "the per-core figures are images per CPU-second of this run's own processes, which other load barely moves; "
        "wall-clock rates are in the JSON).",
        "",
    ]
    if result["cpu_rows"]:
        r0 = result["cpu_rows"][0]
        lines += [
            f"Per core: one process, torch and OpenCV threads = 1, batch {r0['batch']}, {r0['fast_cpu']['batches']} "
            f"batches after a warm-up; per batch the torch path once, the fast path and the reference {r0['repeats']} "
            "times each, alternating, the fastest run kept; images per CPU-second.",
            "",
            "| preset | torch path | fast CPU path | OpenCV reference | fast / reference | torch / reference |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in result["cpu_rows"]:
            lines.append(
                f"| {r['preset']} | {r['torch']['images_per_cpu_s']:.1f} | {r['fast_cpu']['images_per_cpu_s']:.1f} | "
                f"{r['opencv_reference']['images_per_cpu_s']:.1f} | {r['fast_over_reference']:.2f}x | {r['torch_over_reference']:.3f}x |"
            )
        worst = min(r["fast_over_reference"] for r in result["cpu_rows"])
        lines += ["", f"Target: fast / reference >= 0.9x for every preset; worst {worst:.2f}x ({'met' if worst >= 0.9 else 'NOT met'}).", ""]
    if result["datamodule_rows"]:
        ref = {r["preset"]: r["opencv_reference"]["images_per_cpu_s"] for r in result["cpu_rows"]}
        d0 = result["datamodule_rows"][0]
        lines += [
            f"`FaceDataModule(size=512, batch_size={d0['batch']}, num_workers={d0['workers']}, degrade_on=\"workers\")` on "
            f"the faces512 images ({d0['cores']} cores), a no-op step, {d0['batches']} batches after "
            f"{d0['warmup_batches']} warm-up ones. Per core: images per CPU-second of the main process and its workers "
            "together; it includes what the reference leaves out (decoding the JPEG files, collating, the transfer "
            "between processes).",
            "",
            "| preset | batches/s | images/s | images/s per core | per core / reference per core | images/s / reference per core |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for d in result["datamodule_rows"]:
            r = ref[d["preset"]]
            lines.append(
                f"| {d['preset']} | {d['batches_per_s']:.2f} | {d['images_per_s']:.1f} | {d['images_per_cpu_s']:.1f} | "
                f"{d['images_per_cpu_s'] / r:.2f}x | {d['images_per_s'] / r:.2f}x |"
            )
        lines.append("")
    if result["gpu_rows"]:
        lines += ["| preset | GPU | batch | median s/batch | images/s |", "| --- | --- | --- | --- | --- |"]
        for g in result["gpu_rows"]:
            lines.append(f"| {g['preset']} | {g['device']} | {g['batch']} | {g['median_s']:.4f} | {g['images_per_s']:.1f} |")
    else:
        lines.append("No CUDA device in this run: no GPU row.")
    lines += ["", f"Target: {result['target']}."]
    return lines


if __name__ == "__main__":
    main()
