"""Benchmark: the cycle collector's pauses in a daemon watching N simulated targets, with and without the
freeze of what the targets keep.

Starts ``comfywatch simulate --targets N`` and runs the daemon **in this process** (``gc.callbacks`` only see
their own interpreter) with N local targets polled every 15 s, canary off, monitoring WebSocket on, the
configuration of bench/scale.py. After the warm-up of bench/scale.py (every target polled and its catalogue
read, then one more interval; read from the daemon's states) it records, over ``--minutes``:

- every collection of the oldest generation (a full walk of what the collector tracks; the event loop, scrapes
  and polls included, waits for it): how many, and their pauses (up to five; else median and largest);
- ``/metrics`` scraped once per interval, as Prometheus would, timed by the client (the largest shows a pause
  that came during a scrape);
- the objects the collector tracks and the objects frozen out of it at the start of the window.

Modes, run one after the other in one invocation (``--modes``):

- ``settle``: the daemon as shipped. It freezes what exists after building its configuration, and again two
  poll intervals after the targets' first polls (the settle), when their connections and sockets exist.
  After its window, the hourly refreeze (unfreeze everything, collect, freeze again) is run once, at once,
  timed (the daemon logs its seconds) and with a scrape waiting on it, then a second window is recorded;
- ``startup``: the settle replaced by nothing (the bench patches the daemon's private ``_schedule_settle``):
  only the start-up freeze, before any connection exists.

    .venv/bin/python bench/gc_pauses.py [--targets 3000] [--minutes 3] [--modes settle startup] [--json out.json]

At 9000 targets the warm-up alone takes about 20 minutes (catalogue reads, 8 a second). The machine is
shared and small: pauses depend on its load; compare modes of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from scale import WARM_CHECKS, fleet_config, scrape, simulator, stop_children_on_sigterm, warm_up_seconds

from comfywatch.daemon.fdlimit import raise_soft_limit
from comfywatch.daemon.service import Daemon
from comfywatch.logs import configure_logging

INTERVAL = 15.0
MODES = ("settle", "startup")


@dataclass
class Window:
    """What one window of ``--minutes`` recorded."""

    seconds: float
    tracked_objects: int
    frozen_objects: int
    #: Pauses of the oldest generation's collections, seconds.
    full_pauses: list[float] = field(default_factory=list)
    #: Collections of the younger generations.
    young_collections: int = 0
    young_pause_max: float = 0.0
    scrapes: list[float] = field(default_factory=list)


@dataclass
class ModeResult:
    mode: str
    targets: int
    window: Window
    #: The freezes the daemon logged (``objects_frozen``): objects, unfrozen, seconds.
    freezes: list[dict[str, Any]] = field(default_factory=list)
    #: ``settle`` only: the refreeze run at once, a scrape that waited on it, and the window after it.
    refreeze_seconds: float | None = None
    scrape_during_refreeze: float | None = None
    after_refreeze: Window | None = None


class PauseRecorder:
    """A ``gc.callbacks`` entry timing every collection by generation."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pauses: list[tuple[int, float]] = []

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self.started))


async def scrape_seconds(session: aiohttp.ClientSession, base: str) -> float:
    return (await scrape(session, base, parse=False)).seconds


async def record_window(session: aiohttp.ClientSession, base: str, minutes: float) -> Window:
    window = Window(minutes * 60, len(gc.get_objects()), gc.get_freeze_count())
    recorder = PauseRecorder()
    gc.callbacks.append(recorder)
    try:
        ends = time.monotonic() + minutes * 60
        while time.monotonic() < ends:
            window.scrapes.append(await scrape_seconds(session, base))
            await asyncio.sleep(max(0.0, min(INTERVAL, ends - time.monotonic())))
    finally:
        gc.callbacks.remove(recorder)
    window.full_pauses = [seconds for generation, seconds in recorder.pauses if generation == 2]
    young = [seconds for generation, seconds in recorder.pauses if generation < 2]
    window.young_collections = len(young)
    window.young_pause_max = max(young, default=0.0)
    return window


async def warm_up(daemon: Daemon, targets: int) -> None:
    """bench/scale.py's warm-up, read from the daemon's states: parsing its whole ``/metrics`` every second
    would be this process's own work, on the daemon's event loop. Then, as long as the settle is pending,
    it waits for it: its own collection is not a pause of the window's."""
    deadline = time.monotonic() + warm_up_seconds(targets, INTERVAL)
    while True:
        done = sum(1 for context in daemon.runtimes.values() for check in WARM_CHECKS
                   if (state := context.state.checks.get(check)) is not None and state.last_success)
        if done >= targets * len(WARM_CHECKS) and (
                daemon.scheduler is None or daemon.scheduler.get_job("\0settle") is None):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"warm-up: only {done} of {targets * len(WARM_CHECKS)} checks have succeeded")
        await asyncio.sleep(1.0)


