"""The restoration contract shared by every network in the zoo, and the user-facing :class:`Restorer`.

Networks (what :func:`bfrzoo.create_restorer` returns) take and return ``(N, 3, H, W)`` RGB in ``[-1, 1]``,
as the published code of every model does. Two optional attributes describe their input:

* ``input_size: int | None``: a network that is not fully convolutional (GPEN, PSFR-GAN) needs exactly
  ``input_size x input_size``; the :class:`Restorer` resizes to it and back.
* ``size_divisor: int``: a fully convolutional network needs ``H`` and ``W`` divisible by it; the
  :class:`Restorer` reflect-pads and crops.

:class:`Restorer` gives users ``restore(images)`` on ``[0, 1]`` tensors, uint8 arrays or PIL images, with
batching, device and dtype handling; results come back in the type they were given.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.errors import ImageInputError

Image = Any  # PIL.Image.Image, imported lazily

#: The 19 face-parsing classes of CelebAMask-HQ, in label order: the masks of the data, the parsing networks'
#: logits (PSFR-GAN's FPN, MPCNet's parsing prior) and the parsing metrics all use these indices.
PARSING_CLASSES: tuple[str, ...] = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth",
    "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
NUM_PARSING_CLASSES: int = len(PARSING_CLASSES)


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` -> ``[-1, 1]``."""
    return x * 2.0 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` -> ``[0, 1]``, clamped."""
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def check_images(
    x: torch.Tensor,
    name: str = "images",
    min_size: int = 8,
    allow_unbatched: bool = True,
    check_finite: bool = True,
) -> torch.Tensor:
    """Check a float ``(N, 3, H, W)`` batch in ``[0, 1]`` (also used by :mod:`bfrzoo.metrics`); return it batched.

    Raises one clear :class:`ImageInputError` otherwise. ``allow_unbatched`` accepts a single ``(3, H, W)`` image;
    ``min_size`` is the smallest side allowed; ``check_finite`` also rejects NaN / inf (a device sync: the metrics,
    called every batch, leave it off).
    """
    if not isinstance(x, torch.Tensor):
        raise ImageInputError(f"{name} must be a torch.Tensor of shape (N, 3, H, W) in [0, 1], got {type(x).__name__}")
    if allow_unbatched and x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ImageInputError(
            f"{name} must be (N, 3, H, W) RGB, channels first, got shape {tuple(x.shape)}; add a batch dimension "
            "with x[None], move channels with x.permute(0, 3, 1, 2), convert grayscale with "
            "x.expand(-1, 3, -1, -1) and drop alpha channels"
        )
    if not x.is_floating_point():
        raise ImageInputError(f"{name} must be float in [0, 1], got dtype {x.dtype}; divide uint8 data by 255")
    if min(x.shape[-2:]) < min_size:
        raise ImageInputError(
            f"{name} of size {x.shape[-2]}x{x.shape[-1]} are too small: both sides must be >= {min_size} px"
        )
    if check_finite and not torch.isfinite(x).all():
        raise ImageInputError(f"{name} contain NaN or infinite values")
    return x


#: How far outside ``[0, 1]`` a float input may lie (rounding of a resize or a colour conversion) before
#: :class:`Restorer` refuses it; values within the tolerance are clamped.
RANGE_TOLERANCE: float = 1e-3

#: PIL modes of 16-bit (or 32-bit integer) grayscale images: scaled by 65535, not clipped at 255.
_PIL_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _pil_to_tensor(img: Image) -> torch.Tensor:
    if img.mode in _PIL_16BIT_MODES:
        return _array_to_tensor(np.asarray(img).astype(np.uint16 if img.mode != "I" else np.int64))
    if img.mode == "F":  # 32-bit float pixels: checked against [0, 1] like any float input
        return _array_to_tensor(np.asarray(img, dtype=np.float32))
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255.0)


def _array_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """``(H, W, 3|4)`` or ``(H, W)`` array -> ``(3, H, W)`` float: uint8 / 255, uint16 / 65535, float as it is
    (its range is checked by :meth:`Restorer.restore_tensor`)."""
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ImageInputError(f"arrays must be (H, W, 3) or (H, W) uint8, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float().div(255.0)  # own the memory
    if arr.dtype == np.uint16:
        return torch.from_numpy(arr.astype(np.float32) / 65535.0).permute(2, 0, 1)
    if np.issubdtype(arr.dtype, np.integer):  # PIL mode "I" (16-bit PNGs opened as 32-bit integers)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageInputError(
                f"integer image values must be 0..65535 (16-bit), got {arr.min()}..{arr.max()}; give uint8 (0..255), "
                "uint16 (0..65535) or float (0..1)"
            )
        return torch.from_numpy(arr.astype(np.float32) / 65535.0).permute(2, 0, 1)
    if np.issubdtype(arr.dtype, np.floating):
        return torch.from_numpy(np.array(arr, dtype=np.float32, copy=True)).permute(2, 0, 1)
    raise ImageInputError(f"arrays must be uint8 (0..255), uint16 (0..65535) or float (0..1), got {arr.dtype}")


def check_range(x: torch.Tensor, name: str = "images", tolerance: float = RANGE_TOLERANCE) -> torch.Tensor:
    """``x`` clamped to ``[0, 1]``, or one :class:`ImageInputError` when a value lies further than ``tolerance``
    outside ``[0, 1]`` (0..255 data, or ``[-1, 1]`` model-range data, would otherwise saturate silently)."""
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if lo < -tolerance or hi > 1.0 + tolerance:
        if hi > 1.5:
            hint = "0..255 data? divide it by 255"
        elif lo < -tolerance:
            hint = "[-1, 1] data? map it with (x + 1) / 2"
        else:
            hint = "clamp it to [0, 1]"
        raise ImageInputError(
            f"{name} must lie in [0, 1] (tolerance {tolerance:g}), got values from {lo:.4g} to {hi:.4g}: {hint}"
        )
    return x.clamp(0.0, 1.0)


def restore_batch(net: nn.Module, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Run ``net`` on ``x`` ``(N, 3, H, W)`` in ``[0, 1]`` (on the net's device) and return ``(N, 3, H, W)`` in ``[0, 1]``.

    Meets the network's input contract on the way: a fixed-size network (``input_size``) gets the faces resized to
    that size (antialiased bilinear) and its output resized back (bicubic); a network with a ``size_divisor`` gets
    reflect padding that is cropped off again. ``dtype`` other than float32 runs the network under autocast.
    """
    h, w = x.shape[-2:]
    size = getattr(net, "input_size", None)
    if size is not None and (h, w) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    divisor = int(getattr(net, "size_divisor", 1))
    ph, pw = (-x.shape[-2]) % divisor, (-x.shape[-1]) % divisor
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32):
        y = net(to_model_range(x))
    if isinstance(y, (tuple, list)):
        y = y[0]
    y = from_model_range(y.float())
    if ph or pw:
        y = y[..., : y.shape[-2] - ph, : y.shape[-1] - pw]
    if y.shape[-2:] != (h, w):
        y = F.interpolate(y, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    return y


class Restorer:
    """Restore faces with any zoo network.

    >>> restorer = Restorer(bfrzoo.create_restorer("unet", base_channels=8))
    >>> out = restorer.restore(torch.rand(2, 3, 64, 64))       # (2, 3, 64, 64) in [0, 1]

    Args:
        net: a network following the contract above.
        device: where to run (default: CUDA when available).
        dtype: ``torch.float32`` or, on GPUs, ``torch.bfloat16`` / ``torch.float16`` autocast.
        batch_size: images per forward pass.
        mode: ``None`` (plain fp32, or ``dtype``), an inference mode of :data:`bfrzoo.bench.MODES`
            (``"channels_last"``, ``"bf16"``, ``"compile"`` ...), or ``"auto"``: the fastest mode on this device whose
            restored image stays within :data:`bfrzoo.bench.DEFAULT_TOLERANCE` of fp32
            (:func:`bfrzoo.bench.fastest_mode`, measured once per process; ``mode_choice`` says what it measured and
            ``mode_choice.describe()`` which mode it picked).
    """

    def __init__(
        self,
        net: nn.Module,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        batch_size: int = 8,
        mode: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype
        self.batch_size = batch_size
        self.net = net.eval().to(self.device)
        self.mode, self.mode_choice = "fp32" if dtype == torch.float32 else str(dtype), None
        if mode is not None:
            from bfrzoo.bench.modes import apply_mode, resolve_mode

            if dtype != torch.float32:
                raise ValueError("give either dtype or mode, not both (a mode sets its own dtype)")
            chosen, self.mode_choice = resolve_mode(self.net, self.device, mode)
            self.mode, self.net = chosen.name, apply_mode(self.net, chosen)

    @property
    def input_size(self) -> int | None:
        return getattr(self.net, "input_size", None)

    @torch.inference_mode()
    def restore_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` float in ``[0, 1]`` -> the same shape, restored, on the input's device. Values further
        than :data:`RANGE_TOLERANCE` outside ``[0, 1]`` are refused (one :class:`ImageInputError`), closer ones
        clamped."""
        x = check_range(check_images(x))
        out = torch.empty_like(x, dtype=torch.float32)
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start : start + self.batch_size].to(self.device, torch.float32)
            out[start : start + self.batch_size] = self._forward(chunk).to(out.device)
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return restore_batch(self.net, x, self.dtype)

    def restore(self, images: torch.Tensor | np.ndarray | Image | Sequence[Any]) -> Any:
        """Restore a tensor ``(N,3,H,W)``/``(3,H,W)`` in ``[0,1]``, a ``(H,W,3)`` array (uint8 0..255, uint16
        0..65535 or float 0..1), a PIL image (8-bit, or 16-bit grayscale ``I;16``), or a list of those (sizes may
        differ). Returns the same kind of object (arrays keep their dtype; PIL images come back 8-bit RGB)."""
        if isinstance(images, torch.Tensor):
            squeeze = images.ndim == 3
            y = self.restore_tensor(images)
            return y[0] if squeeze else y
        if isinstance(images, np.ndarray):
            y = self.restore_tensor(_array_to_tensor(images).unsqueeze(0))[0].permute(1, 2, 0).cpu()
            if images.dtype == np.uint8:
                return y.mul(255).round().byte().numpy()
            if images.dtype == np.uint16:
                return y.double().mul(65535).round().numpy().astype(np.uint16)
            return y.numpy()
        if isinstance(images, (list, tuple)):
            return [self.restore(im) for im in images]
        if hasattr(images, "convert"):  # PIL image
            from PIL import Image as PILImage

            y = self.restore_tensor(_pil_to_tensor(images).unsqueeze(0))[0]
            return PILImage.fromarray(y.permute(1, 2, 0).mul(255).round().byte().cpu().numpy())
        raise ImageInputError(
            f"cannot restore a {type(images).__name__}; give a float tensor in [0, 1], a uint8 array or a PIL image"
        )

    def restore_photo(
        self, image: Any, options: Any = None, detector: Any = "auto", parser: Any = "auto"
    ) -> tuple[Any, list[Any]]:
        """Restore every face of a whole photo: detect, align, restore in batches, paste back.

        ``image``: a PIL image, a uint8 / uint16 array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` (RGB), or a float
        tensor ``(3, H, W)`` in ``[0, 1]``; it is not modified. Returns ``(restored image of the same kind, faces)``
        (a list of :class:`bfrzoo.face.photo.Face`: box, landmarks, score, alignment, crops). ``options`` is a
        :class:`bfrzoo.face.photo.PhotoOptions`; ``detector`` ``"auto"`` / ``"retinaface"`` / ``"mtcnn"``;
        ``parser`` ``"auto"`` / ``None`` / a weight file (see :func:`bfrzoo.face.photo.restore_photo`).
        """
        from bfrzoo.face.photo import restore_photo

        return restore_photo(self, image, options=options, detector=detector, parser=parser)
