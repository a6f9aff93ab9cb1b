"""``bfrzoo bench quality``: every model scored on ONE fixed, seeded degraded test set with the full metrics
suite, and a no-reference block on real low-quality faces.

The test set is made once by :func:`bfrzoo.data.folder.degrade_folder` (what ``bfrzoo degrade`` runs: one
preset, one seed, per-image seeds from the file names) from the ``val`` split of an HQ data root (or every image
of a plain folder), or given as a folder ``bfrzoo degrade`` wrote; its SHA-256 over the sorted file names and
bytes is printed in the table, so two tables scored on different sets cannot pass for one. Models are
``restorer.pt`` files or run folders (``--runs``) or registered names with released weights (``--models``);
each restores the test set in fp32 (the default mode: scores do not depend on the machine's fastest mode) and is
scored with every metric of :func:`bfrzoo.metrics.list_metrics`. A metric whose weight file the machine lacks
(LPIPS, FID) is reported as "n/a (no weights)", never computed with a random network; one that cannot run at
the test set's size (MS-SSIM below 161 px) says so.

The no-reference block restores real LQ faces (any folder, searched recursively) and reports NIQE (always),
CLIPIQA, MANIQA and MUSIQ (the NTIRE 2025 real-world face restoration metrics, through ``pyiqa`` when the
package and its weights are present), an identity cosine between each input and its output (a face
recognition embedding: facenet-pytorch's InceptionResnetV1 trained on VGGFace2, standing in for NTIRE's AdaFace,
when its weight file is present), and FID of the outputs against an HQ folder (``--fid-hq``).

Everything is deterministic: the same arguments give the same numbers (a test checks it).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bfrzoo.errors import BfrzooError, ImageInputError, WeightsNotFoundError
from bfrzoo.io import IMAGE_SUFFIXES
from bfrzoo.weights import PretrainedCfg, read_checkpoint

#: The no-reference metrics of the NTIRE 2025 real-world face restoration challenge computed through pyiqa.
PYIQA_METRICS: tuple[str, ...] = ("clipiqa", "maniqa", "musiq")

#: Face recognition network of the identity cosine (facenet-pytorch's ``InceptionResnetV1(pretrained="vggface2")``).
IDENTITY_CFG = PretrainedCfg(
    filename="20180402-114759-vggface2.pt",
    url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
    source="facenet-pytorch's InceptionResnetV1 trained on VGGFace2 (port of D. Sandberg's FaceNet model)",
    license="MIT (facenet-pytorch); VGGFace2 terms apply to the training data",
)

NA_NO_WEIGHTS = "n/a (no weights)"


# ------------------------------------------------------------------------------------------------ test set
def folder_checksum(folder: str | Path, recursive: bool = False) -> str:
    """SHA-256 of the sorted relative names and bytes of every image in ``folder`` (manifests excluded)."""
    folder = Path(folder)
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir())
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(folder)).encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class TestSet:
    """A fixed LQ test set paired with its HQ references."""

    lq_dir: Path
    hq_folder: Path
    names: tuple[str, ...]  # HQ file names; the LQ of ``name`` is ``lq_dir / (stem + ".png")``
    preset: str
    seed: int
    size: int | None
    checksum: str

    def load(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lq, hq)``, each ``(N, 3, H, W)`` in ``[0, 1]`` (HQ resized to the LQ size as ``degrade`` did)."""
        from bfrzoo.data.datasets import resize_image
        from bfrzoo.io import read_image

        names = self.names[:limit] if limit else self.names
        lq = torch.stack([read_image(self.lq_dir / f"{Path(n).stem}.png") for n in names])
        hq = torch.stack([resize_image(read_image(self.hq_folder / n), lq.shape[-1]) for n in names])
        return lq, hq


