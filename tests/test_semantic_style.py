"""Semantic-aware style loss (PSFR-GAN Eq. 4-5) and its VGG19 feature extractor."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bfrzoo.errors import BfrzooError, WeightsNotFoundError
from bfrzoo.losses.semantic_style import SemanticStyleLoss, masked_gram
from bfrzoo.losses.vgg import VGG19Features


@pytest.fixture(scope="module")
def loss() -> SemanticStyleLoss:
    torch.manual_seed(0)
    return SemanticStyleLoss(pretrained=False)


def _images(seed: int, n: int = 2, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_zero_for_identical_images(loss):
    x = _images(0)
    labels = torch.randint(0, 19, (2, 32, 32), generator=torch.Generator().manual_seed(1))
    assert loss(x, x, labels).item() == 0.0


def test_positive_when_styles_differ(loss):
    labels = torch.zeros(2, 32, 32, dtype=torch.int64)
    labels[:, 16:] = 1
    assert loss(_images(0), _images(1), labels).item() > 0.0


def test_regions_absent_from_both_masks_do_not_count(loss):
    x, y = _images(0), _images(1)
    labels = torch.zeros(2, 32, 32, dtype=torch.int64)
    labels[:, :, 16:] = 4
    one_hot = F.one_hot(labels, 19).permute(0, 3, 1, 2).float()
    few = SemanticStyleLoss(num_classes=5, vgg=loss.vgg)
    assert loss(x, y, one_hot).item() == pytest.approx(few(x, y, one_hot[:, :5]).item(), rel=1e-6)
    assert loss(x, y, labels).item() == pytest.approx(loss(x, y, one_hot).item(), rel=1e-6)


def test_one_region_equals_hand_computed_gram(loss):
    x, y = _images(2, n=1), _images(3, n=1)
    labels = torch.zeros(1, 32, 32, dtype=torch.int64)  # one region (background) covering the image
    fx, fy = loss.vgg(x), loss.vgg(y)
    expected = 0.0
    for name in ("relu3_1", "relu4_1", "relu5_1"):
        a, b = fx[name][0].flatten(1), fy[name][0].flatten(1)  # (C, hw)
        area = a.shape[1]
        ga, gb = a @ a.T / (area + 1e-8), b @ b.T / (area + 1e-8)
        expected += ((ga - gb) ** 2).mean().item()
    assert loss(x, y, labels).item() == pytest.approx(expected, rel=1e-4)


def test_masked_gram_normalises_by_region_area():
    feat = torch.ones(1, 2, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1  # 8 pixels
    g = masked_gram(feat, mask)
    assert torch.allclose(g, torch.ones(1, 2, 2) * 8 / (8 + 1e-8))
    assert torch.equal(masked_gram(feat, torch.zeros(1, 1, 4, 4)), torch.zeros(1, 2, 2))


def test_gradient_flows_to_restored_image_only(loss):
    x = _images(0).requires_grad_(True)
    y = _images(1).requires_grad_(True)
    labels = torch.randint(0, 3, (2, 32, 32), generator=torch.Generator().manual_seed(4))
    loss(x, y, labels).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and y.grad is None
    assert not any(p.requires_grad for p in loss.parameters())  # frozen VGG: nothing to train
    assert loss.state_dict() == {}  # and kept out of checkpoints


def test_bad_inputs(loss):
    with pytest.raises(BfrzooError, match="labels"):
        loss(_images(0), _images(1), torch.zeros(2, 5, 32, 32))
    with pytest.raises(BfrzooError, match=r"\[0, 19\)"):
        loss(_images(0), _images(1), torch.full((2, 32, 32), 19))
    with pytest.raises(BfrzooError, match="relu9_9"):
        VGG19Features(("relu9_9",), pretrained=False)


def test_vgg_pretrained_offline_is_one_clear_error():
    with pytest.raises(WeightsNotFoundError, match="vgg19-dcbb9e9d.pth"):
        VGG19Features(pretrained=True)
