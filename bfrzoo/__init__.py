"""bfrzoo: a model zoo for blind face restoration.

Light at import: the heavy parts (Lightning, metrics, model files) load on first use.

>>> import bfrzoo
>>> net = bfrzoo.create_restorer("unet", base_channels=8)   # random init, (N,3,H,W) in [-1, 1]
"""
from __future__ import annotations

from bfrzoo.registry import create_restorer, from_official, list_restorers

__version__ = "0.1.0"

__all__ = ["create_restorer", "from_official", "list_restorers", "__version__"]
