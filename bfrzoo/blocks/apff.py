"""The fusion blocks of MPCNet (Teng, Yu & Wu, Front. Neurorobot. 2022, Sec. 3.3, Fig. 4): AdaIN, SFT, RCAB and the
adaptive prior feature fusion block APFF that combines them. Each block is usable alone.

* :class:`AdaIN` (Huang & Belongie 2017; MPCNet Eq. 4) re-styles content features with the per-channel mean and
  standard deviation of style features. (The paper's text swaps the names of mean and SD; its formula, and this
  code, is standard AdaIN.)
* :class:`SFT` (Wang et al., CVPR 2018; MPCNet Eq. 5-6): ``alpha * x + beta`` with ``(alpha, beta)`` predicted per
  pixel from a condition (MPCNet: the parsing prior's features).
* :class:`RCAB` (Zhang et al., ECCV 2018, RCAN): ``x + CA(conv(ReLU(conv(x))))``, the channel attention CA being a
  squeeze-excitation (``timm.layers.SEModule``, reduction 16).
* :class:`APFF` (MPCNet Eq. 4-7): cascaded RCABs on the decoder's spatial features, AdaIN of the GAN prior's
  features to them, ``f_conv1`` / ``f_conv2`` giving ``F_g1, F_g2, F_s1, F_s2``, SFT of ``Concat[F_g1, F_s1]`` by the
  parsing features into the guide ``F_guide``, and the gate ``F_out = (F_g2 - F_s2) * softmax(F_guide) + F_s2``.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

GateDim = Literal["channel", "spatial"]


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``sigma(style) * (content - mu(content)) / sigma(content) + mu(style)``, MPCNet Eq. (4).

    ``content (N, C, H, W)`` and ``style (N, C, H', W')``: mean and standard deviation per sample and channel over
    the spatial positions (biased variance, ``eps`` added before the square root, as instance norm).
    """
    if content.shape[:2] != style.shape[:2]:
        raise ValueError(f"AdaIN needs the same (N, C) for content and style, got {tuple(content.shape)} and {tuple(style.shape)}")
    c_mean, c_std = _moments(content, eps)
    s_mean, s_std = _moments(style, eps)
    return s_std * (content - c_mean) / c_std + s_mean


