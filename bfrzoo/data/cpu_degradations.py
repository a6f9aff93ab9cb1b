"""The per-image OpenCV executor of bfrzoo's degradation model, for CPU DataLoader workers and fixed test sets.

One sampler, two executors. :func:`bfrzoo.data.degradations.sample_params` draws every parameter; the batched
torch executor (:func:`bfrzoo.data.degradations.apply_degradation`) and this one apply the same model

    LQ = up_s( JPEG_q( down_s(HQ * k) + n_sigma ) )

(GPEN Eq. (4), PSFR-GAN Eq. (12), MPCNet Sec. 3.1, MMRB Eq. (17); the ranges are in :mod:`bfrzoo.data.presets`).

Why two. The torch executor keeps a whole batch in a few tensor ops (zero-padded kernels, one shared LQ canvas,
per-sample resampling matrices): what a GPU wants, and it stays the executor of device-side degradation. On a
CPU those same tricks cost more than they save: a batched median is ~200x slower than ``cv2.medianBlur``
(sizes up to 15 in ``mpcnet`` / ``psfrgan``), and one upsampling image (``mmrb``, s < 1) makes the whole batch
share a canvas up to 1280 px. This executor degrades one image at a time with OpenCV's kernels, so a CPU
worker does only the work that image needs; it is what :class:`~bfrzoo.data.FaceDataModule` runs in its loader
workers when training on a CPU (``degrade_on="workers"``), for every validation / test image, and in
``bfrzoo degrade``.

What is the same. The parameters (one seed -> the same :class:`~bfrzoo.data.degradations.DegradationParams`
as the torch evaluation path), the kernels (bfrzoo's own :func:`~bfrzoo.data.degradations.gaussian_kernels_1d`,
:func:`~bfrzoo.data.degradations.gaussian_kernels` and :func:`~bfrzoo.data.degradations.motion_kernels`), the
per-image Gaussian support ``min(2 ceil(3 sigma) + 1, gaussian_kernel)``, the borders (reflect-101 when the
kernel radius is smaller than the image, else edge replication; the median always replicates, as
``cv2.medianBlur`` does), noise on the 0..255 scale per channel, clipping and 8-bit rounding before JPEG,
grayscale after it (ITU-R 601 luma), bilinear (half-pixel, clamped) upsampling.

What differs numerically, and by how much (``tests/test_cpu_degradations.py`` pins the statistics):

* JPEG: real libjpeg (``cv2.imencode`` / ``cv2.imdecode``, baseline 4:2:0, IJG tables, integer DCT and colour
  conversion) here; the torch executor's JPEG (:mod:`bfrzoo.data.jpeg`) is a float re-implementation that
  differs by one or two grey levels on a few pixels. This executor's JPEG equals PIL's and
  ``torchvision.io``'s bit for bit at the same quality (4:2:0 is all three defaults).
* Downsampling: ``cv2.INTER_AREA`` (exact area averaging, a box filter as wide as the scale), where the torch
  executor uses an antialiased bilinear filter (a triangle twice as wide, as PIL's bilinear resize). Area
  averaging keeps slightly more detail; over many draws the mean PSNR of LQ to HQ differs by a few tenths of
  a dB at most (measured per preset in the tests). Shrinking at s < 1 back to the HQ size likewise uses
  ``INTER_AREA``; enlarging is bilinear in both executors.
* Median: ``cv2.medianBlur`` on the image rounded to 8 bit (OpenCV has no large float median), against a float
  median in torch: at most half a grey level before the rest of the pipeline.
* Noise: standard normal from OpenCV's generator (``cv2.randn``, seeded per image with :func:`noise_seed`), not
  the torch path's draws: the same distribution, other samples, twice as fast to draw (noise of a 1280 px LQ,
  ``mmrb`` at s = 0.4, is 5 M numbers). :func:`apply_params` takes any noise, so the two executors can be run
  on identical noise (the tests do).
* Float order: OpenCV's separable / DFT filtering and resizing round differently from torch's; results agree to
  ~1e-6 before the 8-bit rounding, which can then flip a value by one level.

Evaluation needs bit-identical LQ whatever the batch, rank or worker: every function here is per image, and the
output depends only on the image, the preset and the seed (and on the OpenCV build: a different CPU or OpenCV
version may round a few values differently, as any float pipeline).
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from bfrzoo.data.degradations import (
    DegradationParams,
    gaussian_kernels,
    gaussian_kernels_1d,
    motion_kernels,
    sample_params,
    stable_seed,
)
from bfrzoo.data.presets import BLUR_KINDS, DegradationPreset, get_preset

__all__ = [
    "apply_params",
    "blur",
    "degrade_image",
    "degrade_tensor",
    "degraded_lq",
    "image_seeds",
    "jpeg_libjpeg",
    "limit_opencv_threads_in_worker",
    "noise_seed",
    "resize",
    "sample_image",
    "to_uint8",
]


# --------------------------------------------------------------------------------------------- sampling
def sample_image(preset: str | DegradationPreset, height: int, width: int, seed: int) -> tuple[DegradationParams, np.ndarray]:
    """One image's parameters and noise from its own seed.

    The parameters are bfrzoo's sampler's: a CPU ``torch.Generator`` seeded with ``seed`` draws
    ``sample_params(preset, 1, height, width)``, exactly what ``Degrader(preset)(hq, seeds=[seed])`` draws. The
    noise, ``(lq_height, lq_width, 3)`` float32 standard normal (RGB order), comes from OpenCV's generator
    (``cv2.setRNGSeed(noise_seed(seed))`` then ``cv2.randn``): same distribution as the torch path's noise, other
    samples, drawn in about half the time. Returns ``(params, noise)``.
    """
    params = sample_params(get_preset(preset), 1, height, width, torch.Generator().manual_seed(int(seed)))
    noise = np.empty((int(params.lq_height), int(params.lq_width), 3), dtype=np.float32)
    cv2.setRNGSeed(noise_seed(seed))  # OpenCV's default generator is per thread: set and used right here
    cv2.randn(noise, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return params, noise


def noise_seed(seed: int) -> int:
    """The 31-bit seed of an image's noise (``cv2.setRNGSeed`` takes a C ``int``): ``stable_seed(seed, "noise")``."""
    return stable_seed(int(seed), "noise") % (1 << 31)


