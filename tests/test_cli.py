"""The `bfrzoo` command: listing, errors, and the demo `fit -> test -> table` path on the embedded faces."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from _helpers import table_psnr_from_restorer

from bfrzoo.cli import list_recipes, main, recipe_path
from bfrzoo.errors import UnknownNameError

TINY = [
    "--trainer.max_epochs", "1",
    "--trainer.accelerator", "cpu",
    "--data.size", "64",
    "--data.batch_size", "4",
    "--data.limit_train", "8",
]


def _run_dir(root: Path) -> Path:
    found = sorted(root.rglob("test_metrics.json"))
    assert found, f"no test_metrics.json under {root}"
    return found[-1].parent


def test_every_recipe_is_found_and_unknown_recipe_lists_them() -> None:
    assert "unet" in list_recipes() and "demo" not in list_recipes()
    for name in list_recipes():
        assert recipe_path(name).is_file()
    with pytest.raises(UnknownNameError, match="unet"):
        recipe_path("unet_xxl")


def test_cli_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--recipe", "no_such_recipe"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'no_such_recipe'" in err and "unet" in err and "Traceback" not in err


def test_list_prints_restorers_recipes_presets_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    main(["list"])
    out = capsys.readouterr().out
    for word in ("unet", "common", "gpen", "psnr", "niqe"):
        assert word in out


def test_bad_config_value_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--recipe", "unet", "--demo", "--data.size", "big"])
    assert exit_info.value.code != 0


def test_demo_fit_writes_checkpoint_table_grid_and_restorer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bfrzoo.registry

    monkeypatch.chdir(tmp_path)
    exports: list[tuple[Path, dict]] = []
    real_export = bfrzoo.registry.export_restorer

    def counting_export(net, name, args, path, info=None):  # type: ignore[no-untyped-def]
        exports.append((Path(path).resolve(), dict(info or {})))
        return real_export(net, name, args, path, info)

    monkeypatch.setattr(bfrzoo.registry, "export_restorer", counting_export)
    main(["fit", "--recipe", "unet", "--demo", *TINY])
    run = _run_dir(tmp_path / "runs" / "unet")
    # restorer.pt is written ONCE (after the test), from the tested best checkpoint's EMA weights, and says so
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    assert exports == [((run / "restorer.pt").resolve(), {"weights": "ema", "checkpoint": best.name, "tested": True})]
    saved = torch.load(run / "restorer.pt", map_location="cpu", weights_only=True)
    assert saved["info"] == {"weights": "ema", "checkpoint": best.name, "tested": True}
    best_state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    assert saved["state_dict"] and all(torch.equal(v, best_state[f"net_ema.{k}"]) for k, v in saved["state_dict"].items())
    assert list((run / "checkpoints").glob("*.ckpt"))
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["restorer"] == "unet" and report["num_images"] == 8
    assert set(report["metrics"]) == {"psnr", "ssim", "psnr_y", "ssim_y"}
    assert report["commit"] and report["device"].startswith("CPU") and report["torch_version"] == torch.__version__
    assert "| unet |" in (run / "test_metrics.md").read_text()
    # CSV and TensorBoard log into the same run folder (not version_0 and version_1)
    assert (run / "metrics.csv").is_file() and list(run.glob("events.out.tfevents.*"))
    assert [p.name for p in run.parent.iterdir()] == [run.name]

    # The grid: one row per test image, LQ | restored | HQ side by side.
    from PIL import Image

    grid = Image.open(run / "test_grid.png")
    assert grid.size == (3 * 64, 8 * (64 + 2))

    # The table's PSNR is reproducible from restorer.pt on the same fixed test set.
    from bfrzoo.data import FaceDataModule
    from bfrzoo.interface import Restorer
    from bfrzoo.metrics import psnr
    from bfrzoo.registry import load_restorer

    net = load_restorer(run / "restorer.pt")
    dm = FaceDataModule(size=64, batch_size=3)
    dm.setup("test")
    values = []
    for batch in dm.test_dataloader():
        batch = dm.on_after_batch_transfer(batch, 0)
        values.append(psnr(Restorer(net, device="cpu").restore(batch["lq"]), batch["hq"]))
    assert abs(torch.cat(values).mean().item() - report["metrics"]["psnr"]) < 1e-3

    # `bfrzoo table` merges runs.
    out = tmp_path / "table.md"
    main(["table", str(tmp_path / "runs"), "--out", str(out)])
    assert "| unet |" in out.read_text()


def test_degrade_and_restore_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import bfrzoo
    from bfrzoo.registry import export_restorer

    sample = Path(bfrzoo.__file__).parent / "assets" / "sample" / "aaf128" / "images"
    src = tmp_path / "hq"
    src.mkdir()
    for f in sorted(sample.iterdir())[:3]:
        (src / f.name).write_bytes(f.read_bytes())
    main(["degrade", "--preset", "common", "--seed", "3", str(src), str(tmp_path / "lq")])
    assert sorted(p.name for p in (tmp_path / "lq").glob("*.png")) == sorted(f"{p.stem}.png" for p in src.iterdir())

    net = bfrzoo.create_restorer("unet", base_channels=8, depth=2)
    weights = export_restorer(net, "unet", {"base_channels": 8, "depth": 2}, tmp_path / "restorer.pt")
    # The old positional form `restore IN OUT` is refused with the one line that says what to type now.
    with pytest.raises(SystemExit) as exit_info:
        main(["restore", "--weights", str(weights), str(tmp_path / "lq"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'out'} --aligned" in err and len(err.strip().splitlines()) == 1
    main(["restore", str(tmp_path / "lq"), "--weights", str(weights), "--out", str(tmp_path / "out"), "--aligned", "-q"])
    from bfrzoo.io import read_image

    for f in (tmp_path / "lq").glob("*.png"):
        # an untrained U-Net is the identity: the output equals its input to 8-bit rounding
        assert torch.equal(read_image(tmp_path / "out" / f.name), read_image(f))
    assert "3 of 3 inputs restored" in capsys.readouterr().out

    # A corrupt input among good ones: reported in one line, the others restored, exit 1 at the end.
    (tmp_path / "lq" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(SystemExit) as exit_info:
        main(["restore", str(tmp_path / "lq"), "--weights", str(weights), "--out", str(tmp_path / "out2"), "--aligned", "-q"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if line.startswith("bfrzoo: failed:")] == [
        line for line in captured.err.splitlines() if "broken.png" in line
    ] and "broken.png" in captured.err
    assert "3 of 4 inputs restored" in captured.out
    assert sorted(p.name for p in (tmp_path / "out2").glob("*.png")) == sorted(p.name for p in (tmp_path / "out").glob("*.png"))


def test_ddp_two_processes_on_cpu_train_and_score_like_one_process(tmp_path: Path) -> None:
    """`--trainer.devices 2 --trainer.strategy ddp` (gloo on CPU): the run completes on both ranks, rank 0 writes
    the table, and the synchronised test PSNR over the fixed test set equals a 1-process evaluation of the
    exported restorer (so metrics are reduced over ALL images of both ranks, not one rank's half)."""
    import socket

    with socket.socket() as sock:  # a port that is free now (a fixed one collides with other runs on the machine)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    cmd = [sys.executable, "-m", "bfrzoo.cli", "fit", "--recipe", "unet", "--demo", *TINY,
           "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run_dir(tmp_path / "runs" / "unet")
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["num_images"] == 8 and "2 processes" in report["notes"]

    table, single = table_psnr_from_restorer(run, 64)
    assert abs(single - table) < 1e-3


def test_table_flags_rows_scored_on_different_test_sets(tmp_path: Path) -> None:
    from bfrzoo.tables import collect_run_table as collect_table

    row = {"restorer": "unet", "metrics": {"psnr": 25.0}, "higher_is_better": {"psnr": True}, "num_images": 100,
           "data": "faces512", "preset": "common", "seed": 0, "size": 512, "num_parameters": 1_000_000,
           "device": "CPU", "commit": "abc", "date": "today", "notes": []}
    for name, changes in {"a": {}, "b": {"restorer": "gpen", "metrics": {"psnr": 26.0}}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "test_metrics.json").write_text(json.dumps({**row, **changes}))
    same = collect_table([tmp_path])
    assert "| unet | 25.0000 |" in same and "| gpen | 26.0000 |" in same and "NOT COMPARABLE" not in same

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "test_metrics.json").write_text(json.dumps({**row, "restorer": "psfrgan", "preset": "psfrgan"}))
    mixed = collect_table([tmp_path])
    assert "NOT COMPARABLE" in mixed and "preset=psfrgan" in mixed and "preset=common" in mixed


