"""Pure, bounded trackers that turn successive polls into facts: job ages, stalls, new finished jobs.

No I/O and no clock of their own: every method takes ``now`` (seconds), which keeps them testable with
simulated time and makes stall detection deterministic.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from comfywatch.parse.queue import QueueSnapshot

__all__ = ["PollRead", "QueueTracker", "QueueView", "QuietQueue", "SeenSet"]


@dataclass(frozen=True, slots=True)
class QueueView:
    running: int
    pending: int
    running_prompt_id: str | None
    running_seconds: float
    oldest_pending_seconds: float
    stalled: bool
    worker_not_consuming: bool


class QueueTracker:
    """Follows the queue across polls.

    * The age of the running job is measured from the last poll that did *not* see it running: the earliest
      moment it can have started (0.3.64's queue carries no timestamps). Counting from the first poll that
      saw it instead would report a stall up to two intervals after ``stall_after``; this way it is at most
      one interval late (and at most one interval early). Newer servers and Comfy Cloud send
      ``create_time``, used for pending items.
    * **Stalled**: the same prompt has been running longer than ``stall_after`` with no sign of progress
      (a WebSocket progress event for it, reported through :meth:`progress`).
    * **Worker not consuming**: pending > 0 with nothing running for ``idle_polls`` consecutive polls.
    """

    def __init__(self, stall_after: float, idle_polls: int) -> None:
        self.stall_after = stall_after
        self.idle_polls = idle_polls
        self._running_id: str | None = None
        self._running_since = 0.0
        self._last_progress = 0.0
        self._pending_seen: dict[str, float] = {}
        self._idle_streak = 0
        self._last_poll: float | None = None

    def progress(self, prompt_id: str | None, now: float) -> None:
        """A progress/executing event arrived for *prompt_id* (or for an unknown one, when None)."""
        if prompt_id is None or prompt_id == self._running_id:
            self._last_progress = now

    def reset(self) -> None:
        """Forget everything (the server restarted: its queue is gone)."""
        self._running_id = None
        self._pending_seen.clear()
        self._idle_streak = 0
        self._last_poll = None

    def observe(self, snapshot: QueueSnapshot, now: float, clock_offset: float = 0.0) -> QueueView:
        """Update from one poll at local time *now*.

        *clock_offset* is the server's clock minus ours (from its Date header): ``create_time`` values are the
        server's wall clock, and a server an hour behind must not make a fresh job look an hour old.
        """
        running = snapshot.running[0] if snapshot.running else None
        if running is None:
            self._running_id = None
        elif running.prompt_id != self._running_id:
            self._running_id = running.prompt_id
            # Earliest possible start, unless polls are so far apart (a gap over half of stall_after) that
            # this would call a job stalled on first sight.
            last = self._last_poll
            self._running_since = last if last is not None and now - last <= self.stall_after / 2 else now
            self._last_progress = self._running_since
        running_seconds = now - self._running_since if running is not None else 0.0

        present = {item.prompt_id for item in snapshot.pending}
        for stale in [pid for pid in self._pending_seen if pid not in present]:
            del self._pending_seen[stale]
        oldest = 0.0
        for item in snapshot.pending:
            first = self._pending_seen.setdefault(item.prompt_id, now)
            if item.create_time_ms is not None:
                first = min(first, item.create_time_ms / 1000.0 - clock_offset)
            oldest = max(oldest, now - first)

        if snapshot.pending_count and not snapshot.running_count:
            self._idle_streak += 1
        else:
            self._idle_streak = 0
        quiet_since = max(self._running_since, self._last_progress)
        stalled = running is not None and now - quiet_since >= self.stall_after
        self._last_poll = now
        return QueueView(
            running=snapshot.running_count,
            pending=snapshot.pending_count,
            running_prompt_id=self._running_id,
            running_seconds=max(0.0, running_seconds),
            oldest_pending_seconds=max(0.0, oldest),
            stalled=stalled,
            worker_not_consuming=self._idle_streak >= self.idle_polls,
        )


class SeenSet:
    """Remembers the most recent *capacity* ids, to count each finished job exactly once.

    ComfyUI's history is read through a window of the newest N entries, so an id can only be seen again
    while it is among the N newest; keeping more than the largest window is enough, and memory stays bounded.
    """

    def __init__(self, capacity: int = 8192) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.primed = False

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item: str) -> bool:
        return item in self._ids

    def add_all(self, ids: Iterable[str]) -> None:
        for item in ids:
            self._ids[item] = None
            self._ids.move_to_end(item)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def new_ids(self, ids: Sequence[str]) -> list[str]:
        """Ids not seen before, in the given order; they are remembered from now on.

        The first call only primes the set: jobs that finished before comfywatch started are not counted,
        as a Prometheus counter starts at the process's start.
        """
        if not self.primed:
            self.primed = True
            self.add_all(ids)
            return []
        fresh: list[str] = []
        taken: set[str] = set()
        for item in ids:
            # An id listed twice in one page (paginated /api/jobs can shift under us) still counts once.
            if item not in self._ids and item not in taken:
                taken.add(item)
                fresh.append(item)
        self.add_all(ids)
        return fresh


class PollRead(Enum):
    """What a poll asks the server (:meth:`QuietQueue.next_read`)."""

    #: Nothing: the last full read still holds.
    NOTHING = "nothing"
    #: ``/system_stats`` alone: liveness and memory figures, while the queue is known not to have changed.
    SYSTEM = "system"
    #: ``/system_stats``, ``/queue`` and ``/history``.
    FULL = "full"


class QuietQueue:
    """What a poll must read: whether the queue can have changed since the last full read.

    ComfyUI broadcasts a ``status`` frame to every WebSocket on each queue change (a prompt queued, started,
    finished, deleted or interrupted), so while the monitoring socket stays connected, no
    new ``status`` frame since a full read means that read is still the queue, and no job finished since.
    The poll then re-observes the last snapshot (ages, stalls and the idle streak still advance) and asks
    nothing: the server was up at the full read and the open socket vouches for it (``Daemon._next_read``).

    After ``max_skips`` such polls in a row one reads again: ``/system_stats`` alone (fresh memory figures, and a
    failure only HTTP sees) on a socket that has forwarded a frame (ComfyUI sends ``status`` first on every new
    socket; the monitor pings it every 20 s and closes it when no pong comes back, so it stays open only while
    frames get through); ``/queue`` and ``/history`` too on a socket that never did (a buffering proxy: open but
    silent), and at least every ``max_refreshes + 1`` such reads whatever the socket, in case the server stopped
    broadcasting.

    The mark is the (connection, frame count) pair read *before* the full read started: a frame arriving
    while it runs makes the next poll a full one again.
    """

    def __init__(self, max_skips: int, max_refreshes: int = 0, stagger: int = 0) -> None:
        self.max_skips = max_skips
        self.max_refreshes = max_refreshes
        self._mark: tuple[int, int] | None = None
        #: The socket of the last mark: the first full read on a new socket starts the counts at the stagger.
        self._socket = 0
        self._skips = 0
        self._refreshes = 0
        #: Skips and ``/system_stats`` reads taken as already made at the first mark on each socket (*stagger*
        #: spread over both counts): a fleet whose sockets opened together (a start, a proxy restart) would
        #: otherwise make all its reads in the same polls.
        self._stagger_skips = stagger % (max_skips + 1)
        self._stagger_refreshes = stagger // (max_skips + 1) % (max_refreshes + 1)

    def mark(self, connection: int, frames: int) -> None:
        """A full read that started at (*connection*, *frames*) succeeded (*connection* 0: no socket yet)."""
        self._mark = (connection, frames)
        if connection and connection != self._socket:
            self._skips, self._refreshes = self._stagger_skips, self._stagger_refreshes
        else:
            self._skips = self._refreshes = 0
        self._socket = connection

    def forget(self) -> None:
        """A full read failed: the next poll reads again."""
        self._mark = None

    def next_read(self, connected: bool, connection: int, frames: int, forwarded: bool) -> PollRead:
        """What this poll reads (counted as taken). *forwarded*: the open socket has delivered a frame, and a read of
        ``/system_stats`` alone would do."""
        if not connected or self._mark != (connection, frames):
            return PollRead.FULL
        if self._skips < self.max_skips:
            self._skips += 1
            return PollRead.NOTHING
        if forwarded and self._refreshes < self.max_refreshes:
            self._refreshes += 1
            self._skips = 0
            return PollRead.SYSTEM
        return PollRead.FULL
