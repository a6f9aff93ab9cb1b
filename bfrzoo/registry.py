"""The restorer registry: one name per network variant, used alike by recipes, the CLI and benchmark tables.

Models register themselves with :func:`register_restorer` (a small factory per variant, as timm does) and,
where the original authors released checkpoints, a key converter with :func:`register_converter`.
The model files are listed once in ``MODEL_MODULES`` and imported on the first lookup, so ``import bfrzoo``
stays light and nothing scans the file system.
"""
from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from bfrzoo.errors import CheckpointMismatchError, UnknownNameError
from bfrzoo.weights import PretrainedCfg, load_checkpoint, resolve_weights, task_network_state

#: Every module that registers restorers or converters. Add a new model file here.
MODEL_MODULES: tuple[str, ...] = (
    "bfrzoo.models.unet",
    "bfrzoo.models.gpen",
    "bfrzoo.models.parsenet",
    "bfrzoo.models.psfrgan",
    "bfrzoo.models.multiscale_discriminator",
    "bfrzoo.models.mpcnet",
    "bfrzoo.models.mmrbnet",
)

F = TypeVar("F", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class RestorerEntry:
    """One registered restorer.

    Attributes:
        name: the registry name.
        factory: ``factory(**arch_kwargs) -> nn.Module``.
        pretrained: where its released weights live (``None``: no release).
        summary: the first paragraph of the factory's docstring, on one line.
        tiny: arguments of a tiny configuration (a few thousand parameters, 32-64 px) that the contract test
            (``tests/test_contract.py``) runs on CPU; every configurable restorer declares one.
        variant_of: for a fixed published variant (``gpen_512``), the configurable restorer whose code it uses
            (``gpen``); the contract test runs that one tiny and checks the variant builds the same class.
    """

    name: str
    factory: Callable[..., nn.Module]
    pretrained: PretrainedCfg | None
    summary: str
    tiny: Mapping[str, Any] | None = None
    variant_of: str | None = None


_RESTORERS: dict[str, RestorerEntry] = {}
_CONVERTERS: dict[str, Callable[..., nn.Module]] = {}
_loaded = False


def _load_model_modules() -> None:
    global _loaded
    if _loaded:
        return
    for module in MODEL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real missing dependency inside the model file
                raise
    _loaded = True


def register_restorer(
    name: str,
    *,
    pretrained: PretrainedCfg | None = None,
    tiny: Mapping[str, Any] | None = None,
    variant_of: str | None = None,
) -> Callable[[F], F]:
    """Decorator: register ``factory(**arch_kwargs) -> nn.Module`` under ``name``.

    The factory's network takes and returns ``(N, 3, H, W)`` RGB in ``[-1, 1]`` (see :mod:`bfrzoo.interface`).
    A configurable restorer gives ``tiny`` (the arguments of a tiny configuration for the contract test); a fixed
    published variant gives ``variant_of`` (the configurable restorer it is an instance of). See
    :class:`RestorerEntry`.
    """
    if tiny is not None and variant_of is not None:
        raise ValueError(f"restorer {name!r}: give tiny (configurable) or variant_of (fixed variant), not both")

    def decorate(factory: F) -> F:
        if name in _RESTORERS and _RESTORERS[name].factory is not factory:
            raise ValueError(f"restorer name {name!r} is registered twice")
        # the docstring's first paragraph, on one line
        summary = " ".join((factory.__doc__ or "").strip().split("\n\n")[0].split())
        _RESTORERS[name] = RestorerEntry(name, factory, pretrained, summary, dict(tiny) if tiny else None, variant_of)
        return factory

    return decorate


def register_converter(arch: str) -> Callable[[F], F]:
    """Decorator: register ``convert(state_dict, **arch_kwargs) -> nn.Module`` for :func:`from_official`."""

    def decorate(convert: F) -> F:
        _CONVERTERS[arch] = convert
        return convert

    return decorate


def _unknown(kind: str, name: str, known: list[str]) -> UnknownNameError:
    close = [k for k in known if name.lower() in k.lower() or k.lower() in name.lower()]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known) or '(none)'}.")


