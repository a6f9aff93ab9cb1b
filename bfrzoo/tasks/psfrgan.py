"""PSFR-GAN training (Chen et al., CVPR 2021, Sec. 3.2-3.3 and 4.3): generator + 3-scale discriminator.

The generator (:class:`bfrzoo.models.psfrgan.PSFRGAN`, built from the registry as ``psfrgan``) restores the LQ
face guided by the parsing map that the frozen, pre-trained face parsing network (FPN,
:class:`bfrzoo.tasks.parsenet.ParseNetTask`) predicts from the LQ face. The losses, Eq. (9):

    L_G = lambda_ss * L_ss + lambda_rec * L_rec + lambda_adv * L_GAN_G                     (9)
    L_rec = ||I_H_hat - I_H||_2 + sum_s sum_k ||D_s^k(I_H_hat^s) - D_s^k(I_H^s)||_2        (6)
    L_GAN_G = sum_s -E[D_s(I_H_hat^s)]                                                       (7)
    L_GAN_D = sum_s E[max(0, 1 - D_s(I_H^s))] + E[max(0, 1 + D_s(I_H_hat^s))]               (8)

and ``L_ss`` the semantic-aware style loss, Eq. (4)-(5) (:class:`bfrzoo.losses.semantic_style.SemanticStyleLoss`),
with ``lambda_rec = 10``, ``lambda_ss = 100``, ``lambda_adv = 1``, Adam betas (0.5, 0.999), lr 1e-4 (G) and 4e-4
(D), batch 4 (Sec. 4.3). The discriminator (:class:`bfrzoo.models.multiscale_discriminator.MultiScaleDiscriminator`)
sees the image concatenated with the one-hot parsing of the HQ face (for real and restored images alike).

Where bfrzoo's defaults follow the authors' released training code rather than the paper's text, and the
switches that give the other reading:

* ``style_normalization="released"``: the released style loss divides each Gram matrix by ``C`` and averages the
  19 regions; Eq. (4)-(5) as written is ``~19 * C**2`` larger, and ``lambda_ss = 100`` was tuned for the
  released scale (``"paper"`` gives Eq. 4-5 literally).
* Parsing of the HQ face (style masks, discriminator condition): the ground-truth mask when the batch has one
  (``style_masks="auto"``), else the FPN's parsing of the HQ image (what the released code does; FFHQ, the
  paper's training set, has no masks).

The released code further uses (all off by default, all switchable): a pixel L1 instead of MSE
(``pixel_loss="l1"``), a VGG19 perceptual term of weight 1 (``perceptual_weight=1``), feature matching and the
generator hinge term averaged over the 3 scales instead of summed (``average_scales=True``), and a discriminator
loss halved per scale (not reproduced: Adam is invariant to that scale).

Table 2 ablations: ``use_parsing`` (generator guided by the parsing map: B, D; off: A, C) and
``use_style_loss`` (C, D). Without parsing the discriminator is unconditioned (it sees the image only) and the
exported restorer has a 3-channel style reference (``psfrgan(use_parsing=False)``).
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.errors import BfrzooError
from bfrzoo.interface import NUM_PARSING_CLASSES, to_model_range
from bfrzoo.losses.adversarial import feature_matching_loss, hinge_d_loss, hinge_g_loss
from bfrzoo.models.multiscale_discriminator import MultiScaleDiscriminator
from bfrzoo.models.parsenet import load_parser_weights, onehot_parsing
from bfrzoo.tasks.base import AdversarialTask, Batch
from bfrzoo.tasks.optim import adam

if TYPE_CHECKING:
    from bfrzoo.tasks.protocol import BenchProtocol


class PSFRGANTask(AdversarialTask):
    """PSFR-GAN generator training with a frozen face parsing network; see the module docstring for the losses.

    Args:
        restorer_args: arguments of the ``psfrgan`` factory (generator and parser sizes). ``use_parsing`` is
            set from this task's argument.
        parser_checkpoint: weights of the pre-trained face parsing network: the ``restorer.pt`` (or ``.ckpt``) of
            ``bfrzoo fit --recipe parsenet``, or the authors' ``parse_multi_iter_90000.pth``. ``None`` leaves
            the parser RANDOMLY initialised (tests and CPU demos only; a warning says so).
        use_parsing: guide the generator with the parsing map (Table 2: B and D) or not (A and C).
        use_style_loss: add the semantic-aware style loss L_ss (Table 2: C and D).
        lambda_rec: weight of L_rec, Eq. (6) (10 in Sec. 4.3).
        lambda_ss: weight of L_ss, Eq. (4) (100).
        lambda_adv: weight of L_GAN_G, Eq. (7) (1).
        pixel_loss: the pixel term of Eq. (6): ``"mse"`` (the paper) or ``"l1"`` (the released code).
        perceptual_weight: weight of a VGG19 perceptual L1 term (0 in the paper, 1 in the released code).
        pretrained_losses: ImageNet VGG19 for L_ss and the perceptual term (``False``: random VGG, tests only).
        style_normalization: ``"released"`` or ``"paper"`` scale of L_ss (see the module docstring).
        style_masks: where the HQ parsing (style masks and discriminator condition) comes from: ``"gt"`` (the
            batch's ``mask``, needs ``data.with_masks``), ``"parser"`` (the FPN on the HQ image) or ``"auto"``
            (``gt`` when the batch has masks, else ``parser``).
        average_scales: average the feature matching and generator hinge terms over the discriminator scales
            (the released code) instead of summing them (Eq. 6-7).
        lr: generator learning rate (1e-4).
        lr_d: discriminator learning rate (4e-4).
        betas: Adam betas of both optimizers ((0.5, 0.999)).
        disc_base_ch: channels of the discriminators' first conv (64).
        disc_max_ch: channel cap of the discriminators (1024).
        disc_depth: downsampling layers per discriminator (4; inputs must be >= 3 * 2**(depth + scales - 1)).
        disc_num_scales: discriminator scales (3: 1, 1/2, 1/4).
        **kwargs: the shared task arguments (``ema_decay``, ``metrics``, ``metrics_pretrained``, ``grid_images``,
            ``init_weights`` (a PSFR-GAN ``restorer.pt`` / ``.ckpt``), ``d_every``, ``g_every``, ``lpips_weight``;
            see :class:`~bfrzoo.tasks.base.AdversarialTask`).
    """

    fixed_arguments = ("restorer", "l1_weight")  # set here, not taken (see BfrzooTask.fixed_arguments)

    def __init__(
        self,
        restorer_args: dict[str, Any] | None = None,
        parser_checkpoint: str | None = None,
        use_parsing: bool = True,
        use_style_loss: bool = True,
        lambda_rec: float = 10.0,
        lambda_ss: float = 100.0,
        lambda_adv: float = 1.0,
        pixel_loss: Literal["mse", "l1"] = "mse",
        perceptual_weight: float = 0.0,
        pretrained_losses: bool = True,
        style_normalization: Literal["released", "paper"] = "released",
        style_masks: Literal["auto", "gt", "parser"] = "auto",
        average_scales: bool = False,
        lr: float = 1e-4,
        lr_d: float = 4e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        disc_base_ch: int = 64,
        disc_max_ch: int = 1024,
        disc_depth: int = 4,
        disc_num_scales: int = 3,
        **kwargs: Any,
    ) -> None:
        if pixel_loss not in ("mse", "l1"):
            raise ValueError(f"pixel_loss must be 'mse' or 'l1', got {pixel_loss!r}")
        if style_masks not in ("auto", "gt", "parser"):
            raise ValueError(f"style_masks must be 'auto', 'gt' or 'parser', got {style_masks!r}")
        if lr_d <= 0 or min(lambda_rec, lambda_ss, lambda_adv) < 0:
            raise ValueError("lr_d must be > 0 and the loss weights >= 0")
        args = dict(restorer_args or {})
        if args.get("use_parsing", use_parsing) != use_parsing:
            raise ValueError(
                f"restorer_args.use_parsing={args['use_parsing']} contradicts use_parsing={use_parsing}; set only "
                "the task's use_parsing"
            )
        args["use_parsing"] = use_parsing
        super().__init__(
            restorer="psfrgan", restorer_args=args, lr=lr, betas=betas, l1_weight=0.0,
            perceptual_weight=perceptual_weight, pretrained_losses=pretrained_losses, **kwargs,
        )
        # The face parsing network is a frozen prior (Sec. 3.1): pre-trained weights, no gradients, eval mode.
        if parser_checkpoint:
            load_parser_weights(self.net.parser, parser_checkpoint)
            if self.net_ema is not None:
                self.net_ema.parser.load_state_dict(self.net.parser.state_dict())
        elif not kwargs.get("init_weights") and (use_parsing or (use_style_loss and style_masks != "gt")):
            warnings.warn(
                "PSFRGANTask: no parser_checkpoint, so the face parsing network is RANDOMLY initialised and its "
                "parsing maps are meaningless (fine for tests and CPU demos only). Pre-train it with "
                "`bfrzoo fit --recipe parsenet` and pass --model.parser_checkpoint RUN/restorer.pt, or use the "
                "authors' parse_multi_iter_90000.pth.",
                stacklevel=2,
            )
        for net in (self.net, self.net_ema):
            if net is not None:
                net.parser.requires_grad_(False).eval()

        self.disc = MultiScaleDiscriminator(
            in_ch=3 + (NUM_PARSING_CLASSES if use_parsing else 0), base_ch=disc_base_ch, max_ch=disc_max_ch,
            depth=disc_depth, num_d=disc_num_scales,
        )
        self.style_loss: nn.Module | None = None
        if use_style_loss:
            from bfrzoo.losses.semantic_style import SemanticStyleLoss

            self.style_loss = SemanticStyleLoss(
                num_classes=NUM_PARSING_CLASSES, pretrained=pretrained_losses, normalization=style_normalization
            )
        self._hq_parsing_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def bench_protocol(cls, size: int) -> BenchProtocol:
        """``bfrzoo bench train`` at ``size`` px: a small generator (channels 16-256) and a quarter-width FPN
        (pre-trained within the protocol by the ``parsenet`` recipe, same architecture), a 3-scale discriminator
        of width 32-256 and the deepest depth that ``size`` allows, and the Table 2 rows A (no parsing, no L_ss),
        B (no L_ss) and C (no parsing); the full model is row D."""
        import math

        from bfrzoo.tasks.protocol import BenchProtocol, Prerequisite, Variant

        parser = {"min_feat_size": max(4, size // 16), "base_ch": 16, "res_depth": 10, "ch_range": [16, 64]}
        parser_task = Prerequisite("parser_checkpoint", "parsenet", "parser.pt", {
            "model.init_args.restorer_args": {"in_size": size, "out_size": size, **parser}})
        return BenchProtocol(
            overrides={
                "model.init_args.restorer_args": {
                    "out_size": size, "min_feat_size": 16, "ch_range": [16, 256], "relu_type": "LeakyReLU",
                    **{f"parser_{k}": v for k, v in parser.items()}},
                "model.init_args.disc_base_ch": 32, "model.init_args.disc_max_ch": 256,
                "model.init_args.disc_depth": max(1, int(math.log2(size / 3)) - 2),
            },
            prerequisites=(parser_task,),
            needs=frozenset({"masks"}),
            paper_full={"fid": 30.39},
            variants=(
                Variant("psfrgan_A", {"model.init_args.use_parsing": False, "model.init_args.use_style_loss": False},
                        "PSFR-GAN Table 2: A (baseline with I_L)", {"fid": 47.48}),
                Variant("psfrgan_B", {"model.init_args.use_style_loss": False}, "PSFR-GAN Table 2: B (+ I_P)",
                        {"fid": 32.37}),
                Variant("psfrgan_C", {"model.init_args.use_parsing": False}, "PSFR-GAN Table 2: C (+ L_ss)",
                        {"fid": 34.22}),
            ),
        )

    # ------------------------------------------------------------------------------------------ helpers
    def setup(self, stage: str) -> None:
        super().setup(stage)
        self.check_multiscale_discriminator_fits(self.disc, self.hparams.disc_num_scales, self.hparams.disc_depth)

    def hq_parsing(self, batch: Batch) -> torch.Tensor:
        """One-hot parsing ``(N, 19, H, W)`` float of the HQ face (style masks, discriminator condition): the
        batch's ground-truth ``mask`` or the frozen FPN's argmax on ``hq`` (see ``style_masks``). Computed once
        per batch."""
        hq = batch["hq"]
        if self._hq_parsing_cache is not None and self._hq_parsing_cache[0] is hq:
            return self._hq_parsing_cache[1]
        source = self.hparams.style_masks
        if source == "gt" or (source == "auto" and "mask" in batch):
            if "mask" not in batch:
                raise BfrzooError(
                    "style_masks='gt' needs ground-truth parsing masks: set `data.with_masks: true` "
                    "(--data.with_masks true), or use style_masks='parser'"
                )
            onehot = F.one_hot(batch["mask"].long(), NUM_PARSING_CLASSES).permute(0, 3, 1, 2).to(hq.dtype)
        else:
            self.net.parser.eval()
            with torch.no_grad():
                onehot = onehot_parsing(self.net.parser(to_model_range(hq))[0]).to(hq.dtype)
        self._hq_parsing_cache = (hq, onehot)
        return onehot

    def _disc_input(self, image: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The discriminator's input: ``image`` (N, 3, H, W) in ``[-1, 1]``, with the HQ one-hot parsing
        concatenated when the generator uses parsing."""
        if not self.hparams.use_parsing:
            return image
        return torch.cat([image, self.hq_parsing(batch).to(image.dtype)], dim=1)

    def _scale_mean(self, value: torch.Tensor) -> torch.Tensor:
        return value / self.hparams.disc_num_scales if self.hparams.average_scales else value

    # ------------------------------------------------------------------------------------------ training
    def optimizer_groups(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """Adam on the generator (lr) and on the discriminator (lr_d), Sec. 4.3; the parser is not optimised."""
        hp = self.hparams
        opt_g = adam({"generator": (self.net.generator.parameters(), hp.lr)}, hp.betas)
        return opt_g, adam({"discriminator": (self.disc.parameters(), hp.lr_d)}, hp.betas)

    def discriminator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. (8), hinge, summed over the scales; ``restored`` is detached, ``(N, 3, H, W)`` in ``[-1, 1]``."""
        self.disc.requires_grad_(True)
        hq = to_model_range(batch["hq"])
        real_scores, _ = self.disc(self._disc_input(hq, batch))
        fake_scores, _ = self.disc(self._disc_input(restored, batch))
        loss = hinge_d_loss(real_scores, fake_scores)
        logs = {
            "real_score": torch.stack([s.mean() for s in real_scores]).mean().detach(),
            "fake_score": torch.stack([s.mean() for s in fake_scores]).mean().detach(),
        }
        return loss, logs

    def generator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. (9): ``lambda_rec * L_rec + lambda_ss * L_ss + lambda_adv * L_GAN_G`` (+ the optional perceptual
        term); ``restored`` ``(N, 3, H, W)`` in ``[-1, 1]`` with gradients. The discriminator is not updated by
        this loss (its parameters stop requiring gradients until the next discriminator step)."""
        hp = self.hparams
        self.disc.requires_grad_(False)
        hq = to_model_range(batch["hq"])
        fake_scores, fake_feats = self.disc(self._disc_input(restored, batch))
        with torch.no_grad():
            _, real_feats = self.disc(self._disc_input(hq, batch))
        pixel = F.mse_loss(restored, hq) if hp.pixel_loss == "mse" else F.l1_loss(restored, hq)
        logs: dict[str, torch.Tensor] = {
            "pixel": pixel,
            "feature_matching": self._scale_mean(feature_matching_loss(fake_feats, real_feats)),
            "adv": self._scale_mean(hinge_g_loss(fake_scores)),
        }
        logs["rec"] = logs["pixel"] + logs["feature_matching"]
        loss = hp.lambda_rec * logs["rec"] + hp.lambda_adv * logs["adv"]
        if self.style_loss is not None:
            logs["style"] = self.style_loss(restored, hq, self.hq_parsing(batch))
            loss = loss + hp.lambda_ss * logs["style"]
        extra, extra_logs = self.shared_losses(restored, hq)  # the released code's perceptual term, LPIPS
        logs.update(extra_logs)
        loss = loss + extra
        return loss, {k: v.detach() for k, v in logs.items()}

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        self._hq_parsing_cache = None
        super().on_train_batch_end(outputs, batch, batch_idx)
