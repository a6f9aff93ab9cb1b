"""Small generic blocks: normalisation and activation factories, a padded conv layer, a residual block, and
spectral normalisation for convolutions.

The parameter layout (``conv2d``, ``norm.norm``, ``relu.func``) follows the PSFR-GAN authors' released
checkpoints, so their face parsing network and discriminators load key for key. The blocks themselves are
generic and carry no PSFR-GAN specifics.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NormType = Literal["bn", "in", "gn", "none"]
Scale = Literal["none", "down", "up", "down_avg"]

_ACTIVATIONS = ("relu", "leakyrelu", "prelu", "selu", "none")
_NORMS = ("bn", "in", "gn", "none")


class ActLayer(nn.Module):
    """Activation chosen by name: ``relu``, ``LeakyReLU`` (slope 0.2), ``PReLU`` (one slope per channel),
    ``SELU`` or ``none`` (case-insensitive). The module sits under ``.func`` (official key layout)."""

    def __init__(self, channels: int, relu_type: str = "relu") -> None:
        super().__init__()
        kind = relu_type.lower()
        if kind not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {relu_type!r}; choose one of {', '.join(_ACTIVATIONS)}")
        self.kind = kind
        self.func: nn.Module = {
            "relu": lambda: nn.ReLU(),
            "leakyrelu": lambda: nn.LeakyReLU(0.2),
            "prelu": lambda: nn.PReLU(channels),
            "selu": lambda: nn.SELU(),
            "none": lambda: nn.Identity(),
        }[kind]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.func(x)


class NormLayer(nn.Module):
    """Normalisation chosen by name: ``bn`` (BatchNorm2d), ``in`` (affine InstanceNorm2d), ``gn``
    (GroupNorm with 32 groups) or ``none``. The module sits under ``.norm`` (official key layout)."""

    def __init__(self, channels: int, norm_type: str = "bn") -> None:
        super().__init__()
        kind = norm_type.lower()
        if kind not in _NORMS:
            raise ValueError(f"unknown normalisation {norm_type!r}; choose one of {', '.join(_NORMS)}")
        self.kind = kind
        self.norm: nn.Module = {
            "bn": lambda: nn.BatchNorm2d(channels),
            "in": lambda: nn.InstanceNorm2d(channels, affine=True),
            "gn": lambda: nn.GroupNorm(min(32, channels), channels),
            "none": lambda: nn.Identity(),
        }[kind]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ConvNormAct(nn.Module):
    """Rescale -> reflection pad -> conv -> norm -> activation.

    ``scale``: ``"down"`` = stride-2 conv; ``"up"`` = nearest 2x upsampling before the conv; ``"down_avg"`` =
    2x2 average pooling after the conv; ``"none"``. A conv followed by BatchNorm has no bias (the norm's shift
    replaces it); with the other norms the conv keeps its bias, as in the released PSFR-GAN checkpoints (whose
    key layout this follows). ``use_pad=False`` drops the reflection padding (a "valid" conv).
    ``(N, C_in, H, W) -> (N, C_out, H', W')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        scale: Scale = "none",
        norm_type: str = "none",
        relu_type: str = "none",
        use_pad: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if scale not in ("none", "down", "up", "down_avg"):
            raise ValueError(f"unknown scale {scale!r}; choose none, down, up or down_avg")
        self.scale = scale
        self.pad = kernel_size // 2 if use_pad else 0
        self.conv2d = nn.Conv2d(
            in_channels, out_channels, kernel_size, 2 if scale == "down" else 1, bias=bias and norm_type.lower() != "bn"
        )
        self.norm = NormLayer(out_channels, norm_type)
        self.relu = ActLayer(out_channels, relu_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == "up":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="reflect")
        x = self.conv2d(x)
        if self.scale == "down_avg":
            x = F.avg_pool2d(x, 2)
        return self.relu(self.norm(x))


