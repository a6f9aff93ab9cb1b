"""Putting restored faces back into the photo: blending masks and the inverse warp.

A mask lives in crop coordinates, ``(B, 1, S, S)`` in ``[0, 1]``: 1 where the restored face replaces the photo,
0 where the photo is kept. :func:`feather_mask` is 1 inside the crop and falls smoothly to 0 at its border;
:func:`parsing_mask` keeps only the face itself (skin, brows, eyes, glasses, ears, nose, mouth, lips of the 19
CelebAMask-HQ classes) as a face-parsing network sees it, softened, and never beyond the feathered square.

:func:`paste_faces` warps each restored crop and its mask back with the inverse similarity transform (kornia,
bilinear) and blends ``mask * face + (1 - mask) * photo`` inside the face's footprint only, in horizontal strips
of bounded size: the photo never leaves its array and is never converted to float as a whole.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.face.align import crop_footprint, invert_affine, matrix_scale, to_3x3, translation
from bfrzoo.interface import PARSING_CLASSES, to_model_range

#: The parsing classes that belong to the face (what a restored face may replace).
FACE_CLASSES: tuple[str, ...] = (
    "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip", "l_lip",
)


def feather_mask(size: int, feather: float = 0.1, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(1, 1, size, size)``: 1 farther than ``feather * size`` pixels from the crop's border, 0 on the border,
    and a smooth (C1, smoothstep) ramp in between."""
    index = torch.arange(size, dtype=torch.float32, device=device)
    width = max(feather * size, 1.0)
    t = (torch.minimum(index, size - 1 - index) / width).clamp(0, 1)
    ramp = t * t * (3 - 2 * t)
    return (ramp[:, None] * ramp[None, :])[None, None]


@torch.inference_mode()
def parsing_mask(parser: nn.Module, faces: torch.Tensor, feather: float = 0.1, blur: float = 1 / 64) -> torch.Tensor:
    """The face region of ``faces`` ``(B, 3, S, S)`` in ``[0, 1]`` as a ``(B, 1, S, S)`` mask.

    ``parser`` is a :class:`bfrzoo.models.parsenet.ParseNet` (19 classes; facexlib's ``parsing_parsenet.pth`` and
    PSFR-GAN's parser load into it). The hard face labels are blurred (Gaussian, sigma ``blur * S``) and
    multiplied by :func:`feather_mask`. A face the parser finds no face in (under 1% of the crop) gets the
    feathered mask instead.
    """
    from kornia.filters import gaussian_blur2d

    size = faces.shape[-1]
    in_size = int(getattr(parser, "in_size", size))
    x = faces if size == in_size else F.interpolate(faces, size=(in_size, in_size), mode="bilinear", align_corners=False, antialias=True)
    param = next(parser.parameters(), None)
    x = x.to(param.device if param is not None else x.device, param.dtype if param is not None else x.dtype)
    labels = parser(to_model_range(x))[0].argmax(dim=1, keepdim=True)
    keep = torch.tensor([PARSING_CLASSES.index(c) for c in FACE_CLASSES], device=labels.device)
    mask = torch.isin(labels, keep).float().to(faces.device)
    if mask.shape[-1] != size:
        mask = F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False)
    sigma = max(blur * size, 0.5)
    kernel = 2 * int(3 * sigma) + 1
    mask = gaussian_blur2d(mask, (kernel, kernel), (sigma, sigma))
    square = feather_mask(size, feather, faces.device)
    empty = mask.mean(dim=(1, 2, 3)) < 0.01
    mask = torch.where(empty[:, None, None, None], square.expand_as(mask), mask * square)
    return mask.clamp_(0, 1)


def paste_faces(
    canvas: np.ndarray,
    faces: torch.Tensor,
    masks: torch.Tensor,
    matrices: torch.Tensor,
    max_value: float = 255.0,
    strip_pixels: int = 1 << 22,
) -> None:
    """Blend restored faces into ``canvas`` in place.

    Args:
        canvas: the photo ``(H, W, C)`` uint8 or uint16, ``C >= 3`` (only the first three channels change).
        faces: ``(B, 3, S, S)`` restored crops in ``[0, 1]`` (any device: the blending runs there).
        masks: ``(B, 1, S, S)`` in ``[0, 1]`` (:func:`feather_mask`, :func:`parsing_mask`).
        matrices: ``(B, 2, 3)`` canvas -> crop similarity matrices (the alignment, scaled for an upscaled canvas).
        max_value: the canvas's white.
        strip_pixels: the most canvas pixels blended at once (bounds the memory for a face filling a huge photo).
    """
    from kornia.geometry.transform import warp_affine

    height, width = canvas.shape[:2]
    size = faces.shape[-1]
    device = faces.device
    dtype = canvas.dtype
    for face, mask, matrix in zip(faces, masks, matrices.to(torch.float64).cpu()):
        x0, y0, x1, y1 = crop_footprint(matrix, size)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if x1 <= x0 or y1 <= y0:
            continue
        source = torch.cat([face, mask.to(face.dtype)])[None].float()  # (1, 4, S, S)
        crop_to_canvas = to_3x3(invert_affine(matrix[None])[0])
        scale = matrix_scale(matrix)
        if scale > 2.0:  # the face is much smaller in the canvas than in the crop: reduce it first (antialiased;
            # below 2x, bilinear sampling still reads every crop pixel, and prefiltering would only blur)
            small = max(1, round(size / scale))
            source = F.interpolate(source, size=(small, small), mode="bilinear", align_corners=False, antialias=True)
            f = size / small  # small-crop pixel -> crop pixel (pixel centres): u = (u' + 0.5) * f - 0.5
            crop_to_canvas = crop_to_canvas @ torch.tensor([[f, 0, 0.5 * f - 0.5], [0, f, 0.5 * f - 0.5], [0, 0, 1]], dtype=torch.float64)
        rows = max(1, strip_pixels // (x1 - x0))
        for top in range(y0, y1, rows):
            bottom = min(top + rows, y1)
            m = (translation(-x0, -top) @ crop_to_canvas)[:2][None].to(device=device, dtype=torch.float32)
            warped = warp_affine(source, m, (bottom - top, x1 - x0), mode="bilinear", padding_mode="zeros", align_corners=True)[0]
            rgb, alpha = warped[:3], warped[3:].clamp(0, 1)
            region = canvas[top:bottom, x0:x1, :3]
            background = torch.from_numpy(region.astype(np.float32) if dtype != np.uint8 else np.ascontiguousarray(region))
            background = background.to(device).permute(2, 0, 1).float().div_(max_value)
            blended = (alpha * rgb.clamp(0, 1) + (1 - alpha) * background).mul_(max_value).round_()
            canvas[top:bottom, x0:x1, :3] = blended.permute(1, 2, 0).cpu().numpy().astype(dtype)
