"""Restoring every face of a whole photo: detect -> align -> restore in batches -> paste back.

1. **Detect** on a reduced copy (long side at most ``detect_size``; the landmarks are mapped back to the photo's
   pixels), then drop low-confidence, tiny (eye distance) and profile faces and apply the selection
   (:class:`bfrzoo.face.detect.FaceFilter`).
2. **Align**: the least-squares similarity from the five landmarks to the FFHQ template scaled to ``crop_size``
   (:func:`bfrzoo.face.align.fit_similarity`), the crops warped on the restorer's device in batches of
   ``restorer.batch_size`` (:func:`bfrzoo.face.align.warp_faces`).
3. **Restore** each batch with the restorer's network (its ``input_size`` / ``size_divisor`` contract and dtype:
   bf16 autocast when the :class:`~bfrzoo.interface.Restorer` was built with it).
4. **Paste back**: a parsing mask when a face-parsing network is given, else a feathered square; the inverse warp
   blends each face into the photo, which is first resized by ``upscale`` when asked (the background is resized
   with it, so the result is always ``upscale`` times the input).

Memory stays bounded by the faces, not the photo: detection sees a reduced copy, each face is cut out of the
photo by its footprint, and paste-back works in strips.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bfrzoo.errors import BfrzooError, ImageInputError, WeightsNotFoundError
from bfrzoo.face.align import fit_similarity, template, to_3x3
from bfrzoo.face.detect import Detection, FaceDetector, FaceFilter, Selection, load_detector
from bfrzoo.face.paste import feather_mask, parsing_mask, paste_faces
from bfrzoo.photo_io import Photo, photo_from_array, photo_from_pil, photo_to_array
from bfrzoo.weights import PretrainedCfg

#: facexlib's copy of PSFR-GAN's face-parsing network; it loads into :class:`bfrzoo.models.parsenet.ParseNet`
#: unchanged (``bfrzoo.from_official("parsenet", path)``).
FACEXLIB_PARSENET = PretrainedCfg(
    filename="parsing_parsenet.pth",
    url="https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
    source="facexlib (github.com/xinntao/facexlib, release v0.2.2), the face-parsing network of PSFR-GAN",
    license="facexlib: MIT; the network and its training are PSFR-GAN's (CC BY-NC-SA 4.0, non-commercial)",
    converter="parsenet",
)


@dataclass(frozen=True)
class PhotoOptions:
    """How a photo is restored (the ``bfrzoo restore`` flags of the same names).

    Attributes:
        upscale: the output is this many times the input's size (the background resized with OpenCV's bicubic).
        crop_size: the side of the aligned crops (the template is scaled to it); the restorer's network then gets
            them at its own ``input_size``.
        detect_size: detection runs on a copy whose long side is at most this.
        min_score, min_eye_distance, min_frontality, select: the :class:`~bfrzoo.face.detect.FaceFilter`.
        max_megapixels: larger inputs or outputs are refused (memory).
        feather: the width of the mask's soft border, as a fraction of the crop.
        keep_crops: return each face's aligned input crop and restored crop (uint8) in :class:`Face`.
    """

    upscale: float = 1.0
    crop_size: int = 512
    detect_size: int = 1600
    min_score: float = 0.9
    min_eye_distance: float = 8.0
    min_frontality: float = 0.35
    select: Selection = "all"
    max_megapixels: float = 200.0
    feather: float = 0.1
    keep_crops: bool = True

    def __post_init__(self) -> None:
        if not 0.1 <= self.upscale <= 16:
            raise BfrzooError(f"upscale must be between 0.1 and 16, got {self.upscale:g}")
        if self.crop_size < 32 or self.detect_size < 64:
            raise BfrzooError(f"crop_size must be >= 32 and detect_size >= 64, got {self.crop_size} and {self.detect_size}")

    def face_filter(self) -> FaceFilter:
        return FaceFilter(self.min_score, self.min_eye_distance, self.min_frontality, self.select)


@dataclass
class Face:
    """One restored face.

    Attributes:
        box: ``(4,)`` ``x0, y0, x1, y1`` in the input photo's pixels.
        landmarks: ``(5, 2)`` in the input photo's pixels (eyes, nose, mouth corners).
        score: the detector's confidence.
        matrix: ``(2, 3)`` input photo -> aligned crop similarity.
        crop: the aligned input crop ``(S, S, 3)`` uint8, or ``None`` (``keep_crops=False``).
        restored: the restored crop ``(S, S, 3)`` uint8, or ``None``.
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float
    matrix: np.ndarray
    crop: np.ndarray | None = None
    restored: np.ndarray | None = None


