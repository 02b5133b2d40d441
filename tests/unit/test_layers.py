"""The package's import graph is its architecture: no circles, no import up the layers, no hidden imports.

Every ``import`` of comfywatch code is read with ``ast`` wherever it stands (module level, inside functions,
under ``if TYPE_CHECKING:``) and checked against these rules:

- **circle**: no module reaches itself through imports;
- **upward import**: a module imports only its own package (its layer) and the layers below it (``LAYERS``);
  ``sim`` is self-contained: a simulator of ComfyUI shares no code with the product that watches it;
- **function import**: an import inside a function carries a comment, on its line or alone on the line above (a
  comment above a run of imports covers the run), saying why (an optional extra, start-up cost): it hides a
  dependency from a reader of the module's head;
- **private import**: a ``_name`` (module or attribute) is imported only from within its own package;
- **unplaced module**: every module belongs to a layer of ``LAYERS``.

A module's package, for these rules, is its layer: ``comfywatch.checks.cloud`` belongs to ``checks``.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "comfywatch"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / PACKAGE

#: The layers, lowest first: the package root (its version), the foundations, the data path, the entry points.
#: A layer is a top-level module or package of comfywatch; ``__main__`` (``python -m comfywatch``) sits on top.
LAYERS = (
    "__init__", "errors", "redact", "basic_auth", "logs", "parse", "config", "workflows", "clients", "state",
    "checks", "export", "status", "server", "daemon", "sim", "cli", "__main__",
)
#: Layers that may import nothing of comfywatch outside themselves.
SELF_CONTAINED = frozenset({"sim"})
#: Comments that instruct a tool rather than tell a reader why.
PRAGMAS = ("type:", "noqa", "pragma:", "fmt:")


@dataclass(frozen=True)
class Import:
    """One imported comfywatch module, as written at one place of one module."""

    importer: str
    target: str
    #: The names taken from ``target`` (empty for ``import x.y``).
    names: tuple[str, ...]
    path: Path
    line: int
    in_function: bool
    commented: bool

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root.parent).as_posix()}:{self.line}"


def module_name(path: Path, root: Path) -> str:
    """``comfywatch/checks/cloud.py`` -> ``comfywatch.checks.cloud``; a package is named by its ``__init__``."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def layer_of(module: str) -> str:
    """The top-level unit a module belongs to: ``comfywatch.checks.cloud`` -> ``checks``; the root -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@dataclass(frozen=True)
class Comments:
    """The lines of a module that carry a comment a reader can learn from (tool pragmas do not count)."""

    #: Lines with such a comment, after code or alone.
    anywhere: frozenset[int]
    #: Lines that hold nothing but such a comment.
    alone: frozenset[int]

    @classmethod
    def of(cls, source: str) -> Comments:
        anywhere, alone = set(), set()
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT and not token.string.lstrip("# ").startswith(PRAGMAS):
                anywhere.add(token.start[0])
                if token.line.lstrip().startswith("#"):
                    alone.add(token.start[0])
        return cls(frozenset(anywhere), frozenset(alone))


def resolve(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names, relative forms included."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    # A package's own module is its __init__: one level up from it is still the package itself.
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


class _ImportCollector(ast.NodeVisitor):
    """Every comfywatch import of one module, with whether it stands inside a function and says why."""

    def __init__(self, importer: str, path: Path, is_package: bool, modules: set[str], comments: Comments) -> None:
        self.importer, self.path, self.is_package = importer, path, is_package
        self.modules, self.comments = modules, comments
        self.function_depth = 0
        #: Last lines of the imports under a comment seen so far: the comment covers an import right below them.
        self.run_ends: set[int] = set()
        self.found: list[Import] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.function_depth += 1
        self.generic_visit(node)
        self.function_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def _commented(self, node: ast.Import | ast.ImportFrom) -> bool:
        """A comment on the statement's own lines, or alone above the run of imports the statement is in."""
        end = node.end_lineno or node.lineno
        above = node.lineno - 1
        if above in self.comments.alone or above in self.run_ends:
            self.run_ends.add(end)
            return True
        return bool(self.comments.anywhere & set(range(node.lineno, end + 1)))

    def _add(self, node: ast.Import | ast.ImportFrom, target: str, names: tuple[str, ...], commented: bool) -> None:
        if target != PACKAGE and not target.startswith(PACKAGE + "."):
            return
        self.found.append(
            Import(self.importer, target, names, self.path, node.lineno, self.function_depth > 0, commented)
        )

    def visit_Import(self, node: ast.Import) -> None:
        commented = self._commented(node)
        for alias in node.names:
            self._add(node, alias.name, (), commented)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        commented = self._commented(node)
        source = resolve(node, self.importer, self.is_package)
        attributes = []
        for alias in node.names:
            # ``from comfywatch.parse import shape`` imports the module comfywatch.parse.shape.
            submodule = f"{source}.{alias.name}"
            if submodule in self.modules:
                self._add(node, submodule, (), commented)
            else:
                attributes.append(alias.name)
        if attributes:
            self._add(node, source, tuple(attributes), commented)


