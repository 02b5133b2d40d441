"""``/internal/logs/raw`` of the simulated server: the start-up log recorded from ComfyUI 0.3.64
(``data/startup_log.json``: its optional audio nodes fail for want of torchaudio, one custom node file imports),
plus, for each pack a deploy broke, what ComfyUI logs for a pack that fails to import."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["startup_log"]

_TABLE_HEAD = "\nImport times for custom nodes:\n"
_CUSTOM_NODES = "/opt/ComfyUI/custom_nodes"


@cache
def _recorded() -> dict[str, Any]:
    text = resources.files("comfywatch.sim").joinpath("data/startup_log.json").read_text("utf-8")
    recorded: dict[str, Any] = json.loads(text)
    return recorded


def _traceback(pack: str, error: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "/opt/ComfyUI/nodes.py", line 2131, in load_custom_node\n'
        "    module_spec.loader.exec_module(module)\n"
        f'  File "{_CUSTOM_NODES}/{pack}/__init__.py", line 1, in <module>\n'
        f"ModuleNotFoundError: {error}\n\n"
    )


def startup_log(broken: Mapping[str, str]) -> dict[str, Any]:
    """The answer of ``/internal/logs/raw``; *broken* maps each pack that fails to import to its error."""
    log = copy.deepcopy(_recorded())
    entries: list[dict[str, str]] = log["entries"]
    head = next(i for i, entry in enumerate(entries) if entry["m"] == _TABLE_HEAD)
    when = entries[head]["t"]
    failures = []
    for pack, error in sorted(broken.items()):
        failures += [{"t": when, "m": _traceback(pack, error)},
                     {"t": when, "m": f"Cannot import {_CUSTOM_NODES}/{pack} module for custom nodes: {error}\n"}]
    rows = [{"t": when, "m": f"   0.0 seconds (IMPORT FAILED): {_CUSTOM_NODES}/{pack}\n"} for pack in sorted(broken)]
    # ComfyUI's table lists the packs that imported, then the failed ones.
    table_end = next(i for i in range(head + 1, len(entries)) if entries[i]["m"] == "\n")
    entries[table_end:table_end] = rows
    entries[head:head] = failures
    return log
