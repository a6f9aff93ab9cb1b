"""MPCNet: multi-prior collaboration network (Teng, Yu & Wu, "Blind Face Restoration via Multi-Prior Collaboration
and Adaptive Feature Fusion", Front. Neurorobot. 2022), paper 001 in /work/shared/papers. No official code exists:
the paper is the specification, and every choice it leaves open is listed below and in docs/models/mpcnet.md.

Architecture (Sec. 3.2-3.3, Fig. 2-4), at ``size`` = 512:

* U-shaped backbone. Encoder: a 3x3 conv at 512 px, then ``log2(size) - 2`` (7) down-sample residual blocks to the
  4x4 intermediate spatial feature ``F_spatial`` (Eq. 2). Global average pooling + an MLP map it to the latent
  codes ``F_latent`` (Eq. 3), one code per style input of the GAN (W+).
* The pre-trained StyleGAN2 prior (the zoo's one :class:`~bfrzoo.blocks.stylegan2.Generator`) with its noise inputs
  removed (``noise_mode="none"``, Sec. 3.2.2), driven by ``F_latent``; its last styled-conv output at each
  resolution 8 ... 512 is the generative prior ``F_GAN^j``.
* The pre-trained parsing mask prediction network (Sec. 3.2.3: 7 down-sample residual blocks, 10 residual blocks,
  7 up-sample residual blocks, a final conv): the zoo's :class:`~bfrzoo.models.parsenet.ParseNet` (PSFR-GAN's FPN)
  with ``min_feat_size = 4`` (7 downsamplings at 512) and ``res_depth = 10``, rather than a second parsing network;
  its decoder's per-scale features are ``F_parse^j`` (its final conv, the parsing head, gives ``I_parse``).
* Decoder: at each resolution ``r = 8 ... size`` (7 scales at 512: "the number of GAN blocks equals the number of
  APFF blocks"), the previous output is upsampled (nearest x2 + 3x3 conv), concatenated with the encoder feature of
  the same resolution (the U-Net skip) and fused by a 1x1 conv into ``F_spatial^j``; an
  :class:`~bfrzoo.blocks.apff.APFF` block fuses it with ``F_GAN^j`` (AdaIN) and ``F_parse^j`` (SFT) into
  ``F_output^{j+1}``. ``F_decode^7`` passes through a single 3x3 ToRGB conv.
* Inputs of another size are resized to ``size`` with bicubic sampling first (Sec. 3.2.1) and the output back to the
  caller's size.
* Spectral normalisation on every convolution of MPCNet's own layers (Sec. 3.4, "in both generator and
  discriminator").

Where the code must choose (the paper is silent), each an argument:

* widths: the decoder at resolution ``r`` has the StyleGAN2 prior's channels at ``r`` (AdaIN aligns ``F_GAN^j`` to
  ``F_spatial^j`` channel by channel, so the two must match); the encoder mirrors them;
* residual blocks without normalisation, LeakyReLU(0.2) (norm layers would tie the restorer to batch statistics);
* the latent MLP: ``latent_mlp_layers`` (2) equalised linear layers with leaky ReLU, then one to the W+ codes,
  equalised like the prior's own mapping network; initialised at the prior's mean latent
  (:meth:`MPCNet.init_latents_from_prior`) once the prior is loaded;
* 2 RCABs per APFF, reduction 16; the softmax of Eq. (7) over channels (see :class:`~bfrzoo.blocks.apff.APFF`);
* the two priors are frozen while MPCNet trains (the paper pre-trains them and embeds them "as decoder priors";
  ``finetune_prior=True`` trains the StyleGAN2 too); the parsing network is always frozen, in eval mode;
* departures: the pre-trained prior and parser keep their own layers without spectral norm (it would rescale the
  weights they were trained with); with spectral norm, the SFT's output convs start from a small random init
  instead of the identity (a zero weight has no spectral norm).

Table 1's ablations: ``use_gan_prior=False`` (w/o GAN prior, and so w/o AdaIN; no StyleGAN2 and no latent MLP),
``use_parsing_prior=False`` (w/o parsing prior, and so w/o SFT; no parsing network), ``use_adain=False``,
``use_sft=False`` (the parsing features concatenated instead); see :class:`~bfrzoo.blocks.apff.APFF`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.blocks.apff import APFF, GateDim
from bfrzoo.blocks.common import ConvNormAct, ResidualBlock, apply_spectral_norm
from bfrzoo.blocks.stylegan2 import EqualLinear, Generator, stylegan2_channels
from bfrzoo.errors import ImageInputError
from bfrzoo.models.parsenet import ParseNet
from bfrzoo.registry import register_restorer

_ACT = "leakyrelu"


class MPCNetOutput(NamedTuple):
    """``image (N, 3, S, S)``; the priors it used: ``gan_features`` ``{r: F_GAN}`` and ``parse_features``
    ``{r: F_parse}`` for r = 8 ... S (empty without that prior); ``parse_logits (N, 19, S, S)`` or ``None``."""

    image: torch.Tensor
    gan_features: dict[int, torch.Tensor]
    parse_features: dict[int, torch.Tensor]
    parse_logits: torch.Tensor | None


class MPCNet(nn.Module):
    """MPCNet (see the module docstring): ``(N, 3, H, W)`` in ``[-1, 1]`` -> ``(N, 3, H, W)``, internally at
    ``size`` (bicubic resizing in and out when ``(H, W) != (size, size)``).

    Args:
        size: the working resolution (a power of two >= 16); 512 in the paper.
        style_dim / n_mlp / channel_multiplier / narrow: the StyleGAN2 prior (as the ``stylegan2_prior`` recipe
            trains it, in noise mode ``none``); its channels set the decoder's.
        parser_min_feat_size / parser_base_ch / parser_res_depth / parser_ch_range: the parsing network
            (:class:`ParseNet`); ``min_feat_size = 4`` gives the paper's 7 + 10 + 7 blocks at 512;
            ``min_feat_size = 32`` is PSFR-GAN's released parser (its file loads then).
        latent_mlp_layers: hidden layers of the MLP from the pooled ``F_spatial`` to the latent codes.
        num_rcab / rcab_reduction / gate: of every APFF block.
        use_gan_prior / use_parsing_prior / use_adain / use_sft: the ablations of Table 1.
        spectral_norm: on every conv of MPCNet's own layers.
        finetune_prior: train the StyleGAN2 prior with MPCNet (default: frozen).
    """

    def __init__(
        self,
        size: int = 512,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        narrow: float = 1.0,
        parser_min_feat_size: int = 4,
        parser_base_ch: int = 64,
        parser_res_depth: int = 10,
        parser_ch_range: tuple[int, int] = (32, 256),
        latent_mlp_layers: int = 2,
        num_rcab: int = 2,
        rcab_reduction: int = 16,
        gate: GateDim = "channel",
        use_gan_prior: bool = True,
        use_parsing_prior: bool = True,
        use_adain: bool = True,
        use_sft: bool = True,
        spectral_norm: bool = True,
        finetune_prior: bool = False,
    ) -> None:
        super().__init__()
        if size < 16 or size & (size - 1):
            raise ValueError(f"MPCNet size must be a power of two >= 16, got {size}")
        if latent_mlp_layers < 0:
            raise ValueError(f"latent_mlp_layers must be >= 0, got {latent_mlp_layers}")
        self.size = size
        self.use_gan_prior, self.use_parsing_prior = use_gan_prior, use_parsing_prior
        self.finetune_prior = finetune_prior
        ch = stylegan2_channels(channel_multiplier, narrow)
        self.channels = {r: ch[r] for r in self.resolutions(4)}
        odd = [r for r, c in self.channels.items() if c % 2 or c < 2]
        if odd:
            raise ValueError(f"MPCNet needs even decoder widths (APFF halves them); widths at {odd} are odd: raise narrow")

        # encoder: 3x3 conv at `size`, then down-sample residual blocks to 4x4 (Eq. 2)
        self.encoder_in = ConvNormAct(3, ch[size], 3, relu_type=_ACT)
        self.encoder = nn.ModuleList(
            ResidualBlock(ch[r], ch[r // 2], relu_type=_ACT, norm_type="none", scale="down") for r in self.resolutions(8)[::-1]
        )
        # priors
        self.prior: Generator | None = None
        self.to_latent: nn.Sequential | None = None
        if use_gan_prior:
            self.prior = Generator(size, style_dim, n_mlp, channel_multiplier, narrow, noise_mode="none")
            widths = [ch[4]] + [style_dim] * latent_mlp_layers
            layers: list[nn.Module] = [EqualLinear(a, b, activation=True) for a, b in zip(widths[:-1], widths[1:])]
            layers.append(EqualLinear(widths[-1], self.prior.n_latent * style_dim))
            self.to_latent = nn.Sequential(*layers)
            self.prior.requires_grad_(finetune_prior)
        self.parser: ParseNet | None = None
        parse_ch: dict[int, int] = {}
        if use_parsing_prior:
            self.parser = ParseNet(
                in_size=size, out_size=size, min_feat_size=parser_min_feat_size, base_ch=parser_base_ch,
                res_depth=parser_res_depth, ch_range=tuple(parser_ch_range),  # type: ignore[arg-type]
            ).eval().requires_grad_(False)
            avail = self.parser.feature_channels()
            parse_ch = {r: avail.get(r, avail[min(avail)]) for r in self.resolutions(8)}
        # decoder: upsample, skip fusion, APFF per resolution 8 ... size (Eq. 4-7)
        self.up = nn.ModuleDict()
        self.fuse = nn.ModuleDict()
        self.apff = nn.ModuleDict()
        for r in self.resolutions(8):
            self.up[str(r)] = ConvNormAct(ch[r // 2], ch[r], 3, scale="up", relu_type=_ACT)
            self.fuse[str(r)] = ConvNormAct(2 * ch[r], ch[r], 1, relu_type=_ACT)
            self.apff[str(r)] = APFF(
                ch[r], parse_ch.get(r, 0), num_rcab, rcab_reduction, gate, use_gan=use_gan_prior, use_adain=use_adain,
                use_parsing=use_parsing_prior, use_sft=use_sft, sft_init_identity=not spectral_norm,
            )
        self.to_rgb = ConvNormAct(ch[size], 3, 3)
        if spectral_norm:
            for name in ("encoder_in", "encoder", "up", "fuse", "apff", "to_rgb"):
                apply_spectral_norm(getattr(self, name))

    # ------------------------------------------------------------------------------------------ helpers
    def resolutions(self, start: int) -> list[int]:
        """``[start, 2 start, ..., size]``."""
        return [2**k for k in range(int(math.log2(start)), int(math.log2(self.size)) + 1)]

    def train(self, mode: bool = True) -> MPCNet:
        super().train(mode)
        if self.parser is not None:
            self.parser.eval()  # a frozen prior: BatchNorm keeps its running statistics
        if self.prior is not None and not self.finetune_prior:
            self.prior.eval()
        return self

    @torch.no_grad()
    def init_latents_from_prior(self, n: int = 4096) -> None:
        """Start the latent MLP at the prior's mean latent: last layer weights scaled down 100x and its bias set to
        the mean of ``n`` mapped random codes (the truncation centre), so the first GAN features are an average
        face instead of noise. Call after loading the prior."""
        if self.prior is None or self.to_latent is None:
            return
        last = self.to_latent[-1]
        mean = self.prior.mean_latent(n).view(-1)  # (style_dim,)
        last.weight.mul_(0.01)
        last.bias.copy_(mean.repeat(self.prior.n_latent) / last.lr_mul)

    # ------------------------------------------------------------------------------------------ forward
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """``x (N, 3, S, S)`` -> (``F_spatial (N, C_4, 4, 4)``, the encoder features ``{S: ..., ..., 8: ...}``)."""
        feat = self.encoder_in(x)
        skips = {self.size: feat}
        for block in self.encoder:
            feat = block(feat)
            skips[int(feat.shape[-1])] = feat
        return skips.pop(4), skips

    def priors(self, x: torch.Tensor, spatial: torch.Tensor) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], torch.Tensor | None]:
        """The GAN prior's features from the latent codes of ``spatial`` (Eq. 3) and the parsing prior's features
        of the LQ face ``x``; empty without that prior."""
        gan: dict[int, torch.Tensor] = {}
        if self.prior is not None and self.to_latent is not None:
            latent = self.to_latent(spatial.mean(dim=(2, 3))).view(x.shape[0], self.prior.n_latent, -1)
            features = self.prior(latent, input_is_latent=True, return_features=True).features or {}
            gan = {r: features[r] for r in self.resolutions(8)}  # the APFF scales (4x4 has no APFF block)
        parse: dict[int, torch.Tensor] = {}
        logits = None
        if self.parser is not None:
            with torch.no_grad():
                out = self.parser.forward_features(x)
            logits, lowest = out.mask_logits, min(out.features)
            for r in self.resolutions(8):
                feat = out.features.get(r)
                parse[r] = feat if feat is not None else F.adaptive_avg_pool2d(out.features[lowest], r)
        return gan, parse, logits

    def forward_with_priors(self, x: torch.Tensor) -> MPCNetOutput:
        """For training and inspection: ``x (N, 3, size, size)`` in ``[-1, 1]`` -> :class:`MPCNetOutput`."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.size, self.size):
            raise ImageInputError(f"MPCNet.forward_with_priors needs (N, 3, {self.size}, {self.size}) in [-1, 1], got {tuple(x.shape)}")
        spatial, skips = self.encode(x)
        gan, parse, logits = self.priors(x, spatial)
        feat = spatial
        for r in self.resolutions(8):
            key = str(r)
            feat = self.fuse[key](torch.cat([self.up[key](feat), skips[r]], dim=1))  # F_spatial^j
            feat = self.apff[key](feat, gan.get(r), parse.get(r))  # F_output^{j+1}
        return MPCNetOutput(self.to_rgb(feat), gan, parse, logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in ``[-1, 1]`` -> restored ``(N, 3, H, W)``; other sizes go through ``size`` by
        bicubic resizing (Sec. 3.2.1). Clamped to ``[-1, 1]`` in eval mode only (a clamp would zero gradients)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ImageInputError(f"MPCNet expects (N, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        resized = (h, w) != (self.size, self.size)
        if resized:
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False).clamp(-1, 1)
        out = self.forward_with_priors(x).image
        if resized:
            out = F.interpolate(out, size=(h, w), mode="bicubic", align_corners=False)
        return out if self.training else out.clamp(-1.0, 1.0)

    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters MPCNet's task optimises, by part: ``restorer`` (encoder, latent MLP, decoder, APFF,
        ToRGB) and, with ``finetune_prior``, ``prior``."""
        prior_ids = {id(p) for p in self.prior.parameters()} if self.prior is not None else set()
        parser_ids = {id(p) for p in self.parser.parameters()} if self.parser is not None else set()
        groups = {"restorer": [p for p in self.parameters() if id(p) not in prior_ids | parser_ids]}
        if self.prior is not None and self.finetune_prior:
            groups["prior"] = list(self.prior.parameters())
        return groups


@register_restorer(
    "mpcnet",
    tiny=dict(size=16, style_dim=16, n_mlp=1, channel_multiplier=1, narrow=1 / 32, parser_base_ch=4,
              parser_res_depth=1, parser_ch_range=(4, 8), num_rcab=1, rcab_reduction=4),
)
def mpcnet(
    size: int = 512,
    style_dim: int = 512,
    n_mlp: int = 8,
    channel_multiplier: int = 2,
    narrow: float = 1.0,
    parser_min_feat_size: int = 4,
    parser_base_ch: int = 64,
    parser_res_depth: int = 10,
    parser_ch_range: tuple[int, int] = (32, 256),
    latent_mlp_layers: int = 2,
    num_rcab: int = 2,
    rcab_reduction: int = 16,
    gate: GateDim = "channel",
    use_gan_prior: bool = True,
    use_parsing_prior: bool = True,
    use_adain: bool = True,
    use_sft: bool = True,
    spectral_norm: bool = True,
    finetune_prior: bool = False,
) -> MPCNet:
    """MPCNet (Front. Neurorobot. 2022): StyleGAN2 + parsing priors fused by APFF blocks; configurable, any size.

    Defaults are the paper's 512 network; the Table 1 ablations are the ``use_*`` switches (see :class:`MPCNet`).
    """
    return MPCNet(**locals())


@register_restorer("mpcnet_512", variant_of="mpcnet")
def mpcnet_512() -> MPCNet:
    """MPCNet at 512 px as in the paper (no released weights: train it with `bfrzoo fit --recipe mpcnet`)."""
    return mpcnet()
