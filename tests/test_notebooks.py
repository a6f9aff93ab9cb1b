"""The demo notebooks: valid nbformat-4 JSON stored without outputs, in sync with their sources, and they RUN.

Each notebook's code cells are joined in order and executed top to bottom in one fresh namespace, in a
subprocess of this Python (no jupyter needed), from an empty temporary working directory, offline (a socket
guard refuses any non-local connection) and without ``../shared``. After the last cell, a few of the notebook's
variables are written to JSON and checked here, so a notebook that runs but shows wrong numbers fails.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
EXPECTED = ("01_quickstart", "02_restore_and_evaluate", "03_train_demo", "04_restore_photos", "05_compare_models")

#: Run before the notebook's code: offline, empty weight cache, 1 thread, headless matplotlib, no network.
PREAMBLE = textwrap.dedent(
    """
    import os, socket, tempfile
    os.environ["BFRZOO_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WANDB_MODE"] = "disabled"
    os.environ["MPLBACKEND"] = "Agg"
    os.environ["BFRZOO_HOME"] = os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="bfrzoo-nb-home-")
    _connect = socket.socket.connect
    def _guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1") or host.startswith("/")):
            raise RuntimeError(f"notebook tried to reach the network ({address!r}); notebooks must run offline")
        return _connect(self, address)
    socket.socket.connect = _guarded
    import torch
    torch.set_num_threads(2)
    """
)

#: Per notebook: name -> expression evaluated in the notebook's namespace after its last cell.
RESULTS: dict[str, dict[str, str]] = {
    "01_quickstart": {
        "psnr_hq_hq": "psnr(hq, hq).tolist()",
        "lq_psnr": "table['psnr']",
        "lq_ssim": "table['ssim']",
        "lq_niqe": "table['niqe']",
        "presets": "list(PRESETS)",
        "same_again": "same_again",
        "real_niqe": "real_niqe.tolist()",
        "figures": "sorted(p.name for p in OUT.glob('*.png'))",
    },
    "02_restore_and_evaluate": {
        "gpen_max_abs": "gpen_max_abs",
        "psfrgan_max_abs": "psfrgan_max_abs",
        "parsenet_max_abs": "parsenet_max_abs",
        "reload_max_abs": "reload_max_abs",
        "identity_uint8_max_diff": "identity_uint8_max_diff",
        "out_types": "[type(out_pil).__name__, str(out_array.dtype), list(out_array.shape), list(out_tensor.shape)]",
        "restored_shapes": "[list(by_gpen.shape), list(by_psfrgan.shape)]",
        "lq_psnr": "lq_psnr",
        "unet_psnr": "unet_psnr",
    },
    "03_train_demo": {
        "run": "str(run)",
        "test_psnr": "test_psnr",
        "reproduced_psnr": "reproduced_psnr",
        "lq_baseline_psnr": "lq_baseline_psnr",
    },
    "04_restore_photos": {
        "faces_per_photo": "faces_per_photo",
        "output_sizes_match": "output_sizes_match",
        "crop_shapes": "sorted({f.crop.shape for r in results.values() for f in r[2]})",
        "identity_max_diff": "max(int(np.abs(np.asarray(r[1], dtype=int) - np.asarray(r[0].convert('RGB'), dtype=int)).max()) "
        "for r in results.values())",
        "cli_counts": "cli_counts",
        "cli_faces": "cli_faces",
        "rerun_skipped": "rerun_skipped",
        "figures": "figures",
    },
    "05_compare_models": {
        "models": "list(models)",
        "table": "table",
        "same_faces": "same_faces",
        "photo_faces": "len(first)",
        "figures": "figures",
    },
}

_MAGIC = re.compile(r"^\s*[%!]")


def _load_builder() -> Any:
    """``notebooks/build.py`` as a module (notebooks/ is not a package and is never imported by bfrzoo)."""
    name = "bfrzoo_notebooks_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, NOTEBOOKS / "build.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def strip_magics(code: str) -> str:
    """Drop IPython line magics / shell escapes (``%matplotlib inline``, ``!pip ...``) that plain Python rejects."""
    return "\n".join("pass" if _MAGIC.match(line) else line for line in code.split("\n"))


def notebook_code(path: Path) -> str:
    """The code cells of a notebook, in order, as one Python script."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return "\n\n".join(strip_magics(c) for c in cells) + "\n"


def _epilogue(stem: str, out: Path) -> str:
    items = ", ".join(f"{k!r}: ({v})" for k, v in RESULTS[stem].items())
    return f"\nimport json as _json\n_json.dump({{{items}}}, open({str(out)!r}, 'w'))\n"


