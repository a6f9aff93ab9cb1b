"""The one Markdown table renderer of bfrzoo: run reports, ``bfrzoo table``, ``bfrzoo bench`` and the benchmark
scripts all format their tables here, so every table in ``benchmarks/results/`` reads the same way.

Cells are strings or numbers; floats get a fixed number of decimals, ``None`` and missing values print ``-``,
and a ``|`` inside a cell is escaped so it cannot break the row.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bfrzoo.errors import BfrzooError

Cell = object

#: The arrow after a metric name in a header: higher (↑) or lower (↓) is better, or unknown.
ARROWS: Mapping[bool | None, str] = {True: " ↑", False: " ↓", None: ""}


def format_cell(value: Cell, precision: int = 4) -> str:
    """One cell: ``-`` for ``None`` and NaN, ``precision`` decimals for floats, ``str`` otherwise."""
    if value is None:
        return "-"
    if hasattr(value, "item") and callable(value.item):  # a 0-d tensor / numpy scalar
        value = value.item()
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{precision}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_row(cells: Sequence[Cell], precision: int = 4) -> str:
    """``| a | b | c |``."""
    return "| " + " | ".join(format_cell(c, precision) for c in cells) + " |"


def markdown_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    precision: int = 4,
    align: Sequence[str] | None = None,
) -> str:
    """A GitHub-flavoured Markdown table (no trailing newline).

    Args:
        header: column titles.
        rows: one sequence of cells per row, each as long as ``header``.
        precision: decimals of float cells.
        align: per column ``"l"``, ``"r"`` or ``"c"`` (default: left for the first column, right for the rest).
    Raises:
        ValueError: a row whose length differs from the header's.
    """
    width = len(header)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"table row {i} has {len(row)} cells, the header {width}")
    align = align or ["l"] + ["r"] * (width - 1)
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    lines = [markdown_row(header), "| " + " | ".join(rule[a] for a in align) + " |"]
    lines += [markdown_row(row, precision) for row in rows]
    return "\n".join(lines)


def metric_header(names: Sequence[str], higher_is_better: Mapping[str, bool | None]) -> list[str]:
    """Metric column titles with their arrows: ``["psnr ↑", "lpips ↓"]``."""
    return [f"{n}{ARROWS[higher_is_better.get(n)]}" for n in names]


# ------------------------------------------------------------------------------------------ bfrzoo table
def _find_reports(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.rglob("test_metrics.json"))
        if found:
            return found
    raise BfrzooError(f"no test_metrics.json at {path}; run `bfrzoo test --recipe NAME --ckpt_path CKPT` first")


def _test_set(row: Mapping[str, Any]) -> str:
    """What makes two rows comparable: the same test images, degraded the same way, at the same size."""
    return (f"data={row.get('data')}, preset={row.get('preset')}, seed={row.get('seed')}, size={row.get('size')}, "
            f"images={row.get('num_images')}")


def _read_report(file: Path) -> dict[str, Any]:
    try:
        row = json.loads(file.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as exc:
        raise BfrzooError(f"{file} is not a readable test_metrics.json ({exc}); re-run the test") from exc
    if not isinstance(row, dict):
        raise BfrzooError(f"{file} is not a test_metrics.json of bfrzoo (a JSON object was expected)")
    missing = [k for k in ("restorer", "metrics") if k not in row]
    if missing or not isinstance(row.get("metrics"), dict):
        raise BfrzooError(
            f"{file} lacks {', '.join(missing) or 'a metrics mapping'}: it is not a test_metrics.json written by "
            "`bfrzoo fit` / `bfrzoo test`; re-run the test"
        )
    return row


def collect_run_table(paths: Sequence[Path], title: str | None = None) -> str:
    """``bfrzoo table``: one Markdown table of every ``test_metrics.json`` under ``paths`` (one row per run,
    metric columns in first-seen order, provenance columns kept), with a NOT COMPARABLE note when the rows were
    scored on different test sets."""
    rows = [_read_report(file) for path in paths for file in _find_reports(Path(path))]
    metrics: list[str] = []
    for row in rows:
        metrics += [m for m in row["metrics"] if m not in metrics]
    higher = {m: row.get("higher_is_better", {}).get(m) for row in rows for m in row["metrics"]}
    cells = []
    notes = []
    for row in rows:
        params = row.get("num_parameters")
        cells.append([
            row["restorer"], *(row["metrics"].get(m) for m in metrics), row.get("num_images"), row.get("preset"),
            f"{params / 1e6:.2f}M" if isinstance(params, (int, float)) else None, row.get("device"),
            row.get("commit"), row.get("date"),
        ])
        notes += [f"{row['restorer']}: {n}" for n in row.get("notes", [])]
    test_sets = {_test_set(row) for row in rows}
    if len(test_sets) > 1:
        notes.insert(0, "NOT COMPARABLE: the rows were scored on different test sets ("
                     + "; ".join(sorted(test_sets)) + "). Re-test on one set (same data, preset, seed, size).")
    header = ["restorer", *metric_header(metrics, higher), "images", "preset", "params", "device", "commit", "date"]
    text = (f"## {title}\n\n" if title else "") + markdown_table(header, cells)
    return text + "\n" + "".join(f"\nNote: {n}" for n in notes) + "\n"
