"""``bfrzoo bench train``: the small-scale, honest comparison we can run ourselves. Every model (a recipe) trains
for the SAME wall-clock budget on the same data, preset, face size and seed, then every row is scored by
:mod:`bfrzoo.bench.quality` on one fixed test set.

What each model needs comes from its task (:meth:`bfrzoo.tasks.base.BfrzooTask.bench_protocol`, read through the
recipe's ``model.class_path``), never from a list of names here: the overrides that scale the recipe to the
benchmark size, the pretrained stages it loads (GPEN's StyleGAN2 prior, PSFR-GAN's parsing network: each trained
ONCE within the protocol, on the same data and budget, shared by every row that needs the same one, its cost
reported on its own line), the data annotations it needs (``landmarks``: such a model trains on
``--landmark-data``), and its paper's ablations (``--variants``), with the paper's numbers.

Every run is ``bfrzoo fit`` (the recipe + the protocol's overrides + the bench's equal settings: ``--trainer.max_time``,
no validation, no test after fit, the final weights exported), in-process, its exact command recorded so each
row can be reproduced alone. A :class:`BudgetCounter` callback writes what the budget bought
(``bench_budget.json``: optimiser steps = training batches, images seen, seconds).
"""
from __future__ import annotations

import csv
import io
import json
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from bfrzoo.errors import BfrzooError
from bfrzoo.tasks.protocol import BenchProtocol, Variant, merge_overrides

#: The reference row every model is compared with.
BASELINE = "unet"


class BudgetCounter(pl.Callback):
    """Counts the training batches and images a run saw and writes ``bench_budget.json`` into the run folder."""

    def __init__(self) -> None:
        self.batches = 0
        self.images = 0
        self._t0 = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches += 1
        self.images += int(batch["hq"].shape[0])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            out = Path(trainer.default_root_dir) / "bench_budget.json"
            out.write_text(json.dumps({"batches": self.batches, "images": self.images, "epochs": trainer.current_epoch,
                                       "train_seconds": round(time.perf_counter() - self._t0, 1)}) + "\n")


def recipe_task(recipe: str) -> type:
    """The task class of ``recipe`` (its ``model.class_path``)."""
    import importlib

    import yaml

    from bfrzoo.cli import recipe_path

    cfg = yaml.safe_load(recipe_path(recipe).read_text())
    class_path = (cfg.get("model") or {}).get("class_path")
    if not class_path:
        raise BfrzooError(f"recipe {recipe!r} has no model.class_path")
    module, _, name = class_path.rpartition(".")
    task = getattr(importlib.import_module(module), name)
    if module == "bfrzoo.tasks":  # the lazy namespace
        task = getattr(importlib.import_module("bfrzoo.tasks"), name)
    return task


def protocol_of(recipe: str, size: int) -> BenchProtocol:
    return recipe_task(recipe).bench_protocol(size)


def budget_string(minutes: float) -> str:
    """``--trainer.max_time`` (``DD:HH:MM:SS``) of ``minutes`` (at least one second)."""
    total = max(1, round(minutes * 60))
    d, rem = divmod(total, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{d:02d}:{h:02d}:{m:02d}:{s:02d}"


def _cli_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list, tuple, bool)) or value is None else str(value)


@dataclass
class BenchSettings:
    """What every row shares."""

    data: str
    size: int = 128
    preset: str = "common"
    seed: int = 0
    minutes: float = 10.0
    prereq_minutes: float | None = None
    batch_size: int = 4
    num_workers: int = 0
    landmark_data: str | None = None
    accelerator: str = "auto"
    precision: str = "32-true"


