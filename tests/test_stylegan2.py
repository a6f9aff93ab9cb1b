"""StyleGAN2 blocks: resampling, modulated conv batching, noise modes, generator and discriminator invariants."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bfrzoo.blocks.stylegan2 import (
    Blur,
    Discriminator,
    EqualLinear,
    Generator,
    ModulatedConv2d,
    NoiseInjection,
    StyledConv,
    ToRGB,
    Upsample,
    fused_leaky_relu,
    make_blur_kernel,
    set_grouped_modconv,
    stylegan2_channels,
    stylegan2_width,
    upfirdn2d,
)


def _upfirdn_reference(x: torch.Tensor, k: torch.Tensor, up: int, down: int, pad: tuple[int, int]) -> torch.Tensor:
    """Textbook upfirdn with explicit loops: zero-insert, pad/crop, sum_{a,b} x[i - a, j - b] k[a, b], subsample."""
    n, c, h, w = x.shape
    big = torch.zeros(n, c, h * up, w * up, dtype=torch.float64)
    big[..., ::up, ::up] = x.double()
    p0, p1 = pad
    size = h * up + p0 + p1
    padded = torch.zeros(n, c, size, size, dtype=torch.float64)
    for i in range(size):
        for j in range(size):
            si, sj = i - p0, j - p0
            if 0 <= si < h * up and 0 <= sj < w * up:
                padded[..., i, j] = big[..., si, sj]
    kh = k.shape[0]
    out_size = size - kh + 1
    out = torch.zeros(n, c, out_size, out_size, dtype=torch.float64)
    kd = k.double()
    for i in range(out_size):
        for j in range(out_size):
            # true convolution: out[i, j] = sum_ab padded[i + kh - 1 - a, j + kh - 1 - b] * k[a, b]
            window = padded[..., i : i + kh, j : j + kh]
            out[..., i, j] = (window * torch.flip(kd, (0, 1))).sum(dim=(-1, -2))
    return out[..., ::down, ::down].float()


@pytest.mark.parametrize("up,down,pad", [(1, 1, (2, 1)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (1, 0)), (1, 1, (-1, 1))])
def test_upfirdn2d_matches_direct_convolution(up: int, down: int, pad: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 7, generator=g)
    k = torch.rand(4, 4, generator=g)  # not symmetric: catches a missing kernel flip
    out = upfirdn2d(x, k, up=up, down=down, pad=pad)
    ref = _upfirdn_reference(x, k, up, down, pad)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_blur_and_upsample_keep_constant_images() -> None:
    k = make_blur_kernel((1, 3, 3, 1))
    assert k.shape == (4, 4) and math.isclose(float(k.sum()), 1.0, rel_tol=1e-6)
    assert torch.allclose(k, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    x = torch.full((1, 2, 8, 8), 0.7)
    up = Upsample((1, 3, 3, 1))(x)
    assert up.shape == (1, 2, 16, 16)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 0.7))
    blurred = Blur((1, 3, 3, 1), pad=(2, 1))(x)
    assert blurred.shape == x.shape
    torch.testing.assert_close(blurred[..., 2:-2, 2:-2], x[..., 2:-2, 2:-2])


def test_fused_leaky_relu_values() -> None:
    x = torch.tensor([[-1.0, 0.5]]).view(1, 2, 1, 1)
    bias = torch.tensor([0.0, 0.5])
    out = fused_leaky_relu(x, bias).flatten()
    torch.testing.assert_close(out, torch.tensor([-0.2 * math.sqrt(2), 1.0 * math.sqrt(2)]))


def test_equal_linear_lr_multiplier_scales_weight_and_bias() -> None:
    lin = EqualLinear(4, 3, bias_init=2.0, lr_mul=0.01)
    x = torch.randn(5, 4)
    expected = x @ (lin.weight * 0.01 / 2.0).t() + lin.bias * 0.01
    torch.testing.assert_close(lin(x), expected)


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_grouped_modulated_conv_equals_per_sample_loop(upsample: bool, demodulate: bool) -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 5, 3, style_dim=6, demodulate=demodulate, upsample=upsample)
    x, style = torch.randn(3, 4, 8, 8), torch.randn(3, 6)
    batched = conv(x, style)
    for i in range(3):
        s = F.linear(style[i : i + 1], conv.modulation.weight * conv.modulation.scale, conv.modulation.bias)  # (1, 4)
        w = conv.weight[0] / math.sqrt(4 * 9) * s.view(1, 4, 1, 1)  # (5, 4, 3, 3)
        if demodulate:
            w = w / torch.sqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        if upsample:
            ref = F.conv_transpose2d(x[i : i + 1], w.transpose(0, 1), stride=2)
            ref = upfirdn2d(ref, make_blur_kernel((1, 3, 3, 1)) * 4, pad=(1, 1))
        else:
            ref = F.conv2d(x[i : i + 1], w, padding=1)
        torch.testing.assert_close(batched[i : i + 1], ref, atol=1e-5, rtol=1e-5)
    assert batched.shape == ((3, 5, 16, 16) if upsample else (3, 5, 8, 8))


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [False, True])
def test_dense_modulated_conv_equals_grouped(upsample: bool, demodulate: bool) -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 5, 3, style_dim=6, demodulate=demodulate, upsample=upsample)
    x, style = torch.randn(3, 4, 8, 8), torch.randn(3, 6) * 2
    grouped = conv(x, style)
    conv.grouped = False
    torch.testing.assert_close(conv(x, style), grouped, atol=1e-5, rtol=1e-5)


def test_generator_dense_path_equals_grouped_path() -> None:
    g = _tiny("concat")
    z = torch.randn(2, 8)
    noise = [torch.randn(2, g.channels[4], 4 * 2 ** ((i + 1) // 2), 4 * 2 ** ((i + 1) // 2)) for i in range(g.num_layers)]
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, NoiseInjection):
                m.weight.fill_(0.5)
        ref = g(z, noise=noise).image
        out = set_grouped_modconv(g, False)(z, noise=noise).image
    assert all(not m.grouped for m in g.modules() if isinstance(m, ModulatedConv2d))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_demodulation_normalises_each_output_filter() -> None:
    conv = ModulatedConv2d(4, 5, 3, style_dim=6)
    w = conv.modulated_weight(torch.randn(2, 6) * 3)
    torch.testing.assert_close(w.pow(2).sum(dim=(2, 3, 4)), torch.ones(2, 5), atol=1e-4, rtol=1e-4)


def test_noise_modes() -> None:
    x, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    add, cat, none = NoiseInjection("add"), NoiseInjection("concat"), NoiseInjection("none")
    with torch.no_grad():
        add.weight.fill_(0.5)
        cat.weight.fill_(0.25)
    torch.testing.assert_close(add(x, noise), x + 0.5 * noise)
    torch.testing.assert_close(cat(x, noise), torch.cat([x, 0.25 * noise], dim=1))
    assert none(x, noise) is x and len(list(none.parameters())) == 0
    # add with no noise given draws one fresh single-channel map broadcast over channels
    d = add(x) - x
    torch.testing.assert_close(d, d[:, :1].expand_as(d))
    with pytest.raises(ValueError, match="noise_mode"):
        NoiseInjection("mul")  # type: ignore[arg-type]


def test_concat_noise_doubles_channels_seen_by_activation_and_next_layer() -> None:
    conv = StyledConv(4, 6, 3, style_dim=8, noise_mode="concat")
    assert conv.activate.bias.shape == (12,) and conv.out_channels == 12
    g = Generator(16, style_dim=8, n_mlp=2, narrow=1 / 32, noise_mode="concat")
    assert g.convs[0].conv.weight.shape[2] == 2 * g.channels[4]
    assert g.to_rgbs[-1].conv.weight.shape[2] == 2 * g.channels[16]
    assert isinstance(g.to_rgb1, ToRGB)


def _tiny(noise_mode: str = "add") -> Generator:
    torch.manual_seed(1)
    return Generator(16, style_dim=8, n_mlp=2, narrow=1 / 32, noise_mode=noise_mode)  # type: ignore[arg-type]


def test_generator_noise_none_is_deterministic_and_add_uses_noise() -> None:
    z = torch.randn(2, 8)
    g = _tiny("none")
    assert not any("noise" in k for k in g.state_dict())
    torch.testing.assert_close(g(z).image, g(z).image)
    g = _tiny("add")
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, NoiseInjection):
                m.weight.fill_(1.0)
    fixed = [torch.zeros(2, 1, 4 * 2 ** ((i + 1) // 2), 4 * 2 ** ((i + 1) // 2)) for i in range(g.num_layers)]
    torch.testing.assert_close(g(z, noise=fixed).image, g(z, noise=fixed).image)
    assert not torch.allclose(g(z).image, g(z).image)  # random noise when none is given


def test_generator_latents_truncation_and_mixing() -> None:
    g = _tiny("none")
    z1, z2 = torch.randn(2, 8), torch.randn(2, 8)
    out = g(z1, return_features=True)
    assert out.image.shape == (2, 3, 16, 16) and out.latent.shape == (2, g.n_latent, 8) and g.n_latent == 6
    assert out.features is not None and sorted(out.features) == [4, 8, 16]
    assert out.features[16].shape == (2, g.channels[16], 16, 16)
    torch.testing.assert_close(out.latent[:, 3], g.get_latent(z1))
    mixed = g([z1, z2], inject_index=2).latent
    torch.testing.assert_close(mixed[:, 1], g.get_latent(z1))
    torch.testing.assert_close(mixed[:, 2], g.get_latent(z2))
    # truncation psi = 0 maps every z to the truncation latent
    w_mean = g.mean_latent(64)
    a = g(z1, truncation=0.0, truncation_latent=w_mean).image
    b = g(z2, truncation=0.0, truncation_latent=w_mean).image
    torch.testing.assert_close(a[0], b[1])
    # W+ input reproduces the broadcast path
    torch.testing.assert_close(g(out.latent, input_is_latent=True).image, out.image)
    with pytest.raises(ValueError, match="truncation_latent"):
        g(z1, truncation=0.5)


def test_generator_freeze_resolutions() -> None:
    g = _tiny("none")
    g.freeze(resolutions=[4, 8], mapping=True)
    assert not any(p.requires_grad for p in g.style.parameters())
    assert not any(p.requires_grad for p in g.conv1.parameters())
    assert all(p.requires_grad for p in g.to_rgbs[1].parameters())
    g.freeze(frozen=False)
    assert all(p.requires_grad for p in g.parameters())
    with pytest.raises(ValueError, match="resolution"):
        g.layers_at(32)


def test_channel_rule() -> None:
    assert stylegan2_channels(2, 1.0) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32, 2048: 16}
    assert stylegan2_channels(1, 0.5)[256] == 32


@pytest.mark.parametrize("channel_multiplier,narrow", [(1, 0.5), (2, 1.0), (2, 0.25), (4, 0.0625)])
def test_channel_rule_inverse(channel_multiplier: int, narrow: float) -> None:
    """stylegan2_width reads (channel_multiplier, narrow) back from the channels at 4x4 and any resolution >= 64;
    below 64 the multiplier does not show and 1 is returned."""
    ch = stylegan2_channels(channel_multiplier, narrow)
    for res in (64, 128, 256, 512):
        assert stylegan2_width(ch[4], ch[res], res) == (channel_multiplier, narrow)
    assert stylegan2_width(ch[4], ch[32], 32) == (1, narrow)


def test_discriminator_minibatch_stddev_group() -> None:
    torch.manual_seed(0)
    d_all = Discriminator(16, narrow=1 / 32, stddev_group=None)
    x = torch.randn(4, 16, 4, 4)
    y = d_all.minibatch_stddev(x)
    expected = torch.sqrt(x.var(0, unbiased=False) + 1e-8).mean()
    torch.testing.assert_close(y[:, 16], expected.expand(4, 4, 4))
    d2 = Discriminator(16, narrow=1 / 32, stddev_group=2)
    y2 = d2.minibatch_stddev(x)
    # groups are samples {0, 2} and {1, 3} (strided), as in StyleGAN2
    torch.testing.assert_close(y2[1, 16], torch.sqrt(x[1::2].var(0, unbiased=False) + 1e-8).mean().expand(4, 4))
    with pytest.raises(ValueError, match="divisible"):
        Discriminator(16, narrow=1 / 32, stddev_group=4).minibatch_stddev(torch.randn(6, 16, 4, 4))
    assert d_all(torch.randn(4, 3, 16, 16)).shape == (4, 1)


def test_discriminator_features_lead_to_the_same_logits() -> None:
    torch.manual_seed(0)
    d = Discriminator(16, narrow=1 / 32, stddev_group=None)
    x = torch.randn(2, 3, 16, 16)
    logits, feats = d.forward_with_features(x)
    torch.testing.assert_close(logits, d(x))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 4]
    torch.testing.assert_close(feats[1], d.convs[1](feats[0]))


# ------------------------------------------------------------------------------ noise_channels and FreezeD
def test_concat_noise_takes_its_own_channel_count() -> None:
    """MMRB injects decoder features whose width differs from the generator's: out = out_ch + noise_channels."""
    conv = StyledConv(8, 6, 3, style_dim=4, noise_mode="concat", noise_channels=3)
    assert conv.out_channels == 9 and conv.activate.bias.shape == (9,)
    x, style, feat = torch.randn(2, 8, 5, 5), torch.randn(2, 4), torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        conv.noise.weight.fill_(0.5)
        out = conv(x, style, feat)
        # the injected half is exactly leaky(0.5 * feat + bias) * sqrt(2)
        expected = F.leaky_relu(0.5 * feat + conv.activate.bias[6:].view(1, 3, 1, 1), 0.2) * 2**0.5
    assert out.shape == (2, 9, 5, 5) and torch.allclose(out[:, 6:], expected, atol=1e-6)
    with pytest.raises(ValueError, match="3 channels"):
        conv(x, style, torch.randn(2, 4, 5, 5))
    gen = Generator(16, style_dim=8, n_mlp=1, narrow=1 / 64, noise_mode="concat", noise_channels={8: 2, 16: 5})
    assert gen.convs[0].out_channels == gen.channels[8] + 2 and gen.convs[3].out_channels == gen.channels[16] + 5
    assert gen.conv1.out_channels == 2 * gen.channels[4]  # resolutions not given keep GPEN's layout
    noise = [None, torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8), torch.randn(1, 5, 16, 16), torch.randn(1, 5, 16, 16)]
    assert gen(torch.randn(1, 8), noise=noise).image.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="resolutions"):
        Generator(16, style_dim=8, n_mlp=1, narrow=1 / 64, noise_mode="concat", noise_channels={32: 2})


