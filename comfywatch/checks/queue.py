"""``queue``: running/pending counts, job ages, stall and "worker not consuming" detection (``/queue``)."""

from __future__ import annotations

import time

from comfywatch.clients.local import LocalApi
from comfywatch.state import TargetState

__all__ = ["reobserve", "run"]


async def run(api: LocalApi, state: TargetState, now: float | None = None) -> None:
    snapshot, offset = await api.queue_and_clock()
    state.last_queue = (snapshot, offset or 0.0)
    reobserve(state, now)


def reobserve(state: TargetState, now: float | None = None) -> bool:
    """Update the queue view from the last read: right after it, or later while the queue is known not to
    have changed (``trackers.QuietQueue``: ages, stalls and the idle streak advance). False if there is none."""
    if state.last_queue is None:
        return False
    snapshot, offset = state.last_queue
    state.apply_queue(state.queue_tracker.observe(snapshot, time.time() if now is None else now, clock_offset=offset))
    return True
