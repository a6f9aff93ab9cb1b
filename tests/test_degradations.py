"""Degradation ops: kernels, filters, noise, torch JPEG vs PIL, seeding and the paper presets."""
from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import bfrzoo
from bfrzoo.data import PRESETS, Degrader, degrade, get_preset
from bfrzoo.data.degradations import (
    DegradationParams,
    add_noise,
    apply_degradation,
    box_kernels_1d,
    filter2d,
    filter_separable,
    gaussian_kernels,
    gaussian_kernels_1d,
    median_blur,
    motion_kernels,
    resample,
    resample_matrix,
    to_grayscale,
)
from bfrzoo.data.jpeg import jpeg, quality_tables
from bfrzoo.errors import UnknownNameError
from bfrzoo.io import list_images, read_image

SAMPLE = Path(bfrzoo.__file__).parent / "assets" / "sample" / "faces512" / "images"


def _face(n: int = 1, size: int = 128) -> torch.Tensor:
    imgs = [read_image(p) for p in list_images(SAMPLE)[:n]]
    x = torch.stack(imgs)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True).clamp(0, 1)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def _pil_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)  # PIL default: 4:2:0, IJG tables
    buf.seek(0)
    return torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).astype(np.float32) / 255).permute(2, 0, 1)


# ------------------------------------------------------------------------------------------ kernels / filters
def test_gaussian_blur_of_delta_is_normalized_kernel() -> None:
    sx, sy, th = torch.tensor([1.5, 2.0]), torch.tensor([1.5, 0.7]), torch.tensor([0.0, 0.6])
    k = gaussian_kernels(sx, sy, th, 15)
    assert torch.allclose(k.sum((-1, -2)), torch.ones(2), atol=1e-6)
    delta = torch.zeros(2, 3, 31, 31)
    delta[..., 15, 15] = 1
    out = filter2d(delta, k)  # FFT path (K > 7)
    for i in range(2):
        assert torch.allclose(out[i, 0, 8:23, 8:23], k[i], atol=1e-6)
    # the isotropic 2-D kernel is the outer product of the 1-D one; the separable path gives it too
    k1 = gaussian_kernels_1d(sx[:1], 15)[0]
    assert torch.allclose(k[0], torch.outer(k1, k1), atol=1e-6)
    sep = filter_separable(delta[:1], k1[None])
    assert torch.allclose(sep[0, 0, 8:23, 8:23], k[0], atol=1e-6)
    # direct grouped conv (K <= 7) agrees with the analytic kernel too
    small = gaussian_kernels(sx, sy, th, 7)
    assert torch.allclose(filter2d(delta, small)[:, 1, 12:19, 12:19], small, atol=1e-6)
    # anisotropic: the kernel is elongated along its rotated x axis (angle 0 -> wider along columns)
    aniso = gaussian_kernels(torch.tensor([3.0]), torch.tensor([1.0]), torch.tensor([0.0]), 15)[0]
    assert aniso[7, 11] > aniso[11, 7] * 10


def test_blur_preserves_constant_image() -> None:
    x = torch.full((3, 3, 40, 40), 0.37)
    x[1] = 0.8
    ks = gaussian_kernels(torch.tensor([1.0, 4.0, 2.0]), torch.tensor([1.0, 2.0, 5.0]), torch.tensor([0.0, 1.0, 2.0]), 21)
    assert torch.allclose(filter2d(x, ks), x, atol=1e-5)
    assert torch.allclose(filter_separable(x, box_kernels_1d(torch.tensor([3, 7, 15]), 15)), x, atol=1e-6)
    assert torch.allclose(median_blur(x, torch.tensor([3, 5, 3])), x)
    mk = motion_kernels(torch.tensor([5, 9, 25]), torch.tensor([0.0, 33.0, 120.0]), 25)
    assert torch.allclose(filter2d(x, mk), x, atol=1e-5)


def test_motion_kernel_sums_to_one_with_orientation() -> None:
    k = motion_kernels(torch.tensor([9, 9, 9, 7]), torch.tensor([0.0, 90.0, 45.0, 135.0]), 11)
    assert torch.allclose(k.sum((-1, -2)), torch.ones(4), atol=1e-6)
    c = 5
    assert torch.allclose(k[0, c, 1:10], torch.full((9,), 1 / 9), atol=1e-6)  # horizontal line of 9 pixels
    assert float(k[0].sum() - k[0, c].sum()) < 1e-6
    assert torch.allclose(k[1, 1:10, c], torch.full((9,), 1 / 9), atol=1e-6)  # vertical
    # 45 degrees counter-clockwise as displayed: bottom-left to top-right (rows grow downwards)
    assert k[2, c - 2, c + 2] > 0.05 and k[2, c + 2, c - 2] > 0.05 and k[2, c - 2, c - 2] == 0
    assert k[3, c - 2, c - 2] > 0.05 and k[3, c - 2, c + 2] == 0


