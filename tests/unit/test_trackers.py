"""Tests for comfywatch.state.trackers: queue ages, stalls and idle workers with an injected clock; SeenSet counting."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from comfywatch.parse.queue import QueueItem, QueueSnapshot, parse_queue
from comfywatch.state.trackers import PollRead, QueueTracker, QueueView, QuietQueue, SeenSet
from tests.fixtures import load_json

A, B, C = (
    "a6cc3698-5c2e-428d-a2a9-c381ae8735a9",
    "b8624bf2-0bda-4c8e-965c-4cf78a5cb850",
    "da253e1e-97ed-4109-96a7-a557efd4f75b",
)
D, E = "07c24684-ad9c-4eb6-8540-0e8080d59288", "fa14d511-0922-464a-b301-63194364c4ea"
T0 = 1_795_641_000.0  # wall clock of the recordings, seconds


def item(prompt_id: str, create_ms: int | None = None) -> QueueItem:
    return QueueItem(number=1.0, prompt_id=prompt_id, client_id=None, create_time_ms=create_ms)


def snap(running: list[str] | None = None, pending: list[QueueItem | str] | None = None) -> QueueSnapshot:
    return QueueSnapshot(
        running=tuple(item(p) for p in running or []),
        pending=tuple(p if isinstance(p, QueueItem) else item(p) for p in pending or []),
    )


class TestQueueTrackerBasics:
    def test_idle(self) -> None:
        """An idle queue: zeros everywhere, nothing stalled, worker fine."""
        view = QueueTracker(600, 4).observe(snap(), T0)
        assert view == QueueView(0, 0, None, 0.0, 0.0, stalled=False, worker_not_consuming=False)

    def test_counts_from_recordings(self) -> None:
        """queue_busy.json: one running (A) and two pending."""
        view = QueueTracker(600, 4).observe(parse_queue(load_json("queue_busy.json")), T0)
        assert (view.running, view.pending, view.running_prompt_id) == (1, 2, A)

    def test_running_age_from_first_sight(self) -> None:
        """0.3.64 has no timestamps: the running job's age counts from when it was first seen running."""
        tracker = QueueTracker(600, 4)
        assert tracker.observe(snap([A]), T0).running_seconds == 0.0
        assert tracker.observe(snap([A]), T0 + 30).running_seconds == 30.0
        assert tracker.observe(snap([A]), T0 + 45.5).running_seconds == 45.5

    def test_new_running_job_restarts_age(self) -> None:
        """When another prompt runs, its age counts from the previous poll (its earliest possible start)."""
        tracker = QueueTracker(600, 4)
        tracker.observe(snap([A]), T0)
        view = tracker.observe(snap([C]), T0 + 100)
        assert (view.running_prompt_id, view.running_seconds) == (C, 100.0)
        assert tracker.observe(snap([C]), T0 + 115).running_seconds == 115.0

    def test_first_poll_ever_counts_from_now(self) -> None:
        """With no earlier poll the job's age starts at the first sighting."""
        tracker = QueueTracker(600, 4)
        assert tracker.observe(snap([A]), T0).running_seconds == 0.0
        assert tracker.observe(snap([A]), T0 + 15).running_seconds == 15.0

    def test_nothing_running_age_zero(self) -> None:
        """With nothing running the age is 0 and no prompt id is reported."""
        tracker = QueueTracker(600, 4)
        tracker.observe(snap([A]), T0)
        view = tracker.observe(snap(), T0 + 10)
        assert (view.running_prompt_id, view.running_seconds) == (None, 0.0)

    def test_same_prompt_running_again_after_gap_restarts(self) -> None:
        """A prompt seen running, then not, then running again is timed from the poll before it reappeared."""
        tracker = QueueTracker(600, 4)
        tracker.observe(snap([A]), T0)
        tracker.observe(snap(), T0 + 5)
        assert tracker.observe(snap([A]), T0 + 20).running_seconds == 15.0

    def test_stall_reported_within_one_interval_of_stall_after(self) -> None:
        """A job that started just after a poll is reported stalled no later than stall_after + one interval."""
        interval, stall_after = 2.0, 5.0
        tracker = QueueTracker(stall_after=stall_after, idle_polls=4)
        tracker.observe(snap(), T0)
        start = T0 + 0.01  # the job starts right after that poll
        polls = [T0 + interval * k for k in range(1, 10)]
        first_stalled = next(t for t in polls if tracker.observe(snap([A]), t).stalled)
        assert first_stalled - start <= stall_after + interval


