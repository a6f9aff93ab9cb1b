"""MATLAB-compatible ``imresize`` (bicubic, antialiased when shrinking) in torch, batched, on any device.

MATLAB's ``imresize(I, scale, 'bicubic')`` resizes each dimension separately with Keys' cubic kernel (a = -0.5).
For output pixel ``j`` (1-based) of a dimension scaled by ``s`` the source coordinate is
``u = j / s + 0.5 * (1 - 1 / s)``; when shrinking (``s < 1``) with antialiasing the kernel is stretched to
``s * cubic(s * x)`` (width ``4 / s``); weights are normalised to sum 1 and taps outside the image are mirrored
(``[1..L, L..1]``, i.e. edge pixels repeated). Here each dimension's weights form a dense (out, in) matrix, so
the resize is two matrix products; mathematically the same sums as MATLAB's sparse gathers.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB ``imresize`` 'bicubic')."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True,
                  dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """The (out_len, in_len) matrix of MATLAB ``imresize`` bicubic weights for one dimension."""
    kernel_width = 4.0
    shrink = antialias and scale < 1
    if shrink:
        kernel_width /= scale
    j = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = j / scale + 0.5 * (1.0 - 1.0 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # (out, taps), 1-based
    dist = u[:, None] - idx
    w = scale * cubic(scale * dist) if shrink else cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # mirror out-of-range taps: MATLAB aux = [1:L, L:-1:1], idx -> aux(mod(idx - 1, 2L) + 1)
    period = torch.remainder(idx - 1, 2 * in_len).long()
    src = torch.where(period < in_len, period, 2 * in_len - 1 - period)
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, src, w)
    return mat.to(dtype=dtype, device=device)


def imresize(x: Tensor, scale: float, antialias: bool = True) -> Tensor:
    """Resize like MATLAB ``imresize(x, scale, 'bicubic')`` (antialiased when shrinking; no clipping).

    Args:
        x: (..., H, W) float tensor, any range.
        scale: one factor for both sides; the output is (ceil(H * scale), ceil(W * scale)) as in MATLAB.
        antialias: MATLAB's 'Antialiasing' option (on by default for bicubic).

    Returns:
        (..., ceil(H * scale), ceil(W * scale)) tensor of ``x``'s dtype. MATLAB resizes rows first when both
        scales are equal; with the dense matrices used here the order only changes float rounding.
    """
    h, w = x.shape[-2:]
    out_h, out_w = math.ceil(h * scale), math.ceil(w * scale)
    mh = resize_matrix(h, out_h, scale, antialias, x.dtype, x.device)
    mw = resize_matrix(w, out_w, scale, antialias, x.dtype, x.device)
    return mh @ x @ mw.transpose(0, 1)
