"""Shared machinery of the fault matrix: the real daemon process, a scrape watcher, counter bookkeeping.

* :func:`daemon_process` runs ``comfywatch run`` through :func:`tests.e2e.procs.comfywatch_run`, entering and
  leaving it in a worker thread: that helper waits with blocking sleeps, and the hostile servers and
  simulators live in this test's event loop, which must keep answering while the daemon starts.
* :class:`Watch` scrapes ``/metrics`` in the background for the whole run: it records every scrape's latency,
  any counter that ever went down, and the highest value each series ever had (so a stall flag that flickered
  on between two assertions is still caught).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests import helpers
from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.procs import Proc, comfywatch_run

__all__ = ["ENDPOINTS", "Metrics", "Watch", "daemon_process", "failure_deltas", "failures", "wait_for"]

#: Endpoints the polling checks of a local target use (``jobs`` only once, to find /api/jobs missing).
ENDPOINTS = ("system_stats", "queue", "history")
#: Sample suffixes of monotonic series (counters and histogram buckets/counts).
_MONOTONIC = ("_total", "_count", "_bucket")


_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _unescape(value: str) -> str:
    return re.sub(r'\\[\\"n]', lambda m: _ESCAPES[m.group(0)], value) if "\\" in value else value


class Metrics(helpers.Metrics):
    """:class:`tests.helpers.Metrics` with a line-oriented parser, ten times faster than prometheus_client's.

    The watcher parses a 30-target exposition several times a second in the same event loop as the hostile
    servers, and a slow parse there would starve them into timeouts the daemon did not cause.
    """

    @staticmethod
    def _parse(text: str) -> list[tuple[str, dict[str, str], float]]:
        samples: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            name, brace, rest = series.partition("{")
            labels = {k: _unescape(v) for k, v in _LABEL.findall(rest)} if brace else {}
            number = float(value) if value not in {"NaN", "+Inf", "-Inf"} else {
                "NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}[value]
            samples.append((name, labels, number))
        return samples


@contextlib.asynccontextmanager
async def daemon_process(tmp: Path, config: str) -> AsyncIterator[Proc]:
    """``comfywatch run`` as a subprocess; on exit it must stop cleanly with status 0."""
    manager = comfywatch_run(tmp, config)
    proc = await asyncio.to_thread(manager.__enter__)
    try:
        yield proc
    except BaseException as exc:
        await asyncio.to_thread(manager.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await asyncio.to_thread(manager.__exit__, None, None, None)


def _key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


@dataclass
class Watch:
    """Background scraper: latency of every scrape, counter regressions, per-series maxima."""

    url: str
    latencies: list[float] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    maxima: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latest: Metrics | None = None
    #: Names whose every scraped value is kept, tagged with :attr:`phase` at scrape time.
    tracked: frozenset[str] = frozenset({"comfyui_up", "comfyui_queue_stalled", "comfywatch_websocket_connected"})
    phase: str = "start"
    history: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[str, float]]] = field(default_factory=dict)
    _last: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None
    #: One scrape at a time: two overlapping ones could finish out of order and fake a counter going down.
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def scrape(self) -> Metrics:
        """Scrape once (10 s client timeout), record latency and check monotonic series."""
        async with self._lock:
            return await self._scrape()

    async def _scrape(self) -> Metrics:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        started = time.perf_counter()
        async with self._session.get(self.url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            text = await response.text()
            status = response.status
        self.latencies.append(time.perf_counter() - started)
        if status != 200:
            self.errors.append(f"/metrics answered {status}")
        metrics = Metrics(text)
        for name, labels, value in metrics.samples:
            key = _key(name, labels)
            if name.endswith(_MONOTONIC):
                before = self._last.get(key)
                if before is not None and value < before:
                    self.regressions.append(f"{name}{labels}: {before} -> {value}")
                self._last[key] = value
            if value > self.maxima.get(key, float("-inf")):
                self.maxima[key] = value
            if name in self.tracked:
                self.history.setdefault(key, []).append((self.phase, value))
        self.latest = metrics
        return metrics

    def highest(self, name: str, **labels: str) -> float | None:
        """The highest value any scrape saw for the one series named *name* with exactly *labels*."""
        return self.maxima.get(_key(name, labels))

    def values(self, name: str, *, phase: str, **labels: str) -> list[float]:
        """Every value a tracked series had in the scrapes made during *phase*."""
        return [value for seen, value in self.history.get(_key(name, labels), []) if seen == phase]

    async def run(self, period: float = 0.4) -> None:
        """Scrape every *period* seconds until cancelled; failures to scrape are recorded, not raised."""
        while True:
            try:
                await self.scrape()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors.append(f"scrape failed: {type(exc).__name__}")
            await asyncio.sleep(period)

    async def close(self) -> None:
        """Close the scraping session."""
        if self._session is not None:
            await self._session.close()


async def wait_for(
    watch: Watch, check: Callable[[Metrics], bool], *, timeout: float, what: str, strict: bool = True
) -> Metrics:
    """Scrape until *check* accepts the metrics; after *timeout* raise (or, not *strict*, return the last)."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    delay = 0.05
    while True:
        metrics = await watch.scrape()
        if check(metrics):
            return metrics
        if time.monotonic() > deadline:
            if strict:
                raise AssertionError(f"not within {timeout}s: {what}\n{metrics.text[-3000:]}")
            return metrics
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def failures(metrics: Metrics, target: str) -> dict[tuple[str, str], float]:
    """``comfyui_request_failures_total`` of *target* by (endpoint, reason)."""
    return {
        (labels["endpoint"], labels["reason"]): value
        for labels, value in metrics.find("comfyui_request_failures_total", target=target)
    }


def failure_deltas(before: Metrics, after: Metrics, target: str) -> dict[tuple[str, str], float]:
    """Failures of *target* that happened between two scrapes, only the (endpoint, reason) pairs that moved."""
    start, end = failures(before, target), failures(after, target)
    moved = {key: end[key] - start.get(key, 0.0) for key in end}
    return {key: delta for key, delta in moved.items() if delta > 0}

