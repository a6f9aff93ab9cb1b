"""PSFR-GAN generator parity with the authors' code, the restorer contract, the discriminator and GAN losses."""
from __future__ import annotations

import json

import pytest
import torch

import bfrzoo
from bfrzoo.errors import CheckpointMismatchError, ImageInputError, WeightsNotFoundError
from bfrzoo.interface import Restorer
from bfrzoo.losses.adversarial import (
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    logistic_d_loss,
    logistic_g_loss,
    r1_penalty,
)
from bfrzoo.models.multiscale_discriminator import MultiScaleDiscriminator
from bfrzoo.models.parsenet import ParseNet, onehot_parsing
from bfrzoo.models.psfrgan import PSFRGAN, PSFRGenerator

TINY = dict(out_size=64, ch_range=(32, 64), parser_min_feat_size=16, parser_base_ch=16, parser_res_depth=3,
            parser_ch_range=(16, 64))


def _tiny_restorer(ref) -> PSFRGAN:
    net = bfrzoo.create_restorer("psfrgan", **TINY)
    net.generator.load_state_dict(ref["generator_state_dict"])
    net.parser.load_state_dict(ref["parsenet_state_dict"])
    return net.eval()


def test_generator_parity_with_official(psfrgan_tiny):
    net = bfrzoo.from_official("psfrgan_generator", psfrgan_tiny["generator_state_dict"], **psfrgan_tiny["config"])
    assert not net.training
    with torch.no_grad():
        out = net(psfrgan_tiny["input_lq"], psfrgan_tiny["input_parsing_onehot"])
    assert (out - psfrgan_tiny["output"]).abs().max() < 1e-4
    # eval mode must not run a power iteration: the stored u/v stay untouched and a second call agrees
    assert torch.equal(net.img_out.weight_u, psfrgan_tiny["generator_state_dict"]["img_out.weight_u"])
    with torch.no_grad():
        assert torch.equal(net(psfrgan_tiny["input_lq"], psfrgan_tiny["input_parsing_onehot"]), out)


def test_generator_uses_parsing_and_lq(psfrgan_tiny):
    net = bfrzoo.from_official("psfrgan_generator", psfrgan_tiny["generator_state_dict"], **psfrgan_tiny["config"])
    lq, parsing = psfrgan_tiny["input_lq"], psfrgan_tiny["input_parsing_onehot"]
    with torch.no_grad():
        base = net(lq, parsing)
        assert (net(lq, parsing.roll(5, dims=-1)) - base).abs().max() > 1e-3
        assert (net(-lq, parsing) - base).abs().max() > 1e-3


def test_published_512_keys_all_map(fixtures_dir):
    manifest = json.loads((fixtures_dir / "psfrgan_512_keys.json").read_text())
    with torch.device("meta"):
        gen, disc = PSFRGenerator(), MultiScaleDiscriminator()
    assert {k: list(v.shape) for k, v in gen.state_dict().items()} == manifest["generator"]
    assert {k: list(v.shape) for k, v in disc.state_dict().items()} == manifest["discriminator"]


def test_mismatched_generator_checkpoint(psfrgan_tiny):
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        bfrzoo.from_official("psfrgan_generator", psfrgan_tiny["generator_state_dict"], out_size=64, ch_range=(32, 128))
    with pytest.raises(CheckpointMismatchError, match="parsing network"):
        bfrzoo.from_official("psfrgan", psfrgan_tiny["parsenet_state_dict"], **TINY)


def test_full_converter_with_parser(psfrgan_tiny):
    ref = psfrgan_tiny
    net = bfrzoo.from_official(
        "psfrgan", ref["generator_state_dict"], parser_state_dict=ref["parsenet_state_dict"], **TINY
    )
    with torch.no_grad():
        assert torch.equal(net(ref["parsenet_input"]), _tiny_restorer(ref)(ref["parsenet_input"]))


def test_restorer_runs_parser_then_generator(psfrgan_tiny):
    net = _tiny_restorer(psfrgan_tiny)
    lq = psfrgan_tiny["parsenet_input"]
    with torch.no_grad():
        out = net(lq)
        onehot = onehot_parsing(net.parser(lq)[0])
        expected = net.generator(lq, onehot).clamp(-1, 1)
    assert out.shape == (2, 3, 64, 64)
    assert torch.equal(out, expected)
    assert out.min() >= -1 and out.max() <= 1
    with torch.no_grad():
        assert torch.equal(net(lq), out)  # deterministic
    assert net.input_size == 64 and isinstance(net.parser, ParseNet) and isinstance(net.generator, PSFRGenerator)


def test_restorer_through_user_interface(psfrgan_tiny):
    net = _tiny_restorer(psfrgan_tiny)
    img = torch.rand(1, 3, 50, 50)
    out = Restorer(net).restore(img)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1


def test_restorer_rejects_wrong_size():
    net = bfrzoo.create_restorer("psfrgan", **TINY).eval()
    with pytest.raises(ImageInputError, match="resize"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ImageInputError):
        net.generator(torch.zeros(1, 3, 64, 64), torch.zeros(1, 18, 64, 64))


