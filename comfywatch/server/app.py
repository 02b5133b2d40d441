"""The exporter's HTTP server: ``/metrics``, ``/probe``, ``/healthz`` and the status page (aiohttp).

Serve it with :class:`ExporterRunner`: unlike aiohttp's runner, it answers a request the HTTP parser
refuses without quoting the request back, and closes a connection idle for :data:`IDLE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

from comfywatch.export.collector import DaemonInfo, ScrapeClock, metrics_body
from comfywatch.export.exposition import Body, choose_format
from comfywatch.server.status_routes import StatusSource, add_status_routes
from comfywatch.state import TargetState
from comfywatch.status.model import StatusInputs

__all__ = ["ExporterRunner", "MetricsSource", "create_app"]

log = structlog.get_logger("comfywatch.web")

MetricsSource = Callable[[], tuple[Sequence[TargetState], DaemonInfo]]
ProbeHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HealthCheck = Callable[[], bool]

#: zlib level 3 compresses a 1000-target /metrics (14 MB) in ~30 ms to ~560 kB; aiohttp's default (6) takes
#: ~130 ms for ~520 kB. Prometheus asks for gzip on every scrape.
GZIP_LEVEL = 3
#: Bodies above this are compressed in a worker thread (zlib releases the GIL), so polls go on meanwhile.
_THREAD_ABOVE = 1 << 20
#: Longest a ``/metrics`` body (or a status page) may take to send (44 MB at 10,000 targets: 0.4 MB/s). A client
#: that stops reading is cut off then: until it is, it keeps chunks the encoders have since replaced.
SEND_SECONDS = 120.0
#: Longest a connection may stay idle between requests, or take to send one (aiohttp's runner allows an hour):
#: silent connections from anyone who can reach the port must not pile up against the descriptors the polls
#: need. Prometheus scrapes, and reuses its connection, well within it.
IDLE_SECONDS = 75.0


class _QuietProtocol(RequestHandler):
    """aiohttp's connection handler, except for requests its parser refuses."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if message is None:
            return super().handle_error(request, status, exc, message)
        # A parser error's message (and its exception) quotes the request's bytes: the request line with a
        # /probe target's password, an Authorization header. Neither the answer nor the log repeats them.
        log.warning("request_refused", status=status, error=type(exc).__name__, peer=request.remote)
        response = web.Response(status=status, text=f"{status} {HTTPStatus(status).phrase}: malformed request\n")
        response.force_close()
        return response


class _QuietServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _QuietProtocol(self, loop=self._loop, **self._kwargs)


class ExporterRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer a malformed request with its status alone and are closed after
    :data:`IDLE_SECONDS` without a request."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", IDLE_SECONDS)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _QuietServer(server.request_handler, request_factory=server.request_factory,
                            handler_cancellation=server.handler_cancellation, loop=server._loop, **server._kwargs)


def _pieces(body: Body | bytes) -> Iterable[bytes]:
    return body.pieces() if isinstance(body, Body) else (body,)


def gzip_body(body: Body | bytes) -> list[bytes]:
    """*body* gzipped, piece by piece (a tenth of its size: see :data:`GZIP_LEVEL`)."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    compressed = [compressor.compress(piece) for piece in _pieces(body)]
    compressed.append(compressor.flush())
    return [piece for piece in compressed if piece]


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in {"gzip", "x-gzip"}:
            return params.replace(" ", "").lower() not in {"q=0", "q=0.0", "q=0.00", "q=0.000"}
    return False


async def send_body(request: web.Request, body: Body | bytes, *, content_type: str,
                    headers: Mapping[str, str] | None = None, cut_off_event: str = "response_cut_off"
                    ) -> web.StreamResponse:
    """Answer *request* with *body*, gzipped when the client takes it, as fast as the client reads and for at most
    :data:`SEND_SECONDS`: a client that stops reading is cut off then (*cut_off_event*, a warning), so it holds
    what it was sent for no longer; one that hangs up is no error."""
    response = web.StreamResponse(headers={"Content-Type": content_type, "Vary": "Accept-Encoding", **(headers or {})})
    pieces: Iterable[bytes]
    if len(body) > 4096 and _accepts_gzip(request.headers.get("Accept-Encoding", "")):
        packed = await asyncio.to_thread(gzip_body, body) if len(body) > _THREAD_ABOVE else gzip_body(body)
        del body  # a slow client holds a tenth of the size, not the whole of it as well
        response.headers["Content-Encoding"] = "gzip"
        response.content_length = sum(map(len, packed))
        pieces = packed
    else:
        pieces = _pieces(body)
        response.content_length = len(body)
    try:
        async with asyncio.timeout(SEND_SECONDS):
            await response.prepare(request)
            if request.method != hdrs.METH_HEAD:
                # Each write waits while the socket's buffer is full: a response holds chunks, not copies.
                for piece in pieces:
                    await response.write(piece)
            await response.write_eof()
    except ConnectionError:
        pass  # the client hung up: its business, not the daemon's (aiohttp would log a traceback)
    except TimeoutError:
        log.warning(cut_off_event, peer=request.remote, seconds=SEND_SECONDS)
        if request.transport is not None:
            request.transport.abort()
    return response


def _status_of(source: MetricsSource) -> StatusSource:
    def inputs() -> StatusInputs:
        states, daemon = source()
        return StatusInputs(states, reload_success=daemon.reload_success)

    return inputs


def create_app(
    source: MetricsSource,
    *,
    probe: ProbeHandler | None = None,
    healthy: HealthCheck | None = None,
    middlewares: Sequence[object] = (),
    scrapes: ScrapeClock | None = None,
    status: StatusSource | None = None,
) -> web.Application:
    """The exporter app. *source* returns a consistent (states, daemon info) pair at render time; *scrapes*
    learns when ``/metrics`` is scraped; *status* feeds the status page (by default, *source*'s states)."""

    async def metrics(request: web.Request) -> web.StreamResponse:
        if scrapes is not None:
            scrapes.scraped(time.monotonic())
        openmetrics, content_type = choose_format(request.headers.get("Accept"))
        states, daemon = source()
        return await send_body(request, metrics_body(states, daemon=daemon, openmetrics=openmetrics),
                               content_type=content_type, cut_off_event="scrape_cut_off")

    async def healthz(request: web.Request) -> web.Response:
        ok = healthy() if healthy is not None else True
        return web.Response(text="ok\n" if ok else "scheduler stalled\n", status=200 if ok else 503)

    async def no_probe(request: web.Request) -> web.Response:
        return web.Response(text="probing is not available\n", status=404)

    app = web.Application(middlewares=list(middlewares))  # type: ignore[arg-type]
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    add_status_routes(app, status or _status_of(source), send_body)
    app.router.add_get("/probe", probe or no_probe)
    return app