async def run_mode(mode: str, sim_url: str, workdir: Path, targets: int, minutes: float) -> ModeResult:
    config = workdir / f"{mode}.toml"
    config.write_text(fleet_config(sim_url, targets, INTERVAL, True).replace(
        "[server]\n", '[server]\nlisten = "127.0.0.1:0"\n', 1), encoding="utf-8")
    log_stream = io.StringIO()
    configure_logging(fmt="json", level="info", stream=log_stream)
    # As `comfywatch run` sets it: APScheduler's lines per job run would be this process's own work.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    daemon = Daemon(config)
    if mode == "startup":
        daemon._schedule_settle = lambda when: None  # type: ignore[method-assign]
    task = asyncio.create_task(daemon.run(install_signals=False))
    try:
        while daemon.bound_address is None:
            if task.done():
                raise RuntimeError(f"the daemon stopped: {task.result()}")
            await asyncio.sleep(0.2)
        base = f"http://127.0.0.1:{daemon.bound_address[1]}"
        async with aiohttp.ClientSession() as session:
            await warm_up(daemon, targets)
            await asyncio.sleep(INTERVAL)
            print(f"{mode}: warm, window of {minutes:g} min", file=sys.stderr, flush=True)
            result = ModeResult(mode, targets, await record_window(session, base, minutes))
            if mode == "settle":
                assert daemon.scheduler is not None
                refreeze = daemon.scheduler.get_job("\0refreeze")
                # Run now: the next scrape, sent meanwhile, waits for it on the event loop.
                refreeze.modify(next_run_time=datetime.now(UTC))
                result.scrape_during_refreeze = await scrape_seconds(session, base)
                await wait_for(lambda: any(f["unfrozen"] for f in freezes(log_stream)), 60)
                result.refreeze_seconds = freezes(log_stream)[-1]["seconds"]
                print(f"{mode}: refrozen, window of {minutes:g} min", file=sys.stderr, flush=True)
                result.after_refreeze = await record_window(session, base, minutes)
        result.freezes = freezes(log_stream)
    finally:
        daemon.request_stop()
        await task
    return result


async def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        await asyncio.sleep(0.1)


def freezes(log_stream: io.StringIO) -> list[dict[str, Any]]:
    found = []
    for line in log_stream.getvalue().splitlines():
        if '"objects_frozen"' in line:
            event = json.loads(line)
            found.append({key: event[key] for key in ("objects", "unfrozen", "seconds")})
    return found


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def describe(name: str, window: Window) -> list[str]:
    pauses = window.full_pauses
    return [
        f"  {name}: {window.tracked_objects:,} objects tracked, {window.frozen_objects:,} frozen",
        f"    full collections: {len(pauses)} in {window.seconds / 60:g} min"
        + (f", pauses {' / '.join(map(ms, pauses))}" if 0 < len(pauses) <= 5 else
           f", pause median {ms(statistics.median(pauses))}, largest {ms(max(pauses))}" if pauses else ""),
        f"    younger collections: {window.young_collections}, largest pause {ms(window.young_pause_max)}",
        f"    /metrics once per interval: median {ms(statistics.median(window.scrapes))}, "
        f"largest {ms(max(window.scrapes))} ({len(window.scrapes)} scrapes)",
    ]


def print_human(results: list[ModeResult]) -> None:
    for result in results:
        print(f"{result.mode}, {result.targets} targets")
        print("  freezes logged: " + "; ".join(
            f"{f['objects']:,} objects{' (unfrozen first)' if f['unfrozen'] else ''} in {f['seconds']} s"
            for f in result.freezes))
        print("\n".join(describe("window", result.window)))
        if result.refreeze_seconds is not None and result.scrape_during_refreeze is not None:
            print(f"  hourly refreeze run once: {result.refreeze_seconds} s; a scrape sent with it: "
                  f"{ms(result.scrape_during_refreeze)}")
        if result.after_refreeze is not None:
            print("\n".join(describe("after the refreeze", result.after_refreeze)))


async def run_all(args: argparse.Namespace) -> list[ModeResult]:
    raise_soft_limit()  # for the simulator: each target keeps two connections open
    results = []
    with tempfile.TemporaryDirectory(prefix="comfywatch-gc-") as tmp:
        workdir = Path(tmp)
        with simulator(workdir, args.targets) as sim_url:
            for mode in args.modes:
                results.append(await run_mode(mode, sim_url, workdir, args.targets, args.minutes))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=3000)
    parser.add_argument("--minutes", type=float, default=3.0, help="length of each window")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    stop_children_on_sigterm()
    results = asyncio.run(run_all(args))
    print_human(results)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
