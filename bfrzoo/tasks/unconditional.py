"""Unconditional GAN training (the StyleGAN2 prior of GPEN, MPCNet and the MMRB network): its own small base,
since a generator of faces from random latents is not a restorer.

:class:`UnconditionalGANTask` owns the generator (``net``, with its EMA copy) and the discriminator (``disc``),
runs one discriminator step and one generator step per batch on the HQ faces of the usual
:class:`bfrzoo.data.FaceDataModule` batches (the ``lq`` half is unused), draws fixed-seed sample grids after
every validation, and at test time scores generated samples against the test HQ faces with distribution metrics
(``fid``). A subclass supplies the networks, the latents and the two losses.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bfrzoo.errors import BfrzooError
from bfrzoo.interface import from_model_range
from bfrzoo.tasks.base import Batch, BfrzooTask
from bfrzoo.tasks.reporting import RunReport


class UnconditionalGANTask(BfrzooTask):
    """Generator + discriminator trained from random latents (see the module docstring).

    Args:
        lr: Adam learning rate of G and D.
        betas: Adam betas.
        metrics: computed at test time between generated samples and the test HQ faces (distribution metrics such
            as ``fid``); an empty list computes none.
        **kwargs: the shared task arguments (``ema_decay``, ``metrics_pretrained``, ``grid_images``; see
            :class:`~bfrzoo.tasks.base.BfrzooTask`).
    """

    def __init__(
        self,
        lr: float = 0.002,
        betas: tuple[float, float] = (0.0, 0.99),
        metrics: Sequence[str] = ("fid",),
        **kwargs: Any,
    ) -> None:
        super().__init__(metrics=tuple(metrics), **kwargs)
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.automatic_optimization = False
        self.test_metrics = self._build_metrics()
        self._samples: list[torch.Tensor] = []

    def _build_metrics(self) -> nn.Module | None:
        if not self._metric_names:
            return None
        from bfrzoo.metrics import build_metric_suite

        return build_metric_suite(self._metric_names, pretrained=self._metrics_pretrained)

    # ------------------------------------------------------------------------------ what a subclass supplies
    @property
    def latent_dim(self) -> int:
        raise NotImplementedError

    def generate(self, generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, S, S)`` in ``[-1, 1]`` of ``generator`` from latents ``z (N, latent_dim)``."""
        raise NotImplementedError

    def training_latents(self, n: int) -> Any:
        """The latents of one training batch (style mixing and the like belong here)."""
        return torch.randn(n, self.latent_dim, device=self.device)

    def discriminator_loss(self, batch: Batch, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def generator_loss(self, batch: Batch, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def optimizer_groups(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        raise NotImplementedError

    def fake_batch(self, latents: Any) -> torch.Tensor:
        """The training generator's images for ``latents`` (``[-1, 1]``, with gradients)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def run_name(self) -> str:
        return "stylegan2_prior"

    def validation_metric_keys(self) -> list[str]:
        return []  # validation draws sample grids only; the distribution metrics run at test time

    def required_data_size(self) -> int | None:
        return int(getattr(self.net, "size"))

    def forward(self, lq: torch.Tensor) -> torch.Tensor:  # pragma: no cover - not a restorer
        raise BfrzooError(f"{type(self).__name__} is an unconditional GAN, not a restorer; use sample(n)")

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` faces ``(n, 3, S, S)`` in ``[0, 1]`` from the evaluation generator, latents seeded by ``seed``."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=g).to(self.device)
        return from_model_range(self.generate(self.eval_net, z)).clamp(0, 1)

    # ------------------------------------------------------------------------------------------ training
    def configure_optimizers(self) -> Any:
        return list(self.optimizer_groups())

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        n = batch["hq"].shape[0]
        fake = self.fake_batch(self.training_latents(n))
        d_loss, d_logs = self.discriminator_loss(batch, fake.detach())
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss, g_logs = self.generator_loss(batch, fake)
        if not torch.isfinite(g_loss):
            raise FloatingPointError(f"generator loss is {g_loss.item()} at step {self.global_step}; lower the learning rate")
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self.after_training_step()
        logs = {**{f"d_{k}": v for k, v in d_logs.items()}, **{f"g_{k}": v for k, v in g_logs.items()}}
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=n)
        self.log("train/loss", g_loss.detach(), prog_bar=True, batch_size=n)

    def after_training_step(self) -> None:
        """Hook after both optimiser steps of a batch (step counters of lazy regularisation)."""

    # --------------------------------------------------------------------------------- validation and test
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self._samples = [self.sample(self.grid_images).cpu()]

    def on_validation_epoch_end(self) -> None:
        if self._samples and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_samples(f"val_samples_epoch{self.current_epoch:03d}.png")
        self._samples = []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        hq = batch["hq"].float()
        fake = self.sample(hq.shape[0], seed=1000 + batch_idx).float()
        if self.test_metrics is not None:
            self.test_metrics.update(fake, hq)
        kept = sum(t.shape[0] for t in self._samples)
        if kept < self.grid_images:
            self._samples.append(fake[: self.grid_images - kept].cpu())

    def on_test_epoch_start(self) -> None:
        self._samples = []

    def on_test_epoch_end(self) -> None:
        values: dict[str, float] = {}
        if self.test_metrics is not None:
            values = {k: float(v) for k, v in self.test_metrics.compute().items()}
            self.log_dict({f"test/{k}": v for k, v in values.items()}, sync_dist=False)
            self.test_metrics.reset()
        if self.trainer.is_global_zero:
            self._write_samples("test_samples.png")
            self.write_report(self.make_report(values))
        self._samples = []

    def _write_samples(self, filename: str) -> None:
        from PIL import Image
        from torchvision.utils import make_grid

        from bfrzoo.io import atomic_write

        grid = make_grid(torch.cat(self._samples), nrow=min(8, max(1, self.grid_images)), padding=2)
        array = grid.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        path = atomic_write(self._out_dir() / filename, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
        self.log_image_file(filename.removesuffix(".png"), path)

    def make_report(self, values: Mapping[str, float]) -> RunReport:
        report = RunReport.collect(
            restorer=self.run_name, restorer_args=self.generator_args(), metrics=values,
            metric_names=self._metric_names, metrics_pretrained=self._metrics_pretrained,
            datamodule=getattr(self.trainer, "datamodule", None), trainer=self.trainer,
            num_parameters=sum(p.numel() for p in self.net.parameters()),
        )
        report.notes.append("unconditional GAN: metrics compare generated samples with the test HQ faces")
        return report

    def generator_args(self) -> dict[str, Any]:
        """The generator's architecture arguments (recorded in the report and in the exported file)."""
        raise NotImplementedError

    def export_run(self, folder: Path, info: Mapping[str, Any]) -> Path:
        raise NotImplementedError
