"""comfywatch.server.app: the exporter's HTTP server, on an ephemeral port, as Prometheus and people reach it."""

from __future__ import annotations

import gzip
import html
import re
import threading
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urljoin

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families as parse_text

import comfywatch.server.app
from comfywatch.export.collector import DaemonInfo
from comfywatch.server.app import create_app
from comfywatch.state import TargetState

#: What Prometheus 2.x sends with every scrape.
PROMETHEUS_ENCODING = "gzip"


def _fleet(count: int) -> list[TargetState]:
    states = []
    for index in range(count):
        state = TargetState(f"gpu-{index}", "local", f"http://10.0.0.{index}:8188", endpoints=["system_stats"])
        state.set_up(index % 2 == 0)
        state.on_exchange("system_stats", 200, 0.01)
        states.append(state)
    return states


@pytest.fixture
async def base() -> AsyncIterator[str]:
    states = _fleet(40)

    def source() -> tuple[Sequence[TargetState], DaemonInfo]:
        return states, DaemonInfo()

    runner = web.AppRunner(create_app(source, healthy=lambda: True))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def _get(url: str, accept_encoding: str | None) -> tuple[aiohttp.ClientResponse, bytes]:
    # auto_decompress off: the test sees the bytes on the wire, as Prometheus does.
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        headers = {"Accept-Encoding": accept_encoding or "identity"}
        async with session.get(url, headers=headers) as response:
            return response, await response.read()


async def test_metrics_are_gzipped_when_prometheus_asks(base: str) -> None:
    """With ``Accept-Encoding: gzip`` the body is a gzip stream of the same exposition text."""
    _, plain = await _get(f"{base}/metrics", None)
    response, body = await _get(f"{base}/metrics", PROMETHEUS_ENCODING)
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    assert len(body) < len(plain) / 4
    assert gzip.decompress(body) == plain
    families = {f.name: f for f in parse_text(gzip.decompress(body).decode())}
    assert sorted(s.value for s in families["comfyui_up"].samples) == [0.0] * 20 + [1.0] * 20


@pytest.mark.parametrize("accept_encoding", [None, "identity", "gzip;q=0", "br"])
async def test_metrics_stay_plain_unless_gzip_is_accepted(base: str, accept_encoding: str | None) -> None:
    """No gzip for clients that did not ask for it, or refused it with q=0."""
    response, body = await _get(f"{base}/metrics", accept_encoding)
    assert "Content-Encoding" not in response.headers
    assert body.startswith(b"# HELP ")


async def test_healthz_and_landing_page(base: str) -> None:
    """/healthz answers ok; the fleet page counts and lists every target, and its relative links (metrics, the
    JSON, a target's page, the stylesheet) all lead somewhere from where the page is served."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200 and await response.text() == "ok\n"
        async with session.get(f"{base}/") as response:
            assert response.status == 200 and response.content_type == "text/html"
            page = await response.text()
        words = re.sub(r"<[^>]+>", "", page)
        assert "20 up · 20 down · 0 degraded · 0 pending" in words
        assert all(f'<a href="targets/gpu-{index}">gpu-{index}</a>' in page for index in range(40))
        links = [link for link in re.findall(r'(?:href|src)="([^"]+)"', page) if not link.startswith("data:")]
        assert {"metrics", "api/v1/status", "targets/gpu-0"} <= set(links)
        for link in links:
            async with session.get(urljoin(f"{base}/", html.unescape(link))) as response:
                assert response.status == 200, link


async def test_large_bodies_are_compressed_off_the_event_loop(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the threshold the gzip runs in a worker thread: same bytes on the wire."""
    _, inline = await _get(f"{base}/metrics", PROMETHEUS_ENCODING)
    monkeypatch.setattr("comfywatch.server.app._THREAD_ABOVE", 0)
    threads: list[str] = []
    real = comfywatch.server.app.gzip_body

    def spy(body: bytes) -> bytes:
        threads.append(threading.current_thread().name)
        return real(body)

    monkeypatch.setattr("comfywatch.server.app.gzip_body", spy)
    response, threaded = await _get(f"{base}/metrics", PROMETHEUS_ENCODING)
    assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(threaded) == gzip.decompress(inline)
    assert threads and threads[0] != threading.main_thread().name
