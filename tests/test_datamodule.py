"""Face datasets, the FaceDataModule and degrade_folder on the embedded samples."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import bfrzoo
from bfrzoo.data import FaceDataModule, FaceFolder, LQFolder, degrade_folder
from bfrzoo.data.datasets import flip_sample
from bfrzoo.errors import BfrzooError, UnknownNameError
from bfrzoo.io import read_image

ASSETS = Path(bfrzoo.__file__).parent / "assets" / "sample"
FACES = ASSETS / "faces512"
AAF = ASSETS / "aaf128"


def _batches(loader) -> dict:
    out: dict = {"lq": [], "hq": [], "name": []}
    for b in loader:
        out["lq"].append(b["lq"])
        out["hq"].append(b["hq"])
        out["name"] += b["name"]
    return {"lq": torch.cat(out["lq"]), "hq": torch.cat(out["hq"]), "name": out["name"]}


def test_flip_keeps_masks_and_landmarks_consistent() -> None:
    ds = FaceFolder(AAF, split="val", size=64, with_landmarks=True)
    s = ds[0]
    f = flip_sample(s)
    assert torch.equal(f["hq"], s["hq"].flip(-1))
    # left eye of the flipped face = mirrored right eye of the original
    assert torch.allclose(f["landmarks"][0], torch.tensor([63 - s["landmarks"][1, 0], s["landmarks"][1, 1]]))
    assert torch.allclose(f["landmarks"][3, 0], 63 - s["landmarks"][4, 0])
    assert torch.equal(f["landmarks"][2, 1], s["landmarks"][2, 1])
    assert f["landmarks"][0, 0] < f["landmarks"][1, 0]  # the left eye stays left in the image
    faces = FaceFolder(FACES, split="val", size=64, with_masks=True)
    m = faces[0]
    fm = flip_sample(m)
    mask, flipped = m["mask"], fm["mask"]
    assert int((mask == 4).sum()) > 0
    assert torch.equal(flipped == 5, (mask == 4).flip(-1)) and torch.equal(flipped == 4, (mask == 5).flip(-1))
    assert torch.equal(flipped == 8, (mask == 9).flip(-1)) and torch.equal(flipped == 1, (mask == 1).flip(-1))
    assert torch.equal(flip_sample(fm)["mask"], mask)


def test_face_folder_resizes_masks_and_scales_landmarks() -> None:
    full = FaceFolder(AAF, split="val", size=128, with_landmarks=True)[0]
    half = FaceFolder(AAF, split="val", size=64, with_landmarks=True)[0]
    assert half["hq"].shape == (3, 64, 64)
    assert torch.allclose(half["landmarks"], (full["landmarks"] + 0.5) / 2 - 0.5)
    m = FaceFolder(FACES, split="val", size=128, with_masks=True)[0]["mask"]
    assert m.shape == (128, 128) and m.dtype == torch.int64 and 0 <= int(m.min()) and int(m.max()) <= 18
    with pytest.raises(BfrzooError, match="with_masks"):
        FaceFolder(AAF, split="val", size=64, with_masks=True)
    with pytest.raises(BfrzooError, match="split 'test'"):
        FaceFolder(FACES, split="test")


def test_datamodule_batches_on_embedded_sample() -> None:
    dm = FaceDataModule(size=64, batch_size=4, with_masks=True, limit_train=8)
    assert Path(dm.root) == FACES and dm.num_test_images == 8
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"hq", "lq", "mask", "name"}
    assert batch["hq"].shape == batch["lq"].shape == (4, 3, 64, 64)
    assert batch["mask"].shape == (4, 64, 64) and batch["mask"].dtype == torch.int64
    assert float(batch["lq"].min()) >= 0 and float(batch["lq"].max()) <= 1 and not torch.equal(batch["lq"], batch["hq"])
    assert len(batch["name"]) == 4 and all(isinstance(n, str) for n in batch["name"])
    # training seeds change with the batch: the same faces collated as batch 0 and as batch 1 of an epoch are
    # degraded differently, and identically when the (epoch, batch) tag repeats
    collate = dm._collate("train")
    items = [dm._dataset("train").load(i) for i in range(4)]

    def lq(epoch: int, index: int) -> torch.Tensor:
        return collate([{**it, "_tag": (epoch, index)} for it in items])["lq"]

    assert torch.equal(lq(0, 0), lq(0, 0)) and not torch.equal(lq(0, 0), lq(0, 1)) and not torch.equal(lq(0, 0), lq(1, 0))
    aaf = FaceDataModule(root=str(AAF), size=64, batch_size=5, with_landmarks=True)
    b = next(iter(aaf.val_dataloader()))
    assert set(b) == {"hq", "lq", "landmarks", "name"} and b["landmarks"].shape == (5, 5, 2)


def test_datamodule_validates_arguments() -> None:
    with pytest.raises(UnknownNameError, match="common"):
        FaceDataModule(preset="nope")
    with pytest.raises(ValueError, match="multiple of 8"):
        FaceDataModule(size=100)
    with pytest.raises(ValueError, match="multiple of 8"):
        FaceDataModule(size=0)
    with pytest.raises(BfrzooError, match="does not exist"):
        FaceDataModule(root="/nonexistent/faces")
    with pytest.raises(BfrzooError, match="predict_dir"):
        FaceDataModule(size=64).predict_dataloader()


def test_val_and_test_lq_identical_across_instances_and_batch_sizes() -> None:
    a = _batches(FaceDataModule(size=64, batch_size=3, preset="gpen", seed=5).val_dataloader())
    b = _batches(FaceDataModule(size=64, batch_size=8, preset="gpen", seed=5).test_dataloader())
    c = _batches(FaceDataModule(size=64, batch_size=1, preset="gpen", seed=6).val_dataloader())
    assert a["name"] == b["name"]
    assert torch.equal(a["lq"], b["lq"])  # bit-identical across instances, batch sizes and val/test
    assert not torch.allclose(a["lq"], c["lq"])


def test_degrade_folder_equals_datamodule_test_set(tmp_path: Path) -> None:
    out = tmp_path / "lq"
    count = degrade_folder(FACES, out, preset="mpcnet", seed=3, size=64)
    assert count == 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preset"] == "mpcnet" and manifest["seed"] == 3 and manifest["count"] == 8
    assert manifest["bfrzoo_version"] == bfrzoo.__version__
    dm = FaceDataModule(size=64, batch_size=4, preset="mpcnet", seed=3)
    built_in = _batches(dm.test_dataloader())
    for name, lq in zip(built_in["name"], built_in["lq"]):
        png = read_image(out / f"{Path(name).stem}.png")
        assert (png - lq).abs().max() <= 0.5 / 255 + 1e-6  # equal up to the 8-bit PNG rounding
    # the fixed folder as test_lq_dir gives the same LQ back
    fixed = _batches(FaceDataModule(size=64, batch_size=4, preset="mpcnet", seed=3, test_lq_dir=str(out)).test_dataloader())
    assert torch.allclose(fixed["lq"], built_in["lq"], atol=0.5 / 255 + 1e-6)
    assert torch.equal(fixed["hq"], built_in["hq"])
    with pytest.raises(BfrzooError, match="not empty"):
        degrade_folder(FACES, out, preset="mpcnet", seed=3, size=64)


def test_degrade_folder_leaves_nothing_behind_on_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(FaceFolder(FACES, split="val").names[:2]):
        (src / f"a{i}.jpg").write_bytes((FACES / "images" / name).read_bytes())
    (src / "z_broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    with pytest.raises(BfrzooError, match="z_broken"):
        degrade_folder(src, out, preset="common", seed=0, size=64)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    with pytest.raises(UnknownNameError):
        degrade_folder(src, out, preset="bad", seed=0)
    assert not out.exists()


def test_predict_dataloader_yields_lq_and_names(tmp_path: Path) -> None:
    dm = FaceDataModule(size=64, predict_dir=str(ASSETS / "real_lq"))
    batches = list(dm.predict_dataloader())
    assert len(batches) == len(LQFolder(ASSETS / "real_lq")) == 4
    assert set(batches[0]) == {"lq", "name"} and batches[0]["lq"].shape[:2] == (1, 3)
    assert torch.equal(batches[0]["lq"][0], read_image(ASSETS / "real_lq" / batches[0]["name"][0]))


def test_device_hook_path_equals_collate_path() -> None:
    """Degrading training batches in on_after_batch_transfer (accelerator runs) gives the collate path's LQ of the
    same (torch) executor; validation is never deferred: the OpenCV executor makes it in the collate, per image."""
    from bfrzoo.data.datamodule import _Collate

    dm = FaceDataModule(size=64, batch_size=4, preset="gpen", seed=2)
    val = dm._dataset("val")
    items = [val[i] for i in range(4)]
    cpu = _Collate("gpen", 2, "val", 0, on_device=False)(items)
    on_device = _Collate("gpen", 2, "val", 0, on_device=True)([dict(it) for it in items])
    assert set(on_device) == {"hq", "lq", "name"} and torch.equal(on_device["lq"], cpu["lq"])
    assert dm.on_after_batch_transfer(on_device, 0) is on_device
    train = [dict(it, _tag=(0, 3)) for it in items]
    cpu_t = _Collate("gpen", 2, "train", 1, on_device=False, executor="torch")(train)
    dev_t = dm.on_after_batch_transfer(_Collate("gpen", 2, "train", 1, on_device=True)(train), 0)
    assert torch.allclose(cpu_t["lq"], dev_t["lq"], atol=1e-6)
    other_rank = _Collate("gpen", 2, "train", 0, on_device=False, executor="torch")(train)
    other_batch = _Collate("gpen", 2, "train", 1, on_device=False, executor="torch")([dict(it, _tag=(0, 4)) for it in items])
    assert not torch.allclose(cpu_t["lq"], other_rank["lq"]) and not torch.allclose(cpu_t["lq"], other_batch["lq"])


def test_lightning_trainer_gets_degraded_batches() -> None:
    import pytorch_lightning as pl

    seen: list[dict] = []

    class Probe(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            seen.append({k: (v.shape if torch.is_tensor(v) else v) for k, v in batch.items()})
            return (self.w * batch["lq"].mean() - batch["hq"].mean()) ** 2

        def validation_step(self, batch, batch_idx):
            seen.append({k: (v.shape if torch.is_tensor(v) else v) for k, v in batch.items()})

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = FaceDataModule(size=32, batch_size=2, limit_train=4)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(Probe(), datamodule=dm)
    assert len(seen) >= 3
    for b in seen:
        assert set(b) == {"hq", "lq", "name"} and b["lq"] == b["hq"] == (2, 3, 32, 32)


def test_corrupt_image_one_clear_error_or_skipped_with_warning(tmp_path: Path) -> None:
    from bfrzoo.errors import ImageInputError

    src = tmp_path / "faces"
    src.mkdir()
    names = FaceFolder(FACES, split="val").names[:2]
    (src / "a.jpg").write_bytes((FACES / "images" / names[0]).read_bytes())
    (src / "b_broken.png").write_bytes(b"\x89PNG truncated")
    (src / "c.jpg").write_bytes((FACES / "images" / names[1]).read_bytes())
    strict = FaceFolder(src, size=32)
    assert strict[0]["name"] == "a.jpg"
    with pytest.raises(ImageInputError, match=r"b_broken\.png.*skip_corrupt"):
        strict[1]
    lenient = FaceFolder(src, size=32, skip_corrupt=True)
    with pytest.warns(UserWarning, match="b_broken.png"):
        item = lenient[1]
    assert item["name"] == "c.jpg" and torch.equal(item["hq"], strict[2]["hq"])  # the next readable image
    # training skips (warning), validation never does: a fixed test set must not change silently
    dm = FaceDataModule(root=str(src), size=32, batch_size=3, skip_corrupt=True, flip=False)
    with pytest.warns(UserWarning, match="b_broken.png"):
        batch = next(iter(dm.train_dataloader()))
    assert sorted(batch["name"]) == ["a.jpg", "c.jpg", "c.jpg"]
    with pytest.raises(ImageInputError, match="b_broken.png"):
        list(dm.val_dataloader())


def test_training_flips_are_seeded_and_consistent() -> None:
    """Flips come from (seed, epoch, index): identical for two instances, about half the images, masks follow."""

    def first_epoch(seed: int) -> dict:
        dm = FaceDataModule(size=32, batch_size=4, with_masks=True, seed=seed, preset="gpen", limit_train=16)
        out: dict = {"hq": [], "mask": [], "name": []}
        for b in dm.train_dataloader():
            for k in out:
                out[k] += list(b[k]) if k == "name" else [b[k]]
        return {k: (v if k == "name" else torch.cat(v)) for k, v in out.items()}

    a, b = first_epoch(0), first_epoch(0)
    assert a["name"] == b["name"] and torch.equal(a["hq"], b["hq"]) and torch.equal(a["mask"], b["mask"])
    plain = FaceFolder(FACES, split="train", size=32, with_masks=True)
    flipped = 0
    for name, hq, mask in zip(a["name"], a["hq"], a["mask"]):
        ref = plain[plain.names.index(name)]
        if torch.equal(hq, ref["hq"]):
            assert torch.equal(mask, ref["mask"])
        else:
            assert torch.equal(hq, ref["hq"].flip(-1))
            assert torch.equal(mask, flip_sample(ref)["mask"])  # flipped with 4<->5, 6<->7, 8<->9 swapped
            flipped += 1
    assert len(a["name"]) == 16 and 0 < flipped < 16
    assert not torch.equal(first_epoch(1)["hq"], a["hq"])  # another seed, other shuffling and flips


def test_epoch_seeding_follows_lightning_set_epoch() -> None:
    """Shuffle order and degradation tags come from the epoch Lightning sets (resumed runs match), else a count."""
    from bfrzoo.data.datamodule import _EpochBatchSampler, _EpochRandomSampler

    def epoch_batches(set_epoch: int | None, seed: int = 0, passes: int = 1) -> list:
        sampler = _EpochRandomSampler(range(10), seed)
        batches = _EpochBatchSampler(sampler, 4, drop_last=True)
        if set_epoch is not None:
            sampler.set_epoch(set_epoch)
        return [list(batches) for _ in range(passes)]

    (e3,) = epoch_batches(3)
    assert [key[:2] for b in e3 for key in b] == [(3, 0)] * 4 + [(3, 1)] * 4
    assert epoch_batches(3) == [e3]  # a fresh sampler (a resumed run) at epoch 3 repeats epoch 3 exactly
    counted = epoch_batches(None, passes=2)
    assert {k[0] for b in counted[0] for k in b} == {0}
    assert {k[0] for b in counted[1] for k in b} == {1}
    order = lambda batches: [k[2] for b in batches for k in b]  # noqa: E731
    assert order(counted[0]) != order(counted[1]) and order(e3) != order(counted[0])
    assert order(epoch_batches(3, seed=1)[0]) != order(e3)


def test_ddp_eval_shards_cover_every_image_exactly_once() -> None:
    """Under DDP the evaluation sampler shards without the padding of Lightning's default DistributedSampler,
    so a test set that does not divide by the world size is still scored on each image exactly once."""
    from bfrzoo.data.datamodule import _UnpaddedShardSampler

    data = list(range(7))
    shards = [list(_UnpaddedShardSampler(data, num_replicas=3, rank=r)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(i for shard in shards for i in shard) == data
    assert [len(_UnpaddedShardSampler(data, num_replicas=3, rank=r)) for r in range(3)] == [3, 2, 2]
