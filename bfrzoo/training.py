"""LightningCLI wiring: the task classes are the model choices, :class:`~bfrzoo.data.FaceDataModule` the data.

The typed ``__init__`` signatures of the tasks and the DataModule ARE the configuration schema: a recipe key that
does not exist, or a value of the wrong type, is rejected by the parser with the list of valid options.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from bfrzoo.data import FaceDataModule
from bfrzoo.tasks.base import BfrzooTask


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
    """``LightningCLI`` with bfrzoo's defaults; ``fit`` ends with a test run that writes the metrics table."""

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
        trainer = super().instantiate_trainer(**kwargs)
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
