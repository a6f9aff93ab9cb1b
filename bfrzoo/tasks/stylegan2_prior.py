"""Pre-training the GAN prior of GPEN: an unconditional StyleGAN2 on HQ faces (GPEN Sec. 3.3 and 4.2).

GPEN "first pre-train[s] the GAN prior network using a dataset of HQ face images following the training
strategies of StyleGAN" (Sec. 3.3), then embeds it as the decoder of the U-shaped network and fine-tunes the
whole (:class:`bfrzoo.tasks.gpen.GPENTask`). This task is that first stage, the StyleGAN2 recipe (Karras et al.,
CVPR 2020, Sec. 2-3 and appendix B):

* generator :class:`bfrzoo.blocks.stylegan2.Generator` with the noise mode of the GPEN that will embed it
  (``concat`` for GPEN: the random noise takes the place of the encoder features), discriminator
  :class:`bfrzoo.blocks.stylegan2.Discriminator` (residual, minibatch stddev);
* non-saturating logistic loss ``L_D = E[softplus(D(G(z)))] + E[softplus(-D(x))]``, ``L_G = E[softplus(-D(G(z)))]``
  (the loss GPEN inherits as L_A, its Eq. 1);
* lazy R1 on D, ``gamma / 2 * E[||grad_x D(x)||^2]`` every ``d_reg_every`` (16) steps, scaled by the interval;
* optional path-length regularisation of G every ``g_reg_every`` (4) steps (``path_length_weight > 0``);
* style mixing with probability ``mixing`` (0.9), Adam betas (0, 0.99) with the lazy-regularisation
  correction ``lr * c``, ``betas ** c``, ``c = k / (k + 1)``; an EMA of the generator is what gets saved.

The data are the HQ faces of the usual :class:`bfrzoo.data.FaceDataModule` batches (the ``lq`` half is unused).

What it saves: ``prior.pt`` in the run folder (:func:`bfrzoo.models.gan_prior.save_gan_prior`; the EMA
generator, the discriminator and their architectures), which GPEN, MPCNet and the MMRB network load as their
``prior_checkpoint``, as they load the Lightning ``.ckpt`` of this task. The prior's generator keys ARE the keys
of the zoo's :class:`~bfrzoo.blocks.stylegan2.Generator`, so the mapping is the identity
(:func:`bfrzoo.models.gan_prior.load_gan_prior`). It is not a restorer and writes no ``restorer.pt``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bfrzoo.blocks.stylegan2 import NOISE_MODES, Discriminator, Generator, NoiseMode
from bfrzoo.interface import to_model_range
from bfrzoo.losses.adversarial import logistic_d_loss_lazy_r1, logistic_g_loss
from bfrzoo.models.gan_prior import (
    PRIOR_KIND,
    discriminator_width,
    load_gan_prior,
    read_gan_prior,
    save_gan_prior,
)
from bfrzoo.tasks.base import Batch
from bfrzoo.tasks.optim import adam
from bfrzoo.tasks.unconditional import UnconditionalGANTask

__all__ = [
    "PRIOR_KIND", "StyleGAN2PriorTask", "discriminator_width", "load_gan_prior", "read_gan_prior", "save_gan_prior",
]


class StyleGAN2PriorTask(UnconditionalGANTask):
    """Unconditional StyleGAN2 training of the GAN prior (see the module docstring for the losses).

    Args:
        size / style_dim / n_mlp / channel_multiplier / narrow / noise_mode: the generator, identical to the
            StyleGAN2 of the network that will embed it (``gpen_512``: 512, 512, 8, 2, 1.0, ``concat``; MPCNet:
            noise mode ``none``).
        lr: Adam learning rate of G and D (0.002, StyleGAN2), before the lazy-regularisation correction.
        betas: Adam betas ((0, 0.99), StyleGAN2).
        r1_gamma: R1 weight gamma (10 for FFHQ).
        d_reg_every: lazy R1 interval (16).
        path_length_weight: path-length regulariser weight (2 in StyleGAN2; 0 = off).
        g_reg_every: lazy path-length interval (4).
        path_batch_shrink: the path-length batch is ``N // path_batch_shrink`` (2).
        mixing: style-mixing probability (0.9).
        stddev_group: minibatch-stddev group of D (4, StyleGAN2; ``None`` = whole batch as GPEN's D).
        ema_decay: generator EMA decay per step (StyleGAN2: ``0.5 ** (32 / 10000)`` ~ 0.998 at batch 32).
        init_weights: a ``prior.pt`` / ``.ckpt`` of this task to start from (generator and discriminator).
        **kwargs: ``metrics`` (distribution metrics of samples vs the test faces), ``metrics_pretrained``,
            ``grid_images`` (see :class:`~bfrzoo.tasks.unconditional.UnconditionalGANTask`).
    """

    checkpointed_counters = ("_step",)

    def __init__(
        self,
        size: int = 512,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        narrow: float = 1.0,
        noise_mode: NoiseMode = "concat",
        lr: float = 0.002,
        betas: tuple[float, float] = (0.0, 0.99),
        r1_gamma: float = 10.0,
        d_reg_every: int = 16,
        path_length_weight: float = 0.0,
        g_reg_every: int = 4,
        path_batch_shrink: int = 2,
        mixing: float = 0.9,
        stddev_group: int | None = 4,
        ema_decay: float | None = 0.998,
        init_weights: str | None = None,
        **kwargs: Any,
    ) -> None:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if d_reg_every < 1 or g_reg_every < 1 or path_batch_shrink < 1:
            raise ValueError("d_reg_every, g_reg_every and path_batch_shrink must be >= 1")
        if r1_gamma < 0 or path_length_weight < 0 or not 0.0 <= mixing <= 1.0:
            raise ValueError("r1_gamma and path_length_weight must be >= 0 and mixing in [0, 1]")
        super().__init__(lr=lr, betas=betas, ema_decay=ema_decay, **kwargs)
        self.save_hyperparameters()
        self._gen_args = dict(
            size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier, narrow=narrow,
            noise_mode=noise_mode,
        )
        self.net = Generator(**self._gen_args)
        self.disc = Discriminator(size, channel_multiplier, narrow, stddev_group=stddev_group)
        if init_weights:
            load_gan_prior(self.net, read_gan_prior(init_weights), self.disc)
        self.init_ema()
        self.register_buffer("mean_path_length", torch.zeros(()))
        self._step = 0

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def latent_dim(self) -> int:
        return int(self._gen_args["style_dim"])

    def generator_args(self) -> dict[str, Any]:
        return dict(self._gen_args)

    @property
    def generator_eval(self) -> Generator:
        """The generator used for samples and saved as the prior: the EMA copy when there is one."""
        return self.eval_net  # type: ignore[return-value]

    def generate(self, generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return generator(z).image

    def fake_batch(self, latents: Any) -> torch.Tensor:
        return self.net(latents).image

    def export_run(self, folder: Path, info: Mapping[str, Any]) -> Path:
        """``prior.pt`` (EMA generator + discriminator) for the ``prior_checkpoint`` of GPEN, MPCNet and MMRB."""
        return save_gan_prior(self.generator_eval, self.disc, self._gen_args, folder / "prior.pt")

    # ------------------------------------------------------------------------------------------ training
    def optimizer_groups(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """Adam on G and D with the lazy-regularisation correction ``c = k / (k + 1)`` (StyleGAN2 appendix B)."""
        hp = self.hparams
        g_every = hp.g_reg_every if hp.path_length_weight > 0 else None
        d_every = hp.d_reg_every if hp.r1_gamma > 0 else None
        opt_g = adam({"generator": (self.net.parameters(), hp.lr)}, hp.betas, reg_every=g_every)
        return opt_g, adam({"discriminator": (self.disc.parameters(), hp.lr)}, hp.betas, reg_every=d_every)

    def training_latents(self, n: int) -> list[torch.Tensor]:
        """One latent, or two for style mixing with probability ``mixing``."""
        count = 2 if self.hparams.mixing > 0 and torch.rand(()).item() < self.hparams.mixing else 1
        return [torch.randn(n, self.latent_dim, device=self.device) for _ in range(count)]

    def discriminator_loss(self, batch: Batch, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logistic D loss on real ``hq`` vs detached samples ``fake`` (``[-1, 1]``) plus, every
        ``d_reg_every`` steps, ``gamma / 2 * R1 * d_reg_every`` (lazy R1)."""
        hp = self.hparams
        real = to_model_range(batch["hq"])
        return logistic_d_loss_lazy_r1(self.disc, real, fake, hp.r1_gamma, hp.d_reg_every, self._step)

    def generator_loss(self, batch: Batch, fake: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Non-saturating logistic G loss of the samples ``fake`` (with gradients) plus, every ``g_reg_every``
        steps, the path-length penalty ``w_pl * E[(||J_w^T y|| - a)^2] * g_reg_every``."""
        hp = self.hparams
        self.disc.requires_grad_(False)
        loss = logistic_g_loss(self.disc(fake))
        logs = {"adv": loss.detach()}
        if hp.path_length_weight > 0 and self._step % hp.g_reg_every == 0:
            pl = self.path_length_penalty(max(1, batch["hq"].shape[0] // hp.path_batch_shrink))
            loss = loss + hp.path_length_weight * hp.g_reg_every * pl
            logs["path_length"] = pl.detach()
        return loss, logs

    def path_length_penalty(self, n: int) -> torch.Tensor:
        """StyleGAN2 Eq. (4): ``(||J_w^T y||_2 - a)^2`` with ``y ~ N(0, I) / sqrt(H W)`` and ``a`` the running
        mean (decay 0.01) of the path lengths, kept in the buffer ``mean_path_length``."""
        image, latent, _ = self.net(self.training_latents(n))
        noise = torch.randn_like(image) / math.sqrt(image.shape[2] * image.shape[3])
        (grad,) = torch.autograd.grad((image * noise).sum(), latent, create_graph=True)
        lengths = grad.pow(2).sum(2).mean(1).sqrt()
        with torch.no_grad():
            self.mean_path_length.lerp_(lengths.mean(), 0.01)
        return (lengths - self.mean_path_length).pow(2).mean()

    def after_training_step(self) -> None:
        self._step += 1