def list_restorers(pattern: str | None = None) -> list[str]:
    """Sorted registered restorer names, optionally filtered by a shell-style ``pattern`` (``"gpen*"``)."""
    _load_model_modules()
    names = sorted(_RESTORERS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def restorer_entry(name: str) -> RestorerEntry:
    _load_model_modules()
    if name not in _RESTORERS:
        raise _unknown("restorer", name, sorted(_RESTORERS))
    return _RESTORERS[name]


def create_restorer(name: str, pretrained: bool | str | Path = False, **arch_kwargs: Any) -> nn.Module:
    """Build the registered network ``name``.

    Args:
        name: a name from :func:`list_restorers`, e.g. ``"unet"`` or ``"gpen_512"``.
        pretrained: ``False`` (random init), ``True`` (resolve the variant's released weights: local cache,
            then download) or a path to a weight file. Released (official) checkpoints go through the model's
            key converter, so either layout loads.
        **arch_kwargs: the factory's typed keyword arguments.
    """
    entry = restorer_entry(name)
    _check_arguments(entry, arch_kwargs)
    if not pretrained:
        return entry.factory(**arch_kwargs)
    if pretrained is True:
        if entry.pretrained is None:
            raise UnknownNameError(
                f"restorer {name!r} has no released weights; pass pretrained=<path to your own checkpoint> "
                "(a restorer.pt or Lightning .ckpt of a bfrzoo run) or pretrained=False"
            )
        path = resolve_weights(entry.pretrained)
    else:
        path = resolve_weights(entry.pretrained, Path(pretrained)) if entry.pretrained else Path(pretrained)
    state = task_network_state(load_checkpoint(path))
    net = entry.factory(**arch_kwargs)
    own_keys = set(net.state_dict())
    if set(state) != own_keys and entry.pretrained is not None and entry.pretrained.converter is not None:
        # not bfrzoo's own layout: the released (official) one, mapped by the model's key converter
        return from_official(entry.pretrained.converter, state, **arch_kwargs)
    load_state_dict_strict(net, state, source=str(path))
    return net


def restorer_arguments(name: str) -> dict[str, Any]:
    """The factory's keyword arguments and their defaults (the configurable architecture of ``name``)."""
    sig = inspect.signature(restorer_entry(name).factory)
    return {k: (None if p.default is inspect.Parameter.empty else p.default) for k, p in sig.parameters.items()}


def _check_arguments(entry: RestorerEntry, arch_kwargs: Mapping[str, Any]) -> None:
    params = inspect.signature(entry.factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(arch_kwargs) - set(params))
    if unknown:
        raise UnknownNameError(
            f"restorer {entry.name!r} has no argument(s) {', '.join(unknown)}; "
            f"its arguments are: {', '.join(params) or '(none)'}"
        )


def list_converters() -> list[str]:
    _load_model_modules()
    return sorted(_CONVERTERS)


def from_official(arch: str, checkpoint_or_state_dict: str | Path | Mapping[str, torch.Tensor], **arch_kwargs: Any) -> nn.Module:
    """Build a bfrzoo network from the original authors' released checkpoint.

    Args:
        arch: a converter name from :func:`list_converters` (``"gpen"``, ``"gpen_discriminator"``,
            ``"parsenet"``, ``"psfrgan_generator"``, ...).
        checkpoint_or_state_dict: a path (loaded with ``weights_only=True``) or an already-loaded state dict.
            Nested layouts (``g_ema``, ``state_dict``, ``params_ema``) are unwrapped.
        **arch_kwargs: the architecture hyper-parameters of that checkpoint.
    Returns:
        The bfrzoo module, in eval mode, with every official key mapped (a missing or surplus key is an error).
    """
    _load_model_modules()
    if arch not in _CONVERTERS:
        raise _unknown("official architecture", arch, sorted(_CONVERTERS))
    state = checkpoint_or_state_dict
    if isinstance(state, (str, Path)):
        state = load_checkpoint(Path(state))
    net = _CONVERTERS[arch](dict(state), **arch_kwargs)
    return net.eval()


def load_state_dict_strict(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with one readable error listing what does not fit."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    surplus = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or surplus or shape:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" ... (+{len(keys) - 6})" if len(keys) > 6 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if surplus:
            parts.append(f"unexpected keys: {few(surplus)}")
        if shape:
            parts.append(
                "shape mismatch: "
                + few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shape])
            )
        raise CheckpointMismatchError(
            f"checkpoint {source} does not fit {type(net).__name__}: " + "; ".join(parts)
            + ". Check the architecture arguments (size, channels) match the checkpoint."
        )
    net.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------- restorer.pt
