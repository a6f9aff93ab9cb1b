"""A plain U-Net: the no-prior reference row of every bfrzoo benchmark table.

Not from any of the four papers: a standard encoder-decoder with skip connections (Ronneberger et al., 2015),
residual conv blocks with GroupNorm and SiLU, strided-conv downsampling and nearest-neighbour upsampling, and a
global residual (the network predicts ``hq - lq``), so an untrained network starts at the identity.
"""
from __future__ import annotations

import torch
from torch import nn

from bfrzoo.registry import register_restorer


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResBlock(nn.Module):
    """``x + conv(act(norm(conv(act(norm(x))))))`` with a 1x1 projection when the channel count changes."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(in_ch), in_ch),
            nn.SiLU(),
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.GroupNorm(_groups(out_ch), out_ch),
            nn.SiLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
        )
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class UNet(nn.Module):
    """U-Net restorer: ``(N, 3, H, W)`` in ``[-1, 1]`` -> ``(N, 3, H, W)`` in ``[-1, 1]``.

    Args:
        base_channels: channels at full resolution; doubled at each level up to ``max_channels``.
        depth: number of 2x downsamplings; ``H`` and ``W`` must be divisible by ``2**depth`` (``size_divisor``).
        max_channels: channel cap.
        blocks_per_level: residual blocks per level on each side.
    """

    input_size: int | None = None

    def __init__(self, base_channels: int = 32, depth: int = 4, max_channels: int = 256, blocks_per_level: int = 1) -> None:
        super().__init__()
        if base_channels < 1 or depth < 1 or blocks_per_level < 1:
            raise ValueError("base_channels, depth and blocks_per_level must be >= 1")
        self.size_divisor = 2**depth
        chans = [min(base_channels * 2**i, max_channels) for i in range(depth + 1)]
        self.stem = nn.Conv2d(3, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.encoders = nn.ModuleList()
        for i in range(depth):
            self.encoders.append(nn.Sequential(*[ResBlock(chans[i], chans[i]) for _ in range(blocks_per_level)]))
            self.down.append(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1))
        self.middle = nn.Sequential(*[ResBlock(chans[depth], chans[depth]) for _ in range(blocks_per_level)])
        self.up = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in reversed(range(depth)):
            self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(chans[i + 1], chans[i], 3, padding=1)))
            blocks = [ResBlock(2 * chans[i], chans[i])] + [ResBlock(chans[i], chans[i]) for _ in range(blocks_per_level - 1)]
            self.decoders.append(nn.Sequential(*blocks))
        self.head = nn.Sequential(nn.GroupNorm(_groups(chans[0]), chans[0]), nn.SiLU(), nn.Conv2d(chans[0], 3, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(
                f"UNet input {h}x{w} is not divisible by {self.size_divisor}; pad it (bfrzoo.interface.Restorer does)"
            )
        feat = self.stem(x)
        skips = []
        for enc, down in zip(self.encoders, self.down):
            feat = enc(feat)
            skips.append(feat)
            feat = down(feat)
        feat = self.middle(feat)
        for up, dec in zip(self.up, self.decoders):
            feat = dec(torch.cat([up(feat), skips.pop()], dim=1))
        out = x + self.head(feat)
        # Clamp only outside training: a clamp would zero the gradient of pixels that overshoot.
        return out if self.training else out.clamp(-1.0, 1.0)


@register_restorer("unet", tiny=dict(base_channels=8, depth=2, max_channels=16))
def unet(base_channels: int = 32, depth: int = 4, max_channels: int = 256, blocks_per_level: int = 1) -> UNet:
    """Plain U-Net baseline (no face prior); any size divisible by 2**depth."""
    return UNet(base_channels=base_channels, depth=depth, max_channels=max_channels, blocks_per_level=blocks_per_level)
