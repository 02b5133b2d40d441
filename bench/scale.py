"""Benchmark: one comfywatch daemon watching 1000 simulated targets, compared with blackbox_exporter.

Starts ``comfywatch simulate --targets N`` (one process serving ``/t/0`` ... ``/t/N-1``) and ``comfywatch run``
with N local targets polled every ``--interval`` (canary off; ``[defaults] websocket_monitor`` off, and
also on with ``--websocket-monitor both``). After a warm-up (every target polled once and its node catalogue
read, then one more interval, then ``--settle`` seconds) it measures over ``--cycles`` intervals, while
scraping ``/metrics`` once per interval the way Prometheus would:

- CPU % of one core of the comfywatch process (``/proc/<pid>/stat`` utime + stime over wall time), and
  CPU per target-poll (CPU / polls counted by comfywatch itself, ``comfywatch_polls_total``: with the monitor
  on, most polls of an idle target ask nothing, ``comfywatch_quiet_polls_total``);
- RSS (``VmRSS`` of ``/proc/<pid>/status``, the largest value sampled in the window), its peak since the start
  (``VmHWM``: the warm-up, as the catalogues are read, is included), and the open descriptors as the window
  ends; then the peak again after the back-to-back scrapes timed for the render time (below), before the daemon
  is stopped. The simulator serves every target on one address, and the daemon keeps its HTTP connections per
  server, so its targets share them: a fleet of as many servers keeps one idle connection per target more;
- ``/metrics`` render time as a client sees it (median of ``--scrapes`` scrapes, plain and gzip);
- polling regularity: for every target, the time between two successive successful reads of ``/system_stats``
  (its ``system`` check, from ``comfywatch_check_last_success_timestamp_seconds``) divided by the polls it spans,
  minus the interval. By design it is within 0.75 s (APScheduler's jitter of min(1 s, 5 % of the interval),
  drawn anew for each run); more means the scheduler or the checks ran late. Also the spread of the latest
  poll times within one cycle.

Then, in the same run, it starts ``prometheus-blackbox-exporter`` (Debian package; ``apt-get install
prometheus-blackbox-exporter``) and calls its ``/probe?target=<sim>/t/i/api/system_stats&module=http_2xx``
``--blackbox-probes`` times, and reports blackbox's CPU per probe and the ratio to comfywatch's CPU per
target-poll (a comfywatch target-poll is three requests: system_stats, queue, history; or, while the
monitoring WebSocket shows the target up and its queue unchanged, none, or system_stats alone every fourth
poll, with the three every twentieth). It also reports the daemon's CPU per request it made (every request
counted in ``comfyui_requests_total``, catalogue reads too).

    .venv/bin/python bench/scale.py [--targets 1000] [--interval 15] [--cycles 3] [--websocket-monitor both]

The machine is shared and small (2 cores): numbers are noisy; run it more than once and compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from comfywatch.checks.catalog import CHECK_INTERVAL as CATALOG_CHECK_INTERVAL
from comfywatch.checks.catalog import READS_PER_SECOND
from comfywatch.daemon.fdlimit import raise_soft_limit
from comfywatch.daemon.service import START_CPU_PER_TARGET

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
CHECKS = ("system", "queue", "jobs")
#: Checks every target has passed once before the window opens: the poll's, and the catalogue read (at start,
#: then every 30 minutes; bench/catalog.py measures its cost).
WARM_CHECKS = (*CHECKS, "catalog")


# ---------------------------------------------------------------------------------------------------------
# Processes and /proc.


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of *pid* in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of *pid* in seconds."""
    return sum(cpu_split(pid))


