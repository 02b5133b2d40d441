"""The repository stands on its own: nothing in it reads or cites files that only exist beside a checkout."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {
    ".git", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", "__pycache__", "build", "dist",
}
# A parent folder of notes, references to its files, and tracker numbers: none of them reach a user's clone.
OUTSIDE_REFERENCE = re.compile(
    r"\.\./" + "shared"
    + r"""|["']\.\.["']\s*/\s*["']""" + "shared"
    + r"|\b(?:DESIGN|COMFYUI|CLOUD|LIBRARIES)\.md\b|\bDESIGN §|\bissues? #?\d+\b"
)


def _text_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*"):
        if SKIPPED_DIRS.intersection(path.relative_to(REPO).parts) or not path.is_file():
            continue
        if path.suffix in {".png", ".bin"}:
            continue
        files.append(path)
    return files


def test_no_file_reads_or_cites_anything_outside_the_repository() -> None:
    offenders = []
    for path in _text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path.relative_to(REPO)}: {m[0]}" for m in OUTSIDE_REFERENCE.finditer(text)]
    assert offenders == []


def test_the_check_finds_a_citation() -> None:
    assert OUTSIDE_REFERENCE.search("see " + "CLOUD" + ".md §4.1")
    assert OUTSIDE_REFERENCE.search("FIXTURES = REPO / '..' / " + "'shared' / 'fixtures'")
    assert OUTSIDE_REFERENCE.search("cat ../" + "shared/spec/README.md")
    assert OUTSIDE_REFERENCE.search("(issue " + "3)")
