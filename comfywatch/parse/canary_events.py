"""Pure follower of one prompt's WebSocket events (the sans-I/O core of the canary).

Feed it every WebSocket message with the local monotonic time it arrived (:meth:`PromptFollower.feed_message`),
or every decoded event (:meth:`PromptFollower.feed`); it keeps only what concerns *its own* ``prompt_id``
(other clients' prompts, ``status`` broadcasts and previews are ignored) and says when the prompt is over and
how. Never raises for any message or event content.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from comfywatch.errors import Reason, classify_execution_error
from comfywatch.parse.prompt import MAX_FRAME_CHARS, WsEvent, ws_event
from comfywatch.parse.text import bounded, sanitize

__all__ = [
    "MAX_OUTPUT_IMAGES", "MAX_OUTPUT_ITEMS", "MAX_OUTPUT_NODES", "MAX_OUTPUT_TEXT_CHARS", "Progress", "PromptFollower",
]

#: Output nodes a run keeps (``executed`` events of its prompt), and of each what the canary's verification reads:
#: its first image records and texts. A server chooses how large an output is (a 4 Mi-character frame of empty
#: objects decodes to about 100 MB), and a run keeps its outputs until it ends.
MAX_OUTPUT_NODES: Final = 64
MAX_OUTPUT_ITEMS: Final = 64
#: Image records kept of one output: as many as a canary may be configured to expect (``verify.images``), so
#: that the count it checks is never the cut's.
MAX_OUTPUT_IMAGES: Final = 1000
MAX_OUTPUT_TEXT_CHARS: Final = 16_384
#: An image record's filename, subfolder and type are sent back to ``/view`` as given, so they are cut, not cleaned.
_MAX_IMAGE_FIELD_CHARS: Final = 256
_IMAGE_FIELDS: Final = ("filename", "subfolder", "type")


class Progress(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DONE = "done"  # end marker (executing node=null) seen


#: Frame types :meth:`PromptFollower.feed_message` reads without building an event: those ComfyUI sends on
#: every run. Each is its own sanitized value, so reading it as sent changes nothing.
_PLAIN_TYPES = frozenset({
    "status", "execution_start", "execution_cached", "executing", "progress", "progress_state", "executed",
    "execution_success", "execution_error", "execution_interrupted",
})


@dataclass
class PromptFollower:
    prompt_id: str
    state: Progress = Progress.WAITING
    started_at: float | None = None
    succeeded_at: float | None = None
    ended_at: float | None = None
    server_start_ms: int | None = None
    server_end_ms: int | None = None
    failure: Reason | None = None
    failure_detail: str = ""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_activity: float | None = None

    @property
    def finished(self) -> bool:
        """Terminal: the end marker arrived, or an error/interrupt was reported."""
        return self.state is Progress.DONE or self.state is Progress.FAILED

    @property
    def server_seconds(self) -> float | None:
        if self.server_start_ms is None or self.server_end_ms is None:
            return None
        if self.server_end_ms < self.server_start_ms:
            return None
        return (self.server_end_ms - self.server_start_ms) / 1000.0

    def feed_message(self, message: str | bytes, at: float) -> None:
        """Feed one WebSocket message as received: the same as ``feed(ws_event(message), at)``, or nothing when
        the message is no event.

        The canary's clock runs while it reads the burst of frames that ends an execution, and its history
        request waits for the last of them; so a plain frame (a JSON object of one of ComfyUI's usual types) is
        read as sent, without building an event: only the strings kept are sanitized, as
        :func:`~comfywatch.parse.prompt.parse_ws_text` would have. Any other message goes through ``ws_event``.
        """
        if isinstance(message, bytes):
            return
        frame = _plain_frame(message)
        if frame is None:
            event = ws_event(message)
            if event is not None:
                self.feed(event, at)
            return
        kind, data = frame
        prompt_id = data.get("prompt_id")
        if prompt_id == self.prompt_id or (isinstance(prompt_id, str) and sanitize(prompt_id) == self.prompt_id):
            self._apply(kind, data, at)

    def feed(self, event: WsEvent, at: float) -> None:
        if event.prompt_id == self.prompt_id:
            self._apply(event.type, event.data, at)

    def _apply(self, kind: str, data: dict[str, Any], at: float) -> None:
        """One event of our prompt; *data* may be unsanitized (strings kept are sanitized here)."""
        self.last_activity = at
        if kind == "execution_start":
            if self.started_at is None:
                self.started_at = at
            self.server_start_ms = _ms(data.get("timestamp")) or self.server_start_ms
            if self.state is Progress.WAITING:
                self.state = Progress.RUNNING
        elif kind == "executed":
            node = data.get("node")
            output = data.get("output")
            if isinstance(node, str) and isinstance(output, dict) and len(self.outputs) < MAX_OUTPUT_NODES:
                self.outputs[bounded(node)] = _kept_output(output)
        elif kind == "execution_success":
            self.succeeded_at = at
            self.server_end_ms = _ms(data.get("timestamp")) or self.server_end_ms
            if self.state is Progress.WAITING or self.state is Progress.RUNNING:
                self.state = Progress.SUCCEEDED
        elif kind == "execution_error":
            exc_type, message, node_type = (_text(data.get(key))
                                            for key in ("exception_type", "exception_message", "node_type"))
            self.failure = classify_execution_error(exc_type, message)
            # The detail is shown (status page, logs): bounded as every kept string is, secrets masked.
            self.failure_detail = (f"{'?' if node_type is None else bounded(node_type)}: "
                                   f"{'error' if exc_type is None else bounded(exc_type)}")[:200]
            self.server_end_ms = _ms(data.get("timestamp")) or self.server_end_ms
            self.state, self.ended_at = Progress.FAILED, at
        elif kind == "execution_interrupted":
            self.failure = Reason.INTERRUPTED
            self.failure_detail = "interrupted"
            self.server_end_ms = _ms(data.get("timestamp")) or self.server_end_ms
            self.state, self.ended_at = Progress.FAILED, at
        elif kind == "executing" and "node" in data and data["node"] is None:  # WsEvent.is_end_marker
            self.ended_at = at
            if self.state is not Progress.FAILED:
                self.state = Progress.DONE
        elif kind in {"executing", "progress", "progress_state", "execution_cached"}:
            if self.started_at is None and kind != "execution_cached":
                self.started_at = at
            if self.state is Progress.WAITING:
                self.state = Progress.RUNNING


def _plain_frame(text: str) -> tuple[str, dict[str, Any]] | None:
    """(type, data) of a plain frame (see :meth:`PromptFollower.feed_message`), else None: ``ws_event`` decides."""
    if len(text) > MAX_FRAME_CHARS:
        return None
    try:
        root = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(root, dict):
        return None
    kind = root.get("type")
    if not isinstance(kind, str) or kind not in _PLAIN_TYPES:
        return None
    data = root.get("data")
    # Data that is no object (ws_event: none, or no event) names no prompt: no follower reads the frame.
    return kind, data if isinstance(data, dict) else {}


def _kept_output(output: dict[str, Any]) -> dict[str, list[Any]]:
    """What the canary's verification reads of one ``executed`` output, bounded: the first image records (their
    scalar fields, strings cut) and the first texts (cut, not cleaned: a pattern may look for any character)."""
    kept: dict[str, list[Any]] = {}
    images = output.get("images")
    if isinstance(images, list):
        records = itertools.islice((image for image in images if isinstance(image, dict)), MAX_OUTPUT_IMAGES)
        kept["images"] = [{key: _scalar(image[key]) for key in _IMAGE_FIELDS if key in image} for image in records]
    texts = output.get("text")
    if isinstance(texts, list):
        kept["text"] = [text[:MAX_OUTPUT_TEXT_CHARS] if isinstance(text, str) else text for text in itertools.islice(
            (text for text in texts if isinstance(text, str | int | float)), MAX_OUTPUT_ITEMS)]
    return kept


def _scalar(value: object) -> object:
    if isinstance(value, str):
        return value[:_MAX_IMAGE_FIELD_CHARS]
    return value if value is None or isinstance(value, int | float) else None


def _text(value: object) -> str | None:
    return sanitize(value) if isinstance(value, str) else None


def _ms(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # NaN, Infinity and 400-digit integers (json.loads accepts all three) would raise in int() or in the
    # server_seconds arithmetic; the follower must never raise.
    if not -1e18 < value < 1e18:
        return None
    return int(value)