def rss_bytes(pid: int, key: str = "VmRSS") -> int:
    """Resident set size of *pid* (VmRSS), or its peak since the process started (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key}")


def wait_file(path: Path, process: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return path.read_text(encoding="utf-8").strip()
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{path} not written within {timeout}s")


def stop_children_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, a cancelled job) unwind the bench as Ctrl-C does, so that the ``finally``
    blocks stop the simulators, daemons and exporters it started instead of leaving them running."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def simulator(workdir: Path, targets: int) -> Iterator[str]:
    """``comfywatch simulate --targets N`` as a process; yields its base URL."""
    port_file = workdir / "sim.json"
    with (workdir / "sim.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "comfywatch", "simulate", "--port", "0", "--port-file", str(port_file),
             "--targets", str(targets)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        yield json.loads(wait_file(port_file, process))["url"]
    finally:
        stop(process)


def fleet_config(sim_url: str, targets: int, interval: float, websocket_monitor: bool) -> str:
    lines = [
        "[server]\nmax_concurrency = 64\n",
        # The timeout must be shorter than the interval: the shipped 5 s, or less for faster polling.
        f'[defaults]\ninterval = "{interval}s"\ntimeout = "{min(5.0, interval * 0.9):g}s"\n'
        f"websocket_monitor = {'true' if websocket_monitor else 'false'}\n",
    ]
    for index in range(targets):
        # Inline canary tables: 10,000 targets must stay under the 1 MiB a config file may have.
        lines.append(f'[[targets]]\nname = "gpu-{index:04d}"\nurl = "{sim_url}/t/{index}"\n'
                     "canary = {enabled = false}\n")
    return "\n".join(lines)


@contextlib.contextmanager
def comfywatch(workdir: Path, config: str, extra: Sequence[str] = (), tree: Path = REPO
               ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``comfywatch run`` (of the checkout *tree*) as a process on an ephemeral port; yields (process, base URL)."""
    config_path = workdir / f"comfywatch-{time.monotonic_ns()}.toml"
    config_path.write_text(config, encoding="utf-8")
    ready = config_path.with_suffix(".ready")
    with config_path.with_suffix(".log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "comfywatch", "run", "--config", str(config_path), "--listen", "127.0.0.1:0",
             "--ready-file", str(ready), "--log-level", "warning", *extra],
            stdout=log, stderr=subprocess.STDOUT, cwd=tree,
            env=None if tree == REPO else {**os.environ, "PYTHONPATH": str(tree)})
    try:
        yield process, f"http://{wait_file(ready, process)}"
    finally:
        stop(process)


# ---------------------------------------------------------------------------------------------------------
# Scraping.


@dataclass
class Scrape:
    at: float
    seconds: float
    size: int
    last_success: dict[tuple[str, str], float]
    durations: dict[tuple[str, str], float]
    polls: float
    quiet_polls: float
    up: int
    #: Requests made to the targets so far (every endpoint and answer).
    requests: float = 0.0


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_WANTED = ("comfywatch_check_last_success_timestamp_seconds{", "comfywatch_check_duration_seconds{",
           "comfywatch_polls_total ", "comfywatch_quiet_polls_total ", "comfyui_up{", "comfyui_requests_total{")


def parse_scrape(text: str, result: Scrape) -> None:
    """Pick the few families the benchmark needs, line by line: the full parser takes seconds on 11 MB."""
    for line in text.splitlines():
        if not line.startswith(_WANTED):
            continue
        head, _, value = line.rpartition(" ")
        labels = dict(_LABEL.findall(head))
        name = head.split("{", 1)[0]
        number = float(value)
        if name == "comfywatch_check_last_success_timestamp_seconds":
            result.last_success[(labels["target"], labels["check"])] = number
        elif name == "comfywatch_check_duration_seconds":
            result.durations[(labels["target"], labels["check"])] = number
        elif name == "comfywatch_polls_total":
            result.polls = number
        elif name == "comfywatch_quiet_polls_total":
            result.quiet_polls = number
        elif name == "comfyui_up" and number == 1.0:
            result.up += 1
        elif name == "comfyui_requests_total":
            result.requests += number


async def scrape(session: aiohttp.ClientSession, base: str, *, gzip: bool = False, parse: bool = True) -> Scrape:
    """One GET /metrics, timed by the client (full body received)."""
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    started = time.perf_counter()
    async with session.get(f"{base}/metrics", headers=headers, auto_decompress=False) as response:
        body = await response.read()
        response.raise_for_status()
    seconds = time.perf_counter() - started
    result = Scrape(time.time(), seconds, len(body), {}, {}, 0.0, 0.0, 0)
    if parse and not gzip:
        parse_scrape(body.decode(), result)
    return result