def test_median_blur_removes_salt_noise_and_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 20, 24, generator=g)
    out = median_blur(x, torch.tensor([3, 5]), max_elements=5000)  # force row chunking
    for i, k in enumerate((3, 5)):
        p = k // 2
        xp = torch.nn.functional.pad(x[i : i + 1], (p, p, p, p), mode="replicate")[0].numpy()
        ref = np.zeros((3, 20, 24), np.float32)
        for r in range(20):
            for c in range(24):
                ref[:, r, c] = np.median(xp[:, r : r + k, c : c + k].reshape(3, -1), axis=1)
        assert np.allclose(out[i].numpy(), ref)


def test_average_blur_matches_box_mean() -> None:
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = filter_separable(x, box_kernels_1d(torch.tensor([5]), 7))
    assert torch.allclose(out[0, :, 8, 8], x[0, :, 6:11, 6:11].mean((-1, -2)), atol=1e-6)


# ------------------------------------------------------------------------------------------ resampling / noise
def test_resample_matches_torch_resize_and_keeps_constants() -> None:
    x = _face(2, 64)
    n = torch.tensor([64, 64])
    rows = resample_matrix(n, torch.tensor([16, 32]), 64, 32)
    down = resample(x, rows, rows)
    ref = torch.nn.functional.interpolate(x[1:], size=(32, 32), mode="bilinear", antialias=True)
    assert torch.allclose(down[1:], ref, atol=1e-4)
    assert torch.all(down[0, :, 16:] == 0)  # beyond sample 0's LQ size the canvas is empty
    up_rows = resample_matrix(torch.tensor([16, 32]), n, 32, 64)
    ref_up = torch.nn.functional.interpolate(down[:1, :, :16, :16], size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(resample(down, up_rows, up_rows)[:1], ref_up, atol=1e-5)
    assert torch.allclose(rows.sum(-1)[1], torch.ones(32))


def _params(n: int, **kw: torch.Tensor) -> DegradationParams:
    base = dict(
        blur_kind=torch.zeros(n, dtype=torch.long), sigma_x=torch.full((n,), 1e-3), sigma_y=torch.full((n,), 1e-3),
        theta=torch.zeros(n), box_size=torch.full((n,), 3), motion_length=torch.full((n,), 5),
        motion_angle=torch.zeros(n), lq_height=torch.full((n,), 64), lq_width=torch.full((n,), 64),
        noise_sigma=torch.zeros(n), quality=torch.full((n,), 100), gray=torch.zeros(n, dtype=torch.bool),
    )
    base.update(kw)
    return DegradationParams(**base)


def test_noise_std_matches_sigma_per_channel_and_sample() -> None:
    x = torch.full((2, 3, 64, 64), 0.5)
    sig = torch.tensor([10.0, 25.0])
    p = _params(2, noise_sigma=sig, quality=torch.full((2,), 100))
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 3, 64, 64, generator=g)
    noisy = add_noise(x, sig, noise)
    std = (noisy - 0.5).std(dim=(-1, -2)) * 255
    assert torch.allclose(std, sig.view(2, 1).expand(2, 3), rtol=0.05)
    corr = torch.corrcoef(torch.stack([(noisy[1, c] - 0.5).flatten() for c in range(3)]))
    assert corr[0, 1].abs() < 0.1 and corr[1, 2].abs() < 0.1  # channels get independent noise
    # end to end (JPEG q100): the luma plane is not subsampled, so luma noise keeps
    # std sigma * |(0.299, 0.587, 0.114)| = 0.668 sigma for independent channel noise
    lq = apply_degradation(x, p, noise, get_preset("common"))
    luma_std = (to_grayscale(lq)[:, 0] - 0.5).std(dim=(-1, -2)) * 255
    assert torch.allclose(luma_std, sig * math.sqrt(0.299**2 + 0.587**2 + 0.114**2), rtol=0.08)


def test_grayscale_is_luma_on_three_channels() -> None:
    x = _face(1, 32)
    g = to_grayscale(x)
    assert torch.allclose(g[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2], atol=1e-6)
    assert torch.equal(g[:, 0], g[:, 2])


# ------------------------------------------------------------------------------------------ JPEG
def test_ijg_quality_tables() -> None:
    luma, chroma = quality_tables(torch.tensor([50, 100, 10, 75]))
    assert luma[0, 0, 0] == 16 and chroma[0, 0, 0] == 17  # q50 = the Annex K tables
    assert torch.all(luma[1] == 1)  # q100
    assert luma[2, 0, 0] == 80 and luma[3, 0, 0] == 8  # 16*500/100, 16*50/100


