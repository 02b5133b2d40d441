"""Shared test helpers: scrape and query metrics, poll with a deadline, run the daemon in-process, record what
a server receives."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from comfywatch.daemon.service import Daemon
from tests.conftest import TIMEOUT_FACTOR

__all__ = ["Clock", "Metrics", "RecordingServer", "Seen", "eventually", "recording_server", "running_daemon", "scrape"]

T = TypeVar("T")


class Metrics:
    """A parsed exposition: ``metrics.value("comfyui_up", target="a")``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = self._parse(text)

    @staticmethod
    def _parse(text: str) -> list[tuple[str, dict[str, str], float]]:
        """(name, labels, value) per sample, with prometheus_client's parser (strict: bad output fails)."""
        return [(sample.name, dict(sample.labels), float(sample.value))
                for family in text_string_to_metric_families(text) for sample in family.samples]

    def find(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(lab, val) for n, lab, val in self.samples
                if n == name and all(lab.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float | None:
        found = self.find(name, **labels)
        if not found:
            return None
        if len(found) > 1:
            raise AssertionError(f"{name}{labels} matches {len(found)} series")
        return found[0][1]

    def total(self, name: str, **labels: str) -> float:
        return sum(value for _, value in self.find(name, **labels))


async def scrape(url: str, *, accept: str | None = None) -> Metrics:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200, response.status
        return Metrics(await response.text())


async def eventually(
    probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], *, timeout: float = 10.0, what: str = ""
) -> T:
    """Call *probe* until *check* accepts its result; fail with the last value after *timeout* seconds."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    delay = 0.02
    while True:
        last = await probe()
        if check(last):
            return last
        if time.monotonic() > deadline:
            shown = last.text[-3000:] if isinstance(last, Metrics) else repr(last)[:3000]
            raise AssertionError(f"condition not met within {timeout}s: {what}\nlast: {shown}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.25)


@contextlib.asynccontextmanager
async def running_daemon(config_text: str, tmp_path: Path, env: dict[str, str] | None = None
                         ) -> AsyncIterator[tuple[Daemon, str]]:
    """Run the real daemon in this loop on an ephemeral port; yields (daemon, base_url)."""
    path = tmp_path / "comfywatch.toml"
    path.write_text(config_text, encoding="utf-8")
    async with daemon_at(path, env=env) as running:
        yield running


@contextlib.asynccontextmanager
async def daemon_at(config_path: Path, *, env: dict[str, str] | None = None, shard: str | None = None
                    ) -> AsyncIterator[tuple[Daemon, str]]:
    """The daemon on an existing configuration file (``--shard`` as given), as :func:`running_daemon` runs it."""
    daemon = Daemon(config_path, env=env or {}, listen="127.0.0.1:0", shard=shard)
    task = asyncio.get_running_loop().create_task(daemon.run(install_signals=False))
    deadline = time.monotonic() + 10 * TIMEOUT_FACTOR
    while daemon.bound_address is None or not daemon.runtimes:
        if task.done():
            raise AssertionError(f"daemon exited early with {task.result()}")
        if time.monotonic() > deadline:
            raise AssertionError("daemon did not start")
        await asyncio.sleep(0.01)
    host, port = daemon.bound_address
    try:
        yield daemon, f"http://{host}:{port}"
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 10) == 0


class Clock:
    """A monotonic clock the test moves (``clock.now += 30``), for code that takes a ``clock`` callable."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Seen:
    """One request as a :func:`recording_server` received it."""

    authorization: str | None
    cookie: str | None
    user_agent: str | None
    #: The client's port: the same port means the same connection.
    peer_port: int


@dataclass
class RecordingServer:
    url: str
    requests: list[Seen] = field(default_factory=list)

    @property
    def address(self) -> str:
        """``host:port``."""
        return self.url.split("://", 1)[1]


@contextlib.asynccontextmanager
async def recording_server(path: str, body: object, tls: ssl.SSLContext | None = None
                           ) -> AsyncIterator[RecordingServer]:
    """A loopback server answering *path* with the JSON *body* and a session cookie (which no client of several
    targets may send back), recording every request."""
    server = RecordingServer("")

    async def answer(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        server.requests.append(Seen(request.headers.get("Authorization"), request.headers.get("Cookie"),
                                    request.headers.get("User-Agent"), peer[1] if peer else -1))
        response = web.json_response(body)
        response.set_cookie("session", "granted-to-whoever-asked-first")
        return response

    app = web.Application()
    app.router.add_get(path, answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield server
    finally:
        await runner.cleanup()
