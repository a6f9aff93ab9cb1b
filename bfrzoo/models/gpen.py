"""GPEN: GAN Prior Embedded Network (Yang, Ren, Xie, Zhang, CVPR 2021), paper 003 in /work/shared/papers.

A U-shaped network whose decoder is a pre-trained StyleGAN2 (the "GAN prior network", Sec. 3.2, Fig. 3):

* encoder: ``ecd0`` a 1x1 equalized conv + fused leaky ReLU at the input size, then ``ecd1 ...`` blur [1,3,3,1]
  + 3x3 stride-2 equalized conv + fused leaky ReLU, down to 4x4;
* latent: ``final_linear`` (equalized linear with fused leaky ReLU, ``C*4*4 -> style_dim``) gives z, which goes
  through the generator's FULL mapping network (pixel norm + ``n_mlp`` layers) and the resulting w is broadcast
  to every style input (Sec. 3.2: "the intermediate code w is then broadcasted to each GAN block");
* noise: the encoder feature of each resolution replaces the GAN's noise input, CONCATENATED with one learned
  scalar per layer (``cat([x, w * feat])``), and BOTH styled convs of a resolution get the same feature
  ("the noise inputs are reused at the same spatial resolution", Sec. 3.2).

Table 1's ablations are constructor arguments: ``noise_mode="add"`` (GPEN-noise-add), ``"none"``
(GPEN-w/o-noise) and :meth:`GPEN.freeze_prior` (GPEN-w/o-ft: the embedded GAN is kept fixed while fine-tuning).

Released checkpoints (official key names) load through ``bfrzoo.from_official("gpen", path_or_state)``; the
architecture is read from the checkpoint's shapes, so no argument is needed. The only renamed keys are the
encoder's: official ``ecd{i}.0.*`` -> ``encoder.{i}.*`` and ``final_linear.0.*`` -> ``final_linear.*``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from bfrzoo.blocks.stylegan2 import (
    NOISE_MODES,
    ConvLayer,
    Discriminator,
    EqualLinear,
    Generator,
    NoiseMode,
    stylegan2_width,
)
from bfrzoo.errors import CheckpointMismatchError, ImageInputError, UnknownNameError
from bfrzoo.registry import load_state_dict_strict, register_converter, register_restorer
from bfrzoo.weights import PretrainedCfg, load_checkpoint, resolve_weights

_RELEASE = "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/"
_SOURCE = "Yang et al., GPEN (CVPR 2021), official release listed in the README of https://github.com/yangxy/GPEN"
_LICENSE = "(c) Alibaba 2021, for academic and non-commercial use only (README of https://github.com/yangxy/GPEN)"


class GPEN(nn.Module):
    """GPEN FullGenerator: ``(N, 3, size, size)`` in ``[-1, 1]`` -> ``(N, 3, size, size)`` roughly in ``[-1, 1]``.

    Args:
        size: input and output resolution (power of 2 >= 8); not fully convolutional: ``input_size = size``.
        style_dim: z / w dimension (512 in every release).
        n_mlp: mapping-network depth (8 in every release).
        channel_multiplier / narrow: channels ``512 * narrow`` up to 32x32, ``{256, 128, 64, 32, 16} *
            channel_multiplier * narrow`` at 64 ... 1024 (encoder and generator alike).
        noise_mode: ``concat`` (GPEN), ``add`` (GPEN-noise-add) or ``none`` (GPEN-w/o-noise), Table 1.
        lr_mlp: learning-rate multiplier of the mapping network (0.01).
    """

    def __init__(
        self,
        size: int = 512,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        narrow: float = 1.0,
        noise_mode: NoiseMode = "concat",
        lr_mlp: float = 0.01,
    ) -> None:
        super().__init__()
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        self.input_size = size
        self.noise_mode = noise_mode
        self.generator = Generator(size, style_dim, n_mlp, channel_multiplier, narrow, lr_mlp=lr_mlp, noise_mode=noise_mode)
        ch = self.generator.channels
        log_size = self.generator.log_size
        layers: list[nn.Module] = [ConvLayer(3, ch[size], 1)]
        for log_r in range(log_size, 2, -1):  # size -> size/2 -> ... -> 4
            layers.append(ConvLayer(ch[2**log_r], ch[2 ** (log_r - 1)], 3, downsample=True))
        self.encoder = nn.ModuleList(layers)
        self.final_linear = EqualLinear(ch[4] * 4 * 4, style_dim, activation=True)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encoder: ``x (N, 3, S, S)`` -> (z ``(N, style_dim)``, features ``[S, S/2, ..., 4]`` resolutions)."""
        feats = []
        for layer in self.encoder:
            x = layer(x)
            feats.append(x)
        return self.final_linear(x.flatten(1)), feats

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            raise ImageInputError(
                f"GPEN-{self.input_size} needs (N, 3, {self.input_size}, {self.input_size}) input in [-1, 1], got "
                f"{tuple(x.shape)}; resize faces to {self.input_size}x{self.input_size} first "
                "(bfrzoo.interface.Restorer does this)"
            )

    def forward_with_latents(
        self, x: torch.Tensor, return_features: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
        """For training: ``(image (N, 3, S, S), w latents (N, n_latent, style_dim))`` and, with
        ``return_features``, the generator's per-resolution features ``{4: ..., S: ...}``."""
        self._check(x)
        z, feats = self.encode(x)
        by_res = feats[::-1]  # 4, 8, ..., S
        noise: list[torch.Tensor] = [by_res[0]]
        for f in by_res[1:]:
            noise += [f, f]  # both styled convs of a resolution see the same encoder feature
        out = self.generator(z, noise=noise, return_features=return_features)
        if return_features:
            return out.image, out.latent, out.features or {}
        return out.image, out.latent

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` in ``[-1, 1]`` -> restored ``(N, 3, S, S)`` in ``[-1, 1]`` (not clamped)."""
        return self.forward_with_latents(x)[0]

    def freeze_prior(self, frozen: bool = True) -> None:
        """GPEN-w/o-ft (Table 1): keep the embedded GAN prior (generator, mapping network included) fixed and
        train only the encoder. ``frozen=False`` undoes it."""
        self.generator.freeze(frozen=frozen)


# ------------------------------------------------------------------------------------------ variants
def _cfg(size: int, converter: str = "gpen", suffix: str = "") -> PretrainedCfg:
    name = f"GPEN-BFR-{size}{suffix}.pth"
    return PretrainedCfg(filename=name, url=_RELEASE + name, source=_SOURCE, license=_LICENSE, converter=converter)


#: GPEN-BFR-1024 is published on ModelScope only (model ``damo/cv_gpen_image-portrait-enhancement-hires``, file
#: ``pytorch_model.pt``): no stable direct address, so it must be placed in the cache by hand.
_CFG_1024 = PretrainedCfg(
    filename="GPEN-BFR-1024.pth",
    url=None,
    source=_SOURCE + "; the 1024 model via ModelScope damo/cv_gpen_image-portrait-enhancement-hires (pytorch_model.pt)",
    license=_LICENSE,
    converter="gpen",
)

#: Released discriminators (for fine-tuning): load with ``from_official("gpen_discriminator", path)``.
DISCRIMINATOR_WEIGHTS: dict[int, PretrainedCfg] = {s: _cfg(s, "gpen_discriminator", "-D") for s in (256, 512)}


@register_restorer("gpen_256", variant_of="gpen", pretrained=_cfg(256))
def gpen_256(noise_mode: NoiseMode = "concat") -> GPEN:
    """GPEN-BFR-256: 256x256, style_dim 512, n_mlp 8, channel_multiplier 1, narrow 0.5 (the official run.sh)."""
    return GPEN(256, 512, 8, channel_multiplier=1, narrow=0.5, noise_mode=noise_mode)


@register_restorer("gpen_512", variant_of="gpen", pretrained=_cfg(512))
def gpen_512(noise_mode: NoiseMode = "concat") -> GPEN:
    """GPEN-BFR-512: 512x512, style_dim 512, n_mlp 8, channel_multiplier 2, narrow 1 (the paper's main model)."""
    return GPEN(512, 512, 8, channel_multiplier=2, narrow=1.0, noise_mode=noise_mode)


@register_restorer("gpen_1024", variant_of="gpen", pretrained=_CFG_1024)
def gpen_1024(noise_mode: NoiseMode = "concat") -> GPEN:
    """GPEN-BFR-1024: 1024x1024, style_dim 512, n_mlp 8, channel_multiplier 2, narrow 1 (the official training
    command for 1024; the released file's width is not verified here: ``from_official`` reads it from the shapes)."""
    return GPEN(1024, 512, 8, channel_multiplier=2, narrow=1.0, noise_mode=noise_mode)


@register_restorer("gpen", tiny=dict(size=32, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=0.03125))
def gpen(
    size: int = 64,
    style_dim: int = 64,
    n_mlp: int = 3,
    channel_multiplier: int = 1,
    narrow: float = 0.0625,
    noise_mode: NoiseMode = "concat",
) -> GPEN:
    """GPEN of any size and width (the published channel rule); defaults are a tiny net for tests and demos."""
    return GPEN(size, style_dim, n_mlp, channel_multiplier, narrow, noise_mode)


# ------------------------------------------------------------------------------------------ converters
_ECD = re.compile(r"^ecd(\d+)\.0\.(.*)$")


def official_to_bfrzoo_key(key: str) -> str:
    """Official GPEN FullGenerator key -> bfrzoo :class:`GPEN` key (generator keys are identical)."""
    if m := _ECD.match(key):
        return f"encoder.{m.group(1)}.{m.group(2)}"
    if key.startswith("final_linear.0."):
        return "final_linear." + key[len("final_linear.0.") :]
    return key


def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def _need(state: Mapping[str, torch.Tensor], key: str, what: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointMismatchError(f"this is not a {what} checkpoint: key {key!r} is missing")
    return state[key]


def infer_gpen_config(state: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """Architecture of an official GPEN generator state dict: size, style_dim, n_mlp, channel_multiplier,
    narrow, noise_mode."""
    style_dim = int(_need(state, "generator.style.1.weight", "GPEN generator").shape[0])
    n_mlp = _count(state, r"^generator\.style\.(\d+)\.weight$")
    size = 2 ** (_count(state, r"^ecd(\d+)\.") + 1)
    ch_4 = int(_need(state, "generator.input.input", "GPEN generator").shape[1])
    cm, narrow = stylegan2_width(ch_4, int(_need(state, "ecd0.0.0.weight", "GPEN generator").shape[0]), size)
    bias = state.get("generator.conv1.activate.bias")
    if bias is not None and bias.shape[0] == 2 * ch_4:
        noise_mode = "concat"
    elif "generator.conv1.noise.weight" in state:
        noise_mode = "add"
    else:
        noise_mode = "none"
    return dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=cm, narrow=narrow, noise_mode=noise_mode)


@register_converter("gpen")
def convert_gpen(
    state_dict: Mapping[str, torch.Tensor],
    size: int | None = None,
    style_dim: int | None = None,
    n_mlp: int | None = None,
    channel_multiplier: int | None = None,
    narrow: float | None = None,
    noise_mode: NoiseMode | None = None,
) -> GPEN:
    """Official GPEN FullGenerator state dict (e.g. ``GPEN-BFR-512.pth``) -> :class:`GPEN` with its weights.

    Unspecified arguments are read from the checkpoint's shapes (:func:`infer_gpen_config`). Every key must map
    to a parameter/buffer of the same shape and none may be left over (:class:`CheckpointMismatchError`).
    """
    cfg = infer_gpen_config(state_dict)
    given = dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier, narrow=narrow, noise_mode=noise_mode)
    cfg.update({k: v for k, v in given.items() if v is not None})
    net = GPEN(**cfg)  # type: ignore[arg-type]
    load_state_dict_strict(net, {official_to_bfrzoo_key(k): v for k, v in state_dict.items()}, source="official GPEN generator")
    return net


@register_converter("gpen_discriminator")
def convert_gpen_discriminator(
    state_dict: Mapping[str, torch.Tensor],
    size: int | None = None,
    channel_multiplier: int | None = None,
    narrow: float | None = None,
) -> Discriminator:
    """Official GPEN discriminator state dict -> :class:`bfrzoo.blocks.stylegan2.Discriminator` (same key names;
    minibatch-stddev group = the whole batch, as GPEN's discriminator computes it)."""
    n_res = _count(state_dict, r"^convs\.(\d+)\.conv1\.")
    inferred_size = 2 ** (n_res + 2)
    ch_4 = int(_need(state_dict, "final_conv.1.bias", "GPEN discriminator").shape[0])
    ch_in = int(_need(state_dict, "convs.0.0.weight", "GPEN discriminator").shape[0])
    inferred_cm, inferred_narrow = stylegan2_width(ch_4, ch_in, inferred_size)
    net = Discriminator(
        size or inferred_size,
        channel_multiplier or inferred_cm,
        narrow if narrow is not None else inferred_narrow,
        stddev_group=None,
    )
    load_state_dict_strict(net, state_dict, source="official GPEN discriminator")
    return net


def gpen_discriminator(
    size: int = 512, channel_multiplier: int = 2, narrow: float = 1.0, pretrained: bool | str | Path = False
) -> Discriminator:
    """The discriminator GPEN is fine-tuned with: StyleGAN2's residual D with the minibatch-stddev group = the
    whole batch. ``pretrained``: ``True`` resolves the released ``GPEN-BFR-{size}-D.pth`` (256 and 512 only;
    cache, then download), a path loads that official file; the architecture is then read from its shapes."""
    if not pretrained:
        return Discriminator(size, channel_multiplier, narrow, stddev_group=None)
    if pretrained is True and size not in DISCRIMINATOR_WEIGHTS:
        raise UnknownNameError(
            f"no released GPEN discriminator for size {size} (released: {sorted(DISCRIMINATOR_WEIGHTS)}); "
            "pass pretrained=<path to a discriminator checkpoint> or pretrained=False"
        )
    cfg = DISCRIMINATOR_WEIGHTS.get(size, _cfg(size, "gpen_discriminator", "-D"))
    path = resolve_weights(cfg, None if pretrained is True else Path(pretrained))
    return convert_gpen_discriminator(load_checkpoint(path)).train()
