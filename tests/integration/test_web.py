"""comfywatch.server.app: the exporter's HTTP server, on an ephemeral port, as Prometheus and people reach it."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import html
import logging
import re
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urljoin

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families as parse_text

import comfywatch.server.app
from comfywatch.export.collector import DaemonInfo
from comfywatch.export.exposition import Body
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


#: A 32 MiB body made of one 64 KiB block of lines: large on the wire, small in memory.
_BLOCK = (b'comfyui_up{target="gpu"} 1\n' * 2427)[:-1]
_LARGE = [_BLOCK] * 512 + [b""]


@pytest.fixture
def large_body(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """``/metrics`` answers :data:`_LARGE`; returns the SHA-256 of the body it makes."""
    monkeypatch.setattr("comfywatch.server.app.metrics_body", lambda *args, **kwargs: Body(_LARGE))
    digest = hashlib.sha256()
    for chunk in _LARGE[:-1]:
        digest.update(chunk + b"\n")
    return digest.digest()


@pytest.mark.parametrize("accept_encoding", [None, PROMETHEUS_ENCODING])
async def test_a_large_body_is_sent_without_a_whole_copy(base: str, large_body: bytes,
                                                         accept_encoding: str | None) -> None:
    """A scrape of 32 MiB, plain or gzipped, allocates a small part of that in the server: the body goes out in
    pieces as the socket takes them, never joined (and then buffered) whole."""
    digest = hashlib.sha256()
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    tracemalloc.start()
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            headers = {"Accept-Encoding": accept_encoding or "identity"}
            async with session.get(f"{base}/metrics", headers=headers) as response:
                async for data in response.content.iter_chunked(1 << 16):
                    if not accept_encoding:
                        digest.update(data)
                        continue
                    while data:  # inflated a bounded part at a time: the test's memory is traced too
                        digest.update(inflate.decompress(data, 1 << 16))
                        data = inflate.unconsumed_tail
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest.digest() == large_body
    assert response.headers.get("Content-Encoding") == accept_encoding
    assert peak < 4 * 2**20, f"{peak / 2**20:.1f} MiB traced for a 32 MiB body"


async def test_a_scraper_hanging_up_mid_body_is_no_error(base: str, large_body: bytes,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A scraper that goes away halfway through a large body ends that scrape quietly; the next one is whole.
    (Plain: gzipped, this body is small enough to be sent whole before the scraper hangs up.)"""
    host, port = base.removeprefix("http://").split(":")
    with caplog.at_level(logging.INFO):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n")
        await writer.drain()
        assert len(await reader.read(100_000)) > 1000
        writer.transport.abort()
        _, body = await _get(f"{base}/metrics", None)
    assert hashlib.sha256(body).digest() == large_body
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


