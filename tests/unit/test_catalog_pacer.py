"""Catalogue reads take turns across the fleet: a burst at once, then a steady rate; a read whose turn is too far
off is left to a later run of its check, and a server that went down while its read waited is not read."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from comfywatch.checks import CheckSkipped
from comfywatch.checks.catalog import CatalogCheck, ReadPacer
from comfywatch.checks.context import TargetContext
from comfywatch.state import TargetState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
    check = CatalogCheck((), 1800.0, ReadPacer(rate=1.0 / 1e6, burst=1))
    with pytest.raises(Reached):
        await check.check(_context())  # the first read has the burst's turn
    with pytest.raises(CheckSkipped, match="queued"):
        await check.check(_context())  # the next turn is 11 days away


async def test_a_read_waits_for_its_turn() -> None:
    """The second read of a pacer allowing 20 a second starts 50 ms after the first."""
    check = CatalogCheck((), 1800.0, ReadPacer(rate=20.0, burst=1))
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
    check = CatalogCheck((), 1800.0, pacer)

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
