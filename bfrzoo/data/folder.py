"""``degrade_folder``: write a fixed, seeded LQ test set (what ``bfrzoo degrade`` runs).

Every image goes through the per-image OpenCV executor (:mod:`bfrzoo.data.cpu_degradations`), the one that makes
:class:`~bfrzoo.data.FaceDataModule`'s validation / test LQ. Its JPEG step is real libjpeg (baseline, IJG
quality tables, 4:2:0), which for the same 8-bit image and quality decodes bit for bit as PIL's
``Image.save(..., quality=q)`` and ``torchvision.io.encode_jpeg`` / ``decode_jpeg`` do (``tests/test_cpu_degradations.py``
checks all three), so another pipeline that draws bfrzoo's parameters reproduces the fixed test set with any of
them.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import cv2
from tqdm import tqdm

import bfrzoo
from bfrzoo.data.cpu_degradations import degrade_tensor
from bfrzoo.data.datamodule import eval_seed
from bfrzoo.data.datasets import resize_image, resolve_split
from bfrzoo.data.presets import get_preset
from bfrzoo.errors import BfrzooError
from bfrzoo.io import atomic_output_dir, read_image, write_png


def degrade_folder(
    in_dir: str | Path,
    out_dir: str | Path,
    preset: str,
    seed: int,
    size: int | None = None,
    overwrite: bool = False,
    split: str = "val",
) -> int:
    """Degrade every HQ image of ``in_dir`` into ``out_dir/<stem>.png``; returns the number of images written.

    in_dir: a plain image folder, or a data root with ``split.json`` (then its ``split``, default ``val``, is used).
    size: resize the HQ to ``size x size`` first (antialiased, as :class:`~bfrzoo.data.FaceDataModule` does);
    ``None`` keeps each image's size. Image ``<stem>`` is degraded with the per-image seed
    ``eval_seed(seed, stem)``, exactly as the DataModule's built-in test set, so ``bfrzoo degrade`` on a data
    root equals ``FaceDataModule(root, preset=..., seed=...)``'s test LQ (up to the 8-bit PNG rounding).
    Output appears atomically with a ``manifest.json`` (preset, seed, bfrzoo version, source, count); on any
    error nothing is left behind. The JPEG of every image is libjpeg's (see the module docstring).
    """
    degradation = get_preset(preset)
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise BfrzooError(f"input folder {str(in_dir)!r} does not exist or is not a folder")
    folder, names = resolve_split(in_dir, split if (in_dir / "split.json").is_file() else None)
    stems = [Path(n).stem for n in names]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise BfrzooError(f"images share the stem(s) {dupes[:3]} in {str(folder)!r}; LQ files are <stem>.png: rename them")
    if size is not None and (size <= 0 or size % 8):
        raise ValueError(f"size must be a positive multiple of 8, got {size}")
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        for name, stem in tqdm(list(zip(names, stems)), desc="degrade", unit="img", disable=None):
            hq = resize_image(read_image(folder / name), size)
            lq = degrade_tensor(hq[None], degradation, [eval_seed(seed, name)])[0]
            write_png(lq, tmp / f"{stem}.png")
        manifest = {
            "preset": degradation.name,
            "executor": "bfrzoo.data.cpu_degradations (libjpeg 4:2:0)",
            "opencv_version": cv2.__version__,
            "seed": seed,
            "size": size,
            "split": split if (in_dir / "split.json").is_file() else None,
            "bfrzoo_version": bfrzoo.__version__,
            "source": str(in_dir.resolve()),
            "count": len(names),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return len(names)