class TestStall:
    def test_stalls_after_threshold(self) -> None:
        """The same prompt running for stall_after seconds without progress is stalled."""
        tracker = QueueTracker(stall_after=60, idle_polls=4)
        tracker.observe(snap([A]), T0)
        assert tracker.observe(snap([A]), T0 + 59.9).stalled is False
        assert tracker.observe(snap([A]), T0 + 60).stalled is True

    def test_progress_postpones_stall(self) -> None:
        """A progress event for the running prompt restarts the stall clock."""
        tracker = QueueTracker(stall_after=60, idle_polls=4)
        tracker.observe(snap([A]), T0)
        tracker.progress(A, T0 + 50)
        assert tracker.observe(snap([A]), T0 + 100).stalled is False
        assert tracker.observe(snap([A]), T0 + 110).stalled is True

    def test_progress_of_another_prompt_ignored(self) -> None:
        """Progress for a different prompt id does not keep the running one alive."""
        tracker = QueueTracker(stall_after=60, idle_polls=4)
        tracker.observe(snap([A]), T0)
        tracker.progress(B, T0 + 50)
        assert tracker.observe(snap([A]), T0 + 60).stalled is True

    def test_progress_without_prompt_id_counts(self) -> None:
        """Progress frames without a prompt id (reconnected socket) count for the running prompt."""
        tracker = QueueTracker(stall_after=60, idle_polls=4)
        tracker.observe(snap([A]), T0)
        tracker.progress(None, T0 + 50)
        assert tracker.observe(snap([A]), T0 + 60).stalled is False

    def test_stall_clears_when_prompt_changes(self) -> None:
        """A stalled prompt that finishes clears the flag; the next one starts fresh."""
        tracker = QueueTracker(stall_after=60, idle_polls=4)
        tracker.observe(snap([A]), T0)
        assert tracker.observe(snap([A]), T0 + 61).stalled is True
        assert tracker.observe(snap([C]), T0 + 62).stalled is False
        assert tracker.observe(snap(), T0 + 500).stalled is False

    def test_progress_while_idle_does_not_carry_over(self) -> None:
        """Progress seen while nothing ran does not extend the next prompt's stall window."""
        tracker = QueueTracker(stall_after=60, idle_polls=4)
        tracker.observe(snap(), T0)
        tracker.progress(None, T0 + 10)
        tracker.observe(snap([A]), T0 + 20)
        # A counts from the previous poll (T0): progress at T0+10 came before A was known to run.
        assert tracker.observe(snap([A]), T0 + 59).stalled is False
        assert tracker.observe(snap([A]), T0 + 60).stalled is True


class TestWorkerNotConsuming:
    def test_after_consecutive_idle_polls(self) -> None:
        """Pending work with nothing running for idle_polls polls in a row means the worker is stuck."""
        tracker = QueueTracker(600, idle_polls=3)
        flags = [tracker.observe(snap([], [B]), T0 + i).worker_not_consuming for i in range(4)]
        assert flags == [False, False, True, True]

    def test_streak_broken_by_running(self) -> None:
        """One poll with something running resets the streak."""
        tracker = QueueTracker(600, idle_polls=2)
        tracker.observe(snap([], [B]), T0)
        tracker.observe(snap([A], [B]), T0 + 1)
        assert tracker.observe(snap([], [B]), T0 + 2).worker_not_consuming is False
        assert tracker.observe(snap([], [B]), T0 + 3).worker_not_consuming is True

    def test_empty_queue_is_fine(self) -> None:
        """Nothing pending is never "not consuming"."""
        tracker = QueueTracker(600, idle_polls=1)
        assert tracker.observe(snap(), T0).worker_not_consuming is False

    def test_busy_worker_is_fine(self) -> None:
        """Running with a backlog is consuming."""
        tracker = QueueTracker(600, idle_polls=1)
        assert all(not tracker.observe(snap([A], [B, C]), T0 + i).worker_not_consuming for i in range(5))


