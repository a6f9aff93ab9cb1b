"""Batched, seeded degradation ops for synthetic LQ faces; pure tensor code that runs on CPU or GPU.

The model every preset instantiates (GPEN Eq. (4), PSFR-GAN Eq. (12), MPCNet Sec. 3.1, MMRB Eq. (17)):

    LQ = up_s( JPEG_q( down_s(HQ * k) + n_sigma ) )

with one blur kernel ``k``, scale ``s``, noise level ``sigma`` and quality ``q`` per image. Per-image kernels
of different sizes are zero-padded to one size and applied together (grouped / FFT convolution); per-image
LQ sizes share one zero-padded canvas and are resampled with per-image matrices, so no Python loop runs over
the samples of a training batch. The per-sample-seed (evaluation) path draws each sample's random numbers
from its own CPU generator and degrades the samples one by one, so validation / test LQ is bit-identical
whatever the batch composition, batch size or rank.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from bfrzoo.data.jpeg import jpeg
from bfrzoo.data.presets import BLUR_KINDS, DegradationPreset, get_preset

__all__ = [
    "DegradationParams",
    "Degrader",
    "add_noise",
    "apply_degradation",
    "box_kernels_1d",
    "degrade",
    "filter2d",
    "filter_separable",
    "gaussian_kernels",
    "gaussian_kernels_1d",
    "hflip",
    "median_blur",
    "motion_kernels",
    "resample",
    "resample_matrix",
    "sample_params",
    "stable_seed",
    "to_grayscale",
]

_LUMA = (0.299, 0.587, 0.114)


# --------------------------------------------------------------------------------------------- kernels
def gaussian_kernels_1d(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussians, one per sample: sigma ``(N,)`` > 0 -> ``(N, size)`` (size odd), sums to 1."""
    t = torch.arange(size, device=sigma.device, dtype=torch.float32) - (size - 1) / 2
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.float().view(-1, 1).clamp_min(1e-3)) ** 2)
    return k / k.sum(-1, keepdim=True)


