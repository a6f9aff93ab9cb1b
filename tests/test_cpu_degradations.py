"""The OpenCV executor: same parameters as the torch executor, same blur and borders, libjpeg JPEG, statistics of
the LQ against the torch path, worker seeding (DataModule and albumentations) and determinism."""
from __future__ import annotations

import dataclasses
import io
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import bfrzoo
from bfrzoo.data import PRESETS, DegradationPreset, Degrader, FaceDataModule, get_preset
from bfrzoo.data.cpu_degradations import (
    apply_params,
    blur,
    degrade_image,
    degrade_tensor,
    degraded_lq,
    image_seeds,
    jpeg_libjpeg,
    noise_seed,
    resize,
    sample_image,
    to_uint8,
)
from bfrzoo.data.degradations import _blur, sample_params, stable_seed
from bfrzoo.io import list_images, read_image

SAMPLE = Path(bfrzoo.__file__).parent / "assets" / "sample" / "faces512" / "images"


def _faces(size: int, n: int | None = None) -> torch.Tensor:
    files = list_images(SAMPLE)[:n]
    x = torch.stack([read_image(p) for p in files])
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)


def _hwc(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of ``(N, 3, H, W)`` batches in ``[0, 1]``."""
    return 10 * torch.log10(1 / ((a - b) ** 2).mean((1, 2, 3)).clamp_min(1e-12))


def _params_equal(a, b) -> bool:
    return all(torch.equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))


# ------------------------------------------------------------------------------------------ one sampler
def _torch_drawn(x: torch.Tensor, preset: str | DegradationPreset, seeds: list[int]) -> torch.Tensor:
    """The OpenCV executor on the torch evaluation path's own draws: per image the generator seeded with the
    image's seed draws the parameters and then the noise, as ``Degrader(preset)(x, seeds=seeds)`` does."""
    out = []
    for img, seed in zip(x, seeds):
        g = torch.Generator().manual_seed(seed)
        params = sample_params(get_preset(preset), 1, img.shape[1], img.shape[2], g)
        noise = torch.randn(1, 3, int(params.lq_height), int(params.lq_width), generator=g)[0]
        lq = apply_params(_hwc(img), params, _hwc(noise), preset)
        out.append(torch.from_numpy(lq).permute(2, 0, 1))
    return torch.stack(out)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_both_executors_draw_the_same_parameters(preset: str) -> None:
    """For one seed the OpenCV executor gets exactly the DegradationParams of the torch evaluation path; its
    noise is OpenCV's standard normal, seeded per image (reproducible with cv2.setRNGSeed + cv2.randn)."""
    for seed in (0, 1, 12345, stable_seed(3, "face_07")):
        params, noise = sample_image(preset, 96, 80, seed)
        ref = sample_params(get_preset(preset), 1, 96, 80, torch.Generator().manual_seed(seed))
        assert _params_equal(params, ref)
        assert noise.shape == (int(ref.lq_height), int(ref.lq_width), 3) and noise.dtype == np.float32
        again = np.empty_like(noise)
        cv2.setRNGSeed(noise_seed(seed))
        cv2.randn(again, (0.0,) * 3, (1.0,) * 3)
        assert np.array_equal(noise, again) and np.array_equal(noise, sample_image(preset, 96, 80, seed)[1])
    other = sample_image(preset, 96, 80, 2)[0]
    assert not _params_equal(other, sample_image(preset, 96, 80, 1)[0])
    full_size = dataclasses.replace(get_preset(preset), name="s1", scale=(1.0, 1.0), scale_sampling="factor")
    big = sample_image(full_size, 256, 256, 5)[1]  # standard normal per channel (4 standard errors)
    assert big.shape == (256, 256, 3)
    assert np.abs(big.mean((0, 1))).max() < 0.01 and np.abs(big.std((0, 1)) - 1).max() < 0.01


@pytest.mark.parametrize("kind", ("gaussian", "aniso_gaussian", "average", "median", "motion"))
def test_blur_matches_torch_executor_including_borders(kind: str) -> None:
    """Kernels, per-image sizes and borders mirror the torch executor's ``_blur``: equal to float rounding (the
    median to half a grey level: OpenCV's runs on the image rounded to 8 bit). 32 px with PSFR-GAN's kernels up
    to 91 px exercises the edge-replication fallback, 64 / 96 px reflect-101."""
    preset = dataclasses.replace(get_preset("psfrgan"), name="one_kind", blur_kinds=(kind,))
    tol = 0.5 / 255 + 1e-6 if kind == "median" else 2e-6
    for size in (32, 64, 96):
        hq = _faces(size, 3)
        for i in range(3):
            for seed in (i, 10 + i):
                params, _ = sample_image(preset, size, size, seed)
                ref = _blur(hq[i : i + 1], params, preset)[0].permute(1, 2, 0).numpy()
                assert np.abs(blur(_hwc(hq[i]), params, preset) - ref).max() <= tol


def test_median_blur_equals_scipy_reference() -> None:
    """cv2.medianBlur on uint8 (what the median kind runs) is the exact median with edge replication."""
    from scipy.ndimage import median_filter

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8), to_uint8(_hwc(_faces(48, 1)[0]))]
    preset = dataclasses.replace(get_preset("mpcnet"), name="median", blur_kinds=("median",))
    for img in images:
        for k in (3, 5, 7, 11, 15):
            ref = np.stack([median_filter(img[..., c], size=k, mode="nearest") for c in range(3)], -1)
            assert np.array_equal(cv2.medianBlur(img, k), ref)
            params, _ = sample_image(preset, *img.shape[:2], 0)
            params.box_size[:] = k
            assert np.array_equal(to_uint8(blur(img, params, preset)), ref)


