"""bfrzoo's degradation as an albumentations transform, and the worker seeding that keeps its draws distinct.

>>> import albumentations as A
>>> from bfrzoo.data.transforms import PresetDegradation, ReseedWorker
>>> aug = A.Compose([A.HorizontalFlip(), PresetDegradation("psfrgan")], seed=0)
>>> loader = DataLoader(faces, num_workers=4, worker_init_fn=ReseedWorker(aug, seed=0),
...                     generator=torch.Generator().manual_seed(0))

:class:`PresetDegradation` applies a preset (:mod:`bfrzoo.data.presets`) with the OpenCV executor
(:mod:`bfrzoo.data.cpu_degradations`); every parameter comes from bfrzoo's sampler, so an albumentations
pipeline degrades exactly as :class:`~bfrzoo.data.FaceDataModule` does. Its randomness is one 63-bit seed per
call drawn from the transform's albumentations generator (what ``Compose(seed=...)`` and ``set_random_seed``
set), which seeds bfrzoo's sampler.

Why :class:`ReseedWorker`: a DataLoader forks its workers with copies of the pipeline, generator state
included, so without reseeding every worker draws the same sequence (worker 0's first image and worker 1's
first image get the same blur, noise and JPEG). ``ReseedWorker`` reseeds the pipeline in each worker from the
run's seed and ``torch.initial_seed()``, which torch sets per worker and per epoch (``base_seed + worker_id``,
``base_seed`` drawn from the loader's generator each time the workers start): distinct across workers and
epochs, and the same again in a rerun whose loader generator (or ``seed_everything``) has the same seed.

Importing this module imports albumentations (a few seconds); the rest of bfrzoo does not. Albumentations'
update check is switched off (``NO_ALBUMENTATIONS_UPDATE``) unless the environment says otherwise: bfrzoo does
not reach the network at import.
"""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from typing import Any  # noqa: E402

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bfrzoo.data.cpu_degradations import degrade_image, to_uint8  # noqa: E402
from bfrzoo.data.degradations import stable_seed  # noqa: E402
from bfrzoo.data.presets import get_preset  # noqa: E402

__all__ = ["PresetDegradation", "ReseedWorker"]


class PresetDegradation(A.ImageOnlyTransform):
    """Synthesise a low-quality face with a bfrzoo preset: ``up_s(JPEG_q(down_s(HQ * k) + n_sigma))``.

    Args:
        preset: preset name, one of :data:`bfrzoo.data.PRESETS` (``"common"``, ``"gpen"``, ``"psfrgan"``,
            ``"mpcnet"``, ``"mmrb"``).
        p: probability of applying the transform.

    Images: ``(H, W, 3)`` RGB, uint8 (returned as uint8, rounded) or float32 in ``[0, 1]`` (returned as
    float32). The seed drawn for a call is in ``get_applied_params()["seed"]``; ``degrade_image(img, preset,
    seed)`` reproduces the output.
    """

    class InitSchema(A.ImageOnlyTransform.InitSchema):
        preset: str

    def __init__(self, preset: str = "common", p: float = 1.0) -> None:
        super().__init__(p=p)
        self._preset = get_preset(preset)  # UnknownNameError listing the presets
        self.preset = preset

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {"seed": int(self.random_generator.integers(0, 2**63 - 1))}

    def apply(self, img: np.ndarray, seed: int = 0, **params: Any) -> np.ndarray:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"PresetDegradation expects (H, W, 3) RGB images, got shape {img.shape}")
        lq = degrade_image(img, self._preset, seed)
        return to_uint8(lq) if img.dtype == np.uint8 else lq

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("preset",)


class ReseedWorker:
    """A DataLoader ``worker_init_fn`` that reseeds an albumentations transform (or ``Compose``) per worker.

    The worker's seed is ``stable_seed(seed, "albumentations", torch.initial_seed())``: the run's ``seed`` and
    torch's per-worker, per-epoch seed. Picklable, so it also works with the ``spawn`` start method.
    """

    def __init__(self, transform: A.BasicTransform | A.BaseCompose, seed: int) -> None:
        self.transform, self.seed = transform, int(seed)

    def __call__(self, worker_id: int) -> None:
        self.transform.set_random_seed(stable_seed(self.seed, "albumentations", torch.initial_seed()))
