"""``queue``: running/pending counts, job ages, stall and "worker not consuming" detection (``/queue``).

``observe`` reads the queue and ``record`` folds the read into the target's trackers; doctor observes and judges
a single read (and a second look) its own way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from comfywatch.checks.context import TargetContext
from comfywatch.parse.queue import QueueSnapshot
from comfywatch.state import TargetState

__all__ = ["QueueObservation", "observe", "record", "reobserve", "run"]


@dataclass(frozen=True)
class QueueObservation:
    snapshot: QueueSnapshot
    #: The server's clock minus this host's, from the answer's ``Date`` header (0 without one): job ages are
    #: measured on the server's clock.
    clock_offset: float


async def observe(ctx: TargetContext) -> QueueObservation:
    snapshot, offset = await ctx.local_api().queue_and_clock()
    return QueueObservation(snapshot, offset or 0.0)


def record(state: TargetState, observation: QueueObservation) -> None:
    state.last_queue = (observation.snapshot, observation.clock_offset)
    reobserve(state)


async def run(ctx: TargetContext) -> None:
    record(ctx.state, await observe(ctx))


def reobserve(state: TargetState) -> bool:
    """Update the queue view from the last read: right after it, or later while the queue is known not to
    have changed (``trackers.QuietQueue``: ages, stalls and the idle streak advance). False if there is none."""
    if state.last_queue is None:
        return False
    snapshot, offset = state.last_queue
    state.apply_queue(state.queue_tracker.observe(snapshot, time.time(), clock_offset=offset))
    return True
