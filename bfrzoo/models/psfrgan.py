"""PSFR-GAN: progressive semantic-aware style transformation for blind face restoration (Chen et al., CVPR 2021).

Generator (Sec. 3.1, Eq. 1-3, Fig. 2): a learned constant ``F_0`` of ``C x 16 x 16`` goes through a residual block
(``F_1``) and ``log2(out_size / 16)`` upsampling blocks (nearest 2x upsampling + conv, ``F_2..F_6`` at 512). After
each, a residual block with two spatially adaptive style transformations (:class:`~bfrzoo.blocks.spade.StyleTransform`)
re-styles the features from the pair (LQ image, one-hot parsing map), bicubic-resized to the feature size. A
3x3 conv (ToRGB) gives the image. Every conv is spectrally normalised (Sec. 3.3). Channels at feature side ``s``:
``clip(1024 * 16 / s, *ch_range)`` (1024 at 16x16 down to 32 at 512x512 for the published model).

The restorer :class:`PSFRGAN` runs the face parsing network (:class:`~bfrzoo.models.parsenet.ParseNet`, kept
frozen) on the LQ face, turns the argmax of its logits into a one-hot map (as the authors' test code does) and
runs the generator, so a user gives only the LQ face: ``(N, 3, S, S)`` in ``[-1, 1]`` -> the same.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bfrzoo.blocks.common import apply_spectral_norm
from bfrzoo.blocks.spade import StyleTransformResBlock
from bfrzoo.errors import CheckpointMismatchError, ImageInputError
from bfrzoo.models.parsenet import NUM_PARSING_CLASSES, PARSENET_512, ParseNet, onehot_parsing
from bfrzoo.registry import load_state_dict_strict, register_converter, register_restorer
from bfrzoo.weights import PretrainedCfg, load_checkpoint, resolve_weights, strip_prefix

#: The released PSFR-GAN generator (the parsing network is a second file: :data:`PARSENET_512`).
PSFRGAN_512 = PretrainedCfg(
    filename="psfrgan_epoch15_net_G.pth",
    url=None,
    source="PSFR-GAN authors (github.com/chaofengc/PSFRGAN, 'pretrain_models' Google Drive / BaiduYun link); "
    "needs parse_multi_iter_90000.pth from the same place in the same folder",
    license="CC BY-NC-SA 4.0 (PSFR-GAN repository), non-commercial",
    converter="psfrgan",
)


def _feature_channels(size: int, ch_range: tuple[int, int]) -> int:
    """``clip(1024 * 16 // size, *ch_range)``: the released channel rule."""
    lo, hi = ch_range
    return max(lo, min(1024 * 16 // size, hi))


class PSFRGenerator(nn.Module):
    """The PSFR-GAN generator, Eq. (1)-(3): ``forward(lq, parsing)`` -> ``(N, 3, out_size, out_size)``.

    The output is not squashed (no tanh, as released); :class:`PSFRGAN` clamps it to ``[-1, 1]`` in eval mode.

    Args:
        out_size: output side (a power-of-two multiple of ``min_feat_size``).
        min_feat_size: side of the learned constant ``F_0`` (16 in the paper).
        ch_range: (min, max) channel clip of ``clip(1024 * 16 / side)``.
        relu_type: activation inside the style residual blocks (``LeakyReLU`` = slope 0.2, ``relu``, ``prelu``).
        parse_ch: parsing classes of the one-hot map (19, CelebAMask-HQ).
        style_hidden: hidden channels of the style network Psi (64 as released).
        spectral_norm: wrap every conv in spectral normalisation (Sec. 3.3; the released weights need it).
    """

    def __init__(
        self,
        out_size: int = 512,
        min_feat_size: int = 16,
        ch_range: tuple[int, int] = (32, 1024),
        relu_type: str = "LeakyReLU",
        parse_ch: int = NUM_PARSING_CLASSES,
        style_hidden: int = 64,
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        ratio = out_size // min_feat_size if min_feat_size > 0 else 0
        if ratio < 1 or ratio * min_feat_size != out_size or ratio & (ratio - 1):
            raise ValueError(f"out_size must be min_feat_size times a power of two, got {out_size} and {min_feat_size}")
        lo, hi = ch_range
        self.out_size, self.parse_ch = out_size, parse_ch
        ref_ch = 3 + parse_ch
        ch = _feature_channels(min_feat_size, ch_range)
        self.const_input = nn.Parameter(torch.randn(1, ch, min_feat_size, min_feat_size))
        # F_1 = Phi_ST(Phi_RES(F_0)): a conv, then the style residual block (key layout head.0 / head.1).
        self.head = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1), StyleTransformResBlock(ch, ref_ch, relu_type, style_hidden)
        )
        # F_i = Phi_ST(Phi_UP(F_{i-1})): nearest 2x, conv, style residual block (body.i.0 / .1 / .2).
        body: list[nn.Module] = []
        head_ch = ch
        for _ in range(ratio.bit_length() - 1):
            cin, cout = max(lo, min(head_ch, hi)), max(lo, min(head_ch // 2, hi))
            body.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2.0, mode="nearest"),
                    nn.Conv2d(cin, cout, 3, padding=1),
                    StyleTransformResBlock(cout, ref_ch, relu_type, style_hidden),
                )
            )
            head_ch //= 2
        self.body = nn.Sequential(*body)
        self.img_out = nn.Conv2d(max(lo, min(head_ch, hi)), 3, 3, padding=1)  # ToRGB
        if spectral_norm:
            apply_spectral_norm(self)

    @staticmethod
    def _styled(block: nn.Sequential, feat: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        for layer in block:
            feat = layer(feat, ref) if isinstance(layer, StyleTransformResBlock) else layer(feat)
        return feat

    def forward(self, lq: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
        """``lq`` (N, 3, S, S) in [-1, 1] and ``parsing`` (N, parse_ch, S, S) one-hot (or soft) -> (N, 3, out_size,
        out_size), roughly in [-1, 1]. The reference ``cat(lq, parsing)`` is bicubic-resized to every scale."""
        if lq.ndim != 4 or lq.shape[1] != 3 or parsing.ndim != 4 or parsing.shape[1] != self.parse_ch:
            raise ImageInputError(
                f"PSFRGenerator expects lq (N, 3, H, W) and parsing (N, {self.parse_ch}, H, W), got "
                f"{tuple(lq.shape)} and {tuple(parsing.shape)}"
            )
        if lq.shape[0] != parsing.shape[0] or lq.shape[-2:] != parsing.shape[-2:]:
            raise ImageInputError(
                f"lq {tuple(lq.shape)} and parsing {tuple(parsing.shape)} must share batch size and spatial size"
            )
        ref = torch.cat([lq, parsing.to(lq.dtype)], dim=1)
        feat = self.const_input.expand(lq.shape[0], -1, -1, -1)
        feat = self._styled(self.head, feat, ref)
        for block in self.body:
            feat = self._styled(block, feat, ref)
        return self.img_out(feat)


class PSFRGAN(nn.Module):
    """The PSFR-GAN restorer: face parsing network + generator. ``(N, 3, S, S)`` in ``[-1, 1]`` -> the same.

    The parsing network ``parser`` is a prior pretrained separately (appendix A) and not updated while the
    generator trains: it always runs in eval mode (BatchNorm running statistics) and without gradients; its
    parsing is hardened to a one-hot map (argmax), as the authors' test code does. The output is clamped to
    ``[-1, 1]`` in eval mode only (a clamp in training would zero the gradient of overshooting pixels).

    Attributes:
        input_size: the fixed input side (``= generator.out_size``); :class:`bfrzoo.interface.Restorer` resizes.
    """

    def __init__(self, generator: PSFRGenerator, parser: ParseNet) -> None:
        super().__init__()
        if parser.out_size != generator.out_size or parser.in_size != generator.out_size:
            raise ValueError(
                f"ParseNet in/out size ({parser.in_size}, {parser.out_size}) must equal the generator's "
                f"out_size {generator.out_size}"
            )
        self.generator = generator
        self.parser = parser.eval().requires_grad_(False)  # a frozen prior: never trained through the restorer
        self.input_size = generator.out_size

    def train(self, mode: bool = True) -> PSFRGAN:
        super().train(mode)
        self.parser.eval()  # frozen prior: BatchNorm keeps its running statistics
        return self

    def parse(self, lq: torch.Tensor) -> torch.Tensor:
        """One-hot parsing ``(N, 19, S, S)`` of ``lq`` (N, 3, S, S) in ``[-1, 1]`` (argmax of the FPN logits)."""
        with torch.no_grad():
            return onehot_parsing(self.parser(lq)[0])

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        size = self.input_size
        if lq.ndim != 4 or lq.shape[1] != 3 or tuple(lq.shape[-2:]) != (size, size):
            raise ImageInputError(
                f"PSFR-GAN expects aligned faces (N, 3, {size}, {size}) in [-1, 1], got {tuple(lq.shape)}; "
                f"resize to {size}x{size} first (bfrzoo.interface.Restorer does this for you)"
            )
        if self.generator.parse_ch:
            parsing = self.parse(lq)
        else:  # ablation without parsing guidance (Table 2, A and C): the generator sees the LQ image only
            parsing = lq.new_zeros(lq.shape[0], 0, *lq.shape[-2:])
        out = self.generator(lq, parsing)
        return out if self.training else out.clamp(-1.0, 1.0)


def _check_generator_layout(state: Mapping[str, torch.Tensor], source: str) -> None:
    if "const_input" not in state:
        some = ", ".join(list(state)[:4])
        raise CheckpointMismatchError(
            f"{source} has no key 'const_input' (first keys: {some}): it is not a PSFR-GAN generator checkpoint "
            "(weights of the parsing network load with from_official('parsenet', ...), or as parser_state_dict)"
        )


@register_converter("psfrgan_generator")
def convert_psfrgan_generator(state_dict: Mapping[str, torch.Tensor], **arch_kwargs: object) -> PSFRGenerator:
    """Build a :class:`PSFRGenerator` from the released ``psfrgan_epoch15_net_G.pth`` (bfrzoo keeps its key names:
    ``const_input``, ``head``, ``body``, ``img_out``, spectral norm as ``weight_orig/_u/_v``; a ``module.`` prefix
    from DataParallel is dropped). The network is returned in eval mode, so the stored ``u``/``v`` are used as they
    are (a training-mode forward would do a power-iteration step and change the output).

    ``arch_kwargs`` are :class:`PSFRGenerator`'s arguments (defaults: the published 512 model).
    """
    state = strip_prefix(state_dict)
    _check_generator_layout(state, "the generator checkpoint")
    net = PSFRGenerator(**arch_kwargs)  # type: ignore[arg-type]
    load_state_dict_strict(net, state, source="PSFR-GAN generator checkpoint")
    return net.eval()


@register_converter("psfrgan")
def convert_psfrgan(
    state_dict: Mapping[str, torch.Tensor],
    parser_state_dict: str | Path | Mapping[str, torch.Tensor] | None = None,
    **arch_kwargs: object,
) -> PSFRGAN:
    """Build the :class:`PSFRGAN` restorer from released weights.

    ``state_dict`` is either a bfrzoo restorer state (keys ``generator.*`` and ``parser.*``) or the released
    generator (``psfrgan_epoch15_net_G.pth``). In the latter case the parsing network comes from
    ``parser_state_dict`` (a state dict or a path) or, when that is ``None``, from ``parse_multi_iter_90000.pth``
    in the weight cache (a missing file is one :class:`~bfrzoo.errors.WeightsNotFoundError` saying where to put
    it). ``arch_kwargs`` are the :func:`psfrgan` factory's arguments.
    """
    state = strip_prefix(state_dict)
    net = psfrgan(**arch_kwargs)  # type: ignore[arg-type]
    if any(k.startswith("generator.") for k in state):
        load_state_dict_strict(net, state, source="PSFR-GAN restorer checkpoint")
        return net.eval()
    _check_generator_layout(state, "the generator checkpoint")
    load_state_dict_strict(net.generator, state, source="PSFR-GAN generator checkpoint")
    if parser_state_dict is None or isinstance(parser_state_dict, (str, Path)):
        parser_state = load_checkpoint(resolve_weights(PARSENET_512, parser_state_dict))
    else:
        parser_state = dict(parser_state_dict)
    load_state_dict_strict(net.parser, strip_prefix(parser_state), source="ParseNet (parsing network) checkpoint")
    return net.eval()


@register_restorer(
    "psfrgan",
    tiny=dict(out_size=32, min_feat_size=16, ch_range=(16, 32), parser_min_feat_size=8, parser_base_ch=8,
              parser_res_depth=1, parser_ch_range=(8, 16)),
)
def psfrgan(
    out_size: int = 512,
    min_feat_size: int = 16,
    ch_range: tuple[int, int] = (32, 1024),
    relu_type: str = "LeakyReLU",
    parser_min_feat_size: int = 32,
    parser_base_ch: int = 64,
    parser_res_depth: int = 10,
    parser_ch_range: tuple[int, int] = (32, 256),
    use_parsing: bool = True,
) -> PSFRGAN:
    """PSFR-GAN (parsing network + progressive style-transformation generator), configurable; fixed input side.

    Defaults are the published 512 architecture; ``psfrgan_512`` is the same with the released weights. Tiny
    variants for tests and CPU demos: ``out_size=64, ch_range=(32, 64), parser_min_feat_size=16,
    parser_base_ch=16, parser_res_depth=3, parser_ch_range=(16, 64)`` (the fixture configuration).

    ``use_parsing=False`` is the ablation without parsing guidance (Table 2, models A and C): the style
    transformations see the LQ image alone (``parse_ch = 0``, a 3-channel reference); the parsing network is kept
    (training uses it for the style-loss masks) but not run by ``forward``.
    """
    generator = PSFRGenerator(  # type: ignore[arg-type]
        out_size, min_feat_size, tuple(ch_range), relu_type, parse_ch=NUM_PARSING_CLASSES if use_parsing else 0
    )
    parser = ParseNet(
        in_size=out_size, out_size=out_size, min_feat_size=parser_min_feat_size, base_ch=parser_base_ch,
        res_depth=parser_res_depth, ch_range=tuple(parser_ch_range),  # type: ignore[arg-type]
    )
    return PSFRGAN(generator, parser)


@register_restorer("psfrgan_512", variant_of="psfrgan", pretrained=PSFRGAN_512)
def psfrgan_512() -> PSFRGAN:
    """PSFR-GAN at 512 px as published (weights: psfrgan_epoch15_net_G.pth + parse_multi_iter_90000.pth)."""
    return psfrgan()
