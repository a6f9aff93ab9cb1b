"""The LightningModules every zoo model trains with: thin step logic, nothing architectural.

* :class:`BfrzooTask`: what every bfrzoo run shares: the trained network and its EMA copy, the run folder and
  provenance, exact resume (counters and RNG state in the checkpoint), images and tables sent to every logger
  (TensorBoard, wandb), and what the run leaves behind (:meth:`BfrzooTask.export_run`).
* :class:`RestorationTask`: supervised restoration (the U-Net baseline): the network built from the registry by
  name, validation / test metric suites, the ``LQ | restored | HQ`` grid, the test table, ``predict``.
* :class:`AdversarialTask`: what the GAN restorers share: manual optimisation of one generator optimiser (with
  any number of named parameter groups) and ANY number of discriminator optimisers, each with its own learning
  rate (MMRB: a global and three local discriminators), D/G alternation and optional LR schedulers.

Unconditional GAN training (the StyleGAN2 prior) has its own base, :class:`bfrzoo.tasks.unconditional.
UnconditionalGANTask`: it is not a restorer.

The arguments shared by the tasks are declared ONCE, here; a model's task takes its own arguments and passes
the rest on with ``**kwargs`` (jsonargparse follows them, so LightningCLI still shows every typed, documented
argument under ``--model.init_args``).

Batches are dicts from :class:`bfrzoo.data.FaceDataModule`: ``hq`` and ``lq`` ``(N, 3, H, W)`` in ``[0, 1]``,
optional ``mask`` and ``landmarks``, ``name``. Networks see ``[-1, 1]``.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from torch import nn

from bfrzoo.errors import BfrzooError
from bfrzoo.interface import from_model_range, to_model_range
from bfrzoo.registry import create_restorer
from bfrzoo.tasks.reporting import RunReport, save_image_grid

if TYPE_CHECKING:
    from bfrzoo.tasks.protocol import BenchProtocol

Batch = Mapping[str, Any]


class BfrzooTask(pl.LightningModule):
    """Base of every bfrzoo task (see the module docstring).

    Args:
        ema_decay: EMA decay per step of the trained network (``None`` = no EMA). Evaluation and export use the
            EMA copy when there is one.
        metrics: names from :func:`bfrzoo.metrics.list_metrics` computed on validation and test.
        metrics_pretrained: ``False`` builds feature-network metrics (LPIPS, FID) with random weights
            (smoke tests only: their values are then meaningless and the table says so).
        grid_images: how many validation / test images go into the image grids.
    """

    #: Plain attributes (step counters of lazy regularisation ...) that a resumed run must continue from.
    checkpointed_counters: tuple[str, ...] = ()
    #: Base-class arguments that this task sets itself (``l1_weight=alpha`` ...) and so does not take: kept out of
    #: a checkpoint's ``hyper_parameters``, so that ``Task.load_from_checkpoint(path)`` rebuilds the task.
    fixed_arguments: tuple[str, ...] = ()

    def __init__(
        self,
        ema_decay: float | None = None,
        metrics: Sequence[str] = ("psnr", "ssim", "psnr_y", "ssim_y"),
        metrics_pretrained: bool = True,
        grid_images: int = 8,
    ) -> None:
        super().__init__()
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or null, got {ema_decay}")
        if grid_images < 0:
            raise ValueError(f"grid_images must be >= 0, got {grid_images}")
        self.ema_decay = ema_decay
        self._metric_names = tuple(metrics)
        self._metrics_pretrained = metrics_pretrained
        self.grid_images = grid_images
        self.net: nn.Module
        self.net_ema: nn.Module | None = None

    # ------------------------------------------------------------------------------------------------- EMA
    def init_ema(self) -> None:
        """Create the EMA copy of ``net`` (call after ``net`` exists and holds its starting weights)."""
        if self.ema_decay is not None:
            self.net_ema = copy.deepcopy(self.net).requires_grad_(False).eval()

    @property
    def eval_net(self) -> nn.Module:
        """The network used for validation, test and export: the EMA copy when there is one."""
        return self.net_ema if self.net_ema is not None else self.net

    @torch.no_grad()
    def sync_ema(self) -> None:
        """Make the EMA copy equal to the training network (after loading weights into ``net``)."""
        if self.net_ema is not None:
            self.net_ema.load_state_dict(self.net.state_dict())

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.net_ema is None:
            return
        ema_params = list(self.net_ema.parameters())
        params = [p.detach() for p in self.net.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - float(self.ema_decay))
        for b_ema, b in zip(self.net_ema.buffers(), self.net.buffers()):
            b_ema.copy_(b)

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        self.update_ema()

    # ------------------------------------------------------------------------------------ run folder
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
            raise BfrzooError(
                f"data.size is {size} but this {self.run_name} network works on {required} px faces: set "
                f"--data.size {required}, or build the network for {size} px through the model's arguments"
            )

    @property
    def run_name(self) -> str:
        """The name of what this task trains (a restorer name, ``parsenet``, ``stylegan2_prior``)."""
        return type(self).__name__

    def required_data_size(self) -> int | None:
        """The face size the trained network needs (``None`` = any size): checked against ``data.size``."""
        return getattr(self.net, "input_size", None)

    @classmethod
    def bench_protocol(cls, size: int) -> BenchProtocol:
        """How ``bfrzoo bench train`` runs this task at ``size`` px (:mod:`bfrzoo.tasks.protocol`): the overrides
        that scale its recipe down, the pretrained stages it needs, its paper's ablation rows. Default: the recipe
        as it is, nothing else."""
        from bfrzoo.tasks.protocol import BenchProtocol

        return BenchProtocol()

    def validation_metric_keys(self) -> list[str]:
        """The keys this task logs after each validation epoch (what a ``ModelCheckpoint`` may monitor)."""
        return [f"val/{name}" for name in self._metric_names]

    def _check_checkpoint_monitor(self) -> None:
        """Fail at the start of ``fit``, not after the first epoch, when the checkpoint monitors a metric that the
        task does not compute (e.g. ``val/lpips`` after ``--model.init_args.metrics`` dropped LPIPS)."""
        from pytorch_lightning.callbacks import ModelCheckpoint

        keys = self.validation_metric_keys()
        for cb in self.trainer.callbacks:
            monitor = getattr(cb, "monitor", None) if isinstance(cb, ModelCheckpoint) else None
            if monitor and monitor.startswith("val/") and monitor not in keys:
                raise BfrzooError(
                    f"the checkpoint callback monitors {monitor!r} but this task computes {', '.join(keys) or 'no validation metrics'}: "
                    f"add {monitor.removeprefix('val/')} to --model.init_args.metrics or set "
                    f"--trainer.callbacks.init_args.monitor to one of those"
                )

    def _out_dir(self) -> Path:
        """The run folder (logger version folder): grids, reports and exports go here. Rank-zero writers only."""
        path = getattr(self, "_run_dir", None)
        if path is None:  # used outside a Trainer's setup (e.g. a hand-driven task): no collective call then
            path = Path(self.trainer.default_root_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --------------------------------------------------------------------------- images and tables to loggers
    def log_image_file(self, key: str, path: Path) -> None:
        """Send a PNG the run wrote to every logger that takes images: TensorBoard (``add_image``) and wandb
        (``WandbLogger.log_image``)."""
        for logger in self.loggers:
            if hasattr(logger, "log_image"):  # WandbLogger
                logger.log_image(key=key, images=[str(path)], step=self.global_step)
                continue
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                from torchvision.io import decode_image

                experiment.add_image(key, decode_image(str(path)), self.global_step)

    def log_report_table(self, key: str, report: RunReport) -> None:
        """Send the test table to every logger that takes tables (``WandbLogger.log_table``)."""
        for logger in self.loggers:
            if hasattr(logger, "log_table"):
                columns = ["restorer", *report.metrics, "images", "preset", "commit"]
                row = [report.restorer, *report.metrics.values(), report.num_images, report.preset, report.commit]
                logger.log_table(key=key, columns=columns, data=[row])

    def write_report(self, report: RunReport) -> None:
        """Write ``test_metrics.{json,md}`` into the run folder and send the table to the loggers."""
        report.write(self._out_dir())
        self.log_report_table("test_metrics", report)

    # ------------------------------------------------------------------------------------------ resuming
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Besides Lightning's state: the task's counters and the torch RNG states (random latents, style mixing,
        noise), so that ``--ckpt_path`` resumes exactly where the run stopped. All plain ints and uint8 tensors:
        the checkpoint stays loadable with ``weights_only=True``."""
        checkpoint["bfrzoo_counters"] = {name: int(getattr(self, name)) for name in self.checkpointed_counters}
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict):
            for name in self.fixed_arguments:
                hparams.pop(name, None)
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
    def export_run(self, folder: Path, info: Mapping[str, Any]) -> Path:
        """Write what this run leaves for inference or for the next stage (``restorer.pt``, ``prior.pt``,
        ``parser.pt``) from the CURRENT evaluation weights into ``folder``; ``info`` says which weights those are
        (best or last checkpoint). Called once per run by the CLI, after the test that scored these weights."""
        raise NotImplementedError


