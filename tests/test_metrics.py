"""Full-reference metrics (PSNR, SSIM, their Y variants, MS-SSIM), the suite/registry and face-parsing metrics.

PSNR/SSIM are checked against scikit-image on the same inputs (|difference| <= 1e-4), Metric classes against
their functional twins on the concatenation of the batches.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

import bfrzoo.metrics as M
from bfrzoo.errors import ImageInputError, UnknownNameError

TOL = 1e-4


def _pair(n: int = 3, h: int = 37, w: int = 45, noise: float = 0.08, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth-ish target and a noisy, clipped prediction, (n, 3, h, w) float64 in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, h // 4 + 2, w // 4 + 2, generator=g, dtype=torch.float64)
    target = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    preds = (target + noise * torch.randn(n, 3, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    return preds, target


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy().astype(np.float64)


@pytest.mark.parametrize(("h", "w", "noise"), [(37, 45, 0.08), (64, 64, 0.02), (11, 30, 0.3)])
def test_psnr_ssim_match_skimage(h: int, w: int, noise: float) -> None:
    preds, target = _pair(3, h, w, noise)
    ours = {
        "psnr": M.psnr(preds, target), "ssim": M.ssim(preds, target),
        "psnr_y": M.psnr_y(preds, target), "ssim_y": M.ssim_y(preds, target),
    }
    for i in range(preds.shape[0]):
        p, t = _hwc(preds[i]), _hwc(target[i])
        yp, yt = rgb2ycbcr(p)[..., 0], rgb2ycbcr(t)[..., 0]
        ref = {
            "psnr": peak_signal_noise_ratio(t, p, data_range=1),
            "ssim": structural_similarity(
                t, p, channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            ),
            "psnr_y": peak_signal_noise_ratio(yt, yp, data_range=255),
            "ssim_y": structural_similarity(
                yt, yp, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            ),
        }
        for name, value in ref.items():
            assert abs(float(ours[name][i]) - value) <= TOL, (name, i, float(ours[name][i]), value)


def test_float32_inputs_match_skimage_on_the_same_values() -> None:
    preds, target = (t.float() for t in _pair(2, 40, 40, 0.1, seed=3))
    for i in range(2):
        p, t = _hwc(preds[i].double()), _hwc(target[i].double())
        assert abs(float(M.psnr(preds, target)[i]) - peak_signal_noise_ratio(t, p, data_range=1)) <= TOL
        ref = structural_similarity(
            t, p, channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert abs(float(M.ssim(preds, target)[i]) - ref) <= TOL


def test_identical_images_give_the_best_value() -> None:
    x = _pair(2, 176, 176)[1]
    assert torch.isinf(M.psnr(x, x)).all() and torch.isinf(M.psnr_y(x, x)).all()
    for fn in (M.ssim, M.ssim_y, M.ms_ssim):
        assert torch.allclose(fn(x, x), torch.ones(2, dtype=torch.float64), atol=1e-10), fn.__name__


def test_ms_ssim_falls_with_noise_and_refuses_small_images() -> None:
    target = _pair(2, 176, 176)[1]
    g = torch.Generator().manual_seed(1)
    values = [float(M.ms_ssim((target + s * torch.randn(target.shape, generator=g, dtype=torch.float64)).clamp(0, 1),
                              target).mean()) for s in (0.02, 0.1, 0.3)]
    assert 1 > values[0] > values[1] > values[2]
    with pytest.raises(ImageInputError, match="MS-SSIM needs images of at least 161"):
        M.ms_ssim(target[..., :100, :100], target[..., :100, :100])


def test_psnr_closed_form() -> None:
    target = torch.zeros(1, 3, 8, 8, dtype=torch.float64)
    preds = target + 0.1  # MSE 0.01 -> 20 dB (float64: float32 0.1 is not 0.1 to 1e-9)
    assert abs(float(M.psnr(preds, target)) - 20.0) < 1e-9
    # Y: 0.1 on every channel moves Y by 0.1 * (65.481 + 128.553 + 24.966) = 21.9 (of 255)
    assert abs(float(M.psnr_y(preds, target)) - 20 * math.log10(255 / 21.9)) < 1e-9


def test_bad_inputs_raise_one_clear_error() -> None:
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ImageInputError, match="same shape"):
        M.psnr(x, torch.rand(1, 3, 16, 17))
    with pytest.raises(ImageInputError, match=r"\(N, 3, H, W\)"):
        M.ssim(x[0], x[0])
    with pytest.raises(ImageInputError, match="float"):
        M.psnr((x * 255).to(torch.uint8), (x * 255).to(torch.uint8))


@pytest.mark.parametrize("name", ["psnr", "ssim", "psnr_y", "ssim_y"])
def test_metric_classes_average_per_image_values_over_batches(name: str) -> None:
    preds, target = _pair(5, 32, 40, 0.1, seed=7)
    metric = build = M.build_metric_suite([name])[name]
    assert build is metric
    metric.update(preds[:2].float(), target[:2].float())
    metric.update(preds[2:].float(), target[2:].float())
    expected = getattr(M, name)(preds.float(), target.float()).mean()
    assert abs(float(metric.compute()) - float(expected)) < 1e-9
    metric.reset()
    metric.update(preds[:1], target[:1])
    assert abs(float(metric.compute()) - float(getattr(M, name)(preds[:1], target[:1]))) < 1e-9


def test_metric_class_contract() -> None:
    for name in M.list_metrics():
        cls = {"psnr": M.PSNR, "psnr_y": M.PSNRY, "ssim": M.SSIM, "ssim_y": M.SSIMY, "ms_ssim": M.MSSSIM,
               "lpips": M.LPIPS, "lpips_vgg": M.LPIPS, "fid": M.FID, "niqe": M.NIQE}[name]
        assert cls.full_state_update is False
        assert cls.higher_is_better is M.metric_higher_is_better(name), name
    metric = M.PSNR()
    assert all(fx is not None for fx in metric._reductions.values())
    assert metric._reductions["total"] is metric._reductions["count"]  # both summed across ranks ("sum")


def test_registry_names_and_unknown_name() -> None:
    assert M.list_metrics() == ["psnr", "psnr_y", "ssim", "ssim_y", "ms_ssim", "lpips", "lpips_vgg", "fid", "niqe"]
    assert M.metric_higher_is_better("psnr") and not M.metric_higher_is_better("lpips")
    assert not M.metric_higher_is_better("niqe") and not M.metric_higher_is_better("fid")
    with pytest.raises(UnknownNameError, match="known metrics: psnr, psnr_y"):
        M.build_metric_suite(["psnr", "pnsr"])
    with pytest.raises(UnknownNameError, match="niqe"):
        M.metric_higher_is_better("brisque")


def test_suite_updates_every_member_with_images() -> None:
    preds, target = (t.float() for t in _pair(2, 176, 176, 0.05))
    suite = M.build_metric_suite(["psnr", "ssim_y", "ms_ssim", "niqe"], pretrained=False)
    suite.update(preds, target)
    out = suite.compute()
    assert set(out) == {"psnr", "ssim_y", "ms_ssim", "niqe"}
    assert abs(float(out["psnr"]) - float(M.psnr(preds, target).mean())) < 1e-9
    assert abs(float(out["niqe"]) - float(M.niqe(preds).mean())) < 1e-9
    suite.reset()
    suite.update(target, target)
    assert float(suite.compute()["ssim_y"]) == pytest.approx(1.0, abs=1e-12)


def test_format_markdown_row() -> None:
    row = M.format_markdown_row({"psnr": torch.tensor(25.123456), "lpips": 0.25}, names=("psnr", "lpips", "fid"),
                                label="gpen", precision=3)
    assert row == "| gpen | 25.123 | 0.250 | - |"
    assert M.markdown_header(["psnr", "lpips"]).splitlines()[0] == "| method | psnr ↑ | lpips ↓ |"


def test_imresize_half_reproduces_a_linear_ramp_and_constants() -> None:
    # The cubic kernel reproduces linear functions: away from the borders imresize(ramp, 0.5) samples the ramp at
    # MATLAB's source coordinates u = j / 0.5 + 0.5 * (1 - 1 / 0.5) = 2j - 0.5 (1-based).
    ramp = torch.arange(1, 41, dtype=torch.float64).view(1, 1, 1, 40).expand(1, 1, 8, 40)
    out = M.imresize(ramp, 0.5)
    assert out.shape == (1, 1, 4, 20)
    j = torch.arange(1, 21, dtype=torch.float64)
    assert torch.allclose(out[0, 0, 0, 3:-3], (2 * j - 0.5)[3:-3], atol=1e-12)
    assert torch.allclose(M.imresize(torch.full((2, 1, 9, 13), 7.0, dtype=torch.float64), 0.5), torch.tensor(7.0).double())
    assert M.imresize(torch.rand(1, 1, 9, 13, dtype=torch.float64), 0.5).shape[-2:] == (5, 7)  # ceil, as MATLAB


# ----------------------------------------------------------------------------------------------- face parsing


def _parsing_example() -> tuple[torch.Tensor, torch.Tensor]:
    target = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
    preds = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
    return preds, target


def test_parsing_metrics_on_a_hand_made_example() -> None:
    preds, target = _parsing_example()
    # IoU: class 0 = 1/3, class 1 = 2/3, class 2 = 1/2 (16 classes absent from both are left out); 4 of 6 correct.
    out = M.parsing_metrics(preds, target)
    assert float(out["miou"]) == pytest.approx(0.5, abs=1e-12)
    assert float(out["pixel_acc"]) == pytest.approx(4 / 6, abs=1e-12)
    logits = torch.nn.functional.one_hot(preds, 19).permute(0, 3, 1, 2).float() * 5.0
    assert float(M.parsing_miou(logits, target)) == pytest.approx(0.5, abs=1e-12)
    assert float(M.parsing_miou(target, target)) == 1.0
    ignored = target.clone()
    ignored[0, 1, 2] = 255  # the wrong (1, 2) pixel no longer counts
    assert float(M.pixel_accuracy(preds, ignored, ignore_index=255)) == pytest.approx(4 / 5, abs=1e-12)


def test_parsing_metric_accumulates_over_batches() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 19, (6, 16, 16), generator=g)
    logits = torch.randn(6, 19, 16, 16, generator=g) + 3 * torch.nn.functional.one_hot(target, 19).permute(0, 3, 1, 2)
    metric = M.ParsingMetrics()
    assert metric.higher_is_better and metric.full_state_update is False
    metric.update(logits[:4], target[:4])
    metric.update(logits[4:].argmax(1), target[4:])
    got, expected = metric.compute(), M.parsing_metrics(logits, target)
    assert 0.2 < float(expected["miou"]) < 1.0
    for k in ("miou", "pixel_acc"):
        assert float(got[k]) == pytest.approx(float(expected[k]), abs=1e-12)
    with pytest.raises(ImageInputError, match="19 channels"):
        metric.update(logits[:, :18], target)


def test_states_sum_across_ranks_and_hold_no_network() -> None:
    holder = nn.Module()
    holder.suite = M.build_metric_suite(["psnr", "ssim", "niqe"])
    holder.parsing = M.ParsingMetrics()
    assert holder.parsing._reductions["confmat"] is M.PSNR()._reductions["total"]
    holder.load_state_dict(holder.state_dict(), strict=True)


def test_fid_compute_equals_torchmetrics_formula() -> None:
    # FID.compute uses symmetric eigendecompositions (faster); it must give torchmetrics' value.
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Features(nn.Module):
        num_features = 16

        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(12, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.proj(nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)))

    torch.manual_seed(0)
    real = torch.rand(40, 3, 8, 8)
    metric = M.FID(feature=Features())
    metric.update((0.7 * real + 0.3 * torch.rand_like(real)) ** 2, real)
    ours, reference = float(metric.compute()), float(FrechetInceptionDistance.compute(metric))
    assert reference > 1e-3
    assert ours == pytest.approx(reference, rel=1e-4)