def test_parser_can_be_frozen_for_training():
    torch.manual_seed(0)
    net = bfrzoo.create_restorer("psfrgan", **TINY).train()
    net.parser.requires_grad_(False)
    out = net(torch.rand(1, 3, 64, 64) * 2 - 1)
    out.mean().backward()
    assert all(p.grad is None for p in net.parser.parameters())
    assert net.generator.const_input.grad is not None and net.generator.const_input.grad.abs().sum() > 0


def test_psfrgan_512_offline_is_one_clear_error():
    with pytest.raises(WeightsNotFoundError, match="psfrgan_epoch15_net_G.pth"):
        bfrzoo.create_restorer("psfrgan_512", pretrained=True)


def test_discriminator_scales_and_features():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(in_ch=22, base_ch=8, max_ch=16, depth=2, num_d=3)
    x = torch.randn(2, 22, 64, 64)
    scores, feats = disc(x)
    assert [tuple(s.shape) for s in scores] == [(2, 1, 14, 14), (2, 1, 6, 6), (2, 1, 2, 2)]
    assert [len(f) for f in feats] == [3, 3, 3]
    assert hasattr(disc.D_pool[0].model[0].conv2d, "weight_orig")  # spectral norm
    with pytest.raises(ValueError, match="at least"):
        disc(torch.randn(1, 22, 32, 32))


def test_hinge_and_logistic_losses_values():
    real, fake = [torch.tensor([2.0, 0.5])], [torch.tensor([-2.0, 0.0])]
    # E[max(0, 1 - r)] = (0 + 0.5) / 2 ; E[max(0, 1 + f)] = (0 + 1) / 2
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.75)
    assert hinge_g_loss([torch.tensor([1.0, 3.0]), torch.tensor([-1.0])]).item() == pytest.approx(-2.0 + 1.0)
    sp = torch.nn.functional.softplus
    assert logistic_d_loss(real[0], fake[0]).item() == pytest.approx((sp(-real[0]).mean() + sp(fake[0]).mean()).item())
    assert logistic_g_loss(fake[0]).item() == pytest.approx(sp(-fake[0]).mean().item())


def test_r1_penalty_matches_analytic_gradient():
    x = torch.randn(3, 2, requires_grad=True)
    w = torch.tensor([[1.0, -2.0]])
    scores = (x * w).sum(1) + (x**2).sum(1)
    expected = ((w + 2 * x.detach()) ** 2).sum(1).mean()
    assert r1_penalty(scores, x).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError):
        r1_penalty(scores, torch.randn(3, 2))


def test_feature_matching_loss():
    a = [[torch.ones(1, 2, 2, 2), torch.zeros(1, 1, 2, 2)]]
    b = [[torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2)]]
    assert feature_matching_loss(a, b).item() == pytest.approx(1.0)
    assert feature_matching_loss(a, a).item() == 0.0


def test_discriminator_closed_form_on_a_constant_image():
    """No reference output of the authors' discriminator exists (none was released), so its maths is checked in
    closed form: with every conv weight constant, one power iteration (training mode) gives the exact spectral
    norm of the rank-1 weight, so each spectrally normalised 3x3 conv maps a constant c > 0 to
    c * sqrt(9 * C_in / C_out); LeakyReLU and average pooling keep positive constants, and the 1/2, 1/4 scales of
    the pyramid see the same constant image."""
    disc = MultiScaleDiscriminator(in_ch=4, base_ch=8, max_ch=16, depth=2, num_d=3)
    for m in disc.modules():
        if hasattr(m, "weight_orig"):
            with torch.no_grad():
                m.weight_orig.fill_(0.3)
                m.bias.zero_()
    x = torch.full((1, 4, 64, 64), 0.5)
    disc.train()
    disc(x)  # one power iteration: u, v converge for rank-1 weights
    disc.eval()
    with torch.no_grad():
        scores, feats = disc(x)
    chans = [4, 8, 16, 16]  # input, first conv, then min(8 * 2**i, 16) after each of the 2 downsampling layers
    value = 0.5
    for c_in, c_out in zip(chans[:-1], chans[1:]):
        value *= (9 * c_in / c_out) ** 0.5
    value *= (9 * 16 / 1) ** 0.5  # the score conv (unpadded, 1 output channel)
    assert len(scores) == 3 and [s.shape[-1] for s in scores] == [64 // 4 - 2, 32 // 4 - 2, 16 // 4 - 2]
    for s in scores:
        assert torch.allclose(s, torch.full_like(s, value), rtol=1e-4)
    assert len(feats[0]) == 3 and feats[0][1].shape == (1, 16, 32, 32)


def test_discriminator_converter_roundtrip():
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(in_ch=22, base_ch=8, max_ch=16, depth=2, num_d=3).eval()
    state = {"module." + k: v for k, v in disc.state_dict().items()}
    loaded = bfrzoo.from_official("psfrgan_discriminator", state, base_ch=8, max_ch=16, depth=2, num_d=3)
    x = torch.randn(1, 22, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(disc(x)[0], loaded(x)[0], strict=True))
    with pytest.raises(CheckpointMismatchError):
        bfrzoo.from_official("psfrgan_discriminator", state, base_ch=8, max_ch=32, depth=2, num_d=3)
