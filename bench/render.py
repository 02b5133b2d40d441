"""Benchmark: ``/metrics`` render time versus number of targets (target: 1000 targets in <= 100 ms).

Builds realistic target states (system stats from the recorded fixture, a busy queue, request counters on
three endpoints, a canary) and times ``metrics_body`` and its join (the copy sending it in pieces makes), for
text and OpenMetrics. Prints medians.

Before every timed render, each target goes through what one poll cycle changes (three requests counted
and timed, new system and queue values, the checks' durations and timestamps): Prometheus scrapes about
once per poll interval, so this is the steady state of a scrape. Scraped regularly, the daemon encodes a
target's lines when its poll ends (``prepare`` of ``export/collector.py``, see ``ScrapeClock``): "scrape" is
the render that then follows, and "encode/poll" the cost of that encoding per target-poll (paid in the poll,
counted by bench/scale.py, not by bench/poll_cost.py which does not scrape). "nothing ahead" is a scrape that has to
encode every target itself (a daemon scraped for the first time, or less regularly than it polls). "first"
is the very first render (nothing cached) and "unchanged" a second scrape with no poll in between.

    .venv/bin/python bench/render.py [--targets 1 100 1000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from comfywatch.export.collector import DaemonInfo, metrics_body, prepare
from comfywatch.parse.queue import parse_queue
from comfywatch.parse.system import parse_system_stats
from comfywatch.state import TargetState

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "comfyui"


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


def poll(states: list[TargetState], cycle: int) -> None:
    """What one poll cycle of every target changes (see the module docstring)."""
    for state in states:
        for endpoint in ("system_stats", "queue", "history"):
            state.on_exchange(endpoint, 200, 0.004 + (cycle % 7) * 0.001)
        assert state.system is not None and state.queue is not None
        state.system = dataclasses.replace(state.system, ram_free=state.system.ram_free - cycle)
        state.queue = dataclasses.replace(state.queue, running_seconds=state.queue.running_seconds + 15.0)
        for check in ("system", "queue", "jobs"):
            cs = state.check(check)
            cs.duration, cs.last_success = 0.005 + cycle * 1e-6, 1e9 + cycle * 15


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(f"{'targets':>8} {'series':>8} {'first ms':>9} {'scrape ms':>10} {'openmetrics ms':>15} "
          f"{'nothing ahead ms':>17} {'unchanged ms':>13} {'encode/poll µs':>15} {'bytes':>10}")
    for count in args.targets:
        states = make_states(count)
        info = DaemonInfo()
        started = time.perf_counter()
        bytes(metrics_body(states, daemon=info, openmetrics=False))
        first = time.perf_counter() - started
        timings: dict[str, list[float]] = {"text": [], "om": [], "cold": [], "unchanged": [], "encode": []}
        body = b""
        for cycle in range(args.repeat):
            for kind in ("text", "om"):
                poll(states, cycle)
                started = time.perf_counter()
                for state in states:
                    prepare(state)
                timings["encode"].append((time.perf_counter() - started) / count)
                started = time.perf_counter()
                body = bytes(metrics_body(states, daemon=info, openmetrics=kind == "om"))
                timings[kind].append(time.perf_counter() - started)
            poll(states, cycle + args.repeat)
            started = time.perf_counter()
            bytes(metrics_body(states, daemon=info, openmetrics=False))
            timings["cold"].append(time.perf_counter() - started)
            started = time.perf_counter()
            bytes(metrics_body(states, daemon=info, openmetrics=False))
            timings["unchanged"].append(time.perf_counter() - started)
        text = bytes(metrics_body(states, daemon=info, openmetrics=False))
        series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        text_ms, om_ms, cold_ms, same_ms = (statistics.median(timings[k]) * 1000
                                            for k in ("text", "om", "cold", "unchanged"))
        encode_us = statistics.median(timings["encode"]) * 1e6
        print(f"{count:>8} {series:>8} {first * 1000:>9.1f} {text_ms:>10.1f} {om_ms:>15.1f} {cold_ms:>17.1f} "
              f"{same_ms:>13.1f} {encode_us:>15.0f} {len(body):>10}")


if __name__ == "__main__":
    main()
