"""The face parsing network (FPN) IS the published ParseNet: parity with the authors' code, key coverage."""
from __future__ import annotations

import json

import pytest
import torch

import bfrzoo
from bfrzoo.errors import CheckpointMismatchError, ImageInputError
from bfrzoo.models.parsenet import PARSENET_512, ParseNet, onehot_parsing


def test_parity_with_official_parsenet(psfrgan_tiny):
    net = bfrzoo.from_official("parsenet", psfrgan_tiny["parsenet_state_dict"], **psfrgan_tiny["parsenet_config"])
    assert not net.training
    with torch.no_grad():
        logits, image = net(psfrgan_tiny["parsenet_input"])
    assert (logits - psfrgan_tiny["parsenet_output_mask_logits"]).abs().max() < 1e-4
    assert (image - psfrgan_tiny["parsenet_output_image"]).abs().max() < 1e-4
    # the parity is not trivial: outputs vary across pixels and classes
    assert psfrgan_tiny["parsenet_output_mask_logits"].std() > 1e-2


def test_published_512_keys_all_map(fixtures_dir):
    manifest = json.loads((fixtures_dir / "psfrgan_512_keys.json").read_text())["parsenet"]
    with torch.device("meta"):
        net = ParseNet()  # defaults = the published 512 configuration
    own = {k: list(v.shape) for k, v in net.state_dict().items()}
    assert own == manifest


def test_module_prefix_is_stripped(psfrgan_tiny):
    state = {"module." + k: v for k, v in psfrgan_tiny["parsenet_state_dict"].items()}
    net = bfrzoo.from_official("parsenet", state, **psfrgan_tiny["parsenet_config"])
    with torch.no_grad():
        logits, _ = net(psfrgan_tiny["parsenet_input"])
    assert (logits - psfrgan_tiny["parsenet_output_mask_logits"]).abs().max() < 1e-4


def test_mismatched_checkpoint_is_one_clear_error(psfrgan_tiny):
    cfg = psfrgan_tiny["parsenet_config"] | {"res_depth": 2}
    with pytest.raises(CheckpointMismatchError, match="unexpected keys: body.2"):
        bfrzoo.from_official("parsenet", psfrgan_tiny["parsenet_state_dict"], **cfg)
    with pytest.raises(CheckpointMismatchError):
        bfrzoo.from_official("parsenet", psfrgan_tiny["generator_state_dict"], **psfrgan_tiny["parsenet_config"])


def test_wrong_input_size_is_rejected(psfrgan_tiny):
    net = ParseNet(**psfrgan_tiny["parsenet_config"]).eval()
    with pytest.raises(ImageInputError, match="64, 64"):
        net(torch.zeros(1, 3, 48, 48))


def test_onehot_parsing_is_argmax():
    logits = torch.randn(2, 19, 8, 8)
    onehot = onehot_parsing(logits)
    assert torch.equal(onehot.sum(1), torch.ones(2, 8, 8))
    assert torch.equal(onehot.argmax(1), logits.argmax(1))
    net = ParseNet(in_size=32, out_size=32, min_feat_size=16, base_ch=8, res_depth=1, ch_range=(8, 16)).eval()
    labels = net.parse(torch.rand(1, 3, 32, 32) * 2 - 1)
    assert labels.shape == (1, 32, 32) and labels.dtype == torch.int64 and labels.max() < 19


def test_released_file_resolves_from_the_cache_and_loads_through_its_converter(psfrgan_tiny, tmp_path, monkeypatch):
    """The PretrainedCfg is found in the cache under the released name, read with weights_only and mapped by the
    converter it names (here with the fixture's weights saved under that name)."""
    from bfrzoo.weights import load_checkpoint, resolve_weights

    monkeypatch.setenv("BFRZOO_HOME", str(tmp_path))
    torch.save({"module." + k: v for k, v in psfrgan_tiny["parsenet_state_dict"].items()}, tmp_path / PARSENET_512.filename)
    path = resolve_weights(PARSENET_512)
    net = bfrzoo.from_official(PARSENET_512.converter, load_checkpoint(path), **psfrgan_tiny["parsenet_config"])
    with torch.no_grad():
        assert torch.allclose(net(psfrgan_tiny["parsenet_input"])[0], psfrgan_tiny["parsenet_output_mask_logits"], atol=1e-4)


def test_decoder_features_per_scale_are_what_the_heads_see(psfrgan_tiny):
    """MPCNet's parsing prior F_parse^j: the body output at min_feat_size, then every upsampling block's output;
    the last one is exactly what the two output convs read."""
    net = bfrzoo.from_official("parsenet", psfrgan_tiny["parsenet_state_dict"], **psfrgan_tiny["parsenet_config"])
    with torch.no_grad():
        out = net.forward_features(psfrgan_tiny["parsenet_input"])
        assert sorted(out.features) == [16, 32, 64]
        assert {k: v.shape[1] for k, v in out.features.items()} == net.feature_channels()
        assert torch.equal(net.out_mask_conv(out.features[64]), out.mask_logits)
        assert torch.equal(out.mask_logits, net(psfrgan_tiny["parsenet_input"])[0])
        body = net.encoder(psfrgan_tiny["parsenet_input"])
        assert torch.allclose(out.features[16], body + net.body(body))
        assert torch.allclose(out.features[32], net.decoder[0](out.features[16]))


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="power of two"):
        ParseNet(in_size=96, min_feat_size=32)
