"""The MMRB network of Hu, Liu, Liu, Lu, Yu, Fu, "Enhancing Quality of Pose-varied Face Restoration with Local Weak
Feature Sensing and GAN Prior" (journal version: paper 000, preprint: paper 002 in /work/shared/papers). No
official code exists: the papers are the specification; docs/models/mmrb.md lists every open choice.

Architecture (journal Sec. III-A, Fig. 2, Eq. 1-3; preprint Sec. 3.1 and 4.2):

* an asymmetric codec ``x_hat, Z = Codec(x)`` (Eq. 1). Encoder (GPEN's equalised layers): a 1x1 conv at the input
  size, then a stride-2 3x3 conv per scale down to 4x4, with mixed multi-path residual blocks
  (:class:`~bfrzoo.blocks.mmrb.MMRB`) after the convs; the 4x4 feature flattened through an equalised linear layer is
  the latent ``Z``. Decoder: from 4x4 up to the input size, upsampling + the encoder feature of the same scale (skip)
  + a 3x3 conv per scale, each scale's feature ``x_hat_i`` also decoded to an RGB image (1x1 conv) for the L1 losses
  of the multi-scale reconstructions;
* ``W = MLP(Z)`` (Eq. 2): the prior's own 8-layer mapping network, ``w`` broadcast to every style block;
* the pre-trained StyleGAN2 (GPEN's, noise by concatenation): ``y_{i+1} = Style(w, y_i, Concat[x_hat_i, y_i])``
  (Eq. 3), the decoder feature of each resolution entering both styled convs of that resolution (as GPEN's
  encoder features do). The decoder has the prior's widths ("the resolution and dimension for the output feature
  maps of every level in the reconstruction process are consistent with the noise branch of the pre-trained
  model", Sec. IV-B), so GPEN's released generator loads; other decoder widths (``decoder_narrow``) go through
  ``Generator(noise_channels=...)`` and need a prior trained with them.

MMRB counts (the papers reconciled): the journal says the encoder "has one more MMRB layer in each scale than the
decoder"; the preprint "only one MMRB layer for each convolution scale and a total of 6, except for the encoder's
first and last convolution scales". At 512 px the encoder has 8 scales (512 ... 4); one MMRB at each of the 6 inner
scales (256 ... 8) and none in the decoder satisfies both. Arguments: ``encoder_blocks`` per inner encoder scale (1),
``decoder_blocks`` per decoder scale (0), ``outer_blocks`` at the encoder's first and last scales (0).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.blocks.mmrb import MMRB, PlainResBlock
from bfrzoo.blocks.stylegan2 import ConvLayer, EqualConv2d, EqualLinear, Generator, ResBlock, stylegan2_channels
from bfrzoo.errors import ImageInputError
from bfrzoo.registry import register_restorer


class MMRBOutput(NamedTuple):
    """``image (N, 3, S, S)``; ``reconstructions`` ``{r: (N, 3, r, r)}`` of the decoder's scales (for the L1 losses
    on multi-scale reconstructions); ``latent`` the W codes ``(N, n_latent, style_dim)``."""

    image: torch.Tensor
    reconstructions: dict[int, torch.Tensor]
    latent: torch.Tensor


class MMRBNet(nn.Module):
    """The MMRB network (see the module docstring): ``(N, 3, size, size)`` in ``[-1, 1]`` -> the same.

    ``auxiliary_modules``: the multi-scale RGB heads, trained by the reconstruction losses only (they do not feed
    the restored image; the contract test checks the other parameters against the output).

    Args:
        size: input and output side (power of two >= 16); not fully convolutional: ``input_size = size``.
        style_dim / n_mlp / channel_multiplier / narrow: the StyleGAN2 prior (GPEN-512: 512, 8, 2, 1.0).
        encoder_blocks: MMRBs at each inner encoder scale (``size / 2`` ... 8).
        decoder_blocks: MMRBs at each decoder scale (the journal's "one fewer" than the encoder: 0).
        outer_blocks: MMRBs at the encoder's first and last scales (``size`` and 4; the preprint: 0).
        use_mmrb: ``False`` puts plain residual blocks in the same places (the "w/o MMRB" ablation).
        share_weights: Eq. (7)-(8) reuse the Eq. (5)-(6) kernels (see :mod:`bfrzoo.blocks.mmrb`).
        decoder_narrow: width factor of the decoder (``None``: the prior's widths, as the paper).
    """

    auxiliary_modules: tuple[str, ...] = ("to_rgbs",)

    def __init__(
        self,
        size: int = 512,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        narrow: float = 1.0,
        encoder_blocks: int = 1,
        decoder_blocks: int = 0,
        outer_blocks: int = 0,
        use_mmrb: bool = True,
        share_weights: bool = False,
        decoder_narrow: float | None = None,
    ) -> None:
        super().__init__()
        if size < 16 or size & (size - 1):
            raise ValueError(f"MMRB network size must be a power of two >= 16, got {size}")
        if min(encoder_blocks, decoder_blocks, outer_blocks) < 0:
            raise ValueError("encoder_blocks, decoder_blocks and outer_blocks must be >= 0")
        self.input_size = self.size = size
        ch = stylegan2_channels(channel_multiplier, narrow)
        dch = stylegan2_channels(channel_multiplier, decoder_narrow) if decoder_narrow is not None else ch
        self.decoder_channels = {r: dch[r] for r in self.resolutions(4)}
        noise_channels = None if decoder_narrow is None else dict(self.decoder_channels)
        self.generator = Generator(size, style_dim, n_mlp, channel_multiplier, narrow, noise_mode="concat",
                                   noise_channels=noise_channels)

        def blocks(channels: int, count: int) -> nn.Sequential:
            make = (lambda c: MMRB(c, share_weights)) if use_mmrb else PlainResBlock
            return nn.Sequential(*[make(channels) for _ in range(count)])

        # encoder: 1x1 at `size`, then down-convs to 4x4; MMRBs after the conv of each scale
        self.encoder_in = ConvLayer(3, ch[size], 1)
        self.encoder_down = nn.ModuleDict()
        self.encoder_blocks = nn.ModuleDict({str(size): blocks(ch[size], outer_blocks)})
        for r in self.resolutions(4)[:-1][::-1]:  # size/2 ... 4
            self.encoder_down[str(r)] = ConvLayer(ch[2 * r], ch[r], 3, downsample=True)
            self.encoder_blocks[str(r)] = blocks(ch[r], outer_blocks if r == 4 else encoder_blocks)
        self.final_linear = EqualLinear(ch[4] * 16, style_dim, activation=True)  # -> Z (Eq. 1)
        # decoder: 4x4 -> size, skip from the encoder at every scale, an RGB head per scale
        self.decoder_in = ConvLayer(ch[4], dch[4], 3)
        self.decoder_up = nn.ModuleDict()
        self.decoder_fuse = nn.ModuleDict()
        self.decoder_blocks = nn.ModuleDict()
        self.to_rgbs = nn.ModuleDict()
        for r in self.resolutions(8):
            self.decoder_up[str(r)] = ConvLayer(dch[r // 2], dch[r], 3)
            self.decoder_fuse[str(r)] = ConvLayer(dch[r] + ch[r], dch[r], 3)
            self.decoder_blocks[str(r)] = blocks(dch[r], decoder_blocks)
            self.to_rgbs[str(r)] = EqualConv2d(dch[r], 3, 1)

    def resolutions(self, start: int) -> list[int]:
        """``[start, 2 start, ..., size]``."""
        return [2**k for k in range(int(math.log2(start)), int(math.log2(self.size)) + 1)]

    # ------------------------------------------------------------------------------------------ forward
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """``x (N, 3, S, S)`` -> (``Z (N, style_dim)``, encoder features ``{S: ..., ..., 4: ...}``)."""
        feat = self.encoder_blocks[str(self.size)](self.encoder_in(x))
        feats = {self.size: feat}
        for r in self.resolutions(4)[:-1][::-1]:
            feat = self.encoder_blocks[str(r)](self.encoder_down[str(r)](feat))
            feats[r] = feat
        return self.final_linear(feat.flatten(1)), feats

    def decode(self, feats: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The reconstruction features ``x_hat_i`` ``{4: ..., ..., S: ...}`` (what the noise branches receive)."""
        d = self.decoder_in(feats[4])
        out = {4: d}
        for r in self.resolutions(8):
            key = str(r)
            up = self.decoder_up[key](F.interpolate(d, scale_factor=2.0, mode="nearest"))
            d = self.decoder_blocks[key](self.decoder_fuse[key](torch.cat([up, feats[r]], dim=1)))
            out[r] = d
        return out

    def forward_with_aux(self, x: torch.Tensor) -> MMRBOutput:
        """For training: the image, the multi-scale reconstructions and the W codes (:class:`MMRBOutput`)."""
        self._check(x)
        z, feats = self.encode(x)
        dec = self.decode(feats)
        noise = [dec[4]]
        for r in self.resolutions(8):
            noise += [dec[r], dec[r]]  # both styled convs of a resolution see the same decoder feature (Eq. 3)
        out = self.generator(z, noise=noise)  # W = MLP(Z) (Eq. 2): the prior's mapping network, w broadcast
        recon = {r: self.to_rgbs[str(r)](dec[r]) for r in self.resolutions(8)}
        return MMRBOutput(out.image, recon, out.latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` in ``[-1, 1]`` -> restored ``(N, 3, S, S)``; clamped to ``[-1, 1]`` in eval mode only."""
        out = self.forward_with_aux(x).image
        return out if self.training else out.clamp(-1.0, 1.0)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.size, self.size):
            raise ImageInputError(
                f"the MMRB network ({self.size} px) needs (N, 3, {self.size}, {self.size}) in [-1, 1], got "
                f"{tuple(x.shape)}; resize faces first (bfrzoo.interface.Restorer does)"
            )

    # ------------------------------------------------------------------------------------- parameter parts
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parts that get their own learning rate (preprint Sec. 4.2): ``codec`` (encoder, MMRBs, latent
        layer, decoder, RGB heads), ``prior`` (the StyleGAN2: mapping network, styled convs, ToRGBs) and ``noise``
        (the noise branches: the StyleGAN2's per-layer noise-injection weights)."""
        noise = [p for n, p in self.generator.named_parameters() if n.endswith("noise.weight")]
        noise_ids = {id(p) for p in noise}
        prior = [p for p in self.generator.parameters() if id(p) not in noise_ids]
        gen_ids = {id(p) for p in self.generator.parameters()}
        codec = [p for p in self.parameters() if id(p) not in gen_ids]
        return {"codec": codec, "prior": prior, "noise": noise}

    def freeze_prior(self, frozen: bool = True) -> None:
        """Keep the StyleGAN2 fixed (the "w/o fine-tuning" of Table IV c / Table 5 d); its noise branches still
        learn (they are the codec's entry into the prior, with their own learning rate)."""
        for name, p in self.generator.named_parameters():
            if not name.endswith("noise.weight"):
                p.requires_grad_(not frozen)


class LocalDiscriminator(nn.Module):
    """A local (component) discriminator of the preprint (Sec. 3.4): "similar to that of the global discriminator",
    with only two down-sampling operations and a single-channel output map. StyleGAN2's blocks: a 1x1 fromRGB conv,
    two residual down-sampling blocks, a 3x3 conv and a 1x1 conv to one channel.
    ``(N, 3, s, s)`` -> logits ``(N, 1, s / 4, s / 4)``."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvLayer(3, channels, 1), ResBlock(channels, 2 * channels), ResBlock(2 * channels, 4 * channels),
            ConvLayer(4 * channels, 4 * channels, 3),
        )
        self.out = EqualConv2d(4 * channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


@register_restorer(
    "mmrb",
    tiny=dict(size=16, style_dim=16, n_mlp=2, channel_multiplier=1, narrow=1 / 32),
)
def mmrb(
    size: int = 512,
    style_dim: int = 512,
    n_mlp: int = 8,
    channel_multiplier: int = 2,
    narrow: float = 1.0,
    encoder_blocks: int = 1,
    decoder_blocks: int = 0,
    outer_blocks: int = 0,
    use_mmrb: bool = True,
    share_weights: bool = False,
    decoder_narrow: float | None = None,
) -> MMRBNet:
    """The MMRB network (Hu et al.): MMRB codec + GPEN's StyleGAN2 prior with decoder-fed noise; configurable.

    Defaults are the papers' 512 network (6 MMRBs in the encoder, none in the decoder); ``use_mmrb=False`` is the
    "w/o MMRB" ablation.
    """
    return MMRBNet(**locals())


@register_restorer("mmrb_512", variant_of="mmrb")
def mmrb_512() -> MMRBNet:
    """The MMRB network at 512 px as in the papers (no released weights: `bfrzoo fit --recipe mmrb`)."""
    return mmrb()