@dataclass
class PhotoResult:
    """What :func:`restore_photo_array` did to one photo."""

    photo: Photo
    faces: list[Face]
    dropped: dict[str, int] = field(default_factory=dict)


def detect_faces(photo: Photo, detector: FaceDetector, options: PhotoOptions) -> tuple[list[Detection], dict[str, int]]:
    """Detect on a reduced copy and return the kept detections in the photo's pixels and the dropped counts."""
    import cv2

    factor = min(1.0, options.detect_size / max(photo.width, photo.height))
    if factor < 1.0:
        size = (max(1, round(photo.width * factor)), max(1, round(photo.height * factor)))
        small = cv2.resize(photo.rgb, size, interpolation=cv2.INTER_AREA)
        small = small if small.dtype == np.uint8 else (small >> 8).astype(np.uint8)
        detections = [d.scaled(photo.width / size[0], photo.height / size[1]) for d in detector.detect(small)]
    else:
        detections = detector.detect(photo.rgb8())
    return options.face_filter()(detections, photo.width, photo.height)


def _canvas(photo: Photo, upscale: float, inplace: bool) -> Photo:
    import cv2

    if upscale == 1.0:
        return photo if inplace else Photo(photo.rgb.copy(), None if photo.alpha is None else photo.alpha.copy(), photo.gray)
    size = (max(1, round(photo.width * upscale)), max(1, round(photo.height * upscale)))
    method = cv2.INTER_CUBIC if upscale > 1 else cv2.INTER_AREA
    alpha = None if photo.alpha is None else cv2.resize(photo.alpha, size, interpolation=method)
    return Photo(cv2.resize(photo.rgb, size, interpolation=method), alpha, photo.gray)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.mul(255).round_().clamp_(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()


def restore_photo_array(
    restorer: Any,
    photo: Photo,
    options: PhotoOptions | None = None,
    detector: FaceDetector | None = None,
    parser: nn.Module | None = None,
    inplace: bool = False,
) -> PhotoResult:
    """Restore every kept face of ``photo`` with ``restorer`` (a :class:`bfrzoo.interface.Restorer`).

    ``detector`` defaults to :func:`bfrzoo.face.detect.load_detector` ``("auto")`` on the restorer's device;
    ``parser`` (a ParseNet) switches the paste mask from the feathered square to the parsed face. ``inplace``
    lets the result reuse ``photo``'s arrays when ``upscale`` is 1 (what ``bfrzoo restore`` does: no copy of the
    photo). A photo without a kept face comes back unchanged (resized by ``upscale``).
    """
    from bfrzoo.face.align import warp_faces
    from bfrzoo.interface import restore_batch

    options = options or PhotoOptions()
    out_w, out_h = round(photo.width * options.upscale), round(photo.height * options.upscale)
    if out_w * out_h > options.max_megapixels * 1e6:
        raise ImageInputError(
            f"the output would be {out_w}x{out_h} ({out_w * out_h / 1e6:.1f} MP) with upscale {options.upscale:g}, more "
            f"than the {options.max_megapixels:g} MP allowed (--max-megapixels): lower --upscale or raise the limit"
        )
    detector = detector if detector is not None else cached_detector("auto", restorer.device)
    detections, dropped = detect_faces(photo, detector, options)
    canvas = _canvas(photo, options.upscale, inplace)
    if not detections:
        return PhotoResult(canvas, [], dropped)
    size, s = options.crop_size, options.upscale
    landmarks = np.stack([d.landmarks for d in detections])
    matrices = fit_similarity(torch.from_numpy(landmarks), template(size))  # (B, 2, 3) photo -> crop, float64
    # canvas pixel -> photo pixel for an upscaled canvas (pixel centres): x = (x_c + 0.5) / s - 0.5
    to_photo = torch.tensor([[1 / s, 0, 0.5 / s - 0.5], [0, 1 / s, 0.5 / s - 0.5], [0, 0, 1]], dtype=torch.float64)
    canvas_matrices = (to_3x3(matrices) @ to_photo)[:, :2]
    square = feather_mask(size, options.feather, restorer.device)
    faces: list[Face] = []
    for start in range(0, len(detections), restorer.batch_size):
        batch = slice(start, start + restorer.batch_size)
        with torch.inference_mode():
            crops = warp_faces(photo.rgb, matrices[batch], size, restorer.device, photo.max_value)
            restored = restore_batch(restorer.net, crops, restorer.dtype)
            masks = parsing_mask(parser, restored, options.feather) if parser is not None else square.expand(len(crops), -1, -1, -1)
            paste_faces(canvas.rgb, restored, masks, canvas_matrices[batch], canvas.max_value)
        keep = (_to_uint8(crops), _to_uint8(restored)) if options.keep_crops else ([None] * len(crops), [None] * len(crops))
        for det, m, crop, out in zip(detections[batch], matrices[batch], *keep):
            faces.append(Face(det.box, det.landmarks, det.score, m.numpy(), crop, out))
    return PhotoResult(canvas, faces, dropped)


_DETECTORS: dict[tuple[str, str], FaceDetector] = {}
_PARSERS: dict[tuple[str, str], tuple[nn.Module | None, str]] = {}


def cached_detector(name: str, device: torch.device | str) -> FaceDetector:
    """:func:`load_detector` ``(name)`` on ``device``, built once per process."""
    key = (name, str(device))
    if key not in _DETECTORS:
        _DETECTORS[key] = load_detector(name, device=device)  # type: ignore[arg-type]
    return _DETECTORS[key]


def load_face_parser(spec: str | Path | None, device: torch.device | str = "cpu") -> tuple[nn.Module | None, str]:
    """The parsing network for paste masks and a line saying which mask is used.

    ``spec``: ``None`` / ``"none"`` (feathered mask), ``"auto"`` (facexlib's ``parsing_parsenet.pth`` from the
    cache, or downloaded; when it is not available, the feathered mask and why), or a path (the authors' or
    facexlib's released file, or a ``parser.pt`` of ``bfrzoo fit --recipe parsenet``; a bad path is an error).
    """
    from bfrzoo.registry import from_official
    from bfrzoo.weights import resolve_weights

    if spec is None or str(spec) == "none":
        return None, "feathered mask"
    if str(spec) == "auto":
        try:
            path = resolve_weights(FACEXLIB_PARSENET)
        except WeightsNotFoundError as exc:
            return None, f"feathered mask (no parsing network: {str(exc).split('. ')[0]})"
    else:
        path = resolve_weights(FACEXLIB_PARSENET, spec)
    from bfrzoo.models.parsenet import PARSER_KIND, ParseNet, load_parser_weights
    from bfrzoo.weights import read_checkpoint

    obj = read_checkpoint(path, "parsing network")
    if isinstance(obj, dict) and obj.get("kind") == PARSER_KIND:
        net = load_parser_weights(ParseNet(**dict(obj.get("args", {}))), path)
    else:
        net = from_official("parsenet", obj if isinstance(obj, dict) else path)
    return net.eval().to(device), f"parsing mask ({path})"


def cached_parser(spec: str | Path | None, device: torch.device | str) -> nn.Module | None:
    key = (str(spec), str(device))
    if key not in _PARSERS:
        _PARSERS[key] = load_face_parser(spec, device)
    return _PARSERS[key][0]


def restore_photo(
    restorer: Any,
    image: Any,
    options: PhotoOptions | None = None,
    detector: str | FaceDetector = "auto",
    parser: str | Path | nn.Module | None = "auto",
) -> tuple[Any, list[Face]]:
    """Restore the faces of a whole photo: what :meth:`bfrzoo.interface.Restorer.restore_photo` does.

    Args:
        restorer: a :class:`bfrzoo.interface.Restorer`.
        image: a PIL image, a uint8 / uint16 array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` (RGB order), or a
            float tensor ``(3, H, W)`` in ``[0, 1]``. It is never modified.
        options: :class:`PhotoOptions`.
        detector: ``"auto"``, ``"retinaface"``, ``"mtcnn"`` or a detector object (built once and cached).
        parser: ``"auto"``, ``None``, a weight file or a ParseNet (see :func:`load_face_parser`).

    Returns:
        ``(restored image of the same kind, list of Face)``.
    """
    det = cached_detector(detector, restorer.device) if isinstance(detector, str) else detector
    net = parser if isinstance(parser, nn.Module) else cached_parser(parser, restorer.device)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ImageInputError(f"a photo tensor must be (3, H, W) float in [0, 1], got {tuple(image.shape)} {image.dtype}")
        array = image.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
        result = restore_photo_array(restorer, Photo(array), options, det, net, inplace=True)
        return torch.from_numpy(result.photo.rgb).permute(2, 0, 1).float().div(255).to(image.device), result.faces
    if isinstance(image, np.ndarray):
        result = restore_photo_array(restorer, photo_from_array(image), options, det, net, inplace=True)
        out = photo_to_array(result.photo)
        return (out[..., None] if image.ndim == 3 and image.shape[2] == 1 else out), result.faces
    if hasattr(image, "convert") and hasattr(image, "mode"):
        from PIL import Image as PILImage

        result = restore_photo_array(restorer, photo_from_pil(image), options, det, net, inplace=True)
        return PILImage.fromarray(photo_to_array(result.photo)), result.faces
    raise ImageInputError(
        f"cannot restore a {type(image).__name__} as a photo; give a PIL image, a uint8 array or a (3, H, W) tensor"
    )
