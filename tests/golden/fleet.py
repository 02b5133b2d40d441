"""A small simulated fleet polled by the daemon's own checks under a fixed clock, rendered as ``/metrics``.

``python -m tests.golden.fleet OUT`` writes ``{"text": ..., "openmetrics": ...}`` to OUT: the exposition in both formats
after two rounds of every scheduled check. It runs as a process of its own: the clock is frozen for the whole
process (``time.time``/``time_ns``: the daemon's timestamps, the simulators' history and Cloud clocks, HTTP
Date headers), and the process-wide counters (truncations, encode failures) start at zero.

The fleet, in one event loop on loopback:

- ``gpu-a``: a healthy ComfyUI 0.3.64 (``/t/0`` of a simulator) with two finished jobs and a canary;
- ``gpu-b``: its sibling ``/t/1`` with a finished, an ``execution_error`` and an ``oom`` job, no canary;
- ``gpu-c``: a newer ComfyUI with ``/api/jobs``, one finished job and one left pending by a dead worker;
- ``down``: a port nothing listens on (its canary on, as by default);
- ``cloud``: a simulated Comfy Cloud account with two finished jobs and one that ran out of memory.

The daemon is the real one (configuration, targets, checks, scheduler jobs) with its scheduler never started:
each round runs every scheduled job once, in a fixed order, the way the daemon's scheduler would start them
(a poll slot's targets through ``run_group``, any other job through the function the daemon scheduled).
The WebSocket monitor is off: its events arrive when the loop gets to them, which no fixed clock can order.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from comfywatch.daemon.service import Daemon
from comfywatch.export.collector import metrics_body
from comfywatch.sim.admin import SimHandle, start_sim
from tests.ports import closed_port

__all__ = ["CLOUD_KEY", "FrozenClock", "fleet_exposition"]

#: 2026-01-01T00:00:00Z: every timestamp the daemon and the simulators take.
START_NS = 1_767_225_600 * 10**9
#: The daemon's poll interval: the second round runs this much later.
INTERVAL_S = 15
CLOUD_KEY = "ck-golden-fleet-0123456789"
CLOUD_PROMPT: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}
#: Real seconds a simulator may take for what is asked of it (its jobs run on the event loop's own clock).
DEADLINE_S = 20.0


class FrozenClock:
    """``time.time`` and ``time.time_ns`` for the whole process: fixed until :meth:`advance`."""

    def __init__(self, start_ns: int) -> None:
        self.now_ns = start_ns

    def time(self) -> float:
        return self.now_ns / 10**9

    def time_ns(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 10**9)

    def install(self) -> None:
        time.time = self.time
        time.time_ns = self.time_ns


async def until(what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.01)


def config_text(local: SimHandle, newer: SimHandle, cloud: SimHandle, down_port: int, state_dir: Path) -> str:
    return f"""
state_dir = "{state_dir}"

[defaults]
interval = "{INTERVAL_S}s"
timeout = "5s"
websocket_monitor = false

[[targets]]
name = "gpu-a"
url = "{local.target_url(0)}"
labels = {{ rack = "r1" }}

[[targets]]
name = "gpu-b"
url = "{local.target_url(1)}"
  [targets.canary]
  enabled = false

[[targets]]
name = "gpu-c"
url = "{newer.url}"
  [targets.canary]
  enabled = false

[[targets]]
name = "down"
url = "http://127.0.0.1:{down_port}"

