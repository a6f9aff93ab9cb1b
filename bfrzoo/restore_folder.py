"""``bfrzoo restore``: restore every aligned face crop in a folder with a trained or released restorer."""
from __future__ import annotations

from pathlib import Path

import torch

from bfrzoo.interface import Restorer
from bfrzoo.io import atomic_output_dir, list_images, read_image, write_png


def restore_folder(
    in_dir: str | Path,
    out_dir: str | Path,
    weights: str | Path | None = None,
    restorer: str | None = None,
    device: str | None = None,
    batch_size: int = 4,
    overwrite: bool = False,
) -> int:
    """Restore ``in_dir``'s images into ``out_dir`` (PNG, same stems). Every input is read and checked before
    anything is written, and ``out_dir`` appears only when all images are done. Returns the count."""
    from bfrzoo.registry import create_restorer
    from bfrzoo.tasks.export import load_restorer

    if (weights is None) == (restorer is None):
        raise ValueError("give exactly one of weights (a restorer.pt) or restorer (a registered name)")
    files = list_images(in_dir)
    images = [read_image(f) for f in files]  # fail on a corrupt file before any work
    net = load_restorer(weights) if weights is not None else create_restorer(restorer, pretrained=True)
    runner = Restorer(net, device=device, batch_size=batch_size)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        for file, image in zip(files, images):
            with torch.inference_mode():
                out = runner.restore_tensor(image.unsqueeze(0))[0]
            write_png(out, tmp / f"{file.stem}.png")
    return len(files)
