"""Semantic-aware style loss of PSFR-GAN (Sec. 3.2, Eq. 4-5).

For VGG19 features phi_i (relu3_1, relu4_1, relu5_1) and each parsing region M_j (19 CelebAMask-HQ classes,
background j = 0), the masked Gram matrix is

    G(phi_i, M_j) = (phi_i * M_j)^T (phi_i * M_j) / (sum M_j + eps),   eps = 1e-8           (Eq. 5)

with phi_i flattened to (h w, C), so G is C x C per sample, and the loss sums the distance between the Gram
matrices of the restored and the ground-truth image over layers and regions (Eq. 4). The mask (from the
ground-truth parsing) is resized to each feature size with nearest-neighbour interpolation.

Deviation: the norm ``||.||_2`` of Eq. (4) is taken as the mean squared error over the Gram entries and the batch
(the usual implementation of Gram-matrix losses), so the loss does not grow with the channel count squared.

Normalisation (``normalization`` argument):

* ``"paper"``: Eq. (5) as written (Gram divided by ``sum M_j + eps``) and the regions summed, as in Eq. (4);
* ``"released"``: what the authors' released training code does, and what ``lambda_ss = 100`` (Sec. 4.3) was tuned
  for: the Gram matrix is further divided by the channel count ``C`` (``/ (C * (sum M_j + eps))``) and the
  19 region terms are averaged instead of summed. ``"paper"`` is therefore about ``19 * C**2`` times larger
  (``C`` = 256 / 512 / 512 at relu3_1 / relu4_1 / relu5_1); train PSFR-GAN with ``"released"``
  (the default of :class:`bfrzoo.tasks.psfrgan.PSFRGANTask`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.errors import BfrzooError
from bfrzoo.losses.vgg import VGG19Features, VGGFeatures

Normalization = Literal["paper", "released"]
_NORMALIZATIONS = ("paper", "released")


def masked_gram(feat: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. (5): ``feat`` (N, C, h, w), ``mask`` (N, 1, h, w) in [0, 1] -> Gram (N, C, C), computed in fp32."""
    masked = (feat.float() * mask.float()).flatten(2)  # (N, C, hw)
    area = mask.float().flatten(1).sum(dim=1).view(-1, 1, 1)
    return torch.bmm(masked, masked.transpose(1, 2)) / (area + eps)


def region_masks(parsing: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label map (N, H, W) int64 or one-hot (N, num_classes, H, W) -> one-hot float (N, num_classes, H, W)."""
    if parsing.ndim == 3 and not parsing.is_floating_point():
        if parsing.min() < 0 or parsing.max() >= num_classes:
            raise BfrzooError(f"parsing labels must lie in [0, {num_classes}), got [{parsing.min()}, {parsing.max()}]")
        return F.one_hot(parsing, num_classes).permute(0, 3, 1, 2).float()
    if parsing.ndim == 4 and parsing.shape[1] == num_classes:
        return parsing.float()
    raise BfrzooError(
        f"parsing must be labels (N, H, W) int64 or one-hot (N, {num_classes}, H, W), got {tuple(parsing.shape)} "
        f"{parsing.dtype}"
    )


def semantic_style_loss(
    feats_x: dict[str, torch.Tensor],
    feats_y: dict[str, torch.Tensor],
    masks: torch.Tensor,
    eps: float = 1e-8,
    normalization: Normalization = "paper",
) -> torch.Tensor:
    """Functional Eq. (4) on precomputed features: ``feats_*[layer]`` (N, C, h, w), ``masks`` (N, K, H, W)
    one-hot float. Returns a scalar: the sum over layers of the region terms ``mean((G_x - G_y)^2)``, summed over
    the K regions (``"paper"``) or averaged over them with Grams divided by ``C`` (``"released"``; see the module
    docstring)."""
    if normalization not in _NORMALIZATIONS:
        raise BfrzooError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    total = torch.zeros((), device=masks.device)
    for name, fx in feats_x.items():
        fy = feats_y[name]
        m = F.interpolate(masks.float(), size=fx.shape[-2:], mode="nearest")
        layer = torch.zeros((), device=masks.device)
        for j in range(m.shape[1]):
            mj = m[:, j : j + 1]
            layer = layer + F.mse_loss(masked_gram(fx, mj, eps), masked_gram(fy, mj, eps))
        if normalization == "released":
            layer = layer / (fx.shape[1] ** 2 * m.shape[1])  # Gram / C -> squared error / C**2; mean over regions
        total = total + layer
    return total


class SemanticStyleLoss(nn.Module):
    """Semantic-aware style loss L_ss of PSFR-GAN, Eq. (4)-(5).

    ``forward(x, y, parsing)``: ``x`` restored and ``y`` ground-truth images (N, 3, H, W) in ``input_range``
    (default ``[-1, 1]``); ``parsing`` the ground-truth parsing, labels (N, H, W) int64 or one-hot
    (N, num_classes, H, W). Returns a scalar (``>= 0``, 0 iff the masked Gram matrices agree). Gradients flow to
    ``x``; ``y``'s features are detached.

    Args:
        layers: VGG19 ReLU outputs (paper: relu3_1, relu4_1, relu5_1).
        num_classes: parsing classes (19).
        eps: Eq. (5)'s epsilon.
        pretrained: VGG19 ImageNet weights (``True``), random init (``False``, tests) or a weight-file path.
        input_range: value range of the images.
        vgg: an already-built :class:`~bfrzoo.losses.vgg.VGGFeatures` to share with other losses (overrides the three above).
        normalization: ``"paper"`` (Eq. 4-5 as written) or ``"released"`` (the authors' code, for which
            ``lambda_ss = 100`` was tuned; about ``19 * C**2`` smaller). See the module docstring.
    """

    def __init__(
        self,
        layers: tuple[str, ...] = ("relu3_1", "relu4_1", "relu5_1"),
        num_classes: int = 19,
        eps: float = 1e-8,
        pretrained: bool | str | Path = True,
        input_range: tuple[float, float] = (-1.0, 1.0),
        vgg: VGGFeatures | None = None,
        normalization: Normalization = "paper",
    ) -> None:
        super().__init__()
        if normalization not in _NORMALIZATIONS:
            raise BfrzooError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
        self.normalization = normalization
        self.vgg = vgg if vgg is not None else VGG19Features(layers, pretrained, input_range)
        self.layers = tuple(layers)
        missing = [n for n in self.layers if n not in self.vgg.layers]
        if missing:
            raise BfrzooError(f"the shared VGGFeatures does not return {missing}; build it with those layers")
        self.num_classes = num_classes
        self.eps = eps

    def forward(self, x: torch.Tensor, y: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise BfrzooError(f"x and y must both be (N, 3, H, W), got {tuple(x.shape)} and {tuple(y.shape)}")
        masks = region_masks(parsing, self.num_classes)
        if masks.shape[0] != x.shape[0]:
            raise BfrzooError(f"parsing has batch {masks.shape[0]} but images have batch {x.shape[0]}")
        fx = self.vgg(x)
        with torch.no_grad():
            fy = self.vgg(y)
        pick = lambda f: {n: f[n] for n in self.layers}  # noqa: E731
        return semantic_style_loss(pick(fx), pick(fy), masks, self.eps, self.normalization)
