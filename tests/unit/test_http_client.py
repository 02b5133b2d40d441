"""The HTTP client: its per-client caches stay bounded however many distinct requests it makes, and a request's
own body cap refuses a larger answer, declared or chunked, before anything decodes it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from comfywatch.clients.http import MAX_CACHED_TIMEOUTS, MAX_CACHED_URLS, ClientSettings, HttpClient, RequestFailed
from comfywatch.clients.local import SYSTEM_STATS_MAX_BODY, LocalApi
from comfywatch.errors import Reason
from comfywatch.parse.system import parse_system_stats
from tests.fixtures import FIXTURES


def test_deadline_timeouts_are_built_but_not_all_kept() -> None:
    """A canary asks for what is left of its deadline, a new value each time: the cache must not grow
    with them (it did, by two entries per canary run, for the daemon's lifetime), and the timeout a poll
    keeps using must stay cached among them."""
    client = HttpClient(ClientSettings(base_url="http://127.0.0.1:8188"))
    poll_timeout: object = None
    for step in range(1000):
        remaining = 30.0 - step * 0.0137
        timeout = client._timeout(remaining)
        assert timeout.total == remaining
        if step >= 100 and step % 10 == 0:  # the first poll comes after a hundred canary requests
            if poll_timeout is not None:
                assert client._timeout(5.0) is poll_timeout
            poll_timeout = client._timeout(5.0)
    assert len(client._timeouts) == MAX_CACHED_TIMEOUTS


def test_a_repeated_timeout_is_the_same_object() -> None:
    """Polls repeat the same few timeouts: those are built once."""
    client = HttpClient(ClientSettings(base_url="http://127.0.0.1:8188", connect_timeout=2.0))
    first = client._timeout(5.0)
    assert client._timeout(5.0) is first
    assert (first.total, first.connect) == (5.0, 2.0)


def test_only_polled_paths_are_kept_and_only_so_many() -> None:
    """A URL is kept only when asked (a polled path), and never more than MAX_CACHED_URLS of them; a path asked
    without keeping is built anew each time."""
    client = HttpClient(ClientSettings(base_url="http://127.0.0.1:8188/base"))
    for index in range(100):
        url = client.url(f"/api/history/{index:04d}")
        assert str(url) == f"http://127.0.0.1:8188/base/api/history/{index:04d}"
    assert client._urls == {}
    for index in range(500):
        client.url(f"/api/polled/{index:04d}", keep=True)
    assert len(client._urls) == MAX_CACHED_URLS
    assert client.url("/api/polled/0000", keep=True) is client.url("/api/polled/0000")


@pytest.mark.parametrize(("base", "expected"), [
    ("http://127.0.0.1:8188", "ws://127.0.0.1:8188/api/ws?clientId=c-1"),
    ("https://user:pw@[::1]:8443/comfy/", "wss://[::1]:8443/comfy/api/ws?clientId=c-1"),
    ("https://comfy.example", "wss://comfy.example/api/ws?clientId=c-1"),
])
def test_websocket_url_keeps_host_port_and_prefix_and_drops_userinfo(base: str, expected: str) -> None:
    """The monitor's and the canaries' WebSocket URL: scheme swapped, prefix and IPv6 brackets kept; proxy
    credentials go in a header (``LocalApi.ws_headers``), never into the URL."""
    assert LocalApi(HttpClient(ClientSettings(base_url=base))).ws_url("c-1") == expected


# A request's own body cap.

#: Valid JSON of 100 KiB: under the client's cap in these tests, over the request's.
BODY = json.dumps({"pad": "x" * (100 * 2**10 - 11)}).encode()
REQUEST_CAP = 64 * 2**10


@dataclass
class Recorder:
    """A RequestObserver keeping what it is told."""

    exchanges: list[tuple[str, int | None]] = field(default_factory=list)
    failures: list[tuple[str, Reason]] = field(default_factory=list)

    def on_exchange(self, endpoint: str, code: int | None, seconds: float) -> None:
        self.exchanges.append((endpoint, code))

    def on_failure(self, endpoint: str, reason: Reason) -> None:
        self.failures.append((endpoint, reason))


@contextlib.asynccontextmanager
async def answering(body: bytes, *, chunked: bool) -> AsyncIterator[str]:
    """A loopback server answering every request 200 with *body*: with its Content-Length, or chunked (64 KiB
    chunks, no length) so that only counting what arrives can bound it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):
                framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
                writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{framing}\r\n\r\n".encode())
                if chunked:
                    for start in range(0, len(body), 65536):
                        piece = body[start:start + 65536]
                        writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    writer.write(b"0\r\n\r\n")
                else:
                    writer.write(body)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def get(url: str, *, max_body_size: int, max_body: int | None) -> tuple[Any, list[Any], Recorder]:
    """GET /x from *url* as get_json does; returns the parsed body (or the RequestFailed), the bodies the parser
    was given, and what the observer was told."""
    observer = Recorder()
    parsed: list[Any] = []

    def parser(body: Any) -> Any:
        parsed.append(body)
        return body

    client = HttpClient(ClientSettings(base_url=url, max_body_size=max_body_size), observer=observer)
    try:
        body, _ = await client.get_json("/x", endpoint="x", parser=parser, max_body=max_body)
        return body, parsed, observer
    except RequestFailed as failed:
        return failed, parsed, observer
    finally:
        await client.close()


