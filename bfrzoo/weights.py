"""Weight resolution for every pretrained piece (released checkpoints, LPIPS/FID/VGG backbones, face tools).

Order: an explicit file > the local cache > a download. When a file is missing and cannot be downloaded
(offline, or ``BFRZOO_OFFLINE=1`` / ``HF_HUB_OFFLINE=1``), ONE :class:`WeightsNotFoundError` names the file,
where it comes from and where to place it. Checkpoints are read with ``torch.load(weights_only=True)``.

Cache folder: ``$BFRZOO_HOME`` if set, else ``$TORCH_HOME/bfrzoo`` (``~/.cache/torch/bfrzoo`` by default).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """Download into a temporary file beside ``target``; it becomes ``target`` only when complete and, if
    ``cfg.sha256`` is set, verified (:func:`bfrzoo.io.atomic_write`)."""
    from bfrzoo.io import atomic_write

    def fetch(tmp: Path) -> None:
        torch.hub.download_url_to_file(cfg.url, str(tmp), progress=True)
        if cfg.sha256:
            digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
            if not digest.startswith(cfg.sha256):
                raise WeightsNotFoundError(
                    f"downloaded {cfg.filename!r} has sha256 {digest[:16]}..., expected {cfg.sha256}: "
                    f"the file at {cfg.url} changed or the download is corrupt; download it by hand and check it"
                )

    atomic_write(target, fetch)


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


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """``state`` with ``prefix`` removed from every key that has it (``module.`` of DataParallel / DDP saves);
    other keys are kept as they are."""
    return {k.removeprefix(prefix): v for k, v in state.items()}


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> Any:
    """The one reader of every weight and checkpoint file bfrzoo opens: ``torch.load(weights_only=True)`` on
    the CPU, with one clear :class:`BfrzooError` for each way a file can be unusable.

    ``weights_only=True`` refuses files that would run code while unpickling (only tensors, numbers, strings
    and containers load), so a downloaded or crafted checkpoint cannot execute anything. ``what`` names the
    file in messages (``"GAN prior"``, ``"restorer"`` ...). Returns the loaded object as it is (use
    :func:`load_checkpoint` for the state dict inside).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsNotFoundError(f"{what} {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise BfrzooError(f"{what} {str(path)!r} is a folder, not a file; give the checkpoint file inside it")
    if path.stat().st_size == 0:
        raise BfrzooError(f"{what} {str(path)!r} is empty (0 bytes): an interrupted copy or download; get the file again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first_line = next(iter(str(exc).splitlines()), "").strip()[:200]
        if "GLOBAL" in str(exc) or "Unsupported global" in str(exc):  # weights_only refused a Python object
            raise BfrzooError(
                f"{what} {str(path)!r} contains pickled Python objects or code, which bfrzoo never loads "
                "(torch.load(weights_only=True)); if you trust it, re-save only its state_dict / tensors"
            ) from exc
        raise BfrzooError(
            f"could not read {what} {str(path)!r} ({type(exc).__name__}{': ' + first_line if first_line else ''}): "
            "it is corrupt, truncated, or not a PyTorch weight file; get the file again"
        ) from exc


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Load a weight file safely (:func:`read_checkpoint`) and return the state dict inside it
    (:func:`unwrap_state_dict`)."""
    return unwrap_state_dict(read_checkpoint(path, what))


#: Top-level keys of a Lightning checkpoint (``Trainer.save_checkpoint``); a file with ``state_dict`` and one of
#: these is treated as one.
LIGHTNING_CHECKPOINT_KEYS: tuple[str, ...] = ("pytorch-lightning_version", "epoch", "optimizer_states")


def is_lightning_checkpoint(obj: object) -> bool:
    """True for a loaded Lightning training checkpoint (``state_dict`` + a Lightning bookkeeping key)."""
    return isinstance(obj, Mapping) and "state_dict" in obj and any(k in obj for k in LIGHTNING_CHECKPOINT_KEYS)


def describe_checkpoint(obj: object) -> str:
    """What a loaded checkpoint is, in words, for messages that refuse it where another kind is needed: a
    ``restorer.pt``, a ``parser.pt``, a ``prior.pt`` (each with the option that takes it), a Lightning checkpoint
    (and of which task), an official / plain state dict, or an unknown object."""
    from bfrzoo.models.gan_prior import PRIOR_KIND
    from bfrzoo.models.parsenet import PARSER_KIND
    from bfrzoo.registry import RESTORER_KIND

    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}, not a checkpoint"
    kind = obj.get("kind")
    if kind == RESTORER_KIND:
        return (f"a restorer.pt of {obj.get('restorer')!r} (the trained network alone, written at the end of "
                "`bfrzoo fit`)")
    if kind == PARSER_KIND:
        return ("a parser.pt (the face-parsing network of `bfrzoo fit --recipe parsenet`; it goes to "
                "--model.parser_checkpoint of the psfrgan recipe)")
    if kind == PRIOR_KIND:
        return ("a prior.pt (the StyleGAN2 GAN prior of `bfrzoo fit --recipe stylegan2_prior`; it goes to "
                "--model.prior_checkpoint of the gpen recipe)")
    if is_lightning_checkpoint(obj):
        task = (obj.get("hyper_parameters") or {}).get("_class_path", "an unknown task")
        return f"a Lightning training checkpoint of {task}"
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return "a plain state dict (for example the original authors' release)"
    return f"an unknown checkpoint (top-level keys: {', '.join(map(str, list(obj)[:8]))})"
