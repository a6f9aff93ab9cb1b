"""LightningModules: the step logic and optimizer wiring of each model; nothing architectural."""
from __future__ import annotations

from bfrzoo.tasks.base import AdversarialTask, RestorationTask

__all__ = ["AdversarialTask", "RestorationTask"]
