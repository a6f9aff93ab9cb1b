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
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from bfrzoo.blocks.common import ConvNormAct, ResidualBlock
from bfrzoo.errors import BfrzooError, ImageInputError
from bfrzoo.interface import NUM_PARSING_CLASSES
from bfrzoo.registry import load_state_dict_strict, register_converter, restorer_state_dict
from bfrzoo.weights import PretrainedCfg, read_checkpoint, strip_prefix

#: The released parser of PSFR-GAN (same architecture as ``ParseNet-latest.pth`` / ``parsing_parsenet.pth``).
PARSENET_512 = PretrainedCfg(
    filename="parse_multi_iter_90000.pth",
    url=None,
    source="PSFR-GAN authors (github.com/chaofengc/PSFRGAN, 'pretrain_models' Google Drive / BaiduYun link)",
    license="CC BY-NC-SA 4.0 (PSFR-GAN repository), non-commercial",
    converter="parsenet",
)



def _log2_ratio(big: int, small: int, what: str) -> int:
    steps = math.log2(big / small) if big > 0 and small > 0 else -1.0
    if steps < 0 or steps != int(steps):
        raise ValueError(f"{what} must be min_feat_size times a power of two, got {big} and {small}")
    return int(steps)


#: The ``kind`` entry of the ``parser.pt`` a parsing-network run writes.
PARSER_KIND = "bfrzoo.parser"


class ParseNetOutput(NamedTuple):
    """``mask_logits (N, parsing_ch, out, out)``, ``image (N, 3, out, out)`` and ``features``: the decoder's
    per-scale features ``{side: (N, C_side, side, side)}``, from the body's output at ``min_feat_size`` up to
    the last upsampling block at ``out_size`` (the parsing prior F_parse^j of MPCNet, Sec. 3.2.3)."""

    mask_logits: torch.Tensor
    image: torch.Tensor
    features: dict[int, torch.Tensor]


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
        side = min_feat_size
        self._feature_channels = {side: clip(ch)}
        for _ in range(up_steps):
            decoder.append(ResidualBlock(clip(ch), clip(ch // 2), scale="up", **acts))
            ch //= 2
            side *= 2
            self._feature_channels[side] = clip(ch)
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = ConvNormAct(clip(ch), 3)
        self.out_mask_conv = ConvNormAct(clip(ch), parsing_ch)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.in_size, self.in_size):
            raise ImageInputError(
                f"ParseNet expects (N, 3, {self.in_size}, {self.in_size}) in [-1, 1], got {tuple(x.shape)}; "
                f"resize the face to {self.in_size}x{self.in_size} first"
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mask_logits, image)`` of ``x`` ``(N, 3, in_size, in_size)`` in ``[-1, 1]``."""
        out = self.forward_features(x)
        return out.mask_logits, out.image

    def forward_features(self, x: torch.Tensor) -> ParseNetOutput:
        """Like :meth:`forward`, plus the decoder features of every scale (:class:`ParseNetOutput`)."""
        self._check(x)
        feat = self.encoder(x)
        feat = feat + self.body(feat)
        features = {int(feat.shape[-1]): feat}
        for block in self.decoder:
            feat = block(feat)
            features[int(feat.shape[-1])] = feat
        return ParseNetOutput(self.out_mask_conv(feat), self.out_img_conv(feat), features)

    def feature_channels(self) -> dict[int, int]:
        """Channels of :meth:`forward_features`' ``features`` per side, ``{min_feat_size: C, ..., out_size: C}``."""
        return dict(self._feature_channels)

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
    load_state_dict_strict(net, strip_prefix(state_dict), source="ParseNet checkpoint")
    return net.eval()


def parser_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    """The parsing-network weights inside a loaded checkpoint ``obj``: a ``parser.pt`` of ``bfrzoo fit --recipe
    parsenet``, that task's Lightning ``.ckpt`` (EMA weights preferred), the authors' released file (plain state
    dict, optional DataParallel ``module.`` prefix), or a restorer / task checkpoint that embeds a parser under
    ``parser.*`` (PSFR-GAN, MPCNet)."""
    from bfrzoo.registry import RESTORER_KIND

    if not isinstance(obj, Mapping):
        raise BfrzooError(f"{source} holds no state dict")
    kind = obj.get("kind")
    if kind == PARSER_KIND:
        obj = obj["parser"]
    elif kind not in (None, RESTORER_KIND):
        raise BfrzooError(
            f"{source} is a {kind!r} file, not a parsing network; pass the parser.pt of `bfrzoo fit --recipe parsenet`"
        )
    state = restorer_state_dict(obj)
    if any(k.startswith("parser.") for k in state):
        state = {k.removeprefix("parser."): v for k, v in state.items() if k.startswith("parser.")}
    return strip_prefix(state)


def load_parser_weights(parser: ParseNet, path: str | Path) -> ParseNet:
    """Load parsing-network weights from ``path`` into ``parser`` (strict; one clear error on a mismatch).

    Accepts everything :func:`parser_state_dict` reads. A restorer.pt of a restorer without a parser is refused
    with a message naming what to pass instead.
    """
    obj = read_checkpoint(path, "parsing network checkpoint")
    if isinstance(obj, Mapping) and isinstance(obj.get("restorer"), str):
        state = restorer_state_dict(obj)
        if not any(k.startswith("parser.") for k in state):
            raise BfrzooError(
                f"{str(path)!r} holds a {obj['restorer']!r} restorer without a parsing network; pass the parser.pt "
                "of `bfrzoo fit --recipe parsenet` or the authors' parse_multi_iter_90000.pth"
            )
    load_state_dict_strict(parser, parser_state_dict(obj, repr(str(path))), source=f"{str(path)!r} (parsing network)")
    return parser


def save_parser(parser: ParseNet, arch: Mapping[str, object], path: str | Path) -> Path:
    """Atomically write ``parser.pt`` (``{"kind", "args", "parser"}``, ``weights_only``-safe): what a parsing-network
    run leaves for ``--model.parser_checkpoint`` of PSFR-GAN and MPCNet."""
    from bfrzoo.io import atomic_torch_save

    state = {k: v.detach().cpu().clone() for k, v in parser.state_dict().items()}
    return atomic_torch_save({"kind": PARSER_KIND, "args": dict(arch), "parser": state}, path)