[[targets]]
name = "cloud"
kind = "cloud"
url = "{cloud.url}"
max_requests_per_minute = 100000
"""


async def run_round(daemon: Daemon) -> None:
    """Every scheduled check once: the poll slots first (targets in slot order), then the other jobs by id."""
    assert daemon.scheduler is not None
    jobs = sorted(daemon.scheduler.get_jobs(), key=lambda job: job.id)
    for job in jobs:
        if job.func == daemon.run_slot:
            (slot,) = job.args
            for state, members in slot.members.values():
                await daemon.run_group(state, members)
    for job in jobs:
        if job.args and job.args[0] == daemon.run_group:
            await job.func(*job.args)


async def ended_jobs(sim: SimHandle, target: int | None, count: int, fault: str | None = None) -> None:
    """*count* background jobs on *target*, ended (failed, under *fault*, which is cleared again)."""
    ended = sim.state(target)["jobs_finished"]
    if fault is not None:
        await sim.set_faults([fault], target)
    for _ in range(count):
        await sim.submit(target, job_ms=5)
    await until(f"{count} jobs ended on target {target}", lambda: sim.state(target)["jobs_finished"] == ended + count)
    if fault is not None:
        await sim.set_faults([], target)


async def local_jobs(local: SimHandle, newer: SimHandle) -> None:
    """Finished jobs on gpu-a and gpu-b (one failing each way), gpu-c's finished job and its pending one."""
    await ended_jobs(local, 0, 2)
    await ended_jobs(local, 1, 1)
    await ended_jobs(local, 1, 1, "execution_error")
    await ended_jobs(local, 1, 1, "oom")
    await ended_jobs(newer, None, 1)
    await newer.set_faults(["worker_dead"])
    await newer.submit(job_ms=5)
    await until("gpu-c's pending job", lambda: len(newer.state()["queue_pending"]) == 1)


async def cloud_jobs(cloud: SimHandle, clock: FrozenClock) -> None:
    """Two jobs that finish and one that runs out of memory, each past its simulated run time."""

    async def submit(session: aiohttp.ClientSession) -> None:
        async with session.post(f"{cloud.url}/api/prompt", json={"prompt": CLOUD_PROMPT}) as response:
            assert response.status == 200, await response.text()

    async with aiohttp.ClientSession(headers={"X-API-Key": CLOUD_KEY}) as session:
        await submit(session)
        await submit(session)
        clock.advance(1)
        await cloud.set_faults(["oom"])
        await submit(session)
        clock.advance(1)
        await cloud.set_faults([])
    await until("the Cloud jobs ended", lambda: cloud.state()["jobs"] == {"error": 1, "success": 2})


async def fleet_exposition(state_dir: Path, clock: FrozenClock) -> dict[str, str]:
    """Both renderings of ``/metrics`` after two rounds over the fleet, one interval of *clock* apart."""
    second_round_ns = clock.now_ns + INTERVAL_S * 10**9
    async with (
        await start_sim(targets=2) as local,
        await start_sim(jobs_api=True) as newer,
        await start_sim(cloud=True, cloud_api_keys=[CLOUD_KEY]) as cloud,
    ):
        config_path = state_dir / "comfywatch.toml"
        config_path.write_text(config_text(local, newer, cloud, closed_port(), state_dir), encoding="utf-8")
        daemon = Daemon(config_path, env={"COMFYWATCH_CLOUD_API_KEY": CLOUD_KEY})
        daemon.scheduler = AsyncIOScheduler(timezone=UTC)
        await daemon.apply_config(daemon.load())
        try:
            await run_round(daemon)
            await local_jobs(local, newer)
            await cloud_jobs(cloud, clock)
            clock.now_ns = second_round_ns
            await run_round(daemon)
            states, info = daemon.snapshot()
            return {
                "text": bytes(metrics_body(states, daemon=info, openmetrics=False)).decode(),
                "openmetrics": bytes(metrics_body(states, daemon=info, openmetrics=True)).decode(),
            }
        finally:
            await daemon.shutdown()


def main() -> None:
    """Write both renderings as JSON to the file named by the only argument (stdout carries the logs)."""
    clock = FrozenClock(START_NS)
    clock.install()
    with tempfile.TemporaryDirectory() as state_dir:
        rendered = asyncio.run(fleet_exposition(Path(state_dir), clock))
    Path(sys.argv[1]).write_text(json.dumps(rendered), encoding="utf-8")


if __name__ == "__main__":
    main()