def collect_imports(root: Path) -> list[Import]:
    """Every comfywatch import in the package at *root*."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(path, root) for path in files}
    found = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        collector = _ImportCollector(
            module_name(path, root), path, path.name == "__init__.py", modules, Comments.of(source)
        )
        collector.visit(ast.parse(source, filename=str(path)))
        found += collector.found
    return found


def upward_imports(imports: list[Import], root: Path) -> Iterator[str]:
    for edge in imports:
        importer, imported = layer_of(edge.importer), layer_of(edge.target)
        unplaced = [(module, layer) for module, layer in ((edge.importer, importer), (edge.target, imported))
                    if layer not in LAYERS]
        if unplaced:
            for module, layer in unplaced:
                yield f"{edge.where(root)}: unplaced module: {module} is in no layer (add {layer!r} to LAYERS)"
        elif imported == importer:
            continue
        elif importer in SELF_CONTAINED:
            yield f"{edge.where(root)}: upward import: {importer} is self-contained but imports {edge.target}"
        elif LAYERS.index(imported) > LAYERS.index(importer):
            yield (
                f"{edge.where(root)}: upward import: {edge.importer} (layer {importer}) imports {edge.target} "
                f"(layer {imported}, above it)"
            )


def function_imports(imports: list[Import], root: Path) -> Iterator[str]:
    for edge in imports:
        if edge.in_function and not edge.commented:
            yield (
                f"{edge.where(root)}: function import without a comment saying why: "
                f"{edge.importer} imports {edge.target}"
            )


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def private_imports(imports: list[Import], root: Path) -> Iterator[str]:
    for edge in imports:
        if layer_of(edge.importer) == layer_of(edge.target):
            continue
        private = [part for part in edge.target.split(".") if _is_private(part)]
        private += [name for name in edge.names if _is_private(name)]
        if private:
            yield (
                f"{edge.where(root)}: private import from another package: {edge.importer} imports "
                f"{', '.join(private)} from {edge.target}"
            )


def circles(imports: list[Import], root: Path) -> Iterator[str]:
    """The shortest circle through each module that is on one, each circle once, edge by edge."""
    graph: dict[str, dict[str, Import]] = {}
    for edge in imports:
        graph.setdefault(edge.importer, {}).setdefault(edge.target, edge)
    reported: set[frozenset[str]] = set()
    for module in sorted(graph):
        circle = shortest_circle(module, graph)
        members = frozenset(edge.importer for edge in circle)
        if circle and members not in reported:
            reported.add(members)
            steps = "; ".join(f"{edge.where(root)} {edge.importer} -> {edge.target}" for edge in circle)
            yield f"{circle[0].where(root)}: circle: {steps}"


def shortest_circle(start: str, graph: dict[str, dict[str, Import]]) -> list[Import]:
    """The imports of a shortest way from *start* back to itself (breadth first); empty when there is none."""
    previous: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, edge in sorted(graph.get(node, {}).items()):
                if target == start:
                    path = [edge]
                    while path[0].importer != start:
                        path.insert(0, previous[path[0].importer])
                    return path
                if target not in previous:
                    previous[target] = edge
                    following.append(target)
        frontier = following
    return []


def layer_violations(root: Path) -> list[str]:
    """Every breach of the rules in the package at *root*, one line each: ``file:line: rule: what``."""
    imports = collect_imports(root)
    return [
        *circles(imports, root),
        *upward_imports(imports, root),
        *function_imports(imports, root),
        *private_imports(imports, root),
    ]


def test_the_package_keeps_its_layers() -> None:
    violations = layer_violations(PACKAGE_DIR)
    assert not violations, f"{len(violations)} import rule violations:\n" + "\n".join(violations)


def test_every_layer_exists() -> None:
    units = {layer_of(module_name(path, PACKAGE_DIR)) for path in PACKAGE_DIR.rglob("*.py")}
    assert units == set(LAYERS)


# The checker itself, on a small package written for each case.


def write_package(root: Path, files: dict[str, str]) -> Path:
    """A package named comfywatch under *root* holding *files* (relative path -> source)."""
    package = root / PACKAGE
    for relative, source in {"__init__.py": "", **files}.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return package


def test_a_circle_is_reported_edge_by_edge(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "parse/__init__.py": "",
        "parse/a.py": "from comfywatch.parse.b import B\n",
        "parse/b.py": "\n\ndef b() -> None:\n    # only dodges the circle\n    from comfywatch.parse import a\n",
    })
    assert layer_violations(package) == [
        "comfywatch/parse/a.py:1: circle: comfywatch/parse/a.py:1 comfywatch.parse.a -> comfywatch.parse.b; "
        "comfywatch/parse/b.py:5 comfywatch.parse.b -> comfywatch.parse.a"
    ]


def test_an_upward_import_is_reported_wherever_it_stands(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "errors.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from comfywatch.parse.shape import Shape\n"
        ),
        "parse/__init__.py": "",
        "parse/shape.py": "",
        "clients/__init__.py": "",
        "clients/net.py": "from comfywatch.errors import Failure\nfrom ..checks import run\n",
        "checks/__init__.py": "from . import system\n",
        "checks/system.py": "import comfywatch.errors\n",
        "sim/__init__.py": "from comfywatch.logs import log\n",
    })
    assert layer_violations(package) == [
        "comfywatch/clients/net.py:2: upward import: comfywatch.clients.net (layer clients) imports "
        "comfywatch.checks (layer checks, above it)",
        "comfywatch/errors.py:3: upward import: comfywatch.errors (layer errors) imports comfywatch.parse.shape "
        "(layer parse, above it)",
        "comfywatch/sim/__init__.py:1: upward import: sim is self-contained but imports comfywatch.logs",
    ]


def test_a_module_outside_the_layers_is_reported(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "extras.py": "from comfywatch import errors\n",
        "errors.py": "",
        "parse/__init__.py": "from comfywatch.extras import x\n",
    })
    assert layer_violations(package) == [
        "comfywatch/extras.py:1: unplaced module: comfywatch.extras is in no layer (add 'extras' to LAYERS)",
        "comfywatch/parse/__init__.py:1: unplaced module: comfywatch.extras is in no layer (add 'extras' to LAYERS)",
    ]


def test_a_function_import_needs_a_comment_saying_why(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "errors.py": "",
        "logs.py": "",
        "cli/__init__.py": (
            "import json\n"
            "\n"
            "def run() -> None:\n"
            "    import json  # the standard library is not the rule's business\n"
            "    from comfywatch import errors\n"
            "    from comfywatch.logs import (  # type: ignore[attr-defined]\n"
            "        log,\n"
            "    )\n"
            "\n"
            "def commented() -> None:\n"
            "    # start-up cost: only the doctor needs these\n"
            "    from comfywatch import errors\n"
            "    from comfywatch import logs\n"
            "    from comfywatch.logs import (\n"
            "        log,  # an optional extra\n"
            "    )\n"
        ),
    })
    assert layer_violations(package) == [
        "comfywatch/cli/__init__.py:5: function import without a comment saying why: comfywatch.cli imports "
        "comfywatch.errors",
        "comfywatch/cli/__init__.py:6: function import without a comment saying why: comfywatch.cli imports "
        "comfywatch.logs",
    ]


def test_a_private_name_is_imported_only_within_its_package(tmp_path: Path) -> None:
    package = write_package(tmp_path, {
        "parse/__init__.py": "",
        "parse/_shape.py": "from comfywatch.parse.text import _clean\n",
        "parse/text.py": "",
        "clients/__init__.py": "",
        "clients/local.py": (
            "from comfywatch import __version__\n"
            "from comfywatch.parse._shape import as_map\n"
            "from comfywatch.parse.text import _clean, clean\n"
        ),
    })
    assert layer_violations(package) == [
        "comfywatch/clients/local.py:2: private import from another package: comfywatch.clients.local imports "
        "_shape from comfywatch.parse._shape",
        "comfywatch/clients/local.py:3: private import from another package: comfywatch.clients.local imports "
        "_clean from comfywatch.parse.text",
    ]


@pytest.mark.parametrize(
    ("importer", "is_package", "statement", "expected"),
    [
        ("comfywatch.checks.cloud", False, "from . import system", "comfywatch.checks"),
        ("comfywatch.checks.cloud", False, "from ..parse.cloud import x", "comfywatch.parse.cloud"),
        ("comfywatch.checks", True, "from .system import run", "comfywatch.checks.system"),
        ("comfywatch.checks", True, "from .. import errors", "comfywatch"),
        ("comfywatch.checks", False, "from comfywatch.errors import Failure", "comfywatch.errors"),
    ],
)
def test_relative_imports_resolve_from_the_importing_module(
    importer: str, is_package: bool, statement: str, expected: str
) -> None:
    node = ast.parse(statement).body[0]
    assert isinstance(node, ast.ImportFrom)
    assert resolve(node, importer, is_package) == expected