def test_freezed_keeps_exactly_the_first_layers_unchanged_by_an_optimiser_step() -> None:
    torch.manual_seed(0)
    disc = Discriminator(32, channel_multiplier=1, narrow=1 / 32)
    layers = disc.conv_layers()
    assert len(layers) == 1 + 2 * 3 + 1  # fromRGB, conv1 / conv2+skip of 3 residual blocks, final_conv
    frozen = disc.freeze(5)
    assert frozen[0] == "convs.0.0.weight" and any(n.startswith("convs.2.skip") for n in frozen)
    assert not any(n.startswith(("convs.3.", "final")) for n in frozen)
    disc.requires_grad_(True)  # what the GAN tasks do before every discriminator step: FreezeD must survive it
    before = {n: p.detach().clone() for n, p in disc.named_parameters()}
    opt = torch.optim.Adam([p for p in disc.parameters()], lr=0.1)
    disc(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    for name, p in disc.named_parameters():
        if name in frozen:
            assert torch.equal(p, before[name]) and p.grad is None, name
        elif name.endswith("weight"):
            assert not torch.equal(p, before[name]), name
    disc.freeze(5, frozen=False)
    assert all(p.requires_grad for p in disc.parameters())
    with pytest.raises(ValueError, match=r"\[0, 8\]"):
        disc.freeze(9)
