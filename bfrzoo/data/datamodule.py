"""``FaceDataModule``: HQ faces in, ``{"hq", "lq", ...}`` batches out, degraded on the fly with a seeded preset.

Batches: ``hq`` / ``lq`` ``(N, 3, size, size)`` float in ``[0, 1]``, optional ``mask`` ``(N, size, size)`` int64
and ``landmarks`` ``(N, 5, 2)`` float, ``name`` list[str]. Where the training degradation runs is ``degrade_on``:
``"device"``, the batched torch executor (:mod:`bfrzoo.data.degradations`) on the trainer's device in
``on_after_batch_transfer``; ``"workers"``, the per-image OpenCV executor (:mod:`bfrzoo.data.cpu_degradations`) in
the collate function, inside the loader workers; ``"auto"`` (default), the device on an accelerator and the workers
on a CPU, where the OpenCV executor is several times faster. Validation / test LQ always comes from the OpenCV
executor in the collate function, one image at a time (the same on every machine, device or batch size). Seeds:

* training batches: ``stable_seed(seed, "train", global_rank, epoch, batch_index)`` -- DDP ranks differ; the OpenCV
  executor seeds image ``i`` of the batch with ``stable_seed(batch_seed, "image", i)``, so loader workers, which
  each build whole batches, never repeat each other's draws;
  shuffling: ``stable_seed(seed, "shuffle", epoch)`` (the epoch from Lightning's ``set_epoch``, so resumes match);
  training flips: a coin ``stable_seed(seed, "flip", epoch, index)``, independent of workers;
* validation / test samples: ``stable_seed(seed, file stem)``, one per image, each degraded on its own, so the
  LQ is bit-identical whatever the batch size, rank count, order or device; ``bfrzoo degrade``
  (:func:`bfrzoo.data.folder.degrade_folder`) uses the same seeds, so a folder it writes from the val split
  equals this module's built-in test set.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from bfrzoo.data.cpu_degradations import degrade_tensor, image_seeds, limit_opencv_threads_in_worker
from bfrzoo.data.datasets import FaceFolder, LQFolder, PairedLQ, flip_sample, resolve_split
from bfrzoo.data.degradations import Degrader, stable_seed
from bfrzoo.data.presets import get_preset
from bfrzoo.errors import BfrzooError
from bfrzoo.io import sample_root

DEGRADE_ON: tuple[str, ...] = ("auto", "device", "workers")


def eval_seed(seed: int, name: str) -> int:
    """Per-image seed of validation / test degradations: depends only on ``seed`` and the file stem."""
    return stable_seed(seed, Path(name).stem)


class _EpochRandomSampler(RandomSampler):
    """Shuffles with a generator seeded by ``(seed, epoch)``, so a resumed run sees the same order per epoch.

    Lightning calls ``set_epoch`` (its ``_set_sampler_epoch``) before each training epoch; outside Lightning
    ``epoch`` stays ``None`` and the batch sampler counts epochs itself.
    """

    def __init__(self, data: Dataset, seed: int) -> None:
        super().__init__(data, generator=torch.Generator())  # type: ignore[arg-type]
        self.seed = seed
        self.epoch: int | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def start_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(stable_seed(self.seed, "shuffle", epoch))  # type: ignore[union-attr]


class _UnpaddedShardSampler(DistributedSampler):
    """Evaluation shards under DDP: rank ``r`` of ``w`` gets images ``r, r + w, ...`` and NO padding.

    Lightning's default (a padded ``DistributedSampler``) repeats images when the test set does not divide by the
    world size, which would count them twice in the synchronised metrics. Being a ``DistributedSampler`` already,
    this one is left in place by Lightning. Ranks may then run different numbers of batches; the metric states
    are synchronised once in ``compute()``, so that is safe.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.indices = list(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]
        self.num_samples = len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return self.num_samples


class _EpochBatchSampler(BatchSampler):
    """A BatchSampler that tags every index with ``(epoch, batch_index)`` for the training degradation seed.

    Keeps BatchSampler's signature so Lightning can rebuild it around a DistributedSampler under DDP (whose
    ``epoch`` Lightning sets).
    """

    def __init__(self, sampler: Any, batch_size: int, drop_last: bool) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self._count = 0

    def __iter__(self):  # type: ignore[override]
        epoch = getattr(self.sampler, "epoch", None)  # set_epoch by Lightning, else our own count
        epoch = self._count if epoch is None else int(epoch)
        self._count += 1
        if hasattr(self.sampler, "start_epoch"):
            self.sampler.start_epoch(epoch)
        for b, batch in enumerate(super().__iter__()):
            yield [(epoch, b, i) for i in batch]


class _Tagged(Dataset):
    """Passes ``(epoch, batch_index, index)`` keys through as ``"_tag"`` on the item; flips with a seeded coin."""

    def __init__(self, dataset: FaceFolder, flip: bool = False, seed: int = 0) -> None:
        self.dataset, self.flip, self.seed = dataset, flip, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        epoch, batch_index, index = key
        item = self.dataset.load(index)
        if self.flip and stable_seed(self.seed, "flip", epoch, index) & 1:
            item = flip_sample(item)
        item["_tag"] = (epoch, batch_index)
        return item