@dataclass
class RunRow:
    """One training run of the protocol (a prerequisite stage or a compared row)."""

    label: str
    recipe: str
    stage: str  # "prerequisite" | "model" | "variant"
    args: list[str]
    folder: Path
    variant: Variant | None = None
    of_model: str | None = None  # the model a variant ablates
    export: str = "restorer.pt"
    budget: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    wall_seconds: float = 0.0
    skipped: bool = False  # a variant identical to its model's row here: not run (``error`` says why)

    @property
    def command(self) -> str:
        return "bfrzoo fit " + " ".join(shlex.quote(a) for a in self.args)

    @property
    def export_path(self) -> Path | None:
        found = sorted(self.folder.rglob(self.export))
        return found[-1] if found else None


def fit_args(recipe: str, overrides: Mapping[str, Any], settings: BenchSettings, folder: Path, minutes: float,
             needs: frozenset[str]) -> list[str]:
    """The ``bfrzoo fit`` arguments of one row: the recipe, the bench's equal settings, then ``overrides``."""
    data = settings.data
    extra: dict[str, Any] = {}
    if "landmarks" in needs:
        if not settings.landmark_data:
            raise BfrzooError(f"recipe {recipe!r} needs landmarks: pass --landmark-data (e.g. ../shared/data/aaf128)")
        data = settings.landmark_data
        extra["data.with_landmarks"] = True
    if "masks" in needs:
        extra["data.with_masks"] = True
    base: dict[str, Any] = {
        "seed_everything": settings.seed,
        "data.root": data, "data.size": settings.size, "data.preset": settings.preset, "data.seed": settings.seed,
        "data.batch_size": settings.batch_size, "data.num_workers": settings.num_workers,
        "trainer.max_time": budget_string(minutes), "trainer.max_epochs": -1,
        "trainer.limit_val_batches": 0, "trainer.num_sanity_val_steps": 0,
        "trainer.accelerator": settings.accelerator, "trainer.devices": 1, "trainer.precision": settings.precision,
        "trainer.default_root_dir": str(folder), "trainer.enable_progress_bar": False,
        "trainer.enable_model_summary": False, "test_after_fit": False,
        "model.init_args.metrics_pretrained": False,
        **extra,
    }
    args = ["--recipe", recipe]
    for key, value in {**base, **overrides}.items():
        args += [f"--{key}", _cli_value(value)]
    return [*args, "--trainer.callbacks+=bfrzoo.bench.train.BudgetCounter"]


def plan(models: Sequence[str], settings: BenchSettings, work: Path, variants: bool) -> list[RunRow]:
    """The runs, prerequisites first (each distinct one once), then the models and their variants."""
    from bfrzoo.cli import recipe_path

    prereq_minutes = settings.prereq_minutes if settings.prereq_minutes is not None else settings.minutes
    rows: list[RunRow] = []
    prereq_rows: dict[str, RunRow] = {}  # key: recipe + overrides

    def prerequisite(p: Any, extra: Mapping[str, Any]) -> RunRow:
        overrides = merge_overrides(p.overrides, extra)
        key = p.recipe + json.dumps(overrides, sort_keys=True)
        if key not in prereq_rows:
            label = f"{p.recipe}#{len([r for r in prereq_rows.values() if r.recipe == p.recipe])}"
            folder = work / "runs" / label.replace("#", "_")
            needs = protocol_of(p.recipe, settings.size).needs
            row = RunRow(label, p.recipe, "prerequisite",
                         fit_args(p.recipe, overrides, settings, folder, prereq_minutes, needs), folder, export=p.export)
            prereq_rows[key] = row
            rows.append(row)
        return prereq_rows[key]

    compared: list[RunRow] = []
    for recipe in models:
        recipe_path(recipe)  # unknown recipe -> one clear error before any run
        proto = protocol_of(recipe, settings.size)
        todo: list[tuple[str, Mapping[str, Any], Variant | None]] = [(recipe, proto.overrides, None)]
        if variants:
            todo += [(v.name, merge_overrides(proto.overrides, v.overrides), v) for v in proto.variants]
        for label, overrides, variant in todo:
            overrides = dict(overrides)
            deps = []
            for p in proto.prerequisites:
                extra = variant.prerequisite_overrides.get(p.recipe, {}) if variant else {}
                dep = prerequisite(p, extra)
                deps.append(dep)
                overrides[f"model.init_args.{p.argument}"] = "{" + dep.label + "}"  # filled in after the stage ran
            folder = work / "runs" / label
            row = RunRow(label, recipe, "variant" if variant else "model",
                         fit_args(recipe, overrides, settings, folder, settings.minutes, proto.needs), folder,
                         variant=variant, of_model=recipe if variant else None)
            row.budget["depends_on"] = [d.label for d in deps]
            if variant is not None and merge_overrides(proto.overrides, variant.overrides) == dict(proto.overrides) \
                    and not any(variant.prerequisite_overrides.values()):
                # e.g. w/o identity loss where the protocol already drops the loss (no ArcFace weights here): the
                # run would repeat the model's row, so it is not run and the table says so
                switch = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in variant.overrides.items())
                row.skipped = True
                row.error = f"not run: identical to the {recipe} row here (its switch {switch} is already the protocol's setting)"
            compared.append(row)
    return rows + compared


