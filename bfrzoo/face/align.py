"""Similarity alignment of a face to the 5-point template, and the batched warps into and out of the aligned crop.

Coordinates are pixel indices (the centre of the top-left pixel is ``(0, 0)``), as in OpenCV and scikit-image.
An alignment is a ``(2, 3)`` affine matrix ``M`` that maps photo pixels to crop pixels,
``[u, v] = M @ [x, y, 1]``; :func:`fit_similarity` finds the least-squares similarity (rotation, uniform scale,
translation) that takes the five detected landmarks onto the template, as
``skimage.transform.SimilarityTransform.estimate`` does (Umeyama, "Least-squares estimation of transformation
parameters between two point patterns", TPAMI 1991, Eq. 40-42).

Warps run on the device with kornia (``kornia.geometry.transform.warp_affine``, bilinear, ``align_corners=True``:
the pixel-centre convention of ``cv2.warpAffine``). :func:`warp_faces` never moves the whole photo to the device:
each face's region of interest (the bounding box of its crop in the photo) is sliced out, brought to about the
crop's resolution (antialiased, ``cv2.INTER_AREA``) when the face is larger than the crop, padded to one common
size and warped as one batch.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: The FFHQ 512 x 512 five-point template (left eye, right eye, nose tip, left and right mouth corner; "left" is
#: the smaller x in the image), in pixel coordinates: the reference facexlib and GFPGAN align to.
FFHQ_TEMPLATE_512: tuple[tuple[float, float], ...] = (
    (192.98138, 239.94708),
    (318.90277, 240.1936),
    (256.63416, 314.01935),
    (201.26117, 371.41043),
    (313.08905, 371.15118),
)


def template(size: int = 512) -> torch.Tensor:
    """The five template points for a ``size x size`` crop, ``(5, 2)`` float64 (the 512 template scaled)."""
    return torch.tensor(FFHQ_TEMPLATE_512, dtype=torch.float64) * (size / 512.0)


def fit_similarity(src: torch.Tensor | np.ndarray, dst: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Least-squares similarity transforms taking ``src`` points onto ``dst`` points.

    Args:
        src: ``(B, N, 2)`` or ``(N, 2)`` points (the detected landmarks), ``N >= 2``.
        dst: the same shape or ``(N, 2)`` (the template, shared by the batch).

    Returns:
        ``(B, 2, 3)`` float64 matrices ``M`` with ``dst ~ M @ [src, 1]`` (``(2, 3)`` when ``src`` is unbatched).
        Degenerate inputs (all points equal) give a pure translation.
    """
    src_t = torch.as_tensor(src, dtype=torch.float64)
    dst_t = torch.as_tensor(dst, dtype=torch.float64)
    unbatched = src_t.ndim == 2
    if unbatched:
        src_t = src_t[None]
    if dst_t.ndim == 2:
        dst_t = dst_t[None].expand(src_t.shape[0], -1, -1)
    if src_t.shape != dst_t.shape or src_t.shape[-1] != 2 or src_t.shape[-2] < 2:
        raise ValueError(f"fit_similarity needs matching (B, N, 2) point sets, got {tuple(src_t.shape)} and {tuple(dst_t.shape)}")
    n = src_t.shape[-2]
    src_mean, dst_mean = src_t.mean(dim=1, keepdim=True), dst_t.mean(dim=1, keepdim=True)
    src_c, dst_c = src_t - src_mean, dst_t - dst_mean
    cov = dst_c.transpose(1, 2) @ src_c / n  # (B, 2, 2), Eq. 38
    u, s, vh = torch.linalg.svd(cov)
    d = torch.ones_like(s)
    d[:, -1] = torch.where(torch.linalg.det(u) * torch.linalg.det(vh) < 0, -1.0, 1.0)  # a reflection is not allowed
    rot = u @ torch.diag_embed(d) @ vh  # Eq. 40
    var = src_c.pow(2).sum(dim=(1, 2)) / n
    scale = torch.where(var > 0, (s * d).sum(dim=1) / var.clamp_min(1e-300), torch.ones_like(var))  # Eq. 42
    lin = scale[:, None, None] * rot
    trans = dst_mean.transpose(1, 2) - lin @ src_mean.transpose(1, 2)  # Eq. 41
    matrices = torch.cat([lin, trans], dim=2)
    return matrices[0] if unbatched else matrices


def to_3x3(matrices: torch.Tensor) -> torch.Tensor:
    """``(..., 2, 3)`` affine matrices -> ``(..., 3, 3)`` with the ``[0, 0, 1]`` row."""
    row = torch.zeros(*matrices.shape[:-2], 1, 3, dtype=matrices.dtype, device=matrices.device)
    row[..., 0, 2] = 1.0
    return torch.cat([matrices, row], dim=-2)