class ResidualBlock(nn.Module):
    """``shortcut(x) + conv2(conv1(x))`` with ``conv1`` = conv-norm-act and ``conv2`` = conv-norm.

    ``scale="down"`` puts the stride-2 conv second, ``"up"`` puts the upsampling first; the shortcut is a
    (bias, no norm) :class:`ConvNormAct` with the same rescaling whenever the shape changes, else the identity.
    Appendix A of the PSFR-GAN paper (the FPN's blocks).
    """

    def __init__(self, c_in: int, c_out: int, relu_type: str = "prelu", norm_type: str = "bn", scale: Scale = "none") -> None:
        super().__init__()
        if scale not in ("none", "down", "up"):
            raise ValueError(f"ResidualBlock scale must be none, down or up, got {scale!r}")
        self.shortcut_func: nn.Module = (
            nn.Identity() if scale == "none" and c_in == c_out else ConvNormAct(c_in, c_out, 3, scale)
        )
        first, second = {"down": ("none", "down"), "up": ("up", "none"), "none": ("none", "none")}[scale]
        self.conv1 = ConvNormAct(c_in, c_out, 3, first, norm_type=norm_type, relu_type=relu_type)
        self.conv2 = ConvNormAct(c_out, c_out, 3, second, norm_type=norm_type, relu_type="none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_func(x) + self.conv2(self.conv1(x))


class SpectralNormConv2d(nn.Module):
    """A 2-D convolution whose weight is divided by its largest singular value (Miyato et al. 2018).

    ``W_SN = W / sigma(W)`` with ``sigma = u^T W v`` estimated by power iteration on ``W`` reshaped to
    ``(C_out, C_in * k * k)``: every forward in training mode does ``n_power_iterations`` steps
    ``v <- normalize(W^T u)``, ``u <- normalize(W v)`` and stores ``u``, ``v``; in eval mode the stored vectors
    are used as they are (no update), so an evaluated network is a pure function of its state dict.

    The state-dict keys (``weight_orig``, ``weight_u``, ``weight_v``, ``bias``) and the maths are those of
    :func:`torch.nn.utils.spectral_norm`, so released checkpoints (PSFR-GAN) load key for key and give the same
    outputs. It is a module of its own (not a forward hook) because the hook form stores the normalised weight
    as a non-leaf tensor attribute, which ``copy.deepcopy`` (generator EMA) refuses.
    """

    def __init__(self, conv: nn.Conv2d, n_power_iterations: int = 1, eps: float = 1e-12) -> None:
        super().__init__()
        if n_power_iterations < 1:
            raise ValueError(f"n_power_iterations must be >= 1, got {n_power_iterations}")
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("SpectralNormConv2d supports numeric zero padding only (pad explicitly before the conv)")
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size
        self.n_power_iterations, self.eps = n_power_iterations, eps
        self.weight_orig = nn.Parameter(conv.weight.detach().clone())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        rows, cols = conv.weight.shape[0], conv.weight[0].numel()
        u = F.normalize(conv.weight.new_empty(rows).normal_(), dim=0, eps=eps)
        v = F.normalize(conv.weight.new_empty(cols).normal_(), dim=0, eps=eps)
        if not conv.weight.is_meta:
            # 15 power iterations at creation, as torch.nn.utils.parametrizations.spectral_norm does, so a network
            # evaluated before any training step uses a good estimate of sigma (a loaded checkpoint replaces u, v)
            with torch.no_grad():
                mat = conv.weight.detach().flatten(1)
                for _ in range(15):
                    v = F.normalize(mat.t() @ u, dim=0, eps=eps)
                    u = F.normalize(mat @ v, dim=0, eps=eps)
        self.register_buffer("weight_u", u)
        self.register_buffer("weight_v", v)

    def normalized_weight(self) -> torch.Tensor:
        """``weight_orig / sigma``, with ``u``, ``v`` updated first in training mode. Computed in the parameter
        dtype even under autocast (a bf16 power iteration would mix dtypes and lose precision)."""
        with torch.autocast(self.weight_orig.device.type, enabled=False):
            mat = self.weight_orig.flatten(1)
            u, v = self.weight_u, self.weight_v
            if self.training:
                with torch.no_grad():
                    for _ in range(self.n_power_iterations):
                        v = F.normalize(mat.t() @ u, dim=0, eps=self.eps)
                        u = F.normalize(mat @ v, dim=0, eps=self.eps)
                    self.weight_u.copy_(u)
                    self.weight_v.copy_(v)
                u, v = u.clone(), v.clone()  # the buffers may change again before backward
            sigma = torch.dot(u, mat @ v)
            return self.weight_orig / sigma

    @property
    def weight(self) -> torch.Tensor:
        """The spectrally normalised weight as the last forward used it (no power-iteration step here)."""
        mat = self.weight_orig.flatten(1)
        with torch.autocast(mat.device.type, enabled=False):
            return self.weight_orig / torch.dot(self.weight_u, mat @ self.weight_v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Replace every ``nn.Conv2d`` inside ``module`` (itself included) by a :class:`SpectralNormConv2d` with the
    same weights. Returns the (possibly new) module; modules are changed in place."""
    if isinstance(module, nn.Conv2d):
        return SpectralNormConv2d(module, n_power_iterations)
    for name, child in list(module.named_children()):
        new = apply_spectral_norm(child, n_power_iterations)
        if new is not child:
            setattr(module, name, new)
    return module
