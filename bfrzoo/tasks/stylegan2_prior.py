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

What it saves: ``prior.pt`` in the run folder (:func:`save_gan_prior`; the EMA generator, the discriminator and
their architectures), which ``GPENTask(prior_checkpoint=...)`` loads, as it loads the Lightning ``.ckpt`` of this
task. The key mapping prior -> GPEN is defined once here (:func:`load_gan_prior`): the prior's generator keys ARE
the keys of ``GPEN.generator`` and the discriminator keys those of GPEN's discriminator. Because the bfrzoo CLI
exports every run as a ``restorer.pt``, this task's ``restorer.pt`` is a ``gpen`` restorer whose decoder is the
prior and whose encoder is UNTRAINED (a valid fine-tuning start, not a usable restorer).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bfrzoo.blocks.stylegan2 import NOISE_MODES, Discriminator, Generator, NoiseMode, stylegan2_width
from bfrzoo.errors import BfrzooError, CheckpointMismatchError
from bfrzoo.interface import from_model_range, to_model_range
from bfrzoo.losses.adversarial import logistic_d_loss_lazy_r1, logistic_g_loss
from bfrzoo.registry import load_state_dict_strict
from bfrzoo.tasks.base import AdversarialTask, Batch
from bfrzoo.tasks.optim import adam

PRIOR_KIND = "bfrzoo.stylegan2_prior"
_CKPT_PREFIXES = {"generator": ("net_ema.", "net."), "discriminator": ("disc.",)}