def warm_up_seconds(targets: int, interval: float) -> float:
    """The longest a warm-up may take: the ramp of first polls, every catalogue read in turn, a few intervals."""
    return 4 * interval + 60 + CATALOG_CHECK_INTERVAL + targets * (START_CPU_PER_TARGET + 1 / READS_PER_SECOND)


async def warm_up(session: aiohttp.ClientSession, base: str, targets: int, interval: float) -> None:
    """Wait until every target has passed each of :data:`WARM_CHECKS` once. A large fleet ramps its first polls
    up over targets x 20 ms, and reads its catalogues in turn: without waiting for them, a window would measure
    a start-up's reads. A read that would wait too long for its turn is left to the catalogue check's next run."""
    deadline = time.monotonic() + warm_up_seconds(targets, interval)
    while True:
        first = await scrape(session, base)
        done = sum(1 for (_, check), last in first.last_success.items() if check in WARM_CHECKS and last)
        if done >= targets * len(WARM_CHECKS):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"warm-up: only {done} of {targets * len(WARM_CHECKS)} checks have succeeded")
        await asyncio.sleep(1.0)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------------------------------------------
# The comfywatch measurement.


@dataclass
class DaemonResult:
    websocket_monitor: bool
    targets: int
    interval: float
    window: float
    cpu: float
    polls: float
    quiet_polls: float
    rss_max: int
    #: The largest RSS since the daemon started (VmHWM), as the window ends.
    rss_peak: int = 0
    #: The same after the back-to-back scrapes that follow the window, read before the daemon is stopped.
    rss_peak_after_scrapes: int = 0
    #: The daemon's open descriptors as the window ends: its listening socket, monitoring sockets and HTTP
    #: connections (kept per server: the simulator serves every target on one address, so they are shared).
    open_fds: int = 0
    system_cpu: float = 0.0
    requests: float = 0.0
    render_plain: list[float] = field(default_factory=list)
    render_gzip: list[float] = field(default_factory=list)
    render_cpu: list[float] = field(default_factory=list)
    #: The scrapes inside the CPU window, one per interval as Prometheus makes them (plain, parsed after).
    window_scrapes: list[float] = field(default_factory=list)
    body_bytes: int = 0
    gzip_bytes: int = 0
    lateness: list[float] = field(default_factory=list)
    spread: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu / self.window

    @property
    def cpu_per_poll(self) -> float:
        return self.cpu / self.polls if self.polls else float("nan")


async def measure_daemon(pid: int, base: str, targets: int, interval: float, cycles: int, scrapes: int,
                         websocket_monitor: bool, settle: float = 0.0) -> DaemonResult:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await warm_up(session, base, targets, interval)
        # One more interval, and as long again as asked.
        await asyncio.sleep(interval + settle)

        # Measure: CPU over `cycles` intervals, one scrape per interval (as Prometheus would).
        samples = [await scrape(session, base)]
        (user0, sys0), wall0 = cpu_split(pid), time.monotonic()
        rss_max = rss_bytes(pid)
        for _ in range(cycles):
            tick = time.monotonic() + interval
            while time.monotonic() < tick:
                rss_max = max(rss_max, rss_bytes(pid))
                await asyncio.sleep(min(1.0, max(0.0, tick - time.monotonic())))
            samples.append(await scrape(session, base))
        (user1, sys1), wall1 = cpu_split(pid), time.monotonic()
        result = DaemonResult(websocket_monitor, targets, interval, wall1 - wall0, user1 - user0 + sys1 - sys0,
                              samples[-1].polls - samples[0].polls, samples[-1].quiet_polls - samples[0].quiet_polls,
                              rss_max, system_cpu=sys1 - sys0, requests=samples[-1].requests - samples[0].requests)
        result.window_scrapes = [sample.seconds for sample in samples[1:]]
        result.rss_peak = rss_bytes(pid, "VmHWM")
        result.open_fds = len(os.listdir(f"/proc/{pid}/fd"))

        # Regularity: the mean poll period of each target between two reads of /system_stats (its system check),
        # minus the interval.
        for before, after in itertools.pairwise(samples):
            for key, ts in after.last_success.items():
                if key[1] != "system":
                    continue
                previous = before.last_success.get(key)
                if previous and ts > previous:
                    period = ts - previous
                    # Reads are several polls apart (quiet polls in between): the mean period of those polls.
                    polls = max(1, round(period / interval))
                    result.lateness.append(abs(period / polls - interval))
            times = [ts for (_, check), ts in after.last_success.items() if check == "system"]
            result.spread.append(max(times) - min(times))
        result.durations = list(samples[-1].durations.values())

        # /metrics render time, client-side, after the CPU window so it does not inflate it. The daemon's own
        # CPU during each scrape, minus its background rate, estimates the render cost free of machine load.
        background = result.cpu / result.window
        for _ in range(scrapes):
            cpu_before = cpu_seconds(pid)
            plain = await scrape(session, base, parse=False)
            result.render_cpu.append(cpu_seconds(pid) - cpu_before - background * plain.seconds)
            result.render_plain.append(plain.seconds)
            result.body_bytes = plain.size
            packed = await scrape(session, base, gzip=True)
            result.render_gzip.append(packed.seconds)
            result.gzip_bytes = packed.size
        result.rss_peak_after_scrapes = rss_bytes(pid, "VmHWM")
    return result


