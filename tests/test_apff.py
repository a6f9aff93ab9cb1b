"""MPCNet's fusion blocks, each alone, with values: AdaIN (Eq. 4), SFT (Eq. 5-6), RCAB, APFF (Eq. 4-7) and its
ablation switches."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bfrzoo.blocks import APFF, RCAB, SFT, AdaIN


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_adain_output_has_the_style_statistics_per_channel() -> None:
    g = torch.Generator().manual_seed(0)
    content = torch.randn(2, 4, 8, 8, generator=g) * 3 + 1
    style = torch.randn(2, 4, 5, 7, generator=g) * torch.tensor([0.5, 2.0, 1.0, 4.0]).view(1, 4, 1, 1) - 2
    out = AdaIN(eps=0.0)(content, style)
    assert torch.allclose(out.mean(dim=(2, 3)), style.mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(out.std(dim=(2, 3), correction=0), style.std(dim=(2, 3), correction=0), atol=1e-4)
    # the content's normalised pattern is kept: AdaIN is an affine map of each channel
    normalised = (content - content.mean((2, 3), keepdim=True)) / content.std((2, 3), correction=0, keepdim=True)
    back = (out - out.mean((2, 3), keepdim=True)) / out.std((2, 3), correction=0, keepdim=True)
    assert torch.allclose(normalised, back, atol=1e-4)
    with pytest.raises(ValueError, match="same"):
        AdaIN()(content, style[:, :3])


def test_sft_with_alpha_one_beta_zero_is_the_identity_and_modulates_per_pixel() -> None:
    x = torch.randn(2, 6, 8, 8)
    assert torch.equal(SFT.modulate(x, torch.ones_like(x), torch.zeros_like(x)), x)
    sft = SFT(6, cond_channels=3)  # initialised as the identity (Eq. 6 with alpha = 1, beta = 0)
    cond = torch.randn(2, 3, 4, 4)  # any size: resized to the features'
    assert torch.allclose(sft(x, cond), x)
    with torch.no_grad():  # a hand-set condition mapping: alpha = 2 everywhere, beta = the condition's channel 0
        for branch in (sft.scale, sft.shift):
            for conv in (branch[0], branch[2]):
                conv.weight.zero_()
                conv.bias.zero_()
        sft.scale[2].bias.fill_(2.0)
        sft.shift[0].weight[0, 0, 1, 1] = 1.0  # hidden channel 0 = cond channel 0 (centre tap)
        sft.shift[2].weight[:, 0, 1, 1] = 1.0  # every output channel = hidden channel 0
    cond = torch.rand(2, 3, 8, 8) + 0.5  # positive: LeakyReLU keeps it
    assert torch.allclose(sft(x, cond), 2 * x + cond[:, :1], atol=1e-6)
    assert not SFT(6, 3, init_identity=False).scale[2].weight.eq(0).all()


def test_rcab_is_residual_with_squeeze_excitation_from_timm() -> None:
    from timm.layers import SEModule

    block = RCAB(32, reduction=16)
    se = block.body[-1]
    assert isinstance(se, SEModule) and se.fc1.out_channels == 2  # 32 / 16, RCAN's exact reduction
    x = torch.randn(1, 32, 6, 6)
    with torch.no_grad():
        block.body[2].weight.zero_()
        block.body[2].bias.zero_()
        assert torch.equal(block(x), x)  # zero residual branch: identity
    conv = 2 * (32 * 32 * 9 + 32)
    se_params = (32 * 2 + 2) + (2 * 32 + 32)
    assert _count(block) == conv + se_params


def test_apff_gate_returns_the_spatial_branch_when_the_gan_branch_agrees() -> None:
    """Eq. (7): F_out = (F_g2 - F_s2) softmax(F_guide) + F_s2, so F_out == F_s2 exactly when F_g2 == F_s2."""
    torch.manual_seed(0)
    block = APFF(8, parse_channels=4, num_rcab=1)
    with torch.no_grad():
        block.g_conv2.weight.zero_()
        block.s_conv2.weight.zero_()
        block.g_conv2.bias.copy_(block.s_conv2.bias)
    spatial, gan, parse = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        s2 = block.s_conv2(block.rcabs(spatial))
        assert torch.equal(block(spatial, gan, parse), s2)


@pytest.mark.parametrize("gate", ["channel", "spatial"])
def test_apff_equation_7_by_hand(gate: str) -> None:
    torch.manual_seed(1)
    block = APFF(8, parse_channels=4, num_rcab=2, gate=gate)
    spatial, gan, parse = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6), torch.randn(1, 4, 3, 3)
    with torch.no_grad():
        f_s = block.rcabs(spatial)
        f_g = AdaIN()(gan, f_s)
        guide = block.sft(torch.cat([block.g_conv1(f_g), block.s_conv1(f_s)], 1), parse)
        dim_weights = torch.softmax(guide, 1) if gate == "channel" else torch.softmax(guide.flatten(2), -1).view_as(guide)
        expected = (block.g_conv2(f_g) - block.s_conv2(f_s)) * dim_weights + block.s_conv2(f_s)
        got = block(spatial, gan, parse)
    assert torch.allclose(got, expected, atol=1e-6)
    total = dim_weights.sum(1) if gate == "channel" else dim_weights.flatten(2).sum(-1)
    assert torch.allclose(total, torch.ones_like(total))


def test_apff_ablations_remove_exactly_their_part() -> None:
    torch.manual_seed(2)
    full = APFF(8, 4, num_rcab=1)
    c = 8
    g_convs = (c * c // 2 * 9 + c // 2) + (c * c * 9 + c)
    sft = 2 * ((4 * 4 * 9 + 4) + (4 * c * 9 + c))
    no_gan, no_parse = APFF(8, 4, 1, use_gan=False), APFF(8, 4, 1, use_parsing=False)
    no_adain, no_sft = APFF(8, 4, 1, use_adain=False), APFF(8, 4, 1, use_sft=False)
    assert _count(full) - _count(no_gan) == g_convs and not hasattr(no_gan, "g_conv1")
    assert _count(full) - _count(no_parse) == sft and not hasattr(no_parse, "sft")
    assert _count(no_adain) == _count(full) and not no_adain.use_adain
    assert _count(full) - _count(no_sft) == sft - ((c + 4) * c + c)  # SFT replaced by a 1x1 fusion conv
    spatial, gan, parse = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4), torch.randn(1, 4, 4, 4)
    for ablated in (no_gan, no_parse, no_adain, no_sft):
        ablated.load_state_dict({k: v for k, v in full.state_dict().items() if k in ablated.state_dict()}, strict=False)
    with torch.no_grad():
        out = full(spatial, gan, parse)
        f_s = full.rcabs(spatial)
        s1, s2 = full.s_conv1(f_s), full.s_conv2(f_s)
        # w/o GAN prior: F_g = 0, F_out = F_s2 (1 - softmax(SFT(cat[0, F_s1])))
        guide = full.sft(torch.cat([torch.zeros_like(s1), s1], 1), parse)
        assert torch.allclose(no_gan(spatial, None, parse), s2 * (1 - torch.softmax(guide, 1)), atol=1e-6)
        # w/o parsing prior: the unmodulated guide
        g1, g2 = full.g_conv1(AdaIN()(gan, f_s)), full.g_conv2(AdaIN()(gan, f_s))
        guide = torch.cat([g1, s1], 1)
        assert torch.allclose(no_parse(spatial, gan, None), (g2 - s2) * torch.softmax(guide, 1) + s2, atol=1e-6)
        # w/o AdaIN: the raw GAN features enter f_conv1 / f_conv2
        g1, g2 = full.g_conv1(gan), full.g_conv2(gan)
        guide = full.sft(torch.cat([g1, s1], 1), parse)
        assert torch.allclose(no_adain(spatial, gan, parse), (g2 - s2) * torch.softmax(guide, 1) + s2, atol=1e-6)
        assert not torch.allclose(no_adain(spatial, gan, parse), out)


def test_apff_rejects_bad_configurations() -> None:
    with pytest.raises(ValueError, match="even"):
        APFF(7, 4)
    with pytest.raises(ValueError, match="gate"):
        APFF(8, 4, gate="pixel")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="gan features"):
        APFF(8, 4)(torch.zeros(1, 8, 4, 4), None, torch.zeros(1, 4, 4, 4))


def test_gradients_reach_every_parameter_of_the_block() -> None:
    torch.manual_seed(3)
    block = APFF(8, 4, num_rcab=2, reduction=2)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))  # leave the identity init of SFT
    gan = torch.randn(2, 8, 8, 8, requires_grad=True)
    out = block(torch.randn(2, 8, 8, 8), gan, torch.randn(2, 4, 8, 8))
    (out * torch.randn_like(out)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())
    assert gan.grad is not None and gan.grad.abs().sum() > 0
