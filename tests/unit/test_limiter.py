"""The fair request limiter (comfywatch.daemon.limiter): a capacity, and freed slots to the target that used the
least."""

from __future__ import annotations

import asyncio
import math

import pytest

from comfywatch.daemon.limiter import FairLimiter, Share
from tests.helpers import Clock


async def _queued(share: Share, served: list[str], name: str) -> asyncio.Task[None]:
    """Start an acquisition that must wait; it records *name* in *served* when it gets its slot."""

    async def take() -> None:
        await share.acquire()
        served.append(name)

    task = asyncio.get_running_loop().create_task(take())
    await asyncio.sleep(0)  # one loop turn: the acquisition is queued (not a timing wait)
    assert not task.done()
    return task


async def test_no_more_than_the_capacity_is_held() -> None:
    """Two slots: two acquisitions pass at once, the third waits for a release."""
    limiter = FairLimiter(2)
    first, second, third = limiter.share(), limiter.share(), limiter.share()
    await first.acquire()
    await second.acquire()
    assert limiter.locked() and first.locked()
    served: list[str] = []
    waiting = await _queued(third, served, "third")
    first.release()
    await waiting
    assert served == ["third"]
    second.release()
    third.release()
    assert not limiter.locked()


async def test_the_target_that_held_slots_least_is_served_first() -> None:
    """A target that held its slot for 5 s (a hanging server) waits behind one that held it for 5 ms, although
    it queued first; targets without usage are served in arrival order."""
    clock = Clock()
    limiter = FairLimiter(1, clock=clock)
    hanging, healthy, new_a, new_b, blocker = (limiter.share() for _ in range(5))
    for share, seconds in ((hanging, 5.0), (healthy, 0.005)):
        await share.acquire()
        clock.now += seconds
        share.release()
    await blocker.acquire()
    shares = {"blocker": blocker, "hanging": hanging, "healthy": healthy, "new_a": new_a, "new_b": new_b}
    served: list[str] = []
    tasks = [await _queued(shares[name], served, name) for name in ("hanging", "new_a", "healthy", "new_b")]
    holder = "blocker"
    for _ in tasks:
        shares[holder].release()
        await asyncio.sleep(0)  # one loop turn: the waiter handed the slot takes it
        holder = served[-1]
    await asyncio.gather(*tasks)
    assert served == ["new_a", "new_b", "healthy", "hanging"]


async def test_usage_is_forgotten_with_the_half_life() -> None:
    """4 slot-seconds used two half-lives (60 s) ago weigh 1 s now: between a target that just used 0.9 s and
    one that just used 1.1 s."""
    clock = Clock()
    limiter = FairLimiter(1, clock=clock, half_life=30.0)
    old, less, more = limiter.share(), limiter.share(), limiter.share()
    start = clock.now
    for share, held_from, released_at in ((old, start - 4.0, start), (less, start + 59.1, start + 60.0),
                                          (more, start + 58.9, start + 60.0)):
        clock.now = held_from
        await share.acquire()
        clock.now = released_at
        share.release()
    assert less.key < old.key < more.key


async def test_a_cancelled_wait_gives_up_its_place_and_never_its_slot() -> None:
    """A waiter cancelled before its turn is skipped; one cancelled just as the slot reached it passes it on."""
    limiter = FairLimiter(1)
    holder, cancelled, handed, last = (limiter.share() for _ in range(4))
    await holder.acquire()
    served: list[str] = []
    gone = await _queued(cancelled, served, "cancelled")
    raced = await _queued(handed, served, "handed")
    waiting = await _queued(last, served, "last")
    gone.cancel()
    holder.release()  # the slot goes to "handed", whose task is cancelled before it runs
    raced.cancel()
    await asyncio.wait([gone, raced])
    await waiting
    assert served == ["last"]
    last.release()
    assert not limiter.locked()


async def test_resize_keeps_holders_and_wakes_waiters() -> None:
    """Growing serves waiters at once; shrinking below what is held frees nothing until enough is released."""
    limiter = FairLimiter(1)
    shares = [limiter.share() for _ in range(3)]
    await shares[0].acquire()
    served: list[str] = []
    waiting = [await _queued(shares[1], served, "1"), await _queued(shares[2], served, "2")]
    limiter.resize(3)
    await asyncio.gather(*waiting)
    assert served == ["1", "2"]
    limiter.resize(1)
    shares[0].release()
    shares[1].release()
    assert limiter.locked()
    shares[2].release()
    assert not limiter.locked()
    with pytest.raises(ValueError, match="at least 1"):
        limiter.resize(0)


async def test_anonymous_acquire_and_release() -> None:
    """acquire()/release() on the limiter itself hold a slot for no target."""
    limiter = FairLimiter(1)
    await limiter.acquire()
    assert limiter.locked()
    limiter.release()
    assert not limiter.locked()


async def test_a_release_charges_the_slot_held_longest() -> None:
    """A share holding a slot taken 10 s ago and one just taken is charged the 10 s when it releases one."""
    clock = Clock()
    limiter = FairLimiter(2, clock=clock)
    share = limiter.share()
    await share.acquire()
    clock.now += 10.0
    await share.acquire()
    share.release()
    assert share.key > -math.inf
