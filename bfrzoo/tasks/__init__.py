"""LightningModules: the step logic and optimizer wiring of each model; nothing architectural.

Each task is imported on first use (``from bfrzoo.tasks import GPENTask``), so importing one does not build the
others' loss networks or pull their modules in.
"""
from __future__ import annotations

import importlib
from typing import Any

_TASKS = {
    "RestorationTask": "bfrzoo.tasks.base",
    "AdversarialTask": "bfrzoo.tasks.base",
    "GPENTask": "bfrzoo.tasks.gpen",
    "StyleGAN2PriorTask": "bfrzoo.tasks.stylegan2_prior",
    "MPCNetTask": "bfrzoo.tasks.mpcnet",
    "MMRBTask": "bfrzoo.tasks.mmrb",
    "ParseNetTask": "bfrzoo.tasks.parsenet",
    "PSFRGANTask": "bfrzoo.tasks.psfrgan",
}

__all__ = sorted(_TASKS)


def __getattr__(name: str) -> Any:
    if name in _TASKS:
        return getattr(importlib.import_module(_TASKS[name]), name)
    raise AttributeError(f"module 'bfrzoo.tasks' has no attribute {name!r}; tasks: {', '.join(__all__)}")


def __dir__() -> list[str]:
    return __all__
