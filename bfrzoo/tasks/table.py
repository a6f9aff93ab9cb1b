"""Merge runs' ``test_metrics.json`` into one markdown benchmark table (one row per run, provenance kept)."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from bfrzoo.errors import BfrzooError


def _find(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(path.rglob("test_metrics.json"))
        if found:
            return found
    raise BfrzooError(f"no test_metrics.json at {path}; run `bfrzoo test --recipe NAME --ckpt_path CKPT` first")


def _test_set(row: dict) -> str:
    """What makes two rows comparable: the same test images, degraded the same way, at the same size."""
    return (f"data={row.get('data')}, preset={row.get('preset')}, seed={row.get('seed')}, size={row.get('size')}, "
            f"images={row.get('num_images')}")


def collect_table(paths: Sequence[Path], title: str | None = None) -> str:
    """A markdown table of every ``test_metrics.json`` under ``paths`` (metric columns in first-seen order)."""
    rows = []
    for path in paths:
        for file in _find(path):
            try:
                rows.append(json.loads(file.read_text()))
            except (json.JSONDecodeError, OSError) as exc:
                raise BfrzooError(f"{file} is not a readable test_metrics.json ({exc}); re-run the test") from exc
    metrics: list[str] = []
    for row in rows:
        metrics += [m for m in row["metrics"] if m not in metrics]
    higher = {m: row["higher_is_better"].get(m) for row in rows for m in row["metrics"]}
    arrow = {True: " ↑", False: " ↓", None: ""}
    lines = [f"## {title}\n" if title else ""]
    lines.append("| restorer | " + " | ".join(m + arrow[higher[m]] for m in metrics) + " | images | preset | params | device | commit | date |")
    lines.append("|" + "---|" * (len(metrics) + 7))
    notes = []
    for row in rows:
        vals = [f"{row['metrics'][m]:.4f}" if m in row["metrics"] else "-" for m in metrics]
        lines.append(
            f"| {row['restorer']} | " + " | ".join(vals)
            + f" | {row.get('num_images')} | {row.get('preset')} | {row['num_parameters'] / 1e6:.2f}M"
            + f" | {row['device']} | {row['commit']} | {row['date']} |"
        )
        notes += [f"{row['restorer']}: {n}" for n in row.get("notes", [])]
    test_sets = {_test_set(row) for row in rows}
    if len(test_sets) > 1:
        notes.insert(0, "NOT COMPARABLE: the rows were scored on different test sets ("
                     + "; ".join(sorted(test_sets)) + "). Re-test on one set (same data, preset, seed, size).")
    lines.append("")
    lines += [f"Note: {n}" for n in notes]
    return "\n".join(line for line in lines if line is not None).lstrip("\n") + "\n"
