"""StyleGAN2 in pure PyTorch: the one implementation GPEN, MPCNet and the MMRB network share.

Karras et al., "Analyzing and Improving the Image Quality of StyleGAN" (CVPR 2020), config F, in the layout of
the widely used PyTorch port (parameter names ``style.*``, ``conv1``, ``convs.*``, ``to_rgbs.*`` ...), so
released checkpoints load key for key. Ordered primitive -> block -> network:

* primitives: :func:`upfirdn2d` (upsample, FIR filter, downsample, in plain torch ops, no compiled extension),
  :func:`fused_leaky_relu`, :class:`PixelNorm`, :class:`EqualLinear` / :class:`EqualConv2d` (equalized learning
  rate), :class:`Blur`, :class:`Upsample`;
* blocks: :class:`ModulatedConv2d` (weight modulation and demodulation, Eqs. (1)-(3) of StyleGAN2, batched as a
  grouped convolution), :class:`NoiseInjection`, :class:`StyledConv`, :class:`ToRGB`, :class:`ConvLayer`,
  :class:`ResBlock`, :class:`MappingNetwork`, :class:`ConstantInput`;
* networks: :class:`Generator` (skip-connection ToRGB outputs), :class:`Discriminator` (residual, minibatch
  standard deviation).

The papers that reuse StyleGAN2 differ in how the per-layer "noise" enters: ``noise_mode="add"`` (StyleGAN2:
``x + w * noise``), ``"concat"`` (GPEN Sec. 3.2 and the MMRB network: ``cat([x, w * noise])``, so the activation
bias and the next layer see twice the channels) or ``"none"`` (MPCNet). It is one constructor argument here.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

NoiseMode = Literal["add", "concat", "none"]
NOISE_MODES: tuple[str, ...] = ("add", "concat", "none")
SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------------------- primitives
def make_blur_kernel(taps: Sequence[float]) -> torch.Tensor:
    """Separable FIR kernel ``outer(k, k) / sum``: ``(1, 3, 3, 1)`` -> a ``(4, 4)`` kernel summing to 1."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None] if k.ndim == 1 else k
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with ``kernel`` (true convolution, per channel), downsample.

    Args:
        x: ``(N, C, H, W)``.
        kernel: ``(kh, kw)`` FIR filter.
        up / down: integer factors on both axes.
        pad: ``(before, after)`` padding on both axes after upsampling; negative values crop.
    Returns:
        ``(N, C, (H*up + before + after - kh) // down + 1, ...)``.
    """
    n, c, h, w = x.shape
    if up > 1:  # zero insertion: each pixel followed by up-1 zeros
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        x = x[..., max(-p0, 0) : x.shape[-2] - max(-p1, 0), max(-p0, 0) : x.shape[-1] - max(-p1, 0)]
    weight = torch.flip(kernel, (0, 1)).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, stride=down, groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2, scale: float = SQRT2) -> torch.Tensor:
    """``leaky_relu(x + bias, 0.2) * sqrt(2)``, bias along dim 1 (the "fused" activation of StyleGAN2)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape).to(x.dtype), negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias followed by :func:`fused_leaky_relu`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class ScaledLeakyReLU(nn.Module):
    """``leaky_relu(x, 0.2) * sqrt(2)`` without bias."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 0.2) * SQRT2


class PixelNorm(nn.Module):
    """``x / sqrt(mean(x^2 over dim 1) + 1e-8)``: normalises the latent code z before the mapping MLP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate: ``W`` stored as ``N(0, 1/lr_mul)``, scaled at run time by
    ``lr_mul / sqrt(in_dim)``; the bias is scaled by ``lr_mul``. ``activation=True`` adds the fused leaky ReLU."""

    def __init__(
        self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activation:
            out = F.linear(x, self.weight * self.scale)
            return fused_leaky_relu(out, bias) if bias is not None else F.leaky_relu(out, 0.2) * SQRT2
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate: weight ``N(0, 1)`` scaled by ``1 / sqrt(in * k * k)`` at run time."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class Blur(nn.Module):
    """FIR low-pass filter (``upfirdn2d`` with ``up = down = 1``); the kernel is a persistent buffer ``kernel``
    as in released checkpoints. ``upsample_factor`` scales the kernel by ``factor**2`` to keep the mean after
    zero-insertion upsampling."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps) * upsample_factor**2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR upsampling (zero insertion + filter) of the ToRGB skip path."""

    def __init__(self, taps: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps) * factor**2)
        self.factor = factor
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


