"""The ``bfrzoo`` command.

Training and evaluation go through Lightning's own CLI (``LightningCLI``), so every Trainer option works
(``--trainer.devices 2 --trainer.num_nodes 1`` for DDP, ``--trainer.precision bf16-mixed``, ...)::

    bfrzoo fit      --recipe unet [--demo] [--data.root DIR] [--trainer.max_epochs N] ...
    bfrzoo validate --recipe unet --ckpt_path CKPT
    bfrzoo test     --recipe unet --ckpt_path CKPT
    bfrzoo predict  --recipe unet --ckpt_path CKPT --data.predict_dir IN --predict_output OUT

and the zoo's own commands::

    bfrzoo list                                   # restorers, recipes, degradation presets, metrics
    bfrzoo degrade --preset P --seed S IN OUT     # a fixed, seeded LQ test set
    bfrzoo restore PHOTOS... --weights restorer.pt --out DIR   # restore whole photos (--aligned: crops)
    bfrzoo table RUN_DIR... [--out FILE]          # one markdown table from several runs' test_metrics.json
    bfrzoo bench {speed,quality,train} ...        # the comparison tables (bfrzoo.bench; benchmarks/README.md)

A recipe is one flat YAML in ``bfrzoo/recipes/`` (shipped inside the package). ``--demo`` adds
``recipes/demo.yaml`` (embedded sample faces, small size, a few minutes on a CPU) and, where present,
``recipes/demo/<recipe>.yaml`` (a small architecture).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from bfrzoo.errors import BfrzooError, UnknownNameError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def recipes_dir() -> Path:
    """The folder of shipped recipes (works from a source checkout and from an installed wheel)."""
    return Path(str(resources.files("bfrzoo") / "recipes"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml") if p.stem != "demo")


def recipe_path(name: str) -> Path:
    """``name`` -> its YAML; a path to a YAML file is accepted as is."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    path = recipes_dir() / f"{name}.yaml"
    if not path.is_file():
        raise UnknownNameError(
            f"unknown recipe {name!r}. Known recipes: {', '.join(list_recipes())} (or give a path to a YAML file)."
        )
    return path


def _split_recipe(argv: list[str]) -> tuple[str | None, bool, list[str]]:
    recipe, demo, rest = None, False, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--recipe":
            if i + 1 >= len(argv):
                raise BfrzooError("--recipe needs a name; see `bfrzoo list`")
            recipe = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--recipe="):
            recipe = arg.split("=", 1)[1]
        elif arg == "--demo":
            demo = True
        else:
            rest.append(arg)
        i += 1
    return recipe, demo, rest


