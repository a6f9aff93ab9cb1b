"""`bfrzoo restore`: whole photos end to end, the summary and exit codes, bad inputs, and the file-safety rules of
issue 8 (inputs never touched, only bfrzoo's own files replaced, unique names, resumable after SIGKILL)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bfrzoo.cli import main
from bfrzoo.io import sample_root
from bfrzoo.restore_run import LEDGER_NAME, SUMMARY_NAME

WHOLE = sample_root("whole")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny U-Net: the identity, so restored pixels equal the input's through warps and pastes."""
    import bfrzoo
    from bfrzoo.registry import export_restorer

    torch.manual_seed(0)
    net = bfrzoo.create_restorer("unet", base_channels=8, depth=2)
    return export_restorer(net, "unet", {"base_channels": 8, "depth": 2}, tmp_path_factory.mktemp("w") / "restorer.pt")


def _restore(*args: str | Path) -> int:
    argv = [*map(str, args), *(() if "--device" in args else ("--device", "cpu")), "-q"]
    try:
        main(["restore", *argv])
    except SystemExit as exit_info:
        return int(exit_info.code or 0)
    return 0


def _crops(folder: Path, names: list[str], size: int = 32) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    paths = []
    for name in names:
        path = folder / name
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ whole photos
def test_whole_photos_are_restored_with_a_summary_compare_faces_and_a_rerun_skips(
    tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    for name in ("codeformer_00.jpg", "psfrgan_test_hzgg.jpg"):
        (src / name).write_bytes((WHOLE / name).read_bytes())
    Image.new("RGB", (96, 64), (120, 130, 140)).save(src / "wall.png")  # no face: written unchanged, not a failure
    out = tmp_path / "out"
    assert _restore(src, "--weights", weights, "--out", out, "--compare", "--save-faces", "--upscale", "2", "--crop-size", "256") == 0
    printed = capsys.readouterr().out
    assert "3 of 3 inputs restored" in printed and "detector mtcnn" in printed and "feathered mask" in printed
    assert "no face restored in 1 (written unchanged): wall.png" in printed
    report = json.loads((out / SUMMARY_NAME).read_text())
    faces = {Path(it["input"]).name: it["faces"] for it in report["items"]}
    assert faces["psfrgan_test_hzgg.jpg"] == 3 and faces["codeformer_00.jpg"] >= 3 and faces["wall.png"] == 0
    assert report["counts"] == {"restored": 3, "skipped": 0, "failed": 0} and report["faces"] == sum(faces.values())
    for name, (w, h) in {"psfrgan_test_hzgg.png": (1080, 441), "wall.png": (96, 64)}.items():
        assert Image.open(out / name).size == (2 * w, 2 * h), "the background is upscaled with the faces"
    assert (out / "compare" / "psfrgan_test_hzgg.jpg").is_file()
    assert len(list((out / "faces").glob("psfrgan_test_hzgg_*_input.png"))) == 3
    # the identity restorer leaves the faces as they were (up to the resampling of two warps)
    before = np.asarray(Image.open(src / "wall.png").resize((192, 128), Image.BICUBIC), dtype=float)
    assert np.abs(np.asarray(Image.open(out / "wall.png"), dtype=float) - before).max() <= 2
    written = _snapshot(out)
    assert _restore(src, "--weights", weights, "--out", out) == 0
    assert "skipped 3: 3 already restored" in capsys.readouterr().out
    assert _snapshot(out).keys() == written.keys()
    assert {k: v for k, v in _snapshot(out).items() if k != SUMMARY_NAME} == {k: v for k, v in written.items() if k != SUMMARY_NAME}


def test_python_api_restore_photo_returns_the_same_kind_and_the_faces(weights: Path) -> None:
    from bfrzoo.face.photo import PhotoOptions
    from bfrzoo.interface import Restorer
    from bfrzoo.registry import load_restorer

    restorer = Restorer(load_restorer(weights), device="cpu")
    photo = Image.open(WHOLE / "psfrgan_test_hzgg.jpg")
    options = PhotoOptions(crop_size=128)
    out, faces = restorer.restore_photo(photo, options, detector="mtcnn", parser=None)
    assert isinstance(out, Image.Image) and out.size == photo.size and len(faces) == 3
    assert faces[0].restored.shape == (128, 128, 3) and faces[0].matrix.shape == (2, 3)
    array = np.asarray(photo.convert("RGB")).copy()
    kept = array.copy()
    out_array, _ = restorer.restore_photo(array, options, detector="mtcnn", parser=None)
    assert out_array.dtype == np.uint8 and out_array.shape == array.shape and np.array_equal(array, kept), "input untouched"


# --------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_each_get_one_line_and_the_rest_proceed(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.jpg").write_bytes((WHOLE / "codeformer_00.jpg").read_bytes())
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = (WHOLE / "gfpgan_Blake_Lively.jpg").read_bytes()
    (src / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (src / "notes.jpg").write_text("not an image")
    Image.new("RGB", (4, 4)).save(src / "tiny.png")
    Image.new("L", (5000, 4000)).save(src / "huge.png")
    (src / "dangling.png").symlink_to(tmp_path / "missing.png")
    Image.new("RGB", (64, 64), (90, 90, 90)).save(src / "noface.png")
    code = _restore(src, tmp_path / "nowhere.jpg", "--weights", weights, "--out", tmp_path / "out", "--max-megapixels", "10")
    captured = capsys.readouterr()
    assert code == 1
    failures = [line for line in captured.err.splitlines() if line.startswith("bfrzoo: failed:")]
    failed_names = sorted(Path(line.split(": ")[2]).name for line in failures)
    assert failed_names == sorted(["corrupt.png", "truncated.jpg", "notes.jpg", "tiny.png", "huge.png", "dangling.png", "nowhere.jpg"])
    assert "Traceback" not in captured.err
    reasons = {Path(line.split(": ")[2]).name: line for line in failures}
    assert "5000x4000 (20 MP), more than the 10 MP" in reasons["huge.png"]
    assert "at least 8x8" in reasons["tiny.png"] and "no such file or folder" in reasons["nowhere.jpg"]
    assert "2 of 9 inputs restored" in captured.out and "failed 7" in captured.out
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["good.png", "noface.png"]
    report = json.loads((tmp_path / "out" / SUMMARY_NAME).read_text())
    assert report["counts"] == {"restored": 2, "skipped": 0, "failed": 7}


def test_device_errors_are_one_line_and_exit_2(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _crops(tmp_path / "in", ["a.png"])
    assert _restore(tmp_path / "in", "--weights", weights, "--out", tmp_path / "out", "--device", "gpu0") == 2
    err = capsys.readouterr().err
    assert err.startswith("bfrzoo: error: unknown device 'gpu0'") and len(err.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        assert _restore(tmp_path / "in", "--weights", weights, "--out", tmp_path / "out", "--device", "cuda") == 2
        err = capsys.readouterr().err
        assert "no CUDA GPU on this machine" in err and "--device cpu" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------- issue 8: file safety
def test_output_equal_to_or_above_the_input_is_refused_and_deletes_nothing(tmp_path: Path, weights: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """DATA LOSS: `--overwrite` with OUT == IN, or OUT a parent of IN, used to delete the inputs and OUT's other files."""
    parent = tmp_path / "photos"
    src = parent / "in"
    _crops(src, ["a.png", "b.jpg"])
    (parent / "unrelated.txt").write_text("keep me")
    before = _snapshot(parent)
    for out in (src, parent):
        assert _restore(src, "--weights", weights, "--out", out, "--aligned", "--overwrite") == 2
        err = capsys.readouterr().err
        assert "outputs would mix with the inputs" in err and len(err.strip().splitlines()) == 1
    assert _snapshot(parent) == before


def test_output_inside_the_input_folder_leaves_inputs_alone_on_reruns(tmp_path: Path, weights: Path) -> None:
    src = tmp_path / "in"
    _crops(src, ["a.png", "b.png"])
    before = {k: v for k, v in _snapshot(src).items()}
    out = src / "restored"
    for extra in ((), ("--overwrite",), ("--recursive",)):
        assert _restore(src, "--weights", weights, "--out", out, "--aligned", *extra) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"], "outputs never become inputs"
    assert {k: v for k, v in _snapshot(src).items() if not k.startswith("restored")} == before
    # a glob that matches the outputs too: they are recognised as bfrzoo's outputs and skipped
    assert _restore(str(out / "*.png"), "--weights", weights, "--out", out, "--aligned") == 0


def test_overwrite_replaces_only_files_bfrzoo_wrote(tmp_path: Path, weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    _crops(src, ["a.png", "b.png"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.png").write_bytes(b"the user's own file")
    (out / "other.txt").write_text("unrelated")
    assert _restore(src, "--weights", weights, "--out", out, "--aligned", "--overwrite") == 1
    err = capsys.readouterr().err
    assert "b.png' exists and was not written by bfrzoo restore" in err
    assert (out / "b.png").read_bytes() == b"the user's own file" and (out / "other.txt").read_text() == "unrelated"
    first = (out / "a.png").stat().st_mtime_ns
    assert _restore(src / "a.png", "--weights", weights, "--out", out, "--aligned", "--overwrite") == 0
    assert (out / "a.png").stat().st_mtime_ns >= first and (out / LEDGER_NAME).read_text().splitlines()[0] == "a.png"


def test_inputs_with_the_same_stem_get_unique_outputs_and_true_counts(tmp_path: Path, weights: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """SILENT OVERWRITE: `a.jpg` and `a.png` used to give one output while the count said 2."""
    src = tmp_path / "in"
    paths = _crops(src, ["a.jpg", "a.png", "b.png"])
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "b.png").write_bytes(paths[2].read_bytes())
    assert _restore(src, tmp_path / "more", "--weights", weights, "--out", tmp_path / "out", "--aligned") == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a_jpg.png", "a_png.png", "b.png", "b_2.png"]
    assert "4 of 4 inputs restored" in capsys.readouterr().out


def test_one_unreadable_file_among_good_ones_does_not_stop_the_folder(tmp_path: Path, weights: Path) -> None:
    src = tmp_path / "in"
    _crops(src, ["a.png", "c.png"])
    (src / "b.png").write_bytes(b"broken")
    assert _restore(src, "--weights", weights, "--out", tmp_path / "out", "--aligned") == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png", "c.png"]


def test_exif_orientation_is_applied(tmp_path: Path, weights: Path) -> None:
    """EXIF orientation used to be ignored (outputs rotated)."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    pixels = (rng.random((40, 24, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(src / "portrait.png", exif=exif)
    assert _restore(src, "--weights", weights, "--out", tmp_path / "out", "--aligned") == 0
    out = np.asarray(Image.open(tmp_path / "out" / "portrait.png"))
    assert np.array_equal(out, np.rot90(pixels, -1)), "upright, as a viewer shows it"


def test_after_sigkill_stale_partials_are_cleaned_and_finished_outputs_skipped(tmp_path: Path, weights: Path,
                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A run killed with SIGKILL used to leave a hidden `.partial` folder forever and redo everything."""
    src = tmp_path / "in"
    _crops(src, ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal, sys
        import bfrzoo.photo_io as pio
        real = pio.write_photo
        count = 0
        def write_then_die(photo, path, quality=95):
            global count
            count += 1
            if count == 2:  # die in the middle of writing the second output, leaving its temporary file
                from bfrzoo.io import atomic_write
                def half(tmp):
                    tmp.write_bytes(b"half a png")
                    os.kill(os.getpid(), signal.SIGKILL)
                atomic_write(path, half)
            return real(photo, path, quality)
        pio.write_photo = write_then_die
        from bfrzoo.cli import main
        main(["restore", {str(src)!r}, "--weights", {str(weights)!r}, "--out", {str(out)!r}, "--aligned", "-q",
              "--device", "cpu", "--batch-size", "1"])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / "a.png").is_file() and not (out / "b.png").exists() and list(out.glob(".b.png.*.tmp"))
    (tmp_path / ".out.abcd1234.partial").mkdir()  # what bfrzoo < 0.2 left on SIGKILL
    first = (out / "a.png").read_bytes()
    assert _restore(src, "--weights", weights, "--out", out, "--aligned") == 0
    printed = capsys.readouterr().out
    assert "2 of 3 inputs restored" in printed and "1 already restored" in printed and "removed 2 stale" in printed
    assert not list(out.glob(".*.tmp")) and not (tmp_path / ".out.abcd1234.partial").exists()
    assert (out / "a.png").read_bytes() == first and (out / "b.png").is_file() and (out / "c.png").is_file()


def test_a_large_photo_is_restored_in_bounded_memory(tmp_path: Path) -> None:
    """A 6000x4000 photo used to take 13.5 GB in restore. Now only face regions become float: the whole pipeline
    (decode, detection copy, warps, restoration, paste-back, PNG write) stays far below that (the photo itself is
    72 MB as uint8; float copies of it would be 288 MB each)."""
    script = textwrap.dedent(f"""
        import resource, numpy as np, torch
        from PIL import Image
        import bfrzoo
        from bfrzoo.interface import Restorer
        from bfrzoo.face.detect import Detection
        from bfrzoo.face.photo import restore_photo_array, PhotoOptions
        from bfrzoo.face.align import template
        from bfrzoo.photo_io import read_photo, write_photo
        torch.set_num_threads(1)
        rng = np.random.default_rng(0)
        tile = (rng.random((400, 600, 3)) * 255).astype(np.uint8)
        Image.fromarray(np.tile(tile, (10, 10, 1))).save({str(tmp_path / 'big.jpg')!r}, quality=90)
        del tile
        class TwoFaces:
            name, note = "stub", ""
            def detect(self, image):
                s = image.shape[1] / 6000
                faces = []
                for scale, x, y in ((4.0, 1000, 500), (0.5, 4500, 3000)):  # a face filling half the photo, and a small one
                    lm = (template(512).numpy() * scale + np.array([x, y])) * s
                    faces.append(Detection(np.r_[lm.min(0), lm.max(0)], lm, 0.99))
                return faces
        restorer = Restorer(bfrzoo.create_restorer("unet", base_channels=8, depth=2), device="cpu", batch_size=2)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        photo = read_photo({str(tmp_path / 'big.jpg')!r})
        result = restore_photo_array(restorer, photo, PhotoOptions(keep_crops=False), TwoFaces(), None, inplace=True)
        write_photo(result.photo, {str(tmp_path / 'big.png')!r})
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(len(result.faces), result.photo.rgb.shape, round(peak - base))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    growth = int(last.split()[-1])
    assert last.startswith("2 (4000, 6000, 3)"), last
    print(f"peak RSS growth for a 6000x4000 photo: {growth} MB")
    assert growth < 1500, f"peak memory grew by {growth} MB for a 6000x4000 photo"
    assert Image.open(tmp_path / "big.png").size == (6000, 4000)


def test_a_photo_over_the_size_limit_is_refused_from_its_header(tmp_path: Path, weights: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A 10k x 10k photo (100 MP) works by default (200 MP limit); a lower limit refuses it in one line without
    decoding it, and --upscale counts against the limit too."""
    src = tmp_path / "in"
    src.mkdir()
    Image.new("L", (10000, 10000)).save(src / "huge.png")
    assert _restore(src, "--weights", weights, "--out", tmp_path / "out", "--max-megapixels", "50") == 1
    assert "10000x10000 (100 MP), more than the 50 MP allowed" in capsys.readouterr().err
    _crops(tmp_path / "small", ["s.png"], size=64)
    assert _restore(tmp_path / "small", "--weights", weights, "--out", tmp_path / "out2", "--upscale", "4",
                    "--max-megapixels", "0.05") == 1
    assert "the output would be 256x256 (0.1 MP) with upscale 4" in capsys.readouterr().err


def test_default_precision_is_the_fastest_mode_within_tolerance_and_the_summary_says_which(
    tmp_path: Path, weights: Path
) -> None:
    """``--precision auto`` (the default) runs the fastest inference mode of the device whose restored image stays
    within 4/255 of fp32 (bfrzoo.bench.fastest_mode), and says which; ``--precision 32`` keeps fp32."""
    src = tmp_path / "aligned"
    _crops(src, ["a.png", "b.png"])
    assert _restore(src, "--aligned", "--weights", weights, "--out", tmp_path / "auto") == 0
    report = json.loads((tmp_path / "auto" / SUMMARY_NAME).read_text())
    assert report["precision"] == "auto" and "inference mode" in report["model"] and "tolerance 0.0157" in report["model"]
    assert _restore(src, "--aligned", "--weights", weights, "--out", tmp_path / "fp32", "--precision", "32") == 0
    assert "inference mode fp32 (--precision 32)" in json.loads((tmp_path / "fp32" / SUMMARY_NAME).read_text())["model"]
    for name in ("a.png", "b.png"):  # an identity network: every mode within tolerance gives the same 8-bit image
        auto, fp32 = (np.asarray(Image.open(tmp_path / d / name), dtype=int) for d in ("auto", "fp32"))
        assert np.abs(auto - fp32).max() <= 4
