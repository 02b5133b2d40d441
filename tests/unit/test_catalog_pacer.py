"""Catalogue reads take turns across the fleet: a burst at once, then a steady rate; a read whose turn is too far
off is left to a later run of its check, and a server that went down while its read waited is not read. Reads of
bytes already parsed (or being parsed) take that parse's summary. A lint that outlives its check is not started
again."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from comfywatch.checks import CheckSkipped
from comfywatch.checks import catalog as catalog_check
from comfywatch.checks.catalog import CatalogCheck, CatalogObservation, FleetReads, ReadPacer, SummaryCache
from comfywatch.checks.context import TargetContext
from comfywatch.parse.catalog import Catalog
from comfywatch.state import CatalogSummary, TargetState, WorkflowVerdict
from tests.helpers import Clock


def test_a_burst_goes_at_once_then_one_turn_per_spacing() -> None:
    clock = Clock()
    pacer = ReadPacer(rate=4.0, burst=3, clock=clock)
    assert [pacer.reserve(60.0) for _ in range(6)] == [0.0, 0.0, 0.0, 0.25, 0.5, 0.75]


def test_turns_come_back_with_time() -> None:
    """Idle time refills the burst, never beyond it."""
    clock = Clock()
    pacer = ReadPacer(rate=4.0, burst=3, clock=clock)
    for _ in range(6):
        pacer.reserve(60.0)
    clock.now += 100.0
    assert [pacer.reserve(60.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.25]


def test_a_turn_too_far_off_is_not_taken() -> None:
    """A refused reservation leaves the queue as it was: the next caller that may wait longer gets that turn."""
    clock = Clock()
    pacer = ReadPacer(rate=1.0, burst=1, clock=clock)
    assert [pacer.reserve(10.0) for _ in range(11)] == [float(n) for n in range(11)]
    assert pacer.reserve(10.0) is None
    assert pacer.reserve(11.0) == 11.0


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_nonsense_settings_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate"):
        ReadPacer(rate=rate, burst=burst)


class Reached(Exception):
    """The check got as far as asking for the target's API: the read would start here."""


def _context(up: float | None = 1.0) -> TargetContext:
    state = TargetState("gpu", "local", "http://gpu", endpoints=("system_stats",))
    state.up = up

    def local_api() -> Any:
        raise Reached

    return cast(TargetContext, SimpleNamespace(state=state, local_api=local_api))


async def test_a_read_without_a_turn_is_left_to_a_later_run() -> None:
    check = CatalogCheck((), 1800.0, FleetReads(ReadPacer(rate=1.0 / 1e6, burst=1)))
    with pytest.raises(Reached):
        await check.check(_context())  # the first read has the burst's turn
    with pytest.raises(CheckSkipped, match="queued"):
        await check.check(_context())  # the next turn is 11 days away


async def test_a_read_waits_for_its_turn() -> None:
    """The second read of a pacer allowing 20 a second starts 50 ms after the first."""
    check = CatalogCheck((), 1800.0, FleetReads(ReadPacer(rate=20.0, burst=1)))
    with pytest.raises(Reached):
        await check.check(_context())
    started = time.monotonic()
    with pytest.raises(Reached):
        await check.check(_context())
    assert time.monotonic() - started >= 0.04


async def test_a_server_down_after_its_wait_is_not_read() -> None:
    """Its turn taken, the read waits; the server goes down meanwhile: nothing is asked, and the next run that
    finds it up reads at once (the refresh stays due)."""
    pacer = ReadPacer(rate=20.0, burst=1)
    pacer.reserve(1.0)
    context = _context()
    check = CatalogCheck((), 1800.0, FleetReads(pacer))

    async def down_meanwhile() -> None:
        context.state.up = 0.0

    task = asyncio.create_task(down_meanwhile())
    with pytest.raises(CheckSkipped, match="went down"):
        await check.check(context)
    await task
    context.state.up = 1.0
    check.pacer = None
    with pytest.raises(Reached):
        await check.check(context)


SUMMARY = CatalogSummary(478, 1, (("checkpoints", 2),), "a" * 12, "b" * 12)


