"""Perceptual loss (Johnson et al., 2016): weighted L1 distances of frozen VGG19 features.

Used by the U-Net baseline (``perceptual_weight``) and the models whose papers add a VGG term. The VGG19 weights
resolve through :class:`bfrzoo.losses.vgg.VGG19Features` (explicit file > cache > download, one clear error offline).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bfrzoo.losses.vgg import VGG19Features

#: The layers and weights of the common BFR setting (conv1_2 .. conv5_4 ReLUs, as in ESRGAN/GFPGAN-style training).
DEFAULT_LAYERS: Mapping[str, float] = {"relu1_2": 0.1, "relu2_2": 0.1, "relu3_4": 1.0, "relu4_4": 1.0, "relu5_4": 1.0}


class PerceptualLoss(nn.Module):
    """``sum_l w_l * mean|phi_l(x) - phi_l(y)|`` for ``x``, ``y`` ``(N, 3, H, W)`` in ``[-1, 1]``.

    Args:
        layer_weights: VGG19 ReLU layer -> weight.
        pretrained: ``True`` (ImageNet weights, resolved), ``False`` (random: tests only) or a weight-file path.
    """

    def __init__(self, layer_weights: Mapping[str, float] = DEFAULT_LAYERS, pretrained: bool | str | Path = True) -> None:
        super().__init__()
        self.layer_weights = dict(layer_weights)
        self.vgg = VGG19Features(tuple(self.layer_weights), pretrained=pretrained, input_range=(-1.0, 1.0))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.vgg(x)
        with torch.no_grad():
            fy = self.vgg(y)
        return sum(w * (fx[name] - fy[name]).abs().mean() for name, w in self.layer_weights.items())
