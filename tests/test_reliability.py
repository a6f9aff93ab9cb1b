"""Reliability and security of the CLI and of the image / checkpoint readers: every user mistake is ONE line
(`bfrzoo: error: ...`, exit status 2) said before any work, and no checkpoint, local or remote, runs code."""
from __future__ import annotations

import http.server
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import bfrzoo
from bfrzoo.cli import main
from bfrzoo.errors import BfrzooError, ImageInputError
from bfrzoo.io import check_image_file, read_image, sample_root

DEMO = ["--recipe", "unet", "--demo", "--trainer.accelerator", "cpu", "--data.size", "64", "--trainer.max_epochs", "1"]


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `bfrzoo argv`; it must exit with status 2 and ONE error line, which is returned."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("bfrzoo: error: ")]
    assert len(lines) == 1, err
    return lines[0]


class _Payload:
    """Unpickling this runs code: it writes the marker file (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.marker, "code ran"))


def _code_carrying_checkpoint(path: Path, marker: Path) -> Path:
    """A file laid out like a Lightning checkpoint whose unpickling writes ``marker``."""
    torch.save({"state_dict": {}, "epoch": 0, "pytorch-lightning_version": "2.6.6", "payload": _Payload(marker)}, path)
    assert not marker.exists()
    return path


def _lightning_like_checkpoint(path: Path, restorer_args: dict, class_path: str = "bfrzoo.tasks.RestorationTask") -> Path:
    net = bfrzoo.create_restorer("unet", **restorer_args)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    hparams = {"_class_path": class_path, "restorer": "unet", "restorer_args": restorer_args,
               "_instantiator": "pytorch_lightning.cli.instantiate_module"}
    torch.save({"state_dict": state, "epoch": 0, "pytorch-lightning_version": "2.6.6", "hyper_parameters": hparams}, path)
    return path


def _sample_files(n: int) -> list[Path]:
    return sorted((sample_root("aaf128") / "images").iterdir())[:n]


# ------------------------------------------------------------------------------------------- --ckpt_path
DEMO_ARGS = {"base_channels": 16, "depth": 3, "max_channels": 64, "blocks_per_level": 1}


@pytest.mark.parametrize("case", ["missing", "empty", "truncated", "folder", "restorer.pt", "parser.pt", "code", "other task"])
def test_bad_ckpt_path_is_one_line_before_anything_is_built(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bfrzoo.registry import export_restorer

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "marker"
    ckpt = tmp_path / "x.ckpt"
    if case == "empty":
        ckpt.write_bytes(b"")
    elif case == "truncated":
        full = _lightning_like_checkpoint(tmp_path / "full.ckpt", DEMO_ARGS).read_bytes()
        ckpt.write_bytes(full[: len(full) // 2])
    elif case == "folder":
        ckpt.mkdir()
    elif case == "restorer.pt":
        ckpt = export_restorer(bfrzoo.create_restorer("unet", **DEMO_ARGS), "unet", DEMO_ARGS, tmp_path / "restorer.pt")
    elif case == "parser.pt":
        from bfrzoo.models.parsenet import ParseNet, save_parser

        ckpt = save_parser(ParseNet(32, 32, 16, 8, res_depth=1, ch_range=(8, 16)), {}, tmp_path / "parser.pt")
    elif case == "code":
        _code_carrying_checkpoint(ckpt, marker)
    elif case == "other task":
        _lightning_like_checkpoint(ckpt, DEMO_ARGS, class_path="bfrzoo.tasks.gpen.GPENTask")
    line = _fails(["fit", *DEMO, "--ckpt_path", str(ckpt)], capsys)
    expected = {
        "missing": "does not exist", "empty": "is empty (0 bytes)", "truncated": "corrupt, truncated",
        "folder": "is a folder", "restorer.pt": "--model.init_args.init_weights", "parser.pt": "is a parser.pt",
        "code": "pickled Python objects or code", "other task": "checkpoint of bfrzoo.tasks.gpen.GPENTask",
    }[case]
    assert expected in line and str(ckpt.name) in line
    if case == "restorer.pt":
        assert "is a restorer.pt of 'unet'" in line and "not a Lightning training checkpoint" in line
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()  # refused before the trainer made a run folder


def test_fit_resume_with_other_model_arguments_names_every_differing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """LightningCLI would silently replace the command's --model.* values by the checkpoint's; bfrzoo refuses."""
    monkeypatch.chdir(tmp_path)
    ckpt = _lightning_like_checkpoint(tmp_path / "last.ckpt", {**DEMO_ARGS, "base_channels": 8})
    line = _fails(["fit", *DEMO, "--ckpt_path", str(ckpt)], capsys)
    assert "model.init_args.restorer_args.base_channels (checkpoint 8, given 16)" in line
    assert "depth" not in line and "--model.init_args.init_weights" in line


@pytest.fixture
def evil_server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A local HTTP server (127.0.0.1) serving a code-carrying checkpoint: ``(url, marker, requested paths)``."""
    marker = tmp_path / "marker"
    served = tmp_path / "served"
    served.mkdir()
    _code_carrying_checkpoint(served / "evil.ckpt", marker)
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/evil.ckpt", marker, requests
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict"])
def test_remote_ckpt_path_is_refused_and_never_unpickled(
    command: str, evil_server: tuple[str, Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Lightning downloads a URL --ckpt_path and unpickles it with weights_only=False (code execution); bfrzoo
    refuses it in one line, without even downloading it."""
    url, marker, requests = evil_server
    monkeypatch.chdir(tmp_path)
    extra = ["--data.predict_dir", str(sample_root("real_lq"))] if command == "predict" else []
    line = _fails([command, *DEMO, *extra, "--ckpt_path", url], capsys)
    assert "is a URL" in line and "download it yourself" in line and url in line
    assert not marker.exists() and requests == []


def test_weights_only_false_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    line = _fails(["test", *DEMO, "--weights_only", "false"], capsys)
    assert "weights_only=True" in line


def test_lightning_is_called_with_weights_only_true() -> None:
    """Whatever the command line, the Trainer method gets weights_only=True (Lightning's default for a remote
    path is False)."""
    from bfrzoo.training import BfrzooCLI

    cli = BfrzooCLI.__new__(BfrzooCLI)
    cli.config_init = {"test": {"ckpt_path": "x.ckpt", "weights_only": None, "verbose": True}}
    cli._subcommand_method_arguments = {"test": ["ckpt_path", "verbose", "weights_only"]}
    cli.model, cli.datamodule = object(), None
    kwargs = cli._prepare_subcommand_kwargs("test")
    assert kwargs["weights_only"] is True and kwargs["ckpt_path"] == "x.ckpt"


# -------------------------------------------------------------------------------------------- predict
def test_predict_without_weights_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    line = _fails(["predict", *DEMO, "--data.predict_dir", str(sample_root("real_lq")), "--predict_output", str(out)], capsys)
    assert "--ckpt_path" in line and "--model.init_args.init_weights" in line and "randomly initialised" in line
    assert not out.exists()


def test_predict_checks_every_input_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Two broken files among good ones: both are named (one line each), no image is restored."""
    from bfrzoo.registry import export_restorer

    lq = tmp_path / "lq"
    lq.mkdir()
    for f in _sample_files(2):
        (lq / f.name).write_bytes(f.read_bytes())
    (lq / "zz_broken.png").write_bytes(b"\x89PNG not really")
    (lq / "aa_empty.jpg").write_bytes(b"")
    weights = export_restorer(bfrzoo.create_restorer("unet", **DEMO_ARGS), "unet", DEMO_ARGS, tmp_path / "restorer.pt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", *DEMO, "--data.predict_dir", str(lq), "--model.init_args.init_weights", str(weights),
              "--predict_output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "2 of 4 input images cannot be read" in err
    assert len([line for line in err.splitlines() if "zz_broken.png" in line]) == 1
    assert len([line for line in err.splitlines() if "aa_empty.jpg" in line]) == 1
    assert not (tmp_path / "out").exists()  # checked before the output folder was even made


# ------------------------------------------------------------------------------------------ output folders
def _make_unwritable(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``folder`` refuses new entries: by its permissions, or (as root, who ignores them) by the OS call failing
    the way it fails for a normal user."""
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    real_open, real_mkdir = os.open, os.mkdir

    def _denied(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path).resolve().is_relative_to(folder.resolve()):
            raise PermissionError(13, "Permission denied", str(path))
        return None

    monkeypatch.setattr(os, "open", lambda path, *a, **k: _denied(path) or real_open(path, *a, **k))
    monkeypatch.setattr(os, "mkdir", lambda path, *a, **k: _denied(path) or real_mkdir(path, *a, **k))


@pytest.mark.parametrize("problem", ["under a file", "unwritable"])
def test_output_folders_that_cannot_be_written_are_one_line(
    problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bfrzoo.registry import export_restorer

    monkeypatch.chdir(tmp_path)
    hq = tmp_path / "hq"
    hq.mkdir()
    for f in _sample_files(2):
        (hq / f.name).write_bytes(f.read_bytes())
    weights = export_restorer(bfrzoo.create_restorer("unet", **DEMO_ARGS), "unet", DEMO_ARGS, tmp_path / "restorer.pt")
    if problem == "under a file":
        (tmp_path / "a_file").write_text("x")
        bad, expected = tmp_path / "a_file" / "out", "is under"
    else:
        _make_unwritable(tmp_path / "locked", monkeypatch)
        bad, expected = tmp_path / "locked" / "out", "cannot be written"
    runs = [
        (["fit", *DEMO, "--trainer.default_root_dir", str(bad)], "--trainer.default_root_dir"),
        (["predict", *DEMO, "--data.predict_dir", str(hq), "--model.init_args.init_weights", str(weights),
          "--predict_output", str(bad)], "--predict_output"),
        (["degrade", "--seed", "0", str(hq), str(bad)], "output folder"),
    ]
    for argv, option in runs:
        line = _fails(argv, capsys)
        assert option in line and expected in line and str(bad) in line, line
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - set(hq.iterdir()) - {weights, tmp_path / "a_file"}
    assert written == set()  # nothing was written anywhere


@pytest.mark.parametrize("accelerator", ["gpu0", "cuda"])
def test_unknown_or_missing_accelerator_is_one_line(
    accelerator: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if accelerator == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    monkeypatch.chdir(tmp_path)
    line = _fails(["fit", *DEMO, "--trainer.accelerator", accelerator], capsys)
    assert f"--trainer.accelerator {accelerator}" in line.replace("'", "")
    assert ("not an accelerator name" in line and "auto, cpu, cuda, gpu" in line) if accelerator == "gpu0" else "no GPU is visible" in line


# ---------------------------------------------------------------------------------------------- degrade
def test_degrade_reports_every_unreadable_file_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bfrzoo.data.folder as folder_mod

    src = tmp_path / "hq"
    src.mkdir()
    for f in _sample_files(3):
        (src / f.name).write_bytes(f.read_bytes())
    (src / "broken1.png").write_bytes(b"\x89PNG not really")
    (src / "broken2.jpg").write_bytes(b"\xff\xd8\xff nope")
    decoded: list[Path] = []
    real_read = folder_mod.read_image
    monkeypatch.setattr(folder_mod, "read_image", lambda p: decoded.append(Path(p)) or real_read(p))
    with pytest.raises(SystemExit) as exit_info:
        main(["degrade", "--seed", "0", str(src), str(tmp_path / "lq")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert "2 of 5 input images cannot be read" in err[0]
    assert [sum("broken1.png" in line for line in err), sum("broken2.jpg" in line for line in err)] == [1, 1]
    assert decoded == [] and not (tmp_path / "lq").exists() and not list(tmp_path.glob(".lq*"))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says ``width x height`` RGB but whose pixel data is a few bytes: reading its header
    is cheap and valid (CRCs check out); decoding it would fail."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


def test_degrade_refuses_a_camera_photo_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 6000 x 4000 photo (24 Mpx, over the 16.8 Mpx limit) is refused with its name and size, from the header
    alone (nothing is decoded: the file's pixels do not even exist); with --size 512 the limit is about 512 x 512."""
    import bfrzoo.data.folder as folder_mod

    src = tmp_path / "hq"
    src.mkdir()
    (src / "a_face.png").write_bytes(_sample_files(1)[0].read_bytes())
    _png_header_only(src / "photo.png", 6000, 4000)
    assert check_image_file(src / "photo.png") == (6000, 4000)
    decoded: list[Path] = []
    monkeypatch.setattr(folder_mod, "read_image", lambda p: decoded.append(Path(p)))
    with pytest.raises(SystemExit) as exit_info:
        main(["degrade", "--seed", "0", str(src), str(tmp_path / "lq")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "1 input image(s) are over bfrzoo degrade's limit of 16.8 Mpx (4096x4096" in err and "--size N" in err
    assert "photo.png'" in err and "6000x4000 (24.0 Mpx)" in err and "a_face.png" not in err
    assert decoded == [] and not (tmp_path / "lq").exists()
    assert folder_mod.MAX_DEGRADE_PIXELS == 4096 * 4096
    with pytest.raises(BfrzooError, match="--size 8192 makes 8192x8192 images"):
        folder_mod.degrade_folder(src, tmp_path / "lq", preset="common", seed=0, size=8192)


# -------------------------------------------------------------------------------- EXIF, 16 bit, ranges
def _upright_pattern(width: int = 24, height: int = 40) -> np.ndarray:
    """An upright test picture: top half red, bottom half blue, a green left quarter (orientation-revealing)."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[: height // 2, :, 0] = 255
    img[height // 2 :, :, 2] = 255
    img[:, : width // 4] = (0, 255, 0)
    return img


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_respected_by_read_image_and_degrade(orientation: int, tmp_path: Path) -> None:
    """A camera stores the sensor's pixels and the EXIF orientation tag (0x0112) that turns them upright; bfrzoo
    reads (and so degrades, trains on and predicts) the upright picture, as viewers show it."""
    from PIL import Image

    upright = _upright_pattern()
    stored = {  # the sensor image whose orientation tag turns it into `upright`
        3: Image.fromarray(upright).transpose(Image.Transpose.ROTATE_180),
        6: Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90),
        8: Image.fromarray(upright).transpose(Image.Transpose.ROTATE_270),
    }[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    src = tmp_path / "hq"
    src.mkdir()
    stored.save(src / "photo.jpg", quality=95, exif=exif)
    got = read_image(src / "photo.jpg")
    assert got.shape == (3, 40, 24)
    assert (got - torch.from_numpy(upright).permute(2, 0, 1).float() / 255).abs().mean() < 0.03
    assert check_image_file(src / "photo.jpg") == (24, 40)

    from bfrzoo.data.folder import degrade_folder

    degrade_folder(src, tmp_path / "lq", preset="common", seed=0)
    assert Image.open(tmp_path / "lq" / "photo.png").size == (24, 40)


def test_16bit_png_files_are_scaled_not_clipped(tmp_path: Path) -> None:
    import cv2
    from PIL import Image

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode == "I;16"
    got = read_image(tmp_path / "gray16.png")
    assert torch.equal(got, torch.from_numpy(gray.astype(np.float32) / 65535).expand(3, -1, -1))
    rgb = rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1])
    got = read_image(tmp_path / "rgb16.png").permute(1, 2, 0).numpy()
    assert np.abs(got - rgb / 65535).max() < 1 / 255 + 1e-6  # PIL reads 16-bit RGB at 8-bit precision


def test_restorer_takes_16bit_pil_images_and_uint16_arrays() -> None:
    """An untrained U-Net is the identity, so the output equals the input: a 16-bit input must not come back
    white (PIL's convert("RGB") clips I;16 at 255)."""
    from PIL import Image

    from bfrzoo.interface import Restorer

    r = Restorer(bfrzoo.create_restorer("unet", base_channels=8, depth=2), device="cpu")
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 65536, (32, 32), dtype=np.uint16)
    out = np.asarray(r.restore(Image.fromarray(gray)))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - np.round(gray / 65535 * 255)[..., None]).max() <= 1
    rgb = rng.integers(0, 65536, (32, 32, 3), dtype=np.uint16)
    out16 = r.restore(rgb)
    assert out16.dtype == np.uint16 and out16.shape == rgb.shape
    assert np.abs(out16.astype(int) - rgb.astype(int)).max() <= 1


def test_restorer_refuses_out_of_range_values_and_clamps_rounding() -> None:
    from bfrzoo.interface import RANGE_TOLERANCE, Restorer

    r = Restorer(bfrzoo.create_restorer("unet", base_channels=8, depth=2), device="cpu")
    with pytest.raises(ImageInputError, match=r"got values from 0 to 255: 0\.\.255 data\? divide it by 255"):
        r.restore(np.linspace(0, 255, 32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3))
    with pytest.raises(ImageInputError, match=r"\[-1, 1\] data\? map it with \(x \+ 1\) / 2"):
        r.restore(torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32))
    assert RANGE_TOLERANCE == 1e-3
    x = torch.rand(1, 3, 32, 32)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = -5e-4, 1 + 5e-4  # within the tolerance: accepted, clamped
    y = r.restore(x)
    assert y.min() >= 0 and y.max() <= 1
    torch.testing.assert_close(y, x.clamp(0, 1), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ what a file is
def test_parser_and_prior_files_are_named_when_given_as_a_restorer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bfrzoo.blocks.stylegan2 import Generator
    from bfrzoo.models.gan_prior import save_gan_prior
    from bfrzoo.models.parsenet import ParseNet, save_parser
    from bfrzoo.registry import load_restorer

    parser = save_parser(ParseNet(32, 32, 16, 8, res_depth=1, ch_range=(8, 16)), {}, tmp_path / "parser.pt")
    with pytest.raises(BfrzooError) as err:
        load_restorer(parser)
    assert "is a parser.pt (the face-parsing network of `bfrzoo fit --recipe parsenet`" in str(err.value)
    assert "--model.parser_checkpoint" in str(err.value) and "not a restorer.pt" in str(err.value)
    prior = save_gan_prior(Generator(16, style_dim=8, n_mlp=1, narrow=0.0625), None, {"size": 16}, tmp_path / "prior.pt")
    with pytest.raises(BfrzooError, match=r"is a prior.pt .*--model.prior_checkpoint"):
        load_restorer(prior)
    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "a.png").write_bytes(_sample_files(1)[0].read_bytes())
    line = _fails(["restore", str(faces), "--out", str(tmp_path / "out"), "--weights", str(parser), "--aligned"], capsys)
    assert "is a parser.pt" in line and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- --help
def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    main(argv)
    return " ".join(capsys.readouterr().out.split())  # jsonargparse wraps lines: compare on words


def _entry(text: str, flag: str) -> str:
    """The help entry of ``flag``: from ``flag`` to the next option."""
    start = text.index(f"{flag} ", text.index("options:") if "options:" in text else 0)
    end = text.find(" --", start + len(flag))
    while text.startswith(f" {flag}+", end):  # the `--key+` alias of a list option
        end = text.find(" --", end + len(flag) + 2)
    return text[start:end]


def test_help_under_a_recipe_shows_every_task_key_with_the_recipe_value(capsys: pytest.CaptureFixture[str]) -> None:
    """LightningCLI's --help shows only `--model CONFIG` (subclass mode); under a recipe bfrzoo shows every task
    and data key with type, documentation and the recipe's value, and the Trainer keys the recipe sets."""
    import inspect

    from bfrzoo.tasks import RestorationTask
    from bfrzoo.tasks.gpen import GPENTask

    unet = _help(["fit", "--recipe", "unet", "--help"], capsys)
    assert "task bfrzoo.tasks.RestorationTask" in unet
    assert _entry(unet, "--model.init_args.restorer_args") == (
        "--model.init_args.restorer_args RESTORER_ARGS its architecture arguments (the factory's keyword arguments). "
        "(type: Optional[dict[str, Any]], default: {'base_channels': 32, 'depth': 4, 'max_channels': 256, "
        "'blocks_per_level': 2})")
    ema = _entry(unet, "--model.init_args.ema_decay")
    assert "EMA decay per step of the trained network" in ema and ema.endswith("(type: float | null, default: 0.999)")
    assert _entry(unet, "--model.init_args.metrics").endswith("default: ['psnr', 'ssim', 'psnr_y', 'ssim_y', 'lpips', 'niqe'])")
    assert _entry(unet, "--data.size") == (
        "--data.size SIZE side the faces are resized to (positive multiple of 8). (type: int, default: 512)")
    assert _entry(unet, "--trainer.max_epochs").endswith("(type: Optional[int], default: 100)")
    assert "default: runs/unet)" in _entry(unet, "--trainer.default_root_dir")
    assert "'monitor': 'val/psnr'" in _entry(unet, "--trainer.callbacks")
    assert "--trainer.gradient_clip_val" not in unet  # a Trainer key the recipe does not set
    for name in inspect.signature(RestorationTask).parameters:
        if name != "kwargs":
            assert f"--model.init_args.{name} " in unet, name
    for name in ("ema_decay", "metrics", "metrics_pretrained", "grid_images"):  # BfrzooTask's, through **kwargs
        assert f"--model.init_args.{name} " in unet

    demo = _help(["fit", "--recipe", "unet", "--demo", "--model.init_args.lr", "0.005", "--help"], capsys)
    assert _entry(demo, "--model.init_args.lr") == "--model.init_args.lr LR Adam learning rate. (type: float, default: 0.005)"
    assert _entry(demo, "--data.size").endswith("(type: int, default: 128)")

    gpen = _help(["fit", "--recipe", "gpen", "--help"], capsys)
    assert "task bfrzoo.tasks.gpen.GPENTask" in gpen
    assert _entry(gpen, "--model.init_args.prior_checkpoint").startswith(
        "--model.init_args.prior_checkpoint PRIOR_CHECKPOINT the pre-trained GAN prior")
    betas = _entry(gpen, "--model.init_args.betas")
    assert "Adam betas of all three groups" in betas and betas.endswith("default: [0.0, 0.99])")
    assert _entry(gpen, "--model.init_args.lr").endswith("(type: float, default: 0.002)")
    assert _entry(gpen, "--model.init_args.restorer_args").endswith("default: {'noise_mode': 'concat'})")
    assert _entry(gpen, "--model.init_args.ema_decay").endswith("default: null)")
    assert _entry(gpen, "--data.preset").endswith("(type: str, default: gpen)")
    assert _entry(gpen, "--data.batch_size").endswith("(type: int, default: 1)")
    assert "'monitor': 'val/lpips'" in _entry(gpen, "--trainer.callbacks")
    assert "default: runs/gpen)" in _entry(gpen, "--trainer.default_root_dir")
    for name in inspect.signature(GPENTask).parameters:
        if name != "kwargs":
            assert f"--model.init_args.{name} " in gpen, name


def test_eval_with_a_checkpoint_says_when_its_model_arguments_replace_the_commands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate / test / predict rebuild the network the checkpoint holds (its arguments win, as in LightningCLI):
    bfrzoo says so, naming each replaced value, instead of dropping the command's silently."""
    monkeypatch.chdir(tmp_path)
    main(["fit", *DEMO, "--model.init_args.restorer_args.base_channels", "8", "--test_after_fit", "false"])
    (ckpt,) = sorted(tmp_path.rglob("last.ckpt"))
    capsys.readouterr()
    main(["test", *DEMO, "--ckpt_path", str(ckpt)])  # the demo recipe says base_channels 16
    err = capsys.readouterr().err
    notes = [ln for ln in err.splitlines() if ln.startswith("bfrzoo: note: test --ckpt_path")]
    assert len(notes) == 1 and "model.init_args.restorer_args.base_channels (checkpoint 8, given 16)" in notes[0], err
    assert "depth" not in notes[0]
    capsys.readouterr()
    main(["test", *DEMO, "--model.init_args.restorer_args.base_channels", "8", "--ckpt_path", str(ckpt)])
    assert "bfrzoo: note:" not in capsys.readouterr().err  # the same arguments: nothing to say
