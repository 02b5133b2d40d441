"""Benchmark: what comfywatch's canary adds to the measured overhead over a bare client.

Overhead is what a canary's ``total`` phase (submit -> output verified) adds on top of the execution time
the server reports from its own timestamps (``execution_start`` -> ``execution_success``): the POST round
trip, the hand-over from the queue to the worker, the event delivery and the fetch (``/history/{id}``
and, for images, ``/view``). It is measured against the simulated ComfyUI running as its own process
(``comfywatch simulate``, as ComfyUI is), with the runner built exactly as the daemon builds it (same
target context, HTTP client and workflow loader). ``--in-process`` runs the simulator on the benchmark's own
event loop instead: every request's server-side handling then counts as overhead too.

Every comfywatch run is followed by one of a *bare client* doing the same protocol steps with nothing else:
a plain ``aiohttp`` session and ``websockets`` connection, ``json.loads`` of each frame, the history read
(and ``/view`` for images) with no parsing beyond the keys it needs, no timeouts, no phases. Its overhead,
measured the same way, is what the server and the transport cost any client on this machine. The measure
is per pair (a comfywatch run and the bare run right after it): comfywatch's overhead minus the bare
client's, which is what comfywatch itself adds. Pairing cancels the machine's drift over the minutes of a
run; the median of the paired differences is printed with its p25 and p75 and a 95 % bootstrap interval,
beside the ratio of the two overhead medians. Warm-up runs are not counted.

Also printed, per built-in canary: comfywatch's median and p90 overhead, the bare client's median, the
median of every phase, the median wall time of a whole run (busy check, WebSocket set-up, close and history
clean-up included), and the CPU time of a whole comfywatch run in this process and (when it has its own) in
the simulator's.

    .venv/bin/python bench/canary_overhead.py [--runs 200] [--warmup 20] [--exec-ms 4] [--in-process] [--json]

The server's timestamps have millisecond resolution, so each overhead sample carries up to +-1 ms of
rounding, and a paired difference up to +-2 ms; over 200 pairs that averages out in the median (the
bootstrap interval shows how well) but widens the p90 and the p25-p75 spread.

``--round-trips`` measures instead the floor under that overhead: the two requests the canary must make
(``POST /prompt``, then ``GET /history/{id}`` of the finished prompt, read while the server is idle), each
with a bare ``aiohttp`` session and through comfywatch's client, medians over ``--runs`` prompts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from scale import stop_children_on_sigterm
from websockets.asyncio.client import connect

from comfywatch.checks.canary import CanaryResult, CanaryRunner
from comfywatch.checks.context import build_context
from comfywatch.config import Config, TargetConfig
from comfywatch.sim.admin import start_sim
from comfywatch.state import CANARY_PHASES
from comfywatch.workflows import CanaryWorkflow, load_workflow, render_workflow

WORKFLOWS = ("builtin:preview-image", "builtin:echo-text")
BOOTSTRAP_RESAMPLES = 2000


@dataclass
class Samples:
    """Everything measured for one canary workflow."""

    workflow: str
    overhead: list[float] = field(default_factory=list)
    bare_overhead: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)
    websocket_runs: int = 0
    #: CPU seconds over the counted runs: this process (comfywatch's canary, plus the simulator when it runs
    #: in-process) and the simulator's own process (None in-process).
    client_cpu: float = 0.0
    server_cpu: float | None = None

    def add(self, result: CanaryResult, wall: float, bare_overhead: float) -> None:
        """One pair: comfywatch's run and the bare client's right after it."""
        if not result.ok or result.server_seconds is None:
            raise SystemExit(f"canary run failed: {result.as_dict()}")
        self.overhead.append(result.phases["total"] - result.server_seconds)
        self.bare_overhead.append(bare_overhead)
        self.server.append(result.server_seconds)
        self.wall.append(wall)
        self.websocket_runs += bool(result.websocket_ok)
        for phase, value in result.phases.items():
            self.phases.setdefault(phase, []).append(value)

    def summary(self) -> dict[str, Any]:
        def ms(values: list[float]) -> float:
            return round(statistics.median(values) * 1000, 3)

        added = [ours - bare for ours, bare in zip(self.overhead, self.bare_overhead, strict=True)]
        quartiles = statistics.quantiles(added, n=4)
        return {
            "workflow": self.workflow,
            "runs": len(self.overhead),
            "added_median_ms": ms(added),
            "added_p25_ms": round(quartiles[0] * 1000, 3),
            "added_p75_ms": round(quartiles[2] * 1000, 3),
            "added_median_ci95_ms": [round(bound * 1000, 3) for bound in bootstrap_median_interval(added)],
            "overhead_ratio": round(statistics.median(self.overhead) / statistics.median(self.bare_overhead), 3),
            "overhead_median_ms": ms(self.overhead),
            "overhead_p90_ms": round(statistics.quantiles(self.overhead, n=10)[-1] * 1000, 3),
            "bare_client_overhead_median_ms": ms(self.bare_overhead),
            "server_execution_median_ms": ms(self.server),
            "phase_median_ms": {phase: ms(self.phases[phase]) for phase in CANARY_PHASES},
            "whole_run_median_ms": ms(self.wall),
            "websocket_runs": self.websocket_runs,
            "client_cpu_per_run_ms": round(self.client_cpu / len(self.overhead) * 1000, 3),
            "server_cpu_per_run_ms": None if self.server_cpu is None
            else round(self.server_cpu / len(self.overhead) * 1000, 3),
        }


def bootstrap_median_interval(values: list[float]) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the median of *values* (fixed seed: a rerun prints the same)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(BOOTSTRAP_RESAMPLES))
    return medians[int(0.025 * BOOTSTRAP_RESAMPLES)], medians[int(0.975 * BOOTSTRAP_RESAMPLES) - 1]


def process_cpu(pid: int) -> float:
    """CPU seconds used so far by every thread of process *pid* (Linux ``schedstat``, in nanoseconds)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):  # a thread that ended between listing and reading
            total += int(stat.read_text(encoding="ascii").split()[0])
    return total / 1e9