def test_torch_jpeg_matches_pil_on_real_face() -> None:
    x = _face(1, 128)[0]
    x = (x * 255).round() / 255
    errs = []
    for q in (10, 30, 50, 90):
        ours = jpeg(x[None], q)[0]
        ref = _pil_jpeg(x, q)
        # measured 40-55 dB (float vs libjpeg's integer DCT / colour conversion); a wrong table, subsampling or
        # colour transform gives < 32 dB
        assert _psnr(ours, ref) > 38.0, q
        assert abs(_psnr(ours, x) - _psnr(ref, x)) < 0.5, q
        errs.append(_psnr(ours, x))
    assert errs == sorted(errs) and errs[-1] - errs[0] > 6  # error grows as quality falls
    odd = x[:, :45, :61]  # partial MCUs
    assert _psnr(jpeg(odd[None], 30)[0], _pil_jpeg(odd, 30)) > 38.0


def test_jpeg_per_sample_quality_honoured() -> None:
    x = _face(2, 64)
    x = torch.cat([x, x])
    both = jpeg(x, torch.tensor([10, 10, 90, 90]))
    assert torch.equal(both[0], jpeg(x[:1], 10)[0])
    assert torch.equal(both[2], jpeg(x[2:3], 90)[0])
    assert _psnr(both[2], x[2]) > _psnr(both[0], x[0]) + 5
    assert torch.all(((both * 255) - (both * 255).round()).abs() < 1e-3)  # 8-bit output


# ------------------------------------------------------------------------------------------ seeding / pipeline
def test_same_seed_same_output_different_seed_different() -> None:
    x = _face(3, 64)
    for name in PRESETS:
        a, b, c = degrade(x, name, 7), degrade(x, name, 7), degrade(x, name, 8)
        assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
        assert torch.equal(a, b), name
        assert not torch.equal(a, c), name
        assert _psnr(a, x) < 40  # it did degrade


@pytest.mark.parametrize("preset", ["common", "psfrgan", "mmrb"])
def test_per_sample_seeds_bit_identical_whatever_the_batch(preset: str) -> None:
    """Evaluation LQ depends only on (image, seed): not on batch size, order or neighbours (exact equality)."""
    x = _face(4, 64)
    d = Degrader(preset)
    full = d(x, seeds=[1, 2, 3, 4])
    assert torch.equal(full[2:], d(x[2:], seeds=[3, 4]))
    assert torch.equal(full[1:2], d(x[1:2], seeds=[2]))
    assert torch.equal(full.flip(0), d(x.flip(0), seeds=[4, 3, 2, 1]))
    assert not torch.equal(full[0], d(x[:1], seeds=[5])[0])


def test_degrade_rejects_bad_input_and_unknown_preset() -> None:
    with pytest.raises(UnknownNameError, match="common"):
        degrade(torch.rand(1, 3, 16, 16), "nope", 0)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        degrade(torch.rand(3, 16, 16), "common", 0)


def test_gpen_scale_clamped_to_min_lq_size() -> None:
    from bfrzoo.data.degradations import sample_params

    p = sample_params(get_preset("gpen"), 1000, 512, 512, torch.Generator().manual_seed(0))
    assert int(p.lq_height.min()) == 4 and int(p.lq_height.max()) <= round(512 / 10)
    assert set(p.blur_kind.unique().tolist()) == {0, 4}  # gaussian and motion
    assert 5 <= int(p.quality.min()) and int(p.quality.max()) <= 50
    assert float(p.noise_sigma.max()) <= 25


