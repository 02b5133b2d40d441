"""Deliberately broken set-ups for ``comfywatch doctor`` tests: real servers on loopback, ephemeral ports.

- :func:`serve` runs any aiohttp app (optionally over TLS) and yields its base URL.
- :func:`not_comfyui_app` is another web service on "ComfyUI's" port: an HTML page, other JSON or 404s.
- :func:`proxy_app` is a reverse proxy in front of a (simulated) ComfyUI, with the faults real proxies have:
  it can strip the WebSocket upgrade (nginx without the ``Upgrade``/``Connection`` lines), require basic
  auth, rewrite ``/system_stats`` (other devices, ``--listen 0.0.0.0``) or shift its ``Date`` header (clock
  skew). Behind TLS (``serve(..., ssl_context=)``) it presents the certificates of ``tests/certs.py``.
- :func:`expiring_certs` makes a CA and a loopback certificate that expires in a few days.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from tests.certs import CertPair

__all__ = [
    "ProxyOptions",
    "expiring_certs",
    "not_comfyui_app",
    "proxy_app",
    "serve",
]

# Hop-by-hop headers (RFC 9110 §7.6.1) plus what the proxy recomputes itself. Dropping "upgrade" and
# "connection" is exactly what breaks WebSockets behind an nginx that lacks the two proxy_set_header lines.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
})
_NOT_COPIED_BACK = _HOP_BY_HOP | {"content-encoding", "date", "server"}
_PROXY_SERVER = "nginx/1.24.0 (Ubuntu)"


def _nginx_page(status_line: str) -> str:
    return (f"<html>\r\n<head><title>{status_line}</title></head>\r\n<body>\r\n<center><h1>{status_line}</h1>"
            f"</center>\r\n<hr><center>{_PROXY_SERVER}</center>\r\n</body>\r\n</html>\r\n")


@contextlib.asynccontextmanager
async def serve(app: web.Application, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Run *app* on 127.0.0.1 (an ephemeral port) and yield ``http(s)://127.0.0.1:PORT``."""
    # A short shutdown: a WebSocket the proxy still pipes must not hold the test for a minute.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def not_comfyui_app(kind: Literal["html", "json", "404"]) -> web.Application:
    """Another service answering on the port: a web page, another API's JSON, or 404 for everything."""
    app = web.Application()

    async def html(_request: web.Request) -> web.Response:
        return web.Response(text="<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head>"
                                 "<body><h1>Welcome to nginx!</h1></body></html>", content_type="text/html")

    async def other_json(_request: web.Request) -> web.Response:
        # What Prometheus answers on its API: JSON, status 200, but nothing like /system_stats.
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": []}})

    if kind == "html":
        app.router.add_get("/{tail:.*}", html)
    elif kind == "json":
        app.router.add_get("/{tail:.*}", other_json)
    return app  # "404": no routes, aiohttp answers "404: Not Found" to everything


@dataclass
class ProxyOptions:
    """How the reverse proxy behaves (the defaults forward everything faithfully, WebSockets included)."""

    #: False: forward ``GET /ws`` as a plain request without ``Upgrade``, like nginx missing the upgrade lines.
    websocket: bool = True
    #: Require ``Authorization: Basic`` with this (user, password); 401 with nginx's page otherwise.
    basic_auth: tuple[str, str] | None = None
    #: Edit the decoded ``/system_stats`` body in place before it is returned.
    edit_system_stats: Callable[[dict[str, Any]], None] | None = None
    #: Seconds added to the ``Date`` header of every answer (a server whose clock is off).
    date_offset: float = 0.0
    #: A ``Date`` header sent as given instead (one no date parser can read).
    date: str | None = None
    #: Counts of what went through, for assertions: "http", "ws_piped", "ws_stripped", "unauthorized".
    seen: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.seen[what] = self.seen.get(what, 0) + 1


@dataclass
class _ProxyState:
    upstream: str
    options: ProxyOptions
    session: aiohttp.ClientSession | None = None


_STATE = web.AppKey("doctor_proxy_state", _ProxyState)


