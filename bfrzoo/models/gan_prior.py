"""The StyleGAN2 GAN prior as a file: what ``bfrzoo fit --recipe stylegan2_prior`` writes and what GPEN, MPCNet
and the MMRB network embed (model layer: loading a prior never imports training code or Lightning).

``prior.pt`` holds ``{"kind": "bfrzoo.stylegan2_prior", "generator_args": {...}, "generator": state,
"discriminator": state}`` with plain tensors and numbers (``torch.load(weights_only=True)`` reads it). The
generator keys are those of :class:`bfrzoo.blocks.stylegan2.Generator` and the discriminator keys those of
:class:`bfrzoo.blocks.stylegan2.Discriminator`, so a prior loads key for key into any network that embeds the
zoo's one StyleGAN2 (``GPEN.generator``, ``MPCNet.prior``, ``MMRBNet.generator``).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bfrzoo.blocks.stylegan2 import Discriminator, Generator, stylegan2_width
from bfrzoo.errors import CheckpointMismatchError, WeightsNotFoundError
from bfrzoo.registry import load_state_dict_strict
from bfrzoo.weights import read_checkpoint

PRIOR_KIND = "bfrzoo.stylegan2_prior"
#: The generator arguments a prior records (those of :class:`Generator` and of the ``gpen`` factory).
GENERATOR_ARG_NAMES: tuple[str, ...] = ("size", "style_dim", "n_mlp", "channel_multiplier", "narrow", "noise_mode")
_CKPT_PREFIXES = {"generator": ("net_ema.", "net."), "discriminator": ("disc.",)}


def save_gan_prior(
    generator: Generator, discriminator: Discriminator | None, generator_args: Mapping[str, Any], path: str | Path
) -> Path:
    """Atomically write ``prior.pt`` (see the module docstring); ``generator_args`` are the generator's
    architecture arguments (:data:`GENERATOR_ARG_NAMES`)."""
    from bfrzoo.io import atomic_torch_save

    obj: dict[str, Any] = {
        "kind": PRIOR_KIND,
        "generator_args": dict(generator_args),
        "generator": {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()},
    }
    if discriminator is not None:
        obj["discriminator"] = {k: v.detach().cpu().clone() for k, v in discriminator.state_dict().items()}
    return atomic_torch_save(obj, path)


def _prior_missing(path: Path) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"GAN prior {str(path)!r} does not exist; train one with `bfrzoo fit --recipe stylegan2_prior` and pass "
        "its RUN/prior.pt (or the run's .ckpt)"
    )


def read_gan_prior(path: str | Path) -> dict[str, Any]:
    """Read a GAN prior: ``{"generator": state, "discriminator": state | None, "generator_args": dict | None}``.

    Accepts the ``prior.pt`` of the ``stylegan2_prior`` recipe, that task's Lightning ``.ckpt`` (the EMA
    generator ``net_ema.*`` is preferred over ``net.*``; the discriminator is ``disc.*``), the common StyleGAN2
    training layout ``{"g_ema": ..., "d": ...}`` (same key names as bfrzoo's Generator / Discriminator) and GPEN's
    released generator (``GPEN-BFR-512.pth``: its ``generator.*`` keys, the StyleGAN2 "retrained by GPEN" that the
    MMRB network starts from).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise _prior_missing(path)
    obj = read_checkpoint(path, "GAN prior")
    if isinstance(obj, Mapping) and obj.get("kind") == PRIOR_KIND:
        return {"generator": obj["generator"], "discriminator": obj.get("discriminator"), "generator_args": obj.get("generator_args")}
    if isinstance(obj, Mapping) and isinstance(obj.get("g_ema"), Mapping):
        return {"generator": obj["g_ema"], "discriminator": obj.get("d"), "generator_args": None}
    if isinstance(obj, Mapping) and "generator.style.1.weight" in obj and any(k.startswith("ecd") for k in obj):
        return {"generator": {k[len("generator."):]: v for k, v in obj.items() if k.startswith("generator.")},
                "discriminator": None, "generator_args": None}
    state = obj.get("state_dict") if isinstance(obj, Mapping) else None
    if isinstance(state, Mapping):
        parts: dict[str, Any] = {"generator": None, "discriminator": None, "generator_args": None}
        for part, prefixes in _CKPT_PREFIXES.items():
            for prefix in prefixes:
                sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                if sub:
                    parts[part] = sub
                    break
        hp = obj.get("hyper_parameters", {})
        if isinstance(hp, Mapping) and "size" in hp:
            parts["generator_args"] = {k: hp[k] for k in GENERATOR_ARG_NAMES if k in hp}
        if parts["generator"] is not None:
            return parts
    raise CheckpointMismatchError(
        f"{str(path)!r} is not a GAN prior: expected the prior.pt or .ckpt of `bfrzoo fit --recipe stylegan2_prior`, "
        "or a StyleGAN2 file with a 'g_ema' entry"
    )


def prior_noise_mode(prior: Mapping[str, Any]) -> str | None:
    """The noise mode a prior was trained with: from its recorded arguments, else read off its keys
    (``None`` when it cannot be told)."""
    args = prior.get("generator_args") or {}
    if "noise_mode" in args:
        return str(args["noise_mode"])
    gen = prior.get("generator") or {}
    if "conv1.noise.weight" not in gen:
        return "none"
    bias, const = gen.get("conv1.activate.bias"), gen.get("input.input")
    if bias is not None and const is not None:
        return "concat" if bias.shape[0] > const.shape[1] else "add"
    return None


def load_gan_prior(generator: Generator, prior: Mapping[str, Any], discriminator: Discriminator | None = None) -> None:
    """Load a pre-trained prior (:func:`read_gan_prior`) into ``generator`` (strict, same keys) and, when both
    exist, its discriminator into ``discriminator``.

    Raises:
        CheckpointMismatchError: a prior of another noise mode (the message names both) or architecture.
    """
    mode = prior_noise_mode(prior)
    if mode is not None and mode != generator.noise_mode:
        raise CheckpointMismatchError(
            f"the GAN prior was trained with noise_mode={mode!r} but this network's StyleGAN2 uses "
            f"{generator.noise_mode!r}; pre-train the prior with the same noise mode (bfrzoo fit --recipe "
            f"stylegan2_prior --model.noise_mode {generator.noise_mode})"
        )
    load_state_dict_strict(generator, prior["generator"], source="GAN prior (generator)")
    if discriminator is not None and prior.get("discriminator") is not None:
        load_state_dict_strict(discriminator, prior["discriminator"], source="GAN prior (discriminator)")


def discriminator_width(generator: Generator) -> tuple[int, float]:
    """``(channel_multiplier, narrow)`` of the channel rule a generator was built with (for its discriminator)."""
    resolution = min(generator.size, 64)  # the multiplier first shows in the channels at 64x64
    return stylegan2_width(generator.channels[4], generator.channels[resolution], resolution)


def read_discriminator(path: str | Path) -> dict[str, Any]:
    """The StyleGAN2 discriminator weights in ``path``: GPEN's released ``GPEN-BFR-*-D.pth`` (a plain state dict
    with bfrzoo's key names), or the discriminator of a prior file or run (:func:`read_gan_prior`)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsNotFoundError(
            f"discriminator {str(path)!r} does not exist; pass GPEN's GPEN-BFR-512-D.pth or the prior.pt of "
            "`bfrzoo fit --recipe stylegan2_prior`"
        )
    obj = read_checkpoint(path, "discriminator")
    if isinstance(obj, Mapping) and "final_linear.0.weight" in obj and "convs.0.0.weight" in obj:
        return dict(obj)
    prior = read_gan_prior(path)
    if prior.get("discriminator") is None:
        raise CheckpointMismatchError(f"{str(path)!r} holds no discriminator (a generator-only file)")
    return dict(prior["discriminator"])