def prepare_test_set(
    hq: str | Path, work: str | Path, preset: str = "common", seed: int = 0, size: int | None = None,
    lq_dir: str | Path | None = None,
) -> TestSet:
    """The fixed test set: ``lq_dir`` if given (a folder ``bfrzoo degrade`` wrote, with its manifest), else
    ``work/testset_<preset>_s<seed>_<size>``, built once with :func:`~bfrzoo.data.folder.degrade_folder` from
    ``hq`` (its ``val`` split when it has a ``split.json``) and reused afterwards (its manifest must match)."""
    from bfrzoo.data.datasets import resolve_split
    from bfrzoo.data.folder import degrade_folder

    hq = Path(hq)
    if not hq.is_dir():
        raise BfrzooError(f"HQ folder {str(hq)!r} does not exist or is not a folder")
    if size is not None and (size < 8 or size % 8):
        raise BfrzooError(f"--size must be a positive multiple of 8, got {size}")
    split = "val" if (hq / "split.json").is_file() else None
    folder, names = resolve_split(hq, split)
    if lq_dir is None:
        lq_dir = Path(work) / f"testset_{preset}_s{seed}_{size or 'native'}"
        if not (lq_dir / "manifest.json").is_file():
            degrade_folder(hq, lq_dir, preset=preset, seed=seed, size=size, overwrite=lq_dir.exists())
    lq_dir = Path(lq_dir)
    manifest_file = lq_dir / "manifest.json"
    if not manifest_file.is_file():
        raise BfrzooError(f"{str(lq_dir)!r} has no manifest.json: make the test set with `bfrzoo degrade`")
    manifest = json.loads(manifest_file.read_text())
    want = {"preset": preset, "seed": seed, "size": size}
    got = {k: manifest.get(k) for k in want}
    if got != want:
        raise BfrzooError(
            f"test set {str(lq_dir)!r} was made with {got}, not {want}: pass matching --preset/--seed/--size or "
            "another folder"
        )
    missing = [n for n in names if not (lq_dir / f"{Path(n).stem}.png").is_file()]
    if missing:
        raise BfrzooError(f"{len(missing)} LQ images missing from {str(lq_dir)!r} (first: {missing[0]!r}); rebuild it")
    return TestSet(lq_dir, folder, tuple(names), preset, seed, size, folder_checksum(lq_dir))


# ------------------------------------------------------------------------------------------------ models
@dataclass
class Candidate:
    """A model to score: ``label`` (table row), ``source`` (file or released weights), the network or why not."""

    label: str
    source: str
    net: nn.Module | None = None
    unavailable: str | None = None


def _natural_key(path: Path) -> list[Any]:
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def load_candidates(runs: Sequence[str | Path] = (), models: Sequence[str] = ()) -> list[Candidate]:
    """``--runs`` (a ``restorer.pt`` or a folder: every ``restorer.pt`` under it) and ``--models`` (registered
    names, released weights from the cache; a missing file gives an n/a row, not an error)."""
    from bfrzoo.registry import create_restorer, load_restorer, restorer_entry

    out: list[Candidate] = []
    for run in runs:
        path = Path(run)
        if path.is_dir():
            files = sorted(path.rglob("restorer.pt"), key=_natural_key)
            if not files:
                raise BfrzooError(f"no restorer.pt under {str(path)!r}; give a run folder of `bfrzoo fit` or the file")
        elif path.is_file():
            files = [path]
        else:
            raise BfrzooError(f"--runs {str(path)!r} does not exist")
        for f in files:
            net = load_restorer(f)
            rel = f.parent.relative_to(path) if path.is_dir() and f.parent != path else f.parent.name
            name = read_checkpoint(f, "restorer")["restorer"]
            out.append(Candidate(f"{name} ({rel})" if str(rel) not in ("", ".") else name, str(f), net))
    for name in models:
        entry = restorer_entry(name)
        if entry.pretrained is None:
            raise BfrzooError(f"restorer {name!r} has no released weights; score your own run with --runs RUN_DIR")
        try:
            out.append(Candidate(name, f"released {entry.pretrained.filename}", create_restorer(name, pretrained=True)))
        except WeightsNotFoundError:
            out.append(Candidate(name, f"released {entry.pretrained.filename}", None, NA_NO_WEIGHTS))
    return out


def restore_all(net: nn.Module, lq: torch.Tensor, device: torch.device, batch_size: int = 8) -> torch.Tensor:
    """``lq`` restored in fp32 (same shape, ``[0, 1]``, on the CPU)."""
    from bfrzoo.interface import Restorer

    return Restorer(net, device=device, batch_size=batch_size).restore_tensor(lq).cpu()


# ------------------------------------------------------------------------------------------------ metrics
def _note(notes: list[str] | None, text: str) -> None:
    if notes is not None and text not in notes:
        notes.append(text)


Value = float | str  # a number, or an "n/a (...)" string


def build_metrics(names: Sequence[str]) -> dict[str, Any]:
    """Each registered metric of ``names`` built once with its real weights, or ``NA_NO_WEIGHTS`` when its weight
    file is missing (never a random network)."""
    from bfrzoo.metrics import build_metric_suite

    built: dict[str, Any] = {}
    for name in names:
        try:
            built[name] = build_metric_suite([name], pretrained=True)
        except WeightsNotFoundError:
            built[name] = NA_NO_WEIGHTS
    return built


