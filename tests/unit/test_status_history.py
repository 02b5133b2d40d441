"""The status page's bounded history: series rings, the jobs-per-minute window, the event log, and the hooks of
``TargetState`` that feed them."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.errors import Reason
from comfywatch.state import (
    CANARY_HISTORY_COLUMNS,
    CLOUD_HISTORY_COLUMNS,
    LOCAL_HISTORY_COLUMNS,
    TargetState,
    history,
)
from comfywatch.state.history import (
    EVENTS_PER_TARGET,
    JOB_WINDOW_MINUTES,
    STEP_SLACK,
    Event,
    EventLog,
    JobWindow,
    SeriesTable,
    series_bytes,
)

T0 = 1_700_000_000.0  # a minute boundary is not assumed anywhere: JobWindow tests place their own


# ----------------------------------------------------------------------------------------------------------
# SeriesTable


def test_points_closer_than_the_step_are_dropped() -> None:
    table = SeriesTable(("v",), capacity=10, step=20.0)
    assert table.append(T0, (1.0,))
    assert not table.append(T0 + 10.0, (2.0,))
    assert not table.append(T0 + 20.0 * (1 - STEP_SLACK) - 0.01, (2.0,))
    assert table.append(T0 + 20.0, (3.0,))
    assert not table.append(T0 + 25.0, (4.0,))
    assert table.append(T0 + 41.0, (5.0,))
    assert table.column("v") == [(T0, 1.0), (T0 + 20.0, 3.0), (T0 + 41.0, 5.0)]
    assert table.last_time == T0 + 41.0


def test_a_point_a_little_early_still_counts() -> None:
    """Polls every step end a few milliseconds early or late: each of them is a point, none is dropped."""
    table = SeriesTable(("v",), capacity=100, step=15.0)
    ends = [T0 + 15.0 * i + (0.003 if i % 2 else -0.003) for i in range(50)]
    assert all(table.append(end, (1.0,)) for end in ends)
    # A poll every second with a 15 s step: a point every 15th poll, not sooner.
    every_second = SeriesTable(("v",), capacity=100, step=15.0)
    kept = [i for i in range(120) if every_second.append(T0 + i, (1.0,))]
    assert kept == list(range(0, 120, 15))


def test_always_adds_a_point_inside_the_step() -> None:
    """An ``up`` change must show even when it comes between two steps."""
    table = SeriesTable(("up",), capacity=10, step=15.0)
    table.append(T0, (1.0,))
    assert table.append(T0 + 1.0, (0.0,), always=True)
    assert table.append(T0 + 2.0, (1.0,), always=True)
    assert table.column("up") == [(T0, 1.0), (T0 + 1.0, 0.0), (T0 + 2.0, 1.0)]
    # The step counts from the newest point, however it came.
    assert not table.due(T0 + 16.0)
    assert table.due(T0 + 17.0)


def test_wrap_around_keeps_the_newest_points_in_order() -> None:
    table = SeriesTable(("a", "b"), capacity=4, step=1.0)
    for i in range(11):
        table.append(T0 + i, (float(i), float(-i)))
    assert len(table) == 4
    assert [t for t, _ in table.column("a")] == [T0 + 7, T0 + 8, T0 + 9, T0 + 10]
    assert table.column("a") == [(T0 + i, float(i)) for i in range(7, 11)]
    assert table.column("b") == [(T0 + i, float(-i)) for i in range(7, 11)]
    assert table.last_time == T0 + 10
    assert table.column("a", since=T0 + 9) == [(T0 + 9, 9.0), (T0 + 10, 10.0)]
    assert table.column("b", since=T0 + 10.5) == []


@given(capacity=st.integers(1, 12), count=st.integers(0, 40))
def test_any_number_of_points_leaves_the_last_capacity_ones(capacity: int, count: int) -> None:
    table = SeriesTable(("v",), capacity=capacity, step=0.0)
    for i in range(count):
        assert table.append(T0 + i, (float(i),))
    kept = list(range(max(0, count - capacity), count))
    assert table.column("v") == [(T0 + i, float(i)) for i in kept]
    assert table.last_time == (T0 + count - 1 if count else None)


def test_unknown_values_come_back_as_none() -> None:
    table = SeriesTable(("a", "b"), capacity=3, step=0.0)
    table.append(T0, (None, 2.5))
    table.append(T0 + 1, (math.nan, None))
    assert table.column("a") == [(T0, None), (T0 + 1, None)]
    assert table.column("b") == [(T0, 2.5), (T0 + 1, None)]


def test_values_are_single_precision() -> None:
    """Half the memory of doubles, plenty for a chart: a byte count of 24 GB keeps its first 7 digits."""
    table = SeriesTable(("bytes",), capacity=1, step=0.0)
    table.append(T0, (24_000_000_123.0,))
    ((_, value),) = table.column("bytes")
    assert value is not None and value != 24_000_000_123.0
    assert value == pytest.approx(24_000_000_123.0, rel=1e-7)


def test_capacity_zero_keeps_nothing() -> None:
    table = SeriesTable(("v",), capacity=0, step=0.0)
    assert not table.append(T0, (1.0,))
    assert not table.append(T0 + 1, (1.0,), always=True)
    assert len(table) == 0
    assert table.column("v") == []
    assert table.last_time is None


def test_series_bytes_of_the_default_tables() -> None:
    """What docs/status-page.md quotes: 256 points of a local target (6 columns), of a canary (6), of a Comfy Cloud
    account (5); 4096 points of a local target and its canary."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "status-page.md").read_text(encoding="utf-8")
    for row, columns in (("a local target", LOCAL_HISTORY_COLUMNS), ("each canary", CANARY_HISTORY_COLUMNS),
                         ("a Comfy Cloud account", CLOUD_HISTORY_COLUMNS)):
        assert f"| {row} | 256 × (4 + {len(columns)} × 4) = {series_bytes(256, len(columns)):,} |" in doc
    assert series_bytes(256, len(LOCAL_HISTORY_COLUMNS)) == 7168
    assert series_bytes(256, len(CLOUD_HISTORY_COLUMNS)) == 6144
    both = series_bytes(4096, len(LOCAL_HISTORY_COLUMNS)) + series_bytes(4096, len(CANARY_HISTORY_COLUMNS))
    assert f"series take {both:,} bytes" in doc


