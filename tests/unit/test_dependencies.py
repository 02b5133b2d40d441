"""The runtime dependencies in pyproject.toml are exactly the third-party packages comfywatch imports."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Distribution name -> the module it is imported as, where the two differ.
IMPORT_NAMES = {"pyyaml": "yaml", "pydantic-core": "pydantic_core"}


def _imported_packages() -> set[str]:
    found: set[str] = set()
    for path in (REPO / "comfywatch").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "comfywatch"}


def _declared_packages() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower() for spec in project["dependencies"]}
    return {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in names}


def test_every_runtime_dependency_is_imported_and_every_import_declared() -> None:
    imported, declared = _imported_packages(), _declared_packages()
    assert declared - imported == set(), "declared but never imported"
    assert imported - declared == set(), "imported but not declared"