def test_resize_is_area_down_and_half_pixel_bilinear_up() -> None:
    """Down: exact area averaging (an integer factor is a block mean); up: bilinear with half-pixel centres and
    clamped edges, the torch executor's upsampling; same size: no-op."""
    x = np.random.default_rng(1).random((16, 24, 3), dtype=np.float32)
    assert np.allclose(resize(x, 4, 6), x.reshape(4, 4, 6, 4, 3).mean((1, 3)), atol=1e-6)
    up = resize(x, 40, 60)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(2, 0, 1)[None], size=(40, 60), mode="bilinear", align_corners=False)
    assert np.allclose(up, ref[0].permute(1, 2, 0).numpy(), atol=1e-5)
    assert resize(x, 16, 24) is x
    assert resize(x, 8, 48).shape == (8, 48, 3)  # one axis down, the other up
    rng = np.random.default_rng(2)  # enlarging never overshoots 1 (the executor does not clamp after it)
    for _ in range(300):
        h, w = rng.integers(2, 120, 2)
        lq = rng.random((h, w), dtype=np.float32)
        lq[rng.random((h, w)) < rng.random()] = 1.0
        big = cv2.resize(lq, (int(rng.integers(w, 400)), int(rng.integers(h, 400))), interpolation=cv2.INTER_LINEAR)
        assert float(big.max()) <= 1.0


# ------------------------------------------------------------------------------------------ libjpeg
def test_libjpeg_equals_pil_and_torchvision_bit_for_bit() -> None:
    """OpenCV's, PIL's and torchvision's JPEG are the same libjpeg baseline path: 4:2:0 by default in all three,
    the same IJG tables and integer DCT, so the decoded pixels are identical (so is the byte count)."""
    from PIL import Image
    from torchvision.io import decode_jpeg, encode_jpeg

    face = to_uint8(_hwc(_faces(64, 1)[0]))
    odd = np.ascontiguousarray(to_uint8(_hwc(read_image(list_images(SAMPLE)[1])))[:37, :53])
    for img in (face, odd):
        for q in (5, 35, 60, 90, 100):
            ours = jpeg_libjpeg(img, q)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=q)
            pil = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            tv = decode_jpeg(encode_jpeg(torch.from_numpy(img).permute(2, 0, 1).contiguous(), quality=q))
            assert np.array_equal(ours, pil) and np.array_equal(ours, tv.permute(1, 2, 0).numpy())
            assert not np.array_equal(ours, img)


def test_cpu_path_jpeg_step_is_pils() -> None:
    """Inside the pipeline: blur, area-resize, noise, 8-bit rounding, then PIL's JPEG gives the executor's LQ."""
    from PIL import Image

    preset = get_preset("psfrgan")
    img = _hwc(_faces(128, 1)[0])
    for seed in (3, 4):
        params, noise = sample_image(preset, 128, 128, seed)
        h, w = int(params.lq_height), int(params.lq_width)
        pre = resize(blur(img, params, preset), h, w) + noise * float(params.noise_sigma / 255)
        buf = io.BytesIO()
        Image.fromarray(to_uint8(pre)).save(buf, format="JPEG", quality=int(params.quality))
        pil = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        assert np.array_equal(to_uint8(degraded_lq(img, params, noise, preset)), pil)