@pytest.mark.parametrize("columns", [LOCAL_HISTORY_COLUMNS, CLOUD_HISTORY_COLUMNS])
def test_a_full_table_holds_what_series_bytes_says(columns: tuple[str, ...]) -> None:
    """Ten thousand targets keep a table each: a full one allocates its points' bytes and a few object headers,
    not the room to grow that ``append`` leaves in an array."""
    if tracemalloc.is_tracing():
        pytest.skip("tracemalloc already traces this process: older allocations would count")
    tracemalloc.start()
    try:
        table = SeriesTable(columns, capacity=256, step=0.0)
        for i in range(256 + 10):
            table.append(T0 + 15.0 * i, [float(i)] * len(columns))
        # Only what history.py's own lines allocated: other allocations of the process meanwhile do not count.
        traces = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, history.__file__)])
    finally:
        tracemalloc.stop()
    held = sum(stat.size for stat in traces.statistics("filename"))
    assert len(table) == 256
    assert series_bytes(256, len(columns)) <= held <= series_bytes(256, len(columns)) + 400


def test_times_come_back_to_the_millisecond() -> None:
    table = SeriesTable(("v",), capacity=4, step=0.0)
    table.append(T0 + 0.1234, [1.0])
    table.append(T0 + 15.0006, [2.0])
    # The first point is the base, kept whole; the second lies 14,877 ms (of 14,877.2) after it.
    assert table.column("v") == [(T0 + 0.1234, 1.0), (pytest.approx(T0 + 15.0004, abs=1e-6), 2.0)]
    assert table.last_time == pytest.approx(T0 + 15.0004, abs=1e-6)


