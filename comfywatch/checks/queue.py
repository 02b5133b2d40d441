"""``queue``: running/pending counts, job ages, stall and "worker not consuming" detection (``/queue``)."""

from __future__ import annotations

import time

from comfywatch.clients.local import LocalApi
from comfywatch.state import TargetState

__all__ = ["run"]


async def run(api: LocalApi, state: TargetState, now: float | None = None) -> None:
    snapshot, offset = await api.queue_and_clock()
    view = state.queue_tracker.observe(snapshot, time.time() if now is None else now, clock_offset=offset or 0.0)
    state.apply_queue(view)