# ------------------------------------------------------------------------------------------ statistics
# The statistical check, per preset: 160 draws at 96 px (every sample face twice, each with its own seed).
# Measured (the OpenCV executor with its own noise minus the torch executor, mean of per-image PSNR to HQ):
# common +0.16, gpen +0.19, mmrb +0.12, mpcnet +0.29, psfrgan +0.18 dB (sd of the per-image differences
# 0.19-0.34 dB, so the standard error of each mean is <= 0.03 dB). The sign and size are the downsampling
# filters: INTER_AREA (a box as wide as the scale) keeps more detail than the torch path's antialiased bilinear
# (a triangle twice as wide); with the exact triangle in the OpenCV path the gap was <= 0.01 dB (measured at
# 128 px), so libjpeg vs float JPEG, the 8-bit median, float order and the other noise samples do not move the
# mean. The band [-0.05, +0.4] dB holds that filter gap with 0.1 dB to spare and is ~1/6 of a preset's
# per-image PSNR spread (sd 1.7-2.6 dB). The mean PSNR alone is a blunt statistic (a 20 % error in a blur
# sigma, noise level or scale moves it by 0.05-0.5 dB), so the test also bounds the paired PSNR between the
# two executors run on the same draws (the torch path's parameters and noise): measured common 41.6, gpen 32.5
# (4-10 px LQs, where the two filters differ most), mmrb 39.2, mpcnet 33.4, psfrgan 38.0 dB, bounded with
# 1.5 dB of margin for other CPUs' / OpenCV builds' rounding; a 20 % scale error or a JPEG quality 10 lower
# falls below it in every preset (measured 26-36 dB). The stages themselves are pinned exactly by the tests
# above (parameters, blur and borders, JPEG and noise scale).
_PAIRED_MIN_DB = {"common": 40.0, "gpen": 31.0, "mmrb": 37.5, "mpcnet": 32.0, "psfrgan": 36.5}


@pytest.fixture
def one_torch_thread():
    """The torch evaluation path is a loop of small ops: on a loaded 2-core machine two OpenMP threads only wait
    for each other (measured 10x slower), so the statistics test runs torch single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_lq_statistics_match_torch_executor(preset: str, one_torch_thread: None) -> None:
    hq = _faces(96)
    x = torch.cat([hq, hq])
    seeds = [stable_seed(7, "stats", i) for i in range(len(x))]
    torch_lq = Degrader(preset)(x, seeds=seeds)
    cv_lq = degrade_tensor(x, preset, seeds)
    assert cv_lq.dtype == torch.float32 and float(cv_lq.min()) >= 0 and float(cv_lq.max()) <= 1
    gap = float((_psnr(cv_lq, x) - _psnr(torch_lq, x)).mean())
    assert -0.05 <= gap <= 0.4, gap
    assert float(_psnr(_torch_drawn(x, preset, seeds), torch_lq).mean()) >= _PAIRED_MIN_DB[preset]
    assert float(_psnr(cv_lq, x).mean()) < 25  # it did degrade


def test_grayscale_draws_are_luma_and_match_torch() -> None:
    """gray_prob = 1: every LQ is the ITU-R 601 luma of the colour LQ of the same draws (the flag is drawn
    either way, so the other parameters and the noise do not change), and matches the torch executor."""
    preset = dataclasses.replace(get_preset("common"), name="gray", gray_prob=1.0)
    x, seeds = _faces(64, 4), [1, 2, 3, 4]
    gray = degrade_tensor(x, preset, seeds)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    luma = (degrade_tensor(x, "common", seeds) * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    assert float((gray[:, 0] - luma).abs().max()) < 1e-5
    assert float(_psnr(_torch_drawn(x, preset, seeds), Degrader(preset)(x, seeds=seeds)).min()) > 35


def test_per_image_independent_of_batch_threads_and_layout() -> None:
    """Image i depends only on (hq[i], seed i): not on its batch, OpenCV's thread count or the memory layout."""
    x = _faces(64, 4)
    full = degrade_tensor(x, "mpcnet", [5, 6, 7, 8])
    assert torch.equal(full[2:], degrade_tensor(x[2:], "mpcnet", [7, 8]))
    assert torch.equal(full.flip(0), degrade_tensor(x.flip(0), "mpcnet", [8, 7, 6, 5]))
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        single = degrade_tensor(x, "mpcnet", [5, 6, 7, 8])
    finally:
        cv2.setNumThreads(threads)
    assert torch.equal(full, single)
    channels_last = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert torch.equal(full, degrade_tensor(channels_last, "mpcnet", [5, 6, 7, 8]))
    one = degrade_image(_hwc(x[1]), "mpcnet", 6)
    assert np.array_equal(one, full[1].permute(1, 2, 0).numpy())
    u8 = to_uint8(_hwc(x[1]))
    assert np.abs(degrade_image(u8, "mpcnet", 6) - degrade_image(u8.astype(np.float32) / 255, "mpcnet", 6)).max() < 1e-6
    with pytest.raises(ValueError, match="per-image seeds"):
        degrade_tensor(x, "mpcnet", [1])


