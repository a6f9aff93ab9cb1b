"""Frozen VGG feature extractors for perceptual and style losses: VGG16 and VGG19 (Simonyan & Zisserman 2015),
with ImageNet weights, or VGG16 with the VGGFace weights (Parkhi, Vedaldi & Zisserman, BMVC 2015) that MPCNet's
losses use (Eq. 8 and 10 of the MPCNet paper).

torchvision builds the networks (``torchvision.models.vgg16 / vgg19``) and taps them by layer name
(``relu1_1`` ... ``relu5_4``) through ``torchvision.models.feature_extraction.create_feature_extractor``; only
the layers up to the deepest tap are kept. Each weight configuration is a :class:`~bfrzoo.weights.PretrainedCfg`
resolved like every other file (explicit path > cache > download; offline: one clear error naming the file).
The network sits in a :class:`~bfrzoo.blocks.frozen.FrozenFeatureNet`, so it never enters a checkpoint.

The VGGFace file of the Oxford release (``vgg_face_dag.pth``, conversion of the MatConvNet model by S. Albanie)
names its layers ``conv1_1`` ... ``conv5_3`` / ``fc6`` ...; they map one to one onto torchvision's VGG16
``features``. Its input convention is RGB on the 0..255 scale minus the mean ``(129.186, 104.762, 93.594)``,
unit std; the ImageNet networks take ``[0, 1]`` RGB normalised by the ImageNet mean and std.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from bfrzoo.blocks.frozen import FrozenFeatureNet
from bfrzoo.errors import BfrzooError, UnknownNameError
from bfrzoo.weights import PretrainedCfg, load_checkpoint, resolve_weights

VGGNetwork = Literal["vgg16", "vgg19", "vggface"]

VGG19_IMAGENET = PretrainedCfg(
    filename="vgg19-dcbb9e9d.pth",
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    source="torchvision (ImageNet-trained VGG19, torchvision.models.VGG19_Weights.IMAGENET1K_V1)",
    license="BSD-3-Clause (torchvision)",
    sha256="dcbb9e9d",
)
VGG16_IMAGENET = PretrainedCfg(
    filename="vgg16-397923af.pth",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    source="torchvision (ImageNet-trained VGG16, torchvision.models.VGG16_Weights.IMAGENET1K_V1)",
    license="BSD-3-Clause (torchvision)",
    sha256="397923af",
)
VGGFACE = PretrainedCfg(
    filename="vgg_face_dag.pth",
    url="https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth",
    source="VGG-Face (Parkhi et al., BMVC 2015), PyTorch conversion of the Oxford VGG release by S. Albanie "
    "(www.robots.ox.ac.uk/~albanie/pytorch-models.html)",
    license="VGG-Face: non-commercial research purposes only (Oxford Visual Geometry Group)",
)

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_VGGFACE_MEAN = (129.186279296875 / 255, 104.76238250732422 / 255, 93.59396362304688 / 255)
_VGGFACE_STD = (1 / 255, 1 / 255, 1 / 255)


@dataclass(frozen=True)
class VGGConfig:
    """A named VGG: its torchvision topology, its weight file, the key layout of that file and its input
    normalisation (``(x_01 - mean) / std`` with ``x_01`` the RGB image in ``[0, 1]``)."""

    arch: Literal["vgg16", "vgg19"]
    weights: PretrainedCfg
    layout: Literal["torchvision", "vggface"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


VGG_CONFIGS: Mapping[str, VGGConfig] = {
    "vgg19": VGGConfig("vgg19", VGG19_IMAGENET, "torchvision", _IMAGENET_MEAN, _IMAGENET_STD),
    "vgg16": VGGConfig("vgg16", VGG16_IMAGENET, "torchvision", _IMAGENET_MEAN, _IMAGENET_STD),
    "vggface": VGGConfig("vgg16", VGGFACE, "vggface", _VGGFACE_MEAN, _VGGFACE_STD),
}


def _features(arch: str) -> nn.Sequential:
    """torchvision's ``features`` trunk of ``arch`` (built by ``torchvision.models.vgg.make_layers`` from its
    configuration "D" / "E": the classifier, 120 M parameters, is never built)."""
    from torchvision.models import vgg

    return vgg.make_layers(vgg.cfgs[{"vgg16": "D", "vgg19": "E"}[arch]], batch_norm=False)


@functools.lru_cache(maxsize=2)
def layer_names(arch: Literal["vgg16", "vgg19"]) -> dict[str, int]:
    """``{"relu1_1": index in torchvision's ``features``, ...}`` for every ReLU of ``arch``."""
    names, block, conv = {}, 1, 0
    for i, layer in enumerate(_features(arch)):
        if isinstance(layer, nn.MaxPool2d):
            block, conv = block + 1, 0
        elif isinstance(layer, nn.Conv2d):
            conv += 1
        elif isinstance(layer, nn.ReLU):
            names[f"relu{block}_{conv}"] = i
    return names


def _vggface_to_torchvision(state: Mapping[str, torch.Tensor], features: nn.Sequential) -> dict[str, torch.Tensor]:
    """``conv{b}_{k}.weight`` of ``vgg_face_dag.pth`` -> ``{features index}.weight`` (the classifier is dropped)."""
    out, block, conv = {}, 1, 0
    for i, layer in enumerate(features):
        if isinstance(layer, nn.MaxPool2d):
            block, conv = block + 1, 0
        elif isinstance(layer, nn.Conv2d):
            conv += 1
            for part in ("weight", "bias"):
                key = f"conv{block}_{conv}.{part}"
                if key not in state:
                    raise BfrzooError(f"the VGGFace weight file lacks {key!r}; pass the Oxford {VGGFACE.filename}")
                out[f"{i}.{part}"] = state[key]
    return out


class VGGFeatures(nn.Module):
    """Frozen VGG: ``(N, 3, H, W)`` image -> ``{layer name: feature}`` for the requested ReLU outputs.

    Args:
        layers: ReLU outputs to return, e.g. ``("relu3_1", "relu4_1", "relu5_1")`` (PSFR-GAN Sec. 3.2) or
            ``("relu1_2", "relu2_2", "relu3_3", "relu4_3")`` (a VGG16 perceptual loss).
        network: ``"vgg19"`` / ``"vgg16"`` (ImageNet weights) or ``"vggface"`` (VGG16 topology, VGGFace
            weights): a key of :data:`VGG_CONFIGS`.
        pretrained: ``True``: the network's weight file, resolved; a path: that file (torchvision layout, or the
            Oxford layout for ``vggface``); ``False``: random init (tests only).
        input_range: ``(lo, hi)`` value range of the input images; mapped to ``[0, 1]``, then normalised as
            the network's weights expect.
    Always in eval mode; gradients flow to the input only.
    """

    def __init__(
        self,
        layers: tuple[str, ...] = ("relu3_1", "relu4_1", "relu5_1"),
        network: VGGNetwork = "vgg19",
        pretrained: bool | str | Path = True,
        input_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        if network not in VGG_CONFIGS:
            raise UnknownNameError(f"unknown VGG network {network!r}; choose one of {', '.join(VGG_CONFIGS)}")
        cfg = VGG_CONFIGS[network]
        names = layer_names(cfg.arch)
        unknown = [n for n in layers if n not in names]
        if unknown or not layers:
            raise BfrzooError(f"unknown {cfg.arch} layer(s) {unknown or '(none given)'}; choose from {', '.join(names)}")
        self.network, self.layers, self.input_range = network, tuple(layers), input_range
        features = _features(cfg.arch)
        if pretrained:
            path = resolve_weights(cfg.weights, None if pretrained is True else Path(pretrained))
            state = load_checkpoint(path, f"{network} weights")
            if cfg.layout == "vggface":
                state = _vggface_to_torchvision(state, features)
            else:
                prefix = "features."
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            missing = sorted(set(features.state_dict()) - set(state))
            if missing:
                raise BfrzooError(
                    f"{str(path)!r} lacks VGG weights {missing[:4]}; pass {cfg.weights.filename} ({cfg.weights.source})"
                )
            features.load_state_dict({k: state[k] for k in features.state_dict()})
        last = max(names[n] for n in layers)
        trunk = features[: last + 1]
        self.extractor = FrozenFeatureNet(create_feature_extractor(trunk, {str(names[n]): n for n in layers}))
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:  # noqa: ARG002 - always frozen in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        lo, hi = self.input_range
        x = ((x - lo) / (hi - lo) - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return dict(self.extractor(x))


def VGG19Features(  # noqa: N802 - kept as the historical constructor name
    layers: tuple[str, ...] = ("relu3_1", "relu4_1", "relu5_1"),
    pretrained: bool | str | Path = True,
    input_range: tuple[float, float] = (-1.0, 1.0),
) -> VGGFeatures:
    """:class:`VGGFeatures` with ``network="vgg19"`` (ImageNet weights)."""
    return VGGFeatures(layers, "vgg19", pretrained, input_range)


#: ReLU names of VGG19 in order (``relu1_1`` ... ``relu5_4``).
LAYER_NAMES: tuple[str, ...] = (
    "relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3", "relu3_4",
    "relu4_1", "relu4_2", "relu4_3", "relu4_4", "relu5_1", "relu5_2", "relu5_3", "relu5_4",
)
