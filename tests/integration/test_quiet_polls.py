"""Polls that skip /queue and /history while the monitoring WebSocket shows the queue has not changed
(comfywatch.state.trackers.QuietQueue, wired in Daemon.run_group), against the simulated ComfyUI."""

from __future__ import annotations

from pathlib import Path

from comfywatch.checks import CheckSpec
from comfywatch.checks.context import TargetContext, quiet_max_refreshes, quiet_max_skips
from comfywatch.sim.admin import start_sim
from tests.helpers import Metrics, running_daemon
from tests.integration.conftest import Watch, config_toml, target_toml, watching

REQUESTS = "comfyui_requests_total"


def _reads(watch: Watch, m: Metrics) -> tuple[float, float, float]:
    """(system_stats, queue, history) requests answered 200 so far."""
    system, queue, history = (watch.value(m, REQUESTS, endpoint=endpoint, code="200") or 0.0
                              for endpoint in ("system_stats", "queue", "history"))
    return system, queue, history


def _config(url: str, *, monitor: bool = True) -> str:
    return config_toml(target_toml("sim", url), monitor=monitor)


async def _connected(watch: Watch) -> Metrics:
    return await watch.until(lambda m: watch.value(m, "comfywatch_websocket_connected") == 1.0, "monitor connected")


def _count_polls(watch: Watch) -> list[int]:
    """Counts the target's polls (the runs of its system/queue/jobs group) from now on: ``[count]``."""
    counter = [0]
    original = watch.daemon.run_group

    async def counted(context: TargetContext, members: list[CheckSpec]) -> None:
        if any(spec.name == "system" for spec in members):
            counter[0] += 1
        await original(context, members)

    watch.daemon.run_group = counted  # type: ignore[method-assign]
    return counter


async def test_an_idle_server_is_asked_nothing_three_polls_in_four(tmp_path: Path) -> None:
    """With the monitor connected and nothing queued, three polls in four ask nothing at all; the fourth reads
    /system_stats alone, four times in a row, and then /system_stats, /queue and /history (at a 1 s interval:
    quiet_max_skips 3, quiet_max_refreshes 4). comfywatch_polls_total and comfywatch_quiet_polls_total count
    them."""
    async with await start_sim() as sim, watching(_config(sim.url), tmp_path) as watch:
        await _connected(watch)
        polls = _count_polls(watch)
        # From one full read to the next: scraped as each full read's last check (jobs) succeeds, so that no read
        # of the cycle is half counted. The target's first cycle with the socket is staggered (shorter): skipped.
        await watch.polls(1, check="jobs")
        m_before = await watch.polls(1, check="jobs")
        counted = polls[0]
        m_after = await watch.polls(1, check="jobs")
        run = polls[0] - counted
        system_reads, queue_reads, history_reads = (
            a - b for a, b in zip(_reads(watch, m_after), _reads(watch, m_before), strict=True))
        assert (system_reads, queue_reads, history_reads) == (5, 1, 1)
        exported, quiet = ((m_after.value(name) or 0.0) - (m_before.value(name) or 0.0)
                           for name in ("comfywatch_polls_total", "comfywatch_quiet_polls_total"))
        # A poll may start between a scrape and the count read after it.
        assert abs(exported - run) <= 1, (exported, run)
        assert run >= 20 - 1, run
        assert abs(quiet - (exported - system_reads)) <= 1, (quiet, exported, system_reads)
        assert watch.value(await watch.metrics(), "comfyui_queue_running") == 0.0


async def test_a_queued_job_ends_the_quiet_at_once(tmp_path: Path) -> None:
    """A prompt queued and finished between polls broadcasts status frames: the next poll reads history and
    counts it. Submitted right after a full read, the next full read without them would come 20 polls later."""
    async with await start_sim() as sim, watching(_config(sim.url), tmp_path) as watch:
        await _connected(watch)
        m = await watch.polls(2, check="system")
        reads = _reads(watch, m)[2]
        m = await watch.until(lambda m: _reads(watch, m)[2] > reads, "a full read", timeout=30.0)
        polls_before = _reads(watch, m)[0]
        await sim.submit(job_ms=1)
        m = await watch.until(lambda m: watch.value(m, "comfyui_jobs_total") == 1.0, "the job counted")
        assert _reads(watch, m)[0] - polls_before <= 2


