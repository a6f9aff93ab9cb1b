"""The whole-photo pipeline's pieces: the similarity fit, warps in and out of the crop, paste-back blending, the face
filters, the detectors, photo reading (EXIF, grayscale, alpha, 16 bit), and the one-torch-one-OpenCV install."""
from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from bfrzoo.errors import ImageInputError, WeightsNotFoundError
from bfrzoo.face.align import fit_similarity, template, to_3x3, warp_faces
from bfrzoo.face.detect import Detection, FaceFilter, load_detector
from bfrzoo.face.paste import feather_mask, paste_faces
from bfrzoo.photo_io import orient, read_header, read_photo, write_photo

REPO = Path(__file__).resolve().parents[1]


def _random_similarity(rng: np.random.Generator) -> np.ndarray:
    angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 5.0)
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, rng.uniform(-300, 300)], [s, c, rng.uniform(-300, 300)]])


# --------------------------------------------------------------------------------------------- alignment
def test_similarity_fit_equals_scikit_image_on_random_point_sets() -> None:
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(0)
    src = rng.uniform(0, 1000, size=(32, 5, 2))
    dst = np.stack([(to_3x3(torch.from_numpy(_random_similarity(rng)))[:2, :2].numpy() @ p.T).T + rng.normal(0, 3, (5, 2)) for p in src])
    ours = fit_similarity(torch.from_numpy(src), torch.from_numpy(dst)).numpy()
    for i in range(len(src)):
        ref = SimilarityTransform.from_estimate(src[i], dst[i]) if hasattr(SimilarityTransform, "from_estimate") else None
        if ref is None:
            ref = SimilarityTransform()
            assert ref.estimate(src[i], dst[i])
        np.testing.assert_allclose(ours[i], ref.params[:2], rtol=1e-9, atol=1e-7)
    # exact similarities are recovered exactly, and the fit onto the template maps the template onto itself
    m = _random_similarity(rng)
    exact = src[0] @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(fit_similarity(src[0], exact).numpy(), m, atol=1e-8)
    np.testing.assert_allclose(fit_similarity(template(512), template(512)).numpy(), np.eye(2, 3), atol=1e-12)
    np.testing.assert_allclose(template(256).numpy(), template(512).numpy() / 2)


def _blob_image(points: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width))
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def _centroids(gray: np.ndarray, points: np.ndarray, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : gray.shape[0], 0 : gray.shape[1]].astype(np.float64)
    found = []
    for x, y in points:
        w = gray.astype(np.float64) * (((xx - x) ** 2 + (yy - y) ** 2) < radius**2)
        found.append([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])
    return np.array(found)


@pytest.mark.parametrize("upscale", [1.0, 2.0])
def test_warp_then_inverse_warp_of_a_synthetic_face_lands_within_1px(upscale: float) -> None:
    """Five bright dots at a tilted, scaled face's landmarks: in the aligned crop they sit on the template, and the
    restored crop pasted back lands each dot where it came from (in an upscaled canvas too)."""
    size = 256
    m_true = np.array([[0.45 * np.cos(0.3), -0.45 * np.sin(0.3), 80.0], [0.45 * np.sin(0.3), 0.45 * np.cos(0.3), 40.0]])
    tpl = template(size).numpy()
    inv = np.linalg.inv(to_3x3(torch.from_numpy(m_true)).numpy())
    landmarks = tpl @ inv[:2, :2].T + inv[:2, 2]  # where the face's landmarks are in the photo
    photo = np.repeat(_blob_image(landmarks, 420, 520, sigma=2.5)[..., None], 3, axis=2)
    matrices = fit_similarity(torch.from_numpy(landmarks[None]), template(size))
    crop = warp_faces(photo, matrices, size)[0]
    crop_gray = (crop[0].numpy() * 255)
    assert np.abs(_centroids(crop_gray, tpl, 12) - tpl).max() < 1.0
    canvas = np.zeros((round(420 * upscale), round(520 * upscale), 3), np.uint8)
    s = upscale
    to_photo = torch.tensor([[1 / s, 0, 0.5 / s - 0.5], [0, 1 / s, 0.5 / s - 0.5], [0, 0, 1]], dtype=torch.float64)
    paste_faces(canvas, crop[None], torch.ones(1, 1, size, size), (to_3x3(matrices) @ to_photo)[:, :2])
    expected = (landmarks + 0.5) * s - 0.5
    assert np.abs(_centroids(canvas[..., 0], expected, 6 * s) - expected).max() < 1.0


