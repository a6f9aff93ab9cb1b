"""GPEN: parity with the official code (fixture), released-checkpoint key mapping, variants, the contract."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import bfrzoo
from bfrzoo.blocks.stylegan2 import Discriminator, NoiseInjection, set_grouped_modconv
from bfrzoo.errors import CheckpointMismatchError, ImageInputError, WeightsNotFoundError
from bfrzoo.interface import Restorer, from_model_range, to_model_range
from bfrzoo.models.gpen import (
    DISCRIMINATOR_WEIGHTS,
    GPEN,
    gpen_512,
    gpen_discriminator,
    infer_gpen_config,
    official_to_bfrzoo_key,
)


@pytest.fixture(scope="module")
def tiny(fixtures_dir_module: Path) -> dict:
    return torch.load(fixtures_dir_module / "gpen_tiny.pt", weights_only=True)


@pytest.fixture(scope="module")
def fixtures_dir_module() -> Path:
    return Path(__file__).resolve().parent / "fixtures"


@pytest.mark.parametrize("grouped", [True, False])
def test_generator_reproduces_official_output(tiny: dict, grouped: bool) -> None:
    net = bfrzoo.from_official("gpen", tiny["generator_state_dict"], **tiny["config"])
    assert isinstance(net, GPEN) and not net.training
    set_grouped_modconv(net, grouped)  # the dense modulated-conv path is the same maths
    with torch.no_grad():
        out = net(tiny["input"])
    assert isinstance(out, torch.Tensor) and out.shape == tiny["output"].shape
    assert (out - tiny["output"]).abs().max().item() < 1e-4


def test_generator_config_is_read_from_checkpoint(tiny: dict) -> None:
    cfg = infer_gpen_config(tiny["generator_state_dict"])
    assert cfg == {**tiny["config"], "noise_mode": "concat"}
    net = bfrzoo.from_official("gpen", tiny["generator_state_dict"])
    with torch.no_grad():
        assert (net(tiny["input"]) - tiny["output"]).abs().max().item() < 1e-4


def test_discriminator_reproduces_official_output(tiny: dict) -> None:
    d = bfrzoo.from_official("gpen_discriminator", tiny["discriminator_state_dict"])
    assert isinstance(d, Discriminator) and d.stddev_group is None
    with torch.no_grad():
        out = d(tiny["discriminator_input"])
    assert (out - tiny["discriminator_output"]).abs().max().item() < 1e-4


def test_encoder_features_enter_both_convs_of_a_resolution(tiny: dict) -> None:
    net = bfrzoo.from_official("gpen", tiny["generator_state_dict"])
    seen: dict[str, torch.Tensor] = {}
    for name, m in net.generator.named_modules():
        if isinstance(m, NoiseInjection):
            m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args[1]))
    with torch.no_grad():
        _, feats = net.encode(tiny["input"])
        net(tiny["input"])
    assert seen["conv1.noise"] is not None and torch.equal(seen["conv1.noise"], feats[-1])
    assert torch.equal(seen["convs.0.noise"], feats[-2]) and torch.equal(seen["convs.1.noise"], feats[-2])
    assert torch.equal(seen["convs.6.noise"], feats[0]) and torch.equal(seen["convs.7.noise"], feats[0])


def test_released_512_keys_map_one_to_one(fixtures_dir_module: Path) -> None:
    keys = json.loads((fixtures_dir_module / "gpen_512_keys.json").read_text())
    with torch.device("meta"):
        g, d = gpen_512(), gpen_discriminator(512)
    own = {k: tuple(v.shape) for k, v in g.state_dict().items()}
    mapped = {official_to_bfrzoo_key(k): tuple(v) for k, v in keys["generator"].items()}
    assert len(mapped) == len(keys["generator"]) == 163  # the key map is injective
    assert mapped == own  # every key has a parameter/buffer of the same shape, none left over
    assert {k: tuple(v.shape) for k, v in d.state_dict().items()} == {k: tuple(v) for k, v in keys["discriminator"].items()}
    meta_state = {k: torch.empty(v, device="meta") for k, v in keys["generator"].items()}
    assert infer_gpen_config(meta_state) == dict(size=512, style_dim=512, n_mlp=8, channel_multiplier=2, narrow=1.0, noise_mode="concat")


def test_converter_rejects_incomplete_or_wrong_checkpoints(tiny: dict) -> None:
    state = dict(tiny["generator_state_dict"])
    state.pop("generator.convs.3.noise.weight")
    with pytest.raises(CheckpointMismatchError, match="convs.3.noise.weight"):
        bfrzoo.from_official("gpen", state)
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        bfrzoo.from_official("gpen", tiny["generator_state_dict"], channel_multiplier=2)
    with pytest.raises(CheckpointMismatchError, match="not a GPEN generator"):
        bfrzoo.from_official("gpen", tiny["discriminator_state_dict"])


def test_latents_are_the_mapped_code_broadcast(tiny: dict) -> None:
    net = bfrzoo.from_official("gpen", tiny["generator_state_dict"])
    with torch.no_grad():
        image, latent = net.forward_with_latents(tiny["input"])
        z, _ = net.encode(tiny["input"])
        w = net.generator.style(z)
    assert latent.shape == (2, net.generator.n_latent, 64)
    torch.testing.assert_close(latent, w.unsqueeze(1).expand_as(latent))
    torch.testing.assert_close(image, tiny["output"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["add", "none"])
def test_table1_noise_ablations(mode: str) -> None:
    torch.manual_seed(0)
    net = bfrzoo.create_restorer("gpen", size=32, style_dim=16, n_mlp=2, narrow=1 / 32, noise_mode=mode)
    c4 = net.generator.channels[4]
    assert net.generator.conv1.activate.bias.shape == (c4,)  # no doubled channels without concat
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = net(x)
        z, feats = net.encode(x)
        if mode == "none":  # the output depends on the encoder only through z
            expected = net.generator(z).image
        else:
            for m in net.modules():
                if isinstance(m, NoiseInjection):
                    m.weight.fill_(0.5)
            out = net(x)
            r = feats[::-1]
            expected = net.generator(z, noise=[r[0], r[1], r[1], r[2], r[2], r[3], r[3]]).image
    torch.testing.assert_close(out, expected)


def test_freeze_prior_trains_only_the_encoder() -> None:
    net = bfrzoo.create_restorer("gpen", size=16, style_dim=8, n_mlp=1, narrow=1 / 32)
    net.freeze_prior()
    net(torch.rand(1, 3, 16, 16)).square().mean().backward()
    assert all(p.grad is None and not p.requires_grad for p in net.generator.parameters())
    assert all(p.grad is not None for p in net.encoder.parameters()) and net.final_linear.weight.grad is not None
    net.freeze_prior(False)
    assert all(p.requires_grad for p in net.parameters())


def test_registry_variants_and_offline_weights_error() -> None:
    assert set(bfrzoo.list_restorers("gpen*")) >= {"gpen", "gpen_256", "gpen_512", "gpen_1024"}
    with pytest.raises(WeightsNotFoundError, match="GPEN-BFR-512.pth"):
        bfrzoo.create_restorer("gpen_512", pretrained=True)
    with pytest.raises(WeightsNotFoundError, match="GPEN-BFR-256-D.pth"):
        gpen_discriminator(256, pretrained=True)
    cfg = bfrzoo.registry.restorer_entry("gpen_256").pretrained
    assert cfg is not None and cfg.converter == "gpen" and cfg.url is not None and cfg.url.endswith("/GPEN-BFR-256.pth")
    assert DISCRIMINATOR_WEIGHTS[512].converter == "gpen_discriminator"


def test_pretrained_files_load_through_the_converters(tiny: dict, tmp_path: Path) -> None:
    g_file, d_file = tmp_path / "GPEN-tiny.pth", tmp_path / "GPEN-tiny-D.pth"
    torch.save({"g_ema": tiny["generator_state_dict"]}, g_file)  # nested, as training checkpoints are
    torch.save(tiny["discriminator_state_dict"], d_file)
    net = bfrzoo.from_official("gpen", g_file)
    d = gpen_discriminator(64, pretrained=d_file)
    assert d.training  # built for fine-tuning
    with torch.no_grad():
        assert (net(tiny["input"]) - tiny["output"]).abs().max().item() < 1e-4
        assert (d(tiny["discriminator_input"]) - tiny["discriminator_output"]).abs().max().item() < 1e-4


def test_wrong_input_size_is_one_clear_error() -> None:
    net = bfrzoo.create_restorer("gpen")
    assert net.input_size == 64
    with pytest.raises(ImageInputError, match="64x64"):
        net(torch.zeros(1, 3, 48, 48))


def test_restorer_resizes_to_input_size_and_back() -> None:
    torch.manual_seed(0)
    net = bfrzoo.create_restorer("gpen", size=32, style_dim=16, n_mlp=2, narrow=1 / 32)
    x = torch.rand(2, 3, 40, 56)
    out = Restorer(net, device="cpu").restore(x)
    assert out.shape == x.shape
    with torch.no_grad():
        small = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        y = from_model_range(net(to_model_range(small)))
        ref = F.interpolate(y, size=(40, 56), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
