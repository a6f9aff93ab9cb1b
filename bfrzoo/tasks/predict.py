"""Writing ``bfrzoo predict`` outputs: one PNG per LQ image, each written atomically."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from bfrzoo.io import write_png


class RestoredImageWriter(BasePredictionWriter):
    """Saves each restored image as ``<output_dir>/<input stem>.png`` as soon as its batch is done.

    Every file is written under a temporary name and renamed into place, so an interrupted run leaves only
    complete images (re-running overwrites them). Under DDP each rank writes the images of its own shard.
    """

    def __init__(self, output_dir: str | Path) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def write_on_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any, batch_indices: Sequence[int] | None,
        batch: Any, batch_idx: int, dataloader_idx: int,
    ) -> None:
        for image, name in zip(prediction["restored"], prediction["name"]):
            write_png(image, self.output_dir / f"{Path(name).stem}.png")  # atomic: a temporary file renamed
