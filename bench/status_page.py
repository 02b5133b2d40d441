"""Benchmark: the status page at fleet scale: render time and size of ``/`` (first page), of a target's page and
of ``/api/v1/status``, and what a target's history costs in memory.

Every target has a full history (``[status] history_points`` points of each series, a canary's runs), jobs in
the last hour, events; one in ten is down, one in ten degraded (a failing canary), one in twenty a Comfy Cloud
account. "model" is building the view of every target (sorting needs all of them), "/" the HTML of the first
page on top of it, "HTTP /" the same page fetched from a real aiohttp server on loopback (the status route of
the exporter app). Prints medians of --repeat runs.

    .venv/bin/python bench/status_page.py [--targets 100 1000] [--repeat 15] [--points 256]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
import tracemalloc
from pathlib import Path

import aiohttp
from aiohttp import web

from comfywatch.errors import Reason
from comfywatch.export.collector import DaemonInfo
from comfywatch.parse.queue import parse_queue
from comfywatch.parse.system import parse_system_stats
from comfywatch.server.app import create_app
from comfywatch.state import TargetState
from comfywatch.status.html import render_fleet, render_target
from comfywatch.status.model import as_json, detail, fleet

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "comfyui"
STEP = 15.0


def make_states(count: int, points: int, now: float) -> list[TargetState]:
    stats = parse_system_stats(json.loads((FIXTURES / "system_stats.json").read_text()))
    queue = parse_queue(json.loads((FIXTURES / "queue_busy.json").read_text()))
    states = []
    start = now - points * STEP
    for index in range(count):
        cloud = index % 20 == 19
        state = TargetState(
            f"gpu-{index:04d}" if not cloud else f"cloud-{index:04d}", "cloud" if cloud else "local",
            f"http://10.0.{index // 250}.{index % 250}:8188",
            endpoints=("user", "billing_balance") if cloud else ("system_stats", "queue", "history"),
            labels={"rack": f"r{index % 8}"}, history_points=points, history_step=STEP)
        state.set_up(True, now=start)
        if not cloud:
            state.apply_system(stats, None)
        elif state.cloud is not None:
            state.cloud.balance_usd, state.cloud.has_funds, state.cloud.subscription_active = 120.0, 1.0, 1.0
            state.cloud.subscription_tier = "pro"
        state.apply_queue(state.queue_tracker.observe(queue, start))
        canary = state.canary("preview-image")
        for point in range(points):
            at = start + point * STEP
            state.on_exchange("user" if cloud else "system_stats", 200, 0.004 + (point % 7) * 0.001)
            if state.cloud is not None:
                state.cloud.balance_usd = 120.0 - point * 0.01
            state.record_history(at)
            canary.success, canary.phases = 1.0, {"submit": 0.002, "queue": 0.001 * (point % 5), "execute": 0.9,
                                                  "fetch": 0.003, "total": 0.91}
            canary.record_run(at)
            if point % 4 == 0:
                state.count_finished_job(Reason.OOM if point % 40 == 0 else None, 3.0, now=at)
        if index % 10 == 3:
            state.set_up(False, Reason.CONNECT, now=now - 30)
        elif index % 10 == 5:
            canary.success, canary.last_reason = 0.0, Reason.OOM
        states.append(state)
    return states


def _median_ms(timings: list[float]) -> float:
    return statistics.median(timings) * 1000


async def _http_times(states: list[TargetState], repeat: int) -> tuple[list[float], int]:
    app = create_app(lambda: (states, DaemonInfo()))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    timings, size = [], 0
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(repeat):
                started = time.perf_counter()
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    body = await response.read()
                timings.append(time.perf_counter() - started)
                size = len(body)
    finally:
        await runner.cleanup()
    return timings, size


def _history_bytes(count: int, points: int, now: float) -> float:
    """Bytes per target allocated by comfywatch/state/history.py (series rings, jobs per minute, events), traced."""
    gc.collect()
    tracemalloc.start()
    states = make_states(count, points, now)
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, "*/comfywatch/state/history.py")])
    tracemalloc.stop()
    del states
    return sum(stat.size for stat in snapshot.statistics("filename")) / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--points", type=int, default=256)
    args = parser.parse_args()
    now = time.time()
    print(f"{'targets':>8} {'model ms':>9} {'/ ms':>7} {'/ bytes':>9} {'HTTP / ms':>10} {'target ms':>10} "
          f"{'target bytes':>13} {'json ms':>8} {'json bytes':>11}")
    for count in args.targets:
        states = make_states(count, args.points, now)
        timings: dict[str, list[float]] = {"model": [], "page": [], "target": [], "json": []}
        page = target_page = document = ""
        for _ in range(args.repeat):
            started = time.perf_counter()
            status = fleet(states, now)
            timings["model"].append(time.perf_counter() - started)
            page = render_fleet(status, page=1)
            timings["page"].append(time.perf_counter() - started)
            started = time.perf_counter()
            target_page = render_target(detail(states[0], now))
            timings["target"].append(time.perf_counter() - started)
            started = time.perf_counter()
            document = json.dumps(as_json(status), allow_nan=False)
            timings["json"].append(time.perf_counter() - started)
        http, http_bytes = asyncio.run(_http_times(states, args.repeat))
        assert http_bytes >= len(page.encode()) * 0.9, "the HTTP page is not the rendered one"
        print(f"{count:>8} {_median_ms(timings['model']):>9.1f} {_median_ms(timings['page']):>7.1f} "
              f"{len(page.encode()):>9} {_median_ms(http):>10.1f} {_median_ms(timings['target']):>10.1f} "
              f"{len(target_page.encode()):>13} {_median_ms(timings['json']):>8.1f} {len(document.encode()):>11}")
    sample = min(200, max(args.targets))
    print(f"history memory per target ({args.points} points, local targets with a canary, traced over {sample}): "
          f"{_history_bytes(sample, args.points, now) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
