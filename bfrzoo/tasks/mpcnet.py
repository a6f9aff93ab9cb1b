"""MPCNet training (Teng, Yu & Wu, Front. Neurorobot. 2022, Sec. 3.4 and 4.1).

The network (:class:`bfrzoo.models.mpcnet.MPCNet`, registry ``mpcnet``) embeds two pre-trained priors, each made
by its own recipe first:

1. the StyleGAN2 prior without noise inputs: ``bfrzoo fit --recipe mpcnet_prior`` (``prior.pt``);
2. the parsing mask prediction network (7 + 10 + 7 residual blocks at 512 px): ``bfrzoo fit --recipe
   mpcnet_parser`` (``parser.pt``; PSFR-GAN's released ``parse_multi_iter_90000.pth`` fits an MPCNet built with
   ``parser_min_feat_size: 32``);

then ``bfrzoo fit --recipe mpcnet --model.prior_checkpoint PRIOR --model.parser_checkpoint PARSER``. The losses:

    L_rec   = lambda_l1 ||I_HQ - I_HQ_hat||_1 + lambda_perc sum_{i=1..4} ||phi_i(I_HQ) - phi_i(I_HQ_hat)||_1    (8)
    L_adv,D = E[max(0, 1 - D(I_HQ))] + E[max(0, 1 + D(I_HQ_hat))],   L_adv,G = -E[D(I_HQ_hat)]               (9)
    L_style = sum_{i=1..4} ||G(phi_i(I_HQ)) - G(phi_i(I_HQ_hat))||^2,  G(phi) = phi^T phi / (C_i H_i W_i)     (10)
    L_G     = L_rec + lambda_style L_style + lambda_adv L_adv,G

with ``phi`` the VGGFace network (Cao et al. 2018 / Parkhi et al. 2015; a VGG16 topology, the file
``vgg_face_dag.pth``): relu1_2, relu2_2, relu3_3, relu4_3 for Eq. (8) (the paper's "4 layers", i = 1..4, read as
the last ReLU of VGG16's first four blocks) and relu2_1, relu3_1, relu4_1, relu5_1 for Eq. (10) (as given). Adam
(0.9, 0.99, eps 1e-8), lr 2e-4, batch 8, random horizontal flips, the ``mpcnet`` degradation preset, 512 px
(Sec. 4.1); the learning rate is halved when the validation reconstruction loss (Eq. 8 on the validation faces,
logged ``val/rec``) stops dropping: ``ReduceLROnPlateau`` on ``val/rec``, stepped after every validation.

Choices the paper leaves open, each an argument, and why:

* loss weights (the paper gives none): ``lambda_l1 = 1``, ``lambda_perc = 1``, ``lambda_style = 50``,
  ``lambda_adv = 0.1``: the pixel / perceptual / Gram / GAN balance of GFPGAN's training (Wang et al. 2021), the
  closest published recipe with the same four terms and a StyleGAN2 prior; PSFR-GAN's ``lambda_adv /
  lambda_rec = 0.1`` gives the same adversarial ratio.
* the discriminator (the paper describes none): PSFR-GAN's 3-scale patch discriminator
  (:class:`~bfrzoo.models.multiscale_discriminator.MultiScaleDiscriminator`), spectral norm on every conv and hinge
  losses, i.e. exactly Eq. (9)'s setting, unconditioned (it sees the image only); Eq. (9) is applied per scale and
  summed. Its learning rate ``lr_d`` defaults to the generator's (2e-4) and is halved with it.
* ReduceLROnPlateau: factor 0.5 ("decreased to half"), patience ``plateau_patience`` validations.
* Eq. (10)'s normalisation: see :class:`bfrzoo.losses.StyleLoss` (``style_normalization``).
* no VGGFace file: ``fit`` stops with one error naming the file and the one flag, ``--model.init_args.loss_network``,
  that trains with ImageNet VGG19 (``vgg19``) or without the perceptual and style terms (``none``): nothing falls
  back silently.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from bfrzoo.errors import BfrzooError, WeightsNotFoundError
from bfrzoo.interface import to_model_range
from bfrzoo.losses.adversarial import hinge_d_loss, hinge_g_loss
from bfrzoo.models.gan_prior import load_gan_prior, read_gan_prior
from bfrzoo.models.multiscale_discriminator import MultiScaleDiscriminator
from bfrzoo.models.parsenet import load_parser_weights
from bfrzoo.tasks.base import AdversarialTask, Batch
from bfrzoo.tasks.optim import adam

if TYPE_CHECKING:
    from bfrzoo.tasks.protocol import BenchProtocol

LossNetwork = Literal["vggface", "vgg19", "none"]

#: The two pre-training commands an MPCNet run needs (printed when a checkpoint is missing).
STAGE_COMMANDS = (
    "bfrzoo fit --recipe mpcnet_prior --data.root DATA   (the StyleGAN2 prior, noise inputs removed: RUN/prior.pt)",
    "bfrzoo fit --recipe mpcnet_parser --data.root DATA  (the parsing network, 7 + 10 + 7 blocks: RUN/parser.pt)",
)


class MPCNetTask(AdversarialTask):
    """MPCNet training with Eq. (8)-(10); see the module docstring.

    Args:
        restorer: ``mpcnet`` (configurable) or ``mpcnet_512``.
        restorer_args: the ``mpcnet`` factory's arguments (size, prior and parser widths, the Table 1 switches
            ``use_gan_prior`` / ``use_parsing_prior`` / ``use_adain`` / ``use_sft``, ``finetune_prior``).
        prior_checkpoint: the StyleGAN2 prior in noise mode ``none`` (``prior.pt`` / ``.ckpt`` of
            ``bfrzoo fit --recipe mpcnet_prior``).
        parser_checkpoint: the parsing network (``parser.pt`` of ``bfrzoo fit --recipe mpcnet_parser``, or PSFR-GAN's
            released parser for ``parser_min_feat_size: 32``).
        require_priors: a missing prior or parser checkpoint (for a prior the network uses) is an error naming the
            two commands that make them; ``False`` starts them from random weights with one warning (demos, tests).
        lambda_l1: weight of the pixel L1 of Eq. (8) (the paper's lambda_MSE).
        lambda_perc: weight of the VGGFace feature L1 of Eq. (8).
        lambda_style: weight of the Gram-matrix loss, Eq. (10).
        lambda_adv: weight of the hinge generator loss, Eq. (9).
        loss_network: ``vggface`` (the paper), ``vgg19`` (ImageNet) or ``none`` (no perceptual and style terms).
        perceptual_layers / style_layers: the VGG layers of Eq. (8) and Eq. (10).
        style_normalization: ``gram`` (G / CHW, Johnson et al.) or ``eq10`` (Eq. 10 typeset literally).
        lr: Adam learning rate of MPCNet (2e-4); ``lr_prior``: of the StyleGAN2 when ``finetune_prior``.
        lr_d: the discriminator's learning rate.
        betas / eps: Adam's (0.9, 0.99) and 1e-8.
        plateau_patience: validations without a lower ``val/rec`` before the rates are halved.
        disc_base_ch / disc_max_ch / disc_depth / disc_num_scales: the multi-scale discriminator.
        **kwargs: the shared task arguments (``ema_decay``, ``metrics``, ``metrics_pretrained``,
            ``pretrained_losses``, ``grid_images``, ``init_weights``, ``d_every``, ``g_every``; see
            :class:`~bfrzoo.tasks.base.AdversarialTask`).
    """

    fixed_arguments = ("l1_weight",)  # set here, not taken (see BfrzooTask.fixed_arguments)

    def __init__(
        self,
        restorer: str = "mpcnet",
        restorer_args: dict[str, Any] | None = None,
        prior_checkpoint: str | None = None,
        parser_checkpoint: str | None = None,
        require_priors: bool = True,
        lambda_l1: float = 1.0,
        lambda_perc: float = 1.0,
        lambda_style: float = 50.0,
        lambda_adv: float = 0.1,
        loss_network: LossNetwork = "vggface",
        perceptual_layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        style_layers: Sequence[str] = ("relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        style_normalization: Literal["gram", "eq10"] = "gram",
        lr: float = 2e-4,
        lr_prior: float = 2e-5,
        lr_d: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-8,
        plateau_patience: int = 3,
        disc_base_ch: int = 64,
        disc_max_ch: int = 512,
        disc_depth: int = 4,
        disc_num_scales: int = 3,
        **kwargs: Any,
    ) -> None:
        if loss_network not in ("vggface", "vgg19", "none"):
            raise ValueError(f"loss_network must be 'vggface', 'vgg19' or 'none', got {loss_network!r}")
        if min(lambda_l1, lambda_perc, lambda_style, lambda_adv) < 0 or lr_d <= 0 or lr_prior <= 0 or eps <= 0:
            raise ValueError("the loss weights must be >= 0 and lr_d, lr_prior, eps > 0")
        if plateau_patience < 0:
            raise ValueError(f"plateau_patience must be >= 0, got {plateau_patience}")
        super().__init__(restorer=restorer, restorer_args=restorer_args, lr=lr, betas=betas, l1_weight=lambda_l1, **kwargs)
        if not hasattr(self.net, "apff"):
            raise BfrzooError(f"MPCNetTask trains an MPCNet restorer (mpcnet, mpcnet_512), got {restorer!r}")
        self._load_priors(prior_checkpoint, parser_checkpoint, require_priors)
        self.disc = MultiScaleDiscriminator(
            in_ch=3, base_ch=disc_base_ch, max_ch=disc_max_ch, depth=disc_depth, num_d=disc_num_scales,
        )
        from torchmetrics import MeanMetric

        self.val_rec = MeanMetric()  # Eq. (8) on the validation faces, averaged over images and DDP ranks
        self.perceptual_loss = self.style_loss = None
        if loss_network != "none":
            self._build_vgg_losses(loss_network, perceptual_layers, style_layers, style_normalization)

    @classmethod
    def bench_protocol(cls, size: int) -> BenchProtocol:
        """``bfrzoo bench train`` at ``size`` px: an MPCNet of that size on a small StyleGAN2 (style 128, n_mlp 4,
        channel multiplier 1, narrow 0.25: GPEN's bench widths) and a parser of 16-64 channels with min_feat 4, both
        pre-trained within the protocol by ``mpcnet_prior`` / ``mpcnet_parser`` with the same architectures; the
        perceptual and style terms with VGGFace when its file is cached, else without them (never a random VGG);
        the Table 1 / Table 2 ablations with the paper's CelebA-Test numbers."""
        from bfrzoo.losses.vgg import VGGFACE
        from bfrzoo.tasks.protocol import BenchProtocol, Prerequisite, Variant, weights_available

        gan = {"size": size, "style_dim": 128, "n_mlp": 4, "channel_multiplier": 1, "narrow": 0.25}
        parser = {"min_feat_size": 4, "base_ch": 16, "res_depth": 10, "ch_range": [16, 64]}
        prior = Prerequisite("prior_checkpoint", "mpcnet_prior", "prior.pt",
                             {f"model.init_args.{k}": v for k, v in {**gan, "noise_mode": "none"}.items()})
        parse = Prerequisite("parser_checkpoint", "mpcnet_parser", "parser.pt",
                             {"model.init_args.restorer_args": {"in_size": size, "out_size": size, **parser}})
        depth = max(1, int(math.log2(size / 3)) - 2)
        arch = {**gan, **{f"parser_{k}": v for k, v in parser.items()}, "num_rcab": 2, "rcab_reduction": 8}
        paper = {"fid": 29.26, "lpips": 0.3097, "psnr": 23.82, "ssim": 0.6684}  # Table 2 / Table 3, MPCNet
        return BenchProtocol(
            overrides={
                "model.init_args.restorer_args": arch, "model.init_args.disc_base_ch": 32,
                "model.init_args.disc_max_ch": 256, "model.init_args.disc_depth": depth,
                "model.init_args.loss_network": "vggface" if weights_available(VGGFACE) else "none",
            },
            prerequisites=(prior, parse),
            paper_full=paper,
            variants=(
                Variant("mpcnet_wo_gan", {"model.init_args.restorer_args": {"use_gan_prior": False}},
                        "MPCNet Table 2: w/o GAN prior", {"fid": 120.14, "lpips": 0.5576, "psnr": 22.13, "ssim": 0.6165}),
                Variant("mpcnet_wo_parsing", {"model.init_args.restorer_args": {"use_parsing_prior": False}},
                        "MPCNet Table 2: w/o parsing map prior", {"fid": 45.51, "lpips": 0.4133, "psnr": 21.54, "ssim": 0.6415}),
                Variant("mpcnet_wo_adain", {"model.init_args.restorer_args": {"use_adain": False}},
                        "MPCNet Table 2: w/o AdaIN", {"fid": 29.49, "lpips": 0.3173, "psnr": 23.50, "ssim": 0.6629}),
                Variant("mpcnet_wo_sft", {"model.init_args.restorer_args": {"use_sft": False}},
                        "MPCNet Table 2: w/o SFT", {"fid": 37.88, "lpips": 0.3838, "psnr": 22.64, "ssim": 0.6582}),
            ),
        )

    # -------------------------------------------------------------------------------------- construction
    def _load_priors(self, prior_checkpoint: str | None, parser_checkpoint: str | None, require: bool) -> None:
        net = self.net
        if self.hparams.get("init_weights"):  # a whole MPCNet (priors included) was loaded already
            return
        missing = []
        if net.prior is not None:
            if prior_checkpoint:
                load_gan_prior(net.prior, read_gan_prior(prior_checkpoint))
                net.init_latents_from_prior()
            else:
                missing.append("prior_checkpoint (the StyleGAN2 prior)")
        if net.parser is not None:
            if parser_checkpoint:
                load_parser_weights(net.parser, parser_checkpoint)
            else:
                missing.append("parser_checkpoint (the parsing network)")
        if missing:
            if require:
                raise BfrzooError(
                    f"MPCNet needs its pre-trained priors: {' and '.join(missing)} not given. Make them with "
                    + "; then ".join(STAGE_COMMANDS)
                    + ", and pass --model.init_args.prior_checkpoint RUN/prior.pt --model.init_args.parser_checkpoint "
                    "RUN/parser.pt (or --model.init_args.require_priors false to start them from random weights)"
                )
            warnings.warn(
                f"MPCNetTask: {' and '.join(missing)} not given, so that prior starts from RANDOM weights (fine for "
                "the CPU demo and tests only; see `bfrzoo fit --recipe mpcnet --help`)",
                stacklevel=3,
            )
        self.sync_ema()

    def _build_vgg_losses(
        self, network: LossNetwork, perceptual_layers: Sequence[str], style_layers: Sequence[str], normalization: str
    ) -> None:
        from bfrzoo.losses.perceptual import PerceptualLoss, StyleLoss
        from bfrzoo.losses.vgg import VGGFeatures

        layers = tuple(dict.fromkeys([*perceptual_layers, *style_layers]))
        try:
            vgg = VGGFeatures(layers, network, pretrained=self.hparams.pretrained_losses)  # type: ignore[arg-type]
        except WeightsNotFoundError as exc:
            other = "vgg19" if network == "vggface" else "vggface"
            raise WeightsNotFoundError(
                f"{exc} To train without this file, set --model.init_args.loss_network {other} (the {other} weights) "
                "or none (no perceptual and style terms)."
            ) from exc
        self.perceptual_loss = PerceptualLoss({n: 1.0 for n in perceptual_layers}, vgg=vgg)
        self.style_loss = StyleLoss({n: 1.0 for n in style_layers}, vgg=vgg, normalization=normalization)  # type: ignore[arg-type]

    def required_data_size(self) -> int | None:
        return int(self.net.size)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.check_multiscale_discriminator_fits(self.disc, self.hparams.disc_num_scales, self.hparams.disc_depth)

    def validation_metric_keys(self) -> list[str]:
        return ["val/rec", *super().validation_metric_keys()]

    # ------------------------------------------------------------------------------------------ training
    def optimizer_groups(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """Adam (0.9, 0.99, eps 1e-8): MPCNet's own layers at ``lr`` (and the StyleGAN2 at ``lr_prior`` with
        ``finetune_prior``), the discriminator at ``lr_d``; the parsing network is never optimised."""
        hp = self.hparams
        groups = self.net.trainable_groups()
        generator = {"restorer": (groups["restorer"], hp.lr)}
        if "prior" in groups:
            generator["prior"] = (groups["prior"], hp.lr_prior)
        opt_g = adam(generator, hp.betas)
        opt_d = adam({"discriminator": (self.disc.parameters(), hp.lr_d)}, hp.betas)
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["eps"] = hp.eps
        return opt_g, opt_d

    def lr_scheduler_specs(self, optimizers: Sequence[torch.optim.Optimizer]) -> list[dict[str, Any]]:
        """Halve every rate when ``val/rec`` stops dropping (Sec. 4.1); stepped after each validation."""
        return [
            {
                "scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(
                    opt, mode="min", factor=0.5, patience=self.hparams.plateau_patience
                ),
                "interval": "epoch",
                "monitor": "val/rec",
            }
            for opt in optimizers
        ]

    def _vgg_features(self, restored: torch.Tensor, hq: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One pass of the shared VGG over each image (the perceptual and the style terms read the same features)."""
        vgg = self.perceptual_loss.vgg  # type: ignore[union-attr]
        with torch.no_grad():
            fy = vgg(hq)
        return vgg(restored), fy

    def reconstruction_loss(
        self, restored: torch.Tensor, hq: torch.Tensor, feats: tuple[dict, dict] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. (8) for ``restored``, ``hq`` ``(N, 3, S, S)`` in ``[-1, 1]``: the weighted sum and its two terms
        (``feats``: the VGG features of both images, when already computed)."""
        hp = self.hparams
        logs = {"l1": F.l1_loss(restored, hq)}
        loss = hp.lambda_l1 * logs["l1"]
        if self.perceptual_loss is not None:
            fx, fy = feats or self._vgg_features(restored, hq)
            logs["perceptual"] = self.perceptual_loss.distance(fx, fy)
            loss = loss + hp.lambda_perc * logs["perceptual"]
        return loss, logs

    def discriminator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. (9), hinge, summed over the discriminator's scales; ``restored`` detached, in ``[-1, 1]``."""
        self.disc.requires_grad_(True)
        real_scores, _ = self.disc(to_model_range(batch["hq"]))
        fake_scores, _ = self.disc(restored)
        logs = {
            "real_score": torch.stack([s.mean() for s in real_scores]).mean().detach(),
            "fake_score": torch.stack([s.mean() for s in fake_scores]).mean().detach(),
        }
        return hinge_d_loss(real_scores, fake_scores), logs

    def generator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``L_rec + lambda_style L_style + lambda_adv L_adv,G`` (Eq. 8-10), ``restored`` with gradients."""
        hp = self.hparams
        self.disc.requires_grad_(False)
        hq = to_model_range(batch["hq"])
        feats = self._vgg_features(restored, hq) if self.perceptual_loss is not None else None
        rec, logs = self.reconstruction_loss(restored, hq, feats)
        logs["rec"] = rec
        fake_scores, _ = self.disc(restored)
        logs["adv"] = hinge_g_loss(fake_scores)
        loss = rec + hp.lambda_adv * logs["adv"]
        if self.style_loss is not None and feats is not None:
            logs["style"] = self.style_loss.distance(*feats)
            loss = loss + hp.lambda_style * logs["style"]
        extra, extra_logs = self.shared_losses(restored, hq)  # optional LPIPS (off in the paper)
        logs.update(extra_logs)
        return loss + extra, {k: v.detach() for k, v in logs.items()}

    # --------------------------------------------------------------------------------- validation
    def _evaluate(self, batch: Batch, batch_idx: int, suite: torch.nn.Module, stage: str) -> None:
        """The metrics and grids of the base task, plus, on validation, Eq. (8) of the evaluated output (the
        ``val/rec`` whose plateau halves the learning rates)."""
        super()._evaluate(batch, batch_idx, suite, stage)
        if stage == "val":
            restored = to_model_range(self._last_restored)
            with torch.no_grad():
                rec, _ = self.reconstruction_loss(restored, to_model_range(batch["hq"].float()))
            self.val_rec.update(rec, batch["hq"].shape[0])

    def on_validation_epoch_end(self) -> None:
        value = self.val_rec.compute()
        self.val_rec.reset()
        self.log("val/rec", value, prog_bar=True, sync_dist=False)
        self.monitored_values = {"val/rec": float(value)}
        super().on_validation_epoch_end()
