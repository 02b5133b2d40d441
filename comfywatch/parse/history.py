"""``GET /history`` and ``GET /history/{id}`` -> :class:`HistoryEntry` values.

A history entry exists only once a prompt has finished; ``{}`` means "unknown or not finished yet".
Interrupted prompts also have ``status_str == "error"``: the last status message tells them apart.
An entry with ``completed: false`` and neither a terminal message nor a terminal ``status_str`` (a server that
writes its entry before the prompt ends) is not finished: :attr:`HistoryEntry.finished` is False.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from comfywatch.errors import Reason, classify_execution_error
from comfywatch.parse.shape import as_bool, as_list, as_map, as_opt_str, as_str, opt_timestamp_ms
from comfywatch.parse.text import bounded

__all__ = ["HistoryEntry", "Outcome", "parse_history", "parse_history_entry"]


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    #: Neither success nor a recognised failure message: finished with an unknown outcome, or (see
    #: :attr:`HistoryEntry.finished`) not finished at all.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """A finished prompt, with the server's own timestamps (wall-clock ms)."""

    prompt_id: str
    outcome: Outcome
    failure_reason: Reason | None
    start_ms: int | None
    end_ms: int | None
    client_id: str | None
    exception_type: str | None
    node_type: str | None
    outputs: dict[str, Any] = field(default_factory=dict, compare=False)
    #: False for an entry the server wrote before the prompt ended (``completed`` false, no terminal message or
    #: ``status_str``): its outcome is still to come, so it is neither a success nor a failure yet.
    finished: bool = True

    @property
    def server_seconds(self) -> float | None:
        """Execution time measured by the server (execution_start -> terminal message)."""
        if self.start_ms is None or self.end_ms is None or self.end_ms < self.start_ms:
            return None
        return (self.end_ms - self.start_ms) / 1000.0


def _timestamp(data: Any) -> int | None:
    # NaN, Infinity or a 400-digit integer (all accepted by json.loads) count as no timestamp.
    return opt_timestamp_ms(data.get("timestamp")) if isinstance(data, dict) else None


def parse_history_entry(prompt_id: str, value: Any, path: str = "$") -> HistoryEntry:
    """Parse one entry (the value under its prompt id)."""
    entry = as_map(value, path)
    status = as_map(entry.get("status"), f"{path}.status")
    status_str = as_opt_str(status.get("status_str"), f"{path}.status.status_str")
    completed = as_bool(status.get("completed"), f"{path}.status.completed")
    messages = as_list(status.get("messages", []), f"{path}.status.messages")
    outputs = entry.get("outputs", {})
    outputs = dict(as_map(outputs, f"{path}.outputs"))

    start_ms: int | None = None
    end_ms: int | None = None
    outcome = Outcome.UNKNOWN
    reason: Reason | None = None
    exception_type: str | None = None
    node_type: str | None = None
    for index, message in enumerate(messages):
        pair = as_list(message, f"{path}.status.messages[{index}]")
        if len(pair) != 2:
            continue
        event = as_str(pair[0], f"{path}.status.messages[{index}][0]")
        data = pair[1] if isinstance(pair[1], dict) else {}
        if event == "execution_start":
            start_ms = _timestamp(data)
        elif event == "execution_success":
            end_ms, outcome, reason = _timestamp(data), Outcome.SUCCESS, None
        elif event == "execution_error":
            end_ms, outcome = _timestamp(data), Outcome.FAILED
            raw_type, raw_message = data.get("exception_type"), data.get("exception_message")
            exception_type = bounded(raw_type) if isinstance(raw_type, str) else None
            node = data.get("node_type")
            node_type = bounded(node) if isinstance(node, str) else None
            message_text = raw_message if isinstance(raw_message, str) else None
            reason = classify_execution_error(exception_type, message_text)
        elif event == "execution_interrupted":
            end_ms, outcome, reason = _timestamp(data), Outcome.FAILED, Reason.INTERRUPTED
            node = data.get("node_type")
            node_type = bounded(node) if isinstance(node, str) else None
    if outcome is Outcome.UNKNOWN and status_str == "success":
        outcome = Outcome.SUCCESS
    elif outcome is Outcome.UNKNOWN and status_str == "error":
        outcome, reason = Outcome.FAILED, Reason.EXECUTION_ERROR

    client_id: str | None = None
    prompt = entry.get("prompt")
    if isinstance(prompt, list) and len(prompt) > 3 and isinstance(prompt[3], dict):
        found = prompt[3].get("client_id")
        client_id = bounded(found) if isinstance(found, str) else None
    return HistoryEntry(
        prompt_id=prompt_id,
        outcome=outcome,
        failure_reason=reason,
        start_ms=start_ms,
        end_ms=end_ms,
        client_id=client_id,
        exception_type=exception_type,
        node_type=node_type,
        outputs=outputs,
        # Real failures are written with completed false too: only the absence of any verdict means "running".
        finished=completed or outcome is not Outcome.UNKNOWN,
    )


def parse_history(body: Any) -> list[HistoryEntry]:
    """Parse ``{prompt_id: entry, ...}`` in the server's insertion order (oldest first)."""
    root = as_map(body, "$")
    entries: list[HistoryEntry] = []
    for raw_id, value in root.items():
        prompt_id = bounded(str(raw_id))
        entries.append(parse_history_entry(prompt_id, value, f"$[{prompt_id!r}]"))
    return entries
