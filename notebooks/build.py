"""Build the demo notebooks (``notebooks/*.ipynb``) from their plain-Python sources in ``notebooks/src/``.

The sources are what reviewers read and edit; the ``.ipynb`` files are generated, stored WITHOUT outputs
(``outputs = []``, ``execution_count = null``) so that diffs stay readable. A source is "percent format":

    # %% [markdown]
    # # A title
    # Text, one ``# ``-prefixed line per markdown line.

    # %%
    print("a code cell")

Anything before the first ``# %%`` marker is a header for the source file only and is not emitted.

    python notebooks/build.py           # (re)write every notebook
    python notebooks/build.py --check   # exit 1 and name the notebooks that are out of date

Needs only the standard library (no jupyter / nbformat).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"

CellKind = Literal["code", "markdown"]
_MARKERS: dict[str, CellKind] = {"# %%": "code", "# %% [markdown]": "markdown"}

#: Notebook-level metadata: a plain Python 3 kernel.
METADATA: dict[str, Any] = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python", "pygments_lexer": "ipython3"},
}


@dataclass(frozen=True)
class Cell:
    kind: CellKind
    text: str  # without trailing newline


def parse_cells(source: str, name: str = "<source>") -> list[Cell]:
    """Split a percent-format Python source into cells; markdown lines lose their ``# `` prefix."""
    cells: list[Cell] = []
    kind: CellKind | None = None
    lines: list[str] = []

    def close() -> None:
        if kind is None:
            return
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            raise ValueError(f"{name}: empty {kind} cell")
        cells.append(Cell(kind, "\n".join(lines)))

    for number, line in enumerate(source.splitlines(), start=1):
        marker = line.rstrip()
        if marker in _MARKERS:
            close()
            kind, lines = _MARKERS[marker], []
        elif marker.startswith("# %%"):
            raise ValueError(f"{name}:{number}: unknown cell marker {marker!r}; use '# %%' or '# %% [markdown]'")
        elif kind == "markdown":
            if line.strip() and not line.startswith("#"):
                raise ValueError(f"{name}:{number}: markdown lines must start with '# ', got {line!r}")
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        elif kind == "code":
            lines.append(line)
    close()
    if not cells:
        raise ValueError(f"{name}: no '# %%' cells")
    return cells


def _source_lines(text: str) -> list[str]:
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]


def to_notebook(cells: list[Cell], stem: str) -> dict[str, Any]:
    """nbformat 4.5 JSON (a dict) with no outputs; cell ids are ``<stem>-<index>`` so rebuilds are stable."""
    out = []
    for i, cell in enumerate(cells):
        entry: dict[str, Any] = {"cell_type": cell.kind, "id": f"{stem[:50]}-{i:02d}", "metadata": {}}
        if cell.kind == "code":
            entry["execution_count"] = None
            entry["outputs"] = []
        entry["source"] = _source_lines(cell.text)
        out.append(entry)
    return {"cells": out, "metadata": METADATA, "nbformat": 4, "nbformat_minor": 5}


def render(source_path: Path) -> str:
    """The ``.ipynb`` text generated from one source file."""
    cells = parse_cells(source_path.read_text(encoding="utf-8"), name=source_path.name)
    return json.dumps(to_notebook(cells, source_path.stem), indent=1, ensure_ascii=False) + "\n"


def sources() -> list[Path]:
    return sorted(SOURCES.glob("*.py"))


def target(source_path: Path) -> Path:
    return HERE / f"{source_path.stem}.ipynb"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that differ from their sources")
    args = parser.parse_args(argv)
    stale = []
    for src in sources():
        text, path = render(src), target(src)
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent)}")
    if args.check and stale:
        print("out of date (run `python notebooks/build.py`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