async def test_a_running_job_keeps_ageing_and_stalls_without_queue_reads(tmp_path: Path) -> None:
    """A job that never finishes (stall fault) sends no more status frames: polls skip the reads, yet the
    running job's age grows and it is reported stalled after stall_after."""
    async with await start_sim() as sim:
        config = config_toml(target_toml("sim", sim.url, stall_after="1s"))
        async with watching(config, tmp_path) as watch:
            await _connected(watch)
            await sim.set_faults(["stall"])
            await sim.submit(job_ms=1)
            m = await watch.until(lambda m: watch.value(m, "comfyui_queue_stalled") == 1.0, "stalled")
            assert (watch.value(m, "comfyui_queue_running_seconds") or 0.0) >= 1.0
            polls = _count_polls(watch)
            before = _reads(watch, await watch.metrics())
            after = _reads(watch, await watch.polls(3, check="system"))
            assert after[1] - before[1] <= polls[0] / 4 + 1, (after[1] - before[1], polls[0])
            await sim.set_faults([])


async def test_a_silent_socket_still_gets_every_job_counted(tmp_path: Path) -> None:
    """A socket that is open but forwards nothing (ws_silent) cannot end the quiet: the read every fourth
    poll still counts the job."""
    async with await start_sim() as sim:
        await sim.set_faults(["ws_silent"])
        async with watching(_config(sim.url), tmp_path) as watch:
            await _connected(watch)
            await watch.polls(2, check="system")
            await sim.submit(job_ms=1)
            await watch.until(lambda m: watch.value(m, "comfyui_jobs_total") == 1.0, "the job counted")


async def test_a_group_without_the_system_check_reads_in_full(tmp_path: Path) -> None:
    """checks = ["queue", "jobs"]: there is no /system_stats to refresh with, so the read after three quiet polls
    is a full one, every fourth poll, not every twentieth."""
    async with await start_sim() as sim:
        target = target_toml("sim", sim.url, checks=("queue", "jobs"))
        async with running_daemon(config_toml(target), tmp_path) as (daemon, base):
            watch = Watch(daemon, base)
            await _connected(watch)
            start = _reads(watch, await watch.polls(1, check="queue"))[1]
            m = await watch.until(lambda m: _reads(watch, m)[1] >= start + 3, "three more reads of /queue", 20.0)
            assert _reads(watch, m)[0] == 0
            assert (m.value("comfywatch_quiet_polls_total") or 0.0) >= 6


async def test_without_the_monitor_every_poll_reads_the_queue(tmp_path: Path) -> None:
    """websocket_monitor = false: nothing vouches for the queue, so each poll reads /queue and /history."""
    async with await start_sim() as sim, watching(_config(sim.url, monitor=False), tmp_path) as watch:
        before = _reads(watch, await watch.polls(2, check="system"))
        after = _reads(watch, await watch.polls(6, check="jobs"))
        polls, queue_reads, history_reads = (a - b for a, b in zip(after, before, strict=True))
        assert abs(polls - queue_reads) <= 1 and abs(polls - history_reads) <= 1, (polls, queue_reads)


def test_a_read_at_least_every_fourth_poll_and_every_minute() -> None:
    """Skips allowed in a row: 3 at 15 s (a read every minute), 1 at 30 s, none at a minute or more."""
    assert [quiet_max_skips(s) for s in (0.2, 15.0, 20.0, 30.0, 45.0, 60.0, 300.0)] == [3, 3, 2, 1, 1, 0, 0]


def test_a_full_read_at_least_every_fifth_read_and_every_five_minutes() -> None:
    """Reads of /system_stats alone allowed in a row: 4 at 15 s (a full read every 5 minutes), fewer as the
    interval grows so that the full reads stay within 5 minutes, none at 5 minutes or more."""
    intervals = (1.0, 15.0, 30.0, 45.0, 60.0, 120.0, 150.0, 300.0)
    assert [quiet_max_refreshes(s) for s in intervals] == [4, 4, 4, 2, 4, 1, 1, 0]
    for interval in intervals:
        polls = (quiet_max_skips(interval) + 1) * (quiet_max_refreshes(interval) + 1)
        assert polls * interval <= max(300.0, interval)
