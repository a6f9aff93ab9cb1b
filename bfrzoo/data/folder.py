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
import math
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
from bfrzoo.io import atomic_output_dir, check_image_files, read_image, write_png

#: The largest image ``degrade_folder`` degrades, in pixels (width x height after the optional ``size`` resize):
#: 4096 x 4096. The per-image executor needs about 50 bytes per pixel (a 6000 x 4000 photo: about 1.1 GB), so a
#: folder of camera photos is refused, before any work, with the names and sizes of the offending files.
MAX_DEGRADE_PIXELS: int = 4096 * 4096


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
    _check_inputs([folder / n for n in names], size)  # every header (no pixels decoded) before any work
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


def _check_inputs(paths: list[Path], size: int | None) -> None:
    """Every input's header reads (one error listing every bad file) and no image is over
    :data:`MAX_DEGRADE_PIXELS` once resized to ``size`` (sizes come from the headers: nothing is decoded)."""
    side = math.isqrt(MAX_DEGRADE_PIXELS)
    limit = f"bfrzoo degrade's limit of {MAX_DEGRADE_PIXELS / 1e6:.1f} Mpx ({side}x{side}, about 50 bytes of memory per pixel)"
    if size is not None and size * size > MAX_DEGRADE_PIXELS:
        raise BfrzooError(f"--size {size} makes {size}x{size} images, over {limit}; choose a smaller --size")
    sizes = check_image_files(paths)
    big = [(p, w, h) for p, (w, h) in zip(paths, sizes) if size is None and w * h > MAX_DEGRADE_PIXELS]
    if big:
        listed = "\n".join(f"  {str(p)!r}: {w}x{h} ({w * h / 1e6:.1f} Mpx)" for p, w, h in big)
        raise BfrzooError(
            f"{len(big)} input image(s) are over {limit}; crop the faces first or pass --size N to degrade N x N "
            f"faces; nothing was written:\n{listed}"
        )
