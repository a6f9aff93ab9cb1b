"""Face detection with five landmarks, and the filters that decide which faces are restored.

Two detectors, used as libraries:

* **RetinaFace** (ResNet-50) from facexlib, when its weight file ``detection_Resnet50_Final.pth`` is available
  (an explicit path > the bfrzoo cache > a download; :data:`RETINAFACE_RESNET50`). Only facexlib's network and
  its decoding are used (``facexlib.detection.retinaface``), which import without facexlib's optional
  dependencies (numba, filterpy; those serve its tracking module): ``pip install --no-deps facexlib``.
* **MTCNN** from facenet-pytorch, whose weights ship inside its wheel: the detector that works offline out of
  the box. facenet-pytorch 2.5.3 declares no torch pin (2.6.0 pins ``torch<2.3``; install that one with
  ``--no-deps``); the code is the same.

``"auto"`` picks RetinaFace when its weights resolve and falls back to MTCNN otherwise, saying why
(:attr:`FaceDetector.note`). Both return :class:`Detection` in the pixel coordinates of the image they were given.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch

from bfrzoo.errors import BfrzooError, WeightsNotFoundError
from bfrzoo.weights import PretrainedCfg

DetectorName = Literal["auto", "retinaface", "mtcnn"]
Selection = Literal["all", "largest", "center"]

#: facexlib's RetinaFace ResNet-50 weights (trained by biubug6/Pytorch_Retinaface on WIDER FACE).
RETINAFACE_RESNET50 = PretrainedCfg(
    filename="detection_Resnet50_Final.pth",
    url="https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
    source="facexlib (github.com/xinntao/facexlib, release v0.1.0), RetinaFace of biubug6/Pytorch_Retinaface",
    license="MIT",
)

FACEXLIB_HINT = "pip install --no-deps facexlib  (bfrzoo needs only its RetinaFace network; see docs/restore.md)"
FACENET_HINT = "pip install 'facenet-pytorch>=2.5.3,<2.6'  (or bfrzoo[photos]; never plain 2.6.0, which downgrades torch)"


@dataclass(frozen=True)
class Detection:
    """One detected face.

    Attributes:
        box: ``(4,)`` float ``x0, y0, x1, y1`` in pixels.
        landmarks: ``(5, 2)`` float ``(x, y)``: left eye, right eye, nose tip, left and right mouth corner
            ("left": smaller x in the image).
        score: the detector's confidence in ``[0, 1]``.
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))

    @property
    def frontality(self) -> float:
        """Eye distance over the eye-centre-to-mouth-centre distance: about 0.96 for a frontal face (the template),
        falling towards 0 as the head turns to a profile (the eyes close in on each other)."""
        eyes, mouth = self.landmarks[:2].mean(axis=0), self.landmarks[3:].mean(axis=0)
        return self.eye_distance / max(float(np.linalg.norm(mouth - eyes)), 1e-6)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, 0) * max(y1 - y0, 0))

    def scaled(self, sx: float, sy: float) -> Detection:
        """The detection in an image resized by ``(sx, sy)`` (pixel-centre convention of ``cv2.resize``)."""
        scale, shift = np.array([sx, sy]), 0.5 * np.array([sx, sy]) - 0.5
        box = np.concatenate([self.box[:2] * scale + shift, self.box[2:] * scale + shift])
        return Detection(box, self.landmarks * scale + shift, self.score)


class FaceDetector(Protocol):
    """What the photo pipeline needs of a detector."""

    name: str
    note: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image`` ``(H, W, 3)`` uint8 RGB."""
        ...


class MTCNNDetector:
    """facenet-pytorch's MTCNN (P-, R- and O-Net, weights in the wheel)."""

    name = "mtcnn"

    def __init__(self, device: torch.device | str = "cpu", min_face_size: int = 20, note: str = "") -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise BfrzooError(f"the MTCNN face detector needs facenet-pytorch ({type(exc).__name__}: {exc}); {FACENET_HINT}") from exc
        self.device = torch.device(device)
        self.note = note
        self.net = MTCNN(keep_all=True, device=self.device, min_face_size=min_face_size, post_process=False)

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> list[Detection]:
        boxes, probs, points = self.net.detect(np.ascontiguousarray(image), landmarks=True)
        if boxes is None or len(boxes) == 0:
            return []
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
        probs = np.asarray(probs, dtype=np.float64).reshape(-1)
        return [Detection(b, p, float(s)) for b, p, s in zip(boxes, points, probs)]


