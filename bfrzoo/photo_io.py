"""Whole photos in and out, as they are meant to be seen and without needless copies.

:func:`read_photo` returns the pixels in their own bit depth (uint8, or uint16 for 16-bit files), turned upright
by the EXIF orientation, with grayscale and alpha recorded so that :func:`write_photo` writes the result back in
kind (a grayscale photo stays grayscale, RGBA keeps its alpha, 16-bit stays 16-bit in PNG). It is the one
decoder of image files in bfrzoo: :func:`bfrzoo.io.read_image` is its float ``(3, H, W)`` view for training, metrics
and aligned faces; the photo pipeline keeps the photo in its own bit depth (a 100-megapixel photo is 300 MB as uint8
and 1.2 GB as float) and only ever converts face regions to float.

The size is checked from the header before any pixel is decoded (:func:`read_header`), so a huge image is refused
in one line instead of exhausting memory.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bfrzoo.errors import ImageInputError

EXIF_ORIENTATION = 0x0112
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


@dataclass
class Photo:
    """Pixels of one photo.

    Attributes:
        rgb: ``(H, W, 3)`` uint8 or uint16 (a grayscale photo has three equal channels).
        alpha: ``(H, W)`` of the same dtype, or ``None``.
        gray: the source was grayscale (written back as grayscale).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    gray: bool = False

    @property
    def max_value(self) -> float:
        return 65535.0 if self.rgb.dtype == np.uint16 else 255.0

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def rgb8(self) -> np.ndarray:
        """The RGB pixels as uint8 (the array itself when it already is)."""
        return self.rgb if self.rgb.dtype == np.uint8 else (self.rgb >> 8).astype(np.uint8)


@dataclass(frozen=True)
class PhotoHeader:
    """What a file's header says: upright size, and what :func:`write_photo` will need."""

    width: int
    height: int
    mode: str
    orientation: int
    has_alpha: bool
    sixteen_bit: bool

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def unreadable_image(path: Path, exc: BaseException) -> ImageInputError:
    return ImageInputError(
        f"cannot read image {str(path)!r} ({type(exc).__name__}: {exc}); the file is corrupt, truncated or not an "
        "image: replace or remove it"
    )


@contextmanager
def _pixel_limit(max_pixels: float) -> Iterator[None]:
    """Let Pillow open images up to ``max_pixels`` (its own bomb limit is about 179 MP); bfrzoo checks sizes itself."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max(int(max_pixels), old or 0) if old else old
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def exif_orientation(img: Any) -> int:
    """The EXIF orientation (1-8; 1 when absent or broken) of an opened image, read without decoding pixels (Pillow's PNG ``getexif`` decodes the whole image to
    look for an eXIf chunk after the pixels: PNG uses only an EXIF block that precedes them)."""
    from PIL import Image

    try:
        if img.format == "PNG":
            exif = Image.Exif()
            if img.info.get("exif"):
                exif.load(img.info["exif"])
        else:
            exif = img.getexif()
        orientation = int(exif.get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
        orientation = 1
    return orientation if 1 <= orientation <= 8 else 1


def _header_of(img: Any) -> PhotoHeader:
    raw = img.tile[0][3] if img.tile else ""
    orientation = exif_orientation(img)
    width, height = img.size
    if orientation >= 5:
        width, height = height, width
    raw = raw[0] if isinstance(raw, tuple) else raw
    mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info)
    sixteen = mode.startswith("I;16") or mode == "I" or (isinstance(raw, str) and ";16" in raw)
    return PhotoHeader(width, height, mode, orientation, has_alpha, sixteen)


def read_header(path: str | Path, max_megapixels: float = 200.0) -> PhotoHeader:
    """The file's :class:`PhotoHeader` without decoding pixels; one :class:`ImageInputError` for an unreadable file
    or one larger than ``max_megapixels``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with _pixel_limit(max_megapixels * 1e6 * 1.01), Image.open(path) as img:
            header = _header_of(img)
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"image {str(path)!r} is too large ({exc}); the limit is {max_megapixels:g} MP (--max-megapixels)") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise unreadable_image(path, exc) from exc
    check_size(header.width, header.height, max_megapixels, str(path))
    return header


def check_size(width: int, height: int, max_megapixels: float, what: str) -> None:
    """Refuse images with a side under 8 px or more than ``max_megapixels``."""
    if width < 8 or height < 8:
        raise ImageInputError(f"image {what!r} is {width}x{height}; at least 8x8 pixels are needed")
    if width * height > max_megapixels * 1e6:
        raise ImageInputError(
            f"image {what!r} is {width}x{height} ({width * height / 1e6:.0f} MP), more than the {max_megapixels:g} MP "
            "allowed (--max-megapixels; memory grows with the size): resize it first or raise the limit"
        )


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to ``(H, W, ...)`` pixels, giving what a viewer shows."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    out = ops.get(orientation, ops[1])(array)
    return out if out is array else np.ascontiguousarray(out)


