"""The contract every registered restorer keeps (as timm tests every model): a new model is covered by registering.

For each configurable restorer (its ``tiny`` configuration, CPU): (N, 3, S, S) in [-1, 1] -> the same shape, finite;
gradients reach every trainable parameter; evaluation is deterministic; the weights round-trip through
``restorer.pt`` (``weights_only=True``) to the same outputs; the user-facing :class:`Restorer` keeps sizes and
the [0, 1] range. Each fixed published variant (``gpen_512``) builds, on the meta device (no memory), the same class
as the configurable restorer it is declared a variant of.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import bfrzoo
from bfrzoo.interface import Restorer
from bfrzoo.registry import export_restorer, load_restorer, restorer_entry

NAMES = bfrzoo.list_restorers()
CONFIGURABLE = [n for n in NAMES if restorer_entry(n).tiny is not None]
VARIANTS = [n for n in NAMES if restorer_entry(n).variant_of is not None]


def _tiny(name: str) -> tuple[nn.Module, int]:
    torch.manual_seed(0)
    net = bfrzoo.create_restorer(name, **restorer_entry(name).tiny)
    size = getattr(net, "input_size", None) or 32
    return net, size


def _perturb(net: nn.Module) -> None:
    """Random non-zero weights everywhere (zero-initialised output layers would hide the gradient path)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


def test_every_restorer_is_covered() -> None:
    assert NAMES and sorted(CONFIGURABLE + VARIANTS) == NAMES, "declare tiny= or variant_of= when registering"
    for name in VARIANTS:
        assert restorer_entry(name).variant_of in CONFIGURABLE


@pytest.mark.parametrize("name", CONFIGURABLE)
def test_input_output_contract(name: str) -> None:
    net, size = _tiny(name)
    x = torch.rand(2, 3, size, size) * 2 - 1
    net.eval()
    with torch.no_grad():
        y = net(x)
    assert isinstance(y, torch.Tensor) and y.shape == x.shape and y.dtype == torch.float32
    # finite and about [-1, 1]; a network may overshoot (GPEN returns its generator's raw output, as released),
    # the Restorer clamps when it converts to [0, 1]
    assert torch.isfinite(y).all() and y.abs().max() < 10


@pytest.mark.parametrize("name", CONFIGURABLE)
def test_gradients_reach_every_trainable_parameter(name: str) -> None:
    net, size = _tiny(name)
    _perturb(net)
    net.train()
    x = torch.rand(2, 3, size, size) * 2 - 1
    weight = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    (net(x) * weight).sum().backward()
    aux = tuple(f"{m}." for m in getattr(net, "auxiliary_modules", ()))  # heads of training-only outputs
    trainable = {n: p for n, p in net.named_parameters() if p.requires_grad and not n.startswith(aux)}
    assert trainable
    missing = [n for n, p in trainable.items() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient for {missing[:5]}"
    for n, p in net.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n  # frozen priors stay untouched


@pytest.mark.parametrize("name", CONFIGURABLE)
def test_eval_is_deterministic(name: str) -> None:
    net, size = _tiny(name)
    _perturb(net)
    net.eval()
    x = torch.rand(1, 3, size, size) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("name", CONFIGURABLE)
def test_state_dict_round_trips_weights_only(name: str, tmp_path: Path) -> None:
    net, size = _tiny(name)
    _perturb(net)
    net.eval()
    path = export_restorer(net, name, restorer_entry(name).tiny, tmp_path / "restorer.pt")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["restorer"] == name
    back = load_restorer(path)
    assert type(back) is type(net) and not back.training
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        assert torch.equal(back(x), net(x))


@pytest.mark.parametrize("name", CONFIGURABLE)
def test_restorer_interface_keeps_size_and_range(name: str) -> None:
    net, size = _tiny(name)
    restorer = Restorer(net, device="cpu", batch_size=2)
    images = torch.rand(3, 3, size + 8, size + 4)  # not the native size: resized or padded and back
    out = restorer.restore(images)
    assert out.shape == images.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("name", VARIANTS)
def test_published_variant_builds_its_family_class(name: str) -> None:
    family = restorer_entry(restorer_entry(name).variant_of)
    with torch.device("meta"):
        variant = bfrzoo.create_restorer(name)
        small = family.factory(**family.tiny)
    assert type(variant) is type(small)
    assert sum(p.numel() for p in variant.parameters()) > 10 * sum(p.numel() for p in small.parameters())
