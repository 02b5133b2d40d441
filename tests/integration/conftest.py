"""Fixtures for the integration tests: the simulated ComfyUI and the real daemon in one event loop.

Everything runs on loopback with ephemeral ports. Intervals are the shortest the configuration accepts (1 s, with
a 500 ms request timeout) so that a fault shows in the metrics within seconds; every wait is a deadline poll of
``/metrics`` or of the simulator's state.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from comfywatch.daemon.service import Daemon
from comfywatch.logs import configure_logging
from comfywatch.sim.admin import SimHandle, start_sim
from tests.helpers import Metrics, eventually, running_daemon, scrape

__all__ = ["CHECKS", "TARGET", "Watch", "config_toml", "sim_state_until", "target_toml", "watching"]

TARGET = "sim"
#: The polling checks of a local target (the canary is disabled in these tests).
CHECKS = ("system", "queue", "jobs")


def target_toml(
    name: str, url: str, *, timeout: str | None = None, stall_after: str | None = None,
    canary: str | None = None, canary_timeout: str = "10s", checks: Sequence[str] | None = None,
) -> str:
    """One ``[[targets]]`` table for a local target; its canary runs every *canary* (off when None), its polls
    run *checks* (the default set when None)."""
    lines = ["[[targets]]", f'name = "{name}"', f'url = "{url}"']
    if checks is not None:
        lines.append("checks = [" + ", ".join(f'"{check}"' for check in checks) + "]")
    if timeout is not None:
        lines.append(f'timeout = "{timeout}"')
    if stall_after is not None:
        lines.append(f'stall_after = "{stall_after}"')
    lines.append("  [targets.canary]")
    if canary is None:
        lines.append("  enabled = false")
    else:
        lines += [f'  interval = "{canary}"', f'  timeout = "{canary_timeout}"']
    return "\n".join([*lines, ""])


def config_toml(*targets: str, interval: str = "1s", timeout: str = "500ms", worker_idle_polls: int = 3,
                monitor: bool = True) -> str:
    """A daemon configuration polling every *interval* (short, so tests stay fast)."""
    head = (
        "[defaults]\n"
        f'interval = "{interval}"\n'
        f'timeout = "{timeout}"\n'
        f"worker_idle_polls = {worker_idle_polls}\n"
        + ("" if monitor else "websocket_monitor = false\n")
        + "\n"
    )
    return head + "\n".join(targets)


@dataclass
class Watch:
    """A running daemon watching one target, with helpers to read its ``/metrics``."""

    daemon: Daemon
    base: str
    target: str = TARGET

    async def metrics(self) -> Metrics:
        """Scrape ``/metrics`` once."""
        return await scrape(f"{self.base}/metrics")

    def value(self, metrics: Metrics, name: str, **labels: str) -> float | None:
        """The value of *name* for this target (``None`` when the series is absent)."""
        return metrics.value(name, target=self.target, **labels)

    async def until(self, check: Callable[[Metrics], bool], what: str, timeout: float = 10.0) -> Metrics:
        """Scrape until *check* accepts the metrics; fail after *timeout* seconds with the last scrape."""
        return await eventually(self.metrics, check, timeout=timeout, what=what)

    async def ready(self, target: str | None = None) -> Metrics:
        """Wait until the target is up and every polling check has succeeded once (jobs baseline taken)."""
        name = target or self.target

        def done(m: Metrics) -> bool:
            return m.value("comfyui_up", target=name) == 1.0 and all(
                m.value("comfywatch_check_last_success_timestamp_seconds", target=name, check=c) is not None
                for c in CHECKS
            )

        return await self.until(done, f"{name} up with every check run once")

    async def polls(self, count: int = 2, check: str = "jobs", target: str | None = None,
                    timeout: float = 30.0) -> Metrics:
        """Wait until *check* succeeded *count* more times (each within *timeout* seconds: on a quiet server at
        1 s, ``queue`` and ``jobs`` run every 20th poll); with count >= 2 one full run started after now."""
        name = target or self.target
        metrics = await self.metrics()
        for _ in range(count):
            since = time.time()

            def newer(m: Metrics, since: float = since) -> bool:
                last = m.value("comfywatch_check_last_success_timestamp_seconds", target=name, check=check)
                return last is not None and last > since

            metrics = await self.until(newer, f"another successful {check} check of {name}", timeout)
        return metrics


@contextlib.asynccontextmanager
async def watching(config_text: str, tmp_path: Path, target: str = TARGET) -> AsyncIterator[Watch]:
    """Run the daemon on *config_text*, wait until *target* is ready, and check it survived at the end."""
    async with running_daemon(config_text, tmp_path) as (daemon, base):
        watch = Watch(daemon, base, target)
        await watch.ready()
        yield watch
        # Whatever the test did to the target, the daemon is still scheduling and serving.
        assert daemon.alive()
        await watch.metrics()


async def sim_state_until(
    sim: SimHandle, check: Callable[[dict[str, Any]], bool], what: str, target: int | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Poll the simulator's state until *check* accepts it."""

    async def probe() -> dict[str, Any]:
        return sim.state(target)

    return await eventually(probe, check, timeout=timeout, what=what)


@pytest.fixture
async def local_sim() -> AsyncIterator[SimHandle]:
    """A healthy simulated ComfyUI 0.3.64 (no /api/jobs) on ephemeral ports."""
    async with await start_sim() as handle:
        yield handle


@pytest.fixture
async def watch(local_sim: SimHandle, tmp_path: Path) -> AsyncIterator[Watch]:
    """The daemon watching ``local_sim`` (target ``sim``), ready: up and every check run once."""
    async with watching(config_toml(target_toml(TARGET, local_sim.url)), tmp_path) as running:
        yield running


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Every log line of the process, as the daemon writes them (JSON), for the length of one test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging(stream=stream)
    yield stream
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()