def test_warp_faces_matches_cv2_warp_affine_and_reads_only_the_face_region() -> None:
    import cv2

    rng = np.random.default_rng(1)
    photo = (rng.random((300, 400, 3)) * 255).astype(np.uint8)
    photo = cv2.GaussianBlur(photo, (0, 0), 2)  # smooth, so that bilinear sampling differences stay tiny
    landmarks = template(512).numpy() * 0.3 + np.array([120.0, 60.0])  # a face of ~40 px eye distance
    matrices = fit_similarity(torch.from_numpy(landmarks[None]), template(512))
    ours = warp_faces(photo, matrices, 512)[0].permute(1, 2, 0).numpy()
    ref = cv2.warpAffine(photo.astype(np.float32) / 255, matrices[0].numpy().astype(np.float32), (512, 512),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(ours - ref)[8:-8, 8:-8].max() < 2e-3
    # a 16-bit photo gives the same crop
    ours16 = warp_faces(photo.astype(np.uint16) * 257, matrices, 512, max_value=65535.0)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours16 - ours).max() < 1e-5


def test_paste_back_blends_1_inside_0_outside_and_smoothly_between() -> None:
    size = 64
    mask = feather_mask(size, feather=0.25)
    assert mask[0, 0, 32, 32] == 1 and mask[0, 0, 0, 32] == 0 and mask[0, 0, 32, 63] == 0
    canvas = np.zeros((200, 200, 3), np.uint8)
    shift = torch.tensor([[[1.0, 0.0, -50.0], [0.0, 1.0, -70.0]]], dtype=torch.float64)  # canvas -> crop
    paste_faces(canvas, torch.ones(1, 3, size, size), mask, shift)
    row = canvas[70 + 32, :, 0].astype(int)
    assert (row[:50] == 0).all() and (row[50 + size :] == 0).all(), "outside the face: the photo is kept"
    assert (row[50 + 16 : 50 + 48] == 255).all(), "inside the mask: the restored face"
    ramp = row[50 : 50 + 17]
    assert ramp[0] == 0 and (np.diff(ramp) >= 0).all() and ((ramp > 0) & (ramp < 255)).sum() >= 10, "a smooth ramp"
    # strips of any height blend the same (to the 8-bit rounding of kornia's coordinate normalisation)
    strips = np.zeros_like(canvas)
    paste_faces(strips, torch.ones(1, 3, size, size), mask, shift, strip_pixels=300)
    assert np.abs(strips.astype(int) - canvas).max() <= 1


# ------------------------------------------------------------------------------------------ detection
def _det(eye_dist: float, frontal: float = 0.96, score: float = 0.99, at: tuple[float, float] = (100, 100)) -> Detection:
    x, y = at
    mouth = eye_dist / frontal
    lm = np.array([[x - eye_dist / 2, y], [x + eye_dist / 2, y], [x, y + mouth / 2], [x - eye_dist / 3, y + mouth],
                   [x + eye_dist / 3, y + mouth]])
    box = np.array([x - eye_dist, y - eye_dist, x + eye_dist, y + 2 * mouth])
    return Detection(box, lm, score)


def test_face_filter_drops_tiny_profile_and_unsure_faces_and_selects() -> None:
    faces = [_det(40, at=(100, 100)), _det(4), _det(40, frontal=0.2), _det(40, score=0.5), _det(80, at=(500, 300))]
    kept, dropped = FaceFilter(min_eye_distance=8)(faces, 1000, 600)
    assert [round(d.eye_distance) for d in kept] == [40, 80]
    assert dropped == {"too small (eye distance < 8 px)": 1, "profile": 1, "low confidence (< 0.9)": 1}
    largest, why = FaceFilter(select="largest")(faces, 1000, 600)
    assert [round(d.eye_distance) for d in largest] == [80] and why["not the largest face"] == 1
    centre, _ = FaceFilter(select="center")(faces, 1000, 600)
    assert [round(d.eye_distance) for d in centre] == [80]
    assert len(FaceFilter(min_frontality=0.0)(faces, 1000, 600)[0]) == 3