def proxy_app(upstream: str, options: ProxyOptions | None = None) -> web.Application:
    """A reverse proxy forwarding every request under ``/`` to *upstream* (``http://host:port``)."""
    app = web.Application()
    state = _ProxyState(upstream.rstrip("/"), options or ProxyOptions())
    app[_STATE] = state

    async def session_ctx(_app: web.Application) -> AsyncIterator[None]:
        state.session = aiohttp.ClientSession(auto_decompress=True)
        yield
        await state.session.close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", _forward)
    return app


def _authorized(request: web.Request, credentials: tuple[str, str]) -> bool:
    token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    return request.headers.get("Authorization") == f"Basic {token}"


async def _forward(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    options = state.options
    assert state.session is not None
    if options.basic_auth is not None and not _authorized(request, options.basic_auth):
        options.count("unauthorized")
        return web.Response(status=401, text=_nginx_page("401 Authorization Required"), content_type="text/html",
                            headers={"WWW-Authenticate": 'Basic realm="ComfyUI"', "Server": _PROXY_SERVER})
    target = URL(state.upstream + request.rel_url.raw_path_qs, encoded=True)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        if options.websocket:
            options.count("ws_piped")
            return await _pipe_websocket(request, state.session, target)
        options.count("ws_stripped")  # falls through: forwarded as a plain GET, hop-by-hop headers dropped
    else:
        options.count("http")
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
    body = await request.read() if request.can_read_body else None
    try:
        async with state.session.request(request.method, target, headers=headers, data=body,
                                         allow_redirects=False) as answer:
            payload = await answer.read()
            status = answer.status
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _NOT_COPIED_BACK}
    except aiohttp.ClientConnectionError:
        # nginx's answer when the upstream refuses the connection.
        return web.Response(status=502, text=_nginx_page("502 Bad Gateway"), content_type="text/html",
                            headers={"Server": _PROXY_SERVER})
    if options.edit_system_stats is not None and status == 200 and request.path.endswith("/system_stats"):
        stats = json.loads(payload)
        options.edit_system_stats(stats)
        payload = json.dumps(stats).encode()
    out["Server"] = _PROXY_SERVER
    if options.date_offset:
        out["Date"] = email.utils.formatdate(time.time() + options.date_offset, usegmt=True)
    if options.date is not None:
        out["Date"] = options.date
    return web.Response(status=status, body=payload, headers=out)


async def _pipe_websocket(request: web.Request, session: aiohttp.ClientSession, target: URL) -> web.StreamResponse:
    """Upgrade both sides and copy frames until either side closes."""
    ws_target = target.with_scheme("wss" if target.scheme == "https" else "ws")
    try:
        upstream = await session.ws_connect(ws_target, max_msg_size=0, autoping=True)
    except (aiohttp.WSServerHandshakeError, aiohttp.ClientConnectionError):
        return web.Response(status=502, text=_nginx_page("502 Bad Gateway"), content_type="text/html")
    client = web.WebSocketResponse(max_msg_size=0)
    await client.prepare(request)

    async def pump(source: Any, sink: Any) -> None:
        async for message in source:
            if message.type == WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await sink.send_bytes(message.data)
        await sink.close()

    tasks = {asyncio.ensure_future(pump(upstream, client)), asyncio.ensure_future(pump(client, upstream))}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        await client.close()
    return client


def expiring_certs(directory: Path, days: float) -> tuple[Path, CertPair]:
    """A fresh CA (its PEM path) and a loopback server certificate it signed that expires in *days* days."""
    import datetime as dt

    from cryptography.hazmat.primitives.asymmetric import ec

    # The builders of tests/certs.py, reused so both helpers make certificates of the same shape.
    from tests.certs import LOOPBACK_IPS, LOOPBACK_NAMES, _ca_cert, _leaf_cert, _write_cert, _write_key

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca_cert(ca_key, "comfywatch expiring test CA", now)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _leaf_cert(key, (ca, ca_key), LOOPBACK_NAMES[0], LOOPBACK_NAMES, LOOPBACK_IPS,
                      now - dt.timedelta(days=80), now + dt.timedelta(days=days))
    ca_path = _write_cert(directory / "expiring-ca.pem", ca)
    return ca_path, CertPair(_write_cert(directory / "expiring.pem", leaf), _write_key(directory / "expiring.key", key))
