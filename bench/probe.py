"""Benchmark: CPU per ``/probe`` of comfywatch (``module=local``) against blackbox_exporter (``http_2xx``).

Starts one ``comfywatch simulate`` server, ``comfywatch run`` (one watched target on a 1 h interval, canary and
WebSocket monitor off, ``[probe] allow`` limited to loopback, module ``local`` running the ``system``, ``queue``
and ``jobs`` checks) and ``prometheus-blackbox-exporter`` (Debian package; ``apt-get install
prometheus-blackbox-exporter``) with an ``http_2xx`` module. After a warm-up of both it runs ``--rounds``
alternating rounds of ``--probes`` probes each:

- comfywatch: ``/probe?target=<sim>&module=local`` (``/api/system_stats``, ``/api/queue`` and ``/api/history``:
  three requests, parsed, rendered. The simulated ComfyUI 0.3.64 answers ``/api/jobs`` 404; the warm-up's
  first probe learns that, and comfywatch's probes ask again only every two minutes, a fourth request then.
  With ``--jobs-api`` the simulator serves ``/api/jobs`` as newer ComfyUI releases do, read instead of
  ``/api/history``);
- blackbox: ``/probe?target=<sim>/api/queue&module=http_2xx`` (one request, status checked).

For each round it reads the exporter's CPU (``/proc/<pid>/stat`` utime + stime) before and after, and the
simulator's too, and times every probe as the client sees it. Alternating rounds in one run expose both
exporters to the same machine load; compare the medians.

``--floor`` adds a third exporter to the rounds: a bare aiohttp server whose ``/probe`` makes the same GETs as
comfywatch's over one kept connection with a bare aiohttp client and answers a constant, nothing parsed or
rendered. It is the least a Python ``/probe`` on aiohttp costs on this machine.

    .venv/bin/python bench/probe.py [--rounds 5] [--probes 300] [--concurrency 1] [--jobs-api] [--floor]
                                    [--json out.json]

The machine is shared and small (2 cores): ``/proc`` counts CPU in 10 ms ticks, so keep a round at a few
hundred probes or more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from scale import REPO, blackbox_exporter, comfywatch, cpu_seconds, stop, wait_file

PROBE_CHECKS = ("system", "queue", "jobs")


def probe_paths(jobs_api: bool) -> list[str]:
    """What a comfywatch probe asks the simulator once it knows whether the server has ``/api/jobs``."""
    jobs = "/api/jobs?limit=64&sort_order=desc" if jobs_api else "/api/history?max_items=64"
    return ["/api/system_stats", "/api/queue", jobs]


@contextlib.contextmanager
def simulator(workdir: Path, jobs_api: bool) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """One ``comfywatch simulate`` server as a process; yields (process, base URL): its CPU is read too."""
    port_file = workdir / "sim.json"
    with (workdir / "sim.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "comfywatch", "simulate", "--port", "0", "--port-file", str(port_file),
             *(["--jobs-api"] if jobs_api else [])],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        yield process, json.loads(wait_file(port_file, process))["url"]
    finally:
        stop(process)


def probe_config(sim_url: str) -> str:
    """The daemon watches the simulator on a long interval (its polls stay out of the rounds); probes go beside."""
    checks = ", ".join(f'"{check}"' for check in PROBE_CHECKS)
    return (
        '[defaults]\ninterval = "1h"\nwebsocket_monitor = false\n\n'
        f'[[targets]]\nname = "watched"\nurl = "{sim_url}"\n  [targets.canary]\n  enabled = false\n\n'
        '[probe]\nallow = ["127.0.0.1"]\n\n'
        f"[modules.local]\nchecks = [{checks}]\n"
    )


async def serve_floor(sim_url: str, jobs_api: bool, ready: Path) -> None:
    """The ``--floor`` exporter (runs until killed)."""
    paths = probe_paths(jobs_api)
    async with aiohttp.ClientSession() as session:

        async def probe(request: web.Request) -> web.Response:
            for path in paths:
                async with session.get(sim_url + path) as response:
                    await response.read()
            return web.Response(text="probe_success 1\n")

        app = web.Application()
        app.router.add_get("/probe", probe)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ready.write_text(f"http://127.0.0.1:{runner.addresses[0][1]}\n", encoding="utf-8")  # noqa: ASYNC240
        await asyncio.Event().wait()


@contextlib.contextmanager
def floor_exporter(workdir: Path, sim_url: str, jobs_api: bool) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The ``--floor`` exporter as a process; yields (process, base URL)."""
    ready = workdir / "floor.ready"
    with (workdir / "floor.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, "--floor-server", sim_url, str(ready), *(["--jobs-api"] if jobs_api else [])],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        yield process, wait_file(ready, process)
    finally:
        stop(process)


@dataclass
class Round:
    exporter: str
    probes: int
    cpu: float
    sim_cpu: float
    wall: float
    latencies: list[float] = field(default_factory=list)
    failed: int = 0

    @property
    def cpu_per_probe(self) -> float:
        return self.cpu / self.probes

    @property
    def sim_cpu_per_probe(self) -> float:
        return self.sim_cpu / self.probes


@dataclass
class Exporter:
    name: str
    pid: int
    #: One probe: True when the exporter reports the probe successful.
    probe: Callable[[], Awaitable[bool]]


async def wait_healthy(session: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as response:
                if response.status == 200:
                    return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout}s")
        await asyncio.sleep(0.1)


def prober(session: aiohttp.ClientSession, url: str, params: dict[str, str], success_line: str
           ) -> Callable[[], Awaitable[bool]]:
    async def one() -> bool:
        async with session.get(url, params=params) as response:
            text = await response.text()
        return response.status == 200 and success_line in text.splitlines()

    return one


async def run_round(exporter: Exporter, sim_pid: int, probes: int, concurrency: int) -> Round:
    latencies: list[float] = []
    outcomes: list[bool] = []
    remaining = iter(range(probes))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            outcomes.append(await exporter.probe())
            latencies.append(time.perf_counter() - started)

    cpu0, sim0, wall0 = cpu_seconds(exporter.pid), cpu_seconds(sim_pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu1, sim1, wall1 = cpu_seconds(exporter.pid), cpu_seconds(sim_pid), time.perf_counter()
    return Round(exporter.name, probes, cpu1 - cpu0, sim1 - sim0, wall1 - wall0, latencies,
                 failed=outcomes.count(False))


async def measure(exporters: list[Exporter], sim_pid: int, rounds: int, probes: int, concurrency: int,
                  warmup: int) -> list[Round]:
    for exporter in exporters:
        for _ in range(warmup):
            await exporter.probe()
    results: list[Round] = []
    for _ in range(rounds):
        for exporter in exporters:
            results.append(await run_round(exporter, sim_pid, probes, concurrency))
    return results


async def bench(args: argparse.Namespace, sim_url: str, sim_pid: int, targets: dict[str, tuple[int, str]]
                ) -> list[Round]:
    """Rounds of the exporters in *targets* (name: pid, base URL), in that order."""
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=2 * args.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        comfywatch_pid, comfywatch_url = targets["comfywatch"]
        blackbox_pid, blackbox_url = targets["blackbox"]
        await wait_healthy(session, f"{comfywatch_url}/healthz")
        await wait_healthy(session, f"{blackbox_url}/-/healthy")
        exporters = [
            Exporter("comfywatch", comfywatch_pid,
                     prober(session, f"{comfywatch_url}/probe", {"target": sim_url, "module": "local"},
                            "comfyui_probe_success 1.0")),
            Exporter("blackbox", blackbox_pid,
                     prober(session, f"{blackbox_url}/probe", {"target": f"{sim_url}/api/queue",
                                                               "module": "http_2xx"}, "probe_success 1")),
        ]
        if "floor" in targets:
            floor_pid, floor_url = targets["floor"]
            exporters.append(Exporter("floor", floor_pid, prober(session, f"{floor_url}/probe", {}, "probe_success 1")))
        return await measure(exporters, sim_pid, args.rounds, args.probes, args.concurrency, args.warmup)


def summarize(rounds: list[Round], args: argparse.Namespace, blackbox_version: str) -> dict[str, Any]:
    by_exporter: dict[str, list[Round]] = {}
    for result in rounds:
        by_exporter.setdefault(result.exporter, []).append(result)
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "rounds": args.rounds, "probes_per_round": args.probes, "concurrency": args.concurrency,
        "comfywatch_checks": list(PROBE_CHECKS), "jobs_api": args.jobs_api, "blackbox_version": blackbox_version,
        "exporters": list(by_exporter),
    }
    for name, results in by_exporter.items():
        summary[name] = {
            "cpu_per_probe_ms": [round(r.cpu_per_probe * 1000, 3) for r in results],
            "cpu_per_probe_median_ms": round(statistics.median(r.cpu_per_probe for r in results) * 1000, 3),
            "wall_per_probe_median_ms": round(statistics.median(
                statistics.median(r.latencies) for r in results) * 1000, 3),
            "simulator_cpu_per_probe_median_ms": round(statistics.median(
                r.sim_cpu_per_probe for r in results) * 1000, 3),
            "failed_probes": sum(r.failed for r in results),
        }
        if name != "blackbox":
            ratios = [mine.cpu_per_probe / theirs.cpu_per_probe
                      for mine, theirs in zip(results, by_exporter["blackbox"], strict=True)]
            summary[name]["ratio_to_blackbox_per_round"] = [round(ratio, 2) for ratio in ratios]
            summary[name]["ratio_to_blackbox_median"] = round(statistics.median(ratios), 2)
    return summary


def print_human(summary: dict[str, Any]) -> None:
    names: list[str] = summary["exporters"]
    print(f"{summary['rounds']} alternating rounds x {summary['probes_per_round']} probes, concurrency "
          f"{summary['concurrency']}; comfywatch module=local ({', '.join(summary['comfywatch_checks'])}; "
          f"simulator {'with' if summary['jobs_api'] else 'without'} /api/jobs) vs "
          f"{summary['blackbox_version']} http_2xx on /api/queue")
    compared = [name for name in names if name != "blackbox"]
    print(f"{'round':<8}" + "".join(f"{name + ' ms CPU/probe':>26}" for name in names)
          + "".join(f"{name + '/blackbox':>22}" for name in compared))
    for index in range(summary["rounds"]):
        print(f"{index + 1:<8}" + "".join(f"{summary[name]['cpu_per_probe_ms'][index]:>26.3f}" for name in names)
              + "".join(f"{summary[name]['ratio_to_blackbox_per_round'][index]:>22.2f}" for name in compared))
    print(f"{'median':<8}" + "".join(f"{summary[name]['cpu_per_probe_median_ms']:>26.3f}" for name in names)
          + "".join(f"{summary[name]['ratio_to_blackbox_median']:>22.2f}" for name in compared)
          + "  (ratios: median of the per-round ratios)")
    for name in names:
        part = summary[name]
        print(f"{name}: wall per probe (median) {part['wall_per_probe_median_ms']} ms, simulator CPU per probe "
              f"{part['simulator_cpu_per_probe_median_ms']} ms, failed probes {part['failed_probes']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per exporter, alternating")
    parser.add_argument("--probes", type=int, default=300, help="probes per round")
    parser.add_argument("--concurrency", type=int, default=1, help="probes in flight")
    parser.add_argument("--warmup", type=int, default=50, help="probes per exporter before the rounds")
    parser.add_argument("--jobs-api", action="store_true", help="the simulator serves /api/jobs (newer ComfyUI)")
    parser.add_argument("--floor", action="store_true", help="also measure a bare aiohttp /probe (see above)")
    parser.add_argument("--floor-server", nargs=2, metavar=("SIM_URL", "READY_FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    if args.floor_server:
        sim_url, ready = args.floor_server
        asyncio.run(serve_floor(sim_url, args.jobs_api, Path(ready)))
        return
    if args.rounds < 1 or args.probes < 1 or args.concurrency < 1:
        parser.error("--rounds, --probes and --concurrency must be at least 1")
    with tempfile.TemporaryDirectory(prefix="comfywatch-probe-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        sim_process, sim_url = stack.enter_context(simulator(workdir, args.jobs_api))
        daemon, daemon_url = stack.enter_context(comfywatch(workdir, probe_config(sim_url)))
        blackbox, blackbox_url, version = stack.enter_context(blackbox_exporter(workdir))
        targets = {"comfywatch": (daemon.pid, daemon_url), "blackbox": (blackbox.pid, blackbox_url)}
        if args.floor:
            floor, floor_url = stack.enter_context(floor_exporter(workdir, sim_url, args.jobs_api))
            targets["floor"] = (floor.pid, floor_url)
        rounds = asyncio.run(bench(args, sim_url, sim_process.pid, targets))
    summary = summarize(rounds, args, version)
    print_human(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if any(summary[name]["failed_probes"] for name in summary["exporters"]):
        sys.exit("some probes failed: the numbers measure failures, not probes")


if __name__ == "__main__":
    main()