def test_table_of_a_json_without_metrics_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "test_metrics.json").write_text(json.dumps({"restorer": "unet", "num_images": 3}))
    with pytest.raises(SystemExit) as exit_info:
        main(["table", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bfrzoo: error: ") and len(err.splitlines()) == 1
    assert "test_metrics.json lacks metrics: it is not a test_metrics.json written by `bfrzoo fit`" in err


def test_predict_writes_one_png_per_input_of_any_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bfrzoo predict` restores a folder of LQ images of mixed sizes into PNGs with the same stems; an untrained
    U-Net is the identity, so each output equals its input to 8-bit rounding."""
    import bfrzoo
    from bfrzoo.io import read_image
    from bfrzoo.registry import export_restorer

    sample = Path(bfrzoo.__file__).parent / "assets" / "sample"
    lq = tmp_path / "lq"
    lq.mkdir()
    inputs = [sorted((sample / "aaf128" / "images").iterdir())[0], sorted((sample / "real_lq").glob("*.png"))[0]]
    for f in inputs:
        (lq / f.name).write_bytes(f.read_bytes())
    weights = export_restorer(bfrzoo.create_restorer("unet", base_channels=8, depth=2), "unet",
                              {"base_channels": 8, "depth": 2}, tmp_path / "restorer.pt")
    monkeypatch.chdir(tmp_path)
    main(["predict", "--recipe", "unet", "--demo", "--trainer.accelerator", "cpu", "--data.predict_dir", str(lq),
          "--model.init_args.init_weights", str(weights), "--model.init_args.restorer_args",
          "{base_channels: 8, depth: 2}", "--predict_output", str(tmp_path / "out")])
    outputs = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in outputs] == sorted(f"{f.stem}.png" for f in inputs)
    for f in inputs:
        restored, original = read_image(tmp_path / "out" / f"{f.stem}.png"), read_image(f)
        assert restored.shape == original.shape and torch.equal(restored, original)


def test_default_root_dir_moves_the_whole_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", "--recipe", "unet", "--demo", *TINY, "--trainer.default_root_dir", str(tmp_path / "elsewhere")])
    run = _run_dir(tmp_path / "elsewhere")
    assert run.parent == tmp_path / "elsewhere" / "logs" and not (tmp_path / "runs").exists()
    assert (run / "metrics.csv").is_file() and list(run.glob("events.out.tfevents.*")) and (run / "restorer.pt").is_file()


def test_bf16_mixed_precision_demo_fit_records_its_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GPU runs use bf16 autocast; the same path runs on CPU, and the table row says which precision scored it."""
    monkeypatch.chdir(tmp_path)
    main(["fit", "--recipe", "unet", "--demo", *TINY, "--trainer.precision", "bf16-mixed"])
    run = _run_dir(tmp_path / "runs" / "unet")
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["precision"] == "bf16-mixed"
    # the bf16 table is what the exported weights give under bf16 autocast (and not the fp32 number)
    table, recomputed = table_psnr_from_restorer(run, 64, torch.bfloat16)
    assert abs(table - recomputed) < 0.05


def test_restore_aligned_batches_mixed_sizes_and_keeps_each_size(tmp_path: Path) -> None:
    """Consecutive same-size files share a forward pass, other sizes get their own; outputs keep their input's size
    (an untrained U-Net is the identity, so each output equals its input exactly after 8-bit rounding)."""
    import bfrzoo
    from bfrzoo.io import read_image, sample_root
    from bfrzoo.registry import export_restorer
    from bfrzoo.restore_run import RestoreSettings, run_restore

    src = tmp_path / "in"
    src.mkdir()
    files = sorted((sample_root("aaf128") / "images").iterdir())[:3] + sorted(sample_root("real_lq").glob("*.png"))[:2]
    for f in files:
        (src / f.name).write_bytes(f.read_bytes())
    weights = export_restorer(bfrzoo.create_restorer("unet", base_channels=8, depth=2), "unet",
                              {"base_channels": 8, "depth": 2}, tmp_path / "restorer.pt")
    summary = run_restore(RestoreSettings(inputs=(str(src),), out_dir=tmp_path / "out", weights=str(weights), aligned=True,
                                          device="cpu", batch_size=2), progress=False)
    assert summary.count("restored") == 5 and not summary.failed
    for f in files:
        restored = read_image(tmp_path / "out" / f"{f.stem}.png")
        assert torch.equal(restored, read_image(f)), f.name


@pytest.mark.parametrize("recipe", ["unet", "gpen", "stylegan2_prior"])
def test_resumed_fit_is_bitwise_identical_to_an_uninterrupted_one(
    recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop after epoch 1, resume with --ckpt_path for epoch 2: the weights (EMA and discriminators included)
    equal those of a 2-epoch run to the bit. Shuffling, flips and degradations are seeded by (seed, rank, epoch,
    batch); the checkpoint carries the optimiser states, the lazy-regularisation step counters and the RNG state
    (random latents and style mixing of the GAN prior)."""
    args = ["fit", "--recipe", recipe, "--demo", *TINY]
    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    monkeypatch.chdir(tmp_path / "straight")
    main([*args, "--trainer.max_epochs", "2", "--test_after_fit", "false"])
    monkeypatch.chdir(tmp_path / "resumed")
    main([*args, "--trainer.max_epochs", "1", "--test_after_fit", "false"])
    first = tmp_path / "resumed" / "runs" / recipe / "logs" / "version_0" / "checkpoints" / "last.ckpt"
    loads: list[object] = []  # weights_only of every file torch.load reads while resuming (Lightning's included)
    real_load = torch.load

    def spy_load(f, *a, **k):  # type: ignore[no-untyped-def]
        if not isinstance(f, io.BytesIO):  # in-memory buffers bfrzoo made itself (torch-fidelity's empty init)
            loads.append(k.get("weights_only"))
        return real_load(f, *a, **k)

    with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patch.setattr(torch, "load", spy_load)
        main([*args, "--trainer.max_epochs", "2", "--test_after_fit", "false", "--ckpt_path", str(first)])
    assert loads and all(w is True for w in loads), loads
    # the resumed run continues in its own version_0 folder, and its best-checkpoint tracking survives (no
    # "dirpath has changed ... won't be reloaded" reset): the best checkpoint is the uninterrupted run's
    assert not [w for w in caught if "won't be reloaded" in str(w.message) or "dirpath has changed" in str(w.message)]
    assert [p.name for p in first.parents[2].iterdir()] == ["version_0"]

    def best_of(root: Path) -> tuple[str, float]:
        state = torch.load(root / "runs" / recipe / "logs" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
        cb = next(v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint"))
        assert (root / cb["best_model_path"]).is_file()  # relative to the folder the run was started in
        score = cb["best_model_score"]  # None for a checkpoint without a monitored metric (stylegan2_prior)
        return Path(cb["best_model_path"]).name, None if score is None else float(score)

    assert best_of(tmp_path / "resumed") == best_of(tmp_path / "straight")

    def weights(root: Path) -> dict[str, torch.Tensor]:
        ckpt = sorted(root.glob(f"runs/{recipe}/logs/version_*/checkpoints/last.ckpt"))[-1]
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        assert state["epoch"] == 1
        return {k: v for k, v in state["state_dict"].items() if k.startswith(("net.", "net_ema.", "disc."))}

    straight, resumed = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    assert any(k.startswith("net_ema." if recipe == "unet" else "disc.") for k in straight)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
