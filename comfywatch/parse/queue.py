"""``GET /queue`` (local ComfyUI and Comfy Cloud ``/api/queue``) -> :class:`QueueSnapshot`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from comfywatch.errors import ParseError
from comfywatch.parse.shape import as_float, as_list, as_map, as_str, opt_timestamp_ms
from comfywatch.parse.text import Cut, bounded, capped

__all__ = ["MAX_QUEUE_ITEMS", "QueueItem", "QueueSnapshot", "parse_queue", "parse_queue_remaining", "snapshot_of"]

#: Entries read of each list of ``/queue``; the rest are counted, not read. A target keeps what it read until
#: its next poll (job ages, stalls), so a queue of millions of entries would cost its daemon gigabytes and
#: seconds of every poll. ComfyUI's pending list is a heap on the job number: its first entries hold the next
#: and the longest-waiting jobs.
MAX_QUEUE_ITEMS: Final = 10_000


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One queue entry: ``[number, prompt_id, prompt_graph, extra_data, outputs_to_execute]``.

    The graph itself is not kept: it can be megabytes and holds the user's prompts.
    """

    number: float
    prompt_id: str
    client_id: str | None
    create_time_ms: int | None


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """The entries read of each list (at most :data:`MAX_QUEUE_ITEMS`) and how many more each list had."""

    running: tuple[QueueItem, ...]
    pending: tuple[QueueItem, ...]
    running_unread: int = 0
    pending_unread: int = 0

    @property
    def running_count(self) -> int:
        return len(self.running) + self.running_unread

    @property
    def pending_count(self) -> int:
        return len(self.pending) + self.pending_unread


def _extra_create_time(extra: Any) -> tuple[str | None, int | None]:
    if not isinstance(extra, dict):
        return None, None
    client = extra.get("client_id")
    created = extra.get("create_time")
    # An unusable create_time (NaN, Infinity, a 400-digit integer) is simply absent.
    return (bounded(client) if isinstance(client, str) else None), opt_timestamp_ms(created)


def _item(value: Any, path: str) -> QueueItem:
    raw = as_list(value, path)
    if len(raw) < 2:
        raise ParseError(f"{path}: expected a 5-element array, got {len(raw)} elements")
    number = as_float(raw[0], f"{path}[0]")
    prompt_id = as_str(raw[1], f"{path}[1]")
    # Local ComfyUI puts extra_data at [3]; Comfy Cloud puts {"create_time"} at [4].
    client_id: str | None = None
    create_ms: int | None = None
    for extra in raw[3:5]:
        found_client, found_ms = _extra_create_time(extra)
        client_id = client_id or found_client
        create_ms = create_ms if create_ms is not None else found_ms
    return QueueItem(number=number, prompt_id=prompt_id, client_id=client_id, create_time_ms=create_ms)


def snapshot_of(running: list[Any], pending: list[Any], item: Callable[[Any, str], QueueItem]) -> QueueSnapshot:
    """The snapshot of a queue's two lists, each entry parsed by *item* (given the entry and its path): the first
    :data:`MAX_QUEUE_ITEMS` of each list, the rest counted (one cut each)."""
    read_running = capped(running, MAX_QUEUE_ITEMS, Cut.QUEUE_ITEMS)
    read_pending = capped(pending, MAX_QUEUE_ITEMS, Cut.QUEUE_ITEMS)
    return QueueSnapshot(
        running=tuple(item(v, f"queue_running[{i}]") for i, v in enumerate(read_running)),
        pending=tuple(item(v, f"queue_pending[{i}]") for i, v in enumerate(read_pending)),
        running_unread=len(running) - len(read_running),
        pending_unread=len(pending) - len(read_pending),
    )


def parse_queue(body: Any) -> QueueSnapshot:
    """Parse ``{"queue_running": [...], "queue_pending": [...]}``."""
    root = as_map(body, "$")
    return snapshot_of(as_list(root.get("queue_running"), "queue_running"),
                       as_list(root.get("queue_pending"), "queue_pending"), _item)


def parse_queue_remaining(body: Any) -> int:
    """Parse ``GET /prompt``: ``{"exec_info": {"queue_remaining": N}}`` (pending + running)."""
    root = as_map(body, "$")
    info = as_map(root.get("exec_info"), "exec_info")
    value = as_float(info.get("queue_remaining"), "exec_info.queue_remaining")
    return int(value)
