"""Training of the MMRB network (Hu et al., journal Sec. III-C/D and IV-B; preprint Sec. 3.3-3.4 and 4.2).

The codec is trained jointly with the pre-trained StyleGAN2 (GPEN's, "retrained by [16]": GPEN's released
``GPEN-BFR-512.pth``, or the ``prior.pt`` of ``bfrzoo fit --recipe stylegan2_prior``), against

* a global discriminator, GPEN's pre-trained StyleGAN2 discriminator with FreezeD (Mo et al. 2020): its first five
  convolution layers, counted from the input side, are frozen (Sec. IV-B; :meth:`Discriminator.freeze`);
* three local discriminators for the left eye, right eye and mouth (the preprint's design: two down-samplings,
  single-channel output; :class:`~bfrzoo.models.mmrbnet.LocalDiscriminator`), fed crops taken on the batch with
  ``torchvision.ops.roi_align`` at boxes from the data's 5-point landmarks or parsing masks
  (:mod:`bfrzoo.data.components`).

Losses (Eq. 11-16):

    L_adv-g = E[log(1 + exp(-D(G(X'))))]                     (11)  non-saturating logistic (softplus)
    L_adv-l = sum_ROI E[-log D_ROI(X'_ROI)]                  (12)  "cross-entropy", per patch of the output map
    L_adv   = lambda_g L_adv-g + lambda_l L_adv-l            (13)  lambda_g 0.5, lambda_l 3 (local = 6 x global)
    L_C     = lambda_l1 ||X - X'||_1 + lambda_FM sum_i ||psi_i(X) - psi_i(X')||_2   (14)  8, 0.02 (VGG19)
    L_FP    = lambda_FP ||phi(X) - phi(X')||_1               (15)  10, phi = ArcFace IR-SE50
    L_total = L_adv + L_C + L_FP                             (16)

plus the L1 losses of the decoder's multi-scale reconstructions (Sec. III-A: "L1 restoration loss ... for each
resolution scale of the reconstructed image in the decoder"), weight ``lambda_ms`` (not given: 1). The
discriminators minimise the logistic loss on real HQ faces vs restored ones (the local ones on the crops). Adam,
batch 4, 512 px, the ``mmrb`` degradation preset; learning rates per part (preprint Sec. 4.2): codec 2e-3,
StyleGAN2 2e-4, noise branches 2e-3, local discriminators 2e-3, global discriminator 2e-5; "a piece-wise attenuation
strategy": ``MultiStepLR`` over training batches (milestones and factor not given: 400k and 600k of the 700k
iterations, x 0.5).

Ablations (journal Table IV, preprint Table 5), each a switch: w/o MMRB (``restorer_args.use_mmrb: false``), w/o
FreezeD (``freeze_d_layers: 0``), w/o local D (``local_discriminators: false``), w/o identity loss
(``lambda_fp: 0``), w/o fine-tuning + FreezeD (``finetune_prior: false`` and ``freeze_d_layers: 0``).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.blocks.stylegan2 import Discriminator
from bfrzoo.data.components import COMPONENTS, Source, component_boxes, crop_components
from bfrzoo.errors import BfrzooError, WeightsNotFoundError
from bfrzoo.interface import to_model_range
from bfrzoo.losses.adversarial import logistic_d_loss, logistic_g_loss
from bfrzoo.models.gan_prior import discriminator_width, load_gan_prior, read_discriminator, read_gan_prior
from bfrzoo.models.mmrbnet import LocalDiscriminator
from bfrzoo.registry import load_state_dict_strict
from bfrzoo.tasks.base import AdversarialTask, Batch
from bfrzoo.tasks.optim import adam

if TYPE_CHECKING:
    from bfrzoo.tasks.protocol import BenchProtocol

#: Where the two pre-trained parts come from (printed when one is missing).
PRETRAINED_SOURCES = (
    "the StyleGAN2 prior: GPEN's released GPEN-BFR-512.pth (github.com/yangxy/GPEN) or the prior.pt of "
    "`bfrzoo fit --recipe stylegan2_prior --data.root DATA`, as --model.init_args.prior_checkpoint",
    "the global discriminator: GPEN's GPEN-BFR-512-D.pth or the same prior.pt, as "
    "--model.init_args.global_disc_checkpoint (a prior.pt carries both)",
)


class MMRBTask(AdversarialTask):
    """MMRB network training, Eq. (11)-(16); see the module docstring.

    Args:
        restorer: ``mmrb`` (configurable) or ``mmrb_512``.
        restorer_args: the ``mmrb`` factory's arguments (size, prior widths, MMRB counts, ``use_mmrb``).
        prior_checkpoint: the pre-trained StyleGAN2 (noise by concatenation, the decoder's widths).
        global_disc_checkpoint: the pre-trained global discriminator (``None``: the prior file's, when it has one).
        require_pretrained: a missing prior or global discriminator is an error saying where they come from;
            ``False`` starts them from random weights with one warning (demos, tests).
        finetune_prior: jointly fine-tune the StyleGAN2 (the paper); ``False`` keeps it fixed.
        freeze_d_layers: FreezeD: the global discriminator's first N conv layers (from the input) stay frozen (5).
        local_discriminators: the three component discriminators (eyes, mouth) and Eq. (12).
        component_source: where the component boxes come from: ``auto``, ``landmarks`` or ``masks``.
        local_crop: side of the crops the local discriminators see (``None``: ``size / 8``).
        local_channels: width of the local discriminators' first layer.
        lambda_g / lambda_l / lambda_l1 / lambda_fm / lambda_fp: the weights of Eq. (13)-(15).
        lambda_ms: weight of the L1 losses of the decoder's multi-scale reconstructions.
        fm_layers: the VGG19 layers of Eq. (14)'s feature matching (squared L2 per layer).
        lr_codec / lr_prior / lr_noise / lr_local_d / lr_global_d: the learning rate of each part.
        betas: Adam betas of every optimiser (not given: (0.9, 0.99), GFPGAN's).
        lr_milestones / lr_gamma: the piece-wise decay (training batches, factor).
        r1_gamma / d_reg_every: an optional lazy R1 on the global discriminator (the paper lists none: 0).
        **kwargs: the shared task arguments (``ema_decay``, ``metrics``, ``metrics_pretrained``,
            ``pretrained_losses`` (VGG19 and ArcFace), ``grid_images``, ``init_weights``, ``d_every``, ``g_every``).
    """

    fixed_arguments = ("lr", "l1_weight")  # set here, not taken (see BfrzooTask.fixed_arguments)

    checkpointed_counters = ("_d_steps",)

    def __init__(
        self,
        restorer: str = "mmrb",
        restorer_args: dict[str, Any] | None = None,
        prior_checkpoint: str | None = None,
        global_disc_checkpoint: str | None = None,
        require_pretrained: bool = True,
        finetune_prior: bool = True,
        freeze_d_layers: int = 5,
        local_discriminators: bool = True,
        component_source: Source = "auto",
        local_crop: int | None = None,
        local_channels: int = 64,
        lambda_g: float = 0.5,
        lambda_l: float = 3.0,
        lambda_l1: float = 8.0,
        lambda_fm: float = 0.02,
        lambda_fp: float = 10.0,
        lambda_ms: float = 1.0,
        fm_layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"),
        lr_codec: float = 2e-3,
        lr_prior: float = 2e-4,
        lr_noise: float = 2e-3,
        lr_local_d: float = 2e-3,
        lr_global_d: float = 2e-5,
        betas: tuple[float, float] = (0.9, 0.99),
        lr_milestones: Sequence[int] = (400_000, 600_000),
        lr_gamma: float = 0.5,
        r1_gamma: float = 0.0,
        d_reg_every: int = 16,
        **kwargs: Any,
    ) -> None:
        if component_source not in ("auto", "landmarks", "masks"):
            raise ValueError(f"component_source must be 'auto', 'landmarks' or 'masks', got {component_source!r}")
        if min(lambda_g, lambda_l, lambda_l1, lambda_fm, lambda_fp, lambda_ms, r1_gamma) < 0:
            raise ValueError("the loss weights and r1_gamma must be >= 0")
        if min(lr_codec, lr_prior, lr_noise, lr_local_d, lr_global_d) <= 0 or not 0 < lr_gamma <= 1 or d_reg_every < 1:
            raise ValueError("the learning rates must be > 0, lr_gamma in (0, 1] and d_reg_every >= 1")
        super().__init__(restorer=restorer, restorer_args=restorer_args, lr=lr_codec, betas=betas,
                         l1_weight=lambda_l1, **kwargs)
        if not hasattr(self.net, "parameter_groups") or not hasattr(self.net, "to_rgbs"):
            raise BfrzooError(f"MMRBTask trains an MMRB network (mmrb, mmrb_512), got {restorer!r}")
        size = self.net.size
        cm, narrow = discriminator_width(self.net.generator)
        self.disc = Discriminator(size, cm, narrow, stddev_group=None)  # GPEN's global discriminator
        self._load_pretrained(prior_checkpoint, global_disc_checkpoint, require_pretrained)
        if not 0 <= freeze_d_layers <= len(self.disc.conv_layers()):
            raise ValueError(f"freeze_d_layers must be in [0, {len(self.disc.conv_layers())}], got {freeze_d_layers}")
        self.frozen_d = self.disc.freeze(freeze_d_layers)  # FreezeD
        if not finetune_prior:
            self.net.freeze_prior(True)
        self.crop = int(local_crop or max(8, size // 8))
        self.local_ds = nn.ModuleDict(
            {c: LocalDiscriminator(local_channels) for c in COMPONENTS} if local_discriminators else {}
        )
        self.fm_loss = self.identity_loss = None
        self._build_feature_losses(tuple(fm_layers))
        self._d_steps = 0
        self._boxes: tuple[Any, torch.Tensor, torch.Tensor] | None = None  # (batch, boxes, valid) of this step

    @classmethod
    def bench_protocol(cls, size: int) -> BenchProtocol:
        """``bfrzoo bench train`` at ``size`` px: an MMRB network on GPEN's bench StyleGAN2 (style 128, n_mlp 4,
        channel multiplier 1, narrow 0.25, concat noise), whose prior AND discriminator come from the same
        ``stylegan2_prior`` run as GPEN's row (the protocol trains it once); component boxes from the parsing masks;
        the feature matching (VGG19) and identity (ArcFace) terms when their files are cached, else off (never a
        random network); the journal's Table IV and the preprint's Table 5 ablations with their CelebA numbers."""
        from bfrzoo.losses.identity import ARCFACE_IR_SE50
        from bfrzoo.losses.vgg import VGG19_IMAGENET
        from bfrzoo.tasks.protocol import BenchProtocol, Prerequisite, Variant, weights_available

        gan = {"size": size, "style_dim": 128, "n_mlp": 4, "channel_multiplier": 1, "narrow": 0.25}
        prior = Prerequisite("prior_checkpoint", "stylegan2_prior", "prior.pt",
                             {f"model.init_args.{k}": v for k, v in {**gan, "noise_mode": "concat"}.items()})
        return BenchProtocol(
            overrides={
                "model.init_args.restorer_args": gan, "model.init_args.local_channels": 16,
                "model.init_args.lambda_fm": 0.02 if weights_available(VGG19_IMAGENET) else 0.0,
                "model.init_args.lambda_fp": 10.0 if weights_available(ARCFACE_IR_SE50) else 0.0,
            },
            prerequisites=(prior,),
            needs=frozenset({"masks"}),
            paper_full={"psnr": 26.034, "ssim": 0.702, "lpips": 0.162, "fid": 16.080, "niqe": 4.285},
            variants=(
                Variant("mmrb_wo_mmrb", {"model.init_args.restorer_args": {"use_mmrb": False}},
                        "MMRB Table IV a: w/o MMRB", {"psnr": 25.977, "ssim": 0.699, "lpips": 0.163, "fid": 17.027, "niqe": 4.682}),
                Variant("mmrb_wo_local_d", {"model.init_args.local_discriminators": False},
                        "MMRB Table IV b: w/o local D", {"psnr": 26.010, "ssim": 0.697, "lpips": 0.163, "fid": 16.908, "niqe": 4.614}),
                Variant("mmrb_wo_ft_freezed", {"model.init_args.finetune_prior": False, "model.init_args.freeze_d_layers": 0},
                        "MMRB Table IV c: w/o fine-tuning + FreezeD",
                        {"psnr": 25.704, "ssim": 0.692, "lpips": 0.171, "fid": 19.543, "niqe": 4.546}),
                Variant("mmrb_wo_freezed", {"model.init_args.freeze_d_layers": 0}, "MMRB preprint Table 5 b: w/o FreezeD",
                        {"psnr": 26.016, "ssim": 0.701, "lpips": 0.164, "fid": 17.812, "niqe": 4.868}),
                Variant("mmrb_wo_fp", {"model.init_args.lambda_fp": 0.0}, "MMRB preprint Table 5 e: w/o FP loss",
                        {"psnr": 26.018, "ssim": 0.700, "lpips": 0.163, "fid": 16.853, "niqe": 4.707}),
            ),
        )

    # -------------------------------------------------------------------------------------- construction
    def _load_pretrained(self, prior_checkpoint: str | None, disc_checkpoint: str | None, require: bool) -> None:
        if self.hparams.get("init_weights"):
            return  # a whole MMRB network was loaded already
        missing = []
        prior = read_gan_prior(prior_checkpoint) if prior_checkpoint else None
        if prior is not None:
            load_gan_prior(self.net.generator, prior)
        else:
            missing.append(PRETRAINED_SOURCES[0])
        disc_state = read_discriminator(disc_checkpoint) if disc_checkpoint else (prior or {}).get("discriminator")
        if disc_state is not None:
            load_state_dict_strict(self.disc, disc_state, source="global discriminator")
        else:
            missing.append(PRETRAINED_SOURCES[1])
        if missing:
            if require:
                raise BfrzooError(
                    "the MMRB network fine-tunes pre-trained parts that were not given: " + "; ".join(missing)
                    + " (or --model.init_args.require_pretrained false to start them from random weights)"
                )
            warnings.warn(
                f"MMRBTask: {len(missing)} pre-trained part(s) not given (StyleGAN2 prior / global discriminator): "
                "they start from RANDOM weights (fine for the CPU demo and tests only)",
                stacklevel=3,
            )
        self.sync_ema()

    def _build_feature_losses(self, fm_layers: tuple[str, ...]) -> None:
        hp = self.hparams
        if hp.lambda_fm > 0:
            from bfrzoo.losses.perceptual import PerceptualLoss

            try:
                self.fm_loss = PerceptualLoss({n: 1.0 for n in fm_layers}, "vgg19", hp.pretrained_losses, criterion="l2")
            except WeightsNotFoundError as exc:
                raise WeightsNotFoundError(f"{exc} To train without the feature matching term: --model.init_args.lambda_fm 0.") from exc
        if hp.lambda_fp > 0:
            from bfrzoo.losses.identity import IdentityLoss

            try:
                self.identity_loss = IdentityLoss(pretrained=hp.pretrained_losses)
            except WeightsNotFoundError as exc:
                raise WeightsNotFoundError(
                    f"{exc} To train without the identity (face preserving) loss, Eq. (15): --model.init_args.lambda_fp 0."
                ) from exc

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and self.local_ds and dm is not None:
            source = self.hparams.component_source
            has = {"landmarks": getattr(dm, "with_landmarks", False), "masks": getattr(dm, "with_masks", False)}
            if not (has["landmarks"] or has["masks"]) or (source != "auto" and not has[source]):
                component_boxes({}, source)  # raises the one clear error (how to get landmarks or masks)

    # ------------------------------------------------------------------------------------------ training
    def optimizer_groups(self) -> tuple[torch.optim.Optimizer, ...]:
        """Adam per part (preprint Sec. 4.2): the generator's ``codec`` / ``prior`` / ``noise`` groups, then the
        global discriminator, then one optimiser per local discriminator."""
        hp = self.hparams
        parts = self.net.parameter_groups()
        generator = {"codec": (parts["codec"], hp.lr_codec), "noise": (parts["noise"], hp.lr_noise)}
        if hp.finetune_prior:
            generator["prior"] = (parts["prior"], hp.lr_prior)
        trainable = [p for p in self.disc.parameters() if p.requires_grad]
        optimizers = [adam(generator, hp.betas), adam({"global_d": (trainable, hp.lr_global_d)}, hp.betas)]
        optimizers += [adam({f"local_d_{name}": (d.parameters(), hp.lr_local_d)}, hp.betas) for name, d in self.local_ds.items()]
        return tuple(optimizers)

    def lr_scheduler_specs(self, optimizers: Sequence[torch.optim.Optimizer]) -> list[dict[str, Any]]:
        """The piece-wise decay: every rate times ``lr_gamma`` at each milestone (training batches)."""
        hp = self.hparams
        return [{"scheduler": torch.optim.lr_scheduler.MultiStepLR(opt, list(hp.lr_milestones), hp.lr_gamma),
                 "interval": "step"} for opt in optimizers]

    def restore_train(self, lq: torch.Tensor) -> torch.Tensor:
        out = self.net.forward_with_aux(to_model_range(lq))
        self._reconstructions = out.reconstructions
        return out.image

    def _components(self, batch: Batch, *images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each image's eye / mouth crops; the boxes are found once per batch (the D and G steps share them)."""
        if self._boxes is None or self._boxes[0] is not batch:
            self._boxes = (batch, *component_boxes(batch, self.hparams.component_source))
        _, boxes, valid = self._boxes
        return [crop_components(im, boxes.to(im.device), self.crop) for im in images], valid

    def discriminator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The global discriminator's logistic loss (+ lazy R1 if asked) and each local one's on its crops."""
        hp = self.hparams
        self.disc.requires_grad_(True)
        real = to_model_range(batch["hq"])
        real_pred, fake_pred = self.disc(real), self.disc(restored)
        loss = logistic_d_loss(real_pred, fake_pred)
        logs = {"global": loss.detach(), "real_score": real_pred.mean().detach(), "fake_score": fake_pred.mean().detach()}
        if hp.r1_gamma > 0 and self._d_steps % hp.d_reg_every == 0:
            from bfrzoo.losses.adversarial import r1_penalty

            real_r = real.detach().requires_grad_(True)
            pred = self.disc(real_r)
            r1 = r1_penalty(pred, real_r)
            loss = loss + hp.r1_gamma / 2 * r1 * hp.d_reg_every + 0 * pred[0, 0]
            logs["r1"] = r1.detach()
        self._d_steps += 1
        if self.local_ds:
            (real_c, fake_c), valid = self._components(batch, real, restored)
            for i, (name, d) in enumerate(self.local_ds.items()):
                d.requires_grad_(True)
                keep = valid[:, i]
                if keep.any():
                    term = logistic_d_loss(d(real_c[keep, i]), d(fake_c[keep, i]))
                    loss = loss + term
                    logs[f"local_{name}"] = term.detach()
        return loss, logs

    def generator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. (16) plus the multi-scale reconstruction L1; ``restored`` ``(N, 3, S, S)`` in ``[-1, 1]``."""
        hp = self.hparams
        self.disc.requires_grad_(False)
        hq = to_model_range(batch["hq"])
        logs: dict[str, torch.Tensor] = {"adv_global": logistic_g_loss(self.disc(restored))}  # Eq. (11)
        loss = hp.lambda_g * logs["adv_global"]
        if self.local_ds:
            (fake_c,), valid = self._components(batch, restored)
            local = torch.zeros((), device=restored.device)
            for i, (name, d) in enumerate(self.local_ds.items()):
                d.requires_grad_(False)
                keep = valid[:, i]
                if keep.any():
                    term = logistic_g_loss(d(fake_c[keep, i]))
                    logs[f"adv_{name}"] = term
                    local = local + term
            logs["adv_local"] = local  # Eq. (12), summed over the components
            loss = loss + hp.lambda_l * local  # Eq. (13)
        logs["l1"] = F.l1_loss(restored, hq)  # Eq. (14)
        loss = loss + hp.lambda_l1 * logs["l1"]
        if self.fm_loss is not None:
            logs["feature_matching"] = self.fm_loss(restored, hq)
            loss = loss + hp.lambda_fm * logs["feature_matching"]
        if self.identity_loss is not None:
            logs["identity"] = self.identity_loss(restored, hq)  # Eq. (15)
            loss = loss + hp.lambda_fp * logs["identity"]
        recon = getattr(self, "_reconstructions", {})
        if hp.lambda_ms > 0 and recon:
            terms = [F.l1_loss(img, F.interpolate(hq, size=img.shape[-2:], mode="bilinear", align_corners=False,
                                                  antialias=True)) for img in recon.values()]
            logs["multiscale_l1"] = torch.stack(terms).sum()
            loss = loss + hp.lambda_ms * logs["multiscale_l1"]
        extra, extra_logs = self.shared_losses(restored, hq)  # optional perceptual / LPIPS (off in the paper)
        logs.update(extra_logs)
        return loss + extra, {k: v.detach() for k, v in logs.items()}

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        self._reconstructions, self._boxes = {}, None
        super().on_train_batch_end(outputs, batch, batch_idx)
