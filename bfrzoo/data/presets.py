"""Degradation presets: each paper's synthetic LQ model ``((HQ * k) downsample_s + n_sigma)_JPEG_q``, upsampled back.

A preset is a frozen dataclass of parameter RANGES; :class:`bfrzoo.data.degradations.Degrader` samples one
value per image from them. Every range below is quoted from the paper section named in the preset's
``citation``; where a paper leaves a value out or cannot be applied literally, the field docstring and the
``notes`` say what we chose and why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bfrzoo.errors import UnknownNameError

BLUR_KINDS: tuple[str, ...] = ("gaussian", "aniso_gaussian", "average", "median", "motion")


@dataclass(frozen=True)
class DegradationPreset:
    """Ranges of the classic blind-face-restoration degradation, one value drawn per image.

    Attributes:
        name: preset name (key of :data:`PRESETS`).
        citation: paper and section the ranges come from.
        blur_kinds: kernels to choose from, uniformly, one per image (subset of :data:`BLUR_KINDS`).
        gaussian_sigma: ``(lo, hi)`` Gaussian standard deviation in HQ pixels (uniform); anisotropic kernels
            draw both axes and an angle from it.
        gaussian_kernel: largest Gaussian kernel side (odd); the actual side is ``min(2*ceil(3 sigma)+1, this)``.
        box_size: ``(lo, hi)`` odd side of the average / median kernels (uniform over the odd integers).
        motion_length: ``(lo, hi)`` motion-blur line length in pixels (uniform integer), random angle.
        scale: ``(lo, hi)`` downsampling factor ``s``: the LQ is ``round(H / s)`` pixels high.
        scale_sampling: ``"factor"`` draws ``s`` uniformly from ``scale`` (GPEN, MPCNet, MMRB: "s is uniformly
            sampled from [a, b]"); ``"ratio"`` draws the size ratio ``1 / s`` uniformly from
            ``[1 / hi, 1 / lo]`` (PSFR-GAN: imgaug ``Resize((32/512, 256/512))``, so the LQ side is uniform).
        min_lq_size: smallest LQ side in pixels (clamps large ``s``).
        noise_sigma: ``(lo, hi)`` std of the additive Gaussian noise on the 0..255 scale, independent per channel.
        jpeg_quality: ``(lo, hi)`` IJG JPEG quality (uniform integer, inclusive).
        gray_prob: probability of turning the LQ image grayscale (0 for the paper presets).
        notes: how the preset departs from a literal reading of the paper, if it does.
    """

    name: str
    citation: str
    blur_kinds: tuple[str, ...]
    gaussian_sigma: tuple[float, float]
    gaussian_kernel: int
    box_size: tuple[int, int]
    motion_length: tuple[int, int]
    scale: tuple[float, float]
    noise_sigma: tuple[float, float]
    jpeg_quality: tuple[int, int]
    scale_sampling: Literal["factor", "ratio"] = "factor"
    min_lq_size: int = 4
    gray_prob: float = 0.0
    notes: str = ""

    def __post_init__(self) -> None:
        bad = [k for k in self.blur_kinds if k not in BLUR_KINDS]
        if bad or not self.blur_kinds:
            raise ValueError(f"preset {self.name!r}: blur kinds {bad or '()'} not in {BLUR_KINDS}")
        for field in ("gaussian_sigma", "box_size", "motion_length", "scale", "noise_sigma", "jpeg_quality"):
            lo, hi = getattr(self, field)
            if lo > hi:
                raise ValueError(f"preset {self.name!r}: {field} range ({lo}, {hi}) has lo > hi")
        if not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
            raise ValueError(f"preset {self.name!r}: JPEG quality must lie in [1, 100]")
        if self.scale_sampling not in ("factor", "ratio"):
            raise ValueError(
                f"preset {self.name!r}: scale_sampling must be 'factor' or 'ratio', got {self.scale_sampling!r}"
            )
        if self.scale[0] <= 0 or self.min_lq_size < 1 or self.gaussian_kernel % 2 == 0:
            raise ValueError(f"preset {self.name!r}: scale must be > 0, min_lq_size >= 1, gaussian_kernel odd")


GPEN = DegradationPreset(
    name="gpen",
    citation="GPEN (Yang et al., CVPR 2021), Sec. 4.2, Eq. (4)",
    blur_kinds=("gaussian", "motion"),
    gaussian_sigma=(0.2, 10.0),
    gaussian_kernel=41,
    box_size=(3, 3),
    motion_length=(5, 25),
    scale=(10.0, 200.0),
    noise_sigma=(0.0, 25.0),
    jpeg_quality=(5, 50),
    notes=(
        "Sec. 4.2 gives the blur family (Gaussian and motion, 'varying kernel sizes') but no ranges: we use "
        "Gaussian sigma 0.2-10 (kernel <= 41) and motion length 5-25 (the ranges of the other presets). "
        "s is 'uniformly sampled from [10, 200]' as written (the paper trains at 1024 px, where s = 200 leaves "
        "~5 px); at 512 px that can leave a 2.5 px image, so the LQ side is clamped to at least "
        "min_lq_size = 4 px (at 512 px every s > 114, about 45 % of the draws, gives that 4 px floor)."
    ),
)

PSFRGAN = DegradationPreset(
    name="psfrgan",
    citation="PSFR-GAN (Chen et al., CVPR 2021), appendix B, Eq. (12)",
    blur_kinds=("gaussian", "average", "median", "motion"),
    gaussian_sigma=(3.0, 15.0),
    gaussian_kernel=91,
    box_size=(3, 15),
    motion_length=(5, 25),
    scale=(2.0, 16.0),
    noise_sigma=(0.0, 25.5),
    jpeg_quality=(35, 90),
    scale_sampling="ratio",
    notes=(
        "Built with imgaug: GaussianBlur's parameter 3..15 is sigma; the kernel side is 2*ceil(3 sigma)+1 "
        "(<= 91 px), about what OpenCV's 8-bit GaussianBlur behind imgaug uses; AverageBlur / MedianBlur "
        "k 3..15 (odd sides here: a median needs a centre pixel); MotionBlur k 5..25 at a random angle. "
        "The resize scale r in [32/512, 256/512] is drawn uniformly as a size ratio (the LQ side is uniform "
        "in 32..256 px at 512), i.e. s = 1/r in 2..16; we resize with an antialiased bilinear filter, "
        "imgaug's default is bicubic. imgaug's JpegCompression 'compression 10..65' (higher = stronger) is JPEG quality 100 - compression = 35..90."
    ),
)

MPCNET = DegradationPreset(
    name="mpcnet",
    citation="MPCNet (Teng et al., Front. Neurorobot. 2022), Sec. 3.1",
    blur_kinds=("gaussian", "average", "median", "motion"),
    gaussian_sigma=(3.0, 15.0),
    gaussian_kernel=91,
    box_size=(3, 15),
    motion_length=(5, 25),
    scale=(4.0, 16.0),
    noise_sigma=(0.0, 25.5),
    jpeg_quality=(35, 90),
    notes=(
        "Same kernel family and parameter 3..15 as PSFR-GAN (Gaussian parameter read as sigma, kernel capped "
        "at 91 px); r in [4, 16]; noise 0..0.1*255. 'Compression level q in [10, 65], higher means stronger "
        "compression' is JPEG quality 100 - q = 35..90."
    ),
)

MMRB = DegradationPreset(
    name="mmrb",
    citation="MMRB network (Hu et al.), journal version Sec. IV-A, Eq. (17); preprint Eq. (17)",
    blur_kinds=("gaussian", "motion"),
    gaussian_sigma=(0.2, 10.0),
    gaussian_kernel=41,
    box_size=(3, 3),
    motion_length=(5, 25),
    scale=(0.4, 8.0),
    noise_sigma=(0.0, 25.0),
    jpeg_quality=(5, 50),
    notes=(
        "k, s, delta, q are drawn from '41, [0.4 : 8], [0 : 25], [5 : 50]': kernel size 41 with Gaussian and "
        "motion blur. The sigma range is not given: we use 0.2-10 as in GPEN/GFPGAN, which the paper follows; "
        "motion length 5-25. s < 1 resizes up and back (a mild interpolation blur) as written."
    ),
)

COMMON = DegradationPreset(
    name="common",
    citation="bfrzoo's shared preset for fair cross-model comparison, after GFPGAN's (Wang et al., CVPR 2021) ranges",
    blur_kinds=("gaussian", "aniso_gaussian"),
    gaussian_sigma=(0.1, 10.0),
    gaussian_kernel=41,
    box_size=(3, 3),
    motion_length=(5, 25),
    scale=(1.0, 8.0),
    noise_sigma=(0.0, 15.0),
    jpeg_quality=(60, 100),
    notes=(
        "Not a paper's model: one moderate setting used to compare all networks on the same LQ. Isotropic or "
        "anisotropic Gaussian blur sigma 0.1-10 (kernel 41), downsampling 1-8, noise 0-15, JPEG 60-100."
    ),
)

PRESETS: dict[str, DegradationPreset] = {p.name: p for p in (GPEN, PSFRGAN, MPCNET, MMRB, COMMON)}


def get_preset(name: str | DegradationPreset) -> DegradationPreset:
    """The preset called ``name`` (a preset object passes through); unknown names list the known ones."""
    if isinstance(name, DegradationPreset):
        return name
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise UnknownNameError(
            f"unknown degradation preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
        ) from None
