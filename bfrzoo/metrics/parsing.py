"""Face-parsing metrics: mean IoU and pixel accuracy over the 19 CelebAMask-HQ classes.

Both come from one confusion matrix ``C[t, p]`` (pixels of true class t predicted as p), accumulated over all
images (and summed across DDP ranks), so the ``Metric`` classes give dataset-level values, equal to the
functional on the concatenation of all batches:

* pixel accuracy = ``trace(C) / sum(C)``;
* IoU_k = ``C[k, k] / (sum_p C[k, p] + sum_t C[t, k] - C[k, k])``; mIoU averages IoU_k over the classes that
  occur in the target or the prediction (a class absent from both has no IoU and is left out).

Inputs: ``preds`` (N, H, W) integer labels or (N, K, H, W) logits/probabilities (arg-maxed over K), ``target``
(N, H, W) integer labels in [0, K). Pixels whose target equals ``ignore_index`` are not counted.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from bfrzoo.errors import ImageInputError
from bfrzoo.interface import NUM_PARSING_CLASSES


def _labels(preds: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    if preds.ndim == 4:
        if preds.shape[1] != num_classes:
            raise ImageInputError(f"parsing logits must have {num_classes} channels, got {tuple(preds.shape)}")
        preds = preds.argmax(dim=1)
    if preds.ndim != 3 or target.ndim != 3 or preds.shape != target.shape:
        raise ImageInputError(
            f"parsing preds must be (N, H, W) labels or (N, {num_classes}, H, W) logits and target (N, H, W) labels "
            f"of the same size; got preds {tuple(preds.shape)} and target {tuple(target.shape)}"
        )
    if preds.is_floating_point() or target.is_floating_point():
        raise ImageInputError("parsing labels must be integer tensors (use .long())")
    return preds.long(), target.long()


def confusion_matrix(
    preds: Tensor, target: Tensor, num_classes: int = NUM_PARSING_CLASSES, ignore_index: int | None = None
) -> Tensor:
    """The (K, K) int64 confusion matrix ``C[true, predicted]`` of a batch (see the module docstring)."""
    p, t = _labels(preds, target, num_classes)
    keep = torch.ones_like(t, dtype=torch.bool) if ignore_index is None else t != ignore_index
    p, t = p[keep], t[keep]
    if p.numel() and (min(int(p.min()), int(t.min())) < 0 or max(int(p.max()), int(t.max())) >= num_classes):
        raise ImageInputError(f"parsing labels must lie in [0, {num_classes}); pass ignore_index for void pixels")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def miou_from_confusion(conf: Tensor) -> Tensor:
    """Mean IoU over the classes present in target or prediction, from a (K, K) confusion matrix."""
    conf = conf.double()
    inter = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    return (inter[present] / union[present]).mean()


def pixel_accuracy_from_confusion(conf: Tensor) -> Tensor:
    """Fraction of correctly labelled pixels, from a (K, K) confusion matrix."""
    conf = conf.double()
    return conf.diagonal().sum() / conf.sum()


def parsing_miou(
    preds: Tensor, target: Tensor, num_classes: int = NUM_PARSING_CLASSES, ignore_index: int | None = None
) -> Tensor:
    """Mean IoU of parsing maps over all pixels of the batch (float64 scalar, higher is better)."""
    return miou_from_confusion(confusion_matrix(preds, target, num_classes, ignore_index))


def pixel_accuracy(
    preds: Tensor, target: Tensor, num_classes: int = NUM_PARSING_CLASSES, ignore_index: int | None = None
) -> Tensor:
    """Pixel accuracy of parsing maps over all pixels of the batch (float64 scalar, higher is better)."""
    return pixel_accuracy_from_confusion(confusion_matrix(preds, target, num_classes, ignore_index))


def parsing_metrics(
    preds: Tensor, target: Tensor, num_classes: int = NUM_PARSING_CLASSES, ignore_index: int | None = None
) -> dict[str, Tensor]:
    """``{"miou": ..., "pixel_acc": ...}`` of a batch of parsing maps (float64 scalars, higher is better).

    Args:
        preds: (N, H, W) int labels or (N, K, H, W) logits/probabilities (arg-maxed over K).
        target: (N, H, W) int64 labels in [0, K).
        num_classes: K, 19 for CelebAMask-HQ.
        ignore_index: target label of pixels to leave out (``None``: count every pixel).
    """
    conf = confusion_matrix(preds, target, num_classes, ignore_index)
    return {"miou": miou_from_confusion(conf), "pixel_acc": pixel_accuracy_from_confusion(conf)}


class _ConfusionMetric(Metric):
    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confmat: Tensor

    def __init__(self, num_classes: int = NUM_PARSING_CLASSES, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` (N, H, W) labels or (N, K, H, W) logits, ``target`` (N, H, W) labels."""
        self.confmat += confusion_matrix(preds.detach(), target, self.num_classes, self.ignore_index)


class ParsingMIoU(_ConfusionMetric):
    """Dataset-level mean IoU of face parsing (19 classes by default)."""

    def compute(self) -> Tensor:
        return miou_from_confusion(self.confmat)


class PixelAccuracy(_ConfusionMetric):
    """Dataset-level pixel accuracy of face parsing."""

    def compute(self) -> Tensor:
        return pixel_accuracy_from_confusion(self.confmat)


class ParsingMetrics(_ConfusionMetric):
    """Dataset-level face-parsing mIoU and pixel accuracy from one confusion matrix.

    ``update(logits_or_labels, target)``: (N, 19, H, W) logits or (N, H, W) labels, and (N, H, W) int64 labels.
    ``compute()`` -> ``{"miou": ..., "pixel_acc": ...}`` (float64 scalars), equal to :func:`parsing_metrics` on
    the concatenation of all batches (on all DDP ranks: the confusion matrix is summed).
    """

    def compute(self) -> dict[str, Tensor]:
        return {"miou": miou_from_confusion(self.confmat), "pixel_acc": pixel_accuracy_from_confusion(self.confmat)}
