"""Adversarial losses shared by the GAN-trained restorers (PSFR-GAN, GPEN), and discriminator feature matching.

Every function takes raw discriminator logits: one tensor, or a list of tensors (one per scale of a multi-scale
discriminator), in which case the per-scale means are summed, as in Eq. (7)-(8) of the PSFR-GAN paper.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Scores = torch.Tensor | Sequence[torch.Tensor]


def _scales(scores: Scores) -> list[torch.Tensor]:
    return [scores] if isinstance(scores, torch.Tensor) else list(scores)


def hinge_d_loss(real: Scores, fake: Scores) -> torch.Tensor:
    """Discriminator hinge loss, PSFR-GAN Eq. (8): ``sum_s E[max(0, 1 - D_s(real))] + E[max(0, 1 + D_s(fake))]``."""
    return sum(F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean() for r, f in zip(_scales(real), _scales(fake), strict=True))


def hinge_g_loss(fake: Scores) -> torch.Tensor:
    """Generator hinge loss, PSFR-GAN Eq. (7): ``sum_s -E[D_s(fake)]``."""
    return sum(-f.mean() for f in _scales(fake))


def logistic_d_loss(real: Scores, fake: Scores) -> torch.Tensor:
    """Non-saturating logistic D loss (StyleGAN2 / GPEN): ``sum_s E[softplus(-D(real))] + E[softplus(D(fake))]``."""
    return sum(F.softplus(-r).mean() + F.softplus(f).mean() for r, f in zip(_scales(real), _scales(fake), strict=True))


def logistic_g_loss(fake: Scores) -> torch.Tensor:
    """Non-saturating logistic G loss (StyleGAN2 / GPEN): ``sum_s E[softplus(-D(fake))]``."""
    return sum(F.softplus(-f).mean() for f in _scales(fake))


def r1_penalty(real_scores: Scores, real_images: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty (Mescheder et al. 2018): ``E[||grad_x D(x)||^2]`` on real images.

    ``real_images`` must have ``requires_grad=True`` and ``real_scores`` be computed from them. Multiply by
    ``gamma / 2`` (and by the lazy-regularisation interval) in the training step.
    """
    if not real_images.requires_grad:
        raise ValueError("r1_penalty needs real_images.requires_grad_(True) before the discriminator forward")
    total = sum(s.sum() for s in _scales(real_scores))
    (grad,) = torch.autograd.grad(total, real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def feature_matching_loss(
    fake_feats: Sequence[Sequence[torch.Tensor]], real_feats: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """Multi-scale discriminator feature matching, the second term of PSFR-GAN Eq. (6):
    ``sum_s sum_k MSE(D_s^k(fake), D_s^k(real))`` with the real features detached.

    ``*_feats[s][k]``: the ``k``-th feature map of the discriminator at scale ``s``
    (:class:`bfrzoo.models.multiscale_discriminator.MultiScaleDiscriminator` returns them).
    """
    total = torch.zeros(())
    for fs, rs in zip(fake_feats, real_feats, strict=True):
        for f, r in zip(fs, rs, strict=True):
            total = total.to(f.device) + F.mse_loss(f, r.detach())
    return total


def logistic_d_loss_lazy_r1(
    disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, r1_gamma: float, d_reg_every: int, step: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """StyleGAN2's discriminator objective (Karras et al. 2020, appendix B), shared by the prior and GPEN.

    ``E[softplus(-D(real))] + E[softplus(D(fake))]`` on ``real`` and the detached ``fake`` ``(N, 3, S, S)`` in
    ``[-1, 1]``, plus the lazy R1 penalty ``gamma / 2 * E[||grad_x D(x)||^2] * d_reg_every`` when
    ``r1_gamma > 0`` and ``step % d_reg_every == 0``. Turns D's gradients back on (the generator step turns them
    off). Returns the loss and the detached terms to log (``adv``, ``real_score``, ``fake_score``, ``r1``).
    """
    disc.requires_grad_(True)
    real_pred, fake_pred = disc(real), disc(fake)
    loss = logistic_d_loss(real_pred, fake_pred)
    logs = {"adv": loss.detach(), "real_score": real_pred.mean().detach(), "fake_score": fake_pred.mean().detach()}
    if r1_gamma > 0 and step % d_reg_every == 0:
        real_r = real.detach().requires_grad_(True)
        pred = disc(real_r)
        r1 = r1_penalty(pred, real_r)
        loss = loss + r1_gamma / 2 * r1 * d_reg_every + 0 * pred[0, 0]
        logs["r1"] = r1.detach()
    return loss, logs