class RestorationTask(BfrzooTask):
    """Supervised restoration: ``loss = l1_weight * L1 + perceptual_weight * perceptual + lpips_weight * LPIPS``
    (the U-Net baseline; the losses every restorer may add).

    Args:
        restorer: a registered name (:func:`bfrzoo.list_restorers`), e.g. ``"unet"``.
        restorer_args: its architecture arguments (the factory's keyword arguments).
        lr: Adam learning rate.
        betas: Adam betas.
        weight_decay: AdamW weight decay (0 = Adam).
        l1_weight: weight of the pixel L1 loss.
        perceptual_weight: weight of the VGG19 perceptual loss (0 = off; needs the VGG19 weights).
        lpips_weight: weight of an LPIPS (VGG) loss term (0 = off; needs the LPIPS backbone weights).
        pretrained_losses: ``False`` gives the feature networks of the losses (VGG, VGGFace, LPIPS, ArcFace)
            random weights: tests and CPU demos only (their gradients are then meaningless).
        init_weights: a bfrzoo checkpoint (``restorer.pt`` or a Lightning ``.ckpt``) to start from.
        **kwargs: :class:`BfrzooTask`'s ``ema_decay``, ``metrics``, ``metrics_pretrained``, ``grid_images``.
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
        lpips_weight: float = 0.0,
        pretrained_losses: bool = True,
        init_weights: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if min(l1_weight, perceptual_weight, lpips_weight, weight_decay) < 0:
            raise ValueError("l1_weight, perceptual_weight, lpips_weight and weight_decay must be >= 0")
        self.save_hyperparameters()
        self.restorer_name = restorer
        self.restorer_args = dict(restorer_args or {})
        self.net = self.build_network()
        if init_weights:
            self.load_init_weights(init_weights)
        self.init_ema()
        self.l1 = nn.L1Loss()
        self.perceptual: nn.Module | None = None
        if perceptual_weight > 0:
            from bfrzoo.losses.perceptual import PerceptualLoss

            self.perceptual = PerceptualLoss(pretrained=pretrained_losses)
        self.lpips_loss: nn.Module | None = None
        if lpips_weight > 0:
            from bfrzoo.losses.perceptual import LPIPSLoss

            self.lpips_loss = LPIPSLoss(pretrained=pretrained_losses)
        self.val_metrics = self._build_metrics()
        self.test_metrics = self._build_metrics()
        self._grid: list[torch.Tensor] = []

    @property
    def run_name(self) -> str:
        return self.restorer_name

    # ----------------------------------------------------------------------------------------------- helpers
    def build_network(self) -> nn.Module:
        """The trained network: the registry's ``restorer`` built with ``restorer_args``. A task that trains
        something other than a registered restorer (the PSFR-GAN parsing network) overrides this."""
        return create_restorer(self.restorer_name, **self.restorer_args)

    def load_init_weights(self, path: str) -> None:
        """Start from a bfrzoo checkpoint (``restorer.pt`` / ``.ckpt``) of the same network."""
        from bfrzoo.registry import load_restorer_weights

        load_restorer_weights(self.net, path)

    def _build_metrics(self) -> nn.Module:
        from bfrzoo.metrics import build_metric_suite

        return build_metric_suite(self._metric_names, pretrained=self._metrics_pretrained)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        """``lq`` ``(N, 3, H, W)`` in ``[0, 1]`` -> restored, same shape, in ``[0, 1]`` (evaluation network)."""
        out = self.eval_net(to_model_range(lq))
        return from_model_range(out[0] if isinstance(out, (tuple, list)) else out)

    def restore_train(self, lq: torch.Tensor) -> torch.Tensor:
        """The training network's output in ``[-1, 1]`` (what the losses see)."""
        out = self.net(to_model_range(lq))
        return out[0] if isinstance(out, (tuple, list)) else out

    def shared_losses(self, restored: torch.Tensor, hq: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The optional perceptual and LPIPS terms of any restorer (weighted sum, and the unweighted terms)."""
        hp = self.hparams
        logs: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=restored.device)
        if self.perceptual is not None:
            logs["perceptual"] = self.perceptual(restored, hq)
            total = total + hp.perceptual_weight * logs["perceptual"]
        if self.lpips_loss is not None:
            logs["lpips"] = self.lpips_loss(restored, hq)
            total = total + hp.lpips_weight * logs["lpips"]
        return total, logs

    # ------------------------------------------------------------------------------------------- training
    def training_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one batch and the terms to log. Override in a model's task."""
        hq = to_model_range(batch["hq"])
        restored = self.restore_train(batch["lq"])
        logs = {"l1": self.l1(restored, hq)}
        extra, extra_logs = self.shared_losses(restored, hq)
        return self.hparams.l1_weight * logs["l1"] + extra, {**logs, **extra_logs}

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, logs = self.training_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step}; lower the learning rate or check the data"
            )
        self.log_dict({f"train/{k}": v.detach() for k, v in logs.items()}, prog_bar=False, batch_size=batch["hq"].shape[0])
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["hq"].shape[0])
        return loss

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt_cls = torch.optim.AdamW if hp.weight_decay > 0 else torch.optim.Adam
        params = [p for p in self.net.parameters() if p.requires_grad]
        return opt_cls(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)

    # --------------------------------------------------------------------------------- validation and test
    def _evaluate(self, batch: Batch, batch_idx: int, suite: nn.Module, stage: str) -> None:
        restored = self(batch["lq"]).float()
        self._last_restored = restored  # (N, 3, H, W) in [0, 1]: for a subclass's extra validation values
        suite.update(restored, batch["hq"].float())
        if stage == "test" and self.trainer.is_global_zero:
            kept = sum(t.shape[0] for t in self._grid) // 3
            if kept < self.grid_images:
                n = min(self.grid_images - kept, restored.shape[0])
                self._grid += [batch["lq"][:n].cpu(), restored[:n].cpu(), batch["hq"][:n].cpu()]
        if stage == "val" and batch_idx == 0 and self.trainer.is_global_zero:
            n = min(self.grid_images, restored.shape[0])
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
            self.write_report(self.make_report(values))
        self._grid = []

    def _write_grid(self, filename: str) -> None:
        if not self._grid:
            return
        lq, restored, hq = (torch.cat(self._grid[i::3]) for i in range(3))
        path = save_image_grid(lq, restored, hq, self._out_dir() / filename)
        self.log_image_file(filename.removesuffix(".png"), path)

    def make_report(self, values: Mapping[str, float]) -> RunReport:
        """The test table row of this run, with provenance."""
        return RunReport.collect(
            restorer=self.restorer_name,
            restorer_args=self.restorer_args,
            metrics=values,
            metric_names=self._metric_names,
            metrics_pretrained=self._metrics_pretrained,
            datamodule=getattr(self.trainer, "datamodule", None),
            trainer=self.trainer,
            num_parameters=sum(p.numel() for p in self.net.parameters()),
        )

    # -------------------------------------------------------------------------------------------- export
    def export_run(self, folder: Path, info: Mapping[str, Any]) -> Path:
        """``restorer.pt`` of the evaluation network (:func:`bfrzoo.registry.export_restorer`), loadable by
        ``bfrzoo restore --weights`` and ``create_restorer(name, pretrained=path)``."""
        from bfrzoo.registry import export_restorer

        weights = {"weights": "ema" if self.net_ema is not None else "raw", **info}
        return export_restorer(self.eval_net, self.restorer_name, self.restorer_args, folder / "restorer.pt", weights)