class _Collate:
    """Stacks items and degrades them here (CPU), except training batches with ``on_device``: those leave with
    their seed for the device hook. ``executor`` picks the training executor here: ``"opencv"`` (per image) or
    ``"torch"`` (batched); evaluation always uses the OpenCV executor with per-image seeds."""

    def __init__(
        self, preset: str, seed: int, mode: str, rank: int, on_device: bool,
        executor: Literal["opencv", "torch"] = "opencv",
    ) -> None:
        self.preset, self.seed, self.mode, self.rank, self.on_device = preset, seed, mode, rank, on_device
        self.executor = executor
        self._degrader: Degrader | None = None

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"name": [it["name"] for it in items]}
        for key in ("hq", "lq", "mask", "landmarks"):
            if key in items[0]:
                batch[key] = torch.utils.data.default_collate([it[key] for it in items])  # a worker's: in shared memory
        if "lq" in batch or self.mode == "predict":
            return batch
        limit_opencv_threads_in_worker()
        if self.mode != "train":
            batch["lq"] = degrade_tensor(batch["hq"], self.preset, [eval_seed(self.seed, n) for n in batch["name"]])
            return batch
        epoch, batch_index = items[0]["_tag"]
        batch_seed = stable_seed(self.seed, "train", self.rank, epoch, batch_index)
        if self.on_device or self.executor == "torch":
            batch["_seed"] = torch.tensor(batch_seed)
            return batch if self.on_device else degrade_batch(batch, self.degrader)
        batch["lq"] = degrade_tensor(batch["hq"], self.preset, image_seeds(batch_seed, len(items)))
        return batch

    @property
    def degrader(self) -> Degrader:
        if self._degrader is None:
            self._degrader = Degrader(self.preset, self.seed)
        return self._degrader


def degrade_batch(batch: dict[str, Any], degrader: Degrader) -> dict[str, Any]:
    """Add ``lq`` to a batch carrying ``_seed`` (one per batch) or ``_seeds`` (one per sample), on its device."""
    if "_seeds" in batch:
        batch["lq"] = degrader(batch["hq"], seeds=batch.pop("_seeds"))
    elif "_seed" in batch:
        batch["lq"] = degrader(batch["hq"], seed=int(batch.pop("_seed")))
    return batch


