"""``bfrzoo bench {speed,quality,train}``: the argument parsers and what each subcommand runs (wired into
:mod:`bfrzoo.cli` by :func:`add_bench_parser`)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bfrzoo.errors import BfrzooError


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in _names(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _command(args: argparse.Namespace) -> str:
    """The run as one command with every option spelled out (defaults included), to reproduce it."""
    parts = ["bfrzoo", "bench", args.bench_command]
    for action in args._parser._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        value = getattr(args, action.dest, None)
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            parts += [flag] if value else []
        elif value is None or value == []:
            continue
        elif isinstance(value, list) and action.nargs == "*":
            parts += [flag, *(str(v) for v in value)]
        elif isinstance(value, list):
            parts += [flag, ",".join(str(v) for v in value)]
        else:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` with its three subcommands to the ``bfrzoo`` parser."""
    bench = sub.add_parser("bench", help="speed, quality and fixed-budget training comparisons of the restorers")
    bsub = bench.add_subparsers(dest="bench_command", metavar="{speed,quality,train}", required=True)

    p = bsub.add_parser("speed", help="images/s, ms/image, memory, GFLOPs and MFU per model and inference mode")
    p.add_argument("--models", type=_names, default=None, help="comma-separated registered names (default: all)")
    p.add_argument("--size", type=_ints, default=[], help="extra sizes for fully convolutional models (comma-separated)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--batches", type=_ints, default=[1, 16], help="inference batches (default 1,16)")
    p.add_argument("--modes", type=_names, default=None, help="inference modes (default: all; see bfrzoo.bench.MODES)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per row (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls per row (default 2)")
    p.add_argument("--train-batch", type=int, default=8, help="batch of the training step (default 8)")
    p.add_argument("--no-train", action="store_true", help="skip the training step")
    p.add_argument("--no-memory", action="store_true", help="skip the CPU peak-RSS subprocesses")
    p.add_argument("--out", default=None, help="write OUT.md and OUT.csv (e.g. benchmarks/results/speed_cpu)")
    p.add_argument("--allow-dirty", action="store_true", help="write results from a dirty tree (flagged in the table)")
    p.set_defaults(func=_speed, _parser=p)

    p = bsub.add_parser("quality", help="every model on one fixed seeded test set + a no-reference real-LQ block")
    p.add_argument("--hq", required=True, help="HQ data root (its val split) or folder the test set is made from")
    p.add_argument("--runs", nargs="*", default=[], help="restorer.pt files or run folders")
    p.add_argument("--models", type=_names, default=[], help="registered names with released weights")
    p.add_argument("--preset", default="common")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=None, help="resize HQ to SIZE first (default: as they are)")
    p.add_argument("--test-lq", default=None, help="an existing `bfrzoo degrade` folder instead of building one")
    p.add_argument("--work", default="runs/bench", help="where the test set is built once (default runs/bench)")
    p.add_argument("--metrics", type=_names, default=None, help="metric names (default: the full suite)")
    p.add_argument("--real-lq", default=None, help="folder of real LQ faces for the no-reference block")
    p.add_argument("--real-size", type=int, default=None, help="resize real LQ to this size (default --size or 512)")
    p.add_argument("--real-limit", type=int, default=None, help="first N real LQ images (sorted)")
    p.add_argument("--fid-hq", default=None, help="HQ folder the real-LQ outputs' FID is computed against")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default=None, help="write OUT.md and OUT.csv")
    p.add_argument("--allow-dirty", action="store_true")
    p.set_defaults(func=_quality, _parser=p)

    p = bsub.add_parser("train", help="the same wall-clock training budget per model, then `quality`")
    p.add_argument("--minutes", type=float, required=True, help="training budget per model (wall clock)")
    p.add_argument("--prereq-minutes", type=float, default=None, help="budget of each pretrained stage (default --minutes)")
    p.add_argument("--models", type=_names, required=True, help="comma-separated recipe names (e.g. unet,gpen,psfrgan)")
    p.add_argument("--variants", action="store_true", help="add each paper's ablation rows")
    p.add_argument("--data", required=True, help="data root (images/ + split.json [+ masks/])")
    p.add_argument("--landmark-data", default=None, help="data root with landmarks.json for models that need landmarks")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--preset", default="common")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--work", default="runs/bench_train", help="run folders and the test set (default runs/bench_train)")
    p.add_argument("--real-lq", default=None)
    p.add_argument("--real-limit", type=int, default=None)
    p.add_argument("--out", default=None, help="write OUT.md and OUT.csv")
    p.add_argument("--allow-dirty", action="store_true")
    p.set_defaults(func=_train, _parser=p)


def _speed(args: argparse.Namespace) -> None:
    import bfrzoo
    from bfrzoo.bench.speed import render_markdown, run_speed, write_speed

    models = args.models or bfrzoo.list_restorers()
    result = run_speed(
        models, device=args.device, sizes=args.size, batches=args.batches, modes=args.modes, repeats=args.repeats,
        warmup=args.warmup, train_batch=args.train_batch, train=not args.no_train, memory=not args.no_memory,
        allow_dirty=args.allow_dirty, writing=args.out is not None, log=_log,
    )
    if args.out:
        md, cs = write_speed(result, args.out, _command(args))
        print(f"wrote {md} and {cs}")
    else:
        print(render_markdown(result, _command(args)))


def _quality(args: argparse.Namespace) -> None:
    from bfrzoo.bench.quality import load_candidates, prepare_test_set, render_markdown, run_quality, write_quality

    if not args.runs and not args.models:
        raise BfrzooError("give models to score: --runs RUN_DIR_OR_restorer.pt ... and/or --models NAME,...")
    test_set = prepare_test_set(args.hq, args.work, args.preset, args.seed, args.size, args.test_lq)
    print(f"test set {test_set.lq_dir}: {len(test_set.names)} images, sha256 {test_set.checksum}", file=sys.stderr)
    result = run_quality(
        load_candidates(args.runs, args.models), test_set, device=args.device, metrics=args.metrics,
        real_lq=args.real_lq, real_size=args.real_size, real_limit=args.real_limit, fid_hq=args.fid_hq,
        batch_size=args.batch_size, allow_dirty=args.allow_dirty, writing=args.out is not None, log=_log,
    )
    if args.out:
        md, cs = write_quality(result, args.out, _command(args))
        print(f"wrote {md} and {cs}")
    else:
        print(render_markdown(result, _command(args)))


def _train(args: argparse.Namespace) -> None:
    from bfrzoo.bench.train import BenchSettings, run_train_bench

    for folder in (args.data, args.landmark_data, args.real_lq):
        if folder is not None and not Path(folder).is_dir():
            raise BfrzooError(f"folder {folder!r} does not exist")
    settings = BenchSettings(
        data=args.data, size=args.size, preset=args.preset, seed=args.seed, minutes=args.minutes,
        prereq_minutes=args.prereq_minutes, batch_size=args.batch_size, num_workers=args.num_workers,
        landmark_data=args.landmark_data, accelerator=args.accelerator, precision=args.precision,
    )
    _, _, md = run_train_bench(
        args.models, settings, args.work, variants=args.variants, out=args.out, command=_command(args),
        real_lq=args.real_lq, real_limit=args.real_limit, allow_dirty=args.allow_dirty, log=_log,
    )
    if args.out:
        print(f"wrote {Path(args.out).with_suffix('.md')} and .csv")
    else:
        print(md)
