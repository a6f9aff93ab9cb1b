"""Shared pieces of the metrics: input checks, the BT.601 luma of MATLAB ``rgb2ycbcr`` and a per-image-mean
``Metric`` base. Feature networks are held by :class:`bfrzoo.blocks.frozen.FrozenFeatureNet` (re-exported here).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from bfrzoo.blocks.frozen import FrozenFeatureNet  # noqa: F401 - re-exported (bfrzoo.metrics.FrozenFeatureNet)
from bfrzoo.errors import ImageInputError
from bfrzoo.interface import check_images as _check_images

#: MATLAB ``rgb2ycbcr`` luma row (ITU-R BT.601, studio swing) for RGB in [0, 1]: Y in [16, 235] on the 0..255 scale.
#: Y_255 = 16 + 65.481 R + 128.553 G + 24.966 B. (``skimage.color.rgb2ycbcr`` uses the same numbers.)
YCBCR_Y_WEIGHTS: tuple[float, float, float] = (65.481, 128.553, 24.966)


def check_images(x: Tensor, name: str = "images", min_size: int = 1) -> None:
    """Raise :class:`ImageInputError` unless ``x`` is a float (N, 3, H, W) tensor with H, W >= ``min_size``
    (:func:`bfrzoo.interface.check_images`, batched input only, no NaN scan: metrics run every batch)."""
    _check_images(x, name, min_size=min_size, allow_unbatched=False, check_finite=False)


def check_pair(preds: Tensor, target: Tensor, min_size: int = 1) -> None:
    """Check both images (see :func:`check_images`) and that their shapes are equal."""
    check_images(preds, "preds", min_size)
    check_images(target, "target", min_size)
    if preds.shape != target.shape:
        raise ImageInputError(
            f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same shape; "
            "resize the restored image to the reference size first"
        )


def rgb_to_y(x: Tensor) -> Tensor:
    """Luma of MATLAB ``rgb2ycbcr`` (BT.601): (N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) Y in [16/255, 235/255].

    Multiply by 255 for MATLAB's uint8 scale. Equals ``skimage.color.rgb2ycbcr(img)[..., 0] / 255``.
    """
    w = torch.tensor(YCBCR_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (16.0 + (x * w).sum(dim=1, keepdim=True)) / 255.0


class PerImageMean(Metric):
    """A ``Metric`` that averages a per-image score over every image seen (on all DDP ranks).

    States: ``total`` (float64 sum of per-image values) and ``count`` (number of images), both summed across
    ranks. Subclasses implement :meth:`per_image` ``(preds, target) -> (N,)``.
    """

    is_differentiable = False
    full_state_update = False
    total: Tensor
    count: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` and ``target`` (N, 3, H, W) in [0, 1]."""
        values = self.per_image(preds, target).detach()
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        """The mean of the per-image values (NaN before any update)."""
        return self.total / self.count
