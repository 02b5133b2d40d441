"""``queue``: running/pending counts, job ages, stall and "worker not consuming" detection (``/queue``)."""

from __future__ import annotations

import time

from comfywatch.checks.context import TargetContext
from comfywatch.state import TargetState

__all__ = ["reobserve", "run"]


async def run(ctx: TargetContext) -> None:
    snapshot, offset = await ctx.local_api().queue_and_clock()
    ctx.state.last_queue = (snapshot, offset or 0.0)
    reobserve(ctx.state)


def reobserve(state: TargetState) -> bool:
    """Update the queue view from the last read: right after it, or later while the queue is known not to
    have changed (``trackers.QuietQueue``: ages, stalls and the idle streak advance). False if there is none."""
    if state.last_queue is None:
        return False
    snapshot, offset = state.last_queue
    state.apply_queue(state.queue_tracker.observe(snapshot, time.time(), clock_offset=offset))
    return True