# ----------------------------------------------------------------------------------------------- blocks
class ModulatedConv2d(nn.Module):
    """Modulated convolution, Eqs. (1)-(3) of StyleGAN2.

    ``w'_ijk = s_i * w_ijk`` (modulation by the style ``s = A(w)``, an affine :class:`EqualLinear` initialised
    to bias 1), then ``w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + 1e-8)`` (demodulation).
    ``upsample=True``: transposed convolution with stride 2 followed by a [1,3,3,1] blur (the official layout).

    Two equal ways to run it, switchable at any time through the attribute ``grouped``:

    * ``grouped=True`` (default, as the official code): every sample gets its own weights; the batch is folded
      into the channels and run as ONE grouped convolution (``groups = N``);
    * ``grouped=False``: the shared weight convolves the style-scaled input ``x * s`` and the output is
      multiplied by the demodulation coefficients (``fused_modconv=False`` of the official TF code). Plain dense
      convolutions: can be faster for large batches and with channels_last (benchmarks/gpen_speed.py times both).

    Shapes: ``x (N, in_ch, H, W)``, ``style (N, style_dim)`` -> ``(N, out_ch, H', W')``, ``H' = 2H`` if upsampling.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        grouped: bool = True,
    ) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size**2)
        self.padding = kernel_size // 2
        self.demodulate, self.upsample, self.grouped = demodulate, upsample, grouped
        if upsample:
            p = (len(blur_kernel) - 2) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)

    def modulated_weight(self, style: torch.Tensor) -> torch.Tensor:
        """Per-sample weights ``(N, out_ch, in_ch, k, k)`` for ``style (N, style_dim)`` (Eqs. (1) and (3))."""
        s = self.modulation(style).view(-1, 1, self.in_ch, 1, 1)
        weight = self.scale * self.weight * s
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        return weight

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if not self.grouped:
            return self._forward_dense(x, style)
        n, _, h, w = x.shape
        k = self.kernel_size
        weight = self.modulated_weight(style).to(x.dtype)
        x = x.reshape(1, n * self.in_ch, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(n * self.in_ch, self.out_ch, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=n)
            return self.blur(out.view(n, self.out_ch, *out.shape[-2:]))
        out = F.conv2d(x, weight.reshape(n * self.out_ch, self.in_ch, k, k), padding=self.padding, groups=n)
        return out.view(n, self.out_ch, *out.shape[-2:])

    def _forward_dense(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.modulation(style)  # (N, in_ch)
        weight = self.scale * self.weight[0]  # (out_ch, in_ch, k, k)
        x = x * s.view(-1, self.in_ch, 1, 1).to(x.dtype)
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
        else:
            out = F.conv2d(x, weight.to(x.dtype), padding=self.padding)
        if self.demodulate:  # sum_ik (s_i w_ijk)^2 = (s^2) @ (sum_k w_ijk^2)^T
            d = torch.rsqrt(s.pow(2) @ weight.pow(2).sum(dim=(2, 3)).t() + 1e-8)  # (N, out_ch)
            out = out * d.view(-1, self.out_ch, 1, 1).to(out.dtype)
        return self.blur(out) if self.upsample else out


def set_grouped_modconv(module: nn.Module, grouped: bool) -> nn.Module:
    """Switch every :class:`ModulatedConv2d` inside ``module`` to the grouped or the dense path (same result)."""
    for m in module.modules():
        if isinstance(m, ModulatedConv2d):
            m.grouped = grouped
    return module


class NoiseInjection(nn.Module):
    """Per-layer noise input with ONE learned scalar ``weight`` (initialised to 0).

    * ``add`` (StyleGAN2): ``x + weight * noise``; ``noise (N, 1 or C, H, W)``, fresh N(0, 1) if ``None``.
    * ``concat`` (GPEN Sec. 3.2, MMRB Eq. 3): ``cat([x, weight * noise], dim=1)``; ``noise (N, noise_channels, H,
      W)``, in GPEN the encoder feature and in the MMRB network the decoder feature of the same resolution.
      ``None`` draws ``N(0, 1)`` with ``noise_channels`` channels.
    * ``none`` (MPCNet): identity, no parameter.

    Args:
        mode: ``add`` | ``concat`` | ``none``.
        noise_channels: channels of the concatenated noise (``concat`` only; ``None``: as many as ``x``).
    """

    def __init__(self, mode: NoiseMode = "add", noise_channels: int | None = None) -> None:
        super().__init__()
        if mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {mode!r}")
        if noise_channels is not None and noise_channels < 1:
            raise ValueError(f"noise_channels must be >= 1 or None, got {noise_channels}")
        self.mode = mode
        self.noise_channels = noise_channels
        if mode != "none":
            self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "none":
            return x
        if noise is None:
            ch = 1 if self.mode == "add" else (self.noise_channels or x.shape[1])
            noise = torch.randn(x.shape[0], ch, *x.shape[-2:], device=x.device, dtype=x.dtype)
        if self.mode == "add":
            return x + self.weight * noise
        if self.noise_channels is not None and noise.shape[1] != self.noise_channels:
            raise ValueError(
                f"concat noise must have {self.noise_channels} channels (noise_channels), got {noise.shape[1]}"
            )
        return torch.cat([x, self.weight * noise.to(x.dtype)], dim=1)


class StyledConv(nn.Module):
    """Modulated conv -> noise injection -> fused leaky ReLU (one StyleGAN2 layer).

    In ``concat`` mode the injected features are appended to the conv's ``out_ch`` channels, so the activation
    bias and the output have ``out_ch + noise_channels`` channels (``noise_channels`` defaults to ``out_ch``:
    ``2 * out_ch`` as in GPEN, whose encoder widths equal the generator's; the MMRB network's decoder may inject
    features of another width). ``out_channels`` says how many channels the next layer sees. In ``add`` and
    ``none`` mode ``noise_channels`` is ignored and ``out_channels == out_ch``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        demodulate: bool = True,
        noise_mode: NoiseMode = "add",
        noise_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, demodulate, upsample, blur_kernel)
        concat = noise_mode == "concat"
        self.noise_channels = (noise_channels or out_ch) if concat else 0
        self.noise = NoiseInjection(noise_mode, self.noise_channels if concat else None)
        self.out_channels = out_ch + self.noise_channels
        self.activate = FusedLeakyReLU(self.out_channels)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB plus bias, added to the 2x FIR-upsampled previous RGB
    (StyleGAN2's skip-connection generator, Fig. 7(b))."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    """The learned ``(1, C, 4, 4)`` constant that starts the synthesis network, repeated over the batch."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


class ConvLayer(nn.Sequential):
    """[blur] -> equalized conv -> [fused leaky ReLU]; ``downsample=True`` blurs then convolves with stride 2.

    A ``Sequential`` so the parameter names (``0.weight``, ``1.bias`` / ``0.kernel``, ``1.weight``, ``2.bias``)
    are those of released checkpoints.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        bias: bool = True,
        activate: bool = True,
    ) -> None:
        layers: list[nn.Module] = []
        stride, padding = 1, kernel_size // 2
        if downsample:
            p = len(blur_kernel) - 2 + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        layers.append(EqualConv2d(in_ch, out_ch, kernel_size, stride, padding, bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_ch) if bias else ScaledLeakyReLU())
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual discriminator block: ``(conv3x3 -> down-conv3x3  +  down-conv1x1 skip) / sqrt(2)``, halves H, W."""

    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, blur_kernel=blur_kernel, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class MappingNetwork(nn.Sequential):
    """z -> w: pixel norm then ``n_mlp`` equalized linear layers with fused leaky ReLU and ``lr_mul`` (0.01 in
    StyleGAN2). Keys ``1.weight`` ... ``n_mlp.weight`` (index 0 is the parameter-free pixel norm)."""

    def __init__(self, style_dim: int, n_mlp: int, lr_mul: float = 0.01) -> None:
        super().__init__(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mul, activation=True) for _ in range(n_mlp)])


