"""Benchmark: ``/metrics`` render time versus number of targets (issue 2: 1000 targets in <= 100 ms).

Builds realistic target states (system stats from the recorded fixture, a busy queue, request counters on
three endpoints, a canary) and times ``render_metrics`` for text and OpenMetrics. Prints medians.

    .venv/bin/python bench/render.py [--targets 1 100 1000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from comfywatch.exporter import DaemonInfo, render_metrics
from comfywatch.parse.queue import parse_queue
from comfywatch.parse.system import parse_system_stats
from comfywatch.state import TargetState

FIXTURES = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "comfyui"


def make_states(count: int, canary: bool = True) -> list[TargetState]:
    stats = parse_system_stats(json.loads((FIXTURES / "system_stats.json").read_text()))
    queue = parse_queue(json.loads((FIXTURES / "queue_busy.json").read_text()))
    states = []
    for index in range(count):
        state = TargetState(f"gpu-{index:04d}", "local", f"http://10.0.{index // 250}.{index % 250}:8188",
                            endpoints=("system_stats", "queue", "history"), labels={"rack": f"r{index % 8}"})
        state.set_up(True)
        state.apply_system(stats, None)
        state.apply_queue(state.queue_tracker.observe(queue, 1000.0))
        for endpoint in ("system_stats", "queue", "history"):
            for _ in range(3):
                state.on_exchange(endpoint, 200, 0.004)
        for seconds in (0.5, 2.0, 7.0):
            state.count_finished_job(None, seconds)
        if canary:
            c = state.canary("preview-image")
            c.runs, c.success, c.phases = 5, 1.0, {"submit": 0.002, "queue": 0.001, "execute": 0.004,
                                                     "fetch": 0.003, "total": 0.01}
            c.duration.observe(0.01)
        for check in ("system", "queue", "jobs"):
            cs = state.check(check)
            cs.duration, cs.last_success = 0.005, 1e9
        states.append(state)
    return states


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(f"{'targets':>8} {'series':>8} {'text ms (median)':>17} {'openmetrics ms':>15} {'bytes':>10}")
    for count in args.targets:
        states = make_states(count)
        info = DaemonInfo()
        timings: dict[bool, list[float]] = {False: [], True: []}
        body = b""
        for _ in range(args.repeat):
            for om in (False, True):
                started = time.perf_counter()
                body = render_metrics(states, daemon=info, openmetrics=om)
                timings[om].append(time.perf_counter() - started)
        text = render_metrics(states, daemon=info, openmetrics=False)
        series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        print(f"{count:>8} {series:>8} {statistics.median(timings[False]) * 1000:>17.1f} "
              f"{statistics.median(timings[True]) * 1000:>15.1f} {len(body):>10}")


if __name__ == "__main__":
    main()
