"""Face datasets: HQ faces (with optional parsing masks and 5-point landmarks) and folders of LQ inputs.

A data root looks like the embedded samples (``bfrzoo/assets/sample/faces512``)::

    root/split.json          {"rule": str, "train": [names], "val": [names]}
    root/images/<name>       HQ faces
    root/masks/<stem>.png    optional 8-bit parsing maps, classes 0..18 (CelebAMask-HQ order)
    root/landmarks.json      optional {"landmarks": {name: [[x, y] * 5]}, "image_size": int}; an entry may also be
                             {"left_eye": [x, y], ...} with the order given by a top-level "points" list

A plain folder of images works too (all its images form the one split).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from bfrzoo.errors import BfrzooError, ImageInputError
from bfrzoo.interface import NUM_PARSING_CLASSES
from bfrzoo.io import list_images, read_image

# CelebAMask-HQ classes that swap under a horizontal flip: l/r eye, l/r brow, l/r ear.
FLIP_CLASS_PAIRS: tuple[tuple[int, int], ...] = ((4, 5), (6, 7), (8, 9))
# 5-point order: left eye, right eye, nose, left mouth corner, right mouth corner.
FLIP_LANDMARK_ORDER: tuple[int, ...] = (1, 0, 2, 4, 3)
LANDMARK_POINTS: tuple[str, ...] = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


def resize_image(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """``(3, H, W)`` in ``[0, 1]`` -> ``(3, size, size)`` by antialiased bilinear resizing (no-op if already there)."""
    if size is None or tuple(image.shape[-2:]) == (size, size):
        return image
    out = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].clamp(0, 1)


def flip_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Mirror a sample left-right, keeping mask classes and landmark identities consistent.

    hq / lq ``(3, H, W)`` and mask ``(H, W)`` are flipped; parsing classes 4<->5, 6<->7, 8<->9 swap; landmarks
    ``(5, 2)`` pixel-index coordinates map ``x -> W - 1 - x`` and the left/right eye and mouth points swap.
    """
    out = dict(sample)
    width = sample["hq"].shape[-1]
    for key in ("hq", "lq"):
        if key in sample:
            out[key] = sample[key].flip(-1)
    if "mask" in sample:
        mask = sample["mask"].flip(-1)
        lut = torch.arange(256, dtype=mask.dtype)
        for a, b in FLIP_CLASS_PAIRS:
            lut[a], lut[b] = b, a
        out["mask"] = lut[mask]
    if "landmarks" in sample:
        lm = sample["landmarks"][list(FLIP_LANDMARK_ORDER)].clone()
        lm[:, 0] = width - 1 - lm[:, 0]
        out["landmarks"] = lm
    return out


def _read_mask(path: Path, size: int | None) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L") if img.mode not in ("L", "P") else img, dtype=np.int64)
    except OSError as exc:
        raise ImageInputError(f"cannot read parsing mask {str(path)!r} ({exc}); replace or remove it") from exc
    mask = torch.from_numpy(arr.copy())
    if mask.max() >= NUM_PARSING_CLASSES:
        raise ImageInputError(f"parsing mask {str(path)!r} has class {int(mask.max())}; expected 0..18")
    if size is not None and tuple(mask.shape) != (size, size):
        mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest-exact")[0, 0].long()
    return mask


def resolve_split(root: str | Path, split: str | None) -> tuple[Path, list[str]]:
    """(image folder, file names) of ``split`` in a data root, or of every image in a plain folder."""
    root = Path(root)
    split_file = root / "split.json"
    if split_file.is_file():
        info = json.loads(split_file.read_text())
        if split is None:
            names = [n for key in ("train", "val") for n in info.get(key, [])]
        elif split not in info or not isinstance(info[split], list):
            known = [k for k, v in info.items() if isinstance(v, list)]
            raise BfrzooError(f"split {split!r} not in {str(split_file)!r}; it has: {', '.join(known)}")
        else:
            names = list(info[split])
        folder = root / "images"
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise BfrzooError(
                f"{len(missing)} images of split {split!r} are missing from {str(folder)!r} (first: {missing[0]!r}); "
                "fix split.json or restore the files"
            )
        if not names:
            raise BfrzooError(f"split {split!r} of {str(split_file)!r} is empty")
        return folder, names
    return root, [p.name for p in list_images(root)]


