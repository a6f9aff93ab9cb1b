"""Reading and writing images with one clear error per bad file, and atomic folder output."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bfrzoo.errors import BfrzooError, ImageInputError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def sample_root(name: str = "faces512") -> Path:
    """A folder of the embedded sample data (``bfrzoo/assets/sample/<name>``; licences in ``bfrzoo/assets/LICENSES.md``).

    ``faces512``: 80 aligned 512 px faces + 19-class parsing masks + ``split.json`` (the DataModule's default root);
    ``aaf128``: 240 aligned 128 px faces + 5-point ``landmarks.json``; ``real_lq``: 4 real low-quality 512 px crops.
    """
    root = Path(__file__).parent / "assets" / "sample"
    if not (root / name).is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise BfrzooError(f"no embedded sample {name!r}; the samples are: {', '.join(known)}")
    return root / name


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files directly inside ``folder``; one clear error when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BfrzooError(f"input folder {str(folder)!r} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BfrzooError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}")
    return files


def check_image_file(path: str | Path) -> tuple[int, int]:
    """Cheap integrity check without decoding the pixels (header, and chunk CRCs for PNG): ``(width, height)`` of
    the image as :func:`read_image` returns it (turned upright by its EXIF orientation).

    Lets a folder command refuse a broken input before doing any work; a file that passes can still fail to
    decode (a truncated JPEG), which :func:`read_image` then reports with the same kind of error.
    """
    from PIL import Image, UnidentifiedImageError

    from bfrzoo.photo_io import exif_orientation, unreadable_image

    path = Path(path)
    try:
        with Image.open(path) as img:
            size = img.size
            if exif_orientation(img) >= 5:  # orientations 5-8 swap width and height once upright
                size = (size[1], size[0])
            img.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise unreadable_image(path, exc) from exc
    return size


def check_image_files(paths: Sequence[str | Path]) -> list[tuple[int, int]]:
    """:func:`check_image_file` of every path, before any work: ``(width, height)`` of each. When some fail,
    ONE :class:`ImageInputError` lists every bad file, one line each (so a user fixes all of them at once)."""
    sizes: list[tuple[int, int]] = []
    bad: list[str] = []
    for path in paths:
        try:
            sizes.append(check_image_file(path))
        except ImageInputError as exc:
            bad.append(str(exc))
    if bad:
        lines = "\n".join(f"  {line}" for line in bad)
        raise ImageInputError(f"{len(bad)} of {len(paths)} input images cannot be read; nothing was done:\n{lines}")
    return sizes


def read_image(path: str | Path, max_megapixels: float = 200.0) -> torch.Tensor:
    """An image file -> ``(3, H, W)`` float in ``[0, 1]``: turned upright by its EXIF orientation (as viewers show
    it), grayscale expanded, alpha dropped, 16-bit files (grayscale and colour) scaled by 65535.

    The one decoder of image files is :func:`bfrzoo.photo_io.read_photo` (own bit depth, header checked
    before decoding, refusing images over ``max_megapixels``); this is its float view for training, metrics and
    aligned faces. One :class:`ImageInputError` per unreadable or too small file.
    """
    from bfrzoo.photo_io import read_photo

    photo = read_photo(path, max_megapixels=max_megapixels)
    if photo.height < 8 or photo.width < 8:
        raise ImageInputError(f"image {str(path)!r} is {photo.width}x{photo.height}; at least 8x8 pixels are needed")
    arr = torch.from_numpy(np.ascontiguousarray(photo.rgb))
    return arr.permute(2, 0, 1).float().div_(photo.max_value)


def check_output_dir(path: str | Path, what: str = "output folder", create: bool = True) -> Path:
    """Check, before any work, that the folder ``path`` can be written: create it (``create=False``: only its
    parent) and write a probe file there. One :class:`BfrzooError` saying what is wrong otherwise: a path under
    an existing FILE, a folder without write permission, a read-only file system. ``what`` names the option or
    argument in the message."""
    path = Path(path).expanduser()
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "is a file" if blocking == path else f"is under {str(blocking)!r}, which is a file"
        raise BfrzooError(f"{what} {str(path)!r} {where}, not a folder; choose another folder")
    folder = path if create else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".bfrzoo-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BfrzooError(
            f"{what} {str(path)!r} cannot be written ({exc.strerror or type(exc).__name__} in {str(folder)!r}); "
            "choose a folder you can write to"
        ) from exc
    return path


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Write a file so that ``path`` only ever holds a complete one: ``write(tmp)`` fills a temporary file in
    the same folder (same file system), which is then renamed over ``path`` (``os.replace`` is atomic). On any
    error, the temporary file is removed and an existing ``path`` is left as it was.

    The one writer of every file bfrzoo produces (checkpoints, reports, tables, images); the parent folder is
    created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """:func:`atomic_write` of ``torch.save(obj)`` (keep ``obj`` to tensors, numbers, strings and containers so
    that ``torch.load(weights_only=True)`` reads it back)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_png(image: torch.Tensor, path: str | Path) -> Path:
    """``(3, H, W)`` in ``[0, 1]`` -> 8-bit PNG, written atomically."""
    from PIL import Image

    arr = image.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


@contextmanager
def atomic_output_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``; it becomes ``out_dir`` only if the block finishes.

    A non-empty ``out_dir`` is refused unless ``overwrite``; on any error nothing is left behind.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, "output folder", create=False)  # not under a file, writable: before any work
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise BfrzooError(f"output {str(out_dir)!r} exists and is not empty; choose a new folder or pass --overwrite")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
