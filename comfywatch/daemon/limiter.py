"""The limit on requests in flight to all targets together, shared fairly between targets.

A plain semaphore serves its waiters first come, first served. With 190 targets that accept connections and
never answer, their requests hold every slot for their whole timeout, and a healthy target's request queues
behind theirs until its check times out: the healthy target looks down. Here, when requests must wait, a freed
slot goes to the waiting target that has held slots the least lately (slot-seconds, forgotten with a half-life
of :data:`HALF_LIFE`): a healthy target holds a slot for milliseconds and goes first, a hanging one holds it for
its whole timeout and waits for the others. Targets that have held nothing are served in arrival order, and
without contention the limiter is a plain semaphore.

Usage decays exponentially, so comparing two targets' usage now is comparing ``ln(usage) + t/tau`` at the
times ``t`` they were last charged: that key does not change with time, and waiters wait in a heap by it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import Literal

__all__ = ["HALF_LIFE", "FairLimiter", "Share"]

#: Seconds after which half of a target's slot usage is forgotten: long enough to remember a target that
#: hangs on every poll (once a minute or more often), short enough that one that recovers is soon served first.
HALF_LIFE = 30.0


class Share(asyncio.Semaphore):
    """One target's way into a :class:`FairLimiter`.

    It is an :class:`asyncio.Semaphore` for the HTTP client (``async with``), whose slots are the limiter's.
    """

    def __init__(self, limiter: FairLimiter) -> None:
        super().__init__()
        self._limiter = limiter
        #: Slot-seconds held, decayed to ``_charged_at``, and the heap key they give (see the module docstring).
        self._usage = 0.0
        self._charged_at = 0.0
        self.key = -math.inf
        #: When each slot this share holds was acquired, oldest first (a list: a target holds a slot or two, and
        #: an empty deque would take 760 bytes in every target).
        self._held: list[float] = []

    def locked(self) -> bool:
        return self._limiter.locked()

    async def acquire(self) -> Literal[True]:
        await self._limiter.acquire_for(self)
        self._held.append(self._limiter.clock())
        return True

    def release(self) -> None:
        now = self._limiter.clock()
        decay = math.exp(-(now - self._charged_at) / self._limiter.tau)
        self._usage = self._usage * decay + (now - self._held.pop(0))
        self._charged_at = now
        self.key = math.log(self._usage) + now / self._limiter.tau if self._usage > 0 else -math.inf
        self._limiter.hand_on()


class FairLimiter:
    """At most ``capacity`` slots held at once; give each target its own :meth:`share`."""

    def __init__(self, capacity: int, *, half_life: float = HALF_LIFE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.tau = half_life / math.log(2)
        self.clock = clock
        #: Slots nobody holds; negative after the capacity shrank below what is held.
        self._free = capacity
        #: (key, arrival, future) of every waiting acquisition; cancelled ones are dropped when they surface.
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._anonymous = Share(self)

    def share(self) -> Share:
        """A new target's share (no usage yet)."""
        return Share(self)

    def locked(self) -> bool:
        """True when an acquisition would wait."""
        return self._free <= 0

    async def acquire(self) -> None:
        """Hold a slot outside any target (usage charged to no target that polls)."""
        await self._anonymous.acquire()

    def release(self) -> None:
        """Give back a slot taken with :meth:`acquire`."""
        self._anonymous.release()

    def resize(self, capacity: int) -> None:
        """Change the capacity in place: holders keep their slots, and waiters get the new ones at once."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._free += capacity - self.capacity
        self.capacity = capacity
        while self._free > 0 and self._wake_one():
            self._free -= 1

    async def acquire_for(self, share: Share) -> None:
        # Nobody waits while a slot is free (hand_on gives a freed slot to a waiter before freeing it).
        if self._free > 0:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (share.key, next(self._arrivals), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.hand_on()  # the slot arrived just as this wait was cancelled: it goes to the next one
            raise

    def hand_on(self) -> None:
        """A slot was given back: to the waiter of least usage, else free (or gone, when the capacity shrank
        below what is held)."""
        if self._free < 0 or not self._wake_one():
            self._free += 1

    def _wake_one(self) -> bool:
        while self._waiters:
            future = heapq.heappop(self._waiters)[2]
            if not future.done():
                future.set_result(None)
                return True
        return False
