"""NIQE, the Natural Image Quality Evaluator (Mittal, Soundararajan, Bovik, IEEE SPL 2013), in torch.

No-reference: lower is better. Batched (images of one size per call) and device-agnostic; statistics in float64.
MATLAB-compatible, as the original release ``computequality.m`` (Sec. III-IV of the paper):

1. Y channel of MATLAB ``rgb2ycbcr`` on the 0..255 scale (BT.601, [16, 235]), rounded to integers (as a uint8
   image would be in MATLAB); the image is cropped to whole 96x96 blocks (top-left kept).
2. Two scales. At each, MSCN coefficients (Eq. 1-3): ``(I - mu) / (sigma + 1)`` with a 7x7 Gaussian window
   (sigma 7/6) and replicated borders; ``sigma = sqrt(|E[I^2] - mu^2|)``.
3. Per block (96x96, then 48x48 at the second scale) 18 features (Sec. III-B/C): an AGGD fit of the MSCN
   coefficients (alpha, mean of the left/right scales) and, for the four neighbour products (horizontal,
   vertical, both diagonals; circular shifts within the block), AGGD (alpha, mean, beta_l, beta_r). The shape
   alpha comes from moment matching over the grid 0.2:0.001:10.
4. The second scale is ``imresize(I, 0.5)``, MATLAB bicubic with antialiasing (:mod:`bfrzoo.metrics.imresize`).
5. Distance (Eq. 10) to the pristine MVG model (mu_p: 36, cov_p: 36x36, shipped in
   ``data/niqe_pristine.npz``, see ``data/ATTRIBUTION.md``):
   ``sqrt((mu_p - mu_d)^T pinv((cov_p + cov_d) / 2) (mu_p - mu_d))`` where mu_d is the per-feature mean over
   blocks ignoring NaNs and cov_d the sample covariance (N - 1) over blocks with no NaN feature.

Blocks without negative (or positive) coefficients (e.g. flat regions) give NaN features, handled as in the
reference: the AGGD shape falls back to the first grid value (0.2, what ``argmin`` over an all-NaN vector
returns), the scales are NaN; the NaN block is left out of the covariance and of that feature's mean.
An image with a single usable block (96..191 px) gets a zero covariance (MATLAB ``cov`` of one observation);
an image whose every block is NaN (e.g. a constant image) gets NaN.
"""
from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from bfrzoo.errors import ImageInputError
from bfrzoo.metrics.base import check_images, rgb_to_y
from bfrzoo.metrics.imresize import imresize

BLOCK_SIZE = 96
#: The moment-matching grid of the AGGD shape parameter (``0.2:0.001:10`` in the MATLAB release).
GAMMA_GRID_START, GAMMA_GRID_STEP, GAMMA_GRID_LEN = 0.2, 0.001, 9801
#: Neighbour offsets (row, col) of the paired products (Sec. III-C), as MATLAB ``circshift`` shifts.
PAIR_SHIFTS: tuple[tuple[int, int], ...] = ((0, 1), (1, 0), (1, 1), (1, -1))


@functools.lru_cache(maxsize=1)
def _pristine_numpy() -> dict[str, np.ndarray]:
    ref = resources.files("bfrzoo.metrics").joinpath("data/niqe_pristine.npz")
    with resources.as_file(ref) as path, np.load(path) as data:
        return {k: np.asarray(data[k], dtype=np.float64) for k in ("mu", "cov", "gaussian_window")}


