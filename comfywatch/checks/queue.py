"""``queue``: running/pending counts, job ages, stall and "worker not consuming" detection (``/queue``)."""

from __future__ import annotations

import time

from comfywatch.clients.local import LocalApi
from comfywatch.state import TargetState

__all__ = ["run"]


async def run(api: LocalApi, state: TargetState, now: float | None = None) -> None:
    snapshot = await api.queue()
    view = state.queue_tracker.observe(snapshot, time.time() if now is None else now)
    state.apply_queue(view)