class AdversarialTask(RestorationTask):
    """Base of the GAN restorers: manual optimisation, discriminator(s) then generator each step, EMA.

    A subclass builds its discriminator(s) in ``__init__`` and implements :meth:`discriminator_loss`,
    :meth:`generator_loss` and :meth:`optimizer_groups`, which returns the generator optimiser first and then
    one optimiser per discriminator (each with its own learning rate; their parameters are disjoint, so one
    backward pass of the summed discriminator losses and a step of every discriminator optimiser equals
    stepping each discriminator on its own loss). :meth:`lr_scheduler_specs` may add LR schedulers
    (``"step"``: stepped after every training batch; ``"epoch"`` with a ``monitor``: ``ReduceLROnPlateau`` on a
    validation value).

    Args:
        d_every: discriminator step every ``d_every`` batches.
        g_every: generator step every ``g_every`` batches.
        **kwargs: the arguments of :class:`RestorationTask` and :class:`BfrzooTask`.
    """

    def check_multiscale_discriminator_fits(self, disc: Any, num_scales: int, depth: int) -> None:
        """At ``setup``: refuse data smaller than a multi-scale discriminator's smallest input (``disc.min_size``),
        in one line with the flags to change, instead of failing at the first step."""
        size = getattr(getattr(self.trainer, "datamodule", None), "size", None)
        if size is not None and size < disc.min_size:
            raise BfrzooError(
                f"data.size {size} is too small for the {num_scales}-scale discriminator of depth {depth} (it needs "
                f">= {disc.min_size} px): lower --model.init_args.disc_depth or --model.init_args.disc_num_scales, "
                "or train on larger faces"
            )

    def __init__(self, d_every: int = 1, g_every: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if d_every < 1 or g_every < 1:
            raise ValueError(f"d_every and g_every must be >= 1, got {d_every} and {g_every}")
        self.automatic_optimization = False
        self.d_every = d_every
        self.g_every = g_every
        #: Values of the validation that just ended, for the ``ReduceLROnPlateau`` schedulers that monitor them.
        self.monitored_values: dict[str, float] = {}

    def optimizer_groups(self) -> tuple[torch.optim.Optimizer, ...]:
        """``(generator optimizer, discriminator optimizer, ...)``: at least one discriminator optimiser."""
        raise NotImplementedError

    def lr_scheduler_specs(self, optimizers: Sequence[torch.optim.Optimizer]) -> list[dict[str, Any]]:
        """LR schedulers of ``optimizers`` as Lightning scheduler dicts (``{"scheduler", "interval", "monitor"}``);
        none by default."""
        return []

    def discriminator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The summed loss of every discriminator on ``hq`` vs the detached ``restored`` (``[-1, 1]``)."""
        raise NotImplementedError

    def generator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G loss of ``restored`` (``[-1, 1]``, with gradients)."""
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        optimizers = list(self.optimizer_groups())
        if len(optimizers) < 2:
            raise BfrzooError(f"{type(self).__name__}.optimizer_groups must return a generator and >= 1 discriminator optimizer")
        schedulers = []
        self._monitors: dict[int, str] = {}  # Lightning drops "monitor" under manual optimisation: kept here
        for spec in self.lr_scheduler_specs(optimizers):
            spec = dict(spec)
            monitor = spec.pop("monitor", None)
            if monitor:
                self._monitors[id(spec["scheduler"])] = monitor
            schedulers.append(spec)
        return (optimizers, schedulers) if schedulers else optimizers

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        opts = self.optimizers()
        opt_g, d_opts = opts[0], list(opts[1:])
        n = batch["hq"].shape[0]
        logs: dict[str, torch.Tensor] = {}
        restored = self.restore_train(batch["lq"])
        if batch_idx % self.d_every == 0:
            d_loss, d_logs = self.discriminator_loss(batch, restored.detach())
            for opt in d_opts:
                opt.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            for opt in d_opts:
                opt.step()
            logs.update({f"d_{k}": v for k, v in d_logs.items()}, d_loss=d_loss.detach())
        if batch_idx % self.g_every == 0:
            g_loss, g_logs = self.generator_loss(batch, restored)
            if not torch.isfinite(g_loss):
                raise FloatingPointError(f"generator loss is {g_loss.item()} at step {self.global_step}")
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            logs.update({f"g_{k}": v for k, v in g_logs.items()}, g_loss=g_loss.detach())
        self._step_schedulers("step")
        self.log_dict({f"train/{k}": v.detach() for k, v in logs.items()}, batch_size=n)
        if "g_loss" in logs:
            self.log("train/loss", logs["g_loss"], prog_bar=True, batch_size=n)

    def _step_schedulers(self, interval: str) -> None:
        """Manual optimisation steps no scheduler by itself: step those of ``interval`` ("step" every batch,
        "epoch" after each validation, with their monitored value for ``ReduceLROnPlateau``: taken from
        :attr:`monitored_values`, which a subclass fills with this validation's values, else from the trainer's
        logged metrics)."""
        if self._trainer is None:
            return
        monitors = getattr(self, "_monitors", {})
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != interval:
                continue
            monitor = monitors.get(id(config.scheduler))
            if monitor:
                value = self.monitored_values.get(monitor, self.trainer.callback_metrics.get(monitor))
                if value is not None:
                    config.scheduler.step(float(value))
            else:
                config.scheduler.step()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking:
            self._step_schedulers("epoch")
