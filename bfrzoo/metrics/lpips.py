"""LPIPS, the Learned Perceptual Image Patch Similarity (Zhang et al., CVPR 2018), with AlexNet or VGG16 features.

Eq. (1) of the paper: ``d(x, y) = sum_l 1/(H_l W_l) sum_hw || w_l * (f^l_x - f^l_y) ||^2`` where ``f^l`` are the
channel-unit-normalised activations of five ReLU layers of an ImageNet backbone and ``w_l`` the learned
per-channel weights ("lin" layers, LPIPS v0.1). Lower is better; 0 for identical images.

Weights:

* backbone: torchvision's ImageNet AlexNet / VGG16 (``features`` part only), resolved through
  :func:`bfrzoo.weights.resolve_weights` (explicit file > cache > download; offline -> one
  :class:`~bfrzoo.errors.WeightsNotFoundError` naming the file). ``pretrained=False`` gives a random-init
  backbone (tests, smoke runs: values are then meaningless).
* lin layers: the LPIPS v0.1 weights (BSD-2-Clause, Zhang et al.) that torchmetrics ships inside its package
  (``torchmetrics/functional/image/lpips_models/{alex,vgg}.pth``), loaded from the installed torchmetrics.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bfrzoo.errors import BfrzooError, UnknownNameError
from bfrzoo.metrics.base import FrozenFeatureNet, PerImageMean, check_pair
from bfrzoo.weights import PretrainedCfg, load_checkpoint, read_checkpoint, resolve_weights

LPIPSNet = Literal["alex", "vgg"]


def _backbone_cfg(net_type: str, filename: str, weights: str) -> PretrainedCfg:
    """A torchvision ImageNet backbone of LPIPS-``net_type``. torchvision names its files
    ``{arch}-{first 8 hex digits of the sha256}.pth`` under one URL, so both follow from ``filename``."""
    return PretrainedCfg(
        filename=filename,
        url="https://download.pytorch.org/models/" + filename,
        source=f"torchvision ImageNet-1k {weights}, the backbone of LPIPS-{net_type}",
        license="BSD-3-Clause (torchvision); trained on ImageNet-1k, whose terms of access apply",
        sha256=filename.removesuffix(".pth").rsplit("-", 1)[1],
    )


#: torchvision ImageNet weights of the backbones.
BACKBONE_CFGS: dict[str, PretrainedCfg] = {
    "alex": _backbone_cfg("alex", "alexnet-owt-7be5be79.pth", "AlexNet (AlexNet_Weights.IMAGENET1K_V1)"),
    "vgg": _backbone_cfg("vgg", "vgg16-397923af.pth", "VGG16 (VGG16_Weights.IMAGENET1K_V1)"),
}
#: Indices in torchvision's ``features`` after which activations are taken (relu1..relu5 / relu1_2..relu5_3).
TAPS: dict[str, tuple[int, ...]] = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
CHANNELS: dict[str, tuple[int, ...]] = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
#: Input scaling of the LPIPS release (applied to images in [-1, 1]).
SHIFT, SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)


def _lin_weights(net_type: str) -> dict[str, Tensor]:
    """The LPIPS v0.1 lin-layer weights shipped by torchmetrics, as ``{'lins.K.weight': (1, C, 1, 1)}``."""
    ref = resources.files("torchmetrics.functional.image").joinpath(f"lpips_models/{net_type}.pth")
    with resources.as_file(ref) as path:
        if not Path(path).is_file():
            raise BfrzooError(
                f"the LPIPS lin-layer weights {path} are missing from the installed torchmetrics; "
                "reinstall torchmetrics (pip install --force-reinstall torchmetrics)"
            )
        state = read_checkpoint(path, "LPIPS lin-layer weights")
    return {f"lins.{k}.weight": state[f"lin{k}.model.1.weight"] for k in range(5)}


class LPIPSNetwork(nn.Module):
    """Backbone trunk + LPIPS lin layers: ``forward(preds, target)`` -> (N,) distances.

    Args:
        net_type: ``"alex"`` or ``"vgg"`` (VGG16).
        pretrained: ``True``: the torchvision ImageNet backbone from the weight cache (or download);
            a path: that torchvision checkpoint; ``False``: random-init backbone.
    """

    def __init__(self, net_type: LPIPSNet = "alex", pretrained: bool | str | Path = True) -> None:
        super().__init__()
        import torchvision

        if net_type not in TAPS:
            raise UnknownNameError(f"unknown LPIPS network {net_type!r}; known: {sorted(TAPS)}")
        self.net_type = net_type
        full = torchvision.models.alexnet(weights=None) if net_type == "alex" else torchvision.models.vgg16(weights=None)
        self.trunk = full.features[: TAPS[net_type][-1] + 1]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net_type])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.lins.load_state_dict({k.split(".", 1)[1]: v for k, v in _lin_weights(net_type).items()})
        if pretrained is not False:
            self.load_backbone(None if pretrained is True else pretrained)
        self.eval().requires_grad_(False)

    def load_backbone(self, path: str | Path | None = None) -> None:
        """Load torchvision ImageNet weights into the trunk (``path`` or the resolved cache file)."""
        from bfrzoo.registry import load_state_dict_strict

        file = resolve_weights(BACKBONE_CFGS[self.net_type], path)
        state = load_checkpoint(file)
        own = set(self.trunk.state_dict())
        trunk_state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        load_state_dict_strict(self.trunk, {k: v for k, v in trunk_state.items() if k in own}, str(file))

    def features(self, x: Tensor) -> list[Tensor]:
        """Unit-normalised (along channels) activations of the five tapped layers; ``x`` in [0, 1]."""
        h = ((2 * x - 1) - self.shift) / self.scale
        out = []
        taps = set(TAPS[self.net_type])
        for i, layer in enumerate(self.trunk):
            h = layer(h)
            if i in taps:
                out.append(h / (h.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        """LPIPS distance (Eq. 1): (N, 3, H, W) in [0, 1] twice -> (N,)."""
        fp, ft = self.features(preds), self.features(target)
        return sum(lin((a - b).square()).mean(dim=(1, 2, 3)) for lin, a, b in zip(self.lins, fp, ft))  # type: ignore[return-value]


@functools.lru_cache(maxsize=4)
def _cached_network(net_type: str, pretrained: bool | str) -> LPIPSNetwork:
    return LPIPSNetwork(net_type, pretrained)  # type: ignore[arg-type]


def lpips(
    preds: Tensor,
    target: Tensor,
    net_type: LPIPSNet = "alex",
    pretrained: bool | str = True,
    network: LPIPSNetwork | None = None,
) -> Tensor:
    """LPIPS distance per image (Zhang et al. 2018, Eq. 1); lower is better.

    Args:
        preds: (N, 3, H, W) in [0, 1].
        target: (N, 3, H, W) in [0, 1].
        net_type: backbone, ``"alex"`` (the paper's default) or ``"vgg"``.
        pretrained: see :class:`LPIPSNetwork` (the network is built once per (net_type, pretrained) and reused).
        network: a ready :class:`LPIPSNetwork` (then ``net_type`` / ``pretrained`` are ignored).

    Returns:
        (N,) float32 distances (float64 inputs give float64).
    """
    check_pair(preds, target)
    net = network if network is not None else _cached_network(net_type, str(pretrained) if isinstance(pretrained, Path) else pretrained)
    net = net.to(preds.device)
    with torch.no_grad():
        return net.to(preds.dtype)(preds, target)


class LPIPS(PerImageMean):
    """Mean LPIPS over images (lower is better). The network is frozen and not part of the state dict.

    Args:
        net_type: ``"alex"`` or ``"vgg"``.
        pretrained: see :class:`LPIPSNetwork`.
    """

    higher_is_better = False

    def __init__(self, net_type: LPIPSNet = "alex", pretrained: bool | str = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.net = FrozenFeatureNet(LPIPSNetwork(net_type, pretrained))

    def per_image(self, preds: Tensor, target: Tensor) -> Tensor:
        check_pair(preds, target)
        with torch.no_grad():
            return self.net(preds.float(), target.float())
