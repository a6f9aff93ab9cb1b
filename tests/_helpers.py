"""Helpers shared by several test files (imported as ``from _helpers import ...``; pytest puts tests/ on sys.path)."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def table_psnr_from_restorer(run: Path, size: int, dtype: torch.dtype = torch.float32) -> tuple[float, float]:
    """(the PSNR in ``run``'s test table, the PSNR recomputed independently from ``run/restorer.pt`` on the same
    fixed test set of the embedded sample): a run's table must be reproducible from what it exported."""
    from bfrzoo.data import FaceDataModule
    from bfrzoo.interface import Restorer
    from bfrzoo.metrics import psnr
    from bfrzoo.registry import load_restorer

    report = json.loads((run / "test_metrics.json").read_text())
    restorer = Restorer(load_restorer(run / "restorer.pt"), device="cpu", dtype=dtype)
    dm = FaceDataModule(size=size, batch_size=3, preset=report["preset"], seed=report["seed"])
    dm.setup("test")
    values = []
    for batch in dm.test_dataloader():
        batch = dm.on_after_batch_transfer(batch, 0)
        values.append(psnr(restorer.restore(batch["lq"]), batch["hq"]))
    return float(report["metrics"]["psnr"]), float(torch.cat(values).mean())
