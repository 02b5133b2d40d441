"""Comfy Cloud output downloads (``fetch_unauthenticated``) are read whole, or fail: never a silent prefix.

A raw asyncio server plays the signed storage URL, so the body can arrive as the network delivers it: in
bursts with a pause between them, shorter than its ``Content-Length``, or until the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from comfywatch.clients.cloud import CloudApi, fetch_unauthenticated
from comfywatch.clients.http import ClientSettings, HttpClient, HttpResult, RequestFailed
from comfywatch.errors import Reason

BODY = (bytes(range(256)) * 782)[:200_000] + b"\x89PNG"
FIRST_BURST = 1000
#: How long the server holds the rest of the body back, unless the client has already returned.
PAUSE_S = 0.3


@dataclass
class Storage:
    """One answer: a head, then the body in two bursts; ``declared`` is the Content-Length (None: none, the
    body ends when the connection closes), ``sent`` how much of the body is sent at all."""

    declared: int | None
    sent: int
    client_done: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        length = f"Content-Length: {self.declared}\r\n" if self.declared is not None else ""
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n{length}Connection: close\r\n\r\n".encode()
                     + BODY[:FIRST_BURST])
        await writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.client_done.wait(), PAUSE_S)
        if not writer.is_closing():
            writer.write(BODY[FIRST_BURST:self.sent])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def storage(declared: int | None, sent: int) -> AsyncIterator[Storage]:
    answer = Storage(declared, sent)
    server = await asyncio.start_server(answer.handle, "127.0.0.1", 0)
    answer.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/output.png?signature=abc"
    try:
        yield answer
    finally:
        server.close()
        await server.wait_closed()


async def fetch(answer: Storage, max_body_size: int = 2**20) -> HttpResult:
    http = HttpClient(ClientSettings(base_url="https://cloud.example", timeout=10.0, max_body_size=max_body_size))
    try:
        return await fetch_unauthenticated(http, answer.url)
    finally:
        answer.client_done.set()
        await http.close()


@pytest.mark.parametrize("declared", [len(BODY), None], ids=["content-length", "until-close"])
async def test_a_body_in_two_bursts_is_read_whole(declared: int | None) -> None:
    async with storage(declared, len(BODY)) as answer:
        result = await fetch(answer)
    assert (result.status, len(result.body)) == (200, len(BODY))
    assert result.body == BODY


async def test_a_body_shorter_than_declared_is_output_invalid() -> None:
    async with storage(len(BODY), FIRST_BURST + 5000) as answer:
        with pytest.raises(RequestFailed) as failed:
            await fetch(answer)
    assert failed.value.failure.reason is Reason.OUTPUT_INVALID
    assert failed.value.endpoint == "view"
    assert failed.value.failure.detail == f"the download ended after {FIRST_BURST + 5000} of its {len(BODY)} bytes"


@pytest.mark.parametrize("declared", [len(BODY), None], ids=["content-length", "until-close"])
async def test_a_body_over_the_cap_is_refused(declared: int | None) -> None:
    async with storage(declared, len(BODY)) as answer:
        with pytest.raises(RequestFailed) as failed:
            await fetch(answer, max_body_size=100_000)
    assert failed.value.failure.reason is Reason.INVALID_RESPONSE
    assert failed.value.failure.detail == "response body larger than 100000 bytes"


class Failures:
    """A request observer that keeps the failures it is told of."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Reason]] = []

    def on_exchange(self, endpoint: str, code: int | None, seconds: float) -> None:
        return None

    def on_failure(self, endpoint: str, reason: Reason) -> None:
        self.seen.append((endpoint, reason))


@contextlib.asynccontextmanager
async def redirecting(location: str) -> AsyncIterator[HttpClient]:
    """An :class:`HttpClient` for a loopback ``/api/view`` that answers 302 to *location*."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = HttpClient(ClientSettings(base_url=f"http://127.0.0.1:{port}", timeout=10.0), observer=Failures())
    try:
        yield http
    finally:
        await http.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("location", ["http://[x", "http://[::1", "http://127.0.0.1:99999/a.png", ""])
async def test_a_redirect_to_an_unparsable_location_is_invalid_response(location: str) -> None:
    """``/api/view``'s 302 to a Location that is not a URL, or to none, makes ``CloudApi.view`` raise an
    ``invalid_response`` RequestFailed for ``view`` whose detail leaves the Location out, not a bare ValueError
    (nor a fetch of the API's base); the failure is counted for ``view`` as one of ``/api/view`` itself is."""
    async with redirecting(location) as http:
        with pytest.raises(RequestFailed) as failed:
            await CloudApi(http).view("a.png", "", "temp")
        assert isinstance(http.observer, Failures)
        assert http.observer.seen == [("view", Reason.INVALID_RESPONSE)]
    assert (failed.value.failure.reason, failed.value.endpoint) == (Reason.INVALID_RESPONSE, "view")
    assert not location or location not in failed.value.failure.detail