# Each paper's stated ranges, quoted from its text (see the preset's citation), as preset field values.
PAPER_RANGES: dict[str, dict[str, object]] = {
    # GPEN Sec. 4.2: Gaussian + motion blur; sigma in [0, 25] channel-wise; s uniform in [10, 200]; q in [5, 50]
    "gpen": dict(blur_kinds={"gaussian", "motion"}, scale=(10.0, 200.0), scale_sampling="factor",
                 noise_sigma=(0.0, 25.0), jpeg_quality=(5, 50)),
    # PSFR-GAN appx. B: Gaussian/average/median 3..15, motion 5..25; r in [32/512, 256/512] (imgaug Resize:
    # uniform size ratio); AWGN 0..0.1*255; imgaug compression 10..65 -> quality 100 - c = 35..90
    "psfrgan": dict(blur_kinds={"gaussian", "average", "median", "motion"}, gaussian_sigma=(3.0, 15.0),
                    box_size=(3, 15), motion_length=(5, 25), scale=(512 / 256, 512 / 32), scale_sampling="ratio",
                    noise_sigma=(0.0, 0.1 * 255), jpeg_quality=(100 - 65, 100 - 10)),
    # MPCNet Sec. 3.1: same kernels; r in [4:16]; AWGN 0..0.1*255 channel-wise; compression q in [10:65]
    "mpcnet": dict(blur_kinds={"gaussian", "average", "median", "motion"}, gaussian_sigma=(3.0, 15.0),
                   box_size=(3, 15), motion_length=(5, 25), scale=(4.0, 16.0), scale_sampling="factor",
                   noise_sigma=(0.0, 0.1 * 255), jpeg_quality=(100 - 65, 100 - 10)),
    # MMRB Sec. IV-A, Eq. (17): k, s, delta, q from 41, [0.4 : 8], [0 : 25], [5 : 50]; Gaussian and motion blur
    "mmrb": dict(blur_kinds={"gaussian", "motion"}, gaussian_kernel=41, scale=(0.4, 8.0), scale_sampling="factor",
                 noise_sigma=(0.0, 25.0), jpeg_quality=(5, 50)),
    # bfrzoo's comparison preset (GFPGAN-style): Gaussian sigma 0.1-10, downsample 1-8, noise 0-15, JPEG 60-100
    "common": dict(blur_kinds={"gaussian", "aniso_gaussian"}, gaussian_sigma=(0.1, 10.0), scale=(1.0, 8.0),
                   noise_sigma=(0.0, 15.0), jpeg_quality=(60, 100), gray_prob=0.0),
}


@pytest.mark.parametrize("name", sorted(PAPER_RANGES))
def test_preset_ranges_match_paper(name: str) -> None:
    preset = get_preset(name)
    for field, expected in PAPER_RANGES[name].items():
        got = getattr(preset, field)
        got = set(got) if field == "blur_kinds" else got
        if isinstance(expected, tuple):
            assert got == pytest.approx(expected), (name, field)
        else:
            assert got == expected, (name, field)
    assert preset.citation and preset.notes and preset.name == name


def test_preset_registry_and_validation() -> None:
    assert sorted(PRESETS) == sorted(PAPER_RANGES)
    with pytest.raises(UnknownNameError, match="common, gpen, mmrb, mpcnet, psfrgan"):
        get_preset("gfpgan")
    with pytest.raises(ValueError, match="lo > hi"):
        dataclasses.replace(get_preset("common"), jpeg_quality=(90, 60))
    with pytest.raises(ValueError, match="scale_sampling"):
        dataclasses.replace(get_preset("common"), scale_sampling="log")
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("common").scale = (1.0, 2.0)  # type: ignore[misc]


def test_scale_sampling_factor_vs_ratio() -> None:
    """PSFR-GAN draws the size ratio uniformly (LQ side uniform in 32..256 px at 512); MPCNet draws r uniformly."""
    from bfrzoo.data.degradations import sample_params

    g = torch.Generator().manual_seed(4)
    psfr = sample_params(get_preset("psfrgan"), 20000, 512, 512, g).lq_height.double()
    assert 32 <= psfr.min() and psfr.max() <= 256
    assert math.isclose(float(psfr.mean()), (32 + 256) / 2, rel_tol=0.02)
    assert math.isclose(float(psfr.median()), 144, rel_tol=0.03)
    mpc = sample_params(get_preset("mpcnet"), 20000, 512, 512, g).lq_height.double()
    s = 512 / mpc  # r uniform in [4, 16]: mean 10, so the LQ side is NOT uniform (median 512 / 10 ~ 51 px)
    assert math.isclose(float(s.mean()), 10.0, rel_tol=0.02)
    assert math.isclose(float(mpc.median()), 512 / 10, rel_tol=0.04)


def test_sampled_parameters_cover_the_ranges() -> None:
    from bfrzoo.data.degradations import sample_params

    p = sample_params(get_preset("mpcnet"), 4000, 512, 512, torch.Generator().manual_seed(1))
    assert set(p.box_size.unique().tolist()) == {3, 5, 7, 9, 11, 13, 15}
    assert int(p.motion_length.min()) == 5 and int(p.motion_length.max()) == 25
    assert int(p.quality.min()) == 35 and int(p.quality.max()) == 90
    assert p.lq_height.min() == 32 and p.lq_height.max() == 128  # 512 / 16 .. 512 / 4
    assert math.isclose(float(p.noise_sigma.mean()), 12.75, rel_tol=0.05)
    kinds = torch.bincount(p.blur_kind, minlength=5).float() / 4000
    assert torch.allclose(kinds[[0, 2, 3, 4]], torch.full((4,), 0.25), atol=0.03) and kinds[1] == 0
