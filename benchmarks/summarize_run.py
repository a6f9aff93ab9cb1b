"""Turn a finished training run into a committed result table (a benchmark record, not a test).

    python benchmarks/summarize_run.py RUN_DIR --name parsenet_cpu --command "bfrzoo fit ..." [--note "..."]

RUN_DIR is a run folder (``runs/<recipe>/logs/version_N``) holding ``test_metrics.json`` (the test of the best
checkpoint, with its provenance: device, torch version, commit, date) and ``metrics.csv`` (the validation curve).
Writes ``benchmarks/results/<name>.md`` and ``.json``: the exact command, the test row, the per-epoch validation
metrics, and the run's wall-clock time (from the modification times of the run folder's files).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from _common import ROOT


def validation_curve(metrics_csv: Path) -> list[dict[str, float]]:
    """One dict per validation epoch: ``epoch``, ``step`` and every ``val/*`` column that has a value."""
    rows = []
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            vals = {k.removeprefix("val/"): float(v) for k, v in row.items() if k.startswith("val/") and v != ""}
            if vals:
                rows.append({"epoch": int(row["epoch"]), "step": int(row["step"]), **vals})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--name", required=True, help="result file name under benchmarks/results/")
    ap.add_argument("--command", required=True, help="the exact command that produced the run")
    ap.add_argument("--note", action="append", default=[], help="a sentence for the record (repeatable)")
    args = ap.parse_args()

    report = json.loads((args.run_dir / "test_metrics.json").read_text())
    curve = validation_curve(args.run_dir / "metrics.csv")
    files = [p for p in args.run_dir.rglob("*") if p.is_file()]
    wall_min = (max(p.stat().st_mtime for p in files) - min(p.stat().st_mtime for p in files)) / 60
    record = {"command": args.command, "test": report, "validation": curve, "wall_minutes": round(wall_min, 1),
              "notes": args.note}
    out = ROOT / "benchmarks" / "results" / args.name
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")

    metrics = list(report["metrics"])
    val_keys = [k for k in (curve[0] if curve else {}) if k not in ("epoch", "step")]
    lines = [
        f"# {args.name}",
        "",
        f"{report['device']}, torch {report['torch_version']}, bfrzoo {report['bfrzoo_version']} @ `{report['commit']}`, "
        f"{report['date']}, precision {report.get('precision', '32-true')}; about {wall_min:.0f} minutes of wall clock.",
        "",
        "```bash",
        args.command,
        "```",
        "",
        f"Test ({report['num_images']} images; data {report['data']}, size {report['size']}, preset {report['preset']}, "
        f"seed {report['seed']}; best checkpoint by the recipe's validation metric):",
        "",
        "| " + " | ".join(["restorer", *metrics, "params"]) + " |",
        "|" + "---|" * (len(metrics) + 2),
        f"| {report['restorer']} | " + " | ".join(f"{report['metrics'][m]:.4f}" for m in metrics)
        + f" | {report['num_parameters'] / 1e6:.2f}M |",
        "",
        "Validation per epoch:",
        "",
        "| epoch | step | " + " | ".join(val_keys) + " |",
        "|" + "---|" * (len(val_keys) + 2),
        *(f"| {r['epoch']} | {r['step']} | " + " | ".join(f"{r[k]:.4f}" for k in val_keys) + " |" for r in curve),
        "",
        f"Architecture arguments: `{json.dumps(report['restorer_args'], sort_keys=True)}`.",
        *(f"\n{n}" for n in [*report.get("notes", []), *args.note]),
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
