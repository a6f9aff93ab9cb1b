"""The restoration LightningModule every zoo model trains with: thin step logic, nothing architectural.

:class:`RestorationTask` owns the network (built from the registry by name, so recipes, the CLI and tables
share one name), an optional EMA copy of it, the validation/test metric suites, the image grid
``LQ | restored | HQ`` and the test table. A subclass supplies the loss (:meth:`RestorationTask.training_loss`).

:class:`AdversarialTask` adds what the GAN models share: manual optimisation with several optimizers,
discriminator/generator alternation and generator EMA. A GAN subclass supplies the discriminator(s), the two
losses and the optimizer groups.

Batches are dicts from :class:`bfrzoo.data.FaceDataModule`: ``hq`` and ``lq`` ``(N, 3, H, W)`` in ``[0, 1]``,
optional ``mask`` and ``landmarks``, ``name``. Networks see ``[-1, 1]``.
"""
from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from bfrzoo.interface import from_model_range, to_model_range
from bfrzoo.registry import create_restorer
from bfrzoo.tasks.reporting import RunReport, save_image_grid

Batch = Mapping[str, Any]


class RestorationTask(L.LightningModule):
    """Supervised restoration: ``loss = l1_weight * L1 + perceptual_weight * perceptual`` (the U-Net baseline).

    Args:
        restorer: a registered name (:func:`bfrzoo.list_restorers`), e.g. ``"unet"``.
        restorer_args: its architecture arguments (the factory's keyword arguments).
        lr: Adam learning rate.
        betas: Adam betas.
        weight_decay: AdamW weight decay (0 = Adam).
        l1_weight: weight of the pixel L1 loss.
        perceptual_weight: weight of the VGG19 perceptual loss (0 = off; needs the VGG19 weights).
        ema_decay: generator EMA decay per step (``None`` = no EMA). Evaluation uses the EMA network.
        metrics: names from :func:`bfrzoo.metrics.list_metrics` computed on validation and test.
        metrics_pretrained: ``False`` builds feature-network metrics (LPIPS, FID) with random weights
            (smoke tests only: their values are then meaningless and the table says so).
        grid_images: how many validation/test images go into the ``LQ | restored | HQ`` grid.
        init_weights: a bfrzoo checkpoint (``restorer.pt`` or a Lightning ``.ckpt``) to start from.
    """

    def __init__(
        self,
        restorer: str = "unet",
        restorer_args: dict[str, Any] | None = None,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        l1_weight: float = 1.0,
        perceptual_weight: float = 0.0,
        ema_decay: float | None = None,
        metrics: Sequence[str] = ("psnr", "ssim", "psnr_y", "ssim_y"),
        metrics_pretrained: bool = True,
        grid_images: int = 8,
        init_weights: str | None = None,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or null, got {ema_decay}")
        self.save_hyperparameters()
        self.restorer_name = restorer
        self.restorer_args = dict(restorer_args or {})
        self.net = self.build_network()
        if init_weights:
            from bfrzoo.tasks.export import load_restorer_weights

            load_restorer_weights(self.net, init_weights)
        self.net_ema: nn.Module | None = None
        if ema_decay is not None:
            self.net_ema = copy.deepcopy(self.net).requires_grad_(False).eval()
        self.l1 = nn.L1Loss()
        self.perceptual: nn.Module | None = None
        if perceptual_weight > 0:
            from bfrzoo.losses.perceptual import PerceptualLoss

            self.perceptual = PerceptualLoss()
        self._metric_names = tuple(metrics)
        self._metrics_pretrained = metrics_pretrained
        self.val_metrics = self._build_metrics()
        self.test_metrics = self._build_metrics()
        self._grid: list[torch.Tensor] = []

    # ----------------------------------------------------------------------------------------------- helpers
    def build_network(self) -> nn.Module:
        """The trained network: the registry's ``restorer`` built with ``restorer_args``. A task that trains
        something other than a registered restorer (the PSFR-GAN parsing network) overrides this."""
        return create_restorer(self.restorer_name, **self.restorer_args)

    def _build_metrics(self) -> nn.Module:
        from bfrzoo.metrics import build_metric_suite

        return build_metric_suite(self._metric_names, pretrained=self._metrics_pretrained)

    @property
    def eval_net(self) -> nn.Module:
        """The network used for validation, test and export: the EMA copy when there is one."""
        return self.net_ema if self.net_ema is not None else self.net

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        """``lq`` ``(N, 3, H, W)`` in ``[0, 1]`` -> restored, same shape, in ``[0, 1]`` (evaluation network)."""
        out = self.eval_net(to_model_range(lq))
        return from_model_range(out[0] if isinstance(out, (tuple, list)) else out)

    def restore_train(self, lq: torch.Tensor) -> torch.Tensor:
        """The training network's output in ``[-1, 1]`` (what the losses see)."""
        out = self.net(to_model_range(lq))
        return out[0] if isinstance(out, (tuple, list)) else out

    @torch.no_grad()
    def sync_ema(self) -> None:
        """Make the EMA copy equal to the training network (after loading weights into ``net``)."""
        if self.net_ema is not None:
            self.net_ema.load_state_dict(self.net.state_dict())

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.net_ema is None:
            return
        decay = float(self.hparams.ema_decay)
        ema_params = list(self.net_ema.parameters())
        params = [p.detach() for p in self.net.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for b_ema, b in zip(self.net_ema.buffers(), self.net.buffers()):
            b_ema.copy_(b)

    # ------------------------------------------------------------------------------------------- training
    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one batch and the terms to log. Override in a model's task."""
        hq = to_model_range(batch["hq"])
        restored = self.restore_train(batch["lq"])
        logs = {"l1": self.l1(restored, hq)}
        loss = self.hparams.l1_weight * logs["l1"]
        if self.perceptual is not None:
            logs["perceptual"] = self.perceptual(restored, hq)
            loss = loss + self.hparams.perceptual_weight * logs["perceptual"]
        return loss, logs

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, logs = self.training_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step}; lower the learning rate or check the data"
            )
        self.log_dict({f"train/{k}": v.detach() for k, v in logs.items()}, prog_bar=False, batch_size=batch["hq"].shape[0])
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["hq"].shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        self.update_ema()

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt_cls = torch.optim.AdamW if hp.weight_decay > 0 else torch.optim.Adam
        return opt_cls(self.net.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)

    # --------------------------------------------------------------------------------- validation and test
    def _evaluate(self, batch: Batch, batch_idx: int, suite: nn.Module, stage: str) -> None:
        restored = self(batch["lq"]).float()
        suite.update(restored, batch["hq"].float())
        if stage == "test" and self.trainer.is_global_zero:
            kept = sum(t.shape[0] for t in self._grid) // 3
            if kept < self.hparams.grid_images:
                n = min(self.hparams.grid_images - kept, restored.shape[0])
                self._grid += [batch["lq"][:n].cpu(), restored[:n].cpu(), batch["hq"][:n].cpu()]
        if stage == "val" and batch_idx == 0 and self.trainer.is_global_zero:
            n = min(self.hparams.grid_images, restored.shape[0])
            self._grid = [batch["lq"][:n].cpu(), restored[:n].cpu(), batch["hq"][:n].cpu()]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.val_metrics, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, self.test_metrics, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        """``{"restored": (N, 3, H, W) in [0, 1], "name": [...]}`` for LQ images of any size (``bfrzoo predict``);
        fixed-size networks get their faces resized in and out (:func:`bfrzoo.interface.restore_batch`)."""
        from bfrzoo.interface import restore_batch

        return {"restored": restore_batch(self.eval_net, batch["lq"].float()), "name": list(batch["name"])}

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict({f"val/{k}": v for k, v in values.items()}, prog_bar=True, sync_dist=False)
        self.val_metrics.reset()
        if self._grid and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_grid(f"val_grid_epoch{self.current_epoch:03d}.png")
        self._grid = []

    def on_test_epoch_start(self) -> None:
        self._grid = []

    def on_test_epoch_end(self) -> None:
        values = {k: float(v) for k, v in self.test_metrics.compute().items()}
        self.log_dict({f"test/{k}": v for k, v in values.items()}, sync_dist=False)
        self.test_metrics.reset()
        if self.trainer.is_global_zero:
            self._write_grid("test_grid.png")
            self._write_report(values)
        self._grid = []

    def setup(self, stage: str) -> None:
        # ``Trainer.log_dir`` broadcasts from rank 0, so it must be read on every rank at the same point: here,
        # never inside an ``is_global_zero`` branch (that deadlocks DDP). Rank-zero writers use the cached path.
        log_dir = self.trainer.log_dir
        self._run_dir = Path(log_dir if log_dir else self.trainer.default_root_dir)
        if getattr(self, "code_commit", None) is None:
            # the code this process runs: read when the run starts, not when the report is written (a long run
            # may end after later commits); ``+dirty`` marks uncommitted edits to tracked files
            from bfrzoo.tasks.reporting import git_commit

            self.code_commit: str | None = git_commit()
        if stage == "fit" and self.trainer.limit_val_batches != 0:
            self._check_checkpoint_monitor()
        size = getattr(getattr(self.trainer, "datamodule", None), "size", None)
        required = self.required_data_size()
        if size is not None and required is not None and size != required:
            from bfrzoo.errors import BfrzooError

            raise BfrzooError(
                f"data.size is {size} but this {self.restorer_name} network works on {required} px faces: set "
                f"--data.size {required}, or build the network for {size} px through --model.restorer_args"
            )

    def validation_metric_keys(self) -> list[str]:
        """The keys this task logs after each validation epoch (what a ``ModelCheckpoint`` may monitor)."""
        return [f"val/{name}" for name in self._metric_names]

    def _check_checkpoint_monitor(self) -> None:
        """Fail at the start of ``fit``, not after the first epoch, when the checkpoint monitors a metric that the
        task does not compute (e.g. ``val/lpips`` after ``--model.init_args.metrics`` dropped LPIPS)."""
        from lightning.pytorch.callbacks import ModelCheckpoint

        from bfrzoo.errors import BfrzooError

        keys = self.validation_metric_keys()
        for cb in self.trainer.callbacks:
            monitor = getattr(cb, "monitor", None) if isinstance(cb, ModelCheckpoint) else None
            if monitor and monitor.startswith("val/") and monitor not in keys:
                raise BfrzooError(
                    f"the checkpoint callback monitors {monitor!r} but this task computes {', '.join(keys) or 'no validation metrics'}: "
                    f"add {monitor.removeprefix('val/')} to --model.init_args.metrics or set "
                    f"--trainer.callbacks.init_args.monitor to one of those"
                )

    def required_data_size(self) -> int | None:
        """The face size the trained network needs (``None`` = any size): checked against ``data.size``."""
        return getattr(self.net, "input_size", None)

    def _out_dir(self) -> Path:
        """The run folder (logger version folder): grids, reports and exports go here. Rank-zero writers only."""
        path = getattr(self, "_run_dir", None)
        if path is None:  # used outside a Trainer's setup (e.g. a hand-driven task): no collective call then
            path = Path(self.trainer.default_root_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _write_grid(self, filename: str) -> None:
        if not self._grid:
            return
        lq, restored, hq = (torch.cat(self._grid[i::3]) for i in range(3))
        path = save_image_grid(lq, restored, hq, self._out_dir() / filename)
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                from torchvision.io import decode_image

                experiment.add_image(filename.removesuffix(".png"), decode_image(str(path)), self.global_step)

    def _write_report(self, values: dict[str, float]) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        report = RunReport.collect(
            restorer=self.restorer_name,
            restorer_args=self.restorer_args,
            metrics=values,
            metric_names=self._metric_names,
            metrics_pretrained=self._metrics_pretrained,
            datamodule=datamodule,
            trainer=self.trainer,
            num_parameters=sum(p.numel() for p in self.net.parameters()),
        )
        report.write(self._out_dir())

    # ------------------------------------------------------------------------------------------ resuming
    #: Plain attributes (step counters of lazy regularisation ...) that a resumed run must continue from.
    checkpointed_counters: tuple[str, ...] = ()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Besides Lightning's state: the task's counters and the torch RNG states (random latents, style mixing,
        noise), so that ``--ckpt_path`` resumes exactly where the run stopped. All plain ints and uint8 tensors:
        the checkpoint stays loadable with ``weights_only=True``."""
        checkpoint["bfrzoo_counters"] = {name: int(getattr(self, name)) for name in self.checkpointed_counters}
        checkpoint["bfrzoo_rng"] = {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for name, value in checkpoint.get("bfrzoo_counters", {}).items():
            setattr(self, name, int(value))
        rng = checkpoint.get("bfrzoo_rng")
        if rng is not None and self._resuming_training():
            torch.set_rng_state(rng["cpu"])
            if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def _resuming_training(self) -> bool:
        """The RNG is restored only when training resumes (``fit --ckpt_path``), not for ``test``/``predict``."""
        trainer = self._trainer
        return trainer is not None and trainer.state.fn == "fit"

    # -------------------------------------------------------------------------------------------- export
    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            from bfrzoo.tasks.export import export_restorer

            export_restorer(self.eval_net, self.restorer_name, self.restorer_args, self._out_dir() / "restorer.pt")


class AdversarialTask(RestorationTask):
    """Base of the GAN tasks: manual optimisation, D then G each step, EMA of the generator.

    A subclass builds its discriminator(s) in ``__init__`` and implements :meth:`discriminator_loss`,
    :meth:`generator_loss` and :meth:`optimizer_groups`. ``d_every`` and ``g_every`` set how often each side
    steps (1 = every batch); gradient clipping, if any, is the subclass's choice.
    """

    def __init__(self, *args: Any, d_every: int = 1, g_every: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self.d_every = d_every
        self.g_every = g_every

    def optimizer_groups(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """``(generator optimizer, discriminator optimizer)``."""
        raise NotImplementedError

    def discriminator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D loss on ``hq`` vs the detached ``restored`` (``[-1, 1]``)."""
        raise NotImplementedError

    def generator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G loss of ``restored`` (``[-1, 1]``, with gradients)."""
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        return list(self.optimizer_groups())

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        n = batch["hq"].shape[0]
        logs: dict[str, torch.Tensor] = {}
        restored = self.restore_train(batch["lq"])
        if batch_idx % self.d_every == 0:
            d_loss, d_logs = self.discriminator_loss(batch, restored.detach())
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
            logs.update({f"d_{k}": v for k, v in d_logs.items()}, d_loss=d_loss)
        if batch_idx % self.g_every == 0:
            g_loss, g_logs = self.generator_loss(batch, restored)
            if not torch.isfinite(g_loss):
                raise FloatingPointError(f"generator loss is {g_loss.item()} at step {self.global_step}")
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            logs.update({f"g_{k}": v for k, v in g_logs.items()}, g_loss=g_loss)
        self.log_dict({f"train/{k}": v.detach() for k, v in logs.items()}, batch_size=n)
        if "g_loss" in logs:
            self.log("train/loss", logs["g_loss"].detach(), prog_bar=True, batch_size=n)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def dump_json(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