async def test_reads_of_the_same_bytes_share_one_parse() -> None:
    """Three reads at once of one catalogue: the first parses, the others wait for it; later reads do not parse."""
    cache, parses = SummaryCache(), []
    release = asyncio.Event()

    async def parse() -> CatalogSummary:
        parses.append(1)
        await release.wait()
        return SUMMARY

    key = SummaryCache.key(b"{}", {"checkpoints": ("a.safetensors",)})
    reads = [asyncio.create_task(cache.summary(key, parse)) for _ in range(3)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*reads) == [SUMMARY] * 3
    assert await cache.summary(key, parse) is SUMMARY
    assert len(parses) == 1


async def test_a_failed_parse_is_not_shared() -> None:
    """The first read's parse fails (its body was not JSON): that read raises, and a read waiting for it parses
    for itself instead of taking the failure."""
    cache = SummaryCache()
    release = asyncio.Event()

    async def failing() -> CatalogSummary:
        await release.wait()
        raise ValueError("not JSON")

    async def parse() -> CatalogSummary:
        return SUMMARY

    key = SummaryCache.key(b"[", {})
    first = asyncio.create_task(cache.summary(key, failing))
    await asyncio.sleep(0)
    second = asyncio.create_task(cache.summary(key, parse))
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(ValueError, match="not JSON"):
        await first
    assert await second is SUMMARY


async def test_the_key_covers_both_parts_and_old_entries_go() -> None:
    cache, parses = SummaryCache(size=2), []

    async def parse() -> CatalogSummary:
        parses.append(1)
        return SUMMARY

    keys = [SummaryCache.key(b"{}", {}), SummaryCache.key(b"{} ", {}), SummaryCache.key(b"{}", {"loras": ()})]
    assert len(set(keys)) == 3
    for key in keys:
        await cache.summary(key, parse)
    await cache.summary(keys[2], parse)
    assert len(parses) == 3
    await cache.summary(keys[0], parse)  # the oldest of three was forgotten
    assert len(parses) == 4


async def test_a_parse_pushed_out_of_the_cache_still_serves_its_waiters() -> None:
    """While one read parses and another waits for it, a read of other bytes pushes the entry out of a
    one-entry cache: the waiter still gets the parse's summary (and the parse is not repeated)."""
    cache, parses = SummaryCache(size=1), []
    release = asyncio.Event()

    async def slow() -> CatalogSummary:
        parses.append(1)
        await release.wait()
        return SUMMARY

    async def other() -> CatalogSummary:
        return CatalogSummary(1, 0, (), "c" * 12, "d" * 12)

    first_key, other_key = SummaryCache.key(b"{}", {}), SummaryCache.key(b"[]", {})
    parsing = asyncio.create_task(cache.summary(first_key, slow))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(cache.summary(first_key, slow))
    await asyncio.sleep(0)
    await cache.summary(other_key, other)
    release.set()
    assert await parsing is SUMMARY
    assert await waiting is SUMMARY
    assert len(parses) == 1


Fetch = Callable[[Any, str], Awaitable[tuple[object, dict[str, tuple[str, ...]]]]]
Parse = Callable[[Any, object, object, object], Awaitable[CatalogObservation]]


async def _empty_read(api: object, target: str) -> tuple[object, dict[str, tuple[str, ...]]]:
    return object(), {}


async def _empty_catalogue(api: object, response: object, models: object, stats: object) -> CatalogObservation:
    return CatalogObservation({}, Catalog({}, {}, {}))


def _stub_reads(monkeypatch: pytest.MonkeyPatch, fetch: Fetch = _empty_read, parse: Parse = _empty_catalogue) -> None:
    """The catalogue check's requests and parse replaced by *fetch* and *parse*; no log route."""

    async def no_log(ctx: object) -> None:
        return None

    monkeypatch.setattr(catalog_check, "_fetch", fetch)
    monkeypatch.setattr(catalog_check, "_catalog", parse)
    monkeypatch.setattr(catalog_check, "observe_log", no_log)


