"""Test-wide settings: offline, CPU, deterministic; and a guard that fails any test touching the network."""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ["BFRZOO_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
# An empty cache, so that no weight file on the developer's machine makes a test pass by accident.
os.environ["BFRZOO_HOME"] = tempfile.mkdtemp(prefix="bfrzoo-test-home-")
os.environ["TORCH_HOME"] = os.environ["BFRZOO_HOME"]

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address):  # type: ignore[no-untyped-def]
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1", "0.0.0.0") or host.startswith("/")):
        raise RuntimeError(f"test tried to reach the network ({address!r}); tests must stay offline")
    return _real_connect(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="module")
def psfrgan_tiny() -> dict:
    """``fixtures/psfrgan_tiny.pt``: the authors' PSFR-GAN generator and ParseNet in a tiny configuration, their
    inputs and outputs (see fixtures/README.md). The architecture configs (``config`` of the generator,
    ``parsenet_config``) have ``ch_range`` as a tuple, so ``**psfrgan_tiny["config"]`` builds the network."""
    ref = torch.load(FIXTURES / "psfrgan_tiny.pt", weights_only=True)
    for key in ("config", "parsenet_config"):
        ref[key] = {**ref[key], "ch_range": tuple(ref[key]["ch_range"])}
    return ref