def _resolve(args: list[str], done: Mapping[str, RunRow]) -> list[str]:
    out = []
    for a in args:
        if a.startswith("{") and a.endswith("}") and a[1:-1] in done:
            dep = done[a[1:-1]]
            path = dep.export_path
            if dep.error or path is None:
                raise BfrzooError(f"its prerequisite {dep.label} did not produce {dep.export}: {dep.error or 'no file'}")
            out.append(str(path))
        else:
            out.append(a)
    return out


def execute(rows: Sequence[RunRow], log: Callable[[str], None] = lambda s: None) -> None:
    """Run every row in order, each ``bfrzoo fit`` in a fresh process of this interpreter (exactly the recorded
    command; no state leaks from one run into the next), its output in ``<row folder>/fit.log``. A row that fails
    records the one-line error and the rest go on."""
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    done: dict[str, RunRow] = {}
    for row in rows:
        t0 = time.perf_counter()
        try:
            row.args = _resolve(row.args, done)
        except BfrzooError as exc:
            row.error = str(exc)
        if row.error is None:
            log(f"bench train: {row.label}: {row.command}")
            row.folder.mkdir(parents=True, exist_ok=True)
            with open(row.folder / "fit.log", "w") as out:
                proc = subprocess.run([sys.executable, "-m", "bfrzoo.cli", "fit", *row.args], stdout=out,
                                      stderr=subprocess.STDOUT, env=env)
            if proc.returncode != 0:
                lines = (row.folder / "fit.log").read_text(errors="replace").strip().splitlines()
                ours = [ln.removeprefix("bfrzoo: error: ") for ln in lines if ln.startswith("bfrzoo: error: ")]
                row.error = (ours or lines[-1:] or [f"exit {proc.returncode}"])[-1][:300]
        row.wall_seconds = time.perf_counter() - t0
        budget = next(iter(sorted(row.folder.rglob("bench_budget.json"))), None)
        if budget is not None:
            row.budget.update(json.loads(budget.read_text()))
        if row.error is None and row.export_path is None:
            row.error = f"the run left no {row.export}"
        done[row.label] = row
        log(f"bench train: {row.label}: " + (row.error or f"{row.budget.get('batches')} steps, {row.budget.get('images')} images"))


# ------------------------------------------------------------------------------------------------ comparison
def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) else None


def beats(value: Any, reference: Any, higher_is_better: bool) -> str:
    a, b = _num(value), _num(reference)
    if a is None or b is None:
        return "n/a"
    if a == b:
        return "tie"
    return "yes" if (a > b) == higher_is_better else "no"