# ---------------------------------------------------------------------------------------- prior files
def save_gan_prior(
    generator: Generator, discriminator: Discriminator | None, generator_args: Mapping[str, Any], path: str | Path
) -> Path:
    """Write ``prior.pt``: ``{"kind", "generator_args", "generator", "discriminator"}`` (plain tensors and
    numbers, readable with ``torch.load(weights_only=True)``). ``generator_args`` are the keyword arguments of
    the ``gpen`` registry factory (``size, style_dim, n_mlp, channel_multiplier, narrow, noise_mode``)."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj: dict[str, Any] = {
        "kind": PRIOR_KIND,
        "generator_args": dict(generator_args),
        "generator": {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()},
    }
    if discriminator is not None:
        obj["discriminator"] = {k: v.detach().cpu().clone() for k, v in discriminator.state_dict().items()}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path


def read_gan_prior(path: str | Path) -> dict[str, Any]:
    """Read a GAN prior: ``{"generator": state, "discriminator": state | None, "generator_args": dict | None}``.

    Accepts the ``prior.pt`` of :class:`StyleGAN2PriorTask`, that task's Lightning ``.ckpt`` (the EMA generator
    ``net_ema.*`` is preferred over ``net.*``; the discriminator is ``disc.*``) and the common StyleGAN2 training
    file layout ``{"g_ema": ..., "d": ...}`` (same key names as bfrzoo's Generator / Discriminator).
    """
    path = Path(path)
    if not path.is_file():
        from bfrzoo.errors import WeightsNotFoundError

        raise WeightsNotFoundError(
            f"GAN prior {str(path)!r} does not exist; train one with `bfrzoo fit --recipe stylegan2_prior` and pass "
            "its RUN/prior.pt (or the .ckpt)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BfrzooError(f"could not read GAN prior {str(path)!r} ({type(exc).__name__}); it is corrupt") from exc
    if isinstance(obj, Mapping) and obj.get("kind") == PRIOR_KIND:
        return {"generator": obj["generator"], "discriminator": obj.get("discriminator"), "generator_args": obj.get("generator_args")}
    if isinstance(obj, Mapping) and "g_ema" in obj:
        return {"generator": obj["g_ema"], "discriminator": obj.get("d"), "generator_args": None}
    state = obj.get("state_dict") if isinstance(obj, Mapping) else None
    if isinstance(state, Mapping):
        parts: dict[str, Any] = {"generator": None, "discriminator": None, "generator_args": None}
        for part, prefixes in _CKPT_PREFIXES.items():
            for prefix in prefixes:
                sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                if sub:
                    parts[part] = sub
                    break
        hp = obj.get("hyper_parameters", {})
        if isinstance(hp, Mapping) and "size" in hp:
            parts["generator_args"] = {k: hp[k] for k in ("size", "style_dim", "n_mlp", "channel_multiplier", "narrow", "noise_mode") if k in hp}
        if parts["generator"] is not None:
            return parts
    raise CheckpointMismatchError(
        f"{str(path)!r} is not a GAN prior: expected the prior.pt or .ckpt of `bfrzoo fit --recipe stylegan2_prior`, "
        "or a StyleGAN2 file with a 'g_ema' entry"
    )


def load_gan_prior(gpen: nn.Module, prior: Mapping[str, Any], discriminator: Discriminator | None = None) -> None:
    """Embed a pre-trained GAN prior into a GPEN (Sec. 3.3): the prior generator -> ``gpen.generator`` (same
    keys, strict) and, when both exist, the prior discriminator -> ``discriminator``. The encoder is untouched.

    Raises:
        CheckpointMismatchError: a prior of another architecture or noise mode (the message names both).
    """
    args = prior.get("generator_args")
    noise_mode = getattr(gpen, "noise_mode", None)
    if args and noise_mode is not None and args.get("noise_mode", noise_mode) != noise_mode:
        raise CheckpointMismatchError(
            f"the GAN prior was trained with noise_mode={args['noise_mode']!r} but this GPEN uses {noise_mode!r}; "
            "pre-train the prior with the same noise mode (restorer_args.noise_mode)"
        )
    load_state_dict_strict(gpen.generator, prior["generator"], source="GAN prior (generator)")
    if discriminator is not None and prior.get("discriminator") is not None:
        load_state_dict_strict(discriminator, prior["discriminator"], source="GAN prior (discriminator)")


def discriminator_width(generator: Generator) -> tuple[int, float]:
    """``(channel_multiplier, narrow)`` of the channel rule a generator was built with (for its discriminator)."""
    resolution = min(generator.size, 64)  # the multiplier first shows in the channels at 64x64
    return stylegan2_width(generator.channels[4], generator.channels[resolution], resolution)


# ---------------------------------------------------------------------------------------------- task
class StyleGAN2PriorTask(AdversarialTask):
    """Unconditional StyleGAN2 training of the GAN prior (see the module docstring for the losses).

    Args:
        size / style_dim / n_mlp / channel_multiplier / narrow / noise_mode: the generator, identical to the
            ``gpen`` restorer that will embed it (``gpen_512``: 512, 512, 8, 2, 1.0, ``concat``).
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
        metrics: computed at test time between generated samples and the test HQ faces (distribution metrics:
            ``fid``); an empty list computes none.
        metrics_pretrained: ``False`` builds FID with random Inception weights (smoke runs).
        grid_images: samples in the validation / test grids (fixed latents, so epochs are comparable).
        init_weights: a ``prior.pt`` / ``.ckpt`` of this task to start from (generator and discriminator).
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
        metrics: Sequence[str] = ("fid",),
        metrics_pretrained: bool = True,
        grid_images: int = 8,
        init_weights: str | None = None,
    ) -> None:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if d_reg_every < 1 or g_reg_every < 1 or path_batch_shrink < 1:
            raise ValueError("d_reg_every, g_reg_every and path_batch_shrink must be >= 1")
        if r1_gamma < 0 or path_length_weight < 0 or not 0.0 <= mixing <= 1.0:
            raise ValueError("r1_gamma and path_length_weight must be >= 0 and mixing in [0, 1]")
        gen_args = dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier, narrow=narrow, noise_mode=noise_mode)
        self._gen_args = gen_args
        metrics = tuple(metrics)
        super().__init__(
            restorer="gpen", restorer_args=gen_args, lr=lr, betas=betas, ema_decay=ema_decay,
            metrics=metrics or ("psnr",), metrics_pretrained=metrics_pretrained, grid_images=grid_images,
        )
        self._metric_names = metrics
        self.disc = Discriminator(size, channel_multiplier, narrow, stddev_group=stddev_group)
        if init_weights:
            prior = read_gan_prior(init_weights)
            load_state_dict_strict(self.net, prior["generator"], source=str(init_weights))
            if prior["discriminator"] is not None:
                load_state_dict_strict(self.disc, prior["discriminator"], source=str(init_weights))
            self.sync_ema()
        self.register_buffer("mean_path_length", torch.zeros(()))
        self._step = 0
        self._samples: list[torch.Tensor] = []

    def build_network(self) -> nn.Module:
        """The prior generator (not a restorer): :class:`Generator` with the ``gpen`` architecture arguments."""
        return Generator(**self._gen_args)

    def validation_metric_keys(self) -> list[str]:
        return []  # validation draws sample grids only; the distribution metrics run at test time

    def required_data_size(self) -> int | None:
        return int(self._gen_args["size"])

    @property
    def generator_eval(self) -> Generator:
        """The generator used for samples and saved as the prior: the EMA copy when there is one."""
        return self.net_ema if self.net_ema is not None else self.net  # type: ignore[return-value]

    @property
    def eval_net(self) -> nn.Module:
        """For the CLI's ``restorer.pt`` export: a ``gpen`` restorer with this prior embedded as its decoder and
        an untrained encoder (seeded init). Use ``prior.pt`` to start GPEN fine-tuning."""
        from bfrzoo.registry import create_restorer

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            gpen = create_restorer("gpen", **self._gen_args)
        load_gan_prior(gpen, {"generator": self.generator_eval.state_dict(), "generator_args": self._gen_args})
        return gpen

    def forward(self, lq: torch.Tensor) -> torch.Tensor:  # pragma: no cover - not a restorer
        raise BfrzooError("StyleGAN2PriorTask is an unconditional GAN, not a restorer; use sample(n)")

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` faces ``(n, 3, S, S)`` in ``[0, 1]`` from the evaluation generator, latents seeded by ``seed``."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.hparams.style_dim, generator=g).to(self.device)
        gen = self.generator_eval
        return from_model_range(gen(z).image).clamp(0, 1)

    # ------------------------------------------------------------------------------------------ training
    def optimizer_groups(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """Adam on G and D with the lazy-regularisation correction ``c = k / (k + 1)`` (StyleGAN2 appendix B)."""
        hp = self.hparams
        g_every = hp.g_reg_every if hp.path_length_weight > 0 else None
        d_every = hp.d_reg_every if hp.r1_gamma > 0 else None
        opt_g = adam({"generator": (self.net.parameters(), hp.lr)}, hp.betas, reg_every=g_every)
        return opt_g, adam({"discriminator": (self.disc.parameters(), hp.lr)}, hp.betas, reg_every=d_every)

    def _latents(self, n: int) -> list[torch.Tensor]:
        count = 2 if self.hparams.mixing > 0 and torch.rand(()).item() < self.hparams.mixing else 1
        return [torch.randn(n, self.hparams.style_dim, device=self.device) for _ in range(count)]

    def discriminator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logistic D loss on real ``hq`` vs detached samples ``restored`` (``[-1, 1]``) plus, every
        ``d_reg_every`` steps, ``gamma / 2 * R1 * d_reg_every`` (lazy R1)."""
        hp = self.hparams
        real = to_model_range(batch["hq"])
        return logistic_d_loss_lazy_r1(self.disc, real, restored, hp.r1_gamma, hp.d_reg_every, self._step)

    def generator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Non-saturating logistic G loss of the samples ``restored`` (with gradients) plus, every
        ``g_reg_every`` steps, the path-length penalty ``w_pl * E[(||J_w^T y|| - a)^2] * g_reg_every``."""
        hp = self.hparams
        self.disc.requires_grad_(False)
        loss = logistic_g_loss(self.disc(restored))
        logs = {"adv": loss.detach()}
        if hp.path_length_weight > 0 and self._step % hp.g_reg_every == 0:
            pl = self.path_length_penalty(max(1, batch["hq"].shape[0] // hp.path_batch_shrink))
            loss = loss + hp.path_length_weight * hp.g_reg_every * pl
            logs["path_length"] = pl.detach()
        return loss, logs

    def path_length_penalty(self, n: int) -> torch.Tensor:
        """StyleGAN2 Eq. (4): ``(||J_w^T y||_2 - a)^2`` with ``y ~ N(0, I) / sqrt(H W)`` and ``a`` the running
        mean (decay 0.01) of the path lengths, kept in the buffer ``mean_path_length``."""
        image, latent, _ = self.net(self._latents(n))
        noise = torch.randn_like(image) / math.sqrt(image.shape[2] * image.shape[3])
        (grad,) = torch.autograd.grad((image * noise).sum(), latent, create_graph=True)
        lengths = grad.pow(2).sum(2).mean(1).sqrt()
        with torch.no_grad():
            self.mean_path_length.lerp_(lengths.mean(), 0.01)
        return (lengths - self.mean_path_length).pow(2).mean()

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        n = batch["hq"].shape[0]
        fake = self.net(self._latents(n)).image
        d_loss, d_logs = self.discriminator_loss(batch, fake.detach())
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss, g_logs = self.generator_loss(batch, fake)
        if not torch.isfinite(g_loss):
            raise FloatingPointError(f"generator loss is {g_loss.item()} at step {self._step}; lower the learning rate")
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        self._step += 1
        logs = {**{f"d_{k}": v for k, v in d_logs.items()}, **{f"g_{k}": v for k, v in g_logs.items()}}
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=n)
        self.log("train/loss", g_loss.detach(), prog_bar=True, batch_size=n)

    # --------------------------------------------------------------------------------- validation and test
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if batch_idx == 0:
            self._samples = [self.sample(self.hparams.grid_images).cpu()]

    def on_validation_epoch_end(self) -> None:
        if self._samples and self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_samples(f"val_samples_epoch{self.current_epoch:03d}.png")
        self._samples = []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        hq = batch["hq"].float()
        fake = self.sample(hq.shape[0], seed=1000 + batch_idx).float()
        if self._metric_names:
            self.test_metrics.update(fake, hq)
        kept = sum(t.shape[0] for t in self._samples)
        if kept < self.hparams.grid_images:
            self._samples.append(fake[: self.hparams.grid_images - kept].cpu())

    def on_test_epoch_start(self) -> None:
        self._samples = []

    def on_test_epoch_end(self) -> None:
        values: dict[str, float] = {}
        if self._metric_names:
            values = {k: float(v) for k, v in self.test_metrics.compute().items()}
            self.log_dict({f"test/{k}": v for k, v in values.items()}, sync_dist=False)
            self.test_metrics.reset()
        if self.trainer.is_global_zero:
            self._write_samples("test_samples.png")
            self._write_report(values)
        self._samples = []

    def _write_samples(self, filename: str) -> None:
        from torchvision.utils import save_image

        save_image(torch.cat(self._samples), self._out_dir() / filename, nrow=min(8, self.hparams.grid_images), padding=2)

    def _write_report(self, values: dict[str, float]) -> None:
        from bfrzoo.tasks.reporting import RunReport

        report = RunReport.collect(
            restorer="stylegan2_prior", restorer_args=self._gen_args, metrics=values, metric_names=self._metric_names,
            metrics_pretrained=self._metrics_pretrained, datamodule=getattr(self.trainer, "datamodule", None),
            trainer=self.trainer, num_parameters=sum(p.numel() for p in self.net.parameters()),
        )
        report.notes.append("unconditional GAN prior: metrics compare generated samples with the test HQ faces")
        report.write(self._out_dir())

    def on_fit_end(self) -> None:
        """Save ``prior.pt`` (EMA generator + discriminator) for ``GPENTask(prior_checkpoint=...)``."""
        if self.trainer.is_global_zero:
            save_gan_prior(self.generator_eval, self.disc, self._gen_args, self._out_dir() / "prior.pt")