def pristine_model(device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The NIQE pristine model: ``mu`` (36,), ``cov`` (36, 36) and the 7x7 Gaussian window, float64."""
    d = _pristine_numpy()
    return tuple(torch.from_numpy(d[k]).to(device) for k in ("mu", "cov", "gaussian_window"))  # type: ignore[return-value]


@functools.lru_cache(maxsize=8)
def _lgamma_ratio_tables(device: torch.device) -> tuple[Tensor, Tensor]:
    gam = GAMMA_GRID_START + GAMMA_GRID_STEP * torch.arange(GAMMA_GRID_LEN, dtype=torch.float64, device=device)
    # r(g) = Gamma(2/g)^2 / (Gamma(1/g) Gamma(3/g)), increasing in g
    r_gam = torch.exp(2 * torch.lgamma(2 / gam) - torch.lgamma(1 / gam) - torch.lgamma(3 / gam))
    return gam, r_gam


def _nearest_on_grid(value: Tensor, grid: Tensor) -> Tensor:
    """Index of argmin over ``grid`` of (grid - value)^2 (first index on ties; 0 for NaN), grid increasing."""
    flat = value.reshape(-1).contiguous()
    hi = torch.searchsorted(grid, flat.nan_to_num(0.0)).clamp(1, grid.numel() - 1)
    lo = hi - 1
    d_lo, d_hi = (grid[lo] - flat) ** 2, (grid[hi] - flat) ** 2
    idx = torch.where(d_hi < d_lo, hi, lo)
    idx = torch.where(torch.isnan(flat), torch.zeros_like(idx), idx)
    return idx.reshape(value.shape)


def aggd_fit(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric generalized Gaussian fit by moment matching (Lasmar et al. 2009; NIQE Sec. III-C).

    Args:
        x: (..., M) samples (one fit per leading index), float64.

    Returns:
        ``alpha`` (shape), ``beta_l``, ``beta_r`` (left/right scales), each of shape (...).
    """
    neg, pos = x < 0, x > 0
    x2 = x * x
    left_std = torch.sqrt((x2 * neg).sum(-1) / neg.sum(-1))  # NaN when there are no negative samples
    right_std = torch.sqrt((x2 * pos).sum(-1) / pos.sum(-1))
    gamma_hat = left_std / right_std
    r_hat = x.abs().mean(-1) ** 2 / x2.mean(-1)
    r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    gam, r_gam = _lgamma_ratio_tables(x.device)
    alpha = gam[_nearest_on_grid(r_hat_norm, r_gam)]
    scale = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    return alpha, left_std * scale, right_std * scale


def _block_features(mscn: Tensor, block: int) -> Tensor:
    """18 NIQE features per block: (N, H, W) MSCN -> (N, B, 18), blocks of ``block`` x ``block``."""
    n, h, w = mscn.shape
    blocks = mscn.reshape(n, h // block, block, w // block, block).permute(0, 1, 3, 2, 4)
    blocks = blocks.reshape(n, -1, block, block)  # (N, B, block, block)
    alpha, bl, br = aggd_fit(blocks.flatten(2))
    feats = [alpha, (bl + br) / 2]
    for shift in PAIR_SHIFTS:
        prod = blocks * torch.roll(blocks, shifts=shift, dims=(2, 3))
        alpha, bl, br = aggd_fit(prod.flatten(2))
        mean = (br - bl) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
        feats += [alpha, mean, bl, br]
    return torch.stack(feats, dim=-1)


def _mscn(img: Tensor, window: Tensor, moments_dtype: torch.dtype) -> Tensor:
    """Mean-subtracted contrast-normalised coefficients (Eq. 1-3): (N, 1, H, W) float64 -> (N, 1, H, W) float64.

    The local moments E[I] and E[I^2] are filtered in float64 and then rounded to ``moments_dtype`` before
    ``sigma = sqrt(|E[I^2] - E[I]^2|)`` and the normalisation are computed in that dtype (see :func:`niqe`).
    """
    k = window.view(1, 1, *window.shape)
    pad = window.shape[-1] // 2
    mu = F.conv2d(F.pad(img, (pad,) * 4, mode="replicate"), k).to(moments_dtype)
    mu2 = F.conv2d(F.pad(img * img, (pad,) * 4, mode="replicate"), k).to(moments_dtype)
    sigma = torch.sqrt((mu2 - mu * mu).abs())
    return ((img.to(moments_dtype) - mu) / (sigma + 1)).double()


def niqe_from_y(y: Tensor, moments_dtype: torch.dtype = torch.float32) -> Tensor:
    """NIQE of luma images already on MATLAB's 0..255 scale (and rounded, for MATLAB parity).

    Args:
        y: (N, H, W) or (N, 1, H, W) float, values in [0, 255]; H, W >= 96.
        moments_dtype: dtype of the local variance and MSCN step (see :func:`niqe`).

    Returns:
        (N,) float64, lower is better.
    """
    if y.ndim == 4:
        y = y[:, 0]
    y = y.double()
    h, w = y.shape[-2:]
    if min(h, w) < BLOCK_SIZE:
        raise ImageInputError(
            f"NIQE needs images of at least {BLOCK_SIZE}x{BLOCK_SIZE} px (one {BLOCK_SIZE}x{BLOCK_SIZE} block), "
            f"got {h}x{w}; evaluate larger images or leave NIQE out"
        )
    mu_p, cov_p, window = pristine_model(y.device)
    bh, bw = h // BLOCK_SIZE, w // BLOCK_SIZE
    img = y[:, None, : bh * BLOCK_SIZE, : bw * BLOCK_SIZE]
    feats = []
    for scale in (1, 2):
        feats.append(_block_features(_mscn(img, window, moments_dtype)[:, 0], BLOCK_SIZE // scale))
        if scale == 1:
            img = imresize(img, 0.5)
    dist = torch.cat(feats, dim=-1)  # (N, B, 36)

    nan = torch.isnan(dist)
    mu_d = torch.where(nan, 0.0, dist).sum(1) / (~nan).sum(1)  # per-feature mean over non-NaN blocks
    valid = ~nan.any(-1, keepdim=True)  # (N, B, 1) blocks used in the covariance
    n_valid = valid.sum(1, keepdim=True)  # (N, 1, 1)
    safe = torch.where(valid, dist, 0.0)
    centred = (safe - safe.sum(1, keepdim=True) / n_valid.clamp(min=1)) * valid
    # normalised by N - 1, and by 1 for a single block (as MATLAB's cov/nancov do): zero covariance then
    cov_d = centred.transpose(1, 2) @ centred / (n_valid - 1).clamp(min=1)
    diff = (mu_p - mu_d).unsqueeze(-1)  # (N, 36, 1)
    inv = torch.linalg.pinv((cov_p + cov_d) / 2, rtol=1e-15, hermitian=False)
    return torch.sqrt((diff.transpose(1, 2) @ inv @ diff).reshape(-1))


def niqe(images: Tensor, moments_dtype: torch.dtype = torch.float32) -> Tensor:
    """NIQE of RGB images (Mittal et al. 2013), MATLAB-compatible; lower is better.

    The images are treated as MATLAB would treat the uint8 image ``round(255 * x)``: the luma
    ``16 + 65.481 R + 128.553 G + 24.966 B`` (R, G, B in [0, 1]) is rounded to integers before the features.

    Precision (``moments_dtype``): the widely used Python reference (the one behind the NIQE numbers of most
    face-restoration papers, and behind ``tests/fixtures/niqe_reference.json``) keeps the image and its local
    moments in float32, so ``E[I^2] - E[I]^2`` loses digits in flat regions (values up to 235^2). The default
    ``torch.float32`` reproduces that reference (within 2e-4 relative on the fixture images);
    ``torch.float64`` is the double-precision computation of the MATLAB release (up to ~2% different on
    images with flat areas; identical on textured or noisy ones). Everything else is float64.

    Args:
        images: (N, 3, H, W) float RGB in [0, 1]; all of one size, H, W >= 96 (blocks beyond the last whole
            96x96 block are ignored, as in the reference).
        moments_dtype: ``torch.float32`` (reference-compatible, default) or ``torch.float64``.

    Returns:
        (N,) float64 NIQE values.
    """
    check_images(images, "images")
    y = torch.round(rgb_to_y(images.double()) * 255.0)
    return niqe_from_y(y, moments_dtype)


class NIQE(Metric):
    """Mean :func:`niqe` over all images seen; no reference: ``update(preds, target=None)`` ignores ``target``,
    so it sits in a suite beside full-reference metrics."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self, moments_dtype: torch.dtype = torch.float32, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.moments_dtype = moments_dtype
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor | None = None) -> None:  # noqa: ARG002 - no-reference
        """Add a batch of restored images ``preds`` (N, 3, H, W) in [0, 1]; ``target`` is not used."""
        values = niqe(preds.detach(), self.moments_dtype)
        self.total += values.sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        """The mean NIQE of the images seen."""
        return self.total / self.count
