"""``bfrzoo restore``: restore every aligned face crop in a folder with a trained or released restorer."""
from __future__ import annotations

from itertools import groupby
from pathlib import Path

import torch
from tqdm import tqdm

from bfrzoo.interface import Restorer
from bfrzoo.io import atomic_output_dir, check_image_file, list_images, read_image, write_png


def restore_folder(
    in_dir: str | Path,
    out_dir: str | Path,
    weights: str | Path | None = None,
    restorer: str | None = None,
    device: str | None = None,
    batch_size: int = 4,
    overwrite: bool = False,
) -> int:
    """Restore ``in_dir``'s images into ``out_dir`` (PNG, same stems); returns the count.

    Every input's header is checked before any work, images are decoded a batch at a time (consecutive files of
    one size share a forward pass of up to ``batch_size``), and ``out_dir`` appears only when all images are done:
    an error leaves nothing behind. A progress bar goes to the terminal (not to logs or pipes).
    """
    from bfrzoo.registry import create_restorer
    from bfrzoo.registry import load_restorer

    if (weights is None) == (restorer is None):
        raise ValueError("give exactly one of weights (a restorer.pt) or restorer (a registered name)")
    files = list_images(in_dir)
    sizes = [check_image_file(f) for f in files]
    net = load_restorer(weights) if weights is not None else create_restorer(restorer, pretrained=True)
    runner = Restorer(net, device=device, batch_size=batch_size)
    batches: list[list[Path]] = []
    for _, group in groupby(zip(files, sizes), key=lambda item: item[1]):
        same = [f for f, _ in group]
        batches += [same[i : i + batch_size] for i in range(0, len(same), batch_size)]
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp, tqdm(
        total=len(files), desc="restore", unit="img", disable=None
    ) as bar:
        for batch in batches:
            images = torch.stack([read_image(f) for f in batch])
            with torch.inference_mode():
                restored = runner.restore_tensor(images)
            for file, image in zip(batch, restored):
                write_png(image, tmp / f"{file.stem}.png")
            bar.update(len(batch))
    return len(files)
