"""Pure follower of one prompt's WebSocket events (the sans-I/O core of the canary).

Feed it every decoded text frame with the local monotonic time it arrived; it keeps only what concerns
*its own* ``prompt_id`` (other clients' prompts, ``status`` broadcasts and previews are ignored) and says
when the prompt is over and how. Never raises for any event content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from comfywatch.errors import Reason, classify_execution_error
from comfywatch.parse.prompt import WsEvent

__all__ = ["Progress", "PromptFollower"]


class Progress(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DONE = "done"  # end marker (executing node=null) seen


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
        return self.state in {Progress.DONE, Progress.FAILED}

    @property
    def server_seconds(self) -> float | None:
        if self.server_start_ms is None or self.server_end_ms is None:
            return None
        if self.server_end_ms < self.server_start_ms:
            return None
        return (self.server_end_ms - self.server_start_ms) / 1000.0

    def feed(self, event: WsEvent, at: float) -> None:
        if event.prompt_id != self.prompt_id:
            return
        data = event.data
        self.last_activity = at
        kind = event.type
        if kind == "execution_start":
            if self.started_at is None:
                self.started_at = at
            self.server_start_ms = _ms(data.get("timestamp")) or self.server_start_ms
            if self.state is Progress.WAITING:
                self.state = Progress.RUNNING
        elif kind == "executed":
            node = data.get("node")
            output = data.get("output")
            if isinstance(node, str) and isinstance(output, dict) and len(self.outputs) < 64:
                self.outputs[node] = output
        elif kind == "execution_success":
            self.succeeded_at = at
            self.server_end_ms = _ms(data.get("timestamp")) or self.server_end_ms
            if self.state in {Progress.WAITING, Progress.RUNNING}:
                self.state = Progress.SUCCEEDED
        elif kind == "execution_error":
            exc_type, message = data.get("exception_type"), data.get("exception_message")
            self.failure = classify_execution_error(
                exc_type if isinstance(exc_type, str) else None, message if isinstance(message, str) else None
            )
            node_type = data.get("node_type")
            self.failure_detail = (
                f"{node_type if isinstance(node_type, str) else '?'}: "
                f"{exc_type if isinstance(exc_type, str) else 'error'}"
            )[:200]
            self.server_end_ms = _ms(data.get("timestamp")) or self.server_end_ms
            self.state, self.ended_at = Progress.FAILED, at
        elif kind == "execution_interrupted":
            self.failure = Reason.INTERRUPTED
            self.failure_detail = "interrupted"
            self.server_end_ms = _ms(data.get("timestamp")) or self.server_end_ms
            self.state, self.ended_at = Progress.FAILED, at
        elif event.is_end_marker:
            self.ended_at = at
            if self.state is not Progress.FAILED:
                self.state = Progress.DONE
        elif kind in {"executing", "progress", "progress_state", "execution_cached"}:
            if self.started_at is None and kind != "execution_cached":
                self.started_at = at
            if self.state is Progress.WAITING:
                self.state = Progress.RUNNING


def _ms(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # NaN, Infinity and 400-digit integers (json.loads accepts all three) would raise in int() or in the
    # server_seconds arithmetic; the follower must never raise.
    if not -1e18 < value < 1e18:
        return None
    return int(value)
