"""Registry, weight resolution, checkpoint loading and the Restorer wrapper."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bfrzoo
from bfrzoo.errors import BfrzooError, CheckpointMismatchError, ImageInputError, UnknownNameError, WeightsNotFoundError
from bfrzoo.interface import Restorer, from_model_range, to_model_range
from bfrzoo.registry import load_state_dict_strict, restorer_arguments
from bfrzoo.weights import PretrainedCfg, cache_dir, load_checkpoint, resolve_weights, unwrap_state_dict


def test_registry_lists_and_builds_unet() -> None:
    names = bfrzoo.list_restorers()
    assert "unet" in names and names == sorted(names)
    assert bfrzoo.list_restorers("une*") == ["unet"]
    net = bfrzoo.create_restorer("unet", base_channels=8, depth=2)
    assert isinstance(net, nn.Module)
    assert restorer_arguments("unet")["base_channels"] == 32


def test_unknown_restorer_lists_known_names() -> None:
    with pytest.raises(UnknownNameError) as err:
        bfrzoo.create_restorer("unet_xl")
    assert "unet" in str(err.value) and "Known restorers" in str(err.value)


def test_unknown_argument_is_named() -> None:
    with pytest.raises(UnknownNameError, match="base_chanels"):
        bfrzoo.create_restorer("unet", base_chanels=8)


def test_unknown_official_arch_lists_converters() -> None:
    with pytest.raises(UnknownNameError, match="official architecture"):
        bfrzoo.from_official("gpen_9000", {})


def test_untrained_unet_is_identity_and_keeps_contract() -> None:
    torch.manual_seed(0)
    net = bfrzoo.create_restorer("unet", base_channels=8, depth=2).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = net(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x)  # zero-initialised head + global residual


def test_unet_rejects_indivisible_size() -> None:
    net = bfrzoo.create_restorer("unet", base_channels=8, depth=2)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.zeros(1, 3, 30, 32))


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BFRZOO_HOME", str(tmp_path / "a"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("BFRZOO_HOME")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "t"))
    assert cache_dir() == tmp_path / "t" / "bfrzoo"


def test_weight_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BFRZOO_HOME", str(tmp_path))
    cfg = PretrainedCfg(filename="w.pth", url="https://example.invalid/w.pth", source="test")
    explicit = tmp_path / "explicit.pth"
    torch.save({"a": torch.ones(1)}, explicit)
    (tmp_path / "w.pth").write_bytes(explicit.read_bytes())
    assert resolve_weights(cfg, explicit) == explicit  # explicit beats cache
    assert resolve_weights(cfg) == tmp_path / "w.pth"  # cache beats download


def test_offline_missing_weights_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BFRZOO_HOME", str(tmp_path))
    cfg = PretrainedCfg(filename="GPEN-BFR-512.pth", url="https://example.invalid/x", source="the GPEN authors")
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights(cfg)
    msg = str(err.value)
    assert "GPEN-BFR-512.pth" in msg and "the GPEN authors" in msg and str(tmp_path / "GPEN-BFR-512.pth") in msg
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights(cfg, tmp_path / "nope.pth")


def test_failed_download_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BFRZOO_HOME", str(tmp_path))
    monkeypatch.setenv("BFRZOO_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def broken(url: str, dst: str, progress: bool = True) -> None:
        Path(dst).write_bytes(b"half")
        raise ConnectionError("no route")

    monkeypatch.setattr(torch.hub, "download_url_to_file", broken)
    cfg = PretrainedCfg(filename="x.pth", url="https://example.invalid/x.pth", source="s")
    with pytest.raises(WeightsNotFoundError, match="download failed"):
        resolve_weights(cfg)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_unwrapping_and_corrupt_file(tmp_path: Path) -> None:
    sd = {"w": torch.arange(3.0)}
    for nest in ({"g_ema": sd}, {"state_dict": sd}, {"params_ema": sd}, sd):
        torch.save(nest, tmp_path / "c.pth")
        assert torch.equal(load_checkpoint(tmp_path / "c.pth")["w"], sd["w"])
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BfrzooError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.pth")
    with pytest.raises(BfrzooError, match="no state dict"):
        unwrap_state_dict({"epoch": 3})


def test_create_restorer_loads_own_checkpoints_by_path(tmp_path: Path) -> None:
    """``pretrained=<path>`` works for every variant, released weights or not: a ``restorer.pt`` and a Lightning
    task checkpoint (whose EMA network is preferred over the raw one) both load strictly."""
    from bfrzoo.registry import export_restorer

    args = {"base_channels": 8, "depth": 2}
    torch.manual_seed(1)
    trained = bfrzoo.create_restorer("unet", **args)
    export_restorer(trained, "unet", args, tmp_path / "restorer.pt")
    loaded = bfrzoo.create_restorer("unet", pretrained=tmp_path / "restorer.pt", **args)
    for (k, a), b in zip(trained.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k

    ema = {k: v + 1.0 if v.is_floating_point() else v for k, v in trained.state_dict().items()}
    ckpt = {"state_dict": {**{f"net.{k}": v for k, v in trained.state_dict().items()},
                           **{f"net_ema.{k}": v for k, v in ema.items()}}, "epoch": 3}
    torch.save(ckpt, tmp_path / "last.ckpt")
    loaded = bfrzoo.create_restorer("unet", pretrained=str(tmp_path / "last.ckpt"), **args)
    for (k, a), b in zip(ema.items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k

    with pytest.raises(CheckpointMismatchError):
        bfrzoo.create_restorer("unet", pretrained=tmp_path / "restorer.pt", base_channels=16, depth=2)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        bfrzoo.create_restorer("unet", pretrained=tmp_path / "missing.pt", **args)
    with pytest.raises(UnknownNameError, match="no released weights"):
        bfrzoo.create_restorer("unet", pretrained=True)


def test_strict_loading_names_the_mismatch() -> None:
    net = nn.Linear(2, 3)
    with pytest.raises(CheckpointMismatchError) as err:
        load_state_dict_strict(net, {"weight": torch.zeros(3, 4), "extra": torch.zeros(1)}, source="x.pth")
    msg = str(err.value)
    assert "missing keys: bias" in msg and "unexpected keys: extra" in msg and "weight (3, 4) vs (3, 2)" in msg


def test_range_conversion_roundtrip() -> None:
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(from_model_range(to_model_range(x)), x)
    assert to_model_range(torch.zeros(1)).item() == -1.0


class _FixedSize(nn.Module):
    input_size = 32

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        return x.flip(-1)


def test_restorer_resizes_for_fixed_size_networks_and_keeps_types() -> None:
    net = _FixedSize()
    r = Restorer(net, device="cpu", batch_size=2)
    x = torch.rand(5, 3, 48, 40)
    y = r.restore(x)
    assert y.shape == x.shape and net.seen == [(2, 3, 32, 32), (2, 3, 32, 32), (1, 3, 32, 32)]
    arr = (np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)
    out = r.restore(arr)
    assert out.dtype == np.uint8 and out.shape == arr.shape
    from PIL import Image

    pil = r.restore(Image.fromarray(arr))
    assert pil.size == (40, 40)


def test_restorer_pads_for_size_divisor_and_is_exact_for_identity() -> None:
    net = bfrzoo.create_restorer("unet", base_channels=8, depth=3)
    r = Restorer(net, device="cpu")
    x = torch.rand(1, 3, 37, 45)
    torch.testing.assert_close(r.restore(x), x, atol=1e-6, rtol=0)


def test_restorer_rejects_bad_input() -> None:
    r = Restorer(bfrzoo.create_restorer("unet", base_channels=8, depth=2), device="cpu")
    with pytest.raises(ImageInputError, match="RGB"):
        r.restore(torch.rand(1, 4, 16, 16))
    with pytest.raises(ImageInputError, match="float"):
        r.restore(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ImageInputError, match="NaN"):
        r.restore(torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(ImageInputError, match="cannot restore"):
        r.restore("face.png")


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = "import bfrzoo, sys; print(int('pytorch_lightning' in sys.modules), int('torchmetrics' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ).stdout
    assert out.split() == ["0", "0"]


def test_empty_pretrained_file_is_one_clear_error(tmp_path: Path) -> None:
    """A 0-byte weight file (an interrupted copy) is named as such, not a torch unpickling traceback."""
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(BfrzooError) as err:
        bfrzoo.create_restorer("unet", pretrained=tmp_path / "empty.pt", base_channels=8, depth=2)
    assert str(err.value) == (
        f"checkpoint {str(tmp_path / 'empty.pt')!r} is empty (0 bytes): an interrupted copy or download; get the file again"
    )


def test_restorer_pt_with_arguments_its_factory_rejects_is_a_mismatch_error(tmp_path: Path) -> None:
    """A crafted or damaged restorer.pt (``base_channels: "abc"``) is refused as a CheckpointMismatchError naming
    the arguments, not a TypeError from inside the network's constructor."""
    from bfrzoo.registry import RESTORER_KIND, load_restorer

    torch.save({"kind": RESTORER_KIND, "restorer": "unet", "args": {"base_channels": "abc"}, "state_dict": {}},
               tmp_path / "restorer.pt")
    with pytest.raises(CheckpointMismatchError) as err:
        load_restorer(tmp_path / "restorer.pt")
    assert "{'base_channels': 'abc'}" in str(err.value) and "'unet' factory rejects" in str(err.value)
    torch.save({"kind": RESTORER_KIND, "restorer": "unet", "args": ["abc"], "state_dict": {}}, tmp_path / "list.pt")
    with pytest.raises(CheckpointMismatchError, match="not a mapping of architecture arguments"):
        load_restorer(tmp_path / "list.pt")


def test_loading_a_restorer_for_inference_never_imports_training_code(tmp_path: Path) -> None:
    """Inference and training meet only at the weights file: restorer.pt -> network -> restored image imports
    neither Lightning nor bfrzoo.tasks (STYLE.md)."""
    import subprocess
    import sys

    from bfrzoo.registry import export_restorer

    path = export_restorer(bfrzoo.create_restorer("unet", base_channels=8, depth=2), "unet",
                           {"base_channels": 8, "depth": 2}, tmp_path / "restorer.pt")
    code = (
        "import sys, torch; from bfrzoo.registry import load_restorer; from bfrzoo.interface import Restorer; "
        f"net = load_restorer({str(path)!r}); Restorer(net, device='cpu').restore(torch.rand(1, 3, 16, 16)); "
        "print(int('pytorch_lightning' in sys.modules), int(any(m.startswith('bfrzoo.tasks') for m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["0", "0"]
