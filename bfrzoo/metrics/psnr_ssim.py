"""PSNR, SSIM (RGB and Y channel) and MS-SSIM: functional twins and ``Metric`` classes.

Every function takes ``preds`` and ``target`` as (N, 3, H, W) float RGB in [0, 1] on any device and returns one
value per image, shape (N,); the ``Metric`` classes average those per-image values over all images seen. Values
are computed in float64 internally. Inputs are not clamped: clamp restored images to [0, 1] first.

Reference implementation matched (tests check |difference| <= 1e-4, per image, float64 inputs ``a``, ``b``
as (H, W, 3) arrays in [0, 1]):

* :func:`psnr` == ``skimage.metrics.peak_signal_noise_ratio(b, a, data_range=1)``.
* :func:`psnr_y` == ``peak_signal_noise_ratio(Yb, Ya, data_range=255)`` with
  ``Ya = skimage.color.rgb2ycbcr(a)[..., 0]`` (MATLAB ``rgb2ycbcr`` luma, BT.601, [16, 235], not rounded).
* :func:`ssim` == ``skimage.metrics.structural_similarity(a, b, channel_axis=-1, data_range=1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``: Wang et al. 2004 (Eq. 13, K1 = 0.01,
  K2 = 0.03), 11x11 Gaussian window (sigma 1.5, radius int(3.5 * 1.5 + 0.5) = 5), per-channel SSIM maps
  averaged over the valid region (skimage crops 5 px, so padding never enters) and over channels. This is
  also the SSIM of the MATLAB reference code and of the usual face-restoration evaluation scripts.
* :func:`ssim_y` == ``structural_similarity(Ya, Yb, data_range=255, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)``.
* :func:`ms_ssim`: ``torchmetrics.functional.multiscale_structural_similarity_index_measure`` (Wang et al.
  2003, 5 scales, betas of the paper), data range 1, per image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bfrzoo.errors import ImageInputError
from bfrzoo.metrics.base import PerImageMean, check_pair, rgb_to_y

#: SSIM constants (Wang et al. 2004, Eq. 13) and window (Sec. III-C: Gaussian, sigma 1.5; skimage truncation 3.5).
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_RADIUS = 0.01, 0.03, 1.5, 5
SSIM_MIN_SIZE = 2 * SSIM_RADIUS + 1
#: MS-SSIM scale weights (Wang, Simoncelli, Bovik 2003, Sec. 3.2).
MS_SSIM_BETAS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _mse(preds: Tensor, target: Tensor) -> Tensor:
    return (preds.double() - target.double()).square().flatten(1).mean(dim=1)


def psnr(preds: Tensor, target: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB of RGB images in [0, 1]: 10 log10(1 / MSE), per image.

    Args:
        preds: (N, 3, H, W) in [0, 1], the restored images.
        target: (N, 3, H, W) in [0, 1], the references.

    Returns:
        (N,) float64; ``inf`` where the images are identical.
    """
    check_pair(preds, target)
    return 10.0 * torch.log10(1.0 / _mse(preds, target))


def psnr_y(preds: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB on the luma of MATLAB ``rgb2ycbcr`` (BT.601, [16, 235] of 255, unrounded), peak 255.

    Args:
        preds: (N, 3, H, W) in [0, 1].
        target: (N, 3, H, W) in [0, 1].

    Returns:
        (N,) float64.
    """
    check_pair(preds, target)
    return 10.0 * torch.log10(1.0 / _mse(rgb_to_y(preds.double()), rgb_to_y(target.double())))


def _gaussian_1d(sigma: float, radius: int, device: torch.device) -> Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _ssim_map(x: Tensor, y: Tensor, data_range: float) -> Tensor:
    """SSIM map (Wang et al. 2004, Eq. 13) over the valid region: (N, C, H, W) -> (N, C, H - 10, W - 10)."""
    c = x.shape[1]
    g = _gaussian_1d(SSIM_SIGMA, SSIM_RADIUS, x.device)
    kh = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def blur(t: Tensor) -> Tensor:  # separable Gaussian, 'valid' (skimage crops exactly the padded border)
        return F.conv2d(F.conv2d(t, kh, groups=c), kw, groups=c)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(preds: Tensor, target: Tensor) -> Tensor:
    """Structural similarity of RGB images in [0, 1] (mean over channels of each channel's mean SSIM).

    Args:
        preds: (N, 3, H, W) in [0, 1], H, W >= 11.
        target: (N, 3, H, W) in [0, 1].

    Returns:
        (N,) float64 in [-1, 1]; 1 for identical images.
    """
    check_pair(preds, target, SSIM_MIN_SIZE)
    return _ssim_map(preds.double(), target.double(), 1.0).flatten(1).mean(dim=1)


def ssim_y(preds: Tensor, target: Tensor) -> Tensor:
    """SSIM on the luma of MATLAB ``rgb2ycbcr`` (BT.601), data range 255 on the 0..255 scale.

    Args:
        preds: (N, 3, H, W) in [0, 1], H, W >= 11.
        target: (N, 3, H, W) in [0, 1].

    Returns:
        (N,) float64.
    """
    check_pair(preds, target, SSIM_MIN_SIZE)
    y_p, y_t = rgb_to_y(preds.double()) * 255.0, rgb_to_y(target.double()) * 255.0
    return _ssim_map(y_p, y_t, 255.0).flatten(1).mean(dim=1)


def ms_ssim(preds: Tensor, target: Tensor) -> Tensor:
    """Multi-scale SSIM (Wang, Simoncelli, Bovik 2003) of RGB images in [0, 1], per image.

    Uses torchmetrics' implementation: 5 scales with the paper's betas, 11x11 Gaussian window (sigma 1.5),
    data range 1, contrast terms clipped at 0 ("relu" normalisation, so the product stays defined).

    Args:
        preds: (N, 3, H, W) in [0, 1]; H, W > 160 (the window must fit at the coarsest of the 5 scales).
        target: (N, 3, H, W) in [0, 1].

    Returns:
        (N,) float64.
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as _ms

    min_size = (SSIM_MIN_SIZE - 1) * 2 ** (len(MS_SSIM_BETAS) - 1) + 1
    check_pair(preds, target)
    if min(preds.shape[-2:]) < min_size:
        raise ImageInputError(
            f"MS-SSIM needs images of at least {min_size}x{min_size} px (5 scales, 11 px window), got "
            f"{tuple(preds.shape[-2:])}; use 'ssim' for small images"
        )
    out = _ms(preds.double(), target.double(), data_range=1.0, reduction="none", betas=MS_SSIM_BETAS)
    return out.reshape(-1)


class PSNR(PerImageMean):
    """Mean over images of :func:`psnr` (dB). ``update(preds, target)`` with (N, 3, H, W) in [0, 1]."""

    higher_is_better = True

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        return psnr(preds, target)


class PSNRY(PerImageMean):
    """Mean over images of :func:`psnr_y` (dB, BT.601 luma)."""

    higher_is_better = True

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        return psnr_y(preds, target)


class SSIM(PerImageMean):
    """Mean over images of :func:`ssim` (RGB)."""

    higher_is_better = True

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        return ssim(preds, target)


class SSIMY(PerImageMean):
    """Mean over images of :func:`ssim_y` (BT.601 luma)."""

    higher_is_better = True

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        return ssim_y(preds, target)


class MSSSIM(PerImageMean):
    """Mean over images of :func:`ms_ssim`."""

    higher_is_better = True

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        return ms_ssim(preds, target)

