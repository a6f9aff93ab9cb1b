"""Benchmark: PSFR-GAN speed — the full restorer (FPN parsing + generator) and one training step.

    python benchmarks/psfrgan_speed.py                       # published 512 configuration, on CUDA
    python benchmarks/psfrgan_speed.py --tiny --device cpu --repeats 1 --no-compile --batches 1   # CPU smoke run (64 px, minutes); writes no results

Measured (random weights; speed does not depend on them):
* inference images/s at batch 1 and 16 in fp32, bf16 autocast, channels_last, and torch.compile;
* one training step (generator + 3-scale discriminator, losses of Eq. 4-9 with a randomly initialised VGG19)
  images/s, fp32 and bf16 autocast;
* peak GPU memory of each run, FLOPs per face (torch.utils.flop_counter, forward of FPN + generator);
* fp32 check: the GPU fp32 output against the CPU fp32 output of the same weights (max abs difference, TF32
  off), and the bf16 output against fp32.
Each timing: warm-up calls, then ``repeats`` timed calls with ``torch.cuda.synchronize``; the median is kept.
Writes ``benchmarks/results/psfrgan_speed.md`` and ``.json`` (device, torch version, git commit, date) on CUDA
only.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from _common import ROOT, device_name, git_commit, timed, utc_now, write_results

from bfrzoo.losses.adversarial import feature_matching_loss, hinge_d_loss, hinge_g_loss
from bfrzoo.losses.semantic_style import SemanticStyleLoss
from bfrzoo.models.multiscale_discriminator import MultiScaleDiscriminator
from bfrzoo.models.psfrgan import PSFRGAN, psfrgan

TINY = dict(out_size=64, ch_range=(32, 64), parser_min_feat_size=16, parser_base_ch=16, parser_res_depth=3,
            parser_ch_range=(16, 64))


def _timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median seconds per call, peak memory GiB of the timed calls, NaN on CPU) of ``fn``."""
    sec, peak = timed(fn, device, repeats, warmup)
    return sec, float("nan") if peak is None else peak / 2**30


def _autocast(device: torch.device, bf16: bool):  # noqa: ANN202
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def inference(net: PSFRGAN, device: torch.device, batch: int, repeats: int, mode: str) -> dict:
    size = net.input_size
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    model: Callable[[torch.Tensor], torch.Tensor] = net
    bf16 = mode in ("bf16", "bf16+channels_last", "compile+bf16")
    if "channels_last" in mode:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if mode.startswith("compile"):
        model = torch.compile(net)

    def run() -> None:
        with torch.inference_mode(), _autocast(device, bf16):
            model(x)

    sec, peak = _timed(run, device, repeats, warmup=3 if mode.startswith("compile") else 2)
    net.to(memory_format=torch.contiguous_format)
    return {"kind": "inference", "mode": mode, "batch": batch, "median_s": sec, "images_per_s": batch / sec,
            "peak_mem_gib": peak}


def training_step(net: PSFRGAN, device: torch.device, batch: int, repeats: int, bf16: bool) -> dict:
    """One PSFR-GAN step: G update (Eq. 9: 100 L_ss + 10 L_rec + L_adv) then D update (Eq. 8)."""
    size = net.input_size
    disc = MultiScaleDiscriminator(depth=4 if size >= 256 else 2).to(device)
    style = SemanticStyleLoss(pretrained=False).to(device)
    opt_g = torch.optim.Adam(net.generator.parameters(), 1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), 4e-4, betas=(0.5, 0.999))
    net.train()
    net.parser.eval().requires_grad_(False)
    hq = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    lq = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    labels = torch.randint(0, 19, (batch, size, size), device=device)
    hq_onehot = F.one_hot(labels, 19).permute(0, 3, 1, 2).float()

    def step() -> None:
        with _autocast(device, bf16):
            fake = net(lq)
            fake_scores, fake_feats = disc(torch.cat([fake, hq_onehot], 1))
            with torch.no_grad():
                _, real_feats = disc(torch.cat([hq, hq_onehot], 1))
            rec = F.mse_loss(fake.float(), hq) + feature_matching_loss(fake_feats, real_feats)
            loss_g = 100 * style(fake.float(), hq, labels) + 10 * rec + hinge_g_loss(fake_scores)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        with _autocast(device, bf16):
            real_scores, _ = disc(torch.cat([hq, hq_onehot], 1))
            fake_scores, _ = disc(torch.cat([fake.detach(), hq_onehot], 1))
            loss_d = hinge_d_loss(real_scores, fake_scores)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

    sec, peak = _timed(step, device, repeats)
    net.eval()
    return {"kind": "train_step", "mode": "bf16" if bf16 else "fp32", "batch": batch, "median_s": sec,
            "images_per_s": batch / sec, "peak_mem_gib": peak}