# ------------------------------------------------------------------------------------------ seeding
def test_training_image_seeds_differ_per_image_and_batch() -> None:
    a, b = image_seeds(stable_seed(0, "train", 0, 0, 0), 4), image_seeds(stable_seed(0, "train", 0, 0, 1), 4)
    assert len(set(a + b)) == 8 and a == image_seeds(stable_seed(0, "train", 0, 0, 0), 4)


def _epoch(dm: FaceDataModule) -> dict:
    out: dict = {"hq": [], "lq": [], "name": []}
    for batch in dm.train_dataloader():
        for key in out:
            out[key] += list(batch[key]) if key == "name" else [batch[key]]
    return {k: (v if k == "name" else torch.cat(v)) for k, v in out.items()}


def test_datamodule_workers_path_is_valid_deterministic_and_worker_independent() -> None:
    """degrade_on="workers": batches in [0, 1] whose LQ is the OpenCV executor's for the batch's per-image seeds;
    two workers (each building whole batches) give bit-identical epochs to one process and to a rerun."""
    kw = dict(size=32, batch_size=4, preset="psfrgan", seed=11, limit_train=16, degrade_on="workers")
    one = _epoch(FaceDataModule(num_workers=0, **kw))
    two = _epoch(FaceDataModule(num_workers=2, **kw))
    again = _epoch(FaceDataModule(num_workers=2, **kw))
    assert one["name"] == two["name"] == again["name"] and len(one["name"]) == 16
    assert torch.equal(one["lq"], two["lq"]) and torch.equal(two["lq"], again["lq"])
    assert one["lq"].shape == (16, 3, 32, 32) and float(one["lq"].min()) >= 0 and float(one["lq"].max()) <= 1
    for b in range(4):  # batch b of epoch 0 on rank 0
        seeds = image_seeds(stable_seed(11, "train", 0, 0, b), 4)
        sl = slice(4 * b, 4 * b + 4)
        assert torch.equal(one["lq"][sl], degrade_tensor(one["hq"][sl], "psfrgan", seeds))
    other = _epoch(FaceDataModule(num_workers=0, **(kw | {"seed": 12})))
    assert not torch.allclose(other["lq"], one["lq"])
    with pytest.raises(ValueError, match="degrade_on"):
        FaceDataModule(degrade_on="gpu")  # type: ignore[arg-type]


def test_datamodule_validation_uses_the_opencv_executor_per_image() -> None:
    dm = FaceDataModule(size=64, batch_size=3, preset="mpcnet", seed=3, degrade_on="device")
    from bfrzoo.data.datamodule import eval_seed

    for batch in dm.val_dataloader():
        seeds = [eval_seed(3, n) for n in batch["name"]]
        assert torch.equal(batch["lq"], degrade_tensor(batch["hq"], "mpcnet", seeds))


class _SameFace(Dataset):
    """Every index is the same face, through an albumentations pipeline: returns the LQ and the drawn seed."""

    def __init__(self, aug) -> None:
        self.aug, self.face = aug, to_uint8(_hwc(_faces(32, 1)[0]))

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        out = self.aug(image=self.face)["image"]
        return out, self.aug.transforms[0].get_applied_params()["seed"]


def test_albumentations_transform_and_worker_reseeding() -> None:
    import albumentations as A

    from bfrzoo.data.transforms import PresetDegradation, ReseedWorker

    face = to_uint8(_hwc(_faces(48, 1)[0]))
    aug = A.Compose([PresetDegradation("gpen")], seed=5)
    lq = aug(image=face)["image"]
    seed = aug.transforms[0].get_applied_params()["seed"]
    assert lq.dtype == np.uint8 and lq.shape == face.shape and not np.array_equal(lq, face)
    assert np.array_equal(lq, to_uint8(degrade_image(face, "gpen", seed)))  # bfrzoo's sampler, that seed
    assert np.array_equal(A.Compose([PresetDegradation("gpen")], seed=5)(image=face)["image"], lq)
    assert A.from_dict(A.to_dict(aug)).transforms[0].preset == "gpen"

    def run(seed: int) -> list[int]:
        pipeline = A.Compose([PresetDegradation("psfrgan")], seed=0)
        loader = DataLoader(
            _SameFace(pipeline), batch_size=1, num_workers=2, worker_init_fn=ReseedWorker(pipeline, seed),
            generator=torch.Generator().manual_seed(seed),
        )
        return [int(s) for _, s in loader]  # batches alternate between worker 0 and worker 1

    seeds = run(0)
    assert seeds[0] != seeds[1]  # worker 0's and worker 1's first draws differ
    assert len(set(seeds)) == len(seeds)
    assert run(0) == seeds and run(1) != seeds  # a rerun with the same seed repeats, another seed does not
