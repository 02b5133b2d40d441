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

``--floor`` adds three exporters to the rounds, bare aiohttp servers whose ``/probe`` answers a constant, nothing
parsed or rendered:

- ``floor``: makes the same GETs as comfywatch's over one kept connection with a bare aiohttp client. It is the
  least a Python ``/probe`` on aiohttp costs on this machine;
- ``floor-raw``: writes the same GETs at once (pipelined) on a kept connection of a hand-written HTTP/1.1
  client and reads the three answers by their ``Content-Length``: the least a second, hand-written client for
  probes could cost;
- ``floor-none``: makes no request: aiohttp's server alone.

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
from scale import REPO, blackbox_exporter, comfywatch, cpu_seconds, stop, stop_children_on_sigterm, wait_file
from yarl import URL

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


#: The ``--floor`` exporters, named by how their ``/probe`` asks the simulator (see above).
FLOORS = ("floor", "floor-raw", "floor-none")


class PipelinedConnection(asyncio.Protocol):
    """The ``floor-raw`` client: one kept HTTP/1.1 connection, one batch at a time; :meth:`get_all` writes every
    GET at once and waits for as many answers, each read by its ``Content-Length`` (the simulator always sends
    one)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._expected = 0
        self._statuses: list[int] = []
        self._done: asyncio.Future[list[int]] | None = None
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError("the simulator closed the connection"))

    def _fail(self, error: ConnectionError) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(error)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._statuses) < self._expected:
            head_end = self._buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            lines = bytes(self._buffer[:head_end]).split(b"\r\n")
            fields = {name.strip().lower(): value.strip()
                      for name, _, value in (line.partition(b":") for line in lines[1:])}
            if b"content-length" not in fields:
                self._fail(ConnectionError("an answer without Content-Length"))
                self.close()
                return
            end = head_end + 4 + int(fields[b"content-length"])
            if len(self._buffer) < end:
                return
            self._statuses.append(int(lines[0].split(b" ", 2)[1]))
            del self._buffer[:end]
        if self._done is not None and not self._done.done():
            self._done.set_result(self._statuses)

    async def get_all(self, host: str, paths: list[str]) -> list[int]:
        """The answers' statuses, in order. On any failure or cancellation the connection is closed: answers left
        unread would be taken for the next batch's."""
        assert self._transport is not None
        if self.closed:
            raise ConnectionError("the connection is closed")
        self._expected, self._statuses = len(paths), []
        self._done = asyncio.get_running_loop().create_future()
        self._transport.write(b"".join(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n".encode("ascii")
            for path in paths))
        try:
            return await self._done
        except BaseException:
            self.close()
            raise


async def serve_floor(sim_url: str, jobs_api: bool, ready: Path, name: str) -> None:
    """The ``--floor`` exporter *name*, one of :data:`FLOORS` (runs until killed)."""
    if name not in FLOORS:
        raise ValueError(f"unknown floor {name!r}")
    paths = probe_paths(jobs_api)
    sim = URL(sim_url)
    sim_host, sim_port = str(sim.host), int(sim.port or 80)
    host = f"{sim_host}:{sim_port}"
    #: floor-raw's kept connections not in use; a probe takes one (or opens one) and gives it back when done.
    idle: list[PipelinedConnection] = []
    async with aiohttp.ClientSession() as session:

        async def probe(request: web.Request) -> web.Response:
            statuses: list[int] = []
            if name == "floor":
                for path in paths:
                    async with session.get(sim_url + path) as response:
                        await response.read()
                        statuses.append(response.status)
            elif name == "floor-raw":
                while idle and idle[-1].closed:
                    idle.pop()
                if idle:
                    connection = idle.pop()
                else:
                    _, connection = await asyncio.get_running_loop().create_connection(
                        PipelinedConnection, sim_host, sim_port)
                statuses = await connection.get_all(host, paths)
                idle.append(connection)
            success = all(status == 200 for status in statuses)
            return web.Response(text=f"probe_success {int(success)}\n")

        app = web.Application()
        app.router.add_get("/probe", probe)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ready.write_text(f"http://127.0.0.1:{runner.addresses[0][1]}\n", encoding="utf-8")  # noqa: ASYNC240
        await asyncio.Event().wait()


@contextlib.contextmanager
def floor_exporter(workdir: Path, sim_url: str, jobs_api: bool, name: str
                   ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The ``--floor`` exporter *name* as a process; yields (process, base URL)."""
    ready = workdir / f"{name}.ready"
    with (workdir / f"{name}.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, __file__, "--floor-server", sim_url, str(ready), name,
             *(["--jobs-api"] if jobs_api else [])],
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
        for name in FLOORS:
            if name in targets:
                floor_pid, floor_url = targets[name]
                exporters.append(Exporter(name, floor_pid,
                                          prober(session, f"{floor_url}/probe", {}, "probe_success 1")))
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
    parser.add_argument("--floor", action="store_true", help="also measure three bare /probe servers (see above)")
    parser.add_argument("--floor-server", nargs=3, metavar=("SIM_URL", "READY_FILE", "NAME"), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    if args.floor_server:
        sim_url, ready, name = args.floor_server
        asyncio.run(serve_floor(sim_url, args.jobs_api, Path(ready), name))
        return
    if args.rounds < 1 or args.probes < 1 or args.concurrency < 1:
        parser.error("--rounds, --probes and --concurrency must be at least 1")
    stop_children_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="comfywatch-probe-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        sim_process, sim_url = stack.enter_context(simulator(workdir, args.jobs_api))
        daemon, daemon_url = stack.enter_context(comfywatch(workdir, probe_config(sim_url)))
        blackbox, blackbox_url, version = stack.enter_context(blackbox_exporter(workdir))
        targets = {"comfywatch": (daemon.pid, daemon_url), "blackbox": (blackbox.pid, blackbox_url)}
        if args.floor:
            for name in FLOORS:
                floor, floor_url = stack.enter_context(floor_exporter(workdir, sim_url, args.jobs_api, name))
                targets[name] = (floor.pid, floor_url)
        rounds = asyncio.run(bench(args, sim_url, sim_process.pid, targets))
    summary = summarize(rounds, args, version)
    print_human(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if any(summary[name]["failed_probes"] for name in summary["exporters"]):
        sys.exit("some probes failed: the numbers measure failures, not probes")


if __name__ == "__main__":
    main()
