"""A frozen VGG19 feature extractor for perceptual and style losses (Simonyan & Zisserman 2015).

The ImageNet weights are torchvision's ``vgg19-dcbb9e9d.pth`` (BSD-3-Clause), resolved through
:func:`bfrzoo.weights.resolve_weights` (explicit path > cache > download). The convolution weights are
NON-persistent buffers: they move with ``.to(device)``, are never trained (no parameters) and are kept out of
every checkpoint of the networks and tasks that use the loss, as torchmetrics does with its feature networks.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.errors import BfrzooError
from bfrzoo.weights import PretrainedCfg, load_checkpoint, resolve_weights

VGG19_IMAGENET = PretrainedCfg(
    filename="vgg19-dcbb9e9d.pth",
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    source="torchvision (ImageNet-trained VGG19, torchvision.models.VGG19_Weights.IMAGENET1K_V1)",
    license="BSD-3-Clause (torchvision)",
    sha256="dcbb9e9d",
)

#: Convolution widths of VGG19's 16 convs, "M" = 2x2 max pooling (configuration "E").
_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                               512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names() -> list[str]:
    """``relu{block}_{index}`` for each conv, in order (relu1_1 ... relu5_4)."""
    names, block, idx = [], 1, 0
    for v in _CFG:
        if v == "M":
            block, idx = block + 1, 0
        else:
            idx += 1
            names.append(f"relu{block}_{idx}")
    return names


LAYER_NAMES: tuple[str, ...] = tuple(_layer_names())


class VGG19Features(nn.Module):
    """Frozen VGG19: ``(N, 3, H, W)`` image -> ``{layer_name: feature}`` for the requested ReLU outputs.

    Args:
        layers: ReLU outputs to return, e.g. ``("relu3_1", "relu4_1", "relu5_1")`` (PSFR-GAN Sec. 3.2).
        pretrained: ``True``: ImageNet weights (:data:`VGG19_IMAGENET`); ``False``: random init (tests);
            a path: that torchvision-layout weight file.
        input_range: ``(lo, hi)`` value range of the input images; they are mapped to ``[0, 1]`` and then
            normalised with the ImageNet mean/std.
    Always in eval mode; gradients flow to the input only.
    """

    def __init__(
        self,
        layers: tuple[str, ...] = ("relu3_1", "relu4_1", "relu5_1"),
        pretrained: bool | str | Path = True,
        input_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        unknown = [n for n in layers if n not in LAYER_NAMES]
        if unknown or not layers:
            raise BfrzooError(f"unknown VGG19 layer(s) {unknown or '(none given)'}; choose from {', '.join(LAYER_NAMES)}")
        self.layers = tuple(layers)
        self.input_range = input_range
        self._last = max(LAYER_NAMES.index(n) for n in layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._plan: list[tuple[str, int]] = []  # ("conv", conv index) or ("pool", -1)
        c_in, k = 3, 0
        for v in _CFG:
            if v == "M":
                self._plan.append(("pool", -1))
                continue
            w = torch.empty(int(v), c_in, 3, 3)
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
            self.register_buffer(f"weight{k}", w, persistent=False)
            self.register_buffer(f"bias{k}", torch.zeros(int(v)), persistent=False)
            self._plan.append(("conv", k))
            c_in, k = int(v), k + 1
        if pretrained:
            path = resolve_weights(VGG19_IMAGENET, None if pretrained is True else Path(pretrained))
            self.load_torchvision(load_checkpoint(path))
        self.eval()

    def load_torchvision(self, state: dict[str, torch.Tensor]) -> None:
        """Copy torchvision ``vgg19`` weights (keys ``features.{i}.weight``/``bias``) into the buffers."""
        tv_index, k = 0, 0
        for v in _CFG:
            if v == "M":
                tv_index += 1
                continue
            for part in ("weight", "bias"):
                key = f"features.{tv_index}.{part}"
                own = getattr(self, f"{part}{k}")
                if key not in state or state[key].shape != own.shape:
                    raise BfrzooError(
                        f"the VGG19 weight file lacks {key} of shape {tuple(own.shape)}; pass torchvision's "
                        f"{VGG19_IMAGENET.filename}"
                    )
                own.copy_(state[key])
            tv_index, k = tv_index + 2, k + 1

    def train(self, mode: bool = True) -> VGG19Features:  # always frozen in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        lo, hi = self.input_range
        x = ((x - lo) / (hi - lo) - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        for kind, k in self._plan:
            if kind == "pool":
                x = F.max_pool2d(x, 2)
                continue
            x = F.relu(F.conv2d(x, getattr(self, f"weight{k}"), getattr(self, f"bias{k}"), padding=1))
            if LAYER_NAMES[k] in self.layers:
                out[LAYER_NAMES[k]] = x
            if k == self._last:
                break
        return out