class RetinaFaceDetector:
    """facexlib's RetinaFace (ResNet-50) with the released weights."""

    name = "retinaface"

    def __init__(self, weights: str | Path | None = None, device: torch.device | str = "cpu", note: str = "") -> None:
        from bfrzoo.registry import load_state_dict_strict
        from bfrzoo.weights import load_checkpoint, resolve_weights, strip_prefix

        network = _retinaface_class()
        path = resolve_weights(RETINAFACE_RESNET50, weights)
        self.device = torch.device(device)
        self.note = note or f"weights {path}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # facexlib builds torchvision's resnet50 with the old pretrained=False
            self.net = network(network_name="resnet50", half=False, phase="test", device=self.device)
        load_state_dict_strict(self.net, strip_prefix(load_checkpoint(path, "RetinaFace weights")), source=str(path))
        self.net.eval()

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> list[Detection]:
        bgr = np.ascontiguousarray(image[..., ::-1])
        dets = self.net.detect_faces(bgr, conf_threshold=0.5, nms_threshold=0.4, use_origin_size=True)
        return [Detection(np.asarray(d[:4], np.float64), np.asarray(d[5:15], np.float64).reshape(5, 2), float(d[4])) for d in dets]


def _retinaface_class() -> type:
    try:
        from facexlib.detection.retinaface import RetinaFace
    except ImportError as exc:
        raise BfrzooError(f"the RetinaFace detector needs facexlib ({type(exc).__name__}: {exc}); {FACEXLIB_HINT}") from exc
    return RetinaFace


def load_detector(
    name: DetectorName = "auto", weights: str | Path | None = None, device: torch.device | str = "cpu"
) -> FaceDetector:
    """A face detector by name.

    ``"retinaface"``: facexlib's RetinaFace; its weights resolve as every weight file does (``weights`` > cache >
    download) and a missing file, or a missing facexlib, is one clear error. ``"mtcnn"``: facenet-pytorch's MTCNN.
    ``"auto"``: RetinaFace when facexlib imports and its weights resolve, else MTCNN; the detector's ``note``
    says why. An explicit ``weights`` path that does not exist is an error in every mode.
    """
    if name not in ("auto", "retinaface", "mtcnn"):
        raise BfrzooError(f"unknown face detector {name!r}; use auto, retinaface or mtcnn")
    if name == "mtcnn":
        return MTCNNDetector(device)
    if name == "retinaface" or weights is not None:
        return RetinaFaceDetector(weights, device)
    try:
        return RetinaFaceDetector(None, device)
    except (WeightsNotFoundError, BfrzooError) as exc:
        why = str(exc).split(". ")[0] if isinstance(exc, WeightsNotFoundError) else str(exc).split(";")[0]
        return MTCNNDetector(device, note=f"RetinaFace not used: {why}")


@dataclass
class FaceFilter:
    """Which detected faces are restored.

    Attributes:
        min_score: detections below this confidence are dropped.
        min_eye_distance: faces whose eye distance (in photo pixels) is below this are too small to restore.
        min_frontality: faces with :attr:`Detection.frontality` below this are profiles (0 keeps every face).
        select: ``"all"``, the ``"largest"`` face, or the face nearest the ``"center"`` of the photo.
    """

    min_score: float = 0.9
    min_eye_distance: float = 8.0
    min_frontality: float = 0.35
    select: Selection = "all"

    def __call__(self, detections: list[Detection], width: int, height: int) -> tuple[list[Detection], dict[str, int]]:
        """``(kept, {reason: count})``; kept faces in reading order (top to bottom, then left to right)."""
        if self.select not in ("all", "largest", "center"):
            raise BfrzooError(f"unknown face selection {self.select!r}; use all, largest or center")
        dropped: dict[str, int] = {}

        def drop(reason: str) -> None:
            dropped[reason] = dropped.get(reason, 0) + 1

        kept = []
        for det in detections:
            if det.score < self.min_score:
                drop(f"low confidence (< {self.min_score:g})")
            elif det.eye_distance < self.min_eye_distance:
                drop(f"too small (eye distance < {self.min_eye_distance:g} px)")
            elif det.frontality < self.min_frontality:
                drop("profile")
            else:
                kept.append(det)
        if self.select != "all" and len(kept) > 1:
            if self.select == "largest":
                best = max(kept, key=lambda d: d.area)
            else:
                centre = np.array([(width - 1) / 2, (height - 1) / 2])
                best = min(kept, key=lambda d: float(np.linalg.norm(d.landmarks.mean(axis=0) - centre)))
            dropped[f"not the {self.select} face"] = len(kept) - 1
            kept = [best]
        kept.sort(key=lambda d: (round(float(d.box[1]) / 32), float(d.box[0])))
        return kept, dropped
