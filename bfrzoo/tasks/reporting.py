"""What a run leaves behind besides its checkpoint: the ``LQ | restored | HQ`` grid and the test table.

Every table row carries its provenance (device, torch version, bfrzoo commit, date, data, preset, seed), so a
number in ``benchmarks/results/`` can always be traced to the run that produced it.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import bfrzoo


def save_image_grid(lq: torch.Tensor, restored: torch.Tensor, hq: torch.Tensor, path: Path) -> Path:
    """Write a PNG with one row per image: ``LQ | restored | HQ`` (all ``(N, 3, H, W)`` in ``[0, 1]``).

    Written to a temporary file first and renamed, so a crash never leaves a truncated PNG.
    """
    from PIL import Image

    rows = torch.cat([lq, restored, hq], dim=-1).clamp(0, 1)  # (N, 3, H, 3W)
    pad = torch.ones_like(rows[:, :, :2])
    grid = torch.cat([torch.cat([r, p], dim=1) for r, p in zip(rows, pad)], dim=1)  # (3, N*(H+2), 3W)
    array = grid.mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    from bfrzoo.io import atomic_write

    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def git_commit() -> str:
    """The bfrzoo checkout's commit (``+dirty`` when it has uncommitted changes), or ``unknown``."""
    root = Path(bfrzoo.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device | None = None) -> str:
    if device is not None and device.type == "cuda" or device is None and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


#: Metrics computed by a pretrained feature network (meaningless when built with random weights).
FEATURE_NETWORK_METRICS = ("lpips", "fid")


@dataclass
class RunReport:
    """One row of a benchmark table, with provenance."""

    restorer: str
    restorer_args: dict[str, Any]
    metrics: dict[str, float]
    higher_is_better: dict[str, bool]
    num_images: int | None
    data: str | None
    preset: str | None
    seed: int | None
    size: int | None
    num_parameters: int
    device: str
    torch_version: str
    bfrzoo_version: str
    commit: str
    date: str
    precision: str = "32-true"
    notes: list[str] = field(default_factory=list)

    @classmethod
    def collect(
        cls,
        restorer: str,
        restorer_args: Mapping[str, Any],
        metrics: Mapping[str, float],
        metric_names: Sequence[str],
        metrics_pretrained: bool,
        datamodule: Any,
        trainer: Any,
        num_parameters: int,
    ) -> RunReport:
        from bfrzoo.metrics import metric_higher_is_better

        notes = []
        feature_metrics = [m for m in metric_names if m.split("_")[0] in FEATURE_NETWORK_METRICS]
        if not metrics_pretrained and feature_metrics:
            notes.append(f"feature-network metrics ({', '.join(feature_metrics)}) used RANDOM weights (smoke run): their values are meaningless")
        root = getattr(datamodule, "root", None)
        test_lq = getattr(datamodule, "test_lq_dir", None)
        num_images = getattr(datamodule, "num_test_images", None)
        device = getattr(getattr(trainer, "strategy", None), "root_device", None)
        world = getattr(trainer, "world_size", 1)
        if world and world > 1:
            notes.append(f"{world} processes")
        return cls(
            restorer=restorer,
            restorer_args=dict(restorer_args),
            metrics={k: float(v) for k, v in metrics.items()},
            higher_is_better={k: metric_higher_is_better(k) for k in metrics},
            num_images=num_images() if callable(num_images) else num_images,
            data=str(root) if root is not None else "embedded sample (bfrzoo/assets/sample/faces512)",
            preset=(f"fixed LQ folder {test_lq}" if test_lq else getattr(datamodule, "preset", None)),
            seed=getattr(datamodule, "seed", None),
            size=getattr(datamodule, "size", None),
            num_parameters=num_parameters,
            device=device_name(device),
            torch_version=torch.__version__,
            bfrzoo_version=bfrzoo.__version__,
            commit=getattr(getattr(trainer, "lightning_module", None), "code_commit", None) or git_commit(),
            date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            precision=str(getattr(trainer, "precision", "32-true")),
            notes=notes,
        )

    def markdown(self) -> str:
        from bfrzoo.tables import markdown_table, metric_header

        names = list(self.metrics)
        table = markdown_table(
            ["restorer", *metric_header(names, self.higher_is_better), "images", "preset", "params"],
            [[self.restorer, *(self.metrics[n] for n in names), self.num_images, self.preset,
              f"{self.num_parameters / 1e6:.2f}M"]],
        )
        prov = (
            f"\nDevice: {self.device}; torch {self.torch_version}; bfrzoo {self.bfrzoo_version} @ {self.commit}; "
            f"{self.date}; precision {self.precision}. Data: {self.data} (size {self.size}, seed {self.seed}). Arguments: {json.dumps(self.restorer_args, sort_keys=True)}.\n"
        )
        notes = "".join(f"\nNote: {n}" for n in self.notes)
        return table + "\n" + prov + notes + ("\n" if notes else "")

    def write(self, folder: Path) -> None:
        from bfrzoo.io import atomic_write_text

        atomic_write_text(folder / "test_metrics.json", json.dumps(asdict(self), indent=2, sort_keys=True))
        atomic_write_text(folder / "test_metrics.md", self.markdown())