def test_mtcnn_finds_the_sample_faces_with_landmarks_inside_their_boxes() -> None:
    pytest.importorskip("facenet_pytorch")
    from bfrzoo.io import sample_root

    detector = load_detector("mtcnn")
    photo = read_photo(sample_root("whole") / "psfrgan_test_hzgg.jpg")
    found = detector.detect(photo.rgb)
    kept, _ = FaceFilter()(found, photo.width, photo.height)
    assert len(kept) == 3
    for d in kept:
        x0, y0, x1, y1 = d.box
        assert ((d.landmarks[:, 0] > x0) & (d.landmarks[:, 0] < x1) & (d.landmarks[:, 1] > y0) & (d.landmarks[:, 1] < y1)).all()
        assert d.landmarks[0, 0] < d.landmarks[1, 0] and d.landmarks[2, 1] < d.landmarks[3, 1], "eyes, nose, mouth order"


def test_retinaface_resolves_its_weights_and_auto_falls_back_to_mtcnn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No RetinaFace weights (offline, empty cache): 'retinaface' is one error naming the file, 'auto' falls back to
    MTCNN and says why; with a weight file in the cache (random weights of facexlib's architecture), 'auto' uses
    RetinaFace and its detect runs end to end."""
    pytest.importorskip("facexlib.detection.retinaface")
    pytest.importorskip("facenet_pytorch")
    monkeypatch.setenv("BFRZOO_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="detection_Resnet50_Final.pth"):
        load_detector("retinaface")
    auto = load_detector("auto")
    assert auto.name == "mtcnn" and "detection_Resnet50_Final.pth" in auto.note
    with pytest.raises(WeightsNotFoundError, match="no_such.pth"):
        load_detector("auto", weights=tmp_path / "no_such.pth")
    import warnings

    from facexlib.detection.retinaface import RetinaFace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        net = RetinaFace(network_name="resnet50", device="cpu")
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "detection_Resnet50_Final.pth")
    detector = load_detector("auto")
    assert detector.name == "retinaface"
    dets = detector.detect(np.zeros((96, 128, 3), np.uint8))
    assert isinstance(dets, list) and all(d.landmarks.shape == (5, 2) for d in dets)


# ------------------------------------------------------------------------------------------- photo I/O
@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_photo_applies_the_exif_orientation(orientation: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(orientation)
    img = Image.fromarray((rng.random((12, 20, 3)) * 255).astype(np.uint8))
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    img.save(path, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    photo = read_photo(path)
    assert np.array_equal(photo.rgb, expected)
    assert (read_header(path).width, read_header(path).height) == (expected.shape[1], expected.shape[0])
    assert np.array_equal(orient(np.asarray(img), orientation), expected)


def test_grayscale_rgba_and_16bit_photos_round_trip_in_kind(tmp_path: Path) -> None:
    import cv2

    rng = np.random.default_rng(0)
    gray = (rng.random((20, 30)) * 255).astype(np.uint8)
    rgba = (rng.random((20, 30, 4)) * 255).astype(np.uint8)
    gray16 = (rng.random((20, 30)) * 65535).astype(np.uint16)
    rgb16 = (rng.random((20, 30, 3)) * 65535).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    cv2.imwrite(str(tmp_path / "rgb16.tif"), rgb16[..., ::-1])
    p = read_photo(tmp_path / "gray.png")
    assert p.gray and p.alpha is None and p.rgb.dtype == np.uint8 and np.array_equal(p.rgb[..., 1], gray)
    p = read_photo(tmp_path / "rgba.png")
    assert not p.gray and np.array_equal(p.alpha, rgba[..., 3]) and np.array_equal(p.rgb, rgba[..., :3])
    p = read_photo(tmp_path / "gray16.png")
    assert p.gray and p.rgb.dtype == np.uint16 and np.array_equal(p.rgb[..., 0], gray16)
    p16 = read_photo(tmp_path / "rgb16.tif")
    assert p16.rgb.dtype == np.uint16 and np.array_equal(p16.rgb, rgb16)
    for name, photo in {"gray": read_photo(tmp_path / "gray.png"), "rgba": read_photo(tmp_path / "rgba.png"),
                        "gray16": read_photo(tmp_path / "gray16.png"), "rgb16": p16}.items():
        write_photo(photo, tmp_path / f"out_{name}.png")
        back = read_photo(tmp_path / f"out_{name}.png")
        assert back.gray == photo.gray and back.rgb.dtype == photo.rgb.dtype and np.array_equal(back.rgb, photo.rgb), name
        assert (back.alpha is None) == (photo.alpha is None)
    with pytest.raises(ImageInputError, match="JPEG cannot hold"):
        write_photo(read_photo(tmp_path / "rgba.png"), tmp_path / "x.jpg")


def test_huge_and_broken_files_are_refused_from_the_header(tmp_path: Path) -> None:
    Image.new("L", (4000, 3000)).save(tmp_path / "big.png")
    with pytest.raises(ImageInputError, match=r"4000x3000 \(12 MP\), more than the 10 MP"):
        read_header(tmp_path / "big.png", max_megapixels=10)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(ImageInputError, match="broken.jpg"):
        read_photo(tmp_path / "broken.jpg")
    good = tmp_path / "good.jpg"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(good)
    (tmp_path / "truncated.jpg").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ImageInputError, match="truncated.jpg"):
        read_photo(tmp_path / "truncated.jpg")


# --------------------------------------------------------------------------------------------- install
def _dist_names() -> dict[str, list[md.Distribution]]:
    found: dict[str, list[md.Distribution]] = {}
    for dist in md.distributions():
        name = re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "").lower())
        found.setdefault(name, []).append(dist)
    return found


def test_one_torch_and_one_opencv_installed_and_the_photos_extra_keeps_it_so() -> None:
    """The face tools never add a second OpenCV or move torch: exactly one OpenCV distribution (the headless one
    bfrzoo depends on), one torch inside bfrzoo's pin, and nothing in the ``photos`` extra whose own requirements
    exclude the installed torch / torchvision or name another OpenCV."""
    from packaging.requirements import Requirement

    dists = _dist_names()
    opencv = sorted(n for n in dists if n.startswith("opencv-"))
    assert opencv == ["opencv-python-headless"], opencv
    assert len({str(d._path) for d in dists["torch"]}) == 1  # type: ignore[attr-defined]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    installed = {n: md.version(n) for n in ("torch", "torchvision")}
    for req in map(Requirement, project["dependencies"]):
        if req.name in installed:
            assert req.specifier.contains(installed[req.name]), (req, installed)
    photos = [Requirement(r) for r in project["optional-dependencies"]["photos"]]
    assert all(r.name not in ("facexlib", "opencv-python") for r in photos), "facexlib is installed with --no-deps"
    for req in photos:
        if req.name not in dists:
            continue
        for sub in map(Requirement, md.requires(req.name) or []):
            if sub.marker is not None and not sub.marker.evaluate({"extra": ""}):
                continue
            assert not (sub.name.startswith("opencv-") and sub.name != "opencv-python-headless"), (req.name, sub)
            if sub.name in installed:
                assert sub.specifier.contains(installed[sub.name]), f"{req.name} wants {sub}, installed {installed[sub.name]}"
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert re.search(r"pip install .*--no-deps .*facexlib", setup), "setup.sh installs facexlib without its deps"


def test_parsing_mask_keeps_the_face_classes_and_the_parser_resolves_like_every_weight_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bfrzoo.face.paste import FACE_CLASSES, parsing_mask
    from bfrzoo.face.photo import load_face_parser
    from bfrzoo.interface import PARSING_CLASSES
    from bfrzoo.models.parsenet import ParseNet

    monkeypatch.setenv("BFRZOO_HOME", str(tmp_path))
    parser, note = load_face_parser("auto")
    assert parser is None and "feathered mask" in note and "parsing_parsenet.pth" in note
    assert load_face_parser("none") == (None, "feathered mask")
    with pytest.raises(WeightsNotFoundError, match="missing.pth"):
        load_face_parser(tmp_path / "missing.pth")

    class Labels(torch.nn.Module):
        """A 'parser' whose logits put skin (a face class) in the centre square and hair around it."""

        in_size = 64

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = torch.zeros(x.shape[0], len(PARSING_CLASSES), 64, 64)
            logits[:, PARSING_CLASSES.index("hair")] = 1.0
            logits[:, PARSING_CLASSES.index("skin"), 16:48, 16:48] = 2.0
            return logits, x

    assert "skin" in FACE_CLASSES and "hair" not in FACE_CLASSES
    mask = parsing_mask(Labels(), torch.rand(2, 3, 128, 128))
    assert mask.shape == (2, 1, 128, 128) and mask[:, :, 64, 64].min() > 0.95 and mask[:, :, 8, 8].max() < 0.01
    # the zoo's ParseNet itself (tiny, random weights): the mask runs end to end and stays in [0, 1]
    tiny = ParseNet(in_size=64, out_size=64, min_feat_size=16, base_ch=8, res_depth=1, ch_range=(8, 16)).eval()
    soft = parsing_mask(tiny, torch.rand(1, 3, 96, 96))
    assert soft.shape == (1, 1, 96, 96) and 0 <= soft.min() and soft.max() <= 1