def test_a_ring_spanning_more_than_its_offsets_count_drops_its_oldest_points() -> None:
    """A point's time is kept as milliseconds after the ring's base in 32 bits (49.7 days): a ring of few points
    far apart moves its base up, dropping the points that would lie further back than that."""
    day = 86_400.0
    table = SeriesTable(("v",), capacity=8, step=0.0)
    for i, offset in enumerate((0.0, 20 * day, 40 * day, 60 * day, 100 * day)):
        table.append(T0 + offset, [float(i)])
    assert table.column("v") == [(T0 + 60 * day, 3.0), (T0 + 100 * day, 4.0)]
    table.append(T0 + 101 * day, [5.0])
    assert table.column("v")[-1] == (T0 + 101 * day, 5.0)


def test_a_ring_running_for_months_keeps_its_points() -> None:
    """Its base moves up whenever the newest point would lie too far after it: the ring loses nothing by it."""
    day = 86_400.0
    table = SeriesTable(("v",), capacity=4, step=0.0)
    for i in range(20):
        table.append(T0 + 10 * day * i, [float(i)])
    assert table.column("v") == [(T0 + 10 * day * i, float(i)) for i in range(16, 20)]


def test_a_point_as_far_after_the_base_as_offsets_reach_is_kept() -> None:
    """The newest point lies 2^32 - 1 ms after the one kept before it: both stay, the offset fits exactly."""
    table = SeriesTable(("v",), capacity=4, step=0.0)
    table.append(T0, [0.0])
    table.append(T0 + 1.0, [1.0])
    assert table.append(T0 + 1.0 + (2**32 - 1) / 1000.0, [2.0])
    assert [value for _, value in table.column("v")] == [1.0, 2.0]


@given(steps=st.lists(st.tuples(st.sampled_from([-3600.0, -0.0004, 0.0003, 1.0, 15.0, 20 * 86_400.0]),
                                st.booleans()), max_size=60),
       capacity=st.integers(1, 6))
def test_any_clock_keeps_the_ring_in_order_and_ends_with_the_newest_point(
    steps: list[tuple[float, bool]], capacity: int
) -> None:
    """Whatever the clock does (steps back, jumps of weeks, points within a millisecond), the kept points are in
    time order, within the newest point's 49.7 days, at most *capacity*, and the last one is the newest."""
    table = SeriesTable(("v",), capacity=capacity, step=15.0)
    now = T0
    for index, (step, always) in enumerate(steps):
        now += step
        added = table.append(now, [float(index)], always=always)
        times = [time for time, _ in table.column("v")]
        assert len(times) <= capacity
        assert times == sorted(times)
        assert times[-1] - times[0] <= (2**32 - 1) / 1000.0 + 0.001
        if added:
            assert table.column("v")[-1] == (pytest.approx(now, abs=0.001), float(index))


def test_points_within_a_millisecond_are_both_kept() -> None:
    """Two points closer than the table's millisecond (an ``up`` change right after a poll's point) keep their
    order: the second is not taken for a clock stepping back."""
    table = SeriesTable(("up",), capacity=4, step=15.0)
    assert table.append(T0, [1.0])
    assert table.append(T0 + 15.0006, [1.0])  # kept as T0 + 15.001
    assert table.append(T0 + 15.0008, [0.0], always=True)
    assert [value for _, value in table.column("up")] == [1.0, 1.0, 0.0]
    assert not table.due(T0 + 16.0)


def test_a_clock_stepping_back_before_every_point_starts_over() -> None:
    table = SeriesTable(("v",), capacity=4, step=15.0)
    for i in range(6):
        table.append(T0 + 15.0 * i, [float(i)])
    assert table.append(T0 - 1000.0, [-1.0])
    assert table.column("v") == [(T0 - 1000.0, -1.0)]
    assert table.append(T0 - 985.0, [-2.0])
    assert table.column("v") == [(T0 - 1000.0, -1.0), (T0 - 985.0, -2.0)]