class TestPendingAge:
    def test_oldest_pending_from_first_sight(self) -> None:
        """Without create_time the oldest pending age counts from when comfywatch first saw it."""
        tracker = QueueTracker(600, 4)
        tracker.observe(snap([A], [B]), T0)
        view = tracker.observe(snap([A], [B, C]), T0 + 20)
        assert view.oldest_pending_seconds == 20.0

    def test_create_time_is_used_when_older(self) -> None:
        """A server create_time (ms) older than first sight gives the true age."""
        tracker = QueueTracker(600, 4)
        view = tracker.observe(snap([], [item(B, int((T0 - 90) * 1000))]), T0)
        assert view.oldest_pending_seconds == 90.0

    def test_future_create_time_clamped(self) -> None:
        """A create_time ahead of our clock (skew) never gives a negative age."""
        view = QueueTracker(600, 4).observe(snap([], [item(B, int((T0 + 50) * 1000))]), T0)
        assert view.oldest_pending_seconds == 0.0

    def test_items_that_left_are_forgotten(self) -> None:
        """A pending item that left the queue (ran or deleted) no longer counts, and memory is freed."""
        tracker = QueueTracker(600, 4)
        tracker.observe(snap([A], [B, C]), T0)
        view = tracker.observe(snap([A], [C]), T0 + 10)
        assert view.oldest_pending_seconds == 10.0
        tracker.observe(snap([A]), T0 + 20)
        assert tracker.observe(snap([A], [B]), T0 + 30).oldest_pending_seconds == 0.0

    def test_recorded_phase_d(self) -> None:
        """The recorded phase D: A runs with B, C pending; B deleted; later D runs, E cleared."""
        tracker = QueueTracker(stall_after=600, idle_polls=4)
        busy = tracker.observe(parse_queue(load_json("queue_busy.json")), T0)
        after = tracker.observe(parse_queue(load_json("queue_after_delete.json")), T0 + 2)
        assert (busy.pending, after.pending, after.running_seconds, after.oldest_pending_seconds) == (2, 1, 2.0, 2.0)
        busy2 = tracker.observe(parse_queue(load_json("queue_busy_2.json")), T0 + 10)
        assert (busy2.running_prompt_id, busy2.running_seconds, busy2.oldest_pending_seconds) == (D, 8.0, 0.0)
        cleared = tracker.observe(parse_queue(load_json("queue_after_clear.json")), T0 + 12)
        assert (cleared.running_prompt_id, cleared.pending, cleared.running_seconds) == (D, 0, 10.0)
        idle = tracker.observe(parse_queue(load_json("queue_idle_after.json")), T0 + 20)
        assert (idle.running, idle.pending, idle.stalled) == (0, 0, False)


class TestReset:
    def test_reset_forgets_everything(self) -> None:
        """After a server restart the tracker forgets the running prompt, pending ages and idle streak."""
        tracker = QueueTracker(stall_after=60, idle_polls=2)
        tracker.observe(snap([A]), T0)
        tracker.observe(snap([], [B]), T0 + 100)
        tracker.reset()
        view = tracker.observe(snap([], [B]), T0 + 200)
        assert (view.oldest_pending_seconds, view.worker_not_consuming) == (0.0, False)
        view = tracker.observe(snap([A]), T0 + 300)
        assert (view.running_seconds, view.stalled) == (0.0, False)


