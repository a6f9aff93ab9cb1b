"""Identity ("face preserving") loss on ArcFace features: the MMRB network's Eq. (15),
``L_FP = ||phi(X) - phi(X')||_1`` with ``phi`` a pre-trained ArcFace (Deng et al., CVPR 2019).

``phi`` is the IR-SE50 backbone of facexlib (``facexlib.recognition.arcface_arch.Backbone(50, 0.6, "ir_se")``,
the InsightFace_Pytorch architecture) with its released file ``recognition_arcface_ir_se50.pth``. facexlib's own
``init_recognition_model`` moves the network to CUDA unconditionally, so bfrzoo builds the network from facexlib's
architecture module and resolves the file like every other weight (explicit path > cache > download; offline: one
clear error). Without the file, training stops with that error and names the flag that trains without the loss
(``--model.init_args.lambda_fp 0``); a network with random weights is built only on request
(``pretrained=False``, tests).

Input convention of that ArcFace: a 112 x 112 RGB face in ``[-1, 1]``. From an FFHQ-aligned face the crop is the
central box ``y in [35, 223], x in [32, 220]`` of a 256 px face (the convention of the identity losses that use this
IR-SE50 file on FFHQ-aligned faces, e.g. pSp's), scaled to the face size and resized to 112 with bilinear
interpolation. The embedding is L2-normalised (512-d), so the L1 distance is bounded.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.blocks.frozen import FrozenFeatureNet
from bfrzoo.errors import BfrzooError
from bfrzoo.weights import PretrainedCfg, load_checkpoint, resolve_weights

ARCFACE_IR_SE50 = PretrainedCfg(
    filename="recognition_arcface_ir_se50.pth",
    url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth",
    source="facexlib's release of the ArcFace IR-SE50 network (InsightFace_Pytorch weights)",
    license="MIT (facexlib; InsightFace_Pytorch); trained on MS-Celeb-1M, whose terms apply",
)

#: The face box of an FFHQ-aligned 256 px face that this ArcFace sees: (top, bottom, left, right) / 256.
ARCFACE_BOX_256: tuple[int, int, int, int] = (35, 223, 32, 220)


def arcface_ir_se50() -> nn.Module:
    """facexlib's IR-SE50 ArcFace architecture, random init (load weights with :class:`IdentityLoss`)."""
    try:
        from facexlib.recognition.arcface_arch import Backbone
    except ImportError as exc:  # facexlib is installed with --no-deps (see DEVELOPERS.md)
        raise BfrzooError(
            "the identity loss needs facexlib's ArcFace architecture: pip install --no-deps facexlib "
            "(or train without it: --model.init_args.lambda_fp 0)"
        ) from exc
    return Backbone(num_layers=50, drop_ratio=0.6, mode="ir_se")


class IdentityLoss(nn.Module):
    """``mean_n ||phi(x_n) - phi(y_n)||_1`` for FFHQ-aligned faces ``x`` (restored, with gradients) and ``y``
    (detached), ``(N, 3, S, S)`` in ``[-1, 1]``; ``phi`` the frozen ArcFace (see the module docstring).

    Args:
        pretrained: ``True`` (the released file, resolved), ``False`` (random weights: tests only) or a path.
        network: a ready embedding network (``(N, 3, 112, 112)`` in ``[-1, 1]`` -> ``(N, D)``), e.g. a tiny one in
            tests; overrides ``pretrained``.
    """

    def __init__(self, pretrained: bool | str | Path = True, network: nn.Module | None = None) -> None:
        super().__init__()
        if network is None:
            network = arcface_ir_se50()
            if pretrained:
                path = resolve_weights(ARCFACE_IR_SE50, None if pretrained is True else Path(pretrained))
                from bfrzoo.registry import load_state_dict_strict

                load_state_dict_strict(network, load_checkpoint(path, "ArcFace weights"), source=str(path))
        self.net = FrozenFeatureNet(network)

    @staticmethod
    def crop(x: torch.Tensor) -> torch.Tensor:
        """The ArcFace input of FFHQ-aligned faces ``x (N, 3, S, S)``: the central face box, resized to 112."""
        s = x.shape[-1] / 256
        top, bottom, left, right = (round(v * s) for v in ARCFACE_BOX_256)
        return F.interpolate(x[..., top:bottom, left:right], size=(112, 112), mode="bilinear", align_corners=False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.crop(x.float()))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.embed(y)
        return (self.embed(x) - target).abs().sum(dim=1).mean()
