"""Saving and loading trained restorers in a self-describing, ``weights_only``-safe file.

``restorer.pt`` holds ``{"restorer": name, "args": {...}, "state_dict": {...}}``: plain strings, numbers and
tensors, so ``torch.load(path, weights_only=True)`` reads it and :func:`load_restorer` rebuilds the network
through the registry without any recipe.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bfrzoo.errors import BfrzooError, WeightsNotFoundError
from bfrzoo.registry import create_restorer, load_state_dict_strict
from bfrzoo.weights import task_network_state

def export_restorer(net: nn.Module, name: str, args: dict[str, Any], path: str | Path) -> Path:
    """Atomically write ``net``'s weights with its registry name and arguments."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save({"restorer": name, "args": dict(args), "state_dict": state}, tmp)
    tmp.replace(path)
    return path


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint {str(path)!r} does not exist; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BfrzooError(
            f"could not read {str(path)!r} ({type(exc).__name__}); it is corrupt or not a bfrzoo/Lightning checkpoint"
        ) from exc


def restorer_state_dict(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network weights in a ``restorer.pt`` or a Lightning checkpoint (EMA weights preferred)."""
    return task_network_state(obj.get("state_dict", obj))


def load_restorer_weights(net: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``restorer.pt`` or Lightning ``.ckpt`` into ``net`` (strict; one clear error on mismatch)."""
    load_state_dict_strict(net, restorer_state_dict(_read(path)), source=str(path))
    return net


def load_restorer(path: str | Path) -> nn.Module:
    """Rebuild a restorer from a ``restorer.pt`` written by :func:`export_restorer` (eval mode, CPU)."""
    obj = _read(path)
    if "restorer" not in obj:
        raise BfrzooError(
            f"{str(path)!r} has no restorer name; it is not a bfrzoo restorer.pt. For a Lightning .ckpt use "
            "`bfrzoo predict --recipe NAME --ckpt_path FILE`; for an official checkpoint use bfrzoo.from_official"
        )
    net = create_restorer(obj["restorer"], **obj.get("args", {}))
    load_state_dict_strict(net, restorer_state_dict(obj), source=str(path))
    return net.eval()