async def _raw(base: str, request: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    return reader, writer


@pytest.mark.parametrize("accept_encoding", ["identity", PROMETHEUS_ENCODING])
async def test_head_of_metrics_has_the_length_and_no_body(base: str, accept_encoding: str) -> None:
    """HEAD answers what GET would (its length included) and sends no body: nothing follows the headers."""
    _, body = await _get(f"{base}/metrics", accept_encoding)
    reader, writer = await _raw(
        base, f"HEAD /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {accept_encoding}\r\nConnection: close\r\n\r\n"
        .encode())
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"\r\ncontent-length: {len(body)}\r\n".encode() in head.lower() + b"\r\n"
    assert rest == b""


async def test_a_scraper_hanging_up_while_its_body_is_gzipped_is_no_error(
        base: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Hanging up before the headers (while a large body is gzipped in a worker thread) is no error either."""
    gzipping, hung_up = threading.Event(), threading.Event()
    real = comfywatch.server.app.gzip_body

    def slow(body: Body) -> list[bytes]:
        gzipping.set()
        hung_up.wait(10)
        return real(body)

    monkeypatch.setattr("comfywatch.server.app._THREAD_ABOVE", 0)
    monkeypatch.setattr("comfywatch.server.app.gzip_body", slow)
    with caplog.at_level(logging.INFO):
        _, writer = await _raw(base, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
        assert await asyncio.to_thread(gzipping.wait, 10)
        writer.transport.abort()
        hung_up.set()
        monkeypatch.setattr("comfywatch.server.app.gzip_body", real)
        response, body = await _get(f"{base}/metrics", PROMETHEUS_ENCODING)
    assert response.status == 200 and gzip.decompress(body).startswith(b"# HELP ")
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


async def _received_before_cut_off(base: str, path: str, event: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """GET *path*, read its first bytes and stop reading until the exporter logs *event* (after a send deadline of
    half a second); what arrived in all."""
    cut_off = asyncio.Event()

    class Log:
        def warning(self, logged: str, **fields: object) -> None:
            if logged == event:
                cut_off.set()

    monkeypatch.setattr("comfywatch.server.app.SEND_SECONDS", 0.5)
    monkeypatch.setattr("comfywatch.server.app.log", Log())
    reader, writer = await _raw(base, f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n\r\n".encode())
    try:
        received = len(await reader.read(1000))
        await asyncio.wait_for(cut_off.wait(), 10)  # not reading meanwhile: the socket's buffers fill up
        with contextlib.suppress(ConnectionResetError):
            while data := await asyncio.wait_for(reader.read(1 << 20), 10):
                received += len(data)
    finally:
        writer.close()
    return received


async def test_a_scraper_that_stops_reading_is_cut_off(base: str, large_body: bytes,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A scraper that stops reading a large body is disconnected once the send deadline has passed, instead of
    holding the scrape (and the chunks it keeps) for good."""
    received = await _received_before_cut_off(base, "/metrics", "scrape_cut_off", monkeypatch)
    assert received < len(b"".join(_LARGE)) / 2


async def test_large_bodies_are_compressed_off_the_event_loop(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the threshold the gzip runs in a worker thread: same bytes on the wire."""
    _, inline = await _get(f"{base}/metrics", PROMETHEUS_ENCODING)
    monkeypatch.setattr("comfywatch.server.app._THREAD_ABOVE", 0)
    threads: list[str] = []
    real = comfywatch.server.app.gzip_body

    def spy(body: Body) -> list[bytes]:
        threads.append(threading.current_thread().name)
        return real(body)

    monkeypatch.setattr("comfywatch.server.app.gzip_body", spy)
    response, threaded = await _get(f"{base}/metrics", PROMETHEUS_ENCODING)
    assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(threaded) == gzip.decompress(inline)
    assert threads and threads[0] != threading.main_thread().name


@pytest.mark.parametrize("path", ["/", "/api/v1/status"])
async def test_status_pages_are_gzipped_when_asked(base: str, path: str) -> None:
    """The status pages and documents go out as /metrics does: gzipped for a client that takes it (at 10,000
    targets ``/api/v1/status`` is 9 MB), the same page once decompressed (but for the times in it)."""
    _, plain = await _get(f"{base}{path}", None)
    response, body = await _get(f"{base}{path}", "gzip")
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Cache-Control"] == "no-store"
    unpacked = gzip.decompress(body)
    assert len(plain) > 4096
    number = re.compile(rb"\d+(?:\.\d+)?(?:e[+-]?\d+)?")
    assert number.sub(b"0", unpacked) == number.sub(b"0", plain)


async def test_a_client_that_stops_reading_a_status_document_is_cut_off(
        base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that stops reading a large status document is disconnected once the send deadline has passed,
    instead of holding the document (9 MB at 10,000 targets) for as long as it likes."""
    size = 32 << 20
    monkeypatch.setattr("comfywatch.server.status_routes.as_json", lambda _: {"pad": "x" * size})
    assert await _received_before_cut_off(base, "/api/v1/status", "response_cut_off", monkeypatch) < size / 2
