"""Bounded recent history of a target, for the status page: series, job outcomes per minute, events.

Pure and clock-free like :mod:`comfywatch.state.trackers`: every method takes ``now`` (wall-clock seconds).
Each container has a fixed capacity, so a target's history costs the same after a day as after an hour
(:func:`series_bytes` says how much).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import compress

from comfywatch.errors import Reason

__all__ = [
    "EVENTS_PER_TARGET",
    "JOB_WINDOW_MINUTES",
    "STEP_SLACK",
    "Event",
    "EventLog",
    "JobWindow",
    "SeriesTable",
    "series_bytes",
]

#: Events kept per target (state changes, failures); older ones drop off.
EVENTS_PER_TARGET = 30
#: Minutes of finished-job counts kept per target.
JOB_WINDOW_MINUTES = 60
#: The part of a step a point may come early: polls every ``step`` seconds end a few milliseconds early or late,
#: and a point dropped for coming 3 ms early would leave a gap of two steps in the chart.
STEP_SLACK = 0.05
#: Bytes one point costs: its time (whole milliseconds after the table's base, unsigned 32-bit) and one
#: single-precision float per column.
_TIME_BYTES = 4
_VALUE_BYTES = 4
#: The most milliseconds a point's time can lie after the base (49.7 days): a ring that would span more drops
#: its oldest points.
_MAX_OFFSET_MS = 2**32 - 1


def series_bytes(points: int, columns: int) -> int:
    """What a full :class:`SeriesTable` of *points* × *columns* holds in its arrays."""
    return points * (_TIME_BYTES + _VALUE_BYTES * columns)


class SeriesTable:
    """A ring of at most *capacity* points, each a timestamp and one value per column (NaN: unknown).

    Points closer than *step* seconds (less :data:`STEP_SLACK` of it) to the previous one are dropped unless
    *always* is given (an ``up`` change must show even when it flaps between two samples); the table then spans
    ``capacity × step × (1 - STEP_SLACK)`` seconds at least, and 49.7 days at most (the oldest points go).

    A daemon keeps a table per target, ten thousand of them at the most, so a point is packed: its time as whole
    milliseconds after the table's base (the time of its first point, moved up when the newest would lie 2^32
    milliseconds after it), its values as single-precision floats (plenty for a chart), every value in one
    array, row after row.
    """

    __slots__ = ("_base", "_next", "_times", "_values", "capacity", "columns", "step")

    def __init__(self, columns: Sequence[str], capacity: int, step: float) -> None:
        self.columns = tuple(columns)
        self.capacity = capacity
        self.step = step
        self._base = 0.0
        # Grown to capacity as points come, then overwritten in place: an idle daemon's targets cost little.
        self._times = array("I")
        self._values = array("f")
        self._next = 0

    def __len__(self) -> int:
        return len(self._times)

    def _time(self, index: int) -> float:
        return self._base + self._times[index] / 1000.0

    def _offset(self, now: float) -> int:
        """*now* in whole milliseconds after the base (negative before it): the table's own clock, in which a
        point comes before, with or after the last one."""
        return round((now - self._base) * 1000.0)

    @property
    def _last(self) -> int:
        return (self._next - 1) % len(self._times)

    @property
    def last_time(self) -> float | None:
        if not self._times:
            return None
        return self._time(self._last)

    def due(self, now: float) -> bool:
        if not self._times:
            return True
        since = self._offset(now) - self._times[self._last]
        # A clock that stepped back is due at once (append drops what now lies in the future): waiting for it to
        # catch up would leave a gap.
        return since < 0 or since >= self.step * (1.0 - STEP_SLACK) * 1000.0

    def append(self, now: float, values: Sequence[float | None], *, always: bool = False) -> bool:
        """Add a point at *now* unless the previous one is too recent (:meth:`due`) and not *always*; True if added."""
        if self.capacity <= 0 or (not always and not self.due(now)):
            return False
        row = array("f", [math.nan if value is None else float(value) for value in values])
        if len(row) != len(self.columns):
            raise ValueError(f"{len(row)} values for the {len(self.columns)} columns {self.columns}")
        present = offset = self._offset(now) if self._times else 0
        if self._times and present < self._times[self._last]:
            # The clock stepped back: the points now in the future would sit ahead of every point to come (the
            # charts would draw the present behind them).
            offset -= self._keep(lambda kept: kept <= present)
        elif present > _MAX_OFFSET_MS:
            offset -= self._keep(lambda kept: present - kept <= _MAX_OFFSET_MS)
        if not self._times:
            self._base, offset = now, 0
        if len(self._times) < self.capacity:
            self._times.append(offset)
            self._values.extend(row)
            self._next = len(self._times) % self.capacity
            if not self._next:
                # Full: give back the room append keeps for growth (up to a sixteenth), which a ring never uses.
                self._times = array("I", self._times)
                self._values = array("f", self._values)
        else:
            width = len(self.columns)
            self._times[self._next] = offset
            self._values[self._next * width : (self._next + 1) * width] = row
            self._next = (self._next + 1) % self.capacity
        return True

    def _keep(self, wanted: Callable[[int], bool]) -> int:
        """Rebuild the ring, oldest first and based on the oldest, with only the points whose offset is *wanted*;
        the milliseconds the base moved up. Rare (a clock stepping back, a ring spanning weeks), so simple."""
        width = len(self.columns)
        kept = [i for i in self._order() if wanted(self._times[i])]
        first = self._times[kept[0]] if kept else 0
        values: list[float] = []
        for i in kept:
            values.extend(self._values[i * width : (i + 1) * width])
        self._base += first / 1000.0
        self._times = array("I", [self._times[i] - first for i in kept])
        self._values = array("f", values)
        self._next = len(kept) % self.capacity
        return first

    def _order(self) -> Iterator[int]:
        size = len(self._times)
        start = self._next if size == self.capacity else 0
        return ((start + offset) % size for offset in range(size))

    def column(self, name: str, since: float | None = None) -> list[tuple[float, float | None]]:
        """(timestamp, value) pairs of column *name*, oldest first; None where the value was unknown. Times come
        back to the millisecond."""
        width = len(self.columns)
        position = self.columns.index(name)
        values = self._values
        pairs = []
        for i in self._order():
            time = self._time(i)
            if since is None or time >= since:
                value = values[i * width + position]
                pairs.append((time, None if math.isnan(value) else value))
        return pairs


class JobWindow:
    """Jobs finished in each of the last :data:`JOB_WINDOW_MINUTES` minutes, failures by reason.

    A slot per minute of the hour in flat arrays (a thousand targets each keep an hour): the slot of minute *m* is
    ``m % JOB_WINDOW_MINUTES`` and is cleared when a later minute takes it over.
    """

    __slots__ = ("_failed", "_finished", "_minute", "_newest")

    def __init__(self) -> None:
        self._minute = array("q", [-1]) * JOB_WINDOW_MINUTES
        self._finished = array("I", [0]) * JOB_WINDOW_MINUTES
        #: Per reason that has happened at all: failures per slot.
        self._failed: dict[Reason, array[int]] = {}
        self._newest = -1

    def add(self, now: float, failure: Reason | None) -> None:
        # A clock that stepped back counts in the newest minute: a slot never goes back in time.
        minute = max(int(now // 60), self._newest)
        self._newest = minute
        slot = minute % JOB_WINDOW_MINUTES
        if self._minute[slot] != minute:
            self._minute[slot] = minute
            self._finished[slot] = 0
            for counts in self._failed.values():
                counts[slot] = 0
        self._finished[slot] += 1
        if failure is not None:
            if failure not in self._failed:
                self._failed[failure] = array("I", [0]) * JOB_WINDOW_MINUTES
            self._failed[failure][slot] += 1

    def totals(self, now: float) -> tuple[int, dict[Reason, int]]:
        """Jobs finished in the last hour (the current minute included), and failures among them by reason."""
        first = int(now // 60) - JOB_WINDOW_MINUTES + 1
        if self._newest < first:
            return 0, {}
        within = [minute >= first for minute in self._minute]
        failures = {reason: total for reason, counts in self._failed.items()
                    if (total := sum(compress(counts, within)))}
        return sum(compress(self._finished, within)), failures


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a target: ``kind`` is one of down, up, failure, recovered, job_failed, reload,
    reload_failed. ``reason`` is set for failures; ``source`` names the check (``canary`` for a canary) or
    ``job``. Never holds a server's own words, only comfywatch's."""

    time: float
    kind: str
    source: str = ""
    reason: Reason | None = None