class FaceFolder(Dataset):
    """HQ faces of a data root's split (or of a plain folder), resized to ``size x size``.

    Items: ``{"hq": (3, size, size) float [0, 1], "name": str}`` plus ``"mask"`` ``(size, size)`` int64 0..18
    (nearest-resized) if ``with_masks`` and ``"landmarks"`` ``(5, 2)`` float pixel ``(x, y)`` (scaled) if
    ``with_landmarks``. ``flip`` mirrors each item with probability 1/2 (torch's global RNG, seeded per worker
    by Lightning), masks and landmarks consistently; :class:`~bfrzoo.data.FaceDataModule` instead flips with
    a seeded coin per (epoch, index). An unreadable image or mask raises one :class:`ImageInputError` naming
    the file, or, with ``skip_corrupt``, is replaced by the next readable item with a warning (once per file).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        size: int | None = 512,
        with_masks: bool = False,
        with_landmarks: bool = False,
        flip: bool = False,
        limit: int | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise BfrzooError(f"data root {str(self.root)!r} does not exist or is not a folder")
        self.folder, names = resolve_split(self.root, split)
        self.names = names[:limit] if limit is not None else names
        self.size, self.with_masks, self.with_landmarks, self.flip = size, with_masks, with_landmarks, flip
        self.skip_corrupt = skip_corrupt
        self._skipped: set[str] = set()
        if with_masks:
            missing = [n for n in self.names if not self._mask_path(n).is_file()]
            if missing:
                raise BfrzooError(
                    f"with_masks: {len(missing)} of {len(self.names)} parsing masks are missing in "
                    f"{str(self.root / 'masks')!r} (first: {self._mask_path(missing[0]).name!r}); "
                    "add them or set with_masks false"
                )
        self.landmarks: dict[str, Any] = {}
        self.landmark_points: tuple[str, ...] = LANDMARK_POINTS
        self.landmark_size = 0
        if with_landmarks:
            path = self.root / "landmarks.json"
            if not path.is_file():
                raise BfrzooError(f"with_landmarks: {str(path)!r} not found; add it or set with_landmarks false")
            info = json.loads(path.read_text())
            self.landmarks, self.landmark_size = info["landmarks"], int(info["image_size"])
            self.landmark_points = tuple(info.get("points", LANDMARK_POINTS))
            missing = [n for n in self.names if n not in self.landmarks]
            if missing:
                raise BfrzooError(f"with_landmarks: {len(missing)} images have no entry in {str(path)!r} (first: {missing[0]!r})")

    def _mask_path(self, name: str) -> Path:
        return self.root / "masks" / f"{Path(name).stem}.png"

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load(index)
        if self.flip and torch.rand(()) < 0.5:
            sample = flip_sample(sample)
        return sample

    def load(self, index: int) -> dict[str, Any]:
        """Item ``index`` without the random flip; with ``skip_corrupt`` the next readable item if it is unreadable."""
        for step in range(len(self.names)):
            i = (index + step) % len(self.names)
            try:
                return self._read(i)
            except ImageInputError as exc:
                if not self.skip_corrupt:
                    raise ImageInputError(
                        f"{exc} (unreadable training images can instead be skipped with a warning: "
                        "--data.skip_corrupt true, or FaceFolder(skip_corrupt=True))"
                    ) from exc
                if self.names[i] not in self._skipped:
                    self._skipped.add(self.names[i])
                    warnings.warn(f"skipping an unreadable image: {exc}", stacklevel=2)
        raise ImageInputError(f"none of the {len(self.names)} images in {str(self.folder)!r} can be read")

    def _read(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        sample: dict[str, Any] = {"hq": resize_image(read_image(self.folder / name), self.size), "name": name}
        if self.with_masks:
            sample["mask"] = _read_mask(self._mask_path(name), self.size)
        if self.with_landmarks:
            entry = self.landmarks[name]
            if isinstance(entry, dict):  # {"left_eye": [x, y], ...} in the order of "points"
                entry = [entry[k] for k in self.landmark_points]
            lm = torch.tensor(entry, dtype=torch.float32).view(5, 2)
            if self.size is not None and self.size != self.landmark_size:
                lm = (lm + 0.5) * (self.size / self.landmark_size) - 0.5  # pixel-index centres scale about edges
            sample["landmarks"] = lm
        return sample


class LQFolder(Dataset):
    """LQ images of a folder for prediction: ``{"lq": (3, H, W) float [0, 1], "name": str}``.

    ``size`` resizes to ``size x size`` (antialiased); ``None`` keeps each image's own size.
    """

    def __init__(self, folder: str | Path, size: int | None = None) -> None:
        self.files = list_images(folder)
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        return {"lq": resize_image(read_image(path), self.size), "name": path.name}


class PairedLQ(Dataset):
    """HQ items of a :class:`FaceFolder` plus the fixed LQ ``<lq_dir>/<stem>.png`` (as written by ``bfrzoo degrade``)."""

    def __init__(self, hq: FaceFolder, lq_dir: str | Path) -> None:
        self.hq, self.lq_dir = hq, Path(lq_dir)
        if not self.lq_dir.is_dir():
            raise BfrzooError(f"test_lq_dir {str(self.lq_dir)!r} does not exist; make it with `bfrzoo degrade`")
        missing = [n for n in hq.names if not (self.lq_dir / f"{Path(n).stem}.png").is_file()]
        if missing:
            raise BfrzooError(
                f"test_lq_dir {str(self.lq_dir)!r} lacks {len(missing)} of the {len(hq.names)} test images "
                f"(first: {Path(missing[0]).stem}.png); rebuild it with `bfrzoo degrade` on the same data root"
            )

    def __len__(self) -> int:
        return len(self.hq)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.hq[index]
        sample["lq"] = resize_image(read_image(self.lq_dir / f"{Path(sample['name']).stem}.png"), self.hq.size)
        return sample
