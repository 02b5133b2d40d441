"""Tests for comfywatch.clients.phases: httpx trace events turned into HTTP phase timings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable

import httpx
import pytest
from aiohttp import web

from comfywatch.clients.net import resolve
from comfywatch.clients.phases import PHASES, PhaseRecorder, PhaseTimings
from tests.certs import CertBundle, CertPair, make_certs

# The events httpcore 1.0 emits for one HTTP/1.1 request on a new https connection, in order.
NEW_HTTPS = [
    "connection.connect_tcp.started",
    "connection.connect_tcp.complete",
    "connection.start_tls.started",
    "connection.start_tls.complete",
    "http11.send_request_headers.started",
    "http11.send_request_headers.complete",
    "http11.send_request_body.started",
    "http11.send_request_body.complete",
    "http11.receive_response_headers.started",
    "http11.receive_response_headers.complete",
    "http11.receive_response_body.started",
    "http11.receive_response_body.complete",
    "http11.response_closed.started",
    "http11.response_closed.complete",
]
REUSED = [e for e in NEW_HTTPS if e.startswith("http11.")]


def feed(recorder: PhaseRecorder, events: Iterable[tuple[str, float]]) -> PhaseTimings:
    """Record synthetic (event, timestamp) pairs and return the timings."""
    for name, at in events:
        recorder.record(name, at=at)
    return recorder.timings()


class TestAccounting:
    def test_new_https_connection(self) -> None:
        """Each phase is the span between its events; processing starts when the body was sent."""
        at = [0.0, 0.010, 0.010, 0.030, 0.030, 0.031, 0.031, 0.032, 0.032, 0.100, 0.100, 0.100, 0.150, 0.151]
        timings = feed(PhaseRecorder(), zip(NEW_HTTPS, at, strict=True))
        assert timings.dns is None and timings.reused is False
        phases = (timings.connect, timings.tls, timings.processing, timings.transfer)
        assert phases == pytest.approx((0.010, 0.020, 0.068, 0.0))

    def test_transfer_runs_until_the_body_is_read(self) -> None:
        """transfer spans response headers to the end of the body."""
        recorder = PhaseRecorder()
        recorder.record("http11.send_request_headers.started", at=1.0)
        recorder.record("http11.send_request_headers.complete", at=1.0)
        recorder.record("http11.send_request_body.complete", at=1.5)
        recorder.record("http11.receive_response_headers.complete", at=2.0)
        recorder.record("http11.receive_response_body.complete", at=5.0)
        timings = recorder.timings()
        assert timings.processing == pytest.approx(0.5)
        assert timings.transfer == pytest.approx(3.0)

    def test_processing_falls_back_to_headers_sent(self) -> None:
        """Without a send_request_body event (HTTP/2 GET), processing starts when headers were sent."""
        recorder = PhaseRecorder()
        recorder.record("http2.send_request_headers.started", at=1.0)
        recorder.record("http2.send_request_headers.complete", at=1.25)
        recorder.record("http2.receive_response_headers.complete", at=2.0)
        assert recorder.timings().processing == pytest.approx(0.75)

    def test_dns_is_subtracted_from_connect(self) -> None:
        """The caller's DNS time is reported as dns and taken out of connect_tcp, which includes it."""
        recorder = PhaseRecorder(dns=0.004)
        recorder.record("connection.connect_tcp.started", at=0.0)
        recorder.record("connection.connect_tcp.complete", at=0.010)
        timings = recorder.timings()
        assert timings.dns == 0.004
        assert timings.connect == pytest.approx(0.006)

    def test_connect_never_goes_negative(self) -> None:
        """A pre-resolution slower than the whole connect (cached the second time) clamps connect at 0."""
        recorder = PhaseRecorder(dns=0.5)
        recorder.record("connection.connect_tcp.started", at=0.0)
        recorder.record("connection.connect_tcp.complete", at=0.001)
        assert recorder.timings().connect == 0.0

    def test_reused_connection(self) -> None:
        """No connect/TLS events means a kept-alive connection: reused, connect and tls None."""
        timings = feed(PhaseRecorder(), ((name, float(i)) for i, name in enumerate(REUSED)))
        assert timings.reused is True
        assert timings.connect is None and timings.tls is None
        assert timings.processing == pytest.approx(2.0)
        assert timings.transfer == pytest.approx(2.0)

    def test_nothing_recorded_is_not_reused(self) -> None:
        """Before any request event, nothing is reported and reused is False."""
        assert PhaseRecorder().timings() == PhaseTimings(None, None, None, None, None, reused=False)

    def test_failed_connect_leaves_phases_unknown(self) -> None:
        """A connect that failed yields no connect time and no later phases."""
        recorder = PhaseRecorder()
        recorder.record("connection.connect_tcp.started", at=0.0)
        recorder.record("connection.connect_tcp.failed", at=2.0)
        timings = recorder.timings()
        assert timings == PhaseTimings(None, None, None, None, None, reused=False)

    def test_last_exchange_wins(self) -> None:
        """A second exchange (a redirect on a new connection) replaces the first one's timings."""
        recorder = PhaseRecorder()
        feed(recorder, zip(NEW_HTTPS, [float(i) for i in range(len(NEW_HTTPS))], strict=True))
        second = [100.0, 100.5, 100.5, 101.0] + [101.0] * 10
        timings = feed(recorder, zip(NEW_HTTPS, second, strict=True))
        assert timings.connect == pytest.approx(0.5)
        assert timings.tls == pytest.approx(0.5)
        assert timings.reused is False

    def test_reused_after_a_new_connection_resets(self) -> None:
        """A second request on the same recorder over a kept-alive connection reports reused."""
        recorder = PhaseRecorder()
        feed(recorder, zip(NEW_HTTPS, [float(i) for i in range(len(NEW_HTTPS))], strict=True))
        timings = feed(recorder, ((name, 50.0 + i) for i, name in enumerate(REUSED)))
        assert timings.reused is True and timings.connect is None

    def test_unknown_event_names_are_ignored(self) -> None:
        """Names without an event part are ignored rather than breaking the accounting."""
        recorder = PhaseRecorder()
        recorder.record("nonsense", at=1.0)
        recorder.record("connection.close.started", at=1.0)
        assert recorder.timings() == PhaseTimings(None, None, None, None, None, reused=False)

    def test_injected_clock(self) -> None:
        """Without an explicit timestamp the injected clock is read."""
        ticks = iter([10.0, 10.25])
        recorder = PhaseRecorder(clock=lambda: next(ticks))
        recorder.record("connection.start_tls.started")
        recorder.record("connection.start_tls.complete")
        assert recorder.timings().tls == pytest.approx(0.25)

    async def test_callable_as_httpx_trace(self) -> None:
        """The recorder is an async (name, info) callback, as httpx's async transport requires."""
        ticks = iter([1.0, 3.0])
        recorder = PhaseRecorder(clock=lambda: next(ticks))
        await recorder("connection.connect_tcp.started", {"host": "h"})
        await recorder("connection.connect_tcp.complete", {"return_value": None})
        assert recorder.timings().connect == pytest.approx(2.0)

    def test_as_metrics_has_every_phase(self) -> None:
        """as_metrics gives one value per phase label, 0 for a phase that did not happen."""
        timings = PhaseTimings(dns=0.001, connect=None, tls=None, processing=0.2, transfer=0.01, reused=True)
        assert timings.as_metrics() == {
            "dns": 0.001,
            "connect": 0.0,
            "tls": 0.0,
            "processing": 0.2,
            "transfer": 0.01,
        }
        assert tuple(timings.as_metrics()) == PHASES


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    """The test CA and server certificates (needs the `cryptography` dev dependency)."""
    pytest.importorskip("cryptography", reason="tests/certs.py generates certificates with cryptography")
    return make_certs(tmp_path_factory.mktemp("certs"))


