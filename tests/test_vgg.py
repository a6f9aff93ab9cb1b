"""The VGG feature networks (VGG16 / VGG19 / VGGFace): torchvision topology, taps by name, weight layouts."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from bfrzoo.errors import BfrzooError, WeightsNotFoundError
from bfrzoo.losses import PerceptualLoss, StyleLoss, VGGFeatures, gram_matrix
from bfrzoo.losses.vgg import VGG_CONFIGS, layer_names


def test_layer_names_follow_the_vgg_blocks() -> None:
    v16, v19 = layer_names("vgg16"), layer_names("vgg19")
    assert list(v16)[:4] == ["relu1_1", "relu1_2", "relu2_1", "relu2_2"] and "relu5_3" in v16 and "relu5_4" not in v16
    assert len(v16) == 13 and len(v19) == 16
    assert v19["relu3_1"] == 11 and v16["relu4_3"] == 22  # torchvision ``features`` indices


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_explicit_torchvision_file_gives_torchvision_features(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    tv = getattr(torchvision.models, arch)(weights=None).eval()
    path = tmp_path / "vgg.pth"
    torch.save(tv.state_dict(), path)
    ours = VGGFeatures(("relu2_1", "relu3_1"), network=arch, pretrained=path, input_range=(0.0, 1.0))
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = tv.features[: layer_names(arch)["relu3_1"] + 1]((x - mean) / std)
        got = ours(x)
    assert torch.allclose(got["relu3_1"], ref, atol=1e-5)
    assert set(got) == {"relu2_1", "relu3_1"}


def test_vggface_oxford_layout_maps_onto_vgg16(tmp_path: Path) -> None:
    torch.manual_seed(1)
    tv = torchvision.models.vgg16(weights=None).features.eval()
    oxford, block, conv = {}, 1, 0
    for i, layer in enumerate(tv):
        if isinstance(layer, torch.nn.MaxPool2d):
            block, conv = block + 1, 0
        elif isinstance(layer, torch.nn.Conv2d):
            conv += 1
            oxford[f"conv{block}_{conv}.weight"] = layer.weight.detach().clone()
            oxford[f"conv{block}_{conv}.bias"] = layer.bias.detach().clone()
    oxford["fc6.weight"] = torch.zeros(4, 4)  # the classifier is ignored
    path = tmp_path / "vgg_face_dag.pth"
    torch.save(oxford, path)
    ours = VGGFeatures(("relu4_3",), network="vggface", pretrained=path, input_range=(0.0, 1.0))
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor((129.186279296875, 104.76238250732422, 93.59396362304688)).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = tv[:23](x * 255 - mean)  # the Oxford convention: RGB 0..255 minus the mean, unit std
        assert torch.allclose(ours(x)["relu4_3"], ref, rtol=1e-4, atol=1e-3)


def test_missing_weights_name_their_file() -> None:
    with pytest.raises(WeightsNotFoundError, match="vgg_face_dag.pth"):
        VGGFeatures(("relu1_1",), network="vggface", pretrained=True)
    with pytest.raises(WeightsNotFoundError, match="vgg16-397923af.pth"):
        VGGFeatures(("relu1_1",), network="vgg16", pretrained=True)
    with pytest.raises(BfrzooError, match="relu5_4"):
        VGGFeatures(("relu5_4",), network="vgg16", pretrained=False)  # VGG16 has no 4th conv in block 5
    assert set(VGG_CONFIGS) == {"vgg16", "vgg19", "vggface"}


def test_frozen_out_of_state_dict_and_gradients_reach_the_input() -> None:
    vgg = VGGFeatures(("relu1_2", "relu2_2"), network="vgg16", pretrained=False)
    vgg.train()
    assert not vgg.training and not vgg.extractor.net.training
    assert vgg.state_dict() == {} and not any(p.requires_grad for p in vgg.parameters())
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    vgg(x)["relu2_2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gram_matrix_and_style_loss_closed_form() -> None:
    feat = torch.arange(8.0).view(1, 2, 2, 2)
    g = gram_matrix(feat)
    f = feat.view(2, 4)
    assert torch.allclose(g[0], f @ f.t() / 8)
    vgg = VGGFeatures(("relu2_1", "relu3_1"), network="vgg16", pretrained=False)
    style = StyleLoss({"relu2_1": 1.0, "relu3_1": 2.0}, vgg=vgg)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(style(x, x)) == 0.0
    with torch.no_grad():
        fx, fy = vgg(x), vgg(y)
    expected = sum(w * (gram_matrix(fx[n]) - gram_matrix(fy[n])).square().sum(dim=(1, 2)).mean()
                   for n, w in {"relu2_1": 1.0, "relu3_1": 2.0}.items())
    assert torch.allclose(style(x, y), expected)


def test_perceptual_loss_l1_closed_form_and_shared_network() -> None:
    vgg = VGGFeatures(("relu1_2", "relu2_2"), network="vgg16", pretrained=False)
    loss = PerceptualLoss({"relu1_2": 0.5, "relu2_2": 2.0}, vgg=vgg)
    x, y = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        fx, fy = vgg(x), vgg(y)
    expected = 0.5 * (fx["relu1_2"] - fy["relu1_2"]).abs().mean() + 2.0 * (fx["relu2_2"] - fy["relu2_2"]).abs().mean()
    assert torch.allclose(loss(x, y), expected) and float(loss(x, x)) == 0.0
    with pytest.raises(BfrzooError, match="relu3_1"):
        PerceptualLoss({"relu3_1": 1.0}, vgg=vgg)