def stylegan2_channels(channel_multiplier: int = 2, narrow: float = 1.0) -> dict[int, int]:
    """Channels per resolution: ``512 * narrow`` up to 32x32, then ``{256, 128, 64, 32, 16, 8} *
    channel_multiplier * narrow`` at 64 ... 2048 (StyleGAN2 config F; ``narrow`` is GPEN's width factor)."""
    ch = {r: int(512 * narrow) for r in (4, 8, 16, 32)}
    for i, r in enumerate((64, 128, 256, 512, 1024, 2048)):
        ch[r] = int(256 // 2**i * channel_multiplier * narrow)
    return ch


def stylegan2_width(ch_4: int, ch_at: int, resolution: int) -> tuple[int, float]:
    """Inverse of :func:`stylegan2_channels`: ``(channel_multiplier, narrow)`` from the channels at 4x4 (``ch_4``)
    and at ``resolution`` (``ch_at``), e.g. read off a checkpoint's shapes. Below 64x64 the multiplier does not
    show in the channels, and 1 is returned for it."""
    narrow = ch_4 / 512
    if resolution < 64:
        return 1, narrow
    base = 256 // 2 ** (int(math.log2(resolution)) - 6)
    return max(1, round(ch_at / (base * narrow))), narrow


# ----------------------------------------------------------------------------------------------- networks
class GeneratorOutput(NamedTuple):
    """``image (N, 3, S, S)`` roughly in ``[-1, 1]``; ``latent (N, n_latent, style_dim)`` the W(+) codes used;
    ``features`` per resolution the last styled conv's output (only with ``return_features=True``)."""

    image: torch.Tensor
    latent: torch.Tensor
    features: dict[int, torch.Tensor] | None


class Generator(nn.Module):
    """StyleGAN2 generator (config F, skip-connection outputs).

    Args:
        size: output resolution, a power of 2 >= 8.
        style_dim: dimension of z and w.
        n_mlp: layers of the mapping network.
        channel_multiplier / narrow: channel rule of :func:`stylegan2_channels`.
        blur_kernel: FIR taps of every resampling.
        lr_mlp: learning-rate multiplier of the mapping network (0.01).
        noise_mode: ``add`` | ``concat`` | ``none`` (see :class:`NoiseInjection`). With ``concat`` every styled
            conv outputs its channels plus the injected ones, which the next layer and the ToRGB see (GPEN Sec. 3.2).
        noise_channels: ``concat`` only: channels of the features injected at each resolution
            (``{4: C4, 8: C8, ...}``; missing resolutions, or ``None``, inject as many channels as the layer has,
            GPEN's layout). Both styled convs of a resolution take the same width.

    Layers: ``conv1`` (4x4), then per resolution ``r = 8 ... size`` two styled convs ``convs[2i]`` (upsampling)
    and ``convs[2i + 1]``, and ``to_rgbs[i]``, ``i = log2(r) - 3``; ``n_latent = 2 log2(size) - 2`` style inputs.
    Noise inputs are listed in layer order: ``[conv1, convs[0], convs[1], ...]`` (``num_layers`` entries).
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        narrow: float = 1.0,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        lr_mlp: float = 0.01,
        noise_mode: NoiseMode = "add",
        noise_channels: Mapping[int, int] | None = None,
    ) -> None:
        super().__init__()
        if size < 8 or size & (size - 1):
            raise ValueError(f"Generator size must be a power of 2 >= 8, got {size}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        self.size, self.style_dim, self.noise_mode = size, style_dim, noise_mode
        self.log_size = int(math.log2(size))
        self.n_latent = self.log_size * 2 - 2
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.channels = stylegan2_channels(channel_multiplier, narrow)
        extra = dict(noise_channels or {})
        unknown = sorted(set(extra) - {2**k for k in range(2, self.log_size + 1)})
        if unknown:
            raise ValueError(f"noise_channels has resolutions {unknown} that this {size} px generator does not have")
        self.style = MappingNetwork(style_dim, n_mlp, lr_mlp)
        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(
            self.channels[4], self.channels[4], 3, style_dim, blur_kernel=blur_kernel, noise_mode=noise_mode,
            noise_channels=extra.get(4),
        )
        self.to_rgb1 = ToRGB(self.conv1.out_channels, style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = self.conv1.out_channels
        for log_r in range(3, self.log_size + 1):
            out_ch = self.channels[2**log_r]
            nc = extra.get(2**log_r)
            up = StyledConv(in_ch, out_ch, 3, style_dim, upsample=True, blur_kernel=blur_kernel, noise_mode=noise_mode,
                            noise_channels=nc)
            same = StyledConv(up.out_channels, out_ch, 3, style_dim, blur_kernel=blur_kernel, noise_mode=noise_mode,
                              noise_channels=nc)
            self.convs.extend([up, same])
            self.to_rgbs.append(ToRGB(same.out_channels, style_dim, blur_kernel=blur_kernel))
            in_ch = same.out_channels

    # -- latents
    @torch.no_grad()
    def mean_latent(self, n: int = 4096) -> torch.Tensor:
        """Mean of ``n`` mapped random z: the ``truncation_latent`` ``(1, style_dim)`` of the truncation trick."""
        z = torch.randn(n, self.style_dim, device=self.input.input.device)
        return self.style(z).mean(0, keepdim=True)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Mapping network: ``z (N, style_dim)`` -> ``w (N, style_dim)``."""
        return self.style(z)

    def _latents(
        self,
        styles: torch.Tensor | Sequence[torch.Tensor],
        input_is_latent: bool,
        truncation: float,
        truncation_latent: torch.Tensor | None,
        inject_index: int | None,
    ) -> torch.Tensor:
        if isinstance(styles, torch.Tensor) and styles.ndim == 3:  # already W+ (N, n_latent, style_dim)
            if not input_is_latent or styles.shape[1] != self.n_latent:
                raise ValueError(f"a 3-d style tensor must be W+ (N, {self.n_latent}, {self.style_dim}) with input_is_latent=True")
            return styles
        styles = [styles] if isinstance(styles, torch.Tensor) else list(styles)
        if not 1 <= len(styles) <= 2:
            raise ValueError(f"give one style (or two for style mixing), got {len(styles)}")
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if truncation < 1.0:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (see Generator.mean_latent)")
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        if len(styles) == 1:
            return styles[0].unsqueeze(1).expand(-1, self.n_latent, -1)
        if inject_index is None:
            inject_index = int(torch.randint(1, self.n_latent, ()).item())
        first = styles[0].unsqueeze(1).expand(-1, inject_index, -1)
        second = styles[1].unsqueeze(1).expand(-1, self.n_latent - inject_index, -1)
        return torch.cat([first, second], dim=1)

    def forward(
        self,
        styles: torch.Tensor | Sequence[torch.Tensor],
        noise: Sequence[torch.Tensor | None] | None = None,
        *,
        input_is_latent: bool = False,
        truncation: float = 1.0,
        truncation_latent: torch.Tensor | None = None,
        inject_index: int | None = None,
        return_features: bool = False,
    ) -> GeneratorOutput:
        """Synthesise images.

        Args:
            styles: z ``(N, style_dim)`` (or w with ``input_is_latent``), a list of two for style mixing at
                ``inject_index``, or W+ ``(N, n_latent, style_dim)`` with ``input_is_latent=True``.
            noise: ``num_layers`` noise inputs in layer order (entries may be ``None``: random); ignored with
                ``noise_mode="none"``.
            truncation / truncation_latent: the truncation trick ``w' = w_mean + psi (w - w_mean)``.
            return_features: also return each resolution's last styled-conv output.
        """
        latent = self._latents(styles, input_is_latent, truncation, truncation_latent, inject_index)
        if noise is None:
            noise = [None] * self.num_layers
        if len(noise) != self.num_layers:
            raise ValueError(f"expected {self.num_layers} noise inputs (one per styled conv), got {len(noise)}")
        features: dict[int, torch.Tensor] | None = {} if return_features else None
        out = self.conv1(self.input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        if features is not None:
            features[4] = out
        for i, to_rgb in enumerate(self.to_rgbs):
            out = self.convs[2 * i](out, latent[:, 2 * i + 1], noise[2 * i + 1])
            out = self.convs[2 * i + 1](out, latent[:, 2 * i + 2], noise[2 * i + 2])
            skip = to_rgb(out, latent[:, 2 * i + 3], skip)
            if features is not None:
                features[2 ** (i + 3)] = out
        return GeneratorOutput(skip, latent, features)

    # -- freezing (e.g. GPEN-w/o-ft, Table 1 of GPEN)
    def layers_at(self, resolution: int) -> list[nn.Module]:
        """The modules that synthesise ``resolution`` (4: constant, conv1, to_rgb1)."""
        if resolution == 4:
            return [self.input, self.conv1, self.to_rgb1]
        i = int(math.log2(resolution)) - 3
        if 2**(i + 3) != resolution or not 0 <= i < len(self.to_rgbs):
            raise ValueError(f"no layers at resolution {resolution}; valid: 4 ... {self.size}, powers of 2")
        return [self.convs[2 * i], self.convs[2 * i + 1], self.to_rgbs[i]]

    def freeze(self, resolutions: Iterable[int] | None = None, mapping: bool = True, frozen: bool = True) -> None:
        """Stop (``frozen=True``) or restart gradients of the layers at ``resolutions`` (all if ``None``) and,
        with ``mapping``, of the mapping network."""
        res = [2**k for k in range(2, self.log_size + 1)] if resolutions is None else list(resolutions)
        modules = [m for r in res for m in self.layers_at(r)] + ([self.style] if mapping else [])
        for m in modules:
            m.requires_grad_(not frozen)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: ``(N, 3, S, S)`` -> ``(N, 1)`` logits.

    Args:
        size: input resolution.
        channel_multiplier / narrow: channel rule of :func:`stylegan2_channels`.
        stddev_group: minibatch-standard-deviation group size; StyleGAN2 uses ``min(N, 4)`` (the default 4),
            GPEN the whole batch (``None``). N must be divisible by the group size.
        stddev_feat: channels per stddev statistic (1).
    """

    def __init__(
        self,
        size: int,
        channel_multiplier: int = 2,
        narrow: float = 1.0,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        stddev_group: int | None = 4,
        stddev_feat: int = 1,
    ) -> None:
        super().__init__()
        ch = stylegan2_channels(channel_multiplier, narrow)
        log_size = int(math.log2(size))
        if size < 8 or 2**log_size != size:
            raise ValueError(f"Discriminator size must be a power of 2 >= 8, got {size}")
        self.size = size
        convs: list[nn.Module] = [ConvLayer(3, ch[size], 1)]
        in_ch = ch[size]
        for log_r in range(log_size, 2, -1):
            convs.append(ResBlock(in_ch, ch[2 ** (log_r - 1)], blur_kernel))
            in_ch = ch[2 ** (log_r - 1)]
        self.convs = nn.Sequential(*convs)
        self.stddev_group, self.stddev_feat = stddev_group, stddev_feat
        self.final_conv = ConvLayer(in_ch + 1, ch[4], 3)
        self.final_linear = nn.Sequential(EqualLinear(ch[4] * 16, ch[4], activation=True), EqualLinear(ch[4], 1))
        self._frozen: set[str] = set()

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        """Append the mean standard deviation over groups of samples as ``stddev_feat`` extra channels."""
        n, c, h, w = x.shape
        group = n if self.stddev_group is None else min(n, self.stddev_group)
        if n % group:
            raise ValueError(f"batch size {n} is not divisible by the minibatch-stddev group {group}")
        y = x.view(group, -1, self.stddev_feat, c // self.stddev_feat, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8).mean(dim=(2, 3, 4), keepdim=True).squeeze(2)
        return torch.cat([x, y.repeat(group, 1, h, w)], dim=1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits ``(N, 1)`` and the intermediate features ``D^i(x)``: the output of ``convs[0]`` (the 1x1
        input conv), of every residual block (``S/2 ... 4``) and of ``final_conv``; for feature-matching losses
        such as Eq. (2) of GPEN."""
        feats = []
        for layer in self.convs:
            x = layer(x)
            feats.append(x)
        out = self.final_conv(self.minibatch_stddev(x))
        feats.append(out)
        return self.final_linear(out.flatten(1)), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` -> real/fake logits ``(N, 1)``."""
        out = self.final_conv(self.minibatch_stddev(self.convs(x)))
        return self.final_linear(out.flatten(1))

    def conv_layers(self) -> list[list[nn.Module]]:
        """The convolution layers in input-to-output order, each as the modules frozen together:
        ``convs[0]`` (the 1x1 fromRGB), then per residual block ``conv1`` and ``conv2`` (the block's 1x1 ``skip``
        goes with ``conv2``: both make the block's output), then ``final_conv``. ``final_linear`` is not a conv."""
        layers: list[list[nn.Module]] = [[self.convs[0]]]
        for block in list(self.convs)[1:]:
            layers += [[block.conv1], [block.conv2, block.skip]]
        return layers + [[self.final_conv]]

    def freeze(self, first_n: int, frozen: bool = True) -> list[str]:
        """FreezeD (Mo et al. 2020): stop gradients of the first ``first_n`` convolution layers counted from the
        input side (:meth:`conv_layers`; like stylegan2-ada's ``freeze_layers``, which counts blocks from the
        input), so an optimiser step leaves their weights exactly unchanged. ``frozen=False`` undoes it.

        The MMRB network freezes the first five (journal Sec. IV-B): fromRGB plus the two full residual blocks of
        the highest resolutions. Returns the names of the parameters that were (un)frozen.

        Raises:
            ValueError: ``first_n`` outside ``[0, len(conv_layers())]``.
        """
        layers = self.conv_layers()
        if not 0 <= first_n <= len(layers):
            raise ValueError(f"freeze: first_n must be in [0, {len(layers)}] (this discriminator's conv layers), got {first_n}")
        chosen = {id(p) for group in layers[:first_n] for m in group for p in m.parameters()}
        names = [name for name, p in self.named_parameters() if id(p) in chosen]
        self._frozen = (self._frozen | set(names)) if frozen else (self._frozen - set(names))
        for name, p in self.named_parameters():
            if name in names:
                p.requires_grad_(not frozen)
        return names

    def requires_grad_(self, requires_grad: bool = True) -> Discriminator:
        """``nn.Module.requires_grad_`` that keeps the layers frozen by :meth:`freeze` frozen, so the GAN tasks'
        switching of D's gradients between the D and G steps cannot undo FreezeD."""
        super().requires_grad_(requires_grad)
        for name, p in self.named_parameters():
            if name in self._frozen:
                p.requires_grad_(False)
        return self
