"""Requests the HTTP parser refuses are answered and logged without repeating a byte of them.

aiohttp's parser errors quote the offending bytes: the request line (a ``/probe`` target with its password,
percent-encoded as Prometheus sends it) or a header (an ``Authorization`` value). The exporter's server
answers such a request with its status alone and logs only what kind of error it was.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Sequence

import pytest
from aiohttp import web

from comfywatch.export.collector import DaemonInfo
from comfywatch.server import app as server_app
from comfywatch.server.app import ExporterRunner, create_app
from comfywatch.state import TargetState

PASSWORD = "hunter2-malformed-pw"
#: base64 of "monitor:hunter2-malformed-pw", as an HTTP client sends it.
BASIC = "bW9uaXRvcjpodW50ZXIyLW1hbGZvcm1lZC1wdw=="
TARGET = "http%3A%2F%2Fmonitor%3Ahunter2-malformed-pw%40127.0.0.1%3A8188%2F"
LEAKS = (PASSWORD, BASIC, BASIC[:16], "hunter2%2Dmalformed", "hunter2-malformed")

MALFORMED = {
    "request line over 8190 bytes": f"GET /probe?target={TARGET}{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n",
    "header over 8190 bytes": f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {BASIC}{'A' * 9000}\r\n\r\n",
    "control character in a header": f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {BASIC}\x01\r\n\r\n",
    "control character in the target": f"GET /probe?target=http://monitor:{PASSWORD}@h/\x01 HTTP/1.1\r\n\r\n",
    "bad HTTP version": f"GET /probe?target={TARGET} HTTP/9.Z\r\nHost: x\r\n\r\n",
    "bad header name": f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthori zation: Basic {BASIC}\r\n\r\n",
    "bad chunk size": f"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz {PASSWORD}\r\n",
}


@pytest.fixture
async def address() -> AsyncIterator[tuple[str, int]]:
    """The exporter's app served by the runner the daemon uses, on an ephemeral loopback port."""
    state = TargetState("gpu-1", "local", "http://10.0.0.1:8188", endpoints=["system_stats"])
    state.set_up(True)
    states = [state]

    def source() -> tuple[Sequence[TargetState], DaemonInfo]:
        return states, DaemonInfo()

    runner = ExporterRunner(create_app(source), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield host, port
    finally:
        await runner.cleanup()


async def exchange(address: tuple[str, int], request: str) -> bytes:
    """Send raw bytes, read the whole answer (the server closes after a refused request)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request.encode("latin-1"))
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("request_text", MALFORMED.values(), ids=MALFORMED.keys())
async def test_refused_requests_echo_nothing(
    address: tuple[str, int], log_stream: io.StringIO, request_text: str
) -> None:
    """A 400 with a fixed body and one warning naming the error class; no credential in either."""
    answer = await exchange(address, request_text)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400 Bad Request\r\n") or head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert body == b"400 Bad Request: malformed request\n"
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    refused = [line for line in lines if line["event"] == "request_refused"]
    assert len(refused) == 1, lines
    assert refused[0]["level"] == "warning"
    assert refused[0]["status"] == 400
    assert refused[0]["error"].isidentifier()
    for leak in LEAKS:
        assert leak not in answer.decode("latin-1")
        assert leak not in log_stream.getvalue()


async def test_well_formed_requests_are_served_as_before(address: tuple[str, int]) -> None:
    """The runner changes only refused requests: /metrics still answers 200 with the exposition."""
    answer = await exchange(address, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'\ncomfyui_up{target="gpu-1"} 1.0\n' in answer


SILENT = {
    "nothing sent": "",
    "a request never finished": "GET /metrics HTTP/1.1\r\nHost: x\r\n",
    "idle after an answered request": "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("sent", SILENT.values(), ids=SILENT.keys())
async def test_an_idle_connection_is_closed(monkeypatch: pytest.MonkeyPatch, sent: str) -> None:
    """A connection that sends nothing, half a request, or nothing after its answer is closed by the server
    after IDLE_SECONDS (shortened here), rather than held for aiohttp's hour."""
    monkeypatch.setattr(server_app, "IDLE_SECONDS", 0.5)
    runner = ExporterRunner(create_app(lambda: ([], DaemonInfo())), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        reader, writer = await asyncio.open_connection(*runner.addresses[0][:2])
        try:
            writer.write(sent.encode("latin-1"))
            await writer.drain()
            async with asyncio.timeout(10):
                answer = await reader.read()  # to the end: the server's close
        finally:
            writer.close()
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") == sent.startswith("GET /healthz"), answer[:200]