def image_seeds(batch_seed: int, n: int) -> list[int]:
    """Per-image seeds of a training batch: ``stable_seed(batch_seed, "image", i)`` for ``i < n``."""
    return [stable_seed(int(batch_seed), "image", i) for i in range(n)]


# --------------------------------------------------------------------------------------------- small ops
def _border(radius: int, height: int, width: int) -> int:
    """The torch executor's padding rule: reflect-101 when the radius fits the image, else edge replication."""
    return cv2.BORDER_REFLECT_101 if radius < min(height, width) else cv2.BORDER_REPLICATE


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in ``[0, 1]`` (values outside are clipped) -> uint8: ``round(255 x)`` half to even (as
    ``torch.round``), saturated at 255 (``cv2.convertScaleAbs``, after zeroing negative values if there are any)."""
    if float(image.min()) < 0.0:
        image = np.clip(image, 0.0, None)
    return cv2.convertScaleAbs(image, alpha=255.0)


def _to_float(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in ``[0, 1]`` (one pass); float32 passes through, other floats are cast."""
    if image.dtype == np.uint8:
        return np.multiply(image, np.float32(1 / 255), dtype=np.float32)
    return image if image.dtype == np.float32 else image.astype(np.float32)


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to ``(height, width)``: area averaging (``cv2.INTER_AREA``) when shrinking, bilinear with
    half-pixel centres and clamped edges (``cv2.INTER_LINEAR``) when enlarging, one axis at a time when one
    axis shrinks and the other grows; the same size is a no-op."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if height <= h and width <= w:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if height >= h and width >= w:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    return resize(resize(image, height, w), height, width)


def jpeg_libjpeg(image: np.ndarray, quality: int, bgr: bool = False) -> np.ndarray:
    """Baseline JPEG through libjpeg (OpenCV's build): uint8 ``(H, W, 3)`` RGB (BGR with ``bgr``, OpenCV's own
    order, which saves two conversions) -> the decoded uint8 image in the same order.

    IJG quality scaling, 4:2:0 chroma subsampling set explicitly (the default of OpenCV, PIL and
    ``torchvision.io.encode_jpeg``, so all three give the same bytes back).
    """
    flags = (
        cv2.IMWRITE_JPEG_QUALITY, int(quality),
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    )
    ok, buf = cv2.imencode(".jpg", image if bgr else cv2.cvtColor(image, cv2.COLOR_RGB2BGR), flags)
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {image.shape}")
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out if bgr else cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def limit_opencv_threads_in_worker() -> None:
    """Inside a DataLoader worker, make OpenCV single-threaded (torch does so for itself): N workers on N cores
    with N threads each would oversubscribe the machine. A no-op in the main process."""
    if torch.utils.data.get_worker_info() is not None and cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