def ablation_direction(full: Mapping[str, Any], variant_scores: Mapping[str, Any], paper_full: Mapping[str, float],
                       paper_variant: Mapping[str, float]) -> dict[str, str]:
    """Per metric the paper reports for both rows: whether our variant moved the metric the way the paper's did
    relative to the full model (``agrees`` / ``disagrees`` / ``n/a``)."""
    out = {}
    for metric, pv in paper_variant.items():
        if metric not in paper_full:
            continue
        paper_delta = pv - paper_full[metric]
        ours_v, ours_f = _num(variant_scores.get(metric)), _num(full.get(metric))
        if ours_v is None or ours_f is None:
            out[metric] = "n/a"
            continue
        ours_delta = ours_v - ours_f
        out[metric] = "agrees" if paper_delta * ours_delta > 0 else "disagrees"
    return out


def render_markdown(rows: Sequence[RunRow], quality: Any, settings: BenchSettings, command: str | None,
                    scored: Mapping[str, str]) -> str:
    """The bench-train page: what it is, the budget each row bought, the quality table, the comparisons."""
    from bfrzoo.bench.quality import render_markdown as quality_md
    from bfrzoo.metrics import metric_higher_is_better
    from bfrzoo.tables import markdown_table

    p = quality.provenance
    lines = [
        f"# bfrzoo bench train: {settings.size} px, preset {settings.preset}, {settings.minutes:g} min per model",
        "",
        f"**A small-scale {'CPU ' if p['device'].startswith('CPU') else ''}proxy, not a reproduction of the papers**: "
        f"every row trained for the same {settings.minutes:g}-minute wall-clock budget on {p['device']} (the papers "
        f"train for days on GPUs, at 512 px, with full-size networks), on `{settings.data}` at {settings.size} px, "
        f"degradation preset `{settings.preset}`, seed {settings.seed}, batch {settings.batch_size}, and was scored on "
        "the same fixed test set (below). The networks are scaled down by each task's `bench_protocol`; the "
        "pretrained stages (GAN prior, parsing network) were trained within the same protocol, their cost listed "
        "separately. A number here says what a few minutes of training buys, not how the methods compare at scale.",
        "",
    ]
    if command:
        lines += ["```bash", command, "```", ""]
    budget_rows = []
    for r in rows:
        b = r.budget
        secs = b.get("train_seconds")
        budget_rows.append([r.label, r.stage, r.recipe, b.get("batches"), b.get("images"), b.get("epochs"),
                            f"{secs:.0f}" if isinstance(secs, (int, float)) else None, f"{r.wall_seconds:.0f}",
                            ", ".join(b.get("depends_on", [])) or "-", r.error or "ok"])
    lines += ["## What each budget bought", "", markdown_table(
        ["run", "stage", "recipe", "steps", "images seen", "epochs", "train s", "wall s", "uses", "status"], budget_rows), ""]
    lines.append(quality_md(quality, None, title="Quality on the fixed test set").replace("# Quality", "## Quality", 1))
    metrics = quality.metrics
    by_label = {r["label"]: r["scores"] for r in quality.rows}
    base = by_label.get(scored.get(BASELINE, ""))
    if base is not None:
        cmp_rows = []
        for r in rows:
            if r.stage == "prerequisite" or r.label == BASELINE or r.label not in scored:
                continue
            s = by_label[scored[r.label]]
            cmp_rows.append([r.label, *(beats(s[m], base[m], metric_higher_is_better(m)) for m in metrics)])
        if cmp_rows:
            lines += ["", f"## Did it beat `{BASELINE}`?", "", markdown_table(["model", *metrics], cmp_rows)]
    abl_rows = []
    for r in rows:
        if r.stage != "variant" or r.variant is None:
            continue
        proto = protocol_of(r.recipe, settings.size)
        full = by_label.get(scored.get(r.of_model or "", ""), {})
        mine = by_label.get(scored.get(r.label, ""), {})
        dirs = ablation_direction(full, mine, proto.paper_full, r.variant.paper_metrics)
        paper = ", ".join(f"{m} {proto.paper_full[m]:g} -> {v:g}" for m, v in r.variant.paper_metrics.items() if m in proto.paper_full)
        ours = ", ".join(f"{m} {_fmt(full.get(m))} -> {_fmt(mine.get(m))}" for m in r.variant.paper_metrics if m in proto.paper_full)
        abl_rows.append([r.label, r.variant.paper, paper, ours,
                         ", ".join(f"{m}: {d}" for m, d in dirs.items()) or "n/a"])
    if abl_rows:
        lines += ["", "## Ablations: did they move the metrics the way the paper reports?", "",
                  "Each row: the paper's metric for the full model -> for the variant, ours likewise, and whether our "
                  "change has the paper's sign.", "",
                  markdown_table(["variant", "paper row", "paper (full -> variant)", "ours (full -> variant)", "direction"], abl_rows)]
    lines += ["", "## Reproduce one row", "", *(f"- `{r.label}`: `{r.command}`" for r in rows)]
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def render_csv(rows: Sequence[RunRow], quality: Any, scored: Mapping[str, str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run", "stage", "recipe", "steps", "images_seen", "train_seconds", "status", "metric", "value",
                "test_set_sha256", "device", "commit", "date", "command"])
    by_label = {r["label"]: r["scores"] for r in quality.rows}
    p, t = quality.provenance, quality.test_set
    for r in rows:
        scores = by_label.get(scored.get(r.label, ""), {})
        for m in quality.metrics if scores else [""]:
            w.writerow([r.label, r.stage, r.recipe, r.budget.get("batches"), r.budget.get("images"),
                        r.budget.get("train_seconds"), r.error or "ok", m, scores.get(m, ""), t["sha256"],
                        p["device"], p["commit"], p["date"], r.command])
    return buf.getvalue()


