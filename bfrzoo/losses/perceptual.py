"""Perceptual loss (Johnson et al., 2016) and Gram-matrix style loss (Gatys et al., 2016) on frozen VGG features.

``PerceptualLoss``: ``sum_l w_l * mean|phi_l(x) - phi_l(y)|`` (L1, as MPCNet's Eq. 8 and the usual BFR setting)
or the mean squared difference. ``StyleLoss``: ``sum_l w_l * ||G(phi_l(x)) - G(phi_l(y))||^2`` with the Gram
matrix ``G(phi) = phi^T phi / (C H W)``, MPCNet's Eq. (10). The VGG weights resolve through
:class:`bfrzoo.losses.vgg.VGGFeatures` (explicit file > cache > download, one clear error offline); one
``VGGFeatures`` can be shared by both losses (``vgg=``), so the restored image goes through VGG once.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.errors import BfrzooError
from bfrzoo.losses.vgg import VGGFeatures, VGGNetwork

#: The layers and weights of the common BFR setting (conv1_2 .. conv5_4 ReLUs, as in ESRGAN/GFPGAN-style training).
DEFAULT_LAYERS: Mapping[str, float] = {"relu1_2": 0.1, "relu2_2": 0.1, "relu3_4": 1.0, "relu4_4": 1.0, "relu5_4": 1.0}


def _vgg(layer_weights: Mapping[str, float], network: VGGNetwork, pretrained: bool | str | Path,
         vgg: VGGFeatures | None) -> VGGFeatures:
    if vgg is None:
        return VGGFeatures(tuple(layer_weights), network, pretrained, input_range=(-1.0, 1.0))
    missing = [n for n in layer_weights if n not in vgg.layers]
    if missing:
        raise BfrzooError(f"the shared VGGFeatures does not return {missing}; build it with those layers")
    return vgg


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, C)``: ``phi^T phi / (C H W)`` in fp32 (MPCNet Eq. 10's normalisation)."""
    n, c, h, w = feat.shape
    f = feat.float().reshape(n, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


class PerceptualLoss(nn.Module):
    """``sum_l w_l * d(phi_l(x), phi_l(y))`` for ``x``, ``y`` ``(N, 3, H, W)`` in ``[-1, 1]``; ``y`` is detached.

    Args:
        layer_weights: VGG ReLU layer -> weight.
        network: ``"vgg19"``, ``"vgg16"`` or ``"vggface"`` (see :data:`bfrzoo.losses.vgg.VGG_CONFIGS`).
        pretrained: ``True`` (the network's weights, resolved), ``False`` (random: tests only) or a file path.
        criterion: ``"l1"`` (mean absolute difference) or ``"l2"`` (mean squared difference) per layer.
        vgg: an already-built :class:`VGGFeatures` returning at least ``layer_weights``' layers (shared).
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float] = DEFAULT_LAYERS,
        network: VGGNetwork = "vgg19",
        pretrained: bool | str | Path = True,
        criterion: Literal["l1", "l2"] = "l1",
        vgg: VGGFeatures | None = None,
    ) -> None:
        super().__init__()
        if criterion not in ("l1", "l2"):
            raise BfrzooError(f"criterion must be 'l1' or 'l2', got {criterion!r}")
        self.layer_weights, self.criterion = dict(layer_weights), criterion
        self.vgg = _vgg(self.layer_weights, network, pretrained, vgg)

    def distance(self, fx: Mapping[str, torch.Tensor], fy: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss on precomputed features (``fy`` treated as the target)."""
        dist = F.l1_loss if self.criterion == "l1" else F.mse_loss
        return sum(w * dist(fx[n].float(), fy[n].detach().float()) for n, w in self.layer_weights.items())

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.vgg(x)
        with torch.no_grad():
            fy = self.vgg(y)
        return self.distance(fx, fy)


#: MPCNet's Gram-matrix layers (Eq. 10).
STYLE_LAYERS: Mapping[str, float] = {"relu2_1": 1.0, "relu3_1": 1.0, "relu4_1": 1.0, "relu5_1": 1.0}


class StyleLoss(nn.Module):
    """Gram-matrix style loss (Gatys et al. 2016), MPCNet Eq. (10), averaged over the batch; ``y`` is detached.

    ``normalization="gram"`` (default): ``sum_l w_l * ||G(phi_l(x)) - G(phi_l(y))||_F^2`` with
    :func:`gram_matrix` ``= phi^T phi / (C H W)`` (Johnson et al. 2016's form of the Gatys loss, whose Gram carries
    the ``1 / (C H W)`` of Eq. 10). ``"eq10"``: Eq. (10) typeset literally, the squared norm of the UNnormalised
    Gram difference divided once by ``C H W``, i.e. ``C H W`` times the ``"gram"`` value: it grows with the image
    area (about 1e7 times larger at 512 px), so no fixed weight suits it across sizes; offered for comparison.

    Args:
        layer_weights: VGG ReLU layer -> weight (MPCNet: relu2_1, relu3_1, relu4_1, relu5_1, weight 1 each).
        network / pretrained / vgg: as :class:`PerceptualLoss`.
        normalization: ``"gram"`` or ``"eq10"`` (see above).
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float] = STYLE_LAYERS,
        network: VGGNetwork = "vggface",
        pretrained: bool | str | Path = True,
        vgg: VGGFeatures | None = None,
        normalization: Literal["gram", "eq10"] = "gram",
    ) -> None:
        super().__init__()
        if normalization not in ("gram", "eq10"):
            raise BfrzooError(f"normalization must be 'gram' or 'eq10', got {normalization!r}")
        self.layer_weights, self.normalization = dict(layer_weights), normalization
        self.vgg = _vgg(self.layer_weights, network, pretrained, vgg)

    def distance(self, fx: Mapping[str, torch.Tensor], fy: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss on precomputed features (``fy`` treated as the target)."""
        total = torch.zeros((), device=next(iter(fx.values())).device)
        for n, w in self.layer_weights.items():
            diff = gram_matrix(fx[n]) - gram_matrix(fy[n].detach())
            term = diff.square().sum(dim=(1, 2)).mean()
            if self.normalization == "eq10":
                term = term * fx[n][0].numel()  # C H W
            total = total + w * term
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.vgg(x)
        with torch.no_grad():
            fy = self.vgg(y)
        return self.distance(fx, fy)


class LPIPSLoss(nn.Module):
    """LPIPS (Zhang et al., CVPR 2018) as a training loss: the mean LPIPS distance of ``x`` to ``y``, both
    ``(N, 3, H, W)`` in ``[-1, 1]``, differentiable in ``x``. The network is :class:`bfrzoo.metrics.LPIPSNetwork`
    (the metric's own, so the loss and the reported metric agree), frozen and kept out of checkpoints.

    Args:
        net_type: ``"vgg"`` (the usual choice for a loss) or ``"alex"``.
        pretrained: ``True`` (the torchvision backbone, resolved), ``False`` (random backbone: tests) or a path.
    """

    def __init__(self, net_type: Literal["alex", "vgg"] = "vgg", pretrained: bool | str | Path = True) -> None:
        super().__init__()
        from bfrzoo.blocks.frozen import FrozenFeatureNet
        from bfrzoo.metrics.lpips import LPIPSNetwork

        self.net = FrozenFeatureNet(LPIPSNetwork(net_type, pretrained))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net((x.float() + 1) / 2, ((y.float() + 1) / 2).detach()).mean()