class _Runs:
    """Each notebook runs once, when a test first asks for it, in its own subprocess, ONE AT A TIME: running them
    together made them race for the 2 cores of CI and time out under load. A run gets both cores and a generous
    timeout (a notebook that needs more is too slow for the suite and must be made smaller)."""

    timeout_s = 600

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self.done: dict[str, dict[str, Any]] = {}

    def _start(self, stem: str) -> tuple[subprocess.Popen[bytes], Path]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2", MPLBACKEND="Agg", NO_ALBUMENTATIONS_UPDATE="1")
        work = self.root / stem
        work.mkdir(parents=True)
        script = work / "notebook_script.py"
        script.write_text(PREAMBLE + notebook_code(NOTEBOOKS / f"{stem}.ipynb") + _epilogue(stem, work / "results.json"))
        with open(work / "stdout.txt", "w") as out, open(work / "stderr.txt", "w") as err:  # files: no pipe stalls
            proc = subprocess.Popen([sys.executable, str(script)], cwd=work, env=env, stdout=out, stderr=err)
        self.procs[stem] = (proc, work)
        return proc, work

    def result(self, stem: str) -> dict[str, Any]:
        if stem not in self.done:
            proc, work = self._start(stem)
            try:
                proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stdout, stderr = ((work / f).read_text(errors="replace") for f in ("stdout.txt", "stderr.txt"))
            assert proc.returncode == 0, f"{stem}.ipynb failed (exit {proc.returncode}; killed after " \
                f"{self.timeout_s} s if -9):\n{stdout[-3000:]}\n{stderr[-6000:]}"
            self.done[stem] = {**json.loads((work / "results.json").read_text()), "_stdout": stdout}
        return self.done[stem]

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def execute(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], dict[str, Any]]]:
    """``execute(stem)``: the notebook's recorded results after it ran top to bottom (each runs once)."""
    runs = _Runs(tmp_path_factory.mktemp("notebooks"))
    yield runs.result
    runs.stop()


# ------------------------------------------------------------------------------------------- format
def test_the_notebooks_and_their_sources_exist() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)
    assert sorted(p.stem for p in (NOTEBOOKS / "src").glob("*.py")) == sorted(EXPECTED)
    assert set(RESULTS) == set(EXPECTED)


@pytest.mark.parametrize("stem", EXPECTED)
def test_notebook_is_nbformat4_without_outputs(stem: str) -> None:
    nb = json.loads((NOTEBOOKS / f"{stem}.ipynb").read_text(encoding="utf-8"))
    assert set(nb) == {"cells", "metadata", "nbformat", "nbformat_minor"}
    assert nb["nbformat"] == 4 and isinstance(nb["nbformat_minor"], int) and nb["nbformat_minor"] >= 5
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = [c["id"] for c in nb["cells"]]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", i) for i in ids)
    kinds = [c["cell_type"] for c in nb["cells"]]
    assert kinds[0] == "markdown" and kinds.count("markdown") >= 4 and kinds.count("code") >= 4
    for cell in nb["cells"]:
        assert isinstance(cell["source"], list) and all(isinstance(s, str) for s in cell["source"])
        assert "".join(cell["source"]).strip(), "empty cell"
        assert isinstance(cell["metadata"], dict)
        if cell["cell_type"] == "code":
            assert set(cell) == {"cell_type", "id", "metadata", "source", "execution_count", "outputs"}
            assert cell["outputs"] == [] and cell["execution_count"] is None, "notebooks are stored without outputs"
        else:
            assert cell["cell_type"] == "markdown" and set(cell) == {"cell_type", "id", "metadata", "source"}
    code = notebook_code(NOTEBOOKS / f"{stem}.ipynb")
    compile(code, f"{stem}.ipynb", "exec")  # valid Python once magics are stripped
    assert "shared/" not in code and "http" not in code, "notebooks use only the embedded sample, offline"


@pytest.mark.parametrize("stem", EXPECTED)
def test_notebook_is_generated_from_its_source(stem: str) -> None:
    build = _load_builder()
    expected = build.render(NOTEBOOKS / "src" / f"{stem}.py")
    assert (NOTEBOOKS / f"{stem}.ipynb").read_text(encoding="utf-8") == expected, (
        "the .ipynb is out of date: run `python notebooks/build.py`"
    )


def test_builder_parses_percent_format_and_magics_are_stripped() -> None:
    build = _load_builder()
    cells = build.parse_cells("# header\n# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\n\n# %%\nprint(x)\n")
    assert [(c.kind, c.text) for c in cells] == [("markdown", "# Title\n\ntext"), ("code", "x = 1"), ("code", "print(x)")]
    nb = build.to_notebook(cells, "demo")
    assert nb["cells"][0]["source"] == ["# Title\n", "\n", "text"] and nb["cells"][1]["outputs"] == []
    with pytest.raises(ValueError, match="markdown lines"):
        build.parse_cells("# %% [markdown]\nnot a comment\n")
    assert strip_magics("%matplotlib inline\nx = 1\n  !ls") == "pass\nx = 1\npass"


