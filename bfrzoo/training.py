"""LightningCLI wiring: the task classes are the model choices, :class:`~bfrzoo.data.FaceDataModule` the data.

The typed ``__init__`` signatures of the tasks and the DataModule ARE the configuration schema: a recipe key that
does not exist, or a value of the wrong type, is rejected by the parser with the list of valid options.
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from bfrzoo.data import FaceDataModule
from bfrzoo.errors import BfrzooError
from bfrzoo.tasks.base import BfrzooTask

#: ``--ckpt_path`` values that name a checkpoint of the running process or of Lightning's registry, not a file.
CKPT_KEYWORDS: tuple[str, ...] = ("last", "best", "hpc", "registry")


class LatestCheckpoint(ModelCheckpoint):
    """``checkpoints/last.ckpt`` after EVERY epoch, whatever the monitored metric did: what ``--ckpt_path``
    resumes from. (Lightning's ``save_last`` of a monitored checkpoint only writes ``last.ckpt`` when a new best
    is saved, so a run whose metric stopped improving could not resume from its real last epoch.) Added by
    :class:`BfrzooCLI` next to a recipe's monitored checkpoint."""

    def __init__(self) -> None:
        super().__init__(filename="last", monitor=None, save_top_k=1, enable_version_counter=False)

    @property
    def state_key(self) -> str:
        return "bfrzoo.LatestCheckpoint"


