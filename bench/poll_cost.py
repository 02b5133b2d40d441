"""Benchmark: comfywatch's CPU time per target per poll cycle for 1, 100 and 1000 targets (target: <= 1 ms).

For each size it runs ``comfywatch run`` as a process against one ``comfywatch simulate --targets N`` process
(canary off, so a poll cycle of a target is its three checks: ``/system_stats``, ``/queue``, ``/history``),
waits until every target has been polled and its node catalogue read, then reads the daemon's CPU time
(``/proc/<pid>/stat`` utime + stime) over ``--cycles`` intervals without scraping in between. Polls are
counted by comfywatch itself (``comfywatch_polls_total``, read just outside the window). It also measures an
idle daemon (one target on a 1 h interval) over the same window: the fixed cost of the heartbeat and
scheduler, which dominates at one target.

    .venv/bin/python bench/poll_cost.py [--targets 1 100 1000] [--interval 15] [--cycles 3] [--websocket-monitor on]

``--websocket-monitor`` (``on``, the shipped default, ``off``, or ``both``): with the monitoring WebSocket,
polls of a quiet target that was up ask nothing (``state/trackers.py``, ``QuietQueue``: three polls in four at
15 s); the sockets' own CPU (pings, frames) is counted too. Without it every poll makes the three requests.

Reported per size: total CPU / target-polls, and the marginal cost (idle CPU subtracted). The machine
is shared and small (2 cores): numbers are noisy; compare medians of several runs. ``/proc`` counts CPU in
10 ms ticks, so the 1-target row is only a rough figure.

``--breakdown`` then splits the cost of one target-poll in-process (``time.process_time``, 100 targets):
the three GETs with a bare aiohttp session, the same through comfywatch's ``LocalApi``/``HttpClient``, the
three checks (parsing and state updates included), and what APScheduler job runs cost with nothing in
them (reported for three runs; the daemon shares one run among the targets of a poll slot, see
``comfywatch/daemon/slots.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from scale import comfywatch, cpu_split, fleet_config, scrape, simulator, stop_children_on_sigterm, warm_up

from comfywatch.daemon.fdlimit import raise_soft_limit


@dataclass
class Cost:
    targets: int
    window: float
    cpu: float
    polls: float
    rounds: int
    system_cpu: float = 0.0

    def per_poll(self, idle_cpu_per_second: float = 0.0) -> float:
        return (self.cpu - idle_cpu_per_second * self.window) / self.polls if self.polls else float("nan")


async def measure(pid: int, base: str, targets: int, interval: float, cycles: int, rounds: int) -> Cost:
    """CPU of *pid* over *rounds* windows of *cycles* intervals each (summed), after a warm-up."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await warm_up(session, base, targets, interval)
        await asyncio.sleep(interval)
        cost = Cost(targets, 0.0, 0.0, 0.0, rounds)
        for _ in range(rounds):
            before = await scrape(session, base)
            (user0, sys0), wall0 = cpu_split(pid), time.monotonic()
            await asyncio.sleep(interval * cycles)
            (user1, sys1), wall1 = cpu_split(pid), time.monotonic()
            after = await scrape(session, base)
            cost.window += wall1 - wall0
            cost.cpu += user1 - user0 + sys1 - sys0
            cost.system_cpu += sys1 - sys0
            cost.polls += after.polls - before.polls
    return cost


async def _per_poll(poll: Callable[[int], Awaitable[object]], targets: int, rounds: int) -> float:
    """CPU seconds per call of *poll*, over *rounds* rounds of all targets polled concurrently."""
    await asyncio.gather(*(poll(i) for i in range(targets)))  # warm-up: connections open
    started = time.process_time()
    for _ in range(rounds):
        await asyncio.gather(*(poll(i) for i in range(targets)))
    return (time.process_time() - started) / (targets * rounds)


async def breakdown(sim_url: str, targets: int, rounds: int) -> dict[str, float]:
    """Milliseconds of CPU per target-poll for each layer (see the module docstring)."""
    out = await breakdown_no_sched(sim_url, targets, rounds)
    out["APScheduler, 3 empty job runs"] = round(3 * 1000 * await scheduler_cost(jobs=3 * targets, interval=3.0,
                                                                              seconds=9.0), 3)
    return out


async def breakdown_no_sched(sim_url: str, targets: int, rounds: int) -> dict[str, float]:
    """The in-process layers of the breakdown, without the scheduler."""
    from comfywatch.checks import jobs as jobs_check
    from comfywatch.checks import queue as queue_check
    from comfywatch.checks import system as system_check
    from comfywatch.checks.context import build_context
    from comfywatch.config import Config, TargetConfig

    out: dict[str, float] = {}
    sessions = [aiohttp.ClientSession() for _ in range(targets)]

    async def raw(i: int) -> None:
        for path in ("system_stats", "queue", "history?max_items=64"):
            async with sessions[i].get(f"{sim_url}/t/{i}/api/{path}") as response:
                await response.read()

    out["bare aiohttp, 3 GETs"] = await _per_poll(raw, targets, rounds)
    for session in sessions:
        await session.close()
    config = Config()
    runtimes = [build_context(config, TargetConfig(name=f"t{i}", url=f"{sim_url}/t/{i}")) for i in range(targets)]

    async def api(i: int) -> None:
        local = runtimes[i].local
        assert local is not None
        await local.system_stats(record_phases=True)
        await local.queue()
        await local.history(64)

    async def checks(i: int) -> None:
        await system_check.run(runtimes[i])
        await queue_check.run(runtimes[i])
        await jobs_check.run(runtimes[i])

    out["LocalApi/HttpClient, 3 calls"] = await _per_poll(api, targets, rounds)
    out["system+queue+jobs checks"] = await _per_poll(checks, targets, rounds)
    for runtime in runtimes:
        await runtime.close()
    return {name: round(value * 1000, 3) for name, value in out.items()}


