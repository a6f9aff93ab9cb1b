"""Data: seeded, batched degradations (:func:`degrade`), paper presets, face datasets and the DataModule.

Lightning is imported only when :class:`FaceDataModule` is first used.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bfrzoo.data.degradations import Degrader, degrade
from bfrzoo.data.presets import PRESETS, DegradationPreset, get_preset

if TYPE_CHECKING:
    from bfrzoo.data.datamodule import FaceDataModule
    from bfrzoo.data.datasets import FaceFolder, LQFolder
    from bfrzoo.data.folder import degrade_folder

__all__ = [
    "PRESETS",
    "DegradationPreset",
    "Degrader",
    "FaceDataModule",
    "FaceFolder",
    "LQFolder",
    "degrade",
    "degrade_folder",
    "get_preset",
]

_LAZY = {
    "FaceDataModule": "bfrzoo.data.datamodule",
    "FaceFolder": "bfrzoo.data.datasets",
    "LQFolder": "bfrzoo.data.datasets",
    "degrade_folder": "bfrzoo.data.folder",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bfrzoo.data' has no attribute {name!r}")