class BfrzooCLI(LightningCLI):
    """``LightningCLI`` with bfrzoo's defaults; ``fit`` ends with a test run that writes the metrics table.

    Before anything is built or loaded, every user mistake becomes one :class:`BfrzooError` (one line from
    ``bfrzoo``): a ``--ckpt_path`` that is not a local Lightning checkpoint of the recipe's task (missing, empty,
    truncated, code-carrying, a ``restorer.pt``, a URL), ``fit --ckpt_path`` with model arguments that differ from
    the checkpoint's, ``predict`` without trained weights, an output folder that cannot be written, an accelerator
    that does not exist here, an unreadable ``predict`` input. Every checkpoint Lightning loads for bfrzoo is
    loaded with ``weights_only=True``.
    """

    def __init__(self, args: list[str], run: bool = True) -> None:
        """``args``: the command line after ``bfrzoo``; ``run=False`` parses and instantiates without a
        subcommand (no training), e.g. to inspect a recipe's task, data and trainer."""
        # bfrzoo passes the recipe as --config arguments on purpose: not the mistake this warning guards against
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
        # EMA copies, frozen priors / parsers and metric feature networks are in eval mode by design
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
        super().__init__(
            model_class=BfrzooTask,
            datamodule_class=FaceDataModule,
            subclass_mode_model=True,
            args=args,
            run=run,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with every logger writing into ONE run folder.

        Unless the configuration sets ``trainer.logger`` itself (``false`` turns logging off), the loggers are CSV
        and TensorBoard under ``<trainer.default_root_dir>/logs``; loggers given on top (``--trainer.logger+=``)
        are added after them.

        CSV and TensorBoard share ``save_dir/name``: each would pick its own next ``version_N`` (the second seeing
        the first's folder and taking N + 1), splitting a run over two folders; so the later loggers of the same
        folder take the first logger's version unless one was fixed explicitly.
        """
        cfg = self._get(self.config_init, "trainer", default={}) or {}
        configured = cfg.get("logger")
        if configured is not False and "logger" not in kwargs:
            # bfrzoo's default loggers live in the run's own folder, so --trainer.default_root_dir moves everything
            from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

            root = str(cfg.get("default_root_dir") or "runs")
            version = self._resumed_version(Path(root) / "logs")
            defaults = [CSVLogger(root, name="logs", version=version), TensorBoardLogger(root, name="logs", version=version)]
            if configured is None or configured is True:
                kwargs["logger"] = defaults
            else:  # loggers asked for on top (wandb ...): keep the CSV + TensorBoard run folder first
                extra = list(configured) if isinstance(configured, (list, tuple)) else [configured]
                kwargs["logger"] = extra if any(isinstance(lg, CSVLogger) for lg in extra) else defaults + extra
        from lightning_fabric.utilities.exceptions import MisconfigurationException

        try:
            trainer = super().instantiate_trainer(**kwargs)
        except MisconfigurationException as exc:  # accelerator / devices / strategy that cannot run here
            first = next(iter(str(exc).splitlines()), "")
            raise BfrzooError(f"the trainer cannot run as configured: {first} (see the --trainer.* options)") from exc
        loggers = trainer.loggers
        if len(loggers) > 1 and hasattr(loggers[0], "_version"):
            version = loggers[0].version
            for logger in loggers[1:]:
                if getattr(logger, "_version", False) is None and Path(logger.save_dir or "") == Path(loggers[0].save_dir or "") and logger.name == loggers[0].name:
                    logger._version = version
        if trainer.checkpoint_callback is not None and not any(isinstance(cb, LatestCheckpoint) for cb in trainer.callbacks):
            trainer.callbacks.append(LatestCheckpoint())
        return trainer

    def _resumed_version(self, logs_dir: Path) -> int | None:
        """``N`` when ``fit --ckpt_path`` resumes a checkpoint of ``<logs_dir>/version_N/checkpoints/``: the
        resumed run continues in its own folder (metrics, grids, checkpoints, best-model tracking), instead of
        starting ``version_N+1``."""
        if self.subcommand != "fit":
            return None
        ckpt = self._get(self.config_init, "ckpt_path")
        if not ckpt or str(ckpt) in ("last", "best", "hpc", "registry") or "://" in str(ckpt):
            return None
        folder = Path(ckpt).expanduser().resolve().parent
        if folder.name != "checkpoints" or not folder.parent.name.startswith("version_"):
            return None
        if folder.parent.parent != logs_dir.expanduser().resolve():
            return None
        suffix = folder.parent.name.removeprefix("version_")
        return int(suffix) if suffix.isdigit() else None

    # --------------------------------------------------------------------------- checks before any work
    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` (and ``predict``'s weights) before Lightning sees it, then take the model's
        arguments from the checkpoint as ``LightningCLI`` does (one read of the file).

        A URL is refused: Lightning would download it and unpickle it with ``weights_only=False``, which can run
        arbitrary code; the user downloads it and passes the local path, which is read with
        :func:`bfrzoo.weights.read_checkpoint` (``weights_only=True``) and must be a Lightning checkpoint of the
        recipe's task. ``fit`` refuses model arguments that differ from the checkpoint's (Lightning would silently
        replace them); ``validate`` / ``test`` / ``predict`` use the checkpoint's and print one note naming each
        replaced value."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        cfg = self.config[subcommand]
        if cfg.get("weights_only") is False:
            raise BfrzooError(
                "--weights_only false is not supported: bfrzoo loads every checkpoint with weights_only=True, so that "
                "no code in a checkpoint runs; re-save a checkpoint that needs more as tensors and plain values"
            )
        model = plain_config(cfg.get("model"))
        init_args = model.get("init_args") or {} if isinstance(model, Mapping) else {}
        ckpt_path = cfg.get("ckpt_path")
        if subcommand == "predict" and not ckpt_path and not init_args.get("init_weights"):
            raise BfrzooError(
                "`bfrzoo predict` needs trained weights: pass --ckpt_path CKPT (a Lightning checkpoint of a run of this "
                "recipe) or --model.init_args.init_weights FILE (a restorer.pt); without them the network is randomly "
                "initialised and the outputs mean nothing"
            )
        if not ckpt_path or str(ckpt_path).split(":", 1)[0] in CKPT_KEYWORDS:
            return
        ckpt = read_lightning_checkpoint(ckpt_path, model.get("class_path") if isinstance(model, Mapping) else None)
        hparams = dict(ckpt.get("hyper_parameters") or {})
        del ckpt
        hparams.pop("_instantiator", None)
        if subcommand == "fit":
            _check_resume_arguments(str(ckpt_path), hparams, init_args)
        elif differ := _differing_arguments(hparams, init_args):
            # validate / test / predict rebuild the network the checkpoint holds, so its arguments win (as in
            # LightningCLI); say so instead of dropping the command's values silently
            if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0:
                print(f"bfrzoo: note: {subcommand} --ckpt_path {ckpt_path} uses the model arguments stored in the "
                      f"checkpoint (they define the network it holds) instead of the command's: model.init_args."
                      f"{'; model.init_args.'.join(differ)}", file=sys.stderr)
        if not hparams:
            return
        if "_class_path" in hparams:  # what LightningCLI does with the checkpoint's hyper-parameters
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def before_instantiate_classes(self) -> None:
        """Checks that need no network, data or weights, before anything is built: the accelerator exists here,
        the output folders can be written, and (``predict``) every input image's header reads."""
        if self.subcommand is None:  # run=False: parsing and instantiation only, nothing is written
            return
        cfg = self.config[self.subcommand]
        trainer = cfg.get("trainer")
        _check_accelerator(trainer.get("accelerator"))
        from bfrzoo.io import check_image_files, check_output_dir, list_images

        predict_dir = getattr(cfg.get("data"), "predict_dir", None) if self.subcommand == "predict" else None
        if predict_dir:  # every header, before a folder is made or a network built
            check_image_files(list_images(predict_dir))
        root = trainer.get("default_root_dir") or "."
        check_output_dir(root, "--trainer.default_root_dir")
        if self.subcommand == "predict":
            check_output_dir(cfg.get("predict_output") or Path(root) / "predictions", "--predict_output")

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """The Trainer call's arguments, with ``weights_only=True``: Lightning then loads ``ckpt_path`` without
        unpickling code (its default for a remote path is ``weights_only=False``)."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, ()):
            kwargs["weights_only"] = True
        return kwargs

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--predict_output", type=str | None, default=None,
            help="`predict` only: folder for the restored PNGs (one per input, same stem); default "
            "<trainer.default_root_dir>/predictions",
        )
        parser.add_argument(
            "--test_after_fit", type=bool, default=True,
            help="after `fit`, test the best checkpoint on the fixed test set and write test_metrics.{md,json} "
            "and test_grid.png into the run folder",
        )

    def before_predict(self) -> None:
        from bfrzoo.tasks.predict import RestoredImageWriter

        out = self.config_init[self.subcommand].get("predict_output") or Path(self.trainer.default_root_dir) / "predictions"
        self._predict_output = Path(out)
        self.trainer.callbacks.append(RestoredImageWriter(self._predict_output))

    def after_predict(self) -> None:
        if self.trainer.is_global_zero:
            print(f"bfrzoo: restored images in {self._predict_output}")

    def after_fit(self) -> None:
        """Test the best checkpoint on the fixed test set (``test_after_fit``), then write the run's export
        (``restorer.pt`` / ``prior.pt`` / ``parser.pt``) ONCE, from the weights that test scored (or, without the
        test, from the final weights), recording which ones."""
        if self.trainer.interrupted:
            return
        ckpt = None
        for cb in self.trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.best_model_path:
                ckpt = cb.best_model_path
                break
        tested = bool(self.config_init[self.subcommand].get("test_after_fit", True))
        if tested:
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt, weights_only=True)
        if self.trainer.is_global_zero:
            model = self.model
            if tested:
                info = {"checkpoint": Path(ckpt).name if ckpt else "last (no best checkpoint)", "tested": True}
            else:
                info = {"checkpoint": "last", "tested": False}
            path = model.export_run(model._out_dir(), info)
            print(f"bfrzoo: run folder {path.parent}: {path.name}" + (", test_metrics.md" if tested else ""))


# ------------------------------------------------------------------------------------------------- helpers
def plain_config(value: Any) -> Any:
    """A parsed config value as plain Python (Namespaces -> dicts, tuples -> lists, paths -> strings), so that
    it compares equal to the same value stored in a checkpoint's ``hyper_parameters``."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_config(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def resolve_class(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def read_lightning_checkpoint(path: str | Path, task_class_path: str | None = None) -> dict[str, Any]:
    """Read a ``--ckpt_path`` safely and check that it is a Lightning checkpoint (of ``task_class_path`` when
    given): the loaded dict, or one :class:`BfrzooError` that says what the file is and what to pass instead.

    URLs are refused (download the file, then pass its local path): nothing remote is unpickled."""
    from bfrzoo.registry import RESTORER_KIND
    from bfrzoo.weights import describe_checkpoint, is_lightning_checkpoint, read_checkpoint

    text = str(path)
    if "://" in text:
        raise BfrzooError(
            f"--ckpt_path {text!r} is a URL; bfrzoo does not load remote checkpoints (unpickling a downloaded file "
            "can run code): download it yourself, check where it comes from, and pass the local file's path"
        )
    obj = read_checkpoint(path, "--ckpt_path checkpoint")
    if not is_lightning_checkpoint(obj):
        what = describe_checkpoint(obj)
        hint = "pass a run's checkpoints/last.ckpt (or best-*.ckpt)"
        if (isinstance(obj, Mapping) and obj.get("kind") == RESTORER_KIND) or "state dict" in what:
            hint = f"to start a new run from its weights use --model.init_args.init_weights {text} instead of --ckpt_path"
        raise BfrzooError(f"--ckpt_path {text!r} is {what}, not a Lightning training checkpoint: {hint}")
    theirs = (obj.get("hyper_parameters") or {}).get("_class_path")
    if task_class_path and theirs and resolve_class(theirs) is not resolve_class(task_class_path):
        raise BfrzooError(
            f"--ckpt_path {text!r} is a checkpoint of {theirs}, but this recipe trains {task_class_path}: use the "
            "recipe the run was made with"
        )
    return obj


def _differing_arguments(hparams: Mapping[str, Any], init_args: Mapping[str, Any]) -> list[str]:
    """Every model argument the command gives that differs from the checkpoint's, as ``key (checkpoint A, given
    B)`` (dict arguments such as ``restorer_args`` key by key)."""
    differ: list[str] = []
    for key, stored in hparams.items():
        if key.startswith("_") or key not in init_args:
            continue
        given, stored = plain_config(init_args[key]), plain_config(stored)
        if isinstance(given, dict) and isinstance(stored, dict):
            for sub in sorted(set(given) | set(stored)):
                if given.get(sub) != stored.get(sub):
                    differ.append(f"{key}.{sub} (checkpoint {stored.get(sub)!r}, given {given.get(sub)!r})")
        elif given != stored:
            differ.append(f"{key} (checkpoint {stored!r}, given {given!r})")
    return differ


def _check_resume_arguments(path: str, hparams: Mapping[str, Any], init_args: Mapping[str, Any]) -> None:
    """``fit --ckpt_path`` continues the run with the checkpoint's model arguments; refuse different ones (one
    line naming every differing key) instead of silently dropping them."""
    if differ := _differing_arguments(hparams, init_args):
        raise BfrzooError(
            f"fit --ckpt_path {path!r} resumes the run with the model arguments stored in the checkpoint, and this "
            f"command gives other ones: model.init_args.{'; model.init_args.'.join(differ)}. Resume with the run's own "
            f"recipe and flags, or start a new run from these weights with --model.init_args.init_weights {path}"
        )


def _check_accelerator(accelerator: Any) -> None:
    """``--trainer.accelerator`` names an accelerator that exists and is available on this machine."""
    if not isinstance(accelerator, str):
        return
    from pytorch_lightning.accelerators import AcceleratorRegistry

    name = accelerator.lower()
    known = sorted({"auto", "gpu", *AcceleratorRegistry.available_accelerators()})
    if name not in known:
        raise BfrzooError(
            f"--trainer.accelerator {accelerator!r} is not an accelerator name; use one of {', '.join(known)} "
            "(choose which GPUs with --trainer.devices, e.g. --trainer.devices [1])"
        )
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if (name == "cuda" and not torch.cuda.is_available()) or (name == "gpu" and not (torch.cuda.is_available() or has_mps)):
        raise BfrzooError(
            f"--trainer.accelerator {accelerator} but no GPU is visible to PyTorch on this machine "
            "(torch.cuda.is_available() is False); use --trainer.accelerator cpu, or auto (the GPU when there is one)"
        )