def _moments(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
    return mean.to(x.dtype), (var + eps).sqrt().to(x.dtype)


class AdaIN(nn.Module):
    """Adaptive instance normalisation, MPCNet Eq. (4): ``forward(content (N, C, H, W), style (N, C, H', W'))`` ->
    ``(N, C, H, W)`` with the per-channel mean and SD of ``style``. No parameters (see :func:`adain`)."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return adain(content, style, self.eps)


class SFT(nn.Module):
    """Spatial feature transform, MPCNet Eq. (5)-(6): ``(alpha, beta) = f(cond)``, ``out = alpha * x + beta``.

    ``f`` is two small conv branches (conv -> LeakyReLU(0.1) -> conv, as SFT-GAN's condition layers), one for the
    scale ``alpha`` and one for the shift ``beta``. Eq. (6) multiplies by ``alpha`` itself (SFT-GAN's code by
    ``alpha + 1``); bfrzoo keeps Eq. (6) and, with ``init_identity``, initialises the last conv of the ``alpha``
    branch to weight 0, bias 1 and that of ``beta`` to 0, so a new SFT is the identity and the condition's influence
    is learned (a network that spectrally normalises these convs needs ``init_identity=False``: a zero weight has
    no spectral norm; the biases still start at 1 and 0).

    Shapes: ``x (N, channels, H, W)``, ``cond (N, cond_channels, H', W')`` (resized bilinearly to ``H, W`` when
    they differ) -> ``(N, channels, H, W)``.

    Args:
        channels: channels of the modulated features (MPCNet: ``C_g1 + C_s1``).
        cond_channels: channels of the condition (MPCNet: the parsing features ``F_parse^j``).
        hidden: channels of each branch's hidden layer (default: ``cond_channels``).
        kernel_size: of the branch convs (3: the parsing features are spatial maps).
        init_identity: start as the identity (see above).
    """

    def __init__(
        self, channels: int, cond_channels: int, hidden: int | None = None, kernel_size: int = 3,
        init_identity: bool = True,
    ) -> None:
        super().__init__()
        hidden = hidden or cond_channels
        pad = kernel_size // 2

        def branch(bias: float) -> nn.Sequential:
            last = nn.Conv2d(hidden, channels, kernel_size, padding=pad)
            if init_identity:
                nn.init.zeros_(last.weight)
            nn.init.constant_(last.bias, bias)
            return nn.Sequential(nn.Conv2d(cond_channels, hidden, kernel_size, padding=pad), nn.LeakyReLU(0.1), last)

        self.scale = branch(1.0)
        self.shift = branch(0.0)

    @staticmethod
    def modulate(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """Eq. (6): ``alpha (x) x + beta`` (element-wise; ``alpha``, ``beta`` broadcast to ``x``)."""
        return alpha * x + beta

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[-2:] != x.shape[-2:]:
            cond = F.interpolate(cond, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.modulate(x, self.scale(cond), self.shift(cond))


class RCAB(nn.Module):
    """Residual channel attention block of RCAN (Zhang et al., ECCV 2018, Sec. 3.3):
    ``x + CA(conv3x3(ReLU(conv3x3(x))))`` with CA a squeeze-excitation of reduction ``reduction`` (avg-pool ->
    1x1 conv -> ReLU -> 1x1 conv -> sigmoid gate), taken from ``timm.layers.SEModule``. ``(N, C, H, W)`` -> same."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        from timm.layers import SEModule

        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1),
            SEModule(channels, rd_ratio=1.0 / reduction, rd_divisor=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class APFF(nn.Module):
    """Adaptive prior feature fusion block, MPCNet Sec. 3.3 and Fig. 4, Eq. (4)-(7).

    ``forward(spatial (N, C, H, W), gan (N, C_gan, H, W) | None, parse (N, C_parse, H', W') | None)`` ->
    ``(N, C, H, W)``:

    1. ``F_s = RCAB^k(spatial)`` (``num_rcab`` cascaded RCABs);
    2. ``F_g = AdaIN(gan, F_s)`` (Eq. 4; the GAN prior's features re-styled by the spatial features' statistics,
       so ``C_gan == C``); ``F_g1 = f_conv1(F_g)`` (3x3, ``C -> C/2``: "reduce the channel numbers"),
       ``F_g2 = f_conv2(F_g)`` (3x3, ``C -> C``: "refine features"); ``F_s1``, ``F_s2`` "by the same process" from
       ``F_s`` with their own convs;
    3. ``F_guide = SFT(Concat[F_g1, F_s1] | alpha, beta = f(parse))`` (Eq. 5-6), ``C`` channels;
    4. ``F_out = (F_g2 - F_s2) * softmax(F_guide) + F_s2`` (Eq. 7).

    The softmax of Eq. (7) runs over the CHANNELS at each pixel by default (``gate="channel"``): the guide has the
    shape of the features it gates, so the softmax must keep that shape; over channels each pixel gets a convex
    weighting of which feature channels take the GAN correction ``F_g2 - F_s2``, a per-pixel "semantic-guided map",
    and its scale does not depend on the image size. ``gate="spatial"`` (a softmax over the ``H * W`` positions of
    each channel) is the other reading; its weights shrink as ``1 / (H W)`` (about 4e-6 at 512 px).

    Ablations of Table 1 (each removes exactly its part):

    * ``use_gan=False`` (w/o GAN prior, hence also w/o AdaIN): no GAN branch; ``F_g1 = F_g2 = 0``, so Eq. (7)
      becomes ``F_out = F_s2 * (1 - softmax(F_guide))`` and the guide is ``SFT(Concat[0, F_s1])``;
    * ``use_adain=False``: ``F_g = gan`` unchanged;
    * ``use_parsing=False`` (w/o parsing prior, hence also w/o SFT): ``F_guide = Concat[F_g1, F_s1]`` (SFT with
      ``alpha = 1``, ``beta = 0``);
    * ``use_sft=False`` with the parsing prior kept: the parsing features are concatenated instead and fused by a
      1x1 conv, ``F_guide = conv1x1(Concat[F_g1, F_s1, parse])`` (the "direct concatenation" the paper contrasts
      APFF with).

    Args:
        channels: ``C``, channels of the spatial features and of the output (even).
        parse_channels: ``C_parse`` of the parsing features (ignored without the parsing prior).
        num_rcab: RCABs cascaded on the spatial features (the paper: "cascading RCABs", count not given: 2).
        reduction: channel-attention reduction of the RCABs (16, RCAN's).
        gate: ``"channel"`` or ``"spatial"``: the dimension of Eq. (7)'s softmax (see above).
        use_gan / use_adain / use_parsing / use_sft: the switches above.
        sft_init_identity: passed to :class:`SFT` (``False`` when the block is spectrally normalised).
    """

    def __init__(
        self,
        channels: int,
        parse_channels: int,
        num_rcab: int = 2,
        reduction: int = 16,
        gate: GateDim = "channel",
        use_gan: bool = True,
        use_adain: bool = True,
        use_parsing: bool = True,
        use_sft: bool = True,
        sft_init_identity: bool = True,
    ) -> None:
        super().__init__()
        if channels < 2 or channels % 2:
            raise ValueError(f"APFF channels must be even and >= 2 (f_conv1 halves them), got {channels}")
        if gate not in ("channel", "spatial"):
            raise ValueError(f"gate must be 'channel' or 'spatial', got {gate!r}")
        if num_rcab < 0:
            raise ValueError(f"num_rcab must be >= 0, got {num_rcab}")
        self.channels, self.gate = channels, gate
        self.use_gan, self.use_adain = use_gan, use_gan and use_adain
        self.use_parsing, self.use_sft = use_parsing, use_parsing and use_sft
        self.rcabs = nn.Sequential(*[RCAB(channels, reduction) for _ in range(num_rcab)])
        half = channels // 2
        self.s_conv1 = nn.Conv2d(channels, half, 3, padding=1)
        self.s_conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        if use_gan:
            self.adain = AdaIN()
            self.g_conv1 = nn.Conv2d(channels, half, 3, padding=1)
            self.g_conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        if self.use_sft:
            self.sft = SFT(channels, parse_channels, init_identity=sft_init_identity)
        elif use_parsing:
            self.parse_fuse = nn.Conv2d(channels + parse_channels, channels, 1)

    def forward(
        self, spatial: torch.Tensor, gan: torch.Tensor | None = None, parse: torch.Tensor | None = None
    ) -> torch.Tensor:
        f_s = self.rcabs(spatial)
        s1, s2 = self.s_conv1(f_s), self.s_conv2(f_s)
        if self.use_gan:
            if gan is None or gan.shape[1] != self.channels:
                raise ValueError(f"APFF with the GAN prior needs gan features (N, {self.channels}, H, W), got "
                                 f"{None if gan is None else tuple(gan.shape)}")
            f_g = self.adain(gan, f_s) if self.use_adain else gan
            g1, g2 = self.g_conv1(f_g), self.g_conv2(f_g)
        else:
            g1, g2 = torch.zeros_like(s1), torch.zeros_like(s2)
        guide = torch.cat([g1, s1], dim=1)
        if self.use_parsing:
            if parse is None:
                raise ValueError("APFF with the parsing prior needs the parsing features")
            if parse.shape[-2:] != guide.shape[-2:]:
                parse = F.interpolate(parse, size=guide.shape[-2:], mode="bilinear", align_corners=False)
            guide = self.sft(guide, parse) if self.use_sft else self.parse_fuse(torch.cat([guide, parse], dim=1))
        return (g2 - s2) * self.gate_weights(guide) + s2

    def gate_weights(self, guide: torch.Tensor) -> torch.Tensor:
        """``softmax(F_guide)`` of Eq. (7) over channels (``gate="channel"``) or spatial positions."""
        if self.gate == "channel":
            return torch.softmax(guide.float(), dim=1).to(guide.dtype)
        n, c, h, w = guide.shape
        return torch.softmax(guide.float().reshape(n, c, h * w), dim=-1).reshape(n, c, h, w).to(guide.dtype)