#: The ``kind`` entry of a ``restorer.pt``.
RESTORER_KIND = "bfrzoo.restorer"


def export_restorer(
    net: nn.Module, name: str, args: Mapping[str, Any], path: str | Path, info: Mapping[str, Any] | None = None
) -> Path:
    """Atomically write ``restorer.pt``: ``{"kind", "restorer", "args", "state_dict", "info"}``.

    Plain strings, numbers and tensors only, so ``torch.load(path, weights_only=True)`` reads it and
    :func:`load_restorer` rebuilds the network through the registry without any recipe or training code.
    ``info`` records where the weights come from (e.g. ``{"weights": "ema", "checkpoint": "best-epoch=003.ckpt"}``).
    """
    from bfrzoo.io import atomic_torch_save

    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    obj = {"kind": RESTORER_KIND, "restorer": name, "args": dict(args), "state_dict": state, "info": dict(info or {})}
    return atomic_torch_save(obj, path)


def restorer_state_dict(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The network weights in a loaded ``restorer.pt`` or Lightning checkpoint (EMA weights preferred)."""
    inner = obj.get("state_dict", obj)
    if not isinstance(inner, Mapping):
        raise CheckpointMismatchError("the checkpoint's 'state_dict' entry is not a mapping of tensors")
    return task_network_state(inner)


def load_restorer_weights(net: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``restorer.pt`` or Lightning ``.ckpt`` into ``net`` (strict; one clear error on mismatch)."""
    from bfrzoo.weights import read_checkpoint

    load_state_dict_strict(net, restorer_state_dict(read_checkpoint(path, "restorer checkpoint")), source=str(path))
    return net


def load_restorer(path: str | Path) -> nn.Module:
    """Rebuild the network of a ``restorer.pt`` written by :func:`export_restorer` (eval mode, CPU).

    Raises one :class:`~bfrzoo.errors.BfrzooError` for a file that is missing, unreadable, not a restorer.pt,
    names an unknown restorer, or carries arguments its factory rejects.
    """
    from bfrzoo.errors import BfrzooError
    from bfrzoo.weights import read_checkpoint

    obj = read_checkpoint(path, "restorer")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("restorer"), str):
        from bfrzoo.weights import describe_checkpoint

        raise BfrzooError(
            f"{str(path)!r} is {describe_checkpoint(obj)}, not a restorer.pt; a restorer.pt is what `bfrzoo fit` "
            "leaves in the run folder (for a Lightning .ckpt use `bfrzoo predict --recipe NAME --ckpt_path FILE`; "
            "for an official checkpoint bfrzoo.from_official)"
        )
    args = obj.get("args", {})
    if not isinstance(args, Mapping):
        raise CheckpointMismatchError(f"{str(path)!r}: its 'args' entry is not a mapping of architecture arguments")
    try:
        net = create_restorer(obj["restorer"], **args)
    except BfrzooError:
        raise
    except (TypeError, ValueError) as exc:
        raise CheckpointMismatchError(
            f"{str(path)!r} holds arguments {dict(args)} that the {obj['restorer']!r} factory rejects ({exc}); "
            "the file is damaged or was written by another bfrzoo version"
        ) from exc
    load_state_dict_strict(net, restorer_state_dict(obj), source=str(path))
    return net.eval()
