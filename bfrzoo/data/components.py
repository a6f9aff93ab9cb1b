"""Facial component boxes (left eye, right eye, mouth) of a batch, for local discriminators (the MMRB network's
Eq. 12) and any component loss; and their crops, taken on the whole batch at once with
``torchvision.ops.roi_align``.

Boxes come from what the data carries:

* 5-point landmarks (``batch["landmarks"]``, ``(N, 5, 2)`` pixel ``(x, y)``: left eye, right eye, nose, left and
  right mouth corners; e.g. ../shared/data/aaf128): square boxes centred on each eye with side
  ``eye_ratio * d_eyes`` (the inter-ocular distance) and on the mouth corners' midpoint with side
  ``mouth_ratio * d_mouth`` (the corner distance);
* 19-class parsing masks (``batch["mask"]``, ``(N, H, W)``, CelebAMask-HQ classes: 4 / 5 the eyes, 10 mouth, 11 / 12
  the lips; e.g. ../shared/data/faces512): the square around each component's bounding box, its longer side
  times ``margin``. A component absent from a mask (closed or hidden eyes) is marked invalid for that sample.

"Left" is the image's left (smaller x) in both cases. Boxes are ``[x1, y1, x2, y2]`` in pixels, never smaller than
``min_side``; a batch with neither annotation is refused with a message saying how to get one.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from bfrzoo.errors import BfrzooError

COMPONENTS: tuple[str, ...] = ("left_eye", "right_eye", "mouth")
#: CelebAMask-HQ classes of each component (before ordering the two eyes by x).
EYE_CLASSES: tuple[int, int] = (4, 5)
MOUTH_CLASSES: tuple[int, ...] = (10, 11, 12)
Source = Literal["auto", "landmarks", "masks"]


def _square(cx: torch.Tensor, cy: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
    half = side / 2
    return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=-1)


def boxes_from_landmarks(landmarks: torch.Tensor, eye_ratio: float = 0.7, mouth_ratio: float = 1.3,
                         min_side: float = 8.0) -> torch.Tensor:
    """``(N, 5, 2)`` 5-point landmarks -> ``(N, 3, 4)`` boxes of the left eye, right eye and mouth."""
    eyes, mouth = landmarks[:, :2], landmarks[:, 3:5]
    eyes = torch.where((eyes[:, 0, 0] > eyes[:, 1, 0]).view(-1, 1, 1), eyes.flip(1), eyes)  # image-left first
    d_eyes = (eyes[:, 1] - eyes[:, 0]).norm(dim=-1)
    d_mouth = (mouth[:, 1] - mouth[:, 0]).norm(dim=-1)
    eye_side = (eye_ratio * d_eyes).clamp_min(min_side)
    mouth_c = mouth.mean(dim=1)
    return torch.stack([
        _square(eyes[:, 0, 0], eyes[:, 0, 1], eye_side),
        _square(eyes[:, 1, 0], eyes[:, 1, 1], eye_side),
        _square(mouth_c[:, 0], mouth_c[:, 1], (mouth_ratio * d_mouth).clamp_min(min_side)),
    ], dim=1)


def _mask_box(mask: torch.Tensor, classes: tuple[int, ...], margin: float, min_side: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Square boxes ``(N, 4)`` around the pixels of ``classes`` in ``mask (N, H, W)``, and which samples have any."""
    n, h, w = mask.shape
    hit = torch.isin(mask, torch.tensor(classes, device=mask.device))
    rows, cols = hit.any(dim=2), hit.any(dim=1)
    valid = rows.any(dim=1)
    ys = torch.arange(h, device=mask.device).expand(n, h)
    xs = torch.arange(w, device=mask.device).expand(n, w)
    y0 = torch.where(rows, ys, h).min(dim=1).values.float()
    y1 = torch.where(rows, ys, -1).max(dim=1).values.float() + 1
    x0 = torch.where(cols, xs, w).min(dim=1).values.float()
    x1 = torch.where(cols, xs, -1).max(dim=1).values.float() + 1
    side = (torch.maximum(x1 - x0, y1 - y0) * margin).clamp_min(min_side)
    box = _square((x0 + x1) / 2, (y0 + y1) / 2, side)
    return torch.where(valid.view(-1, 1), box, torch.zeros_like(box)), valid


def boxes_from_masks(mask: torch.Tensor, eye_margin: float = 1.5, mouth_margin: float = 1.2,
                     min_side: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, H, W)`` parsing masks -> (boxes ``(N, 3, 4)``, valid ``(N, 3)`` bool): left eye, right eye, mouth."""
    a, va = _mask_box(mask, (EYE_CLASSES[0],), eye_margin, min_side)
    b, vb = _mask_box(mask, (EYE_CLASSES[1],), eye_margin, min_side)
    swap = (a[:, 0] + a[:, 2] > b[:, 0] + b[:, 2]) & va & vb  # order the eyes by x (image-left first)
    left = torch.where(swap.view(-1, 1), b, a)
    right = torch.where(swap.view(-1, 1), a, b)
    vl, vr = torch.where(swap, vb, va), torch.where(swap, va, vb)
    mouth, vm = _mask_box(mask, MOUTH_CLASSES, mouth_margin, min_side)
    return torch.stack([left, right, mouth], dim=1), torch.stack([vl, vr, vm], dim=1)


def component_boxes(batch: Mapping[str, Any], source: Source = "auto", **ratios: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(boxes (N, 3, 4), valid (N, 3))`` of a batch from its ``landmarks`` or ``mask`` (``source="auto"``:
    landmarks when present, else masks). ``ratios``: ``eye_ratio`` / ``mouth_ratio`` (landmarks) or
    ``eye_margin`` / ``mouth_margin`` (masks), ``min_side``."""
    if source in ("auto", "landmarks") and "landmarks" in batch:
        keys = ("eye_ratio", "mouth_ratio", "min_side")
        boxes = boxes_from_landmarks(batch["landmarks"].float(), **{k: v for k, v in ratios.items() if k in keys})
        return boxes, torch.ones(boxes.shape[:2], dtype=torch.bool, device=boxes.device)
    if source in ("auto", "masks") and "mask" in batch:
        keys = ("eye_margin", "mouth_margin", "min_side")
        return boxes_from_masks(batch["mask"], **{k: v for k, v in ratios.items() if k in keys})
    wanted = {"auto": "5-point landmarks or parsing masks", "landmarks": "5-point landmarks", "masks": "parsing masks"}[source]
    raise BfrzooError(
        f"the component boxes (eyes, mouth) need {wanted} in the batch: train on a data root with landmarks.json "
        "(--data.with_landmarks true, e.g. ../shared/data/aaf128) or masks/ (--data.with_masks true, e.g. "
        "../shared/data/faces512), or switch the local discriminators off (--model.init_args.local_discriminators false)"
    )


def crop_components(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crops ``(N, 3, C, size, size)`` of ``images (N, C, H, W)`` at ``boxes (N, 3, 4)`` (bilinear,
    ``torchvision.ops.roi_align`` with aligned pixel centres and an adaptive sampling grid: a box of ``size``
    pixels on integer corners is an exact slice)."""
    from torchvision.ops import roi_align

    n, k = boxes.shape[:2]
    index = torch.arange(n, device=boxes.device, dtype=boxes.dtype).repeat_interleave(k).view(-1, 1)
    rois = torch.cat([index, boxes.reshape(-1, 4).to(images.dtype)], dim=1)
    crops = roi_align(images, rois.to(images.dtype), output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return crops.view(n, k, images.shape[1], size, size)