class FaceDataModule(pl.LightningDataModule):
    """Face restoration data: HQ faces from a data root, LQ synthesised with a degradation preset.

    Args:
        root: data root (``images/`` + ``split.json`` [+ ``masks/``, ``landmarks.json``]) or a plain image folder;
            ``None`` = the embedded 80-face sample ``bfrzoo/assets/sample/faces512``.
        size: side the faces are resized to (positive multiple of 8).
        preset: degradation preset, one of :data:`bfrzoo.data.PRESETS`.
        degrade_on: where training LQ is made: ``"device"`` (batched torch executor on the trainer's device, in
            ``on_after_batch_transfer``; in the collate function when no trainer is attached), ``"workers"``
            (per-image OpenCV executor in the loader workers) or ``"auto"`` (device on an accelerator, workers on a
            CPU). The two executors draw the same parameters for a seed; their LQ agrees statistically (a few
            tenths of a dB in mean PSNR, see :mod:`bfrzoo.data.cpu_degradations`), not bit for bit.
        batch_size: images per batch (training, validation and test).
        num_workers: DataLoader worker processes.
        seed: seed of the shuffling and of every degradation.
        with_masks: also load parsing masks ``masks/<stem>.png`` (19 classes).
        with_landmarks: also load 5-point landmarks from ``landmarks.json``.
        val_split: split of ``split.json`` used for validation and testing.
        test_lq_dir: a fixed LQ folder made by ``bfrzoo degrade`` (``<stem>.png`` per val image); ``None`` =
            the val split degraded with per-image seeds (identical to what ``bfrzoo degrade`` writes).
        limit_train: use only the first N training images.
        flip: random horizontal flips of training images (masks and landmarks follow), seeded by
            ``(seed, epoch, index)``.
        skip_corrupt: skip unreadable TRAINING images with a warning instead of stopping with an
            ImageInputError (validation / test images must all be readable: a fixed test set never changes
            silently).
        predict_dir: folder of LQ images for ``predict`` (batches ``{"lq", "name"}``, one image per batch so
            sizes may differ).
    """

    def __init__(
        self,
        root: str | None = None,
        size: int = 512,
        preset: str = "common",
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        with_masks: bool = False,
        with_landmarks: bool = False,
        val_split: str = "val",
        test_lq_dir: str | None = None,
        limit_train: int | None = None,
        flip: bool = True,
        predict_dir: str | None = None,
        skip_corrupt: bool = False,
        degrade_on: Literal["auto", "device", "workers"] = "auto",
    ) -> None:
        super().__init__()
        get_preset(preset)  # UnknownNameError listing the presets
        if degrade_on not in DEGRADE_ON:
            raise ValueError(f"degrade_on must be one of {', '.join(DEGRADE_ON)}, got {degrade_on!r}")
        if not isinstance(size, int) or size <= 0 or size % 8:
            raise ValueError(f"data size must be a positive multiple of 8 (e.g. 128, 256, 512), got {size!r}")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size} and {num_workers}")
        if limit_train is not None and limit_train < 1:
            raise ValueError(f"limit_train must be None or >= 1, got {limit_train}")
        resolved = Path(root).expanduser() if root is not None else sample_root()
        if not resolved.is_dir():
            raise BfrzooError(
                f"data root {str(resolved)!r} does not exist; pass --data.root DIR (a folder with images/ and "
                "split.json, or a plain folder of face images), or leave it unset for the embedded sample"
            )
        if test_lq_dir is not None and not Path(test_lq_dir).is_dir():
            raise BfrzooError(f"test_lq_dir {test_lq_dir!r} does not exist; make it with `bfrzoo degrade`")
        self.root = str(resolved)
        self.size, self.preset, self.batch_size, self.num_workers, self.seed = size, preset, batch_size, num_workers, seed
        self.with_masks, self.with_landmarks, self.val_split = with_masks, with_landmarks, val_split
        self.test_lq_dir, self.limit_train, self.flip, self.predict_dir = test_lq_dir, limit_train, flip, predict_dir
        self.skip_corrupt, self.degrade_on = skip_corrupt, degrade_on
        self.degrader = Degrader(preset, seed)
        self.save_hyperparameters()
        self._sets: dict[str, Dataset] = {}

    # ------------------------------------------------------------------ datasets
    def _faces(self, split: str | None, train: bool) -> FaceFolder:
        return FaceFolder(
            self.root, split=split, size=self.size, with_masks=self.with_masks, with_landmarks=self.with_landmarks,
            flip=False, limit=self.limit_train if train else None, skip_corrupt=self.skip_corrupt and train,
        )  # training flips happen in _Tagged, with a seeded coin

    def _has_split(self) -> bool:
        return (Path(self.root) / "split.json").is_file()

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._sets["train"] = self._faces("train" if self._has_split() else None, train=True)
        if stage in (None, "fit", "validate"):
            self._sets["val"] = self._faces(self.val_split if self._has_split() else None, train=False)
        if stage in (None, "test"):
            faces = self._faces(self.val_split if self._has_split() else None, train=False)
            self._sets["test"] = PairedLQ(faces, self.test_lq_dir) if self.test_lq_dir else faces
        if stage == "predict":
            if self.predict_dir is None:
                raise BfrzooError("predict needs a folder of LQ images: pass --data.predict_dir DIR")
            self._sets["predict"] = LQFolder(self.predict_dir)

    def _dataset(self, name: str) -> Dataset:
        if name not in self._sets:
            self.setup({"train": "fit", "val": "validate", "test": "test", "predict": "predict"}[name])
        return self._sets[name]

    @property
    def num_test_images(self) -> int:
        """Number of test images (the val split, or the images of ``root`` for a plain folder)."""
        return len(resolve_split(self.root, self.val_split if self._has_split() else None)[1])

    # ------------------------------------------------------------------ loaders
    def _on_device(self) -> bool:
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type != "cpu"

    def _rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    def _degrades_on_device(self) -> bool:
        """Whether training batches leave the workers with their seed only, for :meth:`on_after_batch_transfer`."""
        if self.degrade_on == "auto":
            return self._on_device()
        return self.degrade_on == "device" and self.trainer is not None

    def _collate(self, mode: str) -> _Collate:
        executor = "torch" if self.degrade_on == "device" else "opencv"
        return _Collate(self.preset, self.seed, mode, self._rank(), self._degrades_on_device(), executor)

    def train_dataloader(self) -> DataLoader:
        data = self._dataset("train")
        sampler = _EpochRandomSampler(data, self.seed)
        drop_last = len(data) >= self.batch_size  # tiny data roots still give one batch
        return DataLoader(
            _Tagged(data, flip=self.flip, seed=self.seed), batch_sampler=_EpochBatchSampler(sampler, self.batch_size, drop_last),
            num_workers=self.num_workers, collate_fn=self._collate("train"), pin_memory=self._on_device(),
            persistent_workers=self.num_workers > 0,
        )

    def _eval_loader(self, name: str) -> DataLoader:
        data = self._dataset(name)
        trainer = self.trainer
        sampler: Sampler[int] = SequentialSampler(data)
        if trainer is not None and trainer.world_size > 1:
            sampler = _UnpaddedShardSampler(data, num_replicas=trainer.world_size, rank=trainer.global_rank)
        return DataLoader(
            data, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
            collate_fn=self._collate(name), pin_memory=self._on_device(),
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        data = self._dataset("predict")
        return DataLoader(data, batch_size=1, num_workers=self.num_workers, collate_fn=self._collate("predict"))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Degrade training batches on the device when the collate left it to us (a seed but no ``lq``)."""
        if isinstance(batch, dict) and "lq" not in batch and ("_seed" in batch or "_seeds" in batch):
            batch = degrade_batch(batch, self.degrader)
        return batch
