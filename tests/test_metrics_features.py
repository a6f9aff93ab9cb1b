"""LPIPS and FID: parity with torchmetrics' LPIPS on the same weights, invariants, frozen feature networks kept
out of checkpoints, weight resolution (explicit file, missing file -> WeightsNotFoundError naming it)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import bfrzoo.metrics as M
from bfrzoo.errors import CheckpointMismatchError, WeightsNotFoundError
from bfrzoo.metrics.lpips import LPIPSNetwork


def _images(n: int = 3, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("net_type", ["alex", "vgg"])
def test_lpips_equals_torchmetrics_lpips_on_the_same_weights(net_type: str) -> None:
    from torchmetrics.functional.image.lpips import _LPIPS

    torch.manual_seed(0)
    ours = LPIPSNetwork(net_type, pretrained=False)
    ref = _LPIPS(pretrained=True, net=net_type, pnet_rand=True).eval()  # lin layers from the package, random trunk
    trunk = ours.trunk.state_dict()
    ref.net.load_state_dict({k: trunk[k.split(".", 1)[1]] for k in ref.net.state_dict()})  # "sliceK.I.w" -> "I.w"
    x = _images(2, 48, seed=1)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    got, expected = ours(x, y), ref(x, y, normalize=True).flatten()
    assert float(got.min()) > 0
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("net_type", ["alex", "vgg"])
def test_lpips_equals_the_lpips_package_and_trains_as_a_loss(net_type: str) -> None:
    """The independent reference: the ``lpips`` package of the paper's authors (its v0.1 lin weights ship in its
    wheel; ``pnet_rand=True`` builds the torchvision trunk without a download, whose weights we then share)."""
    import lpips

    from bfrzoo.losses import LPIPSLoss

    torch.manual_seed(0)
    ours = LPIPSNetwork(net_type, pretrained=False)
    ref = lpips.LPIPS(pretrained=True, net=net_type, pnet_rand=True, verbose=False).eval()
    trunk = ours.trunk.state_dict()
    ref.net.load_state_dict({k: trunk[k.split(".", 1)[1]] for k in ref.net.state_dict()})  # "sliceK.I.w" -> "I.w"
    ours_lins = {f"{i}.weight": w for i, w in enumerate(lin.weight for lin in ours.lins)}
    ref_lins = {k: v for k, v in ref.state_dict().items() if k.startswith("lin") and not k.startswith("lins.")}
    assert [tuple(v.shape) for v in ref_lins.values()] == [tuple(v.shape) for v in ours_lins.values()]
    x = _images(2, 48, seed=1)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    with torch.no_grad():
        got, expected = ours(x, y), ref(x, y, normalize=True).flatten()
    assert float(got.min()) > 0 and torch.allclose(got, expected, rtol=1e-6, atol=1e-6)
    # the training loss is the same distance, on [-1, 1] images, with gradients to the restored image only
    loss = LPIPSLoss(net_type, pretrained=False)
    loss.net.net.load_state_dict(ours.state_dict())
    xr = (x * 2 - 1).requires_grad_(True)
    value = loss(xr, y * 2 - 1)
    value.backward()
    assert torch.allclose(value.detach(), expected.mean(), rtol=1e-5) and xr.grad.abs().sum() > 0
    assert loss.state_dict() == {}


def test_lpips_invariants() -> None:
    torch.manual_seed(0)
    net = LPIPSNetwork("alex", pretrained=False)
    x = _images(2, 64)
    assert torch.equal(M.lpips(x, x, network=net), torch.zeros(2))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    y = (x + 0.05 * noise).clamp(0, 1)
    assert torch.allclose(M.lpips(x, y, network=net), M.lpips(y, x, network=net), rtol=1e-6)
    values = [float(M.lpips((x + s * noise).clamp(0, 1), x, network=net).mean()) for s in (0.02, 0.08, 0.3)]
    assert 0 < values[0] < values[1] < values[2]


def test_lpips_metric_is_frozen_accumulates_and_stays_out_of_the_state_dict() -> None:
    torch.manual_seed(0)
    metric = M.LPIPS("alex", pretrained=False)
    assert metric.higher_is_better is False and metric.full_state_update is False
    metric.train()
    assert not metric.net.training and not metric.net.net.training
    assert all(not p.requires_grad for p in metric.parameters())
    x, y = _images(4, 48, 0), _images(4, 48, 5)
    metric.update(x[:1], y[:1])
    metric.update(x[1:], y[1:])
    expected = M.lpips(x, y, network=metric.net.net).mean()
    assert float(metric.compute()) == pytest.approx(float(expected), rel=1e-6)
    holder = nn.Module()
    holder.lpips = metric
    state = holder.state_dict()
    assert not any("net" in k or "trunk" in k or "lins" in k for k in state), list(state)
    holder.load_state_dict(state, strict=True)


def test_lpips_backbone_from_an_explicit_torchvision_file(tmp_path: Path) -> None:
    torch.manual_seed(4)
    tv = torchvision.models.alexnet(weights=None)
    path = tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(tv.state_dict(), path)
    net = LPIPSNetwork("alex", pretrained=str(path))
    assert torch.equal(net.trunk[0].weight, tv.features[0].weight)
    assert torch.equal(net.trunk[10].bias, tv.features[10].bias)
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError):
        LPIPSNetwork("alex", pretrained=str(tmp_path / "bad.pth"))


@pytest.mark.parametrize(
    ("build", "filename"),
    [
        (lambda: M.LPIPS("alex"), "alexnet-owt-7be5be79.pth"),
        (lambda: M.LPIPS("vgg"), "vgg16-397923af.pth"),
        (lambda: M.FID(), M.INCEPTION_CFG.filename),
        (lambda: M.build_metric_suite(("psnr", "lpips")), "alexnet-owt-7be5be79.pth"),
    ],
)
def test_missing_weights_raise_one_error_naming_the_file(build, filename: str) -> None:
    with pytest.raises(WeightsNotFoundError, match=filename.replace(".", r"\.")) as info:
        build()
    assert "offline" in str(info.value)


class TinyFeatures(nn.Module):
    """A small fixed feature network for FID tests: (N, 3, H, W) in [0, 1] -> (N, 6)."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))