# ---------------------------------------------------------------------------------------------------------
# The blackbox_exporter comparison.


@dataclass
class BlackboxResult:
    probes: int
    cpu: float
    ok: int
    version: str
    system_cpu: float = 0.0

    @property
    def cpu_per_probe(self) -> float:
        return self.cpu / self.probes


@contextlib.contextmanager
def blackbox_exporter(workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``prometheus-blackbox-exporter`` with an ``http_2xx`` module; yields (process, base URL, version)."""
    binary = shutil.which("prometheus-blackbox-exporter") or BLACKBOX
    if not Path(binary).exists():
        raise RuntimeError("prometheus-blackbox-exporter missing: apt-get install prometheus-blackbox-exporter")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    config = workdir / "blackbox.yml"
    config.write_text("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n"
                      "    http:\n      preferred_ip_protocol: ip4\n", encoding="utf-8")
    port = _free_port()
    with (workdir / "blackbox.log").open("wb") as log:
        process = subprocess.Popen([binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, f"http://127.0.0.1:{port}", (version.stdout.splitlines() or ["?"])[0]
    finally:
        stop(process)


async def measure_blackbox(pid: int, base: str, version: str, sim_url: str, targets: int, probes: int,
                           concurrency: int) -> BlackboxResult:
    """Call blackbox's /probe *probes* times (http_2xx of /t/i/api/system_stats); its CPU per probe."""
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 20
        while True:
            try:
                async with session.get(f"{base}/-/healthy") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("blackbox_exporter did not start")
            await asyncio.sleep(0.1)

        async def one(index: int) -> bool:
            target = f"{sim_url}/t/{index % targets}/api/system_stats"
            async with session.get(f"{base}/probe", params={"target": target, "module": "http_2xx"}) as r:
                return "probe_success 1" in await r.text()

        await asyncio.gather(*(one(i) for i in range(min(50, probes))))  # warm-up
        limit = asyncio.Semaphore(concurrency)

        async def bounded(index: int) -> bool:
            async with limit:
                return await one(index)

        user0, sys0 = cpu_split(pid)
        outcomes = await asyncio.gather(*(bounded(i) for i in range(probes)))
        user1, sys1 = cpu_split(pid)
    return BlackboxResult(probes, user1 - user0 + sys1 - sys0, sum(outcomes), version, sys1 - sys0)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------------------
# Report.


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(results: list[DaemonResult], blackbox: BlackboxResult | None) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": []}
    for r in results:
        run = {
            "websocket_monitor": r.websocket_monitor,
            "targets": r.targets,
            "interval_s": r.interval,
            "window_s": round(r.window, 1),
            "cpu_percent_of_one_core": round(r.cpu_percent, 2),
            "cpu_kernel_share": round(r.system_cpu / r.cpu, 2) if r.cpu else None,
            "cpu_per_target_poll_ms": round(r.cpu_per_poll * 1000, 3),
            "target_polls": int(r.polls),
            "quiet_polls": int(r.quiet_polls),
            # Beside blackbox's one request per probe: all of the daemon's CPU over the requests it made.
            "requests": int(r.requests),
            "cpu_per_request_ms": round(r.cpu / r.requests * 1000, 3) if r.requests else None,
            # 1.0 when every target was polled once per interval throughout the window.
            "polls_per_target_interval": round(r.polls / (r.targets * r.window / r.interval), 3),
            "rss_max_mb": round(r.rss_max / 2**20, 1),
            "rss_peak_since_start_mb": round(r.rss_peak / 2**20, 1),
            "rss_peak_after_scrapes_mb": round(r.rss_peak_after_scrapes / 2**20, 1),
            "open_fds": r.open_fds,
            "metrics_render_median_ms": round(statistics.median(r.render_plain) * 1000, 1),
            "metrics_every_interval_ms": [round(s * 1000, 1) for s in r.window_scrapes],
            "metrics_render_daemon_cpu_median_ms": round(statistics.median(r.render_cpu) * 1000, 1),
            "metrics_render_gzip_median_ms": round(statistics.median(r.render_gzip) * 1000, 1),
            "metrics_bytes": r.body_bytes,
            "metrics_gzip_bytes": r.gzip_bytes,
            "poll_period_deviation_median_ms": round(statistics.median(r.lateness) * 1000, 1) if r.lateness else None,
            "poll_period_deviation_p99_ms": round(percentile(r.lateness, 0.99) * 1000, 1) if r.lateness else None,
            "poll_period_deviation_max_ms": round(max(r.lateness) * 1000, 1) if r.lateness else None,
            "poll_spread_within_cycle_s": round(statistics.median(r.spread), 2) if r.spread else None,
            "check_duration_median_ms": round(statistics.median(r.durations) * 1000, 2),
            "check_duration_p99_ms": round(percentile(r.durations, 0.99) * 1000, 2),
        }
        if blackbox is not None:
            run["ratio_cpu_per_target_poll_vs_blackbox_probe"] = round(r.cpu_per_poll / blackbox.cpu_per_probe, 2)
        out["runs"].append(run)
    if blackbox is not None:
        out["blackbox"] = {"version": blackbox.version, "probes": blackbox.probes, "ok": blackbox.ok,
                           "cpu_per_probe_ms": round(blackbox.cpu_per_probe * 1000, 3),
                           "cpu_kernel_share": round(blackbox.system_cpu / blackbox.cpu, 2) if blackbox.cpu else None}
    return out


def print_human(summary: dict[str, Any]) -> None:
    for run in summary["runs"]:
        print(f"\n== comfywatch: {run['targets']} targets, interval {run['interval_s']} s, "
              f"websocket_monitor={run['websocket_monitor']}, window {run['window_s']} s")
        # The targets: up to 1000 targets per daemon, and 10,000.
        cpu_goal, rss_goal, render_goal = (20, 200, 100) if run["targets"] <= 1000 else (50, 800, 1000)
        checks = [
            ("CPU % of one core", f"{run['cpu_percent_of_one_core']} %", run["cpu_percent_of_one_core"] <= cpu_goal),
            ("RSS (max)", f"{run['rss_max_mb']} MB", run["rss_max_mb"] <= rss_goal),
            ("/metrics render (median, client)", f"{run['metrics_render_median_ms']} ms",
             run["metrics_render_median_ms"] <= render_goal),
        ]
        ratio = run.get("ratio_cpu_per_target_poll_vs_blackbox_probe")
        if ratio is not None:
            checks.append(("CPU per target-poll / blackbox CPU per probe", f"{ratio}", ratio <= 0.6))
        for name, value, ok in checks:
            print(f"  {name:<48} {value:>12}   {'PASS' if ok else 'FAIL'}")
        print(f"  {'CPU per target-poll (0, 1 or 3 requests)':<48} {run['cpu_per_target_poll_ms']:>9} ms"
              f"   ({run['target_polls']} polls, {run['quiet_polls']} quiet; kernel share {run['cpu_kernel_share']})")
        print(f"  {'CPU per request made':<48} {run['cpu_per_request_ms']:>9} ms   ({run['requests']} requests)")
        print(f"  {'polls per target and interval':<48} {run['polls_per_target_interval']:>12}   (1.0: none missed)")
        print(f"  {'RSS peak since the start (warm-up included)':<48} {run['rss_peak_since_start_mb']:>9} MB")
        print(f"  {'RSS peak after the back-to-back scrapes':<48} {run['rss_peak_after_scrapes_mb']:>9} MB")
        print(f"  {'open descriptors as the window ended':<48} {run['open_fds']:>12}")
        print(f"  {'/metrics: daemon CPU per scrape (median)':<48} {run['metrics_render_daemon_cpu_median_ms']:>9} ms"
              "   (background rate subtracted; CLK_TCK resolution)")
        print(f"  {'/metrics once per interval, in the CPU window':<48} "
              f"{' / '.join(str(s) for s in run['metrics_every_interval_ms'])} ms")
        print(f"  {'/metrics gzip (median, client)':<48} {run['metrics_render_gzip_median_ms']:>9} ms"
              f"   ({run['metrics_bytes']} B plain, {run['metrics_gzip_bytes']} B gzip)")
        print(f"  {'|mean poll period - interval| median/p99/max':<48} {run['poll_period_deviation_median_ms']} / "
              f"{run['poll_period_deviation_p99_ms']} / {run['poll_period_deviation_max_ms']} ms")
        print(f"  {'spread of poll times within a cycle':<48} {run['poll_spread_within_cycle_s']} s (by design: "
              "poll slots start spread over the whole interval)")
        print(f"  {'check duration median / p99':<48} {run['check_duration_median_ms']} / "
              f"{run['check_duration_p99_ms']} ms")
    if "blackbox" in summary:
        b = summary["blackbox"]
        print(f"\n== {b['version']}: {b['probes']} http_2xx probes ({b['ok']} ok), "
              f"CPU per probe {b['cpu_per_probe_ms']} ms (kernel share {b['cpu_kernel_share']})")


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    raise_soft_limit()  # for the simulator: 1000 targets keep 2000 connections open
    results: list[DaemonResult] = []
    blackbox: BlackboxResult | None = None
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.websocket_monitor]
    with tempfile.TemporaryDirectory(prefix="comfywatch-scale-") as tmp, simulator(Path(tmp), args.targets) as sim:
        workdir = Path(tmp)
        for monitor in modes:
            config = fleet_config(sim, args.targets, args.interval, monitor)
            with comfywatch(workdir, config) as (process, base):
                results.append(asyncio.run(measure_daemon(process.pid, base, args.targets, args.interval,
                                                          args.cycles, args.scrapes, monitor, args.settle)))
        if args.blackbox_probes > 0:
            with blackbox_exporter(workdir) as (process, base, version):
                blackbox = asyncio.run(measure_blackbox(process.pid, base, version, sim, args.targets,
                                                        args.blackbox_probes, args.concurrency))
    return report(results, blackbox)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=15.0, help="poll interval in seconds")
    parser.add_argument("--cycles", type=int, default=3, help="intervals measured after the warm-up (>= 2)")
    parser.add_argument("--scrapes", type=int, default=7, help="/metrics scrapes timed for the render median")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds more to wait after the warm-up")
    parser.add_argument("--websocket-monitor", choices=("off", "on", "both"), default="off")
    parser.add_argument("--blackbox-probes", type=int, default=3000, help="0 skips the blackbox comparison")
    parser.add_argument("--concurrency", type=int, default=8, help="blackbox probes in flight")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    if args.cycles < 2:
        parser.error("--cycles must be at least 2")
    stop_children_on_sigterm()
    summary = run_all(args)
    print_human(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