class TestSeenSet:
    def test_first_call_primes(self) -> None:
        """Jobs finished before comfywatch started are remembered but not counted."""
        assert SeenSet().primed is False
        seen = SeenSet()
        assert seen.new_ids([A, B]) == []
        assert seen.primed is True
        assert A in seen and B in seen and len(seen) == 2

    def test_empty_first_window_primes_too(self) -> None:
        """An empty history primes the set; the first job after that is counted."""
        seen = SeenSet()
        assert seen.new_ids([]) == []
        assert seen.new_ids([A]) == [A]

    def test_only_new_ids_in_order(self) -> None:
        """Later calls return only unseen ids, in the given order, each once."""
        seen = SeenSet()
        seen.new_ids([A])
        assert seen.new_ids([A, B, C]) == [B, C]
        assert seen.new_ids([A, B, C]) == []
        assert seen.new_ids([C, D]) == [D]

    def test_duplicate_in_one_call_counted_once(self) -> None:
        """An id listed twice in one page counts once."""
        seen = SeenSet()
        seen.new_ids([])
        assert seen.new_ids([B, B, C, B]) == [B, C]

    def test_sliding_history_window_counts_each_job_once(self) -> None:
        """Reading the newest 3 entries after each job finishes counts every job exactly once."""
        seen = SeenSet(capacity=8)
        finished = [f"job-{i}" for i in range(50)]
        counted: list[str] = []
        for end in range(1, len(finished) + 1):
            counted += seen.new_ids(finished[max(0, end - 3) : end])
        assert counted == finished[1:]  # job-0 was there at start: primed, not counted

    def test_restart_that_empties_history(self) -> None:
        """After a restart history is empty; the new server's jobs are counted, the old ones not again."""
        seen = SeenSet()
        seen.new_ids([A, B, C])
        assert seen.new_ids([]) == []
        assert seen.new_ids([D]) == [D]
        assert seen.new_ids([D, E]) == [E]

    def test_memory_is_bounded(self) -> None:
        """However many ids pass through, at most capacity are kept (oldest dropped first)."""
        seen = SeenSet(capacity=100)
        seen.new_ids([])
        for start in range(0, 10_000, 50):
            seen.new_ids([str(i) for i in range(start, start + 50)])
        assert len(seen) == 100
        assert "9999" in seen and "0" not in seen

    def test_ids_still_listed_are_kept(self) -> None:
        """An id that is still in the window is refreshed, so eviction never makes it count twice."""
        seen = SeenSet(capacity=3)
        seen.new_ids(["old"])
        for i in range(10):
            assert seen.new_ids(["old", f"n{i}"]) == [f"n{i}"]

    @given(
        st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=30),
        st.integers(min_value=1, max_value=10),
    )
    def test_exactly_once_property(self, ends: list[int], window: int) -> None:
        """For any sequence of windows over a growing history, each post-priming job counts once."""
        seen = SeenSet(capacity=window + 1)
        history = [f"j{i}" for i in range(41)]
        ends = sorted(ends)
        primed = set(history[max(0, ends[0] - window) : ends[0]])
        seen.new_ids(history[max(0, ends[0] - window) : ends[0]])
        counted: list[str] = []
        for end in ends[1:]:
            counted += seen.new_ids(history[max(0, end - window) : end])
        assert len(counted) == len(set(counted))
        assert not set(counted) & primed
        visible = {h for end in ends[1:] for h in history[max(0, end - window) : end]}
        assert set(counted) == visible - primed


NOTHING, SYSTEM, FULL = PollRead.NOTHING, PollRead.SYSTEM, PollRead.FULL


