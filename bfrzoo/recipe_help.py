"""``bfrzoo <command> --recipe NAME [--demo] [...] --help``: every key of the recipe's task and DataModule, with its
type, its documentation and the value the recipe (and ``--demo``, and any flags given with ``--help``) gives it,
plus the Trainer keys the recipe sets.

LightningCLI's own ``--help`` cannot show this: with a choice of task classes (subclass mode) it lists only
``--model CONFIG`` and hides the task's arguments behind ``--model.help CLASS``, with the class defaults, not the
recipe's values. Here the recipe is parsed by the real parser first (so the values are exactly those a run would
use), then a help parser for the recipe's task class is built with those values as its defaults.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import yaml

HELP_FLAGS: tuple[str, ...] = ("-h", "--help")


class _Parsed(Exception):
    """Carries the parsed configuration out of :class:`_ParseOnlyCLI` before anything is instantiated."""

    def __init__(self, config: Any) -> None:
        super().__init__("parsed")
        self.config = config


def parsed_config(args: list[str]) -> Any:
    """The configuration ``bfrzoo`` would run with for ``args`` (``[command, --config ..., flags ...]``), parsed
    by :class:`~bfrzoo.training.BfrzooCLI`'s own parser, without building a task, data or trainer."""
    from bfrzoo.training import BfrzooCLI

    class _ParseOnlyCLI(BfrzooCLI):
        def parse_arguments(self, parser: Any, args: Any) -> None:
            super().parse_arguments(parser, args)
            raise _Parsed(self.config)

    try:
        _ParseOnlyCLI(args=args)
    except _Parsed as parsed:
        return parsed.config
    raise RuntimeError("BfrzooCLI did not parse its arguments")  # pragma: no cover - parse_arguments always runs


def _keys_set(configs: list[str], rest: list[str], section: str) -> list[str]:
    """The ``section`` keys (``trainer``) that the config files or the command-line flags set, in order."""
    keys: list[str] = []
    files = [configs[i + 1] for i, a in enumerate(configs) if a == "--config"]
    for file in files:
        data = yaml.safe_load(Path(file).read_text()) or {}
        keys += [k for k in (data.get(section) or {}) if k not in keys]
    for arg in rest:
        if arg.startswith(f"--{section}."):
            key = arg[len(section) + 3 :].split("=", 1)[0].split(".", 1)[0].rstrip("+")
            if key not in keys:
                keys.append(key)
    return keys


def format_recipe_help(command: str, recipe: str, demo: bool, configs: list[str], rest: list[str]) -> str:
    """The help text of ``bfrzoo <command> --recipe <recipe> [--demo] <rest> --help``."""
    from jsonargparse import ArgumentParser
    from pytorch_lightning import Trainer

    from bfrzoo.data import FaceDataModule
    from bfrzoo.training import plain_config, resolve_class

    flags = [a for a in rest if a not in HELP_FLAGS]
    sub = parsed_config([command, *configs, *flags])[command]
    model = plain_config(sub.get("model"))
    class_path = model["class_path"]
    task = resolve_class(class_path)
    name = f"bfrzoo {command} --recipe {recipe}{' --demo' if demo else ''}"
    parser = ArgumentParser(
        prog=name,
        description=(
            f"The recipe {recipe!r}{' with the demo overlay' if demo else ''}: every task and data key with its type "
            "and the value this command would run with ('default:' below). Override any of them on the command "
            "line (--model.init_args.lr 1e-4, --data.size 256) or in a YAML given with --config."
        ),
        epilog=f"Every other Trainer option: `bfrzoo {command} --help` (without --recipe).",
        exit_on_error=False,
    )
    parser.add_class_arguments(task, "model.init_args", help=f"task {class_path} (--model.class_path)")
    parser.add_class_arguments(FaceDataModule, "data", help="data: bfrzoo.data.FaceDataModule")
    trainer_keys = [k for k in _keys_set(configs, flags, "trainer") if k in inspect.signature(Trainer).parameters]
    skip = set(inspect.signature(Trainer).parameters) - set(trainer_keys)
    parser.add_class_arguments(Trainer, "trainer", skip=skip, help="trainer keys the recipe sets (pytorch_lightning.Trainer)")
    defaults: dict[str, Any] = {f"model.init_args.{k}": v for k, v in (model.get("init_args") or {}).items()}
    defaults.update({f"data.{k}": v for k, v in (plain_config(sub.get("data")) or {}).items()})
    trainer = plain_config(sub.get("trainer")) or {}
    defaults.update({f"trainer.{k}": trainer.get(k) for k in trainer_keys})
    group = parser.add_argument_group("run")
    group.add_argument("--seed_everything", default=sub.get("seed_everything"), help="seed of every random number generator")
    if command == "fit":
        group.add_argument("--test_after_fit", default=sub.get("test_after_fit"), help="test the best checkpoint after fit")
    if command == "predict":
        group.add_argument("--predict_output", default=sub.get("predict_output"), help="folder of the restored PNGs")
    group.add_argument("--ckpt_path", default=sub.get("ckpt_path"), help="a local Lightning checkpoint of this recipe")
    for key, value in defaults.items():
        try:
            parser.set_defaults({key: value})
        except (KeyError, ValueError, TypeError):  # a value the help parser cannot type: shown as is
            continue
    return parser.format_help()
