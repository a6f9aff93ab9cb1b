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
    bfrzoo restore --weights restorer.pt IN OUT   # restore a folder of aligned faces
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
    from bfrzoo.restore_folder import restore_folder

    count = restore_folder(
        args.input, args.output, weights=args.weights, restorer=args.restorer, device=args.device,
        batch_size=args.batch_size, overwrite=args.overwrite,
    )
    print(f"restored {count} images into {args.output}")


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
    p = sub.add_parser("restore", help="restore a folder of aligned face crops")
    p.add_argument("input")
    p.add_argument("output")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="a restorer.pt written by `bfrzoo fit`")
    src.add_argument("--restorer", help="a registered restorer with released weights (resolved from the cache)")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--overwrite", action="store_true")
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