class EventLog:
    """The last *capacity* events, newest last. Repeats of the same (kind, source, reason) within
    *merge_within* seconds are counted on the last event instead of pushing older ones out (a failing job
    per second must not drown the state changes)."""

    __slots__ = ("_events", "capacity", "merge_within")

    def __init__(self, capacity: int = EVENTS_PER_TARGET, merge_within: float = 600.0) -> None:
        if capacity < 0:
            raise ValueError("capacity must not be negative")
        # A list, not a deque: an empty deque takes a 64-slot block (760 bytes) in every target.
        self._events: list[tuple[Event, int]] = []
        self.capacity = capacity
        self.merge_within = merge_within

    def add(self, event: Event) -> None:
        if self._events:
            last, repeats = self._events[-1]
            if ((last.kind, last.source, last.reason) == (event.kind, event.source, event.reason)
                    and 0 <= event.time - last.time <= self.merge_within):
                self._events[-1] = (Event(event.time, last.kind, last.source, last.reason), repeats + 1)
                return
        self._events.append((event, 1))
        if len(self._events) > self.capacity:
            del self._events[:len(self._events) - self.capacity]

    def recent(self) -> list[tuple[Event, int]]:
        """(event, times it happened in a row) pairs, newest first."""
        return list(reversed(self._events))
