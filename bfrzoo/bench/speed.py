"""``bfrzoo bench speed``: throughput, latency, memory, FLOPs and MFU of the registered restorers in every
inference mode, and one training step, on the device it runs on (CUDA or CPU alike).

Per model (random weights: speed does not depend on them; all-zero tensors, such as the zero-initialised last
layer of a residual network, are filled with seeded N(0, 0.02) so that every branch contributes to the output
and the difference column compares real computations, not identities), at its native size (``input_size``, else
:data:`NATIVE_SIZE`) and at every ``--size`` a fully convolutional network accepts:

* parameters, and GFLOPs per image of one forward pass (``torch.utils.flop_counter.FlopCounterMode``, a
  multiply-add counted as 2 FLOPs);
* per inference mode (:data:`bfrzoo.bench.modes.MODES`; unavailable ones are listed with the reason) and per
  batch: ms per image, images/s, the spread of the repeats (inter-quartile range over the median), the speedup
  over the fp32 default, the model FLOPs utilisation against the device's peak for the mode's dtype
  (:mod:`bfrzoo.bench.peaks`; "n/a" when unknown), and on CUDA the allocator's peak memory;
* the mode's max abs difference from fp32 on a seeded probe (restored image in ``[0, 1]``) and whether it is
  within :data:`bfrzoo.bench.modes.DEFAULT_TOLERANCE`;
* one training step (generator forward + backward with an L1 loss + Adam step; the U-Net recipe's real loss,
  a stated proxy for the GAN recipes, whose discriminators and feature losses it leaves out) in fp32 and, where
  the device has it, bf16 autocast;
* on CPU, the peak resident memory of a fresh subprocess per model that builds it and runs the fp32 forward at
  each batch (``python -m bfrzoo.bench.memory``).

All modes of one model and batch are timed interleaved in one process (:func:`bfrzoo.bench.timing.time_interleaved`),
so their ratios hold on a noisy machine. fp32 rows run with TF32 off (true fp32). The header carries the device,
torch version, commit (a dirty tree is refused unless allowed, then flagged) and date.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bfrzoo.bench.modes import (
    DEFAULT_TOLERANCE,
    MODES,
    InferenceMode,
    apply_mode,
    bf16_supported,
    get_mode,
    mode_unavailable,
    probe_images,
    restored_difference,
)
from bfrzoo.bench.peaks import peak_tflops
from bfrzoo.bench.timing import synchronize, time_interleaved
from bfrzoo.errors import BfrzooError

#: The size at which a fully convolutional network (no ``input_size``) is measured by default: the face size of
#: every full-scale recipe.
NATIVE_SIZE: int = 512

#: The CPU and GPU targets of the issue, reported as reached or not.
CPU_TARGET_SPEEDUP: float = 1.5
GPU_TARGET_SPEEDUP: float = 4.0
GPU_TARGET_MFU_PCT: float = 40.0


# ------------------------------------------------------------------------------------------------ provenance
def describe_device(device: torch.device) -> str:
    """The GPU's name, or the CPU's model, threads and SIMD level."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU ({model}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})"


