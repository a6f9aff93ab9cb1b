"""Baseline JPEG (encode + decode) in PyTorch, batched, per-sample quality, CPU or GPU.

Follows the JFIF / IJG (libjpeg) baseline path that PIL and OpenCV use by default:
RGB -> YCbCr (JFIF, full range), 4:2:0 chroma subsampling (2x2 box average), level shift, 8x8 DCT-II,
quantisation with the IJG quality-scaled standard tables (Annex K of ITU-T T.81), rounding, dequantisation,
IDCT, chroma upsampling (libjpeg's "fancy" triangle filter = bilinear x2), YCbCr -> RGB, 8-bit rounding.
Entropy coding is lossless and therefore skipped. Partial MCUs are filled by edge replication as libjpeg does.
Differences from libjpeg: floating-point colour conversion and DCT instead of libjpeg's fixed-point integer
versions, so a few pixel values differ by one or two grey levels (measured in ``tests/test_degradations.py``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-T T.81 Annex K, Tables K.1 (luminance) and K.2 (chrominance), row-major.
LUMA_TABLE: tuple[int, ...] = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)
CHROMA_TABLE: tuple[int, ...] = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99,
)


def quality_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IJG quality scaling (libjpeg ``jpeg_quality_scaling`` + baseline clamp to [1, 255]).

    quality: ``(N,)`` integers in ``[1, 100]`` -> luma and chroma tables, each ``(N, 8, 8)`` float.
    """
    q = quality.to(torch.float64).clamp(1, 100).round()
    scale = torch.where(q < 50, torch.floor(5000.0 / q), 200.0 - 2.0 * q)
    out = []
    for base in (LUMA_TABLE, CHROMA_TABLE):
        b = torch.tensor(base, dtype=torch.float64, device=quality.device).view(1, 8, 8)
        t = torch.floor((b * scale.view(-1, 1, 1) + 50.0) / 100.0).clamp(1, 255)
        out.append(t.to(torch.float32))
    return out[0], out[1]


def _dct_matrix(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal 8-point DCT-II matrix ``D`` so that ``D @ block @ D.T`` is the JPEG FDCT."""
    k = torch.arange(8, dtype=torch.float64).view(8, 1)
    n = torch.arange(8, dtype=torch.float64).view(1, 8)
    d = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(device=device, dtype=dtype)


def _quantize_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` level-shifted samples (H, W multiples of 8), tables ``(N, 8, 8)`` -> decoded plane.

    The 2-D DCT of every block is one GEMM with ``kron(D, D)`` (``vec(D B D^T) = (D x D) vec(B)``), which is
    far faster on GPUs than millions of batched 8x8 products.
    """
    n, c, h, w = plane.shape
    d = _dct_matrix(plane.device, plane.dtype)
    kron = torch.kron(d, d)  # (64, 64)
    blocks = plane.reshape(n, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h // 8, w // 8, 64)
    coef = blocks @ kron.T
    t = table.reshape(n, 1, 1, 1, 64)
    coef = torch.round(coef / t) * t
    rec = (coef @ kron).reshape(n, c, h // 8, w // 8, 8, 8)
    return rec.permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


def jpeg(images: torch.Tensor, quality: torch.Tensor | int) -> torch.Tensor:
    """Compress and decompress ``images`` as baseline 4:2:0 JPEG at the given quality.

    images: ``(N, 3, H, W)`` float in ``[0, 1]`` (any H, W >= 1; edges replicated to whole 16x16 MCUs).
    quality: int or ``(N,)`` tensor of IJG qualities in ``[1, 100]`` (one per sample).
    Returns ``(N, 3, H, W)`` float in ``[0, 1]`` holding 8-bit values (multiples of 1/255).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"jpeg expects (N, 3, H, W) images, got shape {tuple(images.shape)}")
    n, _, h, w = images.shape
    q = torch.as_tensor(quality, device=images.device)
    if q.dim() == 0:
        q = q.expand(n)
    luma_t, chroma_t = quality_tables(q)
    x = (images.float().clamp(0, 1) * 255.0).round()
    ph, pw = (-h) % 16, (-w) % 16
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    # libjpeg rounds the converted samples to 8 bit before downsampling; level shift (-128) folded in.
    fwd, bwd = _colour_matrices(x.device)
    shift = torch.tensor((-128.0, 0.0, 0.0), device=x.device).view(1, 3, 1, 1)
    ycc = (_colour(x, fwd) + shift).round()
    chroma = F.avg_pool2d(ycc[:, 1:], 2)  # h2v2 downsampling: 2x2 box average
    y_rec = (_quantize_plane(ycc[:, :1], luma_t) + 128.0).round().clamp(0, 255)
    c_rec = (_quantize_plane(chroma, chroma_t) + 128.0).round().clamp(0, 255) - 128.0
    c_up = F.interpolate(c_rec, scale_factor=2, mode="bilinear", align_corners=False)  # fancy upsampling
    rgb = _colour(torch.cat([y_rec, c_up], 1), bwd)
    out = rgb.round().clamp(0, 255) / 255.0
    return out[:, :, :h, :w].to(images.dtype)


def _colour(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Per-pixel 3x3 colour transform ``(N, 3, H, W)`` -> ``(N, 3, H, W)`` in two elementwise passes.

    A broadcast product and a 3-term sum rather than a 1x1 convolution or GEMM: every pixel gets exactly the
    same float operations whatever the batch size, so per-sample-seeded LQ does not depend on batch composition
    (a convolution's blocking may change with N, and the 8-bit rounding then turns ulps into grey levels).
    """
    return (x.unsqueeze(1) * matrix.view(1, 3, 3, 1, 1)).sum(2)


def _colour_matrices(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """JFIF RGB -> YCbCr (Cb, Cr centred on 0) and YCbCr -> RGB ``(3, 3)`` matrices."""
    fwd = torch.tensor(
        ((0.299, 0.587, 0.114), (-0.168735892, -0.331264108, 0.5), (0.5, -0.418687589, -0.081312411))
    )
    bwd = torch.tensor(((1.0, 0.0, 1.402), (1.0, -0.344136286, -0.714136286), (1.0, 1.772, 0.0)))
    return fwd.to(device), bwd.to(device)