def full_reference_scores(
    restored: torch.Tensor, hq: torch.Tensor, metrics: Sequence[str] | dict[str, Any], batch: int = 16,
    notes: list[str] | None = None,
) -> dict[str, Value]:
    """Every metric (names, or :func:`build_metrics`' result) on ``restored`` vs ``hq``; missing weights and
    unusable sizes give short "n/a (...)" cells, the full reason appended to ``notes``."""
    built = metrics if isinstance(metrics, dict) else build_metrics(metrics)
    scores: dict[str, Value] = {}
    for name, metric in built.items():
        if isinstance(metric, str):
            scores[name] = metric
            continue
        metric.reset()
        try:
            for i in range(0, restored.shape[0], batch):
                metric.update(restored[i : i + batch], hq[i : i + batch])
            scores[name] = float(metric.compute()[name])
        except ImageInputError as exc:
            scores[name] = "n/a (image size)"
            _note(notes, f"{name}: {str(exc).split(';')[0]}")
        metric.reset()
    return scores


def _pyiqa_scores(images: torch.Tensor, device: torch.device) -> dict[str, Value]:
    """CLIPIQA, MANIQA, MUSIQ via pyiqa (mean over images); "n/a (...)" without the package or its weights."""
    try:
        import pyiqa  # type: ignore[import-not-found]
    except ImportError:
        return {m: "n/a (no pyiqa)" for m in PYIQA_METRICS}
    out: dict[str, Value] = {}
    for m in PYIQA_METRICS:
        try:
            metric = pyiqa.create_metric(m, device=device, as_loss=False)
            with torch.inference_mode():
                vals = [float(metric(images[i : i + 1].to(device)).mean()) for i in range(images.shape[0])]
            out[m] = sum(vals) / len(vals)
        except Exception:  # noqa: BLE001 - pyiqa raises whatever its download / load raised
            out[m] = NA_NO_WEIGHTS  # pyiqa downloads its weights on first use; offline that fails
    return out