def test_a_row_of_the_wrong_width_is_refused() -> None:
    table = SeriesTable(("a", "b"), capacity=4, step=0.0)
    with pytest.raises(ValueError, match="2 columns"):
        table.append(T0, [1.0])
    assert len(table) == 0


# ----------------------------------------------------------------------------------------------------------
# JobWindow


def _minute(n: int) -> float:
    """A moment 30 s into minute *n* of the test's clock."""
    return 60.0 * (28_000_000 + n) + 30.0


def test_totals_count_the_last_sixty_minutes_with_failures_by_reason() -> None:
    window = JobWindow()
    window.add(_minute(0), None)
    window.add(_minute(0), Reason.OOM)
    window.add(_minute(10), Reason.OOM)
    window.add(_minute(59), Reason.EXECUTION_ERROR)
    window.add(_minute(59), None)
    assert window.totals(_minute(59)) == (5, {Reason.OOM: 2, Reason.EXECUTION_ERROR: 1})
    # One minute later minute 0 is out of the hour.
    assert window.totals(_minute(60)) == (3, {Reason.OOM: 1, Reason.EXECUTION_ERROR: 1})
    assert window.totals(_minute(200)) == (0, {})


def test_old_minutes_drop_out_of_memory() -> None:
    window = JobWindow()
    for minute in range(3 * JOB_WINDOW_MINUTES):
        window.add(_minute(minute), Reason.LOST if minute < 2 * JOB_WINDOW_MINUTES else None)
        window.add(_minute(minute), None)
    last = 3 * JOB_WINDOW_MINUTES - 1
    # Only the last hour's minutes are left: two jobs each, no failure (the lost ones are two hours old).
    assert window.totals(_minute(last)) == (2 * JOB_WINDOW_MINUTES, {})
    # A job after a quiet hour and a half finds none of the old counts in its minute's slot.
    window.add(_minute(last + 90), None)
    assert window.totals(_minute(last + 90)) == (1, {})


def test_a_clock_stepping_back_counts_in_the_newest_minute() -> None:
    window = JobWindow()
    window.add(_minute(5), None)
    window.add(_minute(3), Reason.OOM)  # NTP stepped the clock back two minutes
    assert window.totals(_minute(5)) == (2, {Reason.OOM: 1})
    window.add(_minute(6), None)
    assert window.totals(_minute(6)) == (3, {Reason.OOM: 1})
    # Both went into minute 5, which leaves the hour with it.
    assert window.totals(_minute(5 + JOB_WINDOW_MINUTES)) == (1, {})


# ----------------------------------------------------------------------------------------------------------
# EventLog


def test_repeats_within_merge_within_are_counted_on_the_last_event() -> None:
    log = EventLog(merge_within=600.0)
    log.add(Event(T0, "job_failed", "job", Reason.OOM))
    log.add(Event(T0 + 300, "job_failed", "job", Reason.OOM))
    log.add(Event(T0 + 900, "job_failed", "job", Reason.OOM))  # 600 s after the merged event's newest time
    assert [(e.time, n) for e, n in log.recent()] == [(T0 + 900, 3)]
    log.add(Event(T0 + 1600, "job_failed", "job", Reason.OOM))  # 700 s later: a new event
    assert [(e.time, n) for e, n in log.recent()] == [(T0 + 1600, 1), (T0 + 900, 3)]


def test_another_kind_source_or_reason_is_another_event() -> None:
    log = EventLog()
    for event in (Event(T0, "job_failed", "job", Reason.OOM), Event(T0 + 1, "job_failed", "job", Reason.LOST),
                  Event(T0 + 2, "failure", "queue", Reason.LOST), Event(T0 + 3, "failure", "jobs", Reason.LOST),
                  Event(T0 + 4, "failure", "jobs", Reason.LOST)):
        log.add(event)
    assert [(e.kind, e.source, e.reason, n) for e, n in log.recent()] == [
        ("failure", "jobs", Reason.LOST, 2), ("failure", "queue", Reason.LOST, 1),
        ("job_failed", "job", Reason.LOST, 1), ("job_failed", "job", Reason.OOM, 1)]


