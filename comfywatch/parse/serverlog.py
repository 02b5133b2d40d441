"""ComfyUI's own log (``GET /internal/logs/raw``, ComfyUI ≥ 0.3): which node packs failed to import at start.

The answer is ``{"entries": [{"t": time, "m": message}, ...], "size": {...}}``; a message may span several
lines. At start ComfyUI logs, for each module that fails, a traceback and ``Cannot import <path> module for
custom nodes: <error>``; then the "Import times for custom nodes:" table, whose failed rows read
``0.0 seconds (IMPORT FAILED): <path>``; then, if some of its own optional nodes failed, "some comfy_extras/
nodes did not import correctly" and ``IMPORT FAILED: nodes_audio.py`` lines.

ComfyUI keeps only the latest few hundred messages: once the start-up has scrolled out, the log says nothing
about imports (``startup_seen`` is False) and the last verdict stands. Everything here is bounded: the log is
the server's to fill.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from comfywatch.parse.shape import as_list, as_map
from comfywatch.parse.text import bounded

__all__ = ["MAX_FAILURES", "ImportFailure", "ServerLog", "parse_server_log"]

#: Failed packs kept: a server with more is broken beyond what a list helps with.
MAX_FAILURES: Final = 50
#: Lines read and characters of a line looked at.
_MAX_LINES: Final = 50_000
_MAX_LINE: Final = 2_000
_MAX_ERROR: Final = 300

_CANNOT_IMPORT: Final = "Cannot import "
_FOR_CUSTOM_NODES: Final = " module for custom nodes: "
_TABLE_HEAD: Final = "Import times for custom nodes:"
_TABLE_ROW: Final = re.compile(r"\s*\d+(?:\.\d+)? seconds( \(IMPORT FAILED\))?: (.+)")
_EXTRA_FAILED: Final = re.compile(r"IMPORT FAILED: (\S.*)")
_BUILTIN_DIRS: Final = ("comfy_extras", "comfy_api_nodes")


@dataclass(frozen=True)
class ImportFailure:
    """A node module that failed to import at the server's start."""

    #: The custom node pack (its folder under custom_nodes/, or a single file's name without ``.py``), or the
    #: built-in module's file name (``nodes_audio.py``).
    pack: str
    #: One of ComfyUI's own optional modules (``comfy_extras``), not a custom node pack.
    builtin: bool
    #: The exception's line (``No module named 'torchaudio'``), when the log still holds it.
    error: str | None


@dataclass(frozen=True)
class ServerLog:
    #: The log still holds the start-up's import report: without it, nothing can be said about imports.
    startup_seen: bool
    #: Custom packs first, then built-in modules, each by name.
    failures: tuple[ImportFailure, ...]
    #: Custom node packs (or single-file nodes) that imported.
    imported: int

    @property
    def custom_failures(self) -> tuple[ImportFailure, ...]:
        return tuple(f for f in self.failures if not f.builtin)


def _module(path: str) -> tuple[str, bool] | None:
    """``(pack, builtin)`` of a module path ComfyUI logs, or None when it is neither kind."""
    parts = [part for part in re.split(r"[\\/]+", path.strip()) if part]
    for index, part in enumerate(parts[:-1]):
        if part == "custom_nodes":
            name = parts[index + 1]
            return bounded(name[:-3] if name.endswith(".py") else name, 128), False
        if part in _BUILTIN_DIRS:
            return bounded(parts[-1], 128), True
    return None


def _cannot_import(line: str) -> tuple[str, str] | None:
    """``(path, error)`` of a ``Cannot import <path> module for custom nodes: <error>`` line, or None.

    The answer of ``re.search(r"Cannot import (.+?) module for custom nodes: (.*)", line)`` for a line (no
    ``"\\n"``), found with two scans of the line instead: that search retries the lazy path from every
    "Cannot import " to the line's end, quadratic in a line that repeats it without the suffix. The first
    "Cannot import " decides: a later one could only end at a suffix the first one also reaches.
    """
    start = line.find(_CANNOT_IMPORT)
    if start < 0:
        return None
    path = start + len(_CANNOT_IMPORT)
    end = line.find(_FOR_CUSTOM_NODES, path + 1)  # the path is not empty
    if end < 0:
        return None
    return line[path:end], line[end + len(_FOR_CUSTOM_NODES) :]


def _lines(body: object) -> list[str]:
    entries = as_list(as_map(body, "$").get("entries", []), "$.entries")
    lines: list[str] = []
    for entry in entries:
        message = entry.get("m") if isinstance(entry, dict) else None
        if isinstance(message, str):
            lines.extend(line[:_MAX_LINE] for line in message[: _MAX_LINE * 64].splitlines())
        if len(lines) >= _MAX_LINES:
            break
    return lines[:_MAX_LINES]


def parse_server_log(body: object) -> ServerLog:
    """The import failures the log reports.

    Raises:
        ParseError: the answer is not an object with an ``entries`` list.
    """
    errors: dict[tuple[str, bool], str] = {}
    failed: set[tuple[str, bool]] = set()
    imported: set[str] = set()
    startup_seen = in_table = False
    for line in _lines(body):
        if line.strip() == _TABLE_HEAD:
            startup_seen = in_table = True
            continue
        if (cannot := _cannot_import(line)) is not None:
            path, error = cannot
            module = _module(path)
            if module is not None:
                failed.add(module)
                errors[module] = bounded(error.strip(), _MAX_ERROR)
            continue
        if in_table and (row := _TABLE_ROW.fullmatch(line)) is not None:
            module = _module(row.group(2))
            if module is not None and not module[1]:
                if row.group(1):
                    failed.add(module)
                else:
                    imported.add(module[0])
            continue
        in_table = False
        if (extra := _EXTRA_FAILED.fullmatch(line.strip())) is not None:
            failed.add((bounded(extra.group(1).strip(), 128), True))
    # The extras' own IMPORT FAILED lines name the file; their "Cannot import" lines carry the error.
    ordered = sorted(failed, key=lambda module: (module[1], module[0]))[:MAX_FAILURES]
    failures = tuple(ImportFailure(pack, builtin, errors.get((pack, builtin))) for pack, builtin in ordered)
    return ServerLog(startup_seen, failures, len(imported - {f.pack for f in failures if not f.builtin}))
