"""The face parsing network (FPN, "ParseNet") of PSFR-GAN: appendix A and Fig. 9 of the paper.

Encoder (a 3x3 conv, then ``log2(in_size / min_feat_size)`` stride-2 residual blocks) -> a residual body of
``res_depth`` blocks with one skip over the whole body -> decoder (``log2(out_size / min_feat_size)`` upsampling
residual blocks) -> two 3x3 output convs: 19-class parsing logits (CelebAMask-HQ order) and an HQ image, trained
with Eq. (11) (parsing cross-entropy + pixel L2). Every conv inside the residual blocks is followed by
BatchNorm and LeakyReLU (the second conv of a block: BatchNorm only, before the residual sum).

Channels: ``ch(k) = clip(base_ch * 2**k, *ch_range)`` after ``k`` downsamplings. The published 512 model:
in/out 512, min_feat_size 32, base_ch 64, res_depth 10, ch_range (32, 256), LeakyReLU, BatchNorm.
Reflection padding everywhere, nearest-neighbour upsampling (as in the released code).
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from bfrzoo.blocks.common import ConvNormAct, ResidualBlock
from bfrzoo.errors import ImageInputError
from bfrzoo.registry import load_state_dict_strict, register_converter
from bfrzoo.weights import PretrainedCfg

#: The released parser of PSFR-GAN (same architecture as ``ParseNet-latest.pth`` / ``parsing_parsenet.pth``).
PARSENET_512 = PretrainedCfg(
    filename="parse_multi_iter_90000.pth",
    url=None,
    source="PSFR-GAN authors (github.com/chaofengc/PSFRGAN, 'pretrain_models' Google Drive / BaiduYun link)",
    license="CC BY-NC-SA 4.0 (PSFR-GAN repository), non-commercial",
    converter="parsenet",
)

#: Number of parsing classes (CelebAMask-HQ: background, skin, nose, eyes, brows, ears, mouth, lips, hair, ...).
NUM_PARSING_CLASSES = 19


def _log2_ratio(big: int, small: int, what: str) -> int:
    steps = math.log2(big / small) if big > 0 and small > 0 else -1.0
    if steps < 0 or steps != int(steps):
        raise ValueError(f"{what} must be min_feat_size times a power of two, got {big} and {small}")
    return int(steps)


class ParseNet(nn.Module):
    """Face parsing network: ``(N, 3, in_size, in_size)`` LQ face in ``[-1, 1]`` ->
    ``(mask_logits (N, parsing_ch, out_size, out_size), image (N, 3, out_size, out_size))``.

    The image head is not squashed (no tanh): it regresses the HQ face in ``[-1, 1]`` under an L2 loss.

    Args:
        in_size: input side.
        out_size: output side.
        min_feat_size: side of the body's features.
        base_ch: channels of the first conv.
        parsing_ch: parsing classes.
        res_depth: residual blocks in the body.
        relu_type: activation name (``LeakyReLU``, ``relu``, ``prelu``, ...).
        norm_type: ``bn``, ``in``, ``gn`` or ``none``.
        ch_range: (min, max) channel clip.
    """

    def __init__(
        self,
        in_size: int = 512,
        out_size: int = 512,
        min_feat_size: int = 32,
        base_ch: int = 64,
        parsing_ch: int = NUM_PARSING_CLASSES,
        res_depth: int = 10,
        relu_type: str = "LeakyReLU",
        norm_type: str = "bn",
        ch_range: tuple[int, int] = (32, 256),
    ) -> None:
        super().__init__()
        min_feat_size = min(in_size, min_feat_size)
        down_steps = _log2_ratio(in_size, min_feat_size, "in_size")
        up_steps = _log2_ratio(out_size, min_feat_size, "out_size")
        lo, hi = ch_range

        def clip(c: int) -> int:
            return max(lo, min(c, hi))

        acts = {"relu_type": relu_type, "norm_type": norm_type}
        self.in_size, self.out_size = in_size, out_size
        encoder: list[nn.Module] = [ConvNormAct(3, base_ch, 3)]
        ch = base_ch
        for _ in range(down_steps):
            encoder.append(ResidualBlock(clip(ch), clip(ch * 2), scale="down", **acts))
            ch *= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*[ResidualBlock(clip(ch), clip(ch), **acts) for _ in range(res_depth)])
        decoder: list[nn.Module] = []
        for _ in range(up_steps):
            decoder.append(ResidualBlock(clip(ch), clip(ch // 2), scale="up", **acts))
            ch //= 2
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = ConvNormAct(clip(ch), 3)
        self.out_mask_conv = ConvNormAct(clip(ch), parsing_ch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.in_size, self.in_size):
            raise ImageInputError(
                f"ParseNet expects (N, 3, {self.in_size}, {self.in_size}) in [-1, 1], got {tuple(x.shape)}; "
                f"resize the face to {self.in_size}x{self.in_size} first"
            )
        feat = self.encoder(x)
        feat = self.decoder(feat + self.body(feat))
        return self.out_mask_conv(feat), self.out_img_conv(feat)

    @torch.no_grad()
    def parse(self, x: torch.Tensor) -> torch.Tensor:
        """Hard parsing labels ``(N, out_size, out_size)`` int64 in ``[0, parsing_ch)`` of ``x`` in ``[-1, 1]``."""
        return self(x)[0].argmax(dim=1)


def onehot_parsing(logits: torch.Tensor) -> torch.Tensor:
    """Parsing logits ``(N, C, H, W)`` -> one-hot ``(N, C, H, W)`` float of their argmax (what the official
    test code feeds the generator)."""
    return torch.zeros_like(logits).scatter_(1, logits.argmax(dim=1, keepdim=True), 1.0)


@register_converter("parsenet")
def convert_parsenet(state_dict: Mapping[str, torch.Tensor], **arch_kwargs: object) -> ParseNet:
    """Build a :class:`ParseNet` from the authors' released ``parse_multi_iter_90000.pth`` /
    ``ParseNet-latest.pth`` (bfrzoo keeps their key names, so the mapping is the identity).

    ``arch_kwargs`` are :class:`ParseNet`'s arguments (defaults: the published 512 model).
    """
    net = ParseNet(**arch_kwargs)  # type: ignore[arg-type]
    state = {k.removeprefix("module."): v for k, v in state_dict.items()}
    load_state_dict_strict(net, state, source="ParseNet checkpoint")
    return net.eval()