def flops_per_face(net: PSFRGAN, device: torch.device) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    size = net.input_size
    x = torch.rand(1, 3, size, size, device=device) * 2 - 1
    flags = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)  # FlopCounterMode's module tracker fails under torch.no_grad
    with FlopCounterMode(display=False) as parser_count:
        net.parser(x)
    with FlopCounterMode(display=False) as total:
        net(x)
    for p, flag in zip(net.parameters(), flags):
        p.requires_grad_(flag)
    return {"gflops_total": total.get_total_flops() / 1e9, "gflops_parser": parser_count.get_total_flops() / 1e9}


def fp32_check(net: PSFRGAN, device: torch.device) -> dict:
    size = net.input_size
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ref = net.cpu()(x)
        net.to(device)
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        out = net(x.to(device)).cpu()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        with _autocast(device, True):
            out_bf16 = net(x.to(device)).float().cpu()
    return {"fp32_vs_cpu_max_abs": (out - ref).abs().max().item(), "bf16_vs_fp32_max_abs": (out_bf16 - out).abs().max().item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="64 px tiny configuration (smoke test)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--train-batch", type=int, default=8, help="8 as the issue's reference figures (the paper trains at 4)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = psfrgan(**(TINY if args.tiny else {})).eval()
    result: dict = {
        "model": "psfrgan_tiny" if args.tiny else "psfrgan_512",
        "device": device_name(device),
        "torch": torch.__version__,
        "commit": git_commit(),
        "date": utc_now(),
        "flops": flops_per_face(net, torch.device("cpu")),
        "check": fp32_check(net, device) if device.type == "cuda" else {},
        "runs": [],
    }
    net.to(device)
    modes = ["fp32", "bf16", "channels_last", "bf16+channels_last"] + ([] if args.no_compile else ["compile", "compile+bf16"])
    for mode in modes:
        for b in args.batches:
            r = inference(net, device, b, args.repeats, mode)
            result["runs"].append(r)
            print(json.dumps(r))
    for bf16 in (False, True):
        r = training_step(net, device, args.train_batch, max(3, args.repeats // 2), bf16)
        result["runs"].append(r)
        print(json.dumps(r))
    print(json.dumps({k: result[k] for k in ("flops", "check")}))
    if device.type != "cuda":
        print("not a CUDA device: results are not written")
        return
    out = ROOT / "benchmarks" / "results" / "psfrgan_speed"
    lines = [
        f"# PSFR-GAN speed ({result['model']})",
        "",
        f"{result['device']}, torch {result['torch']}, commit `{result['commit']}`, {result['date']}. "
        "Full restorer = FPN parsing + generator. Median of repeats after warm-up.",
        "",
        f"FLOPs per face: {result['flops']['gflops_total']:.1f} GFLOP (parser {result['flops']['gflops_parser']:.1f}). "
        f"fp32 GPU vs CPU max abs diff: {result['check'].get('fp32_vs_cpu_max_abs', float('nan')):.2e}; "
        f"bf16 vs fp32: {result['check'].get('bf16_vs_fp32_max_abs', float('nan')):.2e}.",
        "",
        "| run | mode | batch | images/s | ms/batch | peak GiB |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in result["runs"]:
        lines.append(f"| {r['kind']} | {r['mode']} | {r['batch']} | {r['images_per_s']:.1f} | "
                     f"{1000 * r['median_s']:.1f} | {r['peak_mem_gib']:.2f} |")
    write_results(result, lines, out)
    print(f"wrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