async def scheduler_cost(jobs: int, interval: float, seconds: float) -> float:
    """CPU seconds per run of an empty coroutine job, scheduled like the daemon schedules its checks."""
    runs = 0

    async def job() -> None:
        # Like Daemon.run_check around a check: a timeout scope and one suspension point.
        nonlocal runs
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
            runs += 1

    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler = AsyncIOScheduler(timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1})
    scheduler.start()
    now = datetime.now(UTC)
    for index in range(jobs):
        scheduler.add_job(job, IntervalTrigger(seconds=interval, jitter=interval * 0.05), id=str(index),
                          next_run_time=now + timedelta(seconds=index * interval / jobs))
    await asyncio.sleep(interval)
    before, started = runs, time.process_time()
    await asyncio.sleep(seconds)
    cost = (time.process_time() - started) / max(1, runs - before)
    scheduler.shutdown(wait=False)
    return cost


def idle_config(sim_url: str) -> str:
    return ('[defaults]\ninterval = "1h"\nwebsocket_monitor = false\n\n[[targets]]\nname = "idle"\n'
            f'url = "{sim_url}/t/0"\n  [targets.canary]\n  enabled = false\n')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--interval", type=float, default=15.0, help="poll interval in seconds")
    parser.add_argument("--cycles", type=int, default=3, help="intervals per measured window")
    parser.add_argument("--rounds", type=int, default=1, help="windows per size (summed)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--breakdown", action="store_true", help="also split the cost by layer (in-process)")
    parser.add_argument("--websocket-monitor", choices=("on", "off", "both"), default="on")
    args = parser.parse_args()
    raise_soft_limit()  # for the simulator
    stop_children_on_sigterm()
    results: dict[str, object] = {"interval_s": args.interval, "cycles": args.cycles, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="comfywatch-pollcost-") as tmp, \
            simulator(Path(tmp), max(args.targets)) as sim:
        workdir = Path(tmp)
        with comfywatch(workdir, idle_config(sim)) as (process, base):
            idle = asyncio.run(measure(process.pid, base, 0, args.interval, args.cycles, args.rounds))
        idle_rate = idle.cpu / idle.window
        results["idle_cpu_percent"] = round(100 * idle_rate, 3)
        print(f"idle daemon: {100 * idle_rate:.2f} % of one core "
              f"({idle.cpu:.2f} s CPU in {idle.window:.0f} s)")
        print(f"{'monitor':>8} {'targets':>8} {'polls':>7} {'CPU s':>7} {'CPU %':>7} {'kernel':>7} "
              f"{'ms/target-poll':>15} {'marginal ms':>12}")
        sizes: list[dict[str, float]] = []
        monitors = [True, False] if args.websocket_monitor == "both" else [args.websocket_monitor == "on"]
        for monitor, count in ((monitor, count) for monitor in monitors for count in args.targets):
            config = fleet_config(sim, count, args.interval, websocket_monitor=monitor)
            with comfywatch(workdir, config) as (process, base):
                cost = asyncio.run(measure(process.pid, base, count, args.interval, args.cycles, args.rounds))
            row = {
                "websocket_monitor": monitor,
                "targets": count,
                "polls": cost.polls,
                "cpu_s": round(cost.cpu, 3),
                "cpu_percent": round(100 * cost.cpu / cost.window, 2),
                "kernel_share": round(cost.system_cpu / cost.cpu, 2) if cost.cpu else 0.0,
                "ms_per_target_poll": round(cost.per_poll() * 1000, 3),
                "marginal_ms_per_target_poll": round(cost.per_poll(idle_rate) * 1000, 3),
            }
            sizes.append(row)
            print(f"{'on' if monitor else 'off':>8} {count:>8} {int(cost.polls):>7} {cost.cpu:>7.2f} "
                  f"{row['cpu_percent']:>7} {row['kernel_share']:>7} "
                  f"{row['ms_per_target_poll']:>15} {row['marginal_ms_per_target_poll']:>12}")
        results["sizes"] = sizes
        for monitor in monitors:
            marginal = [s["marginal_ms_per_target_poll"] for s in sizes
                        if s["targets"] >= 100 and s["websocket_monitor"] == monitor]
            if marginal:
                verdict = "PASS" if statistics.median(marginal) <= 1.0 else "FAIL"
                print(f"monitor {'on' if monitor else 'off'}: median marginal cost at >= 100 targets: "
                      f"{statistics.median(marginal):.3f} ms per target-poll ({verdict}: target <= 1 ms)")
        if args.breakdown:
            layers = asyncio.run(breakdown(sim, min(100, max(args.targets)), rounds=10))
            results["breakdown_ms_per_target_poll"] = layers
            print("in-process CPU per target-poll, by layer:")
            for name, value in layers.items():
                print(f"  {name:<34} {value:>7.3f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
