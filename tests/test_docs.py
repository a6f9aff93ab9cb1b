"""Every code block of README.md and docs/**/*.md is checked: ```python blocks are executed (offline, in a fresh
interpreter, in a temporary working folder), ```bash blocks must only name `bfrzoo` subcommands and recipes that
exist. A python block that cannot run offline (released weights, a GPU) is marked on the line before it with
``<!-- no-test: reason -->``; the skips are reported with their reasons."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
_FENCE = re.compile(r"^```(\w*)\s*$")
_NO_TEST = re.compile(r"<!--\s*no-test:\s*(.+?)\s*-->")


@dataclass(frozen=True)
class Block:
    file: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip_reason: str | None

    @property
    def id(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the ``no-test`` reason of the line before each (if any)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start, lang = i, match.group(1)
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{path}:{start + 1}: unclosed code block"
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = _NO_TEST.search(before)
        blocks.append(Block(path, start + 1, lang, "\n".join(lines[start + 1 : end]) + "\n", marker.group(1) if marker else None))
        i = end + 1
    return blocks


ALL_BLOCKS = [b for f in DOC_FILES for b in code_blocks(f)]
PYTHON_BLOCKS = [b for b in ALL_BLOCKS if b.lang == "python"]
BASH_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("bash", "sh", "shell")]


def test_the_docs_have_code_blocks_and_every_skip_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    """The collection itself: README and the model pages have python blocks, no block has an unknown language,
    and the skipped ones are listed (pytest -s shows the list) with a non-empty reason."""
    files = {b.file.name for b in PYTHON_BLOCKS}
    assert {"README.md", "gpen.md", "psfrgan.md"} <= files
    assert {b.lang for b in ALL_BLOCKS} <= {"python", "bash", "sh", "shell", ""}
    skipped = [b for b in PYTHON_BLOCKS if b.skip_reason]
    with capsys.disabled():
        print(f"\n{len(PYTHON_BLOCKS)} python blocks, {len(PYTHON_BLOCKS) - len(skipped)} executed, {len(skipped)} skipped:")
        for b in skipped:
            print(f"  {b.id}: {b.skip_reason}")
    assert all(len(b.skip_reason or "x") > 10 for b in skipped)
    assert not [b.id for b in ALL_BLOCKS if b.lang not in ("python",) and b.skip_reason], "no-test only marks python blocks"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    """The block runs to the end in a fresh interpreter, offline, with an empty weight cache and a temporary
    working folder (so it cannot depend on files of the checkout or of an earlier block)."""
    if block.skip_reason:
        pytest.skip(f"no-test: {block.skip_reason}")
    script = tmp_path / "block.py"
    # the tests' socket guard, so that a block reaching the network fails instead of hanging or passing by luck
    guard = (
        "import socket\n_c = socket.socket.connect\n"
        "def _g(self, a):\n"
        "    h = a[0] if isinstance(a, tuple) else a\n"
        "    if isinstance(h, str) and not (h.startswith('127.') or h in ('localhost', '::1')):\n"
        "        raise RuntimeError(f'doc block reached the network: {a!r}')\n"
        "    return _c(self, a)\n"
        "socket.socket.connect = _g\n"
        "import torch\ntorch.set_num_threads(2)\n"
    )
    script.write_text(guard + block.code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "BFRZOO_HOME": str(tmp_path / "cache"), "TORCH_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{block.id} failed:\n{block.code}\n--- stderr ---\n{proc.stderr[-3000:]}"


def _bfrzoo_commands() -> tuple[set[str], str]:
    """The subcommands of the installed `bfrzoo` parser and its `--help` text."""
    from bfrzoo.cli import _zoo_parser

    parser = _zoo_parser()
    choices = next(a.choices for a in parser._actions if getattr(a, "choices", None) and isinstance(a.choices, dict))
    return set(choices), parser.format_help()


def _bash_lines(block: Block) -> list[str]:
    """The logical command lines of a bash block (continuations joined, comments dropped)."""
    text = re.sub(r"\\\n\s*", " ", block.code)
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def test_bash_blocks_name_existing_subcommands_and_recipes() -> None:
    """Every `bfrzoo X` in a bash block is a subcommand of `bfrzoo --help`, and every `--recipe NAME` (other than
    an upper-case placeholder) is a shipped recipe."""
    from bfrzoo.cli import list_recipes

    commands, help_text = _bfrzoo_commands()
    assert {"fit", "validate", "test", "predict", "list", "degrade", "restore", "table"} <= commands
    seen: set[str] = set()
    problems: list[str] = []
    for block in BASH_BLOCKS:
        for line in _bash_lines(block):
            for match in re.finditer(r"(?:^|[\s;&|(])bfrzoo\s+([\w-]+)", line):
                sub = match.group(1)
                seen.add(sub)
                if sub not in commands or sub not in help_text:
                    problems.append(f"{block.id}: `bfrzoo {sub}` is not a subcommand ({', '.join(sorted(commands))})")
            for recipe in re.findall(r"--recipe[ =]([\w.-]+)", line):
                if not recipe.isupper() and recipe not in list_recipes():
                    problems.append(f"{block.id}: recipe {recipe!r} does not exist ({', '.join(list_recipes())})")
    assert not problems, "\n".join(problems)
    assert {"fit", "test", "predict", "degrade", "table", "list"} <= seen  # the check saw the README's commands