def test_a_repeat_from_before_the_last_event_is_not_merged() -> None:
    """The clock stepped back: merging would move the event's time backwards."""
    log = EventLog()
    log.add(Event(T0, "down", "", Reason.CONNECT))
    log.add(Event(T0 - 5, "down", "", Reason.CONNECT))
    assert [n for _, n in log.recent()] == [1, 1]


def test_the_log_keeps_the_newest_events_up_to_its_capacity() -> None:
    log = EventLog()
    for i in range(EVENTS_PER_TARGET + 12):
        log.add(Event(T0 + i, "up" if i % 2 else "down", "", None if i % 2 else Reason.TIMEOUT))
    recent = log.recent()
    assert len(recent) == EVENTS_PER_TARGET
    assert [e.time for e, _ in recent] == [T0 + i for i in range(EVENTS_PER_TARGET + 11, 11, -1)]
    small = EventLog(capacity=2)
    for i in range(5):
        small.add(Event(T0 + i, "reload"  if i % 2 else "reload_failed"))
    assert [e.time for e, _ in small.recent()] == [T0 + 4, T0 + 3]


def test_a_log_of_no_capacity_keeps_nothing_and_a_negative_one_is_refused() -> None:
    none = EventLog(capacity=0)
    for i in range(3):
        none.add(Event(T0 + i, "down", "system", Reason.TIMEOUT))
    assert none.recent() == []
    with pytest.raises(ValueError, match="negative"):
        EventLog(capacity=-1)


# ----------------------------------------------------------------------------------------------------------
# TargetState's hooks


def _state(kind: str = "local", points: int = 16, step: float = 15.0) -> TargetState:
    return TargetState("t", kind, "http://127.0.0.1:8188", endpoints=["system_stats"], history_points=points,
                       history_step=step)


def test_set_up_records_down_and_up_events_but_not_the_first_up() -> None:
    state = _state()
    state.set_up(True, now=T0)
    assert state.events.recent() == []
    state.set_up(True, now=T0 + 1)  # no change: nothing
    state.set_up(False, Reason.CONNECT, now=T0 + 2)
    state.set_up(False, Reason.CONNECT, now=T0 + 3)  # still down for the same reason: nothing
    state.set_up(False, Reason.TIMEOUT, now=T0 + 4)  # down for another reason: said
    state.set_up(True, now=T0 + 5)
    assert [(e.time, e.kind, e.reason) for e, _ in state.events.recent()] == [
        (T0 + 5, "up", None), (T0 + 4, "down", Reason.TIMEOUT), (T0 + 2, "down", Reason.CONNECT)]
    assert state.last_failure == (T0 + 4, "system", Reason.TIMEOUT)
    # Each change of up added a point at once, though 15 s apart is the step.
    assert state.history.column("up") == [(T0, 1.0), (T0 + 2, 0.0), (T0 + 4, 0.0), (T0 + 5, 1.0)]


def test_a_first_poll_that_finds_the_server_down_is_an_event() -> None:
    state = _state()
    state.set_up(False, Reason.CONNECT, now=T0)
    assert [(e.kind, e.reason) for e, _ in state.events.recent()] == [("down", Reason.CONNECT)]


def test_count_finished_job_feeds_the_hour_and_the_events() -> None:
    state = _state()
    state.count_finished_job(None, 1.0, now=T0)
    state.count_finished_job(Reason.OOM, 2.0, now=T0 + 1)
    state.count_finished_job(Reason.OOM, None, now=T0 + 2)
    assert state.recent_jobs.totals(T0 + 2) == (3, {Reason.OOM: 2})
    assert state.jobs_total == 3
    assert state.last_failure == (T0 + 2, "job", Reason.OOM)
    assert [(e.kind, e.source, e.reason, n) for e, n in state.events.recent()] == [
        ("job_failed", "job", Reason.OOM, 2)]


