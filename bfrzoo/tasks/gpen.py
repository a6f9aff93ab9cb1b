"""GPEN fine-tuning (Yang et al., CVPR 2021, Sec. 3.3 and 4.2): the GAN prior embedded in a U-shaped network.

The pre-trained StyleGAN2 prior (:class:`bfrzoo.tasks.stylegan2_prior.StyleGAN2PriorTask`, ``prior.pt``) becomes
the decoder of :class:`bfrzoo.models.gpen.GPEN`; the whole network is then fine-tuned on synthesised LQ-HQ pairs
(degradation Eq. (4), ``data.preset: gpen``) with

    L_A = E[log(1 + exp(-D(G(X~))))]                                     (1)  non-saturating logistic
    L_F = E[sum_{i=0..T} || D^i(X) - D^i(G(X~)) ||_2]                    (2)  discriminator feature matching
    L   = L_A + alpha * L_C + beta * L_F,    alpha = 1, beta = 0.02       (3)

where ``L_C`` is the L1 distance between the output and the HQ image. The discriminator minimises the logistic
loss ``E[softplus(-D(X))] + E[softplus(D(G(X~)))]`` plus a lazy R1 penalty (the StyleGAN2 regulariser the prior was
trained with; the paper does not list it for fine-tuning, ``r1_gamma: 0`` turns it off). Adam, batch 1,
``LR_encoder = 0.002`` and ``LR_encoder : LR_decoder : LR_discriminator = 100 : 10 : 1`` (Sec. 4.2): ``lr`` is
the encoder's rate, the decoder (the embedded GAN, mapping network included) gets ``lr / 10`` and the
discriminator ``lr / 100``.

Choices the paper leaves open, each an argument: ``L_F`` per layer as the mean squared difference
(``feature_loss="l2"``, the squared form of the norm in Eq. (2), normalised by the number of elements so the
layers of different size weigh alike) or the mean absolute difference (``"l1"``); the real features are
detached. Adam betas (0, 0.99) as in StyleGAN2 (the paper gives none).

Table 1 ablations: ``freeze_prior=True`` (GPEN-w/o-ft: the embedded GAN is not updated, only the encoder and the
discriminator learn), ``restorer_args.noise_mode: none`` (GPEN-w/o-noise) and ``add`` (GPEN-noise-add); the prior
must have been pre-trained with the same noise mode.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

from bfrzoo.blocks.stylegan2 import Discriminator
from bfrzoo.errors import BfrzooError
from bfrzoo.interface import to_model_range
from bfrzoo.losses.adversarial import logistic_d_loss_lazy_r1, logistic_g_loss
from bfrzoo.models.gan_prior import discriminator_width, load_gan_prior, read_gan_prior
from bfrzoo.tasks.base import AdversarialTask, Batch
from bfrzoo.tasks.optim import adam

if TYPE_CHECKING:
    from bfrzoo.tasks.protocol import BenchProtocol

#: LR_encoder : LR_decoder : LR_discriminator of Sec. 4.2.
LR_RATIOS: tuple[float, float, float] = (100.0, 10.0, 1.0)


class GPENTask(AdversarialTask):
    """GPEN fine-tuning with Eq. (3); see the module docstring.

    Args:
        restorer: a registered GPEN (``gpen_256``, ``gpen_512``, ``gpen_1024`` or ``gpen`` of any size).
        restorer_args: its arguments (``noise_mode`` for the Table 1 ablations; size/width for ``gpen``).
        prior_checkpoint: the pre-trained GAN prior (``prior.pt`` or ``.ckpt`` of ``bfrzoo fit --recipe
            stylegan2_prior``) embedded as the decoder, its discriminator as D. ``None``: decoder and D start from
            random weights (tests and CPU demos only; a warning says so).
        freeze_prior: GPEN-w/o-ft (Table 1): the embedded GAN is kept fixed, only the encoder is optimised.
        alpha: weight of the L1 content loss L_C, Eq. (3) (1).
        beta: weight of the feature-matching loss L_F, Eq. (2)-(3) (0.02).
        feature_loss: per-layer distance of L_F: ``"l2"`` (mean squared) or ``"l1"`` (mean absolute).
        lr: LR_encoder (0.002, Sec. 4.2); the decoder gets ``lr / 10``, the discriminator ``lr / 100``.
        betas: Adam betas of all three groups ((0, 0.99), StyleGAN2's; not given in the paper).
        r1_gamma: R1 weight on the discriminator (10; 0 = off).
        d_reg_every: lazy R1 interval in discriminator steps (16).
        **kwargs: the shared task arguments (``ema_decay``: the paper mentions no EMA, ``metrics``,
            ``metrics_pretrained``, ``grid_images``, ``init_weights``, ``d_every``, ``g_every``, the optional
            ``perceptual_weight`` / ``lpips_weight``; see :class:`~bfrzoo.tasks.base.AdversarialTask`).
    """

    fixed_arguments = ("l1_weight",)  # set here, not taken (see BfrzooTask.fixed_arguments)

    checkpointed_counters = ("_d_steps",)

    def __init__(
        self,
        restorer: str = "gpen_512",
        restorer_args: dict[str, Any] | None = None,
        prior_checkpoint: str | None = None,
        freeze_prior: bool = False,
        alpha: float = 1.0,
        beta: float = 0.02,
        feature_loss: Literal["l2", "l1"] = "l2",
        lr: float = 0.002,
        betas: tuple[float, float] = (0.0, 0.99),
        r1_gamma: float = 10.0,
        d_reg_every: int = 16,
        **kwargs: Any,
    ) -> None:
        if feature_loss not in ("l2", "l1"):
            raise ValueError(f"feature_loss must be 'l2' or 'l1', got {feature_loss!r}")
        if min(alpha, beta, r1_gamma) < 0 or d_reg_every < 1:
            raise ValueError("alpha, beta and r1_gamma must be >= 0 and d_reg_every >= 1")
        super().__init__(restorer=restorer, restorer_args=restorer_args, lr=lr, betas=betas, l1_weight=alpha, **kwargs)
        if not hasattr(self.net, "generator") or not hasattr(self.net, "encoder"):
            raise BfrzooError(f"GPENTask trains a GPEN restorer (gpen, gpen_256, gpen_512, gpen_1024), got {restorer!r}")
        cm, narrow = discriminator_width(self.net.generator)
        # GPEN's discriminator: StyleGAN2's residual D, minibatch-stddev over the whole batch.
        self.disc = Discriminator(self.net.input_size, cm, narrow, stddev_group=None)
        if prior_checkpoint:
            load_gan_prior(self.net.generator, read_gan_prior(prior_checkpoint), self.disc)
            self.sync_ema()
        elif not kwargs.get("init_weights"):
            warnings.warn(
                "GPENTask: no prior_checkpoint, so the embedded GAN prior and the discriminator start from RANDOM "
                "weights (fine for tests and CPU demos only). Pre-train the prior with `bfrzoo fit --recipe "
                "stylegan2_prior` and pass --model.prior_checkpoint RUN/prior.pt.",
                stacklevel=2,
            )
        if freeze_prior:
            self.net.freeze_prior(True)
        self._d_steps = 0

    @classmethod
    def bench_protocol(cls, size: int) -> BenchProtocol:
        """``bfrzoo bench train`` at ``size`` px: a GPEN of that size (style_dim 128, n_mlp 4, channel multiplier 1,
        narrow 0.25), its StyleGAN2 prior pre-trained within the protocol with the same generator, and the Table 1
        ablations (GPEN-w/o-ft, GPEN-w/o-noise, GPEN-noise-add; the noise variants with a prior of their noise mode)."""
        from bfrzoo.tasks.protocol import BenchProtocol, Prerequisite, Variant

        arch = {"size": size, "style_dim": 128, "n_mlp": 4, "channel_multiplier": 1, "narrow": 0.25}
        prior = Prerequisite("prior_checkpoint", "stylegan2_prior", "prior.pt",
                             {f"model.init_args.{k}": v for k, v in {**arch, "noise_mode": "concat"}.items()})
        return BenchProtocol(
            overrides={"model.init_args.restorer": "gpen",
                       "model.init_args.restorer_args": {**arch, "noise_mode": "concat"}},
            prerequisites=(prior,),
            paper_full={"psnr": 20.80, "fid": 31.72, "lpips": 0.346},
            variants=(
                Variant("gpen_wo_ft", {"model.init_args.freeze_prior": True}, "GPEN Table 1: GPEN-w/o-ft",
                        {"psnr": 12.55, "fid": 92.71, "lpips": 0.653}),
                Variant("gpen_wo_noise", {"model.init_args.restorer_args": {"noise_mode": "none"}},
                        "GPEN Table 1: GPEN-w/o-noise", {"psnr": 13.30, "fid": 95.62, "lpips": 0.709},
                        {"stylegan2_prior": {"model.init_args.noise_mode": "none"}}),
                Variant("gpen_noise_add", {"model.init_args.restorer_args": {"noise_mode": "add"}},
                        "GPEN Table 1: GPEN-noise-add", {"psnr": 20.71, "fid": 34.26, "lpips": 0.359},
                        {"stylegan2_prior": {"model.init_args.noise_mode": "add"}}),
            ),
        )

    # ------------------------------------------------------------------------------------------ helpers
    def optimizer_groups(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """Adam with ``LR_encoder : LR_decoder : LR_discriminator = 100 : 10 : 1`` (Sec. 4.2).

        The generator optimizer has two parameter groups, ``encoder`` (encoder + ``final_linear``, ``lr``) and
        ``decoder`` (the embedded GAN, ``lr / 10``; absent with ``freeze_prior``); the discriminator's has one
        (``lr / 100``). Unlike :class:`~bfrzoo.tasks.stylegan2_prior.StyleGAN2PriorTask`, the discriminator's
        rate and betas are NOT corrected for the lazy R1 (StyleGAN2's ``c = k / (k + 1)``, 16/17 here), so the
        ratio of Sec. 4.2 holds exactly; the correction would lower the discriminator's rate by 6%."""
        hp = self.hparams
        enc, dec, dis = (hp.lr * r / LR_RATIOS[0] for r in LR_RATIOS)
        generator = {"encoder": ([*self.net.encoder.parameters(), *self.net.final_linear.parameters()], enc)}
        if not hp.freeze_prior:
            generator["decoder"] = (self.net.generator.parameters(), dec)
        return adam(generator, hp.betas), adam({"discriminator": (self.disc.parameters(), dis)}, hp.betas)

    def _feature_distance(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(fake, real) if self.hparams.feature_loss == "l2" else F.l1_loss(fake, real)

    # ------------------------------------------------------------------------------------------ losses
    def discriminator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``E[softplus(-D(X))] + E[softplus(D(G(X~)))]`` (the D side of Eq. 1) on ``hq`` vs the detached
        ``restored`` ``(N, 3, S, S)`` in ``[-1, 1]``; every ``d_reg_every`` steps ``+ gamma / 2 * R1 * d_reg_every``."""
        hp = self.hparams
        hq = to_model_range(batch["hq"])
        loss, logs = logistic_d_loss_lazy_r1(self.disc, hq, restored, hp.r1_gamma, hp.d_reg_every, self._d_steps)
        self._d_steps += 1
        return loss, logs

    def generator_loss(self, batch: Batch, restored: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. (3): ``L_A + alpha * L_C + beta * L_F`` for ``restored`` ``(N, 3, S, S)`` in ``[-1, 1]`` with
        gradients. D's parameters stop requiring gradients until the next D step (D is not updated by L)."""
        hp = self.hparams
        self.disc.requires_grad_(False)
        hq = to_model_range(batch["hq"])
        fake_pred, fake_feats = self.disc.forward_with_features(restored)
        with torch.no_grad():
            _, real_feats = self.disc.forward_with_features(hq)
        logs = {
            "adv": logistic_g_loss(fake_pred),  # L_A, Eq. (1)
            "content": F.l1_loss(restored, hq),  # L_C
            "feature": sum(self._feature_distance(f, r) for f, r in zip(fake_feats, real_feats, strict=True)),  # L_F, Eq. (2)
        }
        extra, extra_logs = self.shared_losses(restored, hq)  # optional perceptual / LPIPS terms (off in the paper)
        logs.update(extra_logs)
        loss = logs["adv"] + hp.alpha * logs["content"] + hp.beta * logs["feature"] + extra
        return loss, {k: v.detach() for k, v in logs.items()}