@contextlib.contextmanager
def simulator_process(exec_ms: float) -> Iterator[tuple[str, int]]:
    """``comfywatch simulate`` as its own process; yields its URL and pid."""
    with tempfile.TemporaryDirectory(prefix="comfywatch-canary-bench-") as tmp:
        port_file = Path(tmp) / "sim.json"
        process = subprocess.Popen(
            [sys.executable, "-m", "comfywatch", "simulate", "--port", "0", "--port-file", str(port_file),
             "--exec-ms", str(exec_ms)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text(encoding="utf-8").strip():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the simulator did not start")
                time.sleep(0.05)
            yield str(json.loads(port_file.read_text(encoding="utf-8"))["url"]), process.pid
        finally:
            process.terminate()
            process.wait(timeout=10)


async def measure(workflow: str, runs: int, warmup: int, exec_ms: float, in_process: bool) -> Samples:
    if in_process:
        async with await start_sim(exec_ms=exec_ms) as sim:
            return await measure_against(sim.url, workflow, runs, warmup, None)
    with simulator_process(exec_ms) as (url, pid):
        return await measure_against(url, workflow, runs, warmup, pid)


async def measure_against(url: str, workflow: str, runs: int, warmup: int, server_pid: int | None) -> Samples:
    samples = Samples(workflow)
    runtime = build_context(Config(), TargetConfig(name="bench", url=url))
    assert runtime.local is not None
    name = workflow.removeprefix("builtin:")
    canary = load_workflow(workflow, name)
    runner = CanaryRunner(runtime.local, canary, timeout=10.0, when_busy="skip")
    session = aiohttp.ClientSession()
    server_cpu = 0.0
    try:
        for index in range(warmup + runs):
            # comfywatch's run alone is inside the CPU windows (the simulator's read outside this process's);
            # the bare run follows it, outside both.
            server_started = process_cpu(server_pid) if server_pid is not None else 0.0
            client_started = time.process_time()
            started = time.perf_counter()
            result = await runner.run()
            wall = time.perf_counter() - started
            client_cpu = time.process_time() - client_started
            server_ran = process_cpu(server_pid) - server_started if server_pid is not None else 0.0
            bare = await bare_run(session, url, canary)
            if index >= warmup:
                samples.add(result, wall, bare)
                samples.client_cpu += client_cpu
                server_cpu += server_ran
        if server_pid is not None:
            samples.server_cpu = server_cpu
    finally:
        await session.close()
        await runtime.close()
    return samples


async def bare_run(session: aiohttp.ClientSession, url: str, canary: CanaryWorkflow) -> float:
    """One canary by the bare client (see the module docstring); returns its overhead in seconds."""
    async with session.get(f"{url}/api/queue") as response:
        await response.read()
    client_id = uuid.uuid4().hex
    ws_url = url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}"
    async with connect(ws_url, compression=None, ping_interval=None, max_size=None) as ws:
        while json.loads(await ws.recv()).get("type") != "status":
            pass
        prompt, _ = render_workflow(canary.template)
        started = time.perf_counter()
        async with session.post(f"{url}/api/prompt", json={"prompt": prompt, "client_id": client_id}) as response:
            prompt_id = (await response.json())["prompt_id"]
        images: list[dict[str, str]] = []
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                continue
            event = json.loads(message)
            data = event.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if event["type"] == "executed":
                images.extend((data.get("output") or {}).get("images") or [])
            elif event["type"] == "executing" and data.get("node") is None:
                break

        async def history() -> dict[str, Any]:
            async with session.get(f"{url}/api/history/{prompt_id}") as response:
                entry: dict[str, Any] = (await response.json())[prompt_id]
                return entry

        async def view(image: dict[str, str]) -> bytes:
            async with session.get(f"{url}/api/view", params=image) as response:
                return await response.read()

        entry, *pngs = await asyncio.gather(history(), *(view(image) for image in images))
        elapsed = time.perf_counter() - started
    assert entry["status"]["status_str"] == "success" and all(png[:4] == b"\x89PNG" for png in pngs)
    stamps = {event: data["timestamp"] for event, data in entry["status"]["messages"]}
    async with session.post(f"{url}/api/history", json={"delete": [prompt_id]}) as response:
        await response.read()
    return elapsed - float(stamps["execution_success"] - stamps["execution_start"]) / 1000


async def round_trips(url: str, runs: int, warmup: int) -> dict[str, float]:
    """Median ms of POST /prompt and GET /history/{id}, bare aiohttp and comfywatch's LocalApi (see above)."""
    runtime = build_context(Config(), TargetConfig(name="bench", url=url))
    api = runtime.local
    assert api is not None
    workflow = load_workflow("builtin:echo-text", "echo-text")
    timings: dict[str, list[float]] = {"bare POST /prompt": [], "comfywatch POST /prompt": [],
                                       "bare GET /history/{id}": [], "comfywatch GET /history/{id}": []}

    async def finished(session: aiohttp.ClientSession, prompt_id: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            async with session.get(f"{url}/api/history/{prompt_id}") as response:
                if prompt_id in await response.json():
                    return
            await asyncio.sleep(0.01)  # pacing a poll of the server, not a wait for this process
        raise SystemExit(f"prompt {prompt_id} did not finish")

    async with aiohttp.ClientSession() as session:
        try:
            for index in range(warmup + runs):
                samples: dict[str, float] = {}
                prompt, _ = render_workflow(workflow.template)
                started = time.perf_counter()
                async with session.post(f"{url}/api/prompt",
                                        json={"prompt": prompt, "client_id": uuid.uuid4().hex}) as response:
                    prompt_id = (await response.json())["prompt_id"]
                samples["bare POST /prompt"] = time.perf_counter() - started
                await finished(session, prompt_id)
                started = time.perf_counter()
                async with session.get(f"{url}/api/history/{prompt_id}") as response:
                    await response.read()
                samples["bare GET /history/{id}"] = time.perf_counter() - started
                prompt, _ = render_workflow(workflow.template)
                started = time.perf_counter()
                accepted = await api.submit(prompt, uuid.uuid4().hex)
                samples["comfywatch POST /prompt"] = time.perf_counter() - started
                await finished(session, accepted.prompt_id)
                started = time.perf_counter()
                await api.history_entry(accepted.prompt_id)
                samples["comfywatch GET /history/{id}"] = time.perf_counter() - started
                await api.delete_history([prompt_id, accepted.prompt_id])
                if index >= warmup:
                    for name, seconds in samples.items():
                        timings[name].append(seconds)
        finally:
            await runtime.close()
    return {name: round(statistics.median(values) * 1000, 3) for name, values in timings.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--exec-ms", type=float, default=4.0, help="simulated execution time of the busy node")
    parser.add_argument("--workflow", action="append", choices=WORKFLOWS, help="default: both built-ins")
    parser.add_argument("--in-process", action="store_true",
                        help="run the simulator on this process's event loop (its work then counts as overhead)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--round-trips", action="store_true",
                        help="time the two required requests alone, bare and through comfywatch's client")
    args = parser.parse_args()
    stop_children_on_sigterm()
    # The runner logs a debug line per success: keep the benchmark's own output readable (and cheap).
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    if args.round_trips:
        with simulator_process(args.exec_ms) as (url, _):
            medians = asyncio.run(round_trips(url, args.runs, args.warmup))
        for name, value in medians.items():
            print(f"{name:<30} {value:>7.3f} ms (median of {args.runs})")
        return
    summaries = [asyncio.run(measure(w, args.runs, args.warmup, args.exec_ms, args.in_process)).summary()
                 for w in (args.workflow or WORKFLOWS)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    environment = {"python": platform.python_version(), "cpus": os.cpu_count(), "load_1m": round(load, 2),
                   "exec_ms": args.exec_ms, "simulator": "in-process" if args.in_process else "own process"}
    if args.json:
        print(json.dumps({"environment": environment, "results": summaries}, indent=2))
        return
    print(f"python {environment['python']}, {environment['cpus']} CPUs, load average {load:.2f}, "
          f"simulator {environment['simulator']}, simulated execution {args.exec_ms:g} ms, "
          f"{args.runs} runs after {args.warmup} warm-up")
    print("comfywatch adds (its overhead minus the bare client's, per pair of runs):")
    print(f"{'canary':<15} {'median':>8} {'p25':>8} {'p75':>8} {'95% CI of median':>18} "
          f"{'ratio of medians':>17}   (ms; the ratio has none)")
    for s in summaries:
        low, high = s["added_median_ci95_ms"]
        print(f"{s['workflow'].removeprefix('builtin:'):<15} {s['added_median_ms']:>8.3f} "
              f"{s['added_p25_ms']:>8.3f} {s['added_p75_ms']:>8.3f} {f'{low:.3f} .. {high:.3f}':>18} "
              f"{s['overhead_ratio']:>17.3f}")
    print(f"{'canary':<15} {'overhead median':>15} {'p90':>8} {'bare client':>11} {'server':>8} {'total':>8} "
          f"{'submit':>7} {'queue':>7} {'execute':>8} {'fetch':>7} {'whole run':>10} "
          f"{'cpu: ours':>10} {'server':>7}   (ms)")
    for s in summaries:
        p = s["phase_median_ms"]
        print(f"{s['workflow'].removeprefix('builtin:'):<15} {s['overhead_median_ms']:>15.3f} "
              f"{s['overhead_p90_ms']:>8.3f} {s['bare_client_overhead_median_ms']:>11.3f} "
              f"{s['server_execution_median_ms']:>8.3f} {p['total']:>8.3f} "
              f"{p['submit']:>7.3f} {p['queue']:>7.3f} {p['execute']:>8.3f} {p['fetch']:>7.3f} "
              f"{s['whole_run_median_ms']:>10.3f} {s['client_cpu_per_run_ms']:>10.3f} "
              f"{'-' if s['server_cpu_per_run_ms'] is None else format(s['server_cpu_per_run_ms'], '.3f'):>7}")
    if any(s["websocket_runs"] != s["runs"] for s in summaries):
        print("warning: some runs fell back to polling /history", file=sys.stderr)


if __name__ == "__main__":
    main()