def read_photo(path: str | Path, max_megapixels: float = 200.0) -> Photo:
    """Decode ``path`` into a :class:`Photo` (upright, own bit depth); one :class:`ImageInputError` per bad file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    header = read_header(path, max_megapixels)
    try:
        if header.sixteen_bit and header.mode in ("RGB", "RGBA"):
            return _orient_photo(_read_16bit_color(path), header.orientation)
        with _pixel_limit(max_megapixels * 1e6 * 1.01), Image.open(path) as img:
            img.load()
            return _orient_photo(photo_from_pil(img), header.orientation)
    except ImageInputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, MemoryError) as exc:
        raise unreadable_image(path, exc) from exc


def _orient_photo(photo: Photo, orientation: int) -> Photo:
    if orientation == 1:
        return photo
    alpha = None if photo.alpha is None else orient(photo.alpha, orientation)
    return Photo(orient(photo.rgb, orientation), alpha, photo.gray)


def _read_16bit_color(path: Path) -> Photo:
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    del data
    if arr is None or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageInputError(f"cannot decode the 16-bit colour image {str(path)!r}; the file is corrupt or truncated")
    rgb = np.ascontiguousarray(arr[..., 2::-1])
    alpha = np.ascontiguousarray(arr[..., 3]) if arr.shape[2] == 4 else None
    return Photo(rgb, alpha, False)


def photo_from_pil(img: Any) -> Photo:
    """A PIL image -> :class:`Photo` (palette and CMYK become RGB; 16-bit grayscale stays 16-bit)."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        gray = np.asarray(img)
        gray = np.clip(gray, 0, 65535).astype(np.uint16) if gray.dtype != np.uint16 else gray
        return Photo(np.repeat(gray[..., None], 3, axis=2), None, True)
    if mode == "F":
        gray = (np.clip(np.asarray(img, dtype=np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
        return Photo(np.repeat(gray[..., None], 3, axis=2), None, True)
    if mode in ("1", "L", "LA"):
        arr = np.asarray(img.convert("LA"))
        alpha = np.ascontiguousarray(arr[..., 1]) if mode == "LA" else None
        return Photo(np.repeat(arr[..., :1], 3, axis=2), alpha, True)
    has_alpha = mode in ("RGBA", "PA") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        arr = np.asarray(img if mode == "RGBA" else img.convert("RGBA"))
        return Photo(np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3]), False)
    return Photo(np.array(img if mode == "RGB" else img.convert("RGB")), None, False)  # writeable: pasted into


def photo_from_array(array: np.ndarray) -> Photo:
    """``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8 / uint16 RGB(A) -> :class:`Photo` (copied:
    the caller's array is never modified)."""
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageInputError(f"photo arrays must be uint8 or uint16, got {array.dtype}; scale floats in [0, 1] by 255 and round")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageInputError(f"photo arrays must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    if array.shape[2] == 1:
        return Photo(np.repeat(array, 3, axis=2), None, True)
    alpha = np.array(array[..., 3]) if array.shape[2] == 4 else None
    return Photo(np.array(array[..., :3]), alpha, False)


def photo_to_array(photo: Photo) -> np.ndarray:
    """A :class:`Photo` as one array: ``(H, W)`` grayscale, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA."""
    if photo.gray:
        gray = luminance(photo.rgb)
        return gray if photo.alpha is None else np.dstack([gray, photo.alpha])
    return photo.rgb if photo.alpha is None else np.dstack([photo.rgb, photo.alpha])


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of ``(H, W, 3)``, same dtype, computed in row blocks (no float copy of a whole photo)."""
    out = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    top = np.iinfo(rgb.dtype).max
    step = max(1, (1 << 22) // max(rgb.shape[1], 1))
    for y in range(0, rgb.shape[0], step):
        block = rgb[y : y + step].astype(np.float32) @ weights
        out[y : y + step] = np.clip(block + 0.5, 0, top).astype(rgb.dtype)
    return out


def write_photo(photo: Photo, path: str | Path, quality: int = 95) -> Path:
    """Write ``photo`` atomically (:func:`bfrzoo.io.atomic_write`); the format follows the suffix (``.png``,
    ``.jpg`` / ``.jpeg``, ``.webp``). JPEG and WebP are 8-bit without alpha: use PNG for those photos."""
    from bfrzoo.io import atomic_write

    path = Path(path)
    suffix = path.suffix.lower()
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(suffix)
    if fmt is None:
        raise ImageInputError(f"cannot write {str(path)!r}: use .png, .jpg or .webp")
    array = photo_to_array(photo)
    if fmt != "PNG" and (array.dtype != np.uint8 or photo.alpha is not None):
        raise ImageInputError(f"{fmt} cannot hold a 16-bit or transparent photo; write {path.with_suffix('.png').name} instead")
    if array.dtype == np.uint16 and array.ndim == 3:
        import cv2

        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array[..., 2::-1] if array.shape[2] == 3 else array[..., [2, 1, 0, 3]]))
        if not ok:
            raise ImageInputError(f"could not encode {str(path)!r} as a 16-bit PNG")
        return atomic_write(path, lambda tmp: tmp.write_bytes(encoded.tobytes()))

    def save(tmp: Path) -> None:
        from PIL import Image

        if array.dtype == np.uint16:  # 16-bit grayscale
            Image.fromarray(array).save(tmp, format="PNG")
            return
        img = Image.fromarray(array)
        options: dict[str, Any] = {"compress_level": 3} if fmt == "PNG" else {"quality": quality}
        img.save(tmp, format=fmt, **options)

    return atomic_write(path, save)