def invert_affine(matrices: torch.Tensor) -> torch.Tensor:
    """Inverse of ``(B, 2, 3)`` affine matrices (``kornia.geometry.transform.invert_affine_transform``)."""
    from kornia.geometry.transform import invert_affine_transform

    return invert_affine_transform(matrices)


def translation(dx: float, dy: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The ``(3, 3)`` matrix of ``(x, y) -> (x + dx, y + dy)``."""
    return torch.tensor([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]], dtype=dtype)


def crop_footprint(matrix: torch.Tensor, size: int, margin: int = 2) -> tuple[int, int, int, int]:
    """The integer box ``(x0, y0, x1, y1)`` (``x1``, ``y1`` exclusive) of the photo pixels a ``size`` crop made by
    ``matrix`` (``(2, 3)``, photo -> crop) covers, grown by ``margin`` pixels (not clipped to the photo)."""
    inv = invert_affine(matrix[None].to(torch.float64))[0]
    corners = torch.tensor([[0.0, 0.0, 1.0], [size - 1.0, 0.0, 1.0], [0.0, size - 1.0, 1.0], [size - 1.0, size - 1.0, 1.0]], dtype=torch.float64)
    pts = corners @ inv.T
    x0, y0 = (math.floor(v) - margin for v in pts.min(dim=0).values.tolist())
    x1, y1 = (math.ceil(v) + margin + 1 for v in pts.max(dim=0).values.tolist())
    return x0, y0, x1, y1


def matrix_scale(matrix: torch.Tensor) -> float:
    """The uniform scale of a similarity ``(2, 3)`` matrix (crop pixels per photo pixel)."""
    return float(torch.linalg.det(matrix[:, :2].to(torch.float64)).abs().sqrt())


def _roi_side(size: int) -> int:
    """The side every region of interest is padded to: the crop of a face rotated by 45 degrees spans
    ``size * sqrt(2)`` crop pixels, plus the footprint margin."""
    return int(math.ceil(size * math.sqrt(2))) + 8


def warp_faces(
    image: np.ndarray,
    matrices: torch.Tensor,
    size: int,
    device: torch.device | str = "cpu",
    max_value: float = 255.0,
) -> torch.Tensor:
    """Aligned crops of ``image``.

    Args:
        image: the photo ``(H, W, 3)`` uint8 or uint16 (never copied whole; only each face's region is read).
        matrices: ``(B, 2, 3)`` photo -> crop similarity matrices (:func:`fit_similarity`).
        size: the crop side.
        device: where the warp runs.
        max_value: the photo's white (255 for uint8, 65535 for 16-bit).

    Returns:
        ``(B, 3, size, size)`` float32 in ``[0, 1]`` on ``device``. Crop pixels outside the photo repeat its
        border.
    """
    import cv2
    from kornia.geometry.transform import warp_affine

    height, width = image.shape[:2]
    side = _roi_side(size)
    rois, roi_matrices = [], []
    for matrix in matrices.to(torch.float64).cpu():
        x0, y0, x1, y1 = crop_footprint(matrix, size)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x1 <= x0 or y1 <= y0:  # the crop lies outside the photo: sample its nearest corner
            x0, y0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
            x1, y1 = x0 + 1, y0 + 1
        roi = image[y0:y1, x0:x1]
        h, w = roi.shape[:2]
        factor = min(1.0, matrix_scale(matrix), side / max(h, w))
        # photo pixel (x, y) -> ROI pixel: shift by the ROI's origin, then (for a reduced ROI) the cv2.resize
        # pixel-centre mapping x' = (x + 0.5) * fx - 0.5
        to_roi = translation(-x0, -y0)
        if factor < 1.0:
            nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
            roi = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
            fx, fy = nw / w, nh / h
            to_roi = torch.tensor([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64) @ to_roi
        roi = np.ascontiguousarray(roi) if roi.dtype == np.uint8 else roi.astype(np.float32)  # torch's uint16 is partial
        tensor = torch.from_numpy(roi).to(device).permute(2, 0, 1)[None].float().div_(max_value)
        tensor = F.pad(tensor, (0, side - tensor.shape[-1], 0, side - tensor.shape[-2]), mode="replicate")
        rois.append(tensor)
        roi_matrices.append((to_3x3(matrix) @ torch.linalg.inv(to_roi))[:2])
    if not rois:
        return torch.empty(0, 3, size, size, device=device)
    batch = torch.cat(rois)
    m = torch.stack(roi_matrices).to(device=device, dtype=torch.float32)
    return warp_affine(batch, m, (size, size), mode="bilinear", padding_mode="border", align_corners=True).clamp_(0, 1)
