"""Spatially adaptive style transformation (PSFR-GAN Sec. 3.1, Eq. 2-3; after SPADE / GauGAN).

A feature map is instance-normalised and re-styled by a per-pixel scale and shift predicted from a reference
(for PSFR-GAN: the LQ image concatenated with its one-hot parsing map, 3 + 19 = 22 channels) resized to the
feature's size with bicubic interpolation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.blocks.common import ActLayer


class StyleTransform(nn.Module):
    """The style transformation block Phi_ST of PSFR-GAN, Eq. (2)-(3).

    ``y = Psi(ref)`` with Psi = conv(ref_ch -> hidden) + LeakyReLU(0.2), then two convs giving
    ``gamma`` (y_s) and ``beta`` (y_b); ``out = gamma * (x - mu(x)) / sigma(x) + beta`` with per-sample,
    per-channel statistics (``InstanceNorm2d``, no affine parameters, eps 1e-5).

    Note: the scale is ``gamma`` itself, as in Eq. (3) and the released PSFR-GAN weights, not SPADE's
    ``1 + gamma``.

    Args:
        channels: channels of the feature map ``x``.
        ref_channels: channels of the reference (22 for LQ RGB + 19 parsing classes).
        hidden: channels of Psi's shared hidden layer (64 in the paper's code).
        kernel_size: kernel of Psi's convs.
    """

    def __init__(self, channels: int, ref_channels: int, hidden: int = 64, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.param_free_norm = nn.InstanceNorm2d(channels, affine=False)
        self.conv1 = nn.Sequential(nn.Conv2d(ref_channels, hidden, kernel_size, 1, pad), nn.LeakyReLU(0.2))
        self.gamma_conv = nn.Conv2d(hidden, channels, kernel_size, 1, pad)
        self.beta_conv = nn.Conv2d(hidden, channels, kernel_size, 1, pad)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, h, w), ``ref`` (N, ref_channels, H, W) at any size -> (N, C, h, w)."""
        if ref.shape[-2:] != x.shape[-2:]:
            ref = F.interpolate(ref, size=x.shape[-2:], mode="bicubic", align_corners=False)
        hidden = self.conv1(ref)
        return self.param_free_norm(x) * self.gamma_conv(hidden) + self.beta_conv(hidden)


class StyleTransformResBlock(nn.Module):
    """Residual block with a style transformation before each conv:
    ``x + conv_1(act(ST_1(conv_0(act(ST_0(x, ref))), ref)))``. ``(N, C, H, W) -> (N, C, H, W)``.

    Args:
        channels: feature channels (kept).
        ref_channels: reference channels.
        relu_type: activation name (see :class:`bfrzoo.blocks.common.ActLayer`).
        hidden: Psi's hidden channels.
    """

    def __init__(self, channels: int, ref_channels: int, relu_type: str = "LeakyReLU", hidden: int = 64) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm_0 = StyleTransform(channels, ref_channels, hidden)
        self.norm_1 = StyleTransform(channels, ref_channels, hidden)
        self.relu = ActLayer(channels, relu_type)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        res = self.conv_0(self.relu(self.norm_0(x, ref)))
        res = self.conv_1(self.relu(self.norm_1(res, ref)))
        return x + res