def lightning_main(command: str, argv: list[str]) -> None:
    """Run a Lightning subcommand with the recipe's YAML (and the demo overlay) as ``--config`` files."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    recipe, demo, rest = _split_recipe(argv)
    configs: list[str] = []
    if recipe is not None:
        configs += ["--config", str(recipe_path(recipe))]
        if demo:
            configs += ["--config", str(recipes_dir() / "demo.yaml")]
            overlay = recipes_dir() / "demo" / f"{Path(recipe).stem}.yaml"
            if overlay.is_file():
                configs += ["--config", str(overlay)]
    elif demo:
        raise BfrzooError("--demo needs --recipe NAME")
    elif not any(a in ("-h", "--help", "--config", "-c") or a.startswith("--config=") for a in rest):
        raise BfrzooError(f"`bfrzoo {command}` needs --recipe NAME (one of: {', '.join(list_recipes())})")
    if recipe is not None and any(a in ("-h", "--help") for a in rest):
        # LightningCLI's help hides the task's arguments (subclass mode) and shows class defaults: show the recipe's
        from bfrzoo.recipe_help import format_recipe_help

        print(format_recipe_help(command, recipe, demo, configs, rest))
        return
    if any("wandb" in a.lower() for a in rest) and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")  # wandb without an API key logs locally, never fails
    from bfrzoo.training import BfrzooCLI

    BfrzooCLI(args=[command, *configs, *rest])


def _cmd_list(args: argparse.Namespace) -> None:
    from bfrzoo.data import PRESETS
    from bfrzoo.metrics import list_metrics
    from bfrzoo.registry import list_converters, list_restorers, restorer_entry

    print("restorers (bfrzoo.create_restorer):")
    for name in list_restorers():
        entry = restorer_entry(name)
        weights = f"  [released: {entry.pretrained.filename}]" if entry.pretrained else ""
        print(f"  {name:<22} {entry.summary}{weights}")
    print("official checkpoint converters (bfrzoo.from_official):\n  " + ", ".join(list_converters()))
    print("recipes (bfrzoo fit --recipe NAME):\n  " + ", ".join(list_recipes()))
    print("degradation presets (--data.preset / bfrzoo degrade --preset):\n  " + ", ".join(sorted(PRESETS)))
    print("metrics (--model.metrics):\n  " + ", ".join(list_metrics()))


def _cmd_degrade(args: argparse.Namespace) -> None:
    from bfrzoo.data.folder import degrade_folder

    count = degrade_folder(args.input, args.output, preset=args.preset, seed=args.seed, size=args.size, overwrite=args.overwrite)
    print(f"wrote {count} degraded images to {args.output} (preset {args.preset}, seed {args.seed})")


def _cmd_restore(args: argparse.Namespace) -> None:
    """Whole photos (default) or aligned crops (``--aligned``); see bfrzoo/restore_run.py and docs/restore.md."""
    from bfrzoo.face.photo import PhotoOptions
    from bfrzoo.restore_run import RestoreSettings, run_restore

    if args.out is None:
        hint = ""
        if len(args.inputs) == 2:
            hint = (f"; the old form `bfrzoo restore IN_DIR OUT_DIR` is now `bfrzoo restore {args.inputs[0]} --out "
                    f"{args.inputs[1]} --aligned` (for aligned crops; without --aligned whole photos are restored)")
        raise BfrzooError(f"bfrzoo restore needs --out DIR{hint}")
    photo = PhotoOptions(
        upscale=args.upscale, crop_size=args.crop_size, detect_size=args.detect_size, min_score=args.min_score,
        min_eye_distance=args.min_eye_distance, min_frontality=0.0 if args.keep_profiles else args.min_frontality,
        select=args.faces, max_megapixels=args.max_megapixels,
    )
    settings = RestoreSettings(
        inputs=tuple(args.inputs), out_dir=Path(args.out), model=args.model, weights=args.weights,
        aligned=args.aligned, device=args.device, batch_size=args.batch_size, precision=args.precision,
        overwrite=args.overwrite, recursive=args.recursive, compare=args.compare, save_faces=args.save_faces,
        ext=args.ext, detector=args.detector, detector_weights=args.detector_weights,
        parser=None if args.parser == "none" else args.parser, photo=photo,
    )
    summary = run_restore(settings, progress=not args.quiet)
    for line in summary.lines():
        print(line)
    for line in summary.failure_lines():
        print(line, file=sys.stderr)
    if summary.failed:
        raise SystemExit(1)


def _cmd_table(args: argparse.Namespace) -> None:
    from bfrzoo.io import atomic_write_text
    from bfrzoo.tables import collect_run_table

    text = collect_run_table([Path(p) for p in args.runs], title=args.title)
    if args.out:
        out = atomic_write_text(args.out, text)
        print(f"wrote {out}")
    else:
        print(text)


def _zoo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bfrzoo",
        description="Blind face restoration zoo. Lightning subcommands: fit, validate, test, predict "
        "(`bfrzoo fit --recipe NAME --help` lists every option).",
    )
    sub = parser.add_subparsers(dest="command", metavar="{fit,validate,test,predict,list,degrade,restore,table,bench}")
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"Lightning `{name}` with a recipe: bfrzoo {name} --recipe NAME [...]", add_help=False)
    p = sub.add_parser("list", help="restorers, recipes, presets and metrics")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("degrade", help="write a fixed, seeded LQ test set from a folder of HQ faces")
    p.add_argument("input", help="folder of HQ images (or a data root with images/ and split.json)")
    p.add_argument("output", help="new folder for the LQ PNGs (must not exist or be empty)")
    p.add_argument("--preset", default="common", help="degradation preset (see `bfrzoo list`)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=None, help="resize HQ to SIZE x SIZE first")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.set_defaults(func=_cmd_degrade)
    p = sub.add_parser(
        "restore", help="restore the faces of whole photos (or, with --aligned, aligned face crops)",
        description="Restore every face of whole photos: detect (RetinaFace when its weights are present, else "
        "MTCNN), align to the FFHQ template, restore in batches, paste back. Outputs never replace inputs; a rerun "
        "skips finished outputs. Exit 1 when any input failed (one line each), 2 for a usage error.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders and globs (quote ** patterns)")
    p.add_argument("--out", "-o", default=None, metavar="DIR", help="output folder (created; never an input folder)")
    p.add_argument("--model", "--restorer", dest="model", default=None, metavar="NAME",
                   help="a registered restorer; alone: its released weights (cache, then download)")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="a restorer.pt of `bfrzoo fit`; with --model: that model's weight file (official or bfrzoo)")
    p.add_argument("--aligned", action="store_true", help="inputs are aligned face crops: restore them whole")
    p.add_argument("--upscale", type=float, default=1.0, help="output size as a multiple of the input (default 1)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=4, help="faces (or crops) per forward pass")
    p.add_argument("--precision", default="auto", choices=("auto", "32", "bf16", "16"),
                   help="auto (default): the fastest inference mode of the device whose output stays within 4/255 of "
                   "fp32, measured once per run and printed; 32: fp32; bf16 / 16: autocast (GPUs)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs bfrzoo wrote before (never other files)")
    p.add_argument("--recursive", "-r", action="store_true", help="also restore images in subfolders of input folders")
    p.add_argument("--compare", action="store_true", help="also write OUT/compare/NAME.jpg: input | output")
    p.add_argument("--save-faces", action="store_true", help="also write each aligned face, input and restored, to OUT/faces/")
    p.add_argument("--ext", default="png", choices=("png", "jpg", "webp"), help="output format (alpha / 16 bit: png)")
    p.add_argument("--detector", default="auto", choices=("auto", "retinaface", "mtcnn"),
                   help="auto: RetinaFace when its weights resolve, else MTCNN")
    p.add_argument("--detector-weights", default=None, metavar="PATH", help="detection_Resnet50_Final.pth (RetinaFace)")
    p.add_argument("--parser", default="auto", metavar="auto|none|PATH",
                   help="face parsing for the paste mask: auto (parsing_parsenet.pth when available), none, or a file")
    p.add_argument("--faces", default="all", choices=("all", "largest", "center"), help="which faces to restore")
    p.add_argument("--min-eye-distance", type=float, default=8.0, metavar="PX", help="smaller faces are left out")
    p.add_argument("--min-frontality", type=float, default=0.35,
                   help="eye distance / eye-to-mouth distance below which a face is a profile (left out)")
    p.add_argument("--keep-profiles", action="store_true", help="restore profile faces too")
    p.add_argument("--min-score", type=float, default=0.9, help="detector confidence threshold")
    p.add_argument("--detect-size", type=int, default=1600, metavar="PX", help="long side of the detection copy")
    p.add_argument("--crop-size", type=int, default=512, metavar="PX", help="side of the aligned face crops")
    p.add_argument("--max-megapixels", type=float, default=200.0, metavar="MP", help="larger inputs/outputs are refused")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_restore)
    p = sub.add_parser("table", help="merge runs' test_metrics.json into one markdown table")
    p.add_argument("runs", nargs="+", help="run folders or test_metrics.json files")
    p.add_argument("--out", default=None)
    p.add_argument("--title", default=None)
    p.set_defaults(func=_cmd_table)
    from bfrzoo.bench.cli import add_bench_parser

    add_bench_parser(sub)  # bfrzoo bench {speed,quality,train}
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            lightning_main(argv[0], argv[1:])
            return
        args = _zoo_parser().parse_args(argv)
        if not getattr(args, "func", None):
            _zoo_parser().print_help()
            return
        args.func(args)
    except Exception as exc:  # noqa: BLE001 - sorted below: ours become one line, anything else propagates
        cause = _user_error(exc)
        if cause is None:
            raise
        print(f"bfrzoo: error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None


def _user_error(exc: BaseException) -> BaseException | None:
    """The error to show a user, or ``None`` for a bug (shown with its traceback).

    A :class:`BfrzooError` anywhere in the chain, or a ``ValueError`` raised by bfrzoo's own argument checks:
    LightningCLI (jsonargparse) wraps errors raised while it instantiates the task or the DataModule in its own
    ``ValueError`` listing every union member it tried, which buries the one line that says what to do.
    """
    seen: set[int] = set()
    chain: list[BaseException] = []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for err in chain:
        if isinstance(err, BfrzooError):
            return err
    for err in reversed(chain):  # the innermost argument check of bfrzoo's own code
        if isinstance(err, (ValueError, TypeError)) and _raised_in_bfrzoo(err):
            return err
    return None


def _raised_in_bfrzoo(exc: BaseException) -> bool:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and f"{Path(__file__).parent.name}/" in last.tb_frame.f_code.co_filename.replace("\\", "/")


if __name__ == "__main__":
    main()