def identity_embedder(weights: str | Path | None = None) -> nn.Module:
    """InceptionResnetV1 (VGGFace2) from its weight file (:data:`IDENTITY_CFG`; WeightsNotFoundError when absent):
    ``(N, 3, H, W)`` in ``[0, 1]`` -> ``(N, 512)`` unit embeddings (resized to 160 x 160, FaceNet's input)."""
    from bfrzoo.weights import load_checkpoint, resolve_weights

    path = resolve_weights(IDENTITY_CFG, weights)
    from facenet_pytorch import InceptionResnetV1

    net = InceptionResnetV1(pretrained=None, classify=False)
    state = {k: v for k, v in load_checkpoint(path, "identity network").items() if not k.startswith("logits.")}
    net.load_state_dict(state, strict=True)

    class _Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net.eval().requires_grad_(False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.interpolate(x, size=(160, 160), mode="bilinear", align_corners=False, antialias=True)
            return self.net((x * 255 - 127.5) / 128.0)

    return _Embed()


def identity_cosine(inputs: torch.Tensor, outputs: torch.Tensor, embedder: nn.Module, batch: int = 16) -> float:
    """Mean cosine similarity between the embeddings of each input and its restored output (1 = same identity)."""
    sims = []
    with torch.inference_mode():
        for i in range(0, inputs.shape[0], batch):
            a, b = embedder(inputs[i : i + batch]), embedder(outputs[i : i + batch])
            sims.append(F.cosine_similarity(a.float(), b.float(), dim=1))
    return float(torch.cat(sims).mean())


def list_images_recursive(folder: str | Path, limit: int | None = None) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BfrzooError(f"folder {str(folder)!r} does not exist or is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BfrzooError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {str(folder)!r}")
    return files[:limit] if limit else files


def load_folder(files: Sequence[Path], size: int) -> torch.Tensor:
    from bfrzoo.data.datasets import resize_image
    from bfrzoo.io import read_image

    return torch.stack([resize_image(read_image(f), size) for f in files])


def no_reference_scores(
    inputs: torch.Tensor, outputs: torch.Tensor, device: torch.device, fid_hq: torch.Tensor | None,
    embedder: nn.Module | None | str,
) -> dict[str, Value]:
    """NIQE, pyiqa's CLIPIQA / MANIQA / MUSIQ, identity cosine (``embedder``; a string = why it is missing) and
    FID against ``fid_hq`` (``None``: no HQ folder given) of the restored ``outputs`` of real LQ ``inputs``."""
    from bfrzoo.metrics import niqe

    scores: dict[str, Value] = {}
    try:
        scores["niqe"] = float(torch.cat([niqe(outputs[i : i + 16]) for i in range(0, outputs.shape[0], 16)]).mean())
    except ImageInputError:
        scores["niqe"] = "n/a (image size)"
    scores.update(_pyiqa_scores(outputs, device))
    scores["identity_cos"] = embedder if isinstance(embedder, str) else identity_cosine(inputs, outputs, embedder)
    if fid_hq is None:
        scores["fid"] = "n/a (no --fid-hq)"
    else:
        scores.update(_fid_sets(outputs, fid_hq))
    return scores


def _fid_sets(fake: torch.Tensor, real: torch.Tensor) -> dict[str, Value]:
    """FID of the set ``fake`` against the set ``real`` (any two sizes >= 2)."""
    from bfrzoo.metrics import FID

    try:
        metric = FID(pretrained=True)
    except WeightsNotFoundError:
        return {"fid": NA_NO_WEIGHTS}
    with torch.no_grad():
        for images, is_real in ((real, True), (fake, False)):
            for i in range(0, images.shape[0], 16):
                super(FID, metric).update(images[i : i + 16], real=is_real)
    return {"fid": float(metric.compute())}


# ------------------------------------------------------------------------------------------------ the run
HIGHER_IS_BETTER_NR: dict[str, bool] = {"niqe": False, "clipiqa": True, "maniqa": True, "musiq": True,
                                        "identity_cos": True, "fid": False}


@dataclass
class QualityResult:
    """Rows of one ``bfrzoo bench quality`` run."""

    provenance: dict[str, str]
    test_set: dict[str, Any]
    metrics: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)  # label, source, params, scores
    real: dict[str, Any] | None = None  # folder, count, checksum, size
    real_rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_quality(
    candidates: Sequence[Candidate],
    test_set: TestSet,
    device: str | torch.device | None = None,
    metrics: Sequence[str] | None = None,
    real_lq: str | Path | None = None,
    real_size: int | None = None,
    real_limit: int | None = None,
    fid_hq: str | Path | None = None,
    identity_weights: str | Path | None = None,
    batch_size: int = 8,
    include_input: bool = True,
    allow_dirty: bool = True,
    writing: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> QualityResult:
    """Score ``candidates`` on ``test_set`` (and the real LQ block); see the module docstring."""
    from bfrzoo.bench.speed import provenance
    from bfrzoo.metrics import list_metrics, metric_higher_is_better

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = list(metrics) if metrics else list_metrics()
    for n in names:
        metric_higher_is_better(n)  # unknown name -> one clear error
    result = QualityResult(
        provenance(device, allow_dirty, writing),
        {"lq_dir": str(test_set.lq_dir), "hq": str(test_set.hq_folder), "preset": test_set.preset,
         "seed": test_set.seed, "size": test_set.size, "images": len(test_set.names), "sha256": test_set.checksum},
        names,
    )
    lq, hq = test_set.load()
    built = build_metrics(names)
    rows: list[tuple[str, str, nn.Module | None, str | None]] = []
    if include_input:
        rows.append(("lq (the input, no restoration)", "-", None, None))
    rows += [(c.label, c.source, c.net, c.unavailable) for c in candidates]
    real_files: list[Path] = []
    if real_lq is not None:
        real_files = list_images_recursive(real_lq, real_limit)
        rsize = real_size or test_set.size or 512
        real_inputs = load_folder(real_files, rsize)
        fid_ref = load_folder(list_images_recursive(fid_hq), rsize) if fid_hq is not None else None
        try:
            embedder: nn.Module | str = identity_embedder(identity_weights)
        except WeightsNotFoundError:
            embedder = NA_NO_WEIGHTS
            _note(result.notes, f"identity_cos: the face recognition weights {IDENTITY_CFG.filename} ({IDENTITY_CFG.source}) "
                  "are not in the cache")
        except ImportError:
            embedder = "n/a (no facenet-pytorch)"
        result.real = {"folder": str(real_lq), "images": len(real_files), "size": rsize,
                       "sha256": folder_checksum(real_lq, recursive=True) if real_limit is None else
                       hashlib.sha256(b"".join(f.read_bytes() for f in real_files)).hexdigest(),
                       "fid_hq": str(fid_hq) if fid_hq else None}
    for label, source, net, unavailable in rows:
        log(f"quality: {label}")
        params = sum(p.numel() for p in net.parameters()) if net is not None else None
        if unavailable:
            _note(result.notes, f"{label}: its weight file ({source.removeprefix('released ')}) is not in the cache"
                  if unavailable == NA_NO_WEIGHTS else f"{label}: {unavailable}")
            result.rows.append({"label": label, "source": source, "params": None, "scores": {n: unavailable for n in names}})
            if real_files:
                result.real_rows.append({"label": label, "scores": {k: unavailable for k in HIGHER_IS_BETTER_NR}})
            continue
        restored = lq if net is None else restore_all(net, lq, device, batch_size)
        result.rows.append({"label": label, "source": source, "params": params,
                            "scores": full_reference_scores(restored, hq, built, notes=result.notes)})
        if real_files:
            out = real_inputs if net is None else restore_all(net, real_inputs, device, batch_size)
            result.real_rows.append({"label": label, "scores": no_reference_scores(real_inputs, out, device, fid_ref, embedder)})
    if any(v == NA_NO_WEIGHTS for r in result.rows + result.real_rows for v in r["scores"].values()):
        result.notes.append("n/a (no weights): the metric's (or model's) weight file is not on this machine; it is "
                            "never replaced by a random network. See `bfrzoo.weights` for where to put the files.")
    return result


def _cell(v: Value) -> object:
    return v if isinstance(v, str) else float(v)


def render_markdown(result: QualityResult, command: str | None = None, title: str = "bfrzoo bench quality") -> str:
    from bfrzoo.metrics import metric_higher_is_better
    from bfrzoo.tables import markdown_table, metric_header

    p, t = result.provenance, result.test_set
    dirty = p["commit"].endswith("+dirty")
    lines = [f"# {title}", "",
             f"{p['device']}; torch {p['torch']}; commit `{p['commit']}`{' (**DIRTY TREE**)' if dirty else ''}; {p['date']}.", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    lines += [
        f"Test set: {t['images']} images of `{t['hq']}` degraded once with `bfrzoo degrade --preset {t['preset']} "
        f"--seed {t['seed']}{' --size ' + str(t['size']) if t['size'] else ''}` into `{t['lq_dir']}`; "
        f"SHA-256 `{t['sha256']}`. Restored in fp32.", "",
        markdown_table(
            ["model", *metric_header(result.metrics, {m: metric_higher_is_better(m) for m in result.metrics}), "params", "source"],
            [[r["label"], *(_cell(r["scores"][m]) for m in result.metrics),
              f"{r['params'] / 1e6:.2f}M" if r["params"] else "-", r["source"]] for r in result.rows],
        ),
    ]
    if result.real is not None:
        rl = result.real
        keys = list(HIGHER_IS_BETTER_NR)
        lines += [
            "", "## No-reference block: real low-quality faces", "",
            f"{rl['images']} images under `{rl['folder']}` (recursive, sorted), resized to {rl['size']} px; SHA-256 "
            f"`{rl['sha256']}`. FID against `{rl['fid_hq'] or '-'}`. CLIPIQA, MANIQA, MUSIQ: pyiqa; identity_cos: cosine "
            "of FaceNet (VGGFace2) embeddings of input and output (NTIRE 2025 uses AdaFace).", "",
            markdown_table(["model", *metric_header(keys, HIGHER_IS_BETTER_NR)],
                           [[r["label"], *(_cell(r["scores"][k]) for k in keys)] for r in result.real_rows]),
        ]
    lines += [f"\nNote: {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def render_csv(result: QualityResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["block", "model", "metric", "value", "source", "params", "test_set_sha256", "preset", "seed", "size",
                "device", "torch", "commit", "date"])
    p, t = result.provenance, result.test_set
    for r in result.rows:
        for m in result.metrics:
            w.writerow(["fixed_test_set", r["label"], m, r["scores"][m], r["source"], r["params"], t["sha256"],
                        t["preset"], t["seed"], t["size"], p["device"], p["torch"], p["commit"], p["date"]])
    for r in result.real_rows:
        for k, v in r["scores"].items():
            w.writerow(["real_lq", r["label"], k, v, "", "", result.real["sha256"] if result.real else "", "", "",
                        result.real["size"] if result.real else "", p["device"], p["torch"], p["commit"], p["date"]])
    return buf.getvalue()


def write_quality(result: QualityResult, out: str | Path, command: str | None = None, title: str = "bfrzoo bench quality") -> tuple[Path, Path]:
    from bfrzoo.io import atomic_write_text

    stem = Path(out)
    stem = stem.with_suffix("") if stem.suffix in (".md", ".csv") else stem
    return (atomic_write_text(stem.with_suffix(".md"), render_markdown(result, command, title)),
            atomic_write_text(stem.with_suffix(".csv"), render_csv(result)))