def _lint_context(monkeypatch: pytest.MonkeyPatch) -> TargetContext:
    """A target that is up, whose catalogue read is stubbed out (an empty catalogue, no log route)."""
    state = TargetState("gpu", "local", "http://gpu", endpoints=("system_stats",))
    state.up = 1.0
    _stub_reads(monkeypatch)
    return cast(TargetContext, SimpleNamespace(state=state, local_api=object))


async def test_a_lint_that_outlives_its_check_is_not_started_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The first run's lint blocks and its check is cancelled (its time budget): the lint runs on, outside the
    event loop's default executor (a one-thread one here, standing for the threads names are resolved in,
    stays free), and the next run starts no second lint (the verdicts stay as they were). Once the lint has
    ended, the next run lints again."""
    loop = asyncio.get_running_loop()
    resolver = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(resolver)
    started: asyncio.Future[None] = loop.create_future()
    release = threading.Event()
    lints: list[int] = []
    verdict = WorkflowVerdict("flow")

    def lint(paths: Sequence[Path], object_info: dict[str, Any]) -> tuple[WorkflowVerdict, ...]:
        lints.append(1)
        if len(lints) == 1:
            loop.call_soon_threadsafe(started.set_result, None)
            release.wait()
        return (verdict,)

    monkeypatch.setattr(catalog_check, "lint_verdicts", lint)
    context = _lint_context(monkeypatch)
    check = CatalogCheck((tmp_path,), 1800.0)
    try:
        first = asyncio.create_task(check.check(context))
        await started
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        # A bound on a failure only (the executor is free at once when the lint is not in it).
        async with asyncio.timeout(5.0):
            assert await loop.run_in_executor(None, sum, (1, 2)) == 3
        await check.check(context)
        assert lints == [1]
        assert context.state.workflows == ()
    finally:
        release.set()
    # The lint thread takes jobs in order: this one runs once the blocked lint has returned.
    await asyncio.wrap_future(catalog_check._LINT_POOL.submit(int))
    await check.check(context)
    assert lints == [1, 1]
    assert context.state.workflows == (verdict,)
    resolver.shutdown(wait=False)


async def _settle() -> None:
    """Let every task that can run go as far as it can (no timer: each turn of the loop runs what is ready)."""
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.mark.parametrize("watched", [False, True], ids=["summary", "with-workflows"])
async def test_a_fleet_decodes_and_parses_one_catalogue_at_a_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, watched: bool
) -> None:
    """Three targets' reads arrive together (the pacer's burst): their catalogues, decoded a hostile half gigabyte
    each, are parsed (and linted) one after the other, never side by side; alone, a check waits for no one."""
    busy, most = 0, 0
    gates = [asyncio.Event() for _ in range(3)]

    async def fetch(api: object, target: str) -> tuple[object, dict[str, tuple[str, ...]]]:
        return SimpleNamespace(body=f"catalogue {api}".encode()), {}

    async def catalog(api: object, response: object, models: object, stats: object) -> CatalogObservation:
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await gates[cast(int, api)].wait()
        busy -= 1
        return CatalogObservation({}, Catalog({}, {}, {}))

    _stub_reads(monkeypatch, fetch, catalog)
    monkeypatch.setattr(catalog_check, "lint_verdicts", lambda paths, object_info: ())

    def context(index: int) -> TargetContext:
        state = TargetState(f"gpu-{index}", "local", f"http://gpu-{index}", endpoints=("system_stats",))
        state.up = 1.0
        return cast(TargetContext, SimpleNamespace(state=state, local_api=lambda: index))

    fleet = FleetReads(ReadPacer(rate=1000.0, burst=3))
    workflows = (tmp_path,) if watched else ()
    reads = [asyncio.create_task(CatalogCheck(workflows, 1800.0, fleet).check(context(i))) for i in range(3)]
    for gate in gates:
        await _settle()  # room for a second parse to start, were it allowed to
        gate.set()
    await asyncio.gather(*reads)
    assert most == 1

    busy, most = 0, 0
    for gate in gates:
        gate.clear()
    alone = [asyncio.create_task(CatalogCheck(workflows, 1800.0).check(context(i))) for i in range(3)]
    await _settle()
    assert most == 3
    for gate in gates:
        gate.set()
    await asyncio.gather(*alone)
