"""Training losses shared by the zoo's models.

- adversarial: hinge (PSFR-GAN Eq. 7-8) and non-saturating logistic (StyleGAN2 / GPEN Eq. 1) losses, R1,
  discriminator feature matching (PSFR-GAN Eq. 6, GPEN Eq. 3).
- perceptual: VGG feature L1/L2 and the Gram-matrix style loss (VGG16 / VGG19 / VGGFace, :mod:`bfrzoo.losses.vgg`).
- semantic_style: the semantic-aware style loss of PSFR-GAN (Eq. 4-5).
- identity: the ArcFace identity (face preserving) loss of the MMRB network (Eq. 15).
"""
from __future__ import annotations

from bfrzoo.losses.adversarial import (
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    logistic_d_loss,
    logistic_d_loss_lazy_r1,
    logistic_g_loss,
    r1_penalty,
)
from bfrzoo.losses.identity import ARCFACE_IR_SE50, IdentityLoss
from bfrzoo.losses.perceptual import LPIPSLoss, PerceptualLoss, StyleLoss, gram_matrix
from bfrzoo.losses.semantic_style import SemanticStyleLoss, masked_gram, region_masks, semantic_style_loss
from bfrzoo.losses.vgg import VGG_CONFIGS, VGG19Features, VGGFeatures

__all__ = [
    "ARCFACE_IR_SE50",
    "IdentityLoss",
    "LPIPSLoss",
    "PerceptualLoss",
    "SemanticStyleLoss",
    "StyleLoss",
    "VGG19Features",
    "VGGFeatures",
    "VGG_CONFIGS",
    "gram_matrix",
    "feature_matching_loss",
    "hinge_d_loss",
    "hinge_g_loss",
    "logistic_d_loss",
    "logistic_d_loss_lazy_r1",
    "logistic_g_loss",
    "masked_gram",
    "r1_penalty",
    "region_masks",
    "semantic_style_loss",
]