def provenance(device: torch.device, allow_dirty: bool, writing: bool) -> dict[str, str]:
    """Device, torch version, commit and UTC date; refuses a dirty tree (``writing`` results, not allowed)."""
    from bfrzoo.tasks.reporting import git_commit

    commit = git_commit()
    if writing and commit.endswith("+dirty") and not allow_dirty:
        raise BfrzooError(
            f"the checkout has uncommitted changes (commit {commit}): commit them first, run from a clean clone, or "
            "pass --allow-dirty (the table is then flagged DIRTY)"
        )
    return {
        "device": describe_device(device),
        "torch": torch.__version__,
        "commit": commit,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ------------------------------------------------------------------------------------------------ networks
def build_for_speed(name: str, seed: int = 0) -> nn.Module:
    """The registered restorer ``name`` with random weights in which all-zero tensors are filled with seeded
    N(0, 0.02) (see the module docstring), in eval mode on the CPU."""
    from bfrzoo.registry import create_restorer

    torch.manual_seed(seed)
    net = create_restorer(name)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.is_floating_point() and p.numel() and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return net.eval()


def native_size(net: nn.Module) -> int:
    """``input_size`` of a fixed-size network, else :data:`NATIVE_SIZE` (rounded up to ``size_divisor``)."""
    size = getattr(net, "input_size", None)
    if size:
        return int(size)
    divisor = int(getattr(net, "size_divisor", 1))
    return -(-NATIVE_SIZE // divisor) * divisor


def sizes_for(net: nn.Module, extra: Sequence[int]) -> tuple[list[int], list[str]]:
    """The sizes to measure ``net`` at: native first, then each of ``extra`` it accepts; and a note for each it
    does not (a fixed-size network, or a size not divisible by ``size_divisor``)."""
    sizes, notes = [native_size(net)], []
    fixed = getattr(net, "input_size", None)
    divisor = int(getattr(net, "size_divisor", 1))
    for s in extra:
        if s in sizes:
            continue
        if fixed:
            notes.append(f"--size {s} skipped: fixed {fixed} px input")
        elif s % divisor:
            notes.append(f"--size {s} skipped: not divisible by size_divisor {divisor}")
        else:
            sizes.append(s)
    return sizes, notes


def count_flops(net: nn.Module, size: int, device: torch.device | str = "cpu") -> int:
    """FLOPs of one forward pass of one ``size x size`` image (FlopCounterMode; a multiply-add = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size, device=device)
    flags = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)  # the counter's module tracker needs grad mode on; no graph is kept this way
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            net(x)
    finally:
        for p, flag in zip(net.parameters(), flags):
            p.requires_grad_(flag)
    return int(counter.get_total_flops())


def num_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ------------------------------------------------------------------------------------------------ rows
@dataclass
class SpeedRow:
    """One measured (model, size, kind, mode, batch)."""

    model: str
    size: int
    kind: str  # "infer" | "train"
    mode: str
    batch: int
    params: int
    gflops_per_image: float
    ms_per_image: float | None = None
    images_per_s: float | None = None
    iqr_pct: float | None = None
    repeats: int = 0
    speedup_vs_fp32: float | None = None
    mfu_pct: float | None = None
    peak_mem_mib: float | None = None
    max_abs_diff: float | None = None
    within_tolerance: bool | None = None
    note: str = ""


@dataclass
class SpeedResult:
    """Everything one ``bfrzoo bench speed`` run measured, with its provenance and settings."""

    provenance: dict[str, str]
    settings: dict[str, Any]
    rows: list[SpeedRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    cpu_memory: list[dict[str, Any]] = field(default_factory=list)


def _dtype_key(mode: InferenceMode) -> str:
    return "bf16" if mode.dtype == torch.bfloat16 else "fp32"


def _mib(nbytes: int) -> float:
    return nbytes / 2**20


def _cuda_peak(fn: Callable[[], object], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return _mib(torch.cuda.max_memory_allocated(device))


def measure_inference(
    name: str, net: nn.Module, size: int, device: torch.device, modes: Sequence[str], batches: Sequence[int],
    repeats: int, warmup: int, tolerance: float, result: SpeedResult, log: Callable[[str], None],
) -> None:
    """The inference rows of one model at one size (see the module docstring)."""
    params = num_parameters(net)
    flops = count_flops(net, size, device)
    probe = probe_images(1, size).to(device)
    runners = {}
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        torch.manual_seed(0)
        ref = net(probe)
        ref = ref[0] if isinstance(ref, (tuple, list)) else ref
        for m in modes:
            mode = MODES[m]
            why = mode_unavailable(mode, device)
            if why:
                result.skipped.append(f"{name} {m}: {why}")
                continue
            runner = apply_mode(net, mode)
            torch.manual_seed(0)
            diffs[m] = restored_difference(runner(probe), ref)
            runners[m] = runner
    compiled = any(MODES[m].compile for m in runners)
    for b in batches:
        x = probe_images(b, size, seed=1).to(device)
        log(f"{name} {size}px batch {b}: timing {', '.join(runners)}")
        with torch.inference_mode():
            timings = time_interleaved(
                {m: (lambda r=r: r(x)) for m, r in runners.items()}, device, repeats, warmup + (2 if compiled else 0)
            )
            peaks = {m: _cuda_peak(lambda r=r: r(x), device) for m, r in runners.items()}
        base = timings.get("fp32")
        for m, t in timings.items():
            ips = b / t.median_s
            peak = peak_tflops(result.provenance["device"], _dtype_key(MODES[m])) if device.type == "cuda" else None
            result.rows.append(SpeedRow(
                model=name, size=size, kind="infer", mode=m, batch=b, params=params, gflops_per_image=flops / 1e9,
                ms_per_image=1000 * t.median_s / b, images_per_s=ips, iqr_pct=t.iqr_pct, repeats=t.repeats,
                speedup_vs_fp32=(base.median_s / t.median_s) if base else None,
                mfu_pct=(100 * flops * ips / (peak * 1e12)) if peak else None,
                peak_mem_mib=peaks[m], max_abs_diff=diffs[m], within_tolerance=diffs[m] <= tolerance,
            ))


def measure_training(
    name: str, net: nn.Module, size: int, device: torch.device, batch: int, repeats: int, warmup: int,
    result: SpeedResult, log: Callable[[str], None],
) -> None:
    """One training step (G forward + backward, L1 + Adam) per dtype, timed interleaved, weights restored."""
    params = num_parameters(net)
    flops = count_flops(net, size, device)
    dtypes = {"fp32": torch.float32}
    if bf16_supported(device):
        dtypes["bf16"] = torch.bfloat16
    else:
        result.skipped.append(f"{name} train bf16: {mode_unavailable(MODES['bf16'], device)}")
    model = copy.deepcopy(net).to(device).train().requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    target = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)

    def step(dtype: torch.dtype) -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out = model(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
        loss = (out.float() - target).abs().mean()
        loss.backward()
        opt.step()

    log(f"{name} {size}px: timing the training step at batch {batch} ({', '.join(dtypes)})")
    state = copy.deepcopy(model.state_dict())
    timings = time_interleaved({k: (lambda d=d: step(d)) for k, d in dtypes.items()}, device, repeats, warmup)
    peaks = {k: _cuda_peak(lambda d=d: step(d), device) for k, d in dtypes.items()}
    model.load_state_dict(state)
    note = "G fwd+bwd+Adam, L1" if name.startswith("unet") else "proxy: G fwd+bwd+Adam, L1 (no D, no feature losses)"
    for k, t in timings.items():
        ips = batch / t.median_s
        peak = peak_tflops(result.provenance["device"], k) if device.type == "cuda" else None
        result.rows.append(SpeedRow(
            model=name, size=size, kind="train", mode=k, batch=batch, params=params, gflops_per_image=flops / 1e9,
            ms_per_image=1000 * t.median_s / batch, images_per_s=ips, iqr_pct=t.iqr_pct, repeats=t.repeats,
            speedup_vs_fp32=timings["fp32"].median_s / t.median_s,
            mfu_pct=(100 * 3 * flops * ips / (peak * 1e12)) if peak else None,  # backward ~ 2x forward
            peak_mem_mib=peaks[k], note=note,
        ))


def cpu_memory(name: str, size: int, batches: Sequence[int], timeout_s: float = 1800) -> dict[str, Any]:
    """Peak RSS of a fresh subprocess that builds ``name`` and runs the fp32 forward at each batch (ascending)."""
    cmd = [sys.executable, "-m", "bfrzoo.bench.memory", name, "--size", str(size),
           "--batches", ",".join(str(b) for b in sorted(batches)), "--threads", str(torch.get_num_threads())]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "size": size, "error": f"memory subprocess failed: {last}"}
    return {"model": name, "size": size, **json.loads(proc.stdout.strip().splitlines()[-1])}


def run_speed(
    models: Sequence[str],
    device: str | torch.device | None = None,
    sizes: Sequence[int] = (),
    batches: Sequence[int] = (1, 16),
    modes: Sequence[str] | None = None,
    repeats: int = 5,
    warmup: int = 2,
    train_batch: int = 8,
    train: bool = True,
    memory: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    allow_dirty: bool = False,
    writing: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> SpeedResult:
    """Measure ``models`` (registered names) as the module docstring says; see ``bfrzoo bench speed --help``."""
    from bfrzoo.registry import restorer_entry

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BfrzooError("--device cuda: no CUDA device is visible; use --device cpu")
    if not models:
        raise BfrzooError("no models to measure")
    for name in models:
        restorer_entry(name)  # unknown name -> one clear error before any work
    if any(b < 1 for b in batches) or not batches or repeats < 1 or warmup < 0 or train_batch < 1:
        raise BfrzooError("batches and --train-batch must be >= 1, --repeats >= 1 and --warmup >= 0")
    if any(s < 8 for s in sizes):
        raise BfrzooError(f"--size must be >= 8 px, got {', '.join(map(str, sizes))}")
    modes = list(modes) if modes else list(MODES)
    for m in modes:
        get_mode(m)
    if "fp32" not in modes:
        modes.insert(0, "fp32")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    result = SpeedResult(
        provenance(device, allow_dirty, writing),
        {"batches": list(batches), "repeats": repeats, "warmup": warmup, "train_batch": train_batch if train else None,
         "modes": modes, "tolerance": tolerance, "threads": torch.get_num_threads(), "extra_sizes": list(sizes)},
    )
    try:
        for name in models:
            net = build_for_speed(name).to(device)
            model_sizes, notes = sizes_for(net, sizes)
            result.skipped += [f"{name}: {n}" for n in notes]
            for size in model_sizes:
                measure_inference(name, net, size, device, modes, batches, repeats, warmup, tolerance, result, log)
                if train:
                    measure_training(name, net, size, device, train_batch, max(1, repeats // 2 + 1), 1, result, log)
                if memory and device.type == "cpu":
                    log(f"{name} {size}px: peak RSS in a subprocess")
                    result.cpu_memory.append(cpu_memory(name, size, batches))
            del net
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return result


# ------------------------------------------------------------------------------------------------ tables
def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def targets(result: SpeedResult) -> list[list[object]]:
    """Per (model, size, batch): the fastest mode within the tolerance, its speedup over fp32, and whether the
    target of the device type (CPU: >= 1.5x; GPU: >= 4x, and >= 40% of the bf16 peak at the largest batch) is met."""
    rows = []
    cuda = not result.provenance["device"].startswith("CPU")
    keys = sorted({(r.model, r.size, r.batch) for r in result.rows if r.kind == "infer"}, key=lambda k: (k[0], k[1], k[2]))
    for model, size, batch in keys:
        cands = [r for r in result.rows if r.kind == "infer" and (r.model, r.size, r.batch) == (model, size, batch)]
        ok = [r for r in cands if r.within_tolerance and r.images_per_s]
        best = max(ok, key=lambda r: r.images_per_s or 0.0)
        speedup = best.speedup_vs_fp32 or 1.0
        if cuda:
            need = f">= {GPU_TARGET_SPEEDUP:g}x" + (f", MFU >= {GPU_TARGET_MFU_PCT:g}%" if batch == max(result.settings["batches"]) else "")
            met = speedup >= GPU_TARGET_SPEEDUP and (
                batch != max(result.settings["batches"]) or (best.mfu_pct or 0.0) >= GPU_TARGET_MFU_PCT)
        else:
            need, met = f">= {CPU_TARGET_SPEEDUP:g}x", speedup >= CPU_TARGET_SPEEDUP
        rows.append([model, size, batch, best.mode, f"{speedup:.2f}x", _pct(best.mfu_pct), f"{best.max_abs_diff:.1e}",
                     need, "yes" if met else "no"])
    return rows


def render_markdown(result: SpeedResult, command: str | None = None) -> str:
    """The Markdown page of a run (rendered by :func:`bfrzoo.tables.markdown_table`)."""
    from bfrzoo.tables import markdown_table

    p, s = result.provenance, result.settings
    dirty = p["commit"].endswith("+dirty")
    lines = [
        f"# bfrzoo bench speed: {p['device']}",
        "",
        f"{p['device']}; torch {p['torch']}; commit `{p['commit']}`{' (**DIRTY TREE: not a clean commit**)' if dirty else ''}; "
        f"{p['date']}.",
        "",
    ]
    if command:
        lines += ["```bash", command, "```", ""]
    lines += [
        f"Settings: batches {', '.join(map(str, s['batches']))}; {s['repeats']} timed repeats after {s['warmup']} "
        f"warm-up calls (+2 for compiled modes), all modes of a model and batch interleaved round-robin in one "
        f"process; median, spread = inter-quartile range over the median; {s['threads']} CPU threads; fp32 with TF32 "
        f"off. Random weights (all-zero tensors filled with seeded N(0, 0.02)). GFLOP = one forward of one image "
        f"(FlopCounterMode, multiply-add = 2). MFU = achieved FLOP/s over the device's dense peak for the mode's "
        f"dtype (n/a: peak unknown, e.g. every CPU). Max abs diff: the mode's restored image ([0, 1]) against fp32's "
        f"on a seeded probe; tolerance {s['tolerance']:.4f} (4/255).",
        "",
        "## Inference",
        "",
    ]
    infer = [r for r in result.rows if r.kind == "infer"]
    header = ["model", "size", "mode", "batch", "params (M)", "GFLOP/img", "ms/img", "img/s", "spread %",
              "x fp32", "MFU %", "peak MiB", "max abs diff", "within tol."]
    lines.append(markdown_table(header, [
        [r.model, r.size, r.mode, r.batch, f"{r.params / 1e6:.2f}", f"{r.gflops_per_image:.2f}", _fmt(r.ms_per_image, 1),
         _fmt(r.images_per_s), _fmt(r.iqr_pct, 1), _fmt(r.speedup_vs_fp32), _pct(r.mfu_pct),
         _fmt(r.peak_mem_mib, 0) if r.peak_mem_mib is not None else "-", f"{r.max_abs_diff:.1e}",
         "yes" if r.within_tolerance else "NO"] for r in infer
    ]))
    train = [r for r in result.rows if r.kind == "train"]
    if train:
        lines += ["", "## One training step", "", markdown_table(
            ["model", "size", "dtype", "batch", "ms/step", "img/s", "spread %", "x fp32", "MFU %", "peak MiB", "what"],
            [[r.model, r.size, r.mode, r.batch, _fmt((r.ms_per_image or 0) * r.batch, 1), _fmt(r.images_per_s),
              _fmt(r.iqr_pct, 1), _fmt(r.speedup_vs_fp32), _pct(r.mfu_pct),
              _fmt(r.peak_mem_mib, 0) if r.peak_mem_mib is not None else "-", r.note] for r in train],
        ), "", "Training MFU counts a step as 3 forward passes (backward ~ 2x forward)."]
    if result.cpu_memory:
        mem_rows = []
        for m in result.cpu_memory:
            if "error" in m:
                mem_rows.append([m["model"], m["size"], "-", "-", m["error"]])
                continue
            for b, peak in m["peak_rss_mib"].items():
                mem_rows.append([m["model"], m["size"], b, f"{peak:.0f}", f"{m['rss_after_build_mib']:.0f}"])
        lines += ["", "## CPU memory (peak RSS of a fresh process per model, fp32 forward)", "",
                  markdown_table(["model", "size", "batch", "peak RSS MiB", "peak MiB of import + build"], mem_rows)]
    lines += ["", "## Targets", "", markdown_table(
        ["model", "size", "batch", "fastest mode within tolerance", "x fp32", "MFU %", "max abs diff", "target", "reached"],
        targets(result),
    )]
    if result.skipped:
        lines += ["", "Not measured:", "", *(f"- {n}" for n in result.skipped)]
    return "\n".join(lines) + "\n"


CSV_FIELDS: tuple[str, ...] = (*SpeedRow.__dataclass_fields__, "device", "torch", "commit", "date")


def render_csv(result: SpeedResult) -> str:
    """One line per row (long format), with the provenance on every line."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n")
    writer.writeheader()
    for r in result.rows:
        writer.writerow({**asdict(r), **result.provenance})
    return buf.getvalue()


def write_speed(result: SpeedResult, out: str | Path, command: str | None = None) -> tuple[Path, Path]:
    """``out.md`` and ``out.csv`` (atomically)."""
    from bfrzoo.io import atomic_write_text

    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".md", ".csv") else out
    md = atomic_write_text(stem.with_suffix(".md"), render_markdown(result, command))
    cs = atomic_write_text(stem.with_suffix(".csv"), render_csv(result))
    return md, cs
