"""Multi-scale patch discriminator of PSFR-GAN (Sec. 3.3, Eq. 6-8; after pix2pixHD).

``num_d`` identical patch discriminators see the input at scales 1, 1/2, 1/4 (3x3 average pooling, stride 2,
padding excluded from the average). Each is a 3x3 conv + LeakyReLU followed by ``depth`` (conv, LeakyReLU,
2x2 average pooling) layers with channels ``base_ch * 2**k`` (capped at ``max_ch``) and an unpadded 3x3 score
conv. Spectral norm on every conv (Sec. 3.3). PSFR-GAN conditions it on the parsing map: input =
cat(image, one-hot parsing) = 22 channels. Keys follow the released layout (``D_pool.{s}.model.{k}.conv2d``,
``D_pool.{s}.score_out.conv2d``).

Deviation: the authors did not release discriminator weights and no reference output is available here; the
position of the average pooling (after the conv) is bfrzoo's reading of the released code and only affects
training from scratch.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.blocks.common import ConvNormAct, apply_spectral_norm
from bfrzoo.registry import load_state_dict_strict, register_converter
from bfrzoo.weights import strip_prefix


class PatchDiscriminator(nn.Module):
    """One scale: ``(N, C, H, W)`` -> scores ``(N, 1, H / 2**depth - 2, W / 2**depth - 2)`` plus, on request,
    the ``depth + 1`` intermediate features used by feature matching (Eq. 6)."""

    def __init__(self, in_ch: int = 22, base_ch: int = 64, max_ch: int = 1024, depth: int = 4,
                 norm_type: str = "none", relu_type: str = "LeakyReLU") -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvNormAct(in_ch, base_ch, 3, relu_type=relu_type)]
        c_out = base_ch
        for i in range(depth):
            c_in, c_out = min(base_ch * 2**i, max_ch), min(base_ch * 2 ** (i + 1), max_ch)
            layers.append(ConvNormAct(c_in, c_out, 3, scale="down_avg", norm_type=norm_type, relu_type=relu_type))
        self.model = nn.Sequential(*layers)
        self.score_out = ConvNormAct(c_out, 1, 3, use_pad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for layer in self.model:
            x = layer(x)
            feats.append(x)
        return self.score_out(x), feats


class MultiScaleDiscriminator(nn.Module):
    """``num_d`` patch discriminators on an image pyramid (Eq. 7-8 sum over scales s in {1, 1/2, 1/4}).

    ``forward(x)`` with ``x`` (N, in_ch, H, W) (image in ``[-1, 1]`` concatenated with one-hot parsing) returns
    ``(scores, features)``: ``scores[s]`` (N, 1, h_s, w_s) raw logits, ``features[s]`` a list of ``depth + 1``
    feature maps for Eq. (6). ``H, W`` must be divisible by ``2**(depth + num_d - 1)`` and large enough that
    the smallest scale is at least 3 pixels after pooling.
    """

    def __init__(self, in_ch: int = 22, base_ch: int = 64, max_ch: int = 1024, depth: int = 4, num_d: int = 3,
                 norm_type: str = "none", relu_type: str = "LeakyReLU", spectral_norm: bool = True) -> None:
        super().__init__()
        self.D_pool = nn.ModuleList(
            PatchDiscriminator(in_ch, base_ch, max_ch, depth, norm_type, relu_type) for _ in range(num_d)
        )
        self.min_size = 3 * 2 ** (depth + num_d - 1)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        if x.shape[-1] < self.min_size or x.shape[-2] < self.min_size:
            raise ValueError(
                f"MultiScaleDiscriminator needs inputs of at least {self.min_size}x{self.min_size}, got "
                f"{tuple(x.shape[-2:])}; use fewer scales (num_d) or a smaller depth"
            )
        scores, feats = [], []
        for i, d in enumerate(self.D_pool):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            s, f = d(x)
            scores.append(s)
            feats.append(f)
        return scores, feats


@register_converter("psfrgan_discriminator")
def convert_psfrgan_discriminator(state_dict: Mapping[str, torch.Tensor], **arch_kwargs: object) -> MultiScaleDiscriminator:
    """Build a :class:`MultiScaleDiscriminator` from a PSFR-GAN ``net_D`` state dict (identical keys)."""
    net = MultiScaleDiscriminator(**arch_kwargs)  # type: ignore[arg-type]
    state = strip_prefix(state_dict)
    load_state_dict_strict(net, state, source="PSFR-GAN discriminator checkpoint")
    return net.eval()