def gaussian_kernels(sigma_x: torch.Tensor, sigma_y: torch.Tensor, angle: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised (an)isotropic 2-D Gaussians ``(N, size, size)``.

    sigma_x, sigma_y: ``(N,)`` std along the kernel's own axes (pixels); angle: ``(N,)`` rotation of the x axis in
    radians (counter-clockwise as displayed, rows grow downwards). Covariance ``R diag(sx^2, sy^2) R^T``.
    """
    dev = sigma_x.device
    t = torch.arange(size, device=dev, dtype=torch.float32) - (size - 1) / 2
    yy, xx = torch.meshgrid(-t, t, indexing="ij")  # y points up
    c, s = torch.cos(angle.float()).view(-1, 1, 1), torch.sin(angle.float()).view(-1, 1, 1)
    u = c * xx + s * yy  # coordinate along the rotated x axis
    v = -s * xx + c * yy
    sx = sigma_x.float().clamp_min(1e-3).view(-1, 1, 1)
    sy = sigma_y.float().clamp_min(1e-3).view(-1, 1, 1)
    k = torch.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return k / k.sum((-1, -2), keepdim=True)


def box_kernels_1d(width: torch.Tensor, size: int) -> torch.Tensor:
    """Centred 1-D box filters: odd widths ``(N,)`` -> ``(N, size)``; their outer product is the average blur."""
    t = torch.arange(size, device=width.device, dtype=torch.float32) - (size - 1) / 2
    k = (t.view(1, -1).abs() <= (width.float().view(-1, 1) - 1) / 2).float()
    return k / k.sum(-1, keepdim=True)


def motion_kernels(length: torch.Tensor, angle_deg: torch.Tensor, size: int) -> torch.Tensor:
    """Linear motion-blur kernels ``(N, size, size)``, each summing to 1.

    A line of ``length`` pixels through the kernel centre at ``angle_deg`` degrees counter-clockwise from the
    +x axis as displayed (0 = horizontal, 90 = vertical); pixels are weighted by ``max(0, 1 - distance to the
    segment)``, an anti-aliased 1-pixel-wide line.
    """
    dev = length.device
    t = torch.arange(size, device=dev, dtype=torch.float32) - (size - 1) / 2
    yy, xx = torch.meshgrid(-t, t, indexing="ij")  # y points up
    a = torch.deg2rad(angle_deg.float()).view(-1, 1, 1)
    dx, dy = torch.cos(a), torch.sin(a)
    half = ((length.float() - 1) / 2).clamp_min(0).view(-1, 1, 1)
    along = (xx * dx + yy * dy).clamp(-half, half)
    dist = torch.hypot(xx - along * dx, yy - along * dy)
    k = (1 - dist).clamp_min(0)
    return k / k.sum((-1, -2), keepdim=True)


# --------------------------------------------------------------------------------------------- filtering
def _pad(x: torch.Tensor, p: int) -> torch.Tensor:
    """Reflect padding (OpenCV's default BORDER_REFLECT_101) when it fits, else edge replication."""
    if p == 0:
        return x
    mode = "reflect" if p < min(x.shape[-2:]) else "replicate"
    return F.pad(x, (p, p, p, p), mode=mode)


def filter_separable(x: torch.Tensor, k_rows: torch.Tensor, k_cols: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample separable filtering: x ``(N, C, H, W)``; 1-D kernels ``(N, K)`` (odd K) along H and W."""
    k_cols = k_rows if k_cols is None else k_cols
    n, c, h, w = x.shape
    size = k_rows.shape[-1]
    xp = _pad(x, size // 2).reshape(1, n * c, h + size - 1, w + size - 1)
    kv = k_rows.to(x.dtype).repeat_interleave(c, 0).view(n * c, 1, size, 1)
    kh = k_cols.to(x.dtype).repeat_interleave(c, 0).view(n * c, 1, 1, size)
    y = F.conv2d(F.conv2d(xp, kv, groups=n * c), kh, groups=n * c)
    return y.view(n, c, h, w)


def filter2d(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-sample 2-D correlation (``cv2.filter2D`` semantics): x ``(N, C, H, W)``, kernels ``(N, K, K)``, K odd.

    Kernels up to 7x7 use a grouped convolution, larger ones an FFT product (same result to ~1e-6, much faster
    for the 25-41 px kernels of the presets).
    """
    n, c, h, w = x.shape
    size = kernels.shape[-1]
    xp = _pad(x, size // 2)
    if size <= 7:
        weight = kernels.to(x.dtype).repeat_interleave(c, 0).view(n * c, 1, size, size)
        return F.conv2d(xp.reshape(1, n * c, *xp.shape[-2:]), weight, groups=n * c).view(n, c, h, w)
    hp, wp = xp.shape[-2:]
    spec = torch.fft.rfft2(xp.float(), s=(hp, wp))
    kspec = torch.fft.rfft2(kernels.float().flip(-1, -2), s=(hp, wp)).unsqueeze(1)
    y = torch.fft.irfft2(spec * kspec, s=(hp, wp))
    return y[..., size - 1 : size - 1 + h, size - 1 : size - 1 + w].to(x.dtype)


def median_blur(x: torch.Tensor, sizes: torch.Tensor, max_elements: int = 1 << 24) -> torch.Tensor:
    """Per-sample median filter (``cv2.medianBlur``: edge replication): x ``(N, C, H, W)``, odd sizes ``(N,)``.

    Loops over the distinct sizes (not the samples) and over row chunks of at most ``max_elements`` values.
    """
    out = x.clone()
    n, c, h, w = x.shape
    for k in sorted(set(int(v) for v in sizes.tolist())):
        idx = (sizes == k).nonzero().squeeze(1)
        sub = x[idx]
        p = k // 2
        xp = F.pad(sub, (p, p, p, p), mode="replicate")
        rows = max(1, max_elements // (len(idx) * c * w * k * k))
        res = []
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            patch = xp[:, :, r0 : r1 + k - 1].unfold(2, k, 1).unfold(3, k, 1)
            res.append(patch.reshape(*patch.shape[:4], k * k).median(-1).values)
        out[idx] = torch.cat(res, 2)
    return out


# --------------------------------------------------------------------------------------------- resampling
def resample_matrix(in_sizes: torch.Tensor, out_sizes: torch.Tensor, in_canvas: int, out_canvas: int) -> torch.Tensor:
    """Per-sample 1-D resampling matrices ``(N, out_canvas, in_canvas)``.

    Sample ``n`` maps its first ``in_sizes[n]`` input pixels to its first ``out_sizes[n]`` output pixels
    (rows beyond ``out_sizes[n]`` are zero): a triangle (bilinear) filter widened by the scale when shrinking
    (antialiased, as PIL's bilinear resize), plain bilinear with clamped edges (``align_corners=False``) when
    enlarging.
    """
    dev = in_sizes.device
    i = in_sizes.double().view(-1, 1, 1)
    o = out_sizes.double().view(-1, 1, 1)
    j = torch.arange(out_canvas, device=dev, dtype=torch.float64).view(1, -1, 1)
    k = torch.arange(in_canvas, device=dev, dtype=torch.float64).view(1, 1, -1)
    scale = i / o
    center = (j + 0.5) * scale - 0.5
    shrink = scale > 1
    center = torch.where(shrink, center, center.clamp(torch.zeros_like(i), i - 1))
    support = scale.clamp_min(1.0)
    wts = (1 - (k - center).abs() / support).clamp_min(0) * (k < i)
    wts = wts / wts.sum(-1, keepdim=True).clamp_min(1e-12)
    return (wts * (j < o)).float()


def resample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Apply per-sample matrices: x ``(N, C, H, W)``, rows ``(N, H', H)``, cols ``(N, W', W)`` -> ``(N, C, H', W')``."""
    y = torch.matmul(rows.unsqueeze(1).to(x.dtype), x)
    return torch.matmul(y, cols.transpose(-1, -2).unsqueeze(1).to(x.dtype))


def _replicate_beyond(x: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Fill each sample's canvas beyond its ``(height, width)`` by edge replication (libjpeg's MCU padding)."""
    n, c, hc, wc = x.shape
    ri = torch.minimum(torch.arange(hc, device=x.device).view(1, -1), heights.view(-1, 1) - 1)
    ci = torch.minimum(torch.arange(wc, device=x.device).view(1, -1), widths.view(-1, 1) - 1)
    x = torch.gather(x, 2, ri.view(n, 1, hc, 1).expand(n, c, hc, wc))
    return torch.gather(x, 3, ci.view(n, 1, 1, wc).expand(n, c, hc, wc))


# --------------------------------------------------------------------------------------------- small ops
def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma repeated on 3 channels: ``(N, 3, H, W)`` -> ``(N, 3, H, W)``, same range."""
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x).contiguous()


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Horizontal flip of ``(..., H, W)`` tensors (images or masks)."""
    return x.flip(-1)


def add_noise(x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Additive white Gaussian noise, independent per channel: x ``(N, C, H, W)`` in ``[0, 1]``, sigma ``(N,)`` on the
    0..255 scale, noise ``(N, C, H, W)`` standard normal -> ``x + sigma / 255 * noise`` (not clipped)."""
    return x + noise.to(x.dtype) * (sigma.to(x.dtype).view(-1, 1, 1, 1) / 255.0)


def stable_seed(*parts: int | str) -> int:
    """A 63-bit seed from ints / strings, the same on every machine and Python run (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------------------------- sampling
@dataclass
class DegradationParams:
    """One set of degradation parameters per sample; every field is an ``(N,)`` tensor.

    blur_kind indexes :data:`bfrzoo.data.presets.BLUR_KINDS`; sigma_x / sigma_y (pixels) and theta (radians)
    describe the Gaussian; box_size the average/median side; motion_length (pixels) and motion_angle
    (degrees) the motion blur; lq_height / lq_width the downsampled size; noise_sigma is on the 0..255 scale;
    quality the JPEG quality; gray whether the LQ becomes grayscale.
    """

    blur_kind: torch.Tensor
    sigma_x: torch.Tensor
    sigma_y: torch.Tensor
    theta: torch.Tensor
    box_size: torch.Tensor
    motion_length: torch.Tensor
    motion_angle: torch.Tensor
    lq_height: torch.Tensor
    lq_width: torch.Tensor
    noise_sigma: torch.Tensor
    quality: torch.Tensor
    gray: torch.Tensor

    def to(self, device: torch.device | str) -> DegradationParams:
        return DegradationParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def cat(items: Sequence[DegradationParams]) -> DegradationParams:
        return DegradationParams(**{f.name: torch.cat([getattr(p, f.name) for p in items]) for f in fields(DegradationParams)})


def sample_params(
    preset: DegradationPreset, n: int, height: int, width: int, generator: torch.Generator
) -> DegradationParams:
    """Draw ``n`` parameter sets uniformly from the preset's ranges (on the generator's device).

    Always draws the same count of numbers in the same order, so one seed fixes every field.
    """
    dev = generator.device

    def u() -> torch.Tensor:
        return torch.rand(n, generator=generator, device=dev, dtype=torch.float64)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * u()

    def integers(lo: int, hi: int) -> torch.Tensor:
        return (lo + torch.floor(u() * (hi - lo + 1))).long().clamp(lo, hi)

    kinds = torch.tensor([BLUR_KINDS.index(k) for k in preset.blur_kinds], device=dev)
    kind = kinds[(u() * len(kinds)).long().clamp(max=len(kinds) - 1)]
    sx, sy = uniform(*preset.gaussian_sigma), uniform(*preset.gaussian_sigma)
    theta = uniform(0.0, math.pi)
    iso = kind != BLUR_KINDS.index("aniso_gaussian")
    sy = torch.where(iso, sx, sy)
    lo_odd, hi_odd = (preset.box_size[0] + 1) // 2 * 2 - 1, (preset.box_size[1] - 1) // 2 * 2 + 1
    box = 2 * integers((lo_odd - 1) // 2, (max(hi_odd, lo_odd) - 1) // 2) + 1
    motion_len = integers(*preset.motion_length)
    motion_angle = uniform(0.0, 360.0)
    if preset.scale_sampling == "ratio":  # size ratio 1/s uniform (PSFR-GAN's imgaug Resize)
        scale = 1.0 / uniform(1.0 / preset.scale[1], 1.0 / preset.scale[0])
    else:  # factor s uniform (GPEN, MPCNet, MMRB)
        scale = uniform(*preset.scale)
    lq_h = torch.round(height / scale).long().clamp_min(min(preset.min_lq_size, height))
    lq_w = torch.round(width / scale).long().clamp_min(min(preset.min_lq_size, width))
    noise = uniform(*preset.noise_sigma)
    quality = integers(*preset.jpeg_quality)
    gray = u() < preset.gray_prob
    return DegradationParams(
        blur_kind=kind, sigma_x=sx.float(), sigma_y=sy.float(), theta=theta.float(), box_size=box,
        motion_length=motion_len, motion_angle=motion_angle.float(), lq_height=lq_h, lq_width=lq_w,
        noise_sigma=noise.float(), quality=quality, gray=gray,
    )


# --------------------------------------------------------------------------------------------- pipeline
def _blur(x: torch.Tensor, p: DegradationParams, preset: DegradationPreset) -> torch.Tensor:
    """Apply each sample's blur kernel; one batched call per blur kind present."""
    out = torch.empty_like(x)
    kind_ids = set(int(v) for v in p.blur_kind.unique().tolist())
    for kid in kind_ids:
        name = BLUR_KINDS[kid]
        idx = (p.blur_kind == kid).nonzero().squeeze(1)
        sub = x[idx]
        if name == "gaussian":
            radius = torch.ceil(3 * p.sigma_x[idx]).long().clamp(1, preset.gaussian_kernel // 2)
            size = 2 * int(radius.max()) + 1
            k = gaussian_kernels_1d(p.sigma_x[idx], size)
            t = torch.arange(size, device=x.device) - size // 2
            k = k * (t.view(1, -1).abs() <= radius.view(-1, 1))  # per-sample support, zero-padded to the max
            k = k / k.sum(-1, keepdim=True)
            out[idx] = filter_separable(sub, k)
        elif name == "aniso_gaussian":
            sig = torch.maximum(p.sigma_x[idx], p.sigma_y[idx])
            size = min(2 * int(torch.ceil(3 * sig.max())) + 1, preset.gaussian_kernel)
            out[idx] = filter2d(sub, gaussian_kernels(p.sigma_x[idx], p.sigma_y[idx], p.theta[idx], size))
        elif name == "average":
            size = int(p.box_size[idx].max())
            out[idx] = filter_separable(sub, box_kernels_1d(p.box_size[idx], size))
        elif name == "median":
            out[idx] = median_blur(sub, p.box_size[idx])
        else:  # motion
            size = int(p.motion_length[idx].max()) // 2 * 2 + 1
            out[idx] = filter2d(sub, motion_kernels(p.motion_length[idx], p.motion_angle[idx], size))
    return out


def apply_degradation(
    hq: torch.Tensor, params: DegradationParams, noise: torch.Tensor, preset: DegradationPreset
) -> torch.Tensor:
    """``up(JPEG_q(down_s(hq * k) + sigma * noise))`` for given parameters (deterministic).

    hq: ``(N, 3, H, W)`` in ``[0, 1]``; noise: ``(N, 3, h, w)`` standard normal with ``h, w`` at least the
    largest LQ size (only each sample's top-left ``lq_height x lq_width`` is used). Returns ``(N, 3, H, W)``
    in ``[0, 1]``. The LQ is clipped to ``[0, 1]`` and rounded to 8 bit (inside JPEG) as an 8-bit image
    pipeline (imgaug / OpenCV) would.
    """
    n, _, h, w = hq.shape
    dev = hq.device
    x = _blur(hq.float(), params, preset)
    hc, wc = int(params.lq_height.max()), int(params.lq_width.max())
    full_h = torch.full_like(params.lq_height, h)
    full_w = torch.full_like(params.lq_width, w)
    lq = resample(x, resample_matrix(full_h, params.lq_height, h, hc), resample_matrix(full_w, params.lq_width, w, wc))
    lq = add_noise(lq, params.noise_sigma, noise[:, :, :hc, :wc].to(dev))
    lq = _replicate_beyond(lq.clamp(0, 1), params.lq_height, params.lq_width)
    lq = jpeg(lq, params.quality)
    if bool(params.gray.any()):
        lq = torch.where(params.gray.view(-1, 1, 1, 1), to_grayscale(lq), lq)
    up = resample(lq, resample_matrix(params.lq_height, full_h, hc, h), resample_matrix(params.lq_width, full_w, wc, w))
    return up.clamp(0, 1).to(hq.dtype)


class Degrader:
    """Samples and applies a preset's degradation; the source of randomness is explicit.

    >>> lq = Degrader("gpen", seed=0)(hq)                       # training: continues one seeded stream
    >>> lq = Degrader("gpen")(hq, seeds=[11, 12, 13])            # evaluation: one seed per sample

    With ``seeds`` every sample's parameters and noise come from its own CPU generator and each sample is
    degraded on its own, so its LQ is bit-identical whatever batch or rank it is in (and the same on devices of
    one type; CPU and GPU differ by float rounding). This is the evaluation path, a loop over the samples;
    training uses the batched path: a generator on ``hq.device`` (seeded with ``seed`` on first use, or
    reseeded by the ``seed`` argument of the call), every op batched: the same seed gives the same output on
    the same device.
    """

    def __init__(self, preset: str | DegradationPreset = "common", seed: int = 0) -> None:
        self.preset = get_preset(preset)
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def generator(self, device: torch.device | str, seed: int | None = None) -> torch.Generator:
        """This degrader's generator on ``device``; reseeded when ``seed`` is given."""
        device = torch.device(device)
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        if seed is not None:
            self._generators[key].manual_seed(int(seed))
        return self._generators[key]

    def __call__(
        self, hq: torch.Tensor, seeds: Sequence[int] | torch.Tensor | None = None, seed: int | None = None
    ) -> torch.Tensor:
        """hq ``(N, 3, H, W)`` in ``[0, 1]`` on any device -> LQ of the same shape, device and range."""
        if hq.dim() != 4 or hq.shape[1] != 3:
            raise ValueError(f"degradation expects (N, 3, H, W) RGB batches in [0, 1], got shape {tuple(hq.shape)}")
        n, _, h, w = hq.shape
        if seeds is not None:
            seeds = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
            if len(seeds) != n:
                raise ValueError(f"got {len(seeds)} per-sample seeds for a batch of {n}")
            # One sample at a time: a batched call pads kernels / canvases to the batch maximum, and the
            # resulting ulp-level differences can flip 8-bit and JPEG roundings (measured: up to 6 grey
            # levels). Evaluation LQ must be bit-identical whatever the batch, so it is not batched.
            out = []
            for i, s in enumerate(seeds):
                g = torch.Generator().manual_seed(s)
                p = sample_params(self.preset, 1, h, w, g)
                noise = torch.randn(1, 3, int(p.lq_height), int(p.lq_width), generator=g)
                out.append(apply_degradation(hq[i : i + 1], p.to(hq.device), noise.to(hq.device), self.preset))
            return torch.cat(out)
        g = self.generator(hq.device, seed)
        params = sample_params(self.preset, n, h, w, g)
        hc, wc = int(params.lq_height.max()), int(params.lq_width.max())
        noise = torch.randn(n, 3, hc, wc, generator=g, device=hq.device)
        return apply_degradation(hq, params, noise, self.preset)


def degrade(hq: torch.Tensor, preset: str | DegradationPreset, seed: int) -> torch.Tensor:
    """Degrade a batch with a named preset: ``(N, 3, H, W)`` in ``[0, 1]``, any device -> same shape in ``[0, 1]``.

    The same seed gives the same output on the same device. See :mod:`bfrzoo.data.presets` for the models.
    """
    return Degrader(preset, seed=seed)(hq, seed=seed)