FRAMINGS = pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])


@FRAMINGS
async def test_a_body_over_the_requests_cap_fails_before_decoding(chunked: bool) -> None:
    """100 KiB under a client cap of 1 MiB, but over the request's 64 KiB: an ``invalid_response`` failure
    naming the request's cap, counted once, and the parser never sees a byte."""
    async with answering(BODY, chunked=chunked) as url:
        failed, parsed, observer = await get(url, max_body_size=2**20, max_body=REQUEST_CAP)
    assert isinstance(failed, RequestFailed)
    assert (failed.failure.reason, failed.failure.detail) == (
        Reason.INVALID_RESPONSE, f"response body larger than {REQUEST_CAP} bytes")
    assert parsed == []
    assert observer.failures == [("x", Reason.INVALID_RESPONSE)]


@FRAMINGS
async def test_without_a_request_cap_the_same_body_is_read(chunked: bool) -> None:
    """The control: the client's own cap alone lets the same answer through, whole."""
    async with answering(BODY, chunked=chunked) as url:
        body, parsed, observer = await get(url, max_body_size=2**20, max_body=None)
    assert body == json.loads(BODY) and len(parsed) == 1
    assert (observer.exchanges, observer.failures) == ([("x", 200)], [])


@FRAMINGS
async def test_a_request_cap_cannot_raise_the_clients(chunked: bool) -> None:
    """The cap in force is the smaller of the two: asking for 1 MiB from a client capped at 64 KiB keeps 64 KiB."""
    async with answering(BODY, chunked=chunked) as url:
        failed, parsed, _ = await get(url, max_body_size=REQUEST_CAP, max_body=2**20)
    assert isinstance(failed, RequestFailed)
    assert failed.failure.detail == f"response body larger than {REQUEST_CAP} bytes"
    assert parsed == []


async def system_stats(size: int, *, chunked: bool) -> Any:
    """LocalApi.system_stats of the recorded answer padded with JSON whitespace to *size* bytes, from a client
    whose own cap is 32 times SYSTEM_STATS_MAX_BODY: the stats and the body's length, or the RequestFailed."""
    recorded = (FIXTURES / "system_stats_api_prefix.json").read_bytes()
    async with answering(recorded + b" " * (size - len(recorded)), chunked=chunked) as url:
        api = LocalApi(HttpClient(ClientSettings(base_url=url, max_body_size=32 * SYSTEM_STATS_MAX_BODY)))
        try:
            stats, result = await api.system_stats()
            return stats, len(result.body)
        except RequestFailed as failed:
            return failed
        finally:
            await api.close()


@FRAMINGS
async def test_system_stats_up_to_its_cap_is_read(chunked: bool) -> None:
    """An answer of exactly SYSTEM_STATS_MAX_BODY bytes is read and parsed like the recorded one."""
    recorded = json.loads((FIXTURES / "system_stats_api_prefix.json").read_bytes())
    assert await system_stats(SYSTEM_STATS_MAX_BODY, chunked=chunked) == (
        parse_system_stats(recorded), SYSTEM_STATS_MAX_BODY)


@FRAMINGS
async def test_system_stats_over_its_cap_fails(chunked: bool) -> None:
    """One byte more fails as ``invalid_response`` naming SYSTEM_STATS_MAX_BODY, though the client's own cap is
    far larger."""
    failed = await system_stats(SYSTEM_STATS_MAX_BODY + 1, chunked=chunked)
    assert isinstance(failed, RequestFailed)
    assert (failed.failure.reason, failed.failure.detail) == (
        Reason.INVALID_RESPONSE, f"response body larger than {SYSTEM_STATS_MAX_BODY} bytes")
