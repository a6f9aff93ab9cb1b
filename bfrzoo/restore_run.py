"""``bfrzoo restore``: restore whole photos (or aligned face crops) from files, folders and globs into a folder.

What it guarantees about files:

* **Inputs are never touched.** An output folder equal to an input folder, or one that contains an input
  folder, is refused; an output folder inside an input folder is left out of that folder's listing. No output
  path is ever an input path, and inputs that are outputs of an earlier run into the same folder are skipped.
* **Only bfrzoo's own files are replaced or deleted.** Every file a run writes is recorded (before it is written)
  in ``OUT/.bfrzoo-restore-outputs``; ``--overwrite`` replaces recorded files only, and a file of the same name that
  bfrzoo did not write is reported and left alone. Nothing is ever deleted except bfrzoo's own stale temporary
  files (``.NAME.XXXXXXXX.tmp`` beside a planned output, ``.OUT.XXXXXXXX.partial`` folders of older versions).
* **Atomic, resumable.** Each output is written to a temporary file and renamed into place, so an interrupted run
  (even SIGKILL) leaves only complete outputs; a rerun skips them unless ``--overwrite``.
* **Unique names, true counts.** Inputs that would share an output name (``a.jpg``, ``a.png``) get
  ``a_jpg.png`` and ``a_png.png``; the summary counts what was written.
* **One bad file never stops the run.** Each failure is one line; the command exits nonzero at the end.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bfrzoo.errors import BfrzooError
from bfrzoo.face.photo import PhotoOptions
from bfrzoo.io import IMAGE_SUFFIXES

LEDGER_NAME = ".bfrzoo-restore-outputs"
SUMMARY_NAME = "bfrzoo_restore.json"
PRECISIONS: dict[str, torch.dtype] = {"32": torch.float32, "bf16": torch.bfloat16, "16": torch.float16}
#: Aligned crops larger than this (per side) are refused: restoring them whole would need too much memory.
MAX_ALIGNED_SIDE = 4096


@dataclass(frozen=True)
class RestoreSettings:
    """Everything ``bfrzoo restore`` is told (its flags of the same names)."""

    inputs: tuple[str, ...]
    out_dir: Path
    model: str | None = None
    weights: str | None = None
    aligned: bool = False
    device: str | None = None
    batch_size: int = 4
    precision: str = "32"
    overwrite: bool = False
    recursive: bool = False
    compare: bool = False
    save_faces: bool = False
    ext: str = "png"
    detector: str = "auto"
    detector_weights: str | None = None
    parser: str | None = "auto"
    photo: PhotoOptions = field(default_factory=PhotoOptions)


@dataclass
class Item:
    """One input and what happened to it."""

    path: Path
    rel_dir: Path = Path()
    target: Path | None = None
    status: str = "pending"  # restored | skipped | failed
    reason: str = ""
    faces: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    size: tuple[int, int] | None = None
    header: Any = None

    def fail(self, reason: str) -> None:
        self.status, self.reason = "failed", reason

    def skip(self, reason: str) -> None:
        self.status, self.reason = "skipped", reason


# ------------------------------------------------------------------------------------------------ devices
def parse_device(spec: str | None) -> torch.device:
    """``None`` / ``"auto"`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; anything
    else, or a device this machine lacks, is one clear :class:`BfrzooError`."""
    if spec in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise BfrzooError(f"unknown device {spec!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no GPU is visible"
            raise BfrzooError(f"--device {spec}: no CUDA GPU on this machine (torch {torch.__version__}, {built}); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise BfrzooError(f"--device {spec}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise BfrzooError(f"--device {spec}: MPS is not available on this machine; use --device cpu")
    elif device.type != "cpu":
        raise BfrzooError(f"--device {spec}: unsupported device type {device.type!r}; use cpu, cuda, cuda:N or mps")
    return device


# ------------------------------------------------------------------------------------------------ inputs
def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _listed(path: Path) -> bool:
    """An image file of a folder, or a broken link with an image name (reported as unreadable, not ignored)."""
    return _is_image_name(path) and (path.is_file() or (path.is_symlink() and not path.exists()))


def _folder_images(folder: Path, recursive: bool, out_dir: Path) -> list[Path]:
    if not recursive:
        return sorted(p for p in folder.iterdir() if _listed(p))
    found = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _inside((root_path / d).resolve(), out_dir))
        found += [root_path / f for f in sorted(files) if _listed(root_path / f)]
    return found


def collect_inputs(inputs: tuple[str, ...] | list[str], out_dir: Path, recursive: bool = False) -> list[Item]:
    """One :class:`Item` per input image (or per input that could not be used, already failed).

    Folders give their images (``recursive``: and their subfolders', keeping the relative folders under
    ``out_dir``); an argument that does not exist is expanded as a glob (``**`` recursive). Refuses, with one
    :class:`BfrzooError`, an output folder equal to or containing an input folder.
    """
    out_dir = out_dir.resolve()
    items: list[Item] = []
    seen: set[Path] = set()

    def add(path: Path, rel: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            items.append(Item(path, rel))

    for arg in inputs:
        path = Path(arg).expanduser()
        if not path.exists() and any(c in arg for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(arg), recursive=True))
            if not matches:
                items.append(Item(path, status="failed", reason="no file matches this pattern"))
            for match in matches:
                if match.is_file() and _is_image_name(match):
                    add(match, Path())
                elif match.is_dir():
                    items += _folder_items(match, out_dir, recursive, add)
            continue
        if path.is_dir():
            items += _folder_items(path, out_dir, recursive, add)
        elif path.is_file():
            add(path, Path())
        elif path.exists() or path.is_symlink():
            items.append(Item(path, status="failed", reason="not a regular file or folder (a broken link?)"))
        else:
            items.append(Item(path, status="failed", reason="no such file or folder"))
    return items


def _folder_items(folder: Path, out_dir: Path, recursive: bool, add: Any) -> list[Item]:
    resolved = folder.resolve()
    if _inside(resolved, out_dir):
        what = "is the input folder" if resolved == out_dir else "contains the input folder"
        raise BfrzooError(
            f"the output folder {str(out_dir)!r} {what} {str(folder)!r}: outputs would mix with the inputs. "
            "Choose an output folder outside the inputs (a subfolder of the input folder works)"
        )
    try:
        files = _folder_images(folder, recursive, out_dir)
    except OSError as exc:
        return [Item(folder, status="failed", reason=f"cannot list the folder ({type(exc).__name__}: {exc})")]
    files = [f for f in files if not _inside(f.resolve(), out_dir)]
    if not files:
        subfolders = not recursive and any(p.is_dir() for p in folder.iterdir())
        hint = "; it has subfolders: add --recursive" if subfolders else ""
        return [Item(folder, status="failed", reason=f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder{hint}")]
    for f in files:
        add(f, f.parent.relative_to(folder))
    return []


# ------------------------------------------------------------------------------------------------ outputs
class OutputLedger:
    """The files ``bfrzoo restore`` wrote into ``out_dir``: one relative path a line in ``OUT/.bfrzoo-restore-outputs``,
    appended (and flushed to disk) BEFORE each file is written, so that a file it names was written by bfrzoo
    even if the run was killed right after."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / LEDGER_NAME
        self.entries: set[str] = set()
        if self.path.is_file():
            self.entries = {line for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines() if line}

    def _key(self, path: Path) -> str | None:
        try:
            return path.resolve().relative_to(self.out_dir.resolve()).as_posix()
        except ValueError:
            return None

    def owns(self, path: Path) -> bool:
        key = self._key(path)
        return key is not None and key in self.entries

    def record(self, path: Path) -> None:
        key = self._key(path)
        if key is None or key in self.entries:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.entries.add(key)

    def may_write(self, path: Path, overwrite: bool) -> bool:
        """``path`` is free, or bfrzoo's own (replaced only with ``overwrite``)."""
        return not path.exists() or (overwrite and self.owns(path))


def _output_ext(item: Item, ext: str) -> str:
    header = item.header
    if ext != "png" and header is not None and (header.has_alpha or header.sixteen_bit):
        return "png"  # JPEG / WebP cannot hold alpha or 16 bit
    return ext


def plan_outputs(items: list[Item], out_dir: Path, ext: str) -> None:
    """Give every pending item a unique ``target`` under ``out_dir``."""
    pending = [it for it in items if it.status == "pending"]
    names = {id(it): it.path.stem for it in pending}

    def groups() -> dict[str, list[Item]]:
        by_target: dict[str, list[Item]] = defaultdict(list)
        for it in pending:
            by_target[(it.rel_dir / f"{names[id(it)]}.{_output_ext(it, ext)}").as_posix().lower()].append(it)
        return by_target

    for clash in [g for g in groups().values() if len(g) > 1]:
        if len({it.path.suffix.lower() for it in clash}) > 1:  # a.jpg + a.png -> a_jpg, a_png
            for it in clash:
                names[id(it)] = f"{it.path.stem}_{it.path.suffix.lstrip('.').lower()}"
    for clash in [g for g in groups().values() if len(g) > 1]:  # same name in two folders -> b, b_2
        for n, it in enumerate(clash[1:], start=2):
            names[id(it)] = f"{names[id(it)]}_{n}"
    inputs = {it.path.resolve() for it in items}
    for it in pending:
        it.target = out_dir / it.rel_dir / f"{names[id(it)]}.{_output_ext(it, ext)}"
        if it.target.resolve() in inputs:
            it.fail(f"its output {str(it.target)!r} would replace an input; choose another --out")


_TMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def clean_stale(items: list[Item], out_dir: Path) -> int:
    """Delete bfrzoo's own leftovers of an interrupted run: ``.NAME.XXXXXXXX.tmp`` files beside planned outputs
    (what :func:`bfrzoo.io.atomic_write` leaves on SIGKILL) and ``.OUT.XXXXXXXX.partial`` folders beside
    ``out_dir`` (the all-at-once output folders of bfrzoo < 0.2). Returns how many were removed."""
    removed = 0
    planned: dict[Path, set[str]] = defaultdict(set)
    for it in items:
        if it.target is not None:
            planned[it.target.parent].add(it.target.name)
    planned[out_dir].add(SUMMARY_NAME)
    for folder, names in planned.items():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = _TMP.match(entry.name)
            if match and match["name"] in names and entry.is_file():
                entry.unlink(missing_ok=True)
                removed += 1
    partial = re.compile(rf"^\.{re.escape(out_dir.name)}\.[a-z0-9_]{{8}}\.partial$")
    if out_dir.parent.is_dir():
        for entry in out_dir.parent.iterdir():
            if partial.match(entry.name) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    return removed


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class RunSummary:
    """What a run did; :meth:`lines` is what the command prints, :meth:`to_json` what it writes."""

    items: list[Item]
    out_dir: Path
    seconds: float = 0.0
    device: str = ""
    precision: str = "32"
    model: str = ""
    detector: str = ""
    mask: str = ""
    aligned: bool = False
    cleaned: int = 0

    def count(self, status: str) -> int:
        return sum(it.status == status for it in self.items)

    @property
    def failed(self) -> list[Item]:
        return [it for it in self.items if it.status == "failed"]

    @property
    def faces(self) -> int:
        return sum(it.faces for it in self.items if it.status == "restored")

    def lines(self) -> list[str]:
        restored, total = self.count("restored"), len(self.items)
        out = [
            f"bfrzoo restore: {restored} of {total} input{'s' if total != 1 else ''} restored into {self.out_dir} in "
            f"{self.seconds:.1f} s ({self.device}, precision {self.precision}{', ' + self.model if self.model else ''})"
        ]
        if not self.aligned and restored:
            photos = sum(1 for it in self.items if it.status == "restored" and it.faces)
            out.append(f"  faces: {self.faces} restored in {photos} photo(s); detector {self.detector}; paste: {self.mask}")
            dropped: Counter[str] = Counter()
            for it in self.items:
                dropped.update(it.dropped)
            if dropped:
                out.append("  faces left out: " + ", ".join(f"{n} {why}" for why, n in sorted(dropped.items())))
            faceless = [it for it in self.items if it.status == "restored" and not it.faces]
            if faceless:
                out.append(f"  no face restored in {len(faceless)} (written unchanged): {_few(faceless)}")
        skipped = [it for it in self.items if it.status == "skipped"]
        if skipped:
            reasons = Counter(it.reason for it in skipped)
            out.append(f"  skipped {len(skipped)}: " + "; ".join(f"{n} {why}" for why, n in reasons.items()) + f" ({_few(skipped)})")
        if self.cleaned:
            out.append(f"  removed {self.cleaned} stale temporary file(s) of an interrupted run")
        if self.failed:
            out.append(f"  failed {len(self.failed)} (one line each below)")
        return out

    def failure_lines(self) -> list[str]:
        return [f"bfrzoo: failed: {it.path}: {it.reason}" for it in self.failed]

    def to_json(self) -> dict[str, Any]:
        from bfrzoo import __version__

        return {
            "bfrzoo": __version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "out_dir": str(self.out_dir), "seconds": round(self.seconds, 3), "device": self.device,
            "precision": self.precision, "model": self.model, "mode": "aligned" if self.aligned else "photos",
            "detector": self.detector, "mask": self.mask,
            "counts": {s: self.count(s) for s in ("restored", "skipped", "failed")}, "faces": self.faces,
            "items": [
                {"input": str(it.path), "output": str(it.target) if it.target else None, "status": it.status,
                 "reason": it.reason, "faces": it.faces, "faces_left_out": it.dropped, "seconds": round(it.seconds, 3),
                 "size": list(it.size) if it.size else None}
                for it in self.items
            ],
        }


def _few(items: list[Item], n: int = 4) -> str:
    names = [it.path.name for it in items[:n]]
    return ", ".join(names) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def load_restorer_for(settings: RestoreSettings, device: torch.device) -> tuple[Any, str]:
    """The :class:`~bfrzoo.interface.Restorer` the settings name, and a line describing it."""
    from bfrzoo.interface import Restorer
    from bfrzoo.registry import create_restorer, load_restorer

    if settings.precision not in (*PRECISIONS, "auto"):
        raise BfrzooError(f"--precision must be auto or one of {', '.join(PRECISIONS)}, got {settings.precision!r}")
    if settings.batch_size < 1:
        raise BfrzooError(f"--batch-size must be >= 1, got {settings.batch_size}")
    if settings.model is None and settings.weights is None:
        raise BfrzooError("bfrzoo restore needs --model NAME (released weights) or --weights restorer.pt (or both)")
    if settings.model is None:
        net, what = load_restorer(settings.weights), f"{settings.weights}"
    elif settings.weights is None:
        net, what = create_restorer(settings.model, pretrained=True), f"{settings.model} (released weights)"
    else:
        net, what = create_restorer(settings.model, pretrained=settings.weights), f"{settings.model} from {settings.weights}"
    if settings.precision == "auto":
        # the fastest inference mode of this device whose restored faces stay within the tolerance of fp32
        # (bfrzoo.bench.fastest_mode, measured once per run on a probe batch; compiled modes are not tried)
        restorer = Restorer(net, device=device, batch_size=settings.batch_size, mode="auto")
        choice = restorer.mode_choice
        return restorer, f"{what}; {choice.describe() if choice is not None else 'inference mode ' + restorer.mode}"
    restorer = Restorer(net, device=device, dtype=PRECISIONS[settings.precision], batch_size=settings.batch_size)
    return restorer, f"{what}; inference mode {restorer.mode} (--precision {settings.precision})"


def run_restore(settings: RestoreSettings, progress: bool = True) -> RunSummary:
    """Restore ``settings.inputs`` into ``settings.out_dir``; see the module docstring for the file guarantees.

    Raises :class:`BfrzooError` for what stops the whole run before any work (bad device, no restorer, an output
    folder that would mix with the inputs); everything about single inputs is recorded in the returned
    :class:`RunSummary` instead.
    """
    from bfrzoo.photo_io import read_header

    start = time.perf_counter()
    if settings.ext not in ("png", "jpg", "webp"):
        raise BfrzooError(f"--ext must be png, jpg or webp, got {settings.ext!r}")
    device = parse_device(settings.device)
    out_dir = Path(settings.out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise BfrzooError(f"--out {str(out_dir)!r} is a file; give a folder")
    items = collect_inputs(settings.inputs, out_dir, settings.recursive)
    if not items:
        raise BfrzooError("no inputs given")
    ledger = OutputLedger(out_dir)
    for it in items:
        if it.status != "pending":
            continue
        if ledger.owns(it.path):
            it.skip("are outputs of an earlier bfrzoo restore")
            continue
        try:
            it.header = read_header(it.path, settings.photo.max_megapixels)
            it.size = (it.header.width, it.header.height)
            if settings.aligned and max(it.size) > MAX_ALIGNED_SIDE:
                it.fail(f"{it.size[0]}x{it.size[1]} is too large for an aligned crop (at most {MAX_ALIGNED_SIDE} px a side); "
                        "restore it as a whole photo (without --aligned)")
        except BfrzooError as exc:
            it.fail(str(exc))
        except OSError as exc:
            it.fail(f"cannot read ({type(exc).__name__}: {exc})")
    plan_outputs(items, out_dir, settings.ext)
    cleaned = clean_stale(items, out_dir)
    for it in items:
        if it.status != "pending" or it.target is None:
            continue
        if it.target.exists():
            if not ledger.owns(it.target):
                it.fail(f"{str(it.target)!r} exists and was not written by bfrzoo restore: left as it is "
                        "(move it away or choose another --out)")
            elif not settings.overwrite:
                it.skip("already restored (--overwrite redoes them)")
    summary = RunSummary(items, out_dir, device=str(device), precision=settings.precision, aligned=settings.aligned, cleaned=cleaned)
    todo = [it for it in items if it.status == "pending"]
    if todo:
        restorer, summary.model = load_restorer_for(settings, device)
        if settings.aligned:
            _run_aligned(todo, restorer, settings, ledger, progress)
        else:
            _run_photos(todo, restorer, settings, ledger, summary, progress)
    summary.seconds = time.perf_counter() - start
    summary_path = out_dir / SUMMARY_NAME
    if any(it.status == "restored" for it in items) or summary_path.exists():
        if ledger.may_write(summary_path, overwrite=True):
            from bfrzoo.io import atomic_write_text

            ledger.record(summary_path)
            atomic_write_text(summary_path, json.dumps(summary.to_json(), indent=1) + "\n")
    return summary


def _progress(total: int, enabled: bool, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="restore", unit=unit, disable=None if enabled else True, dynamic_ncols=True)


def _write_side(ledger: OutputLedger, path: Path, photo: Any) -> None:
    """Write a comparison or face crop; a file of that name that bfrzoo did not write is left alone."""
    from bfrzoo.photo_io import write_photo

    if path.exists() and not ledger.owns(path):
        return
    ledger.record(path)
    write_photo(photo, path)


def _run_photos(todo: list[Item], restorer: Any, settings: RestoreSettings, ledger: OutputLedger,
                summary: RunSummary, progress: bool) -> None:
    out_dir = summary.out_dir
    import cv2

    from bfrzoo.face.detect import load_detector
    from bfrzoo.face.photo import load_face_parser, restore_photo_array
    from bfrzoo.photo_io import Photo, read_photo, write_photo

    detector = load_detector(settings.detector, settings.detector_weights, restorer.device)  # type: ignore[arg-type]
    parser, summary.mask = load_face_parser(settings.parser, restorer.device)
    summary.detector = detector.name + (f" ({detector.note})" if detector.note else "")
    options = PhotoOptions(**{**asdict(settings.photo), "keep_crops": settings.save_faces})
    with _progress(len(todo), progress, "photo") as bar:
        for it in todo:
            t0 = time.perf_counter()
            try:
                photo = read_photo(it.path, options.max_megapixels)
                before = None
                if settings.compare:
                    height = min(768, round(photo.height * options.upscale))
                    width = max(1, round(photo.width * height / photo.height))
                    before = cv2.resize(photo.rgb8(), (width, height), interpolation=cv2.INTER_AREA)
                result = restore_photo_array(restorer, photo, options, detector, parser, inplace=True)
                del photo
                assert it.target is not None
                ledger.record(it.target)
                write_photo(result.photo, it.target)
                it.status, it.faces, it.dropped = "restored", len(result.faces), result.dropped
                if before is not None:
                    after = cv2.resize(result.photo.rgb8(), (before.shape[1], before.shape[0]), interpolation=cv2.INTER_AREA)
                    side = out_dir / "compare" / it.rel_dir / f"{it.target.stem}.jpg"
                    _write_side(ledger, side, Photo(np.hstack([before, after])))
                if settings.save_faces:
                    for k, face in enumerate(result.faces):
                        folder = out_dir / "faces" / it.rel_dir
                        _write_side(ledger, folder / f"{it.target.stem}_{k:02d}.png", Photo(face.restored))
                        _write_side(ledger, folder / f"{it.target.stem}_{k:02d}_input.png", Photo(face.crop))
                del result
            except (BfrzooError, OSError) as exc:
                it.fail(str(exc) if isinstance(exc, BfrzooError) else f"{type(exc).__name__}: {exc}")
            except (MemoryError, torch.OutOfMemoryError) as exc:
                it.fail(f"out of memory ({type(exc).__name__}); lower --batch-size or --max-megapixels, or use a smaller photo")
                if restorer.device.type == "cuda":
                    torch.cuda.empty_cache()
            it.seconds = time.perf_counter() - t0
            bar.set_postfix(faces=sum(i.faces for i in todo), failed=sum(i.status == "failed" for i in todo), refresh=False)
            bar.update(1)


def _run_aligned(todo: list[Item], restorer: Any, settings: RestoreSettings, ledger: OutputLedger, progress: bool) -> None:
    import torch.nn.functional as F

    from bfrzoo.photo_io import Photo, read_photo, write_photo

    batches: list[list[Item]] = []
    for it in todo:  # consecutive crops of one size share a forward pass
        if batches and batches[-1][0].size == it.size and len(batches[-1]) < settings.batch_size:
            batches[-1].append(it)
        else:
            batches.append([it])
    scale = settings.photo.upscale
    with _progress(len(todo), progress, "img") as bar:
        for batch in batches:
            t0 = time.perf_counter()
            photos: list[tuple[Item, Photo]] = []
            for it in batch:
                try:
                    photos.append((it, read_photo(it.path, settings.photo.max_megapixels)))
                except BfrzooError as exc:
                    it.fail(str(exc))
            try:
                if photos:
                    x = torch.stack([torch.from_numpy(p.rgb.astype(np.float32) / p.max_value).permute(2, 0, 1) for _, p in photos])
                    if scale != 1.0:
                        x = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False, antialias=scale < 1).clamp(0, 1)
                    restored = restorer.restore_tensor(x)
                    for (it, photo), y in zip(photos, restored):
                        top = photo.max_value
                        rgb = (y.permute(1, 2, 0).numpy() * top + 0.5).clip(0, top).astype(photo.rgb.dtype)
                        alpha = photo.alpha
                        if alpha is not None and scale != 1.0:
                            import cv2

                            alpha = cv2.resize(alpha, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_CUBIC)
                        assert it.target is not None
                        ledger.record(it.target)
                        write_photo(Photo(rgb, alpha, photo.gray), it.target)
                        it.status = "restored"
            except (BfrzooError, OSError) as exc:
                for it, _ in photos:
                    if it.status == "pending":
                        it.fail(str(exc) if isinstance(exc, BfrzooError) else f"{type(exc).__name__}: {exc}")
            except (MemoryError, torch.OutOfMemoryError) as exc:
                for it, _ in photos:
                    if it.status == "pending":
                        it.fail(f"out of memory ({type(exc).__name__}); lower --batch-size")
            for it in batch:
                it.seconds = (time.perf_counter() - t0) / len(batch)
            bar.update(len(batch))