@contextlib.asynccontextmanager
async def serve(pair: CertPair | None = None) -> AsyncIterator[int]:
    """An aiohttp server on 127.0.0.1 answering GET / with a small body (TLS when ``pair`` is given)."""
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="x" * 4096)

    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pair.server_context() if pair else None).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def get_with_phases(client: httpx.AsyncClient, url: str, dns: float | None = None) -> PhaseTimings:
    """GET url with a fresh recorder and return its timings."""
    recorder = PhaseRecorder(dns=dns)
    response = await client.get(url, extensions={"trace": recorder})
    assert response.status_code == 200
    return recorder.timings()


class TestRealSockets:
    async def test_http_new_then_reused_connection(self) -> None:
        """Over plain http the first request connects (no TLS), the second reuses the connection."""
        async with serve() as port, httpx.AsyncClient(trust_env=False) as client:
            url = f"http://localhost:{port}/"
            dns = await resolve("localhost", port, 5.0)
            first = await get_with_phases(client, url, dns=dns.seconds)
            second = await get_with_phases(client, url)
        assert first.reused is False
        assert first.dns == dns.seconds
        assert first.connect is not None and first.connect >= 0
        assert first.tls is None
        assert first.processing is not None and first.processing > 0
        assert first.transfer is not None and first.transfer >= 0
        assert second.reused is True
        assert second.connect is None and second.tls is None
        assert second.processing is not None and second.processing > 0

    async def test_https_records_tls(self, certs: CertBundle) -> None:
        """Over https with the test CA the TLS handshake gets a non-zero phase; a reuse has none."""
        async with (
            serve(certs.valid) as port,
            httpx.AsyncClient(trust_env=False, verify=certs.client_context()) as client,
        ):
            url = f"https://127.0.0.1:{port}/"
            first = await get_with_phases(client, url)
            second = await get_with_phases(client, url)
        assert first.reused is False
        assert first.connect is not None and first.connect > 0
        assert first.tls is not None and first.tls > 0
        assert first.processing is not None and first.processing > 0
        assert second.reused is True and second.tls is None
