"""NIQE against the reference values of tests/fixtures/niqe_reference.json, its batching and edge cases; and
PSNR / SSIM against scikit-image on real face photographs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import bfrzoo.metrics as M
from bfrzoo.errors import ImageInputError
from bfrzoo.metrics.niqe import aggd_fit

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "bfrzoo" / "assets" / "sample"
REFERENCE = json.loads((REPO / "tests" / "fixtures" / "niqe_reference.json").read_text())["values"]
NOISY_KEY = "skimage.data.astronaut + N(0,20) noise, numpy default_rng(0), clipped to uint8"


def _tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float64 in [0, 1]."""
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].double() / 255.0


def _reference_images() -> dict[str, np.ndarray]:
    astronaut = skimage.data.astronaut()
    noise = np.random.default_rng(0).normal(0.0, 20.0, astronaut.shape)
    images = {
        "skimage.data.astronaut": astronaut,
        NOISY_KEY: np.clip(astronaut.astype(np.float64) + noise, 0, 255).astype(np.uint8),
    }
    for key in REFERENCE:
        if key.startswith("faces512/"):
            images[key] = np.asarray(Image.open(SAMPLE / key).convert("RGB"))
    return images


@pytest.fixture(scope="module")
def reference_images() -> dict[str, np.ndarray]:
    images = _reference_images()
    assert set(images) == set(REFERENCE)
    return images


@pytest.fixture(scope="module")
def per_image(reference_images: dict[str, np.ndarray]) -> dict[str, float]:
    return {key: float(M.niqe(_tensor(img))[0]) for key, img in reference_images.items()}


def test_niqe_reproduces_the_reference_values(per_image: dict[str, float]) -> None:
    worst = max(abs(per_image[key] - ref) / ref for key, ref in REFERENCE.items())
    assert worst < 0.005  # measured: 1.4e-4


def test_niqe_batched_equals_per_image(reference_images: dict[str, np.ndarray], per_image: dict[str, float]) -> None:
    batch = torch.cat([_tensor(img) for img in reference_images.values()])
    together = M.niqe(batch)
    alone = torch.tensor([per_image[key] for key in reference_images], dtype=torch.float64)
    assert torch.allclose(together, alone, rtol=1e-10, atol=0)


def test_niqe_metric_averages_over_batches_and_ignores_target(reference_images: dict[str, np.ndarray]) -> None:
    batch = torch.cat([_tensor(img) for img in list(reference_images.values())[2:5]]).float()
    metric = M.NIQE()
    assert metric.higher_is_better is False and metric.full_state_update is False
    metric.update(batch[:1], None)
    metric.update(batch[1:], batch[1:])  # the target of a suite is ignored
    assert float(metric.compute()) == pytest.approx(float(M.niqe(batch).mean()), rel=1e-12)


def test_niqe_noise_is_worse_and_float64_moments_differ_only_slightly(reference_images: dict[str, np.ndarray]) -> None:
    clean = _tensor(reference_images["skimage.data.astronaut"])
    noisy = _tensor(reference_images[NOISY_KEY])
    assert float(M.niqe(noisy)) > 2 * float(M.niqe(clean))
    exact = float(M.niqe(clean, moments_dtype=torch.float64))
    assert 0 < abs(exact - float(M.niqe(clean))) / exact < 0.03


def test_niqe_rejects_images_smaller_than_one_block() -> None:
    with pytest.raises(ImageInputError, match="96x96"):
        M.niqe(torch.rand(1, 3, 95, 200))
    assert torch.isfinite(M.niqe(torch.rand(2, 3, 96, 100))).all()  # one block: zero covariance, as MATLAB's cov


def test_niqe_flat_blocks_are_left_out_like_the_reference(reference_images: dict[str, np.ndarray]) -> None:
    img = reference_images["skimage.data.astronaut"].copy()
    img[:96, :96] = 128  # one constant block: no negative/positive MSCN coefficients -> NaN scales
    value = float(M.niqe(_tensor(img)))
    assert np.isfinite(value) and value != pytest.approx(REFERENCE["skimage.data.astronaut"], rel=1e-3)
    assert torch.isnan(M.niqe(torch.full((1, 3, 192, 192), 0.5))).all()  # every block NaN -> NaN


def test_aggd_fit_recovers_known_shapes() -> None:
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(4, 200_000, generator=g, dtype=torch.float64)
    alpha, bl, br = aggd_fit(gauss)
    assert torch.allclose(alpha, torch.full_like(alpha, 2.0), atol=0.03)
    assert torch.allclose(bl, torch.full_like(bl, 2**0.5), atol=0.02)  # AGGD scale of N(0,1) is sqrt(2)
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((2, 200_000)).double()
    assert torch.allclose(aggd_fit(laplace)[0], torch.ones(2, dtype=torch.float64), atol=0.03)
    alpha, bl, br = aggd_fit(torch.rand(1, 100, dtype=torch.float64) + 0.1)  # no negative samples
    assert float(alpha) == pytest.approx(0.2) and torch.isnan(bl).all() and torch.isfinite(br).all()


def test_psnr_ssim_equal_skimage_on_real_faces() -> None:
    paths = sorted((SAMPLE / "faces512" / "images").glob("*.jpg"))[:4]
    faces = torch.cat([_tensor(np.asarray(Image.open(p).convert("RGB").resize((192, 192), Image.BICUBIC))) for p in paths])
    g = torch.Generator().manual_seed(0)
    noisy = (faces + 0.04 * torch.randn(faces.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    preds, target = torch.cat([noisy[:2], faces[2:]]), torch.cat([faces[:2], faces[:2]])  # noise; other faces
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    worst_db, worst_ssim = 0.0, 0.0
    ours = {n: getattr(M, n)(preds, target) for n in ("psnr", "psnr_y", "ssim", "ssim_y")}
    for i in range(4):
        p, t = preds[i].permute(1, 2, 0).numpy(), target[i].permute(1, 2, 0).numpy()
        yp, yt = rgb2ycbcr(p)[..., 0], rgb2ycbcr(t)[..., 0]
        worst_db = max(worst_db, abs(float(ours["psnr"][i]) - peak_signal_noise_ratio(t, p, data_range=1)),
                       abs(float(ours["psnr_y"][i]) - peak_signal_noise_ratio(yt, yp, data_range=255)))
        worst_ssim = max(worst_ssim,
                         abs(float(ours["ssim"][i]) - structural_similarity(t, p, channel_axis=-1, data_range=1, **kw)),
                         abs(float(ours["ssim_y"][i]) - structural_similarity(yt, yp, data_range=255, **kw)))
    assert worst_db <= 1e-4 and worst_ssim <= 1e-4
    assert 0.05 < float(ours["ssim"][3]) < 0.9  # a different face: far from identical
