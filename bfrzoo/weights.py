"""Weight resolution for every pretrained piece (released checkpoints, LPIPS/FID/VGG backbones, face tools).

Order: an explicit file > the local cache > a download. When a file is missing and cannot be downloaded
(offline, or ``BFRZOO_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``), ONE :class:`WeightsNotFoundError` names the file,
where it comes from and where to place it. Checkpoints are read with ``torch.load(weights_only=True)``.

Cache folder: ``$BFRZOO_HOME`` if set, else ``$TORCH_HOME/bfrzoo`` (``~/.cache/torch/bfrzoo`` by default).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from bfrzoo.errors import BfrzooError, WeightsNotFoundError

#: Keys under which checkpoints nest the state dict, tried in order.
NESTED_KEYS: tuple[str, ...] = ("g_ema", "params_ema", "state_dict", "params", "model", "net_G", "generator")


@dataclass(frozen=True)
class PretrainedCfg:
    """Where a weight file lives and what it is.

    Attributes:
        filename: the file name in the cache folder.
        url: where it is downloaded from (``None``: not downloadable, the user must place it).
        source: who released it and where to find it, for humans.
        license: the licence of the weights.
        sha256: optional checksum prefix checked after a download.
        converter: the :func:`bfrzoo.from_official` architecture that maps its keys (``None``: bfrzoo layout).
    """

    filename: str
    url: str | None
    source: str
    license: str = "unknown: see the source"
    sha256: str | None = None
    converter: str | None = None


def cache_dir() -> Path:
    """The folder where weight files are looked up and downloaded to."""
    if os.environ.get("BFRZOO_HOME"):
        return Path(os.environ["BFRZOO_HOME"]).expanduser()
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(torch_home).expanduser() / "bfrzoo"


def offline() -> bool:
    """True when downloads are switched off (``BFRZOO_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1/true)."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("BFRZOO_OFFLINE", "HF_HUB_OFFLINE"))


def _not_found(cfg: PretrainedCfg, why: str) -> WeightsNotFoundError:
    where = cache_dir() / cfg.filename
    origin = cfg.url or "no public download address"
    return WeightsNotFoundError(
        f"weight file {cfg.filename!r} is not available ({why}). It comes from {cfg.source} ({origin}); "
        f"licence: {cfg.license}. Download it on a machine with network access and place it at {where} "
        f"(or set $BFRZOO_HOME to the folder that holds it), or pass its path explicitly."
    )


def resolve_weights(cfg: PretrainedCfg, path: str | Path | None = None) -> Path:
    """Return a local path to ``cfg``'s weight file: ``path`` if given, else the cache, else a download."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(
                f"weight file {str(path)!r} does not exist. Expected {cfg.filename!r} from {cfg.source}; "
                "check the path, or leave it out to use the cache folder "
                f"{cache_dir()}."
            )
        return path
    cached = cache_dir() / cfg.filename
    if cached.is_file():
        return cached
    if cfg.url is None:
        raise _not_found(cfg, "it is not in the cache and has no download address")
    if offline():
        raise _not_found(cfg, "it is not in the cache and downloads are off (offline mode)")
    try:
        _download(cfg, cached)
    except WeightsNotFoundError:
        raise
    except Exception as exc:  # any network failure becomes the one clear error
        raise _not_found(cfg, f"the download failed: {type(exc).__name__}: {exc}") from exc
    return cached


def _download(cfg: PretrainedCfg, target: Path) -> None:
    """Download to a temporary file beside ``target`` and move it into place only when complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
    os.close(fd)
    try:
        torch.hub.download_url_to_file(cfg.url, tmp, progress=True)
        if cfg.sha256:
            digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
            if not digest.startswith(cfg.sha256):
                raise WeightsNotFoundError(
                    f"downloaded {cfg.filename!r} has sha256 {digest[:16]}..., expected {cfg.sha256}: "
                    f"the file at {cfg.url} changed or the download is corrupt; download it by hand and check it"
                )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint (raw, or nested under ``g_ema`` / ``state_dict`` / ...)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in NESTED_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise BfrzooError(
        f"no state dict found in the checkpoint (top-level keys: {keys}); expected a raw state dict or one "
        f"nested under one of {NESTED_KEYS}"
    )


TASK_NETWORK_PREFIXES = ("net_ema.", "net.")


def task_network_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's weights in a bfrzoo training checkpoint (Lightning ``.ckpt``: keys ``net_ema.*`` and
    ``net.*``; the EMA copy is preferred); any other state dict is returned unchanged."""
    for prefix in TASK_NETWORK_PREFIXES:
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub
    return dict(state)


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a weight file safely (``weights_only=True``, on the CPU) and return its state dict."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"checkpoint {str(path)!r} does not exist; check the path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BfrzooError(
            f"could not read checkpoint {str(path)!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            "It is corrupt, truncated, or not a PyTorch weight file; download it again. Files that need "
            "weights_only=False (pickled code) are refused on purpose: re-save their state_dict."
        ) from exc
    return unwrap_state_dict(obj)
