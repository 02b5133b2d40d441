"""Paths of the recorded ComfyUI fixtures and helpers to load them.

The fixtures live in ``shared/`` beside the repository (CI lays it out the same way), never inside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["FIXTURES", "SHARED", "load_json", "load_jsonl"]

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
FIXTURES = SHARED / "fixtures" / "comfyui"


def load_json(name: str) -> Any:
    """Decode one recorded JSON body."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def load_jsonl(name: str) -> list[dict[str, Any]]:
    """Decode a recorded WebSocket session: one dict per frame."""
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