def test_fid_is_zero_on_identical_sets_and_grows_with_perturbation() -> None:
    x = _images(24, 32, seed=0)
    assert abs(float(M.fid(x, x, feature=TinyFeatures()))) < 1e-6
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    values = [float(M.fid((x + s * noise).clamp(0, 1), x, feature=TinyFeatures())) for s in (0.05, 0.2, 0.5)]
    assert 0 < values[0] < values[1] < values[2]


def test_fid_metric_over_batches_equals_functional_and_holds_no_network() -> None:
    x, y = _images(12, 32, seed=0), _images(12, 32, seed=7)
    metric = M.FID(feature=TinyFeatures())
    assert metric.higher_is_better is False
    for i in range(0, 12, 4):
        metric.update(x[i : i + 4], y[i : i + 4])
    assert float(metric.compute()) == pytest.approx(float(M.fid(x, y, feature=TinyFeatures())), rel=1e-6)
    assert not any("conv" in k or "inception" in k for k in metric.state_dict())
    assert all(not p.requires_grad for p in metric.parameters())


def test_inception_features_random_init_and_explicit_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = M.InceptionFeatures(pretrained=False)
    with torch.no_grad():  # give the random network non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.uniform_(-0.1, 0.1)
    x = _images(2, 64)
    feats = net(x)
    assert feats.shape == (2, M.InceptionFeatures.num_features) and torch.isfinite(feats).all()
    path = tmp_path / "inception.pth"
    torch.save(net.inception.state_dict(), path)
    again = M.InceptionFeatures(pretrained=str(path))
    assert torch.equal(again(x), feats)