def test_record_history_takes_one_point_per_step_with_the_poll_figures() -> None:
    state = _state(step=10.0)
    state.set_up(True, now=T0)
    state.last_latency = 0.25
    state.record_history(T0 + 5)  # inside the step: dropped
    state.record_history(T0 + 10)
    assert state.history.column("latency") == [(T0, None), (T0 + 10, 0.25)]
    assert state.history.column("vram_free") == [(T0, None), (T0 + 10, None)]  # no system_stats yet


def test_a_cloud_target_keeps_its_balance() -> None:
    state = _state("cloud", step=0.0)
    assert state.history.columns == CLOUD_HISTORY_COLUMNS
    assert state.cloud is not None
    state.cloud.balance_usd = 12.5
    state.set_up(True, now=T0)
    state.record_history(T0 + 1)
    # The point of the change of up has up alone: the poll has not read the rest yet.
    assert state.history.column("balance") == [(T0, None), (T0 + 1, 12.5)]


def test_history_points_zero_keeps_no_history() -> None:
    state = _state(points=0)
    state.set_up(True, now=T0)
    state.set_up(False, Reason.CONNECT, now=T0 + 1)
    state.record_history(T0 + 100)
    canary = state.canary("c")
    canary.success = 1.0
    canary.record_run(T0 + 2)
    assert len(state.history) == 0 and len(canary.history) == 0
    # The events and the hour's jobs are no chart: they stay (bounded on their own).
    assert len(state.events.recent()) == 1


def test_each_canary_run_is_a_point_whatever_the_step() -> None:
    state = _state(step=3600.0)
    canary = state.canary("c")
    for i, ok in enumerate((1.0, 0.0, 1.0)):
        canary.success = ok
        canary.phases = {"submit": 0.5, "total": 2.0 + i}
        canary.record_run(T0 + i)
    assert canary.last_run_ts == T0 + 2
    assert canary.history.column("ok") == [(T0, 1.0), (T0 + 1, 0.0), (T0 + 2, 1.0)]
    assert canary.history.column("total") == [(T0, 2.0), (T0 + 1, 3.0), (T0 + 2, 4.0)]
    assert canary.history.column("fetch") == [(T0, None), (T0 + 1, None), (T0 + 2, None)]


def test_a_clock_stepping_back_drops_only_the_points_now_in_the_future() -> None:
    """The points later than the stepped-back clock go (they would sit ahead of every point to come); the rest
    stay, in order, and the series goes on from now."""
    table = SeriesTable(("up",), 8, 15.0)
    for i in range(6):
        table.append(T0 + 15 * i, [1.0])
    assert table.append(T0 + 40, [0.0])  # back from T0 + 75 to T0 + 40: due at once
    assert table.column("up") == [(T0, 1.0), (T0 + 15, 1.0), (T0 + 30, 1.0), (T0 + 40, 0.0)]
    assert not table.append(T0 + 45, [1.0])  # and then a step apart again
    assert table.append(T0 + 55, [1.0])


def test_a_full_ring_keeps_its_order_across_a_step_back() -> None:
    table = SeriesTable(("v",), 4, 0.0)
    for i in range(10):
        table.append(T0 + i, [float(i)])
    table.append(T0 + 7.5, [-1.0])
    assert table.column("v") == [(T0 + 6, 6.0), (T0 + 7, 7.0), (T0 + 7.5, -1.0)]
    for i in range(3):
        table.append(T0 + 8 + i, [float(i)])
    assert [t for t, _ in table.column("v")] == [T0 + 7, T0 + 7.5, T0 + 8, T0 + 9, T0 + 10][-4:]


def test_a_canarys_runs_survive_a_small_step_back() -> None:
    """A canary's table keeps every run (step 0): a step back of a fraction of a second costs at most the run
    recorded in that fraction, not the table."""
    table = SeriesTable(("ok",), 256, 0.0)
    for i in range(100):
        table.append(T0 + 60 * i, [1.0], always=True)
    table.append(T0 + 60 * 99 - 0.2, [0.0], always=True)
    assert len(table) == 100
    assert table.column("ok")[-1] == (T0 + 60 * 99 - 0.2, 0.0)