# --------------------------------------------------------------------------------------------- executor
def blur(image: np.ndarray, params: DegradationParams, preset: str | DegradationPreset) -> np.ndarray:
    """The image's blur ``HQ * k``: image ``(H, W, C)`` float32 in ``[0, 1]`` (uint8 is accepted: it is what the
    median runs on); params of one sample. Returns float32 ``(H, W, C)``.

    Kernel sizes follow the torch executor per image: Gaussian radius ``clamp(ceil(3 sigma), 1,
    gaussian_kernel // 2)``; anisotropic side ``min(2 ceil(3 max(sigma_x, sigma_y)) + 1, gaussian_kernel)``;
    motion side ``length // 2 * 2 + 1``; box / median side ``box_size``.
    """
    preset = get_preset(preset)
    kind = BLUR_KINDS[int(params.blur_kind)]
    h, w = image.shape[:2]
    if kind == "median":
        u8 = image if image.dtype == np.uint8 else to_uint8(image)
        return _to_float(cv2.medianBlur(u8, int(params.box_size)))
    x = _to_float(image)
    if kind == "gaussian":
        radius = int(torch.ceil(3 * params.sigma_x).clamp(1, preset.gaussian_kernel // 2))
        k = gaussian_kernels_1d(params.sigma_x, 2 * radius + 1)[0].numpy()
        return cv2.sepFilter2D(x, -1, k, k, borderType=_border(radius, h, w))
    if kind == "aniso_gaussian":
        sig = torch.maximum(params.sigma_x, params.sigma_y)
        size = min(2 * int(torch.ceil(3 * sig)) + 1, preset.gaussian_kernel)
        k = gaussian_kernels(params.sigma_x, params.sigma_y, params.theta, size)[0].numpy()
        return cv2.filter2D(x, -1, k, borderType=_border(size // 2, h, w))
    if kind == "average":
        size = int(params.box_size)
        return cv2.blur(x, (size, size), borderType=_border(size // 2, h, w))
    size = int(params.motion_length) // 2 * 2 + 1  # motion
    k = motion_kernels(params.motion_length, params.motion_angle, size)[0].numpy()
    return cv2.filter2D(x, -1, k, borderType=_border(size // 2, h, w))


def degraded_lq(
    image: np.ndarray, params: DegradationParams, noise: np.ndarray, preset: str | DegradationPreset,
    bgr: bool = False,
) -> np.ndarray:
    """The LQ itself, ``JPEG_q(down_s(image * k) + sigma * noise)`` (grayscale if drawn), before upsampling.

    image: ``(H, W, 3)`` RGB (BGR with ``bgr``: image and noise in OpenCV's order), float32 in ``[0, 1]`` or
    uint8; params: one sample's :class:`~bfrzoo.data.degradations.DegradationParams`; noise:
    ``(lq_height, lq_width, 3)`` standard normal (or larger: the top-left corner is used). Returns
    ``(lq_height, lq_width, 3)`` float32 in ``[0, 1]`` in the image's channel order, holding 8-bit values (unless
    grayscale).
    """
    preset = get_preset(preset)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the OpenCV degradation expects (H, W, 3) RGB images, got shape {image.shape}")
    lq_h, lq_w = int(params.lq_height), int(params.lq_width)
    lq = resize(blur(image, params, preset), lq_h, lq_w)
    sigma = float(params.noise_sigma.to(torch.float32) / 255.0)
    lq = cv2.scaleAdd(np.ascontiguousarray(noise[:lq_h, :lq_w]), sigma, lq)
    lq = _to_float(jpeg_libjpeg(to_uint8(lq), int(params.quality), bgr=bgr))
    if bool(params.gray):
        lq = cv2.merge([cv2.cvtColor(lq, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)] * 3)
    return lq


def _upsample_into(lq: np.ndarray, targets: Sequence[np.ndarray]) -> None:
    """:func:`resize` the ``(h, w, 3)`` LQ (values in ``[0, 1]``) to the size of the three ``(H, W)`` float32
    planes ``targets``, channel ``c`` into ``targets[c]`` without an intermediate copy where OpenCV allows.

    Enlarging (the usual case) runs plane by plane, faster than one 3-channel call, and needs no clamp:
    float32 bilinear weights ``1 - f`` and ``f`` sum to at most 1 after rounding, so values <= 1 stay <= 1
    (``tests/test_cpu_degradations.py`` checks it on random cases). Shrinking back (s < 1) runs as one
    3-channel call (single-channel ``INTER_AREA`` is several times slower) and is capped at 1: area weights
    can overshoot by an ulp.
    """
    (h, w), (lh, lw) = targets[0].shape, lq.shape[:2]
    if lh <= h and lw <= w and (lh, lw) != (h, w):
        for plane, dst in zip(cv2.split(lq), targets):
            cv2.resize(plane, (w, h), dst=dst, interpolation=cv2.INTER_LINEAR)
        return
    cv2.split(resize(lq, h, w), list(targets))
    for dst in targets:
        cv2.min(dst, 1.0, dst=dst)


def apply_params(
    image: np.ndarray, params: DegradationParams, noise: np.ndarray, preset: str | DegradationPreset
) -> np.ndarray:
    """``up(JPEG_q(down_s(image * k) + sigma * noise))`` for one image's parameters (deterministic): the
    :func:`degraded_lq` resized back to the image's size and clipped. Returns ``(H, W, 3)`` float32 in ``[0, 1]``.
    """
    planes = np.empty((3, *image.shape[:2]), dtype=np.float32)
    _upsample_into(degraded_lq(image, params, noise, preset), list(planes))  # as degrade_tensor: the same bits
    return cv2.merge(list(planes))


def degrade_image(image: np.ndarray, preset: str | DegradationPreset, seed: int) -> np.ndarray:
    """Degrade one ``(H, W, 3)`` RGB image (float32 in ``[0, 1]`` or uint8) with its own seed -> float32 in
    ``[0, 1]``; the parameters and noise are :func:`sample_image`'s."""
    params, noise = sample_image(preset, image.shape[0], image.shape[1], seed)
    return apply_params(image, params, noise, preset)


def _bgr(image: torch.Tensor) -> np.ndarray:
    """A ``(3, H, W)`` RGB CPU tensor as an ``(H, W, 3)`` BGR float32 array (one interleaving pass)."""
    planes = image.detach().to(torch.float32).contiguous().numpy()
    return cv2.merge([planes[2], planes[1], planes[0]])


def degrade_tensor(
    hq: torch.Tensor, preset: str | DegradationPreset, seeds: Sequence[int], out: torch.Tensor | None = None
) -> torch.Tensor:
    """Degrade a CPU batch image by image: hq ``(N, 3, H, W)`` in ``[0, 1]``, one seed per image -> LQ of the same
    shape in ``[0, 1]`` (float32, written into ``out`` when given: a contiguous float32 CPU tensor of that shape).
    Image ``i`` depends only on ``hq[i]`` and ``seeds[i]``."""
    if hq.dim() != 4 or hq.shape[1] != 3:
        raise ValueError(f"degradation expects (N, 3, H, W) RGB batches in [0, 1], got shape {tuple(hq.shape)}")
    if len(seeds) != hq.shape[0]:
        raise ValueError(f"got {len(seeds)} per-image seeds for a batch of {hq.shape[0]}")
    preset = get_preset(preset)
    n, _, h, w = hq.shape
    if out is None:
        out = torch.empty(n, 3, h, w, dtype=torch.float32)
    elif out.shape != hq.shape or out.dtype != torch.float32 or not out.is_contiguous() or out.device.type != "cpu":
        raise ValueError(f"out must be a contiguous float32 CPU tensor of shape {tuple(hq.shape)}")
    planes = out.numpy()
    for i, s in enumerate(seeds):  # in OpenCV's BGR order, so the JPEG step needs no colour-order conversion
        params, noise = sample_image(preset, h, w, int(s))
        lq = degraded_lq(_bgr(hq[i].cpu()), params, cv2.cvtColor(noise, cv2.COLOR_RGB2BGR), preset, bgr=True)
        _upsample_into(lq, [planes[i, 2], planes[i, 1], planes[i, 0]])  # straight into the batch's RGB planes
    return out
