"""Benchmark: GPEN-512 inference and training speed, memory and FLOPs (a benchmark, not a test).

    python benchmarks/gpen_speed.py [--compile] [--peak-tflops 989]     # GPEN-512 on CUDA: writes results
    python benchmarks/gpen_speed.py --size 64 --device cpu --repeats 1  # CPU smoke run: prints, writes nothing

``--size 512`` is the released GPEN-BFR-512 configuration; any other size builds the tiny ``gpen`` test
configuration at that size (smoke runs only). Rows: {grouped, dense} modulated convolutions x {fp32, bf16
autocast} x {contiguous, channels_last} (x {eager, torch.compile} with ``--compile``):
inference images/s at batch 1 and 16, one training step (G forward + backward + Adam step, L1 loss, batch 8)
in ms and images/s, peak CUDA memory of each (timed calls, warm-up excluded), and the max abs difference of the
output from fp32 eager (the fp32 check). FLOPs per face come from ``torch.utils.flop_counter.FlopCounterMode`` (one 512x512 face,
a multiply-add counted as 2 FLOPs); with ``--peak-tflops`` (the device's dense peak for the dtype, e.g. 989 for
H100 SXM bf16) each inference row also gives the achieved fraction of that peak. Each timing: warm-up calls, then ``repeats`` timed calls with
``torch.cuda.synchronize``; the median is reported. Writes ``benchmarks/results/gpen_speed.md`` and ``.json``
(device, torch version, git commit, date) only for CUDA runs of the full-size model.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from _common import ROOT, device_name, git_commit, timed, utc_now, write_results
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bfrzoo.blocks.stylegan2 import set_grouped_modconv
from bfrzoo.models.gpen import GPEN, gpen, gpen_512


def _mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / 2**20


def flops_per_face(net: GPEN, device: torch.device) -> int:
    """Forward FLOPs for one face (``FlopCounterMode``, multiply-add = 2 FLOPs)."""
    x = torch.zeros(1, 3, net.input_size, net.input_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter:  # grad mode on: FlopCounterMode's module tracker hooks need autograd graphs
        net(x)
    return int(counter.get_total_flops())


def _to_format(net: nn.Module, fmt: torch.memory_format) -> nn.Module:
    """``Module.to(memory_format=...)`` for the 4-d tensors only (modulated-conv weights are 5-d and are
    re-made per sample at every forward anyway)."""
    for t in list(net.parameters()) + list(net.buffers()):
        if t.ndim == 4:
            t.data = t.data.contiguous(memory_format=fmt)
    return net


def run_config(
    net: GPEN, device: torch.device, dtype: torch.dtype, channels_last: bool, compile_: bool, grouped: bool,
    batches: tuple[int, ...], train_batch: int, repeats: int, reference: torch.Tensor, probe: torch.Tensor,
    flops: int, peak_tflops: float | None,
) -> dict:
    """Time one (modulated-conv path, dtype, memory format, compile) configuration."""
    set_grouped_modconv(net, grouped)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = _to_format(net, fmt)
    fwd: nn.Module | Callable = torch.compile(model) if compile_ else model
    amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    size = net.input_size
    warmup = 3 if compile_ else 1
    row: dict = {"modconv": "grouped" if grouped else "dense", "dtype": str(dtype).replace("torch.", ""),
                 "channels_last": channels_last, "compile": compile_}

    model.eval()
    with torch.no_grad(), amp:
        out = fwd(probe.to(memory_format=fmt))
    row["max_abs_vs_fp32_eager"] = float((out.float() - reference).abs().max())
    for b in batches:
        x = torch.rand(b, 3, size, size, device=device).mul(2).sub(1).contiguous(memory_format=fmt)

        def infer() -> None:
            with torch.no_grad(), amp:
                fwd(x)

        t, peak = timed(infer, device, repeats, warmup)
        row[f"infer_b{b}_images_per_s"] = b / t
        if peak_tflops:
            row[f"infer_b{b}_pct_peak"] = 100 * flops * b / t / (peak_tflops * 1e12)
        row[f"infer_b{b}_peak_mib"] = _mib(peak)

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.0, 0.99))
    x = torch.rand(train_batch, 3, size, size, device=device).mul(2).sub(1).contiguous(memory_format=fmt)
    target = torch.rand_like(x).mul(2).sub(1)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = (fwd(x).float() - target).abs().mean()
        loss.backward()
        opt.step()

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    t, peak = timed(train_step, device, repeats, warmup)
    model.load_state_dict(state)  # keep the weights identical across configurations
    row["train_b%d_ms" % train_batch] = t * 1000
    row["train_b%d_images_per_s" % train_batch] = train_batch / t
    row["train_b%d_peak_mib" % train_batch] = _mib(peak)
    _to_format(model, torch.contiguous_format).eval()
    set_grouped_modconv(net, True)
    return row


def table(result: dict) -> list[str]:
    """The Markdown page of a run."""
    tb = result["train_batch"]
    lines = [
        f"# GPEN-{result['size']} speed",
        "",
        f"{result['device']}, torch {result['torch']}, commit `{result['commit']}`, {result['date']}. "
        f"Median of {result['repeats']} timed calls after warm-up. FLOPs per face (forward, FlopCounterMode): "
        f"{result['gflops_per_face']:.1f} GFLOP. Parameters: {result['params_m']:.2f} M. "
        f"% of peak: achieved FLOP/s at batch {max(result['batches'])} over {result['peak_tflops'] or 'n/a'} TFLOP/s.",
        "",
        f"| modconv | dtype | channels_last | compile | img/s b{min(result['batches'])} | img/s b{max(result['batches'])} | % peak b{max(result['batches'])} | peak MiB b{max(result['batches'])} | train step b{tb} ms | train img/s | train peak MiB | max abs vs fp32 eager |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    b_lo, b_hi = min(result["batches"]), max(result["batches"])
    for r in result["rows"]:
        lines.append(
            f"| {r['modconv']} | {r['dtype']} | {r['channels_last']} | {r['compile']} | "
            f"{r[f'infer_b{b_lo}_images_per_s']:.1f} | {r[f'infer_b{b_hi}_images_per_s']:.1f} | "
            f"{r.get(f'infer_b{b_hi}_pct_peak', float('nan')):.1f} | {r[f'infer_b{b_hi}_peak_mib'] or 0:.0f} | "
            f"{r[f'train_b{tb}_ms']:.1f} | {r[f'train_b{tb}_images_per_s']:.1f} | {r[f'train_b{tb}_peak_mib'] or 0:.0f} | "
            f"{r['max_abs_vs_fp32_eager']:.2e} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=512, help="512: GPEN-BFR-512; other sizes: tiny config (smoke run)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak TFLOP/s for the %% of peak column")
    ap.add_argument("--no-dense", action="store_true", help="time only the grouped modulated convolutions")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batches", type=int, nargs="+", default=(1, 16))
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpen_speed")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are true fp32
    torch.backends.cudnn.allow_tf32 = False
    tiny = args.size != 512
    net = (gpen(size=args.size) if tiny else gpen_512()).to(device).eval()
    probe = torch.rand(2, 3, net.input_size, net.input_size, device=device, generator=None).mul(2).sub(1)
    with torch.no_grad():
        reference = net(probe).float()
    flops = flops_per_face(net, device)
    dtypes = [torch.float32, torch.bfloat16]
    rows = []
    for compile_ in (False, True) if args.compile else (False,):
        for grouped in (True,) if args.no_dense else (True, False):
            for dtype in dtypes:
                for cl in (False, True):
                    row = run_config(net, device, dtype, cl, compile_, grouped, tuple(args.batches), args.train_batch,
                                     args.repeats, reference, probe, flops, args.peak_tflops)
                    print(json.dumps(row))
                    rows.append(row)
    result = {
        "benchmark": "gpen_speed",
        "size": net.input_size,
        "device": device_name(device),
        "torch": torch.__version__,
        "commit": git_commit(),
        "date": utc_now(),
        "repeats": args.repeats,
        "batches": list(args.batches),
        "train_batch": args.train_batch,
        "gflops_per_face": flops / 1e9,
        "peak_tflops": args.peak_tflops,
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "rows": rows,
    }
    if device.type != "cuda" or tiny:
        print(f"smoke run on {result['device']} ({'tiny' if tiny else 'full'} model): results not written")
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
        return
    write_results(result, table(result), args.out)
    print(f"wrote {args.out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