def run_train_bench(
    models: Sequence[str], settings: BenchSettings, work: str | Path, variants: bool = False,
    out: str | Path | None = None, command: str | None = None, real_lq: str | None = None,
    real_limit: int | None = None, allow_dirty: bool = False, log: Callable[[str], None] = lambda s: None,
) -> tuple[list[RunRow], Any, str]:
    """Plan, train, score and render (and write ``out.md`` / ``out.csv`` when ``out`` is given)."""
    from bfrzoo.bench.quality import Candidate, prepare_test_set, run_quality
    from bfrzoo.bench.speed import provenance
    from bfrzoo.io import atomic_write_text
    from bfrzoo.registry import load_restorer

    if settings.minutes <= 0 or (settings.prereq_minutes is not None and settings.prereq_minutes <= 0):
        raise BfrzooError(f"--minutes must be > 0, got {settings.minutes}")
    if not Path(settings.data).is_dir():
        raise BfrzooError(f"--data {settings.data!r} does not exist or is not a folder")
    if settings.size < 16 or settings.size % 16:
        raise BfrzooError(f"--size must be a positive multiple of 16, got {settings.size}")
    provenance(__import__("torch").device("cpu"), allow_dirty, writing=out is not None)  # refuse a dirty tree early
    work = Path(work)
    rows = plan(models, settings, work, variants)
    test_set = prepare_test_set(settings.data, work, settings.preset, settings.seed, settings.size)
    execute(rows, log)
    candidates, scored = [], {}
    for r in rows:
        if r.stage == "prerequisite":
            continue
        if r.skipped:
            candidates.append(Candidate(r.label, "-", None, f"n/a (not run: same as {r.of_model})"))
        elif r.error or r.export_path is None:
            candidates.append(Candidate(r.label, "-", None, "n/a (run failed)"))
        else:
            candidates.append(Candidate(r.label, str(r.export_path), load_restorer(r.export_path)))
        scored[r.label] = r.label
    quality = run_quality(candidates, test_set, metrics=None, real_lq=real_lq, real_limit=real_limit,
                          allow_dirty=True, log=log)
    md = render_markdown(rows, quality, settings, command, scored)
    if out is not None:
        stem = Path(out)
        stem = stem.with_suffix("") if stem.suffix in (".md", ".csv") else stem
        atomic_write_text(stem.with_suffix(".md"), md)
        atomic_write_text(stem.with_suffix(".csv"), render_csv(rows, quality, scored))
    return rows, quality, md
