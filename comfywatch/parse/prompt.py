"""``POST /prompt`` answers and WebSocket text frames."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from comfywatch.errors import ParseError
from comfywatch.parse.shape import as_map, as_str
from comfywatch.parse.text import sanitize

__all__ = ["PromptAccepted", "WsEvent", "parse_prompt_accepted", "parse_ws_text", "ws_event"]


@dataclass(frozen=True, slots=True)
class PromptAccepted:
    """200 answer: the prompt was queued (``node_errors`` may still list outputs that were dropped)."""

    prompt_id: str
    number: float | None
    node_errors: dict[str, Any]


def parse_prompt_accepted(body: Any) -> PromptAccepted:
    root = as_map(body, "$")
    if "error" in root and "prompt_id" not in root:
        raise ParseError("$: a 200 answer carrying an error object")
    number = root.get("number")
    priority: float | None = None
    # float() overflows on JSON integers beyond float range; NaN/Infinity are no priority either.
    if isinstance(number, int | float) and not isinstance(number, bool) and abs(number) < 1e300:
        priority = float(number)
    node_errors = root.get("node_errors") or {}
    return PromptAccepted(
        prompt_id=as_str(root.get("prompt_id"), "prompt_id"),
        number=priority,
        node_errors=dict(as_map(node_errors, "node_errors")),
    )


@dataclass(frozen=True, slots=True)
class WsEvent:
    """One ``{"type", "data"}`` text frame; ``prompt_id`` lifted out when the frame names one."""

    type: str
    data: dict[str, Any]
    prompt_id: str | None

    @property
    def is_end_marker(self) -> bool:
        """``executing`` with ``node: null``: the prompt is done and its history entry is written."""
        return self.type == "executing" and "node" in self.data and self.data.get("node") is None


MAX_FRAME_CHARS = 4 * 2**20


def parse_ws_text(text: str) -> WsEvent:
    """Decode a WebSocket text frame; raises :class:`ParseError` for anything that is not one."""
    if len(text) > MAX_FRAME_CHARS:
        raise ParseError("$: frame too large")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParseError("$: frame is not JSON") from exc
    root = as_map(raw, "$")
    kind = as_str(root.get("type"), "type")
    raw_data = root.get("data", {})
    raw_data = as_map(raw_data, "data") if raw_data is not None else {}
    # The event's own strings (ids, node and exception types, messages) reach logs and canary output; the frame
    # size bounds them, nested values (outputs) are left as the server sent them.
    data = {key: sanitize(value) if isinstance(value, str) else value for key, value in raw_data.items()}
    prompt_id = data.get("prompt_id")
    return WsEvent(type=kind, data=data, prompt_id=prompt_id if isinstance(prompt_id, str) else None)


def ws_event(message: str | bytes) -> WsEvent | None:
    """The event a WebSocket message carries; ``None`` for binary frames (previews) and for text frames that
    are not events, which every follower of the socket skips."""
    if isinstance(message, bytes):
        return None
    try:
        return parse_ws_text(message)
    except ParseError:
        return None