class TestQuietQueue:
    def test_no_skip_before_a_full_read(self) -> None:
        """Nothing is known about the queue until one full read succeeded."""
        assert QuietQueue(3, 4).next_read(True, 1, 5, True) is FULL

    def test_skips_while_no_status_frame_arrived(self) -> None:
        """Same connection, same frame count as when the successful read started: up to max_skips skips,
        then a read is due however quiet the socket is, in full on a socket that never forwarded a frame."""
        quiet = QuietQueue(3, 4)
        quiet.mark(1, 5)
        assert [quiet.next_read(True, 1, 5, False) for _ in range(4)] == [NOTHING, NOTHING, NOTHING, FULL]
        quiet.mark(1, 5)
        assert quiet.next_read(True, 1, 5, False) is NOTHING

    def test_a_forwarding_socket_refreshes_system_stats_alone_then_reads_in_full(self) -> None:
        """On a socket that has delivered a frame, the read after each run of skips is of /system_stats alone,
        max_refreshes times; then one full read; a full read that succeeds starts the count again."""
        quiet = QuietQueue(3, 2)
        quiet.mark(1, 5)
        reads = [quiet.next_read(True, 1, 5, True) for _ in range(12)]
        assert reads == [NOTHING] * 3 + [SYSTEM] + [NOTHING] * 3 + [SYSTEM] + [NOTHING] * 3 + [FULL]
        quiet.mark(1, 5)
        assert [quiet.next_read(True, 1, 5, True) for _ in range(4)] == [NOTHING] * 3 + [SYSTEM]

    def test_a_status_frame_ends_the_quiet(self) -> None:
        """One queue change since the read (frame count moved) means the next poll reads in full."""
        quiet = QuietQueue(3, 4)
        quiet.mark(1, 5)
        assert quiet.next_read(True, 1, 6, True) is FULL

    def test_a_new_connection_or_no_connection_vouches_for_nothing(self) -> None:
        """Frames missed while disconnected cannot be known: reconnects and closed sockets force a full read."""
        quiet = QuietQueue(3, 4)
        quiet.mark(1, 5)
        assert quiet.next_read(True, 2, 5, True) is FULL
        assert quiet.next_read(False, 1, 5, True) is FULL

    def test_a_failed_read_is_forgotten(self) -> None:
        """After a failed read the mark is gone: the next poll reads in full."""
        quiet = QuietQueue(3, 4)
        quiet.mark(1, 5)
        quiet.forget()
        assert quiet.next_read(True, 1, 5, True) is FULL

    def test_a_stagger_shortens_only_the_first_runs_on_each_socket(self) -> None:
        """Targets whose sockets opened together (a start, a proxy restart) make their reads in different polls:
        the stagger counts skips (modulo max_skips + 1) and refreshes (the rest, modulo max_refreshes + 1) as done
        at the first mark on each socket only, and every later run on that socket is whole."""
        whole = [NOTHING] * 3 + [SYSTEM] + [NOTHING] * 3 + [FULL]
        runs, refreshes = [], []
        for stagger in range(8):
            quiet = QuietQueue(3, 1, stagger=stagger)
            quiet.mark(0, 0)  # the first poll, before the socket opened: no skips can follow it, none taken
            quiet.mark(1, 5)
            first = [quiet.next_read(True, 1, 5, True) for _ in range(8)]
            quiet.mark(1, 5)
            assert [quiet.next_read(True, 1, 5, True) for _ in range(8)] == whole
            quiet.mark(3, 9)  # a reconnect: a new socket
            assert [quiet.next_read(True, 3, 9, True) for _ in range(8)] == first
            runs.append(first.index(SYSTEM) if SYSTEM in first else first.index(FULL))
            refreshes.append(first.count(SYSTEM))
        assert runs == [3, 2, 1, 0, 3, 2, 1, 0]
        assert refreshes == [1, 1, 1, 1, 0, 0, 0, 0]
        never = QuietQueue(0, stagger=7)
        never.mark(1, 5)
        assert never.next_read(True, 1, 5, True) is FULL

    def test_zero_skips_means_always_read(self) -> None:
        """Long intervals (a minute or more) never skip; without refreshes every read is full."""
        quiet = QuietQueue(0)
        quiet.mark(1, 5)
        assert quiet.next_read(True, 1, 5, True) is FULL
        refreshing = QuietQueue(0, 1)
        refreshing.mark(1, 5)
        assert [refreshing.next_read(True, 1, 5, True) for _ in range(2)] == [SYSTEM, FULL]

    def test_reobserving_the_same_snapshot_advances_ages_and_stalls(self) -> None:
        """A skipped read re-observes the last snapshot: the running job keeps ageing and can stall, and a
        backlog with nothing running still counts towards "worker not consuming"."""
        tracker = QueueTracker(stall_after=60, idle_polls=3)
        busy = snap(running=[A])
        tracker.observe(busy, T0)
        assert not tracker.observe(busy, T0 + 15).stalled
        view = tracker.observe(busy, T0 + 75)
        assert view.running_seconds == 75 and view.stalled
        idle = QueueTracker(stall_after=60, idle_polls=3)
        backlog = snap(pending=[B])
        views = [idle.observe(backlog, T0 + 15 * i) for i in range(3)]
        assert [v.worker_not_consuming for v in views] == [False, False, True]