# --------------------------------------------------------------------------------------------- runs
def test_01_quickstart_degrades_every_preset_and_scores_it(execute: Callable[[str], dict[str, Any]]) -> None:
    r = execute("01_quickstart")
    assert r["presets"] == ["gpen", "psfrgan", "mpcnet", "mmrb", "common"]
    assert all(math.isinf(v) and v > 0 for v in r["psnr_hq_hq"]), "PSNR of an image with itself is +inf"
    assert r["same_again"] is True, "degrade(hq, preset, seed) must be deterministic"
    for name in r["presets"]:
        assert math.isfinite(r["lq_psnr"][name]) and 5.0 < r["lq_psnr"][name] < 40.0, (name, r["lq_psnr"][name])
        assert 0.0 < r["lq_ssim"][name] < 0.95, (name, r["lq_ssim"][name])
        # degradation makes faces less natural than their HQ originals (NIQE: lower is better)
        assert r["lq_niqe"][name] > r["lq_niqe"]["HQ"], (name, r["lq_niqe"])
    # GPEN's model (s in [10, 200]) destroys far more than the others: the lowest PSNR of all presets
    assert min(r["lq_psnr"], key=r["lq_psnr"].get) == "gpen"
    assert len(r["real_niqe"]) == 4 and all(math.isfinite(v) and v > 0 for v in r["real_niqe"])
    assert r["figures"] == ["presets.png", "real_lq.png"]


def test_02_restore_matches_official_outputs_and_round_trips(execute: Callable[[str], dict[str, Any]]) -> None:
    r = execute("02_restore_and_evaluate")
    assert r["gpen_max_abs"] < 1e-4 and r["psfrgan_max_abs"] < 1e-4 and r["parsenet_max_abs"] < 1e-4
    assert r["reload_max_abs"] == 0.0, "restorer.pt must reproduce the exported network exactly"
    assert r["out_types"] == ["Image", "uint8", [190, 250, 3], [3, 190, 250]], "Restorer returns the input's kind"
    assert r["identity_uint8_max_diff"] == 0, "an untrained U-Net is the identity, through padding and uint8"
    assert r["restored_shapes"] == [[2, 3, 512, 512], [2, 3, 512, 512]]
    assert math.isfinite(r["lq_psnr"]) and abs(r["unet_psnr"] - r["lq_psnr"]) < 1e-3
    assert "WeightsNotFoundError: weight file 'GPEN-BFR-512.pth'" in r["_stdout"]


def test_03_train_demo_writes_a_run_whose_table_reproduces(execute: Callable[[str], dict[str, Any]]) -> None:
    r = execute("03_train_demo")
    run = Path(r["run"])
    report = json.loads((run / "test_metrics.json").read_text())
    assert report["restorer"] == "unet" and report["num_images"] == 8 and report["size"] == 64
    assert math.isfinite(report["metrics"]["psnr"]) and 10.0 < report["metrics"]["psnr"] < 40.0
    assert r["test_psnr"] == report["metrics"]["psnr"]
    assert abs(r["reproduced_psnr"] - r["test_psnr"]) < 1e-3
    assert math.isfinite(r["lq_baseline_psnr"]) and abs(r["test_psnr"] - r["lq_baseline_psnr"]) < 3.0
    assert (run / "test_grid.png").is_file() and (run / "restorer.pt").is_file()
    assert "| unet |" in (run / "test_metrics.md").read_text() and "| unet |" in r["_stdout"]


def test_04_restores_the_sample_photos_and_the_cli_agrees(execute: Callable[[str], dict[str, Any]]) -> None:
    r = execute("04_restore_photos")
    assert r["faces_per_photo"]["psfrgan_test_hzgg.jpg"] == 3 and r["faces_per_photo"]["gfpgan_Blake_Lively.jpg"] == 2
    assert r["faces_per_photo"]["codeformer_00.jpg"] >= 3
    assert r["output_sizes_match"] and r["crop_shapes"] == [[256, 256, 3]]
    # offline the notebook falls back to the untrained U-Net: the identity, up to the resampling of two warps
    assert "no released weights here: weight file 'GPEN-BFR-512.pth'" in r["_stdout"]
    assert r["identity_max_diff"] < 128
    assert r["cli_counts"] == {"restored": 1, "skipped": 0, "failed": 0} and r["cli_faces"] == {"psfrgan_test_hzgg.jpg": 3}
    assert r["rerun_skipped"] == 1
    assert r["figures"] == ["aligned_crops.png", "before_after_0.png", "before_after_1.png", "before_after_2.png"]


def test_05_compares_every_model_on_the_same_faces(execute: Callable[[str], dict[str, Any]]) -> None:
    r = execute("05_compare_models")
    assert "unet (tiny, random)" in r["models"] and "gpen (tiny, random)" in r["models"] and "unet (tiny, 40 steps)" in r["models"]
    table = r["table"]
    assert set(table) == {"LQ", *r["models"]}
    assert all(math.isfinite(v) for row in table.values() for v in row.values())
    # an untrained U-Net is the identity: its scores are the LQ's; training moves them
    assert abs(table["unet (tiny, random)"]["psnr"] - table["LQ"]["psnr"]) < 1e-3
    assert table["unet (tiny, 40 steps)"]["psnr"] != table["LQ"]["psnr"]
    assert r["same_faces"] and r["photo_faces"] == 3
    assert {"faces_by_model.png", "photo_faces_by_model.png"} <= set(r["figures"])  # + metrics.png with matplotlib
