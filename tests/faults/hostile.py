"""A programmable, hostile ComfyUI stand-in: a raw asyncio TCP server that can misbehave below HTTP.

Healthy, it answers like ComfyUI 0.3.64 from the recorded fixtures: ``/api/system_stats``, ``/api/queue``,
``/api/history`` (``?max_items=N`` gives the newest N, ``/api/history/{id}`` one entry or ``{}``), and 404 for
everything else (``/api/jobs`` included, as 0.3.64 has no jobs API; ``/api/ws`` too, so a WebSocket monitor
simply fails to connect). Headers mimic aiohttp's (``Server: Python/3.11 aiohttp/3.14.5``), keep-alive
included, because the daemon pools connections.

:meth:`HostileServer.set_fault` switches behaviour at run time, for every route or only some
(``"system_stats"``, ``"queue"``, ``"history"``, ``"jobs"``, ``"ws"``): refused connections (the listening
socket is closed, its port held, and later reopened on the same port), a reset in the middle of the body, a server that
accepts and never answers, headers or bodies that trickle, a 2 GiB body (declared or chunked), arbitrary
status/body/content-type answers (invalid UTF-8, invalid JSON, wrong shapes, HTML pages) and redirect loops.
``set_tls`` presents another certificate to new connections (open ones are cut, as a restart would);
``skew_ms`` shifts the server's clock (``Date`` and the timestamps of the jobs it records).
:func:`hostile_system_stats` and :func:`hostile_queue` build well-shaped bodies whose strings and sizes are
hostile (lone surrogates, terminal escapes, a 20 MB version, 100,000 devices).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import email.utils
import gzip
import json
import socket
import ssl
import struct
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qs, urlsplit

from comfywatch.sim.local.app import PortHold
from tests.fixtures import FIXTURES, load_json

__all__ = [
    "HOSTILE_TEXT", "HUGE_BYTES", "HUGE_VERSION_CHARS", "JOB_SECONDS", "MANY_DEVICES", "Fault", "HostileServer", "Mode",
    "hostile_queue", "hostile_system_stats",
]

SERVER = "Python/3.11 aiohttp/3.14.5"
JSON_TYPE = "application/json; charset=utf-8"
HUGE_BYTES = 2 * 1024**3
#: Whitespace a gzip bomb pads a valid body with (JSON allows it): only the body-size cap can refuse it.
BOMB_PADDING = 8 * 1024**2
#: Server-side run time of every job :meth:`HostileServer.add_jobs` records (its own timestamps).
JOB_SECONDS = 1.5
TRICKLE_SECONDS = 0.05
_CHUNK = b" " * 65536
_MAX_HEAD = 65536
_REASONS = {200: "OK", 302: "Found", 404: "Not Found", 500: "Internal Server Error", 502: "Bad Gateway"}


class Mode(StrEnum):
    """How the server treats a request (or, for ``refuse``, the connection)."""

    HEALTHY = "healthy"
    REFUSE = "refuse"
    RESET_MID_BODY = "reset_mid_body"
    SILENT = "silent"
    SLOW_HEADERS = "slow_headers"
    SLOW_BODY = "slow_body"
    HUGE_DECLARED = "huge_declared"
    HUGE_CHUNKED = "huge_chunked"
    GZIP_BOMB = "gzip_bomb"
    ANSWER = "answer"
    REDIRECT_LOOP = "redirect_loop"


@dataclass(frozen=True, slots=True)
class Fault:
    """One behaviour. ``routes`` empty means every route; ``status``/``body``/``content_type`` serve ANSWER."""

    mode: Mode
    routes: tuple[str, ...] = ()
    status: int = 200
    body: bytes = b""
    content_type: str = JSON_TYPE

    def applies_to(self, route: str) -> bool:
        """Whether a request for *route* gets this behaviour rather than a healthy answer."""
        return not self.routes or route in self.routes


HEALTHY = Fault(Mode.HEALTHY)


def route_of(path: str) -> str:
    """``/api/history/abc`` -> ``history``: the route name faults are keyed by."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[0] == "api":
        parts = parts[1:]
    return parts[0] if parts else ""


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    keep_alive: bool

    @property
    def route(self) -> str:
        return route_of(self.path)


class HostileServer:
    """The programmable stand-in; ``await start()``, then point a target at :attr:`url`."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        #: The context whose certificate new TLS connections get (None: plain HTTP); see :meth:`set_tls`.
        self.tls = tls
        self._listening_tls: ssl.SSLContext | None = None
        if tls is not None:
            # The listening context hands each handshake over to whatever ``self.tls`` is at that moment.
            self._listening_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._listening_tls.sni_callback = self._pick_certificate
        self.fault: Fault = HEALTHY
        self.skew_ms = 0
        #: The /queue answer, or a function giving one per request.
        self.queue_body: bytes | Callable[[], bytes] = (FIXTURES / "queue_idle.json").read_bytes()
        self.system_body: bytes = (FIXTURES / "system_stats_api_prefix.json").read_bytes()
        self.history: OrderedDict[str, dict[str, Any]] = OrderedDict(load_json("history_all.json"))
        self.requests: dict[str, int] = {}
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._held = PortHold()
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._template: dict[str, Any] = next(iter(load_json("history_success_preview.json").values()))

    @property
    def url(self) -> str:
        """Base URL of this server (``https`` when it presents a certificate)."""
        return f"{'https' if self.tls is not None else 'http'}://{self.host}:{self.port}"

    # Lifecycle.

    async def start(self) -> HostileServer:
        """Listen on an ephemeral loopback port (kept across refuse/reopen)."""
        await self._listen()
        return self

    def _pick_certificate(self, connection: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        if self.tls is not None:
            connection.context = self.tls

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, reuse_address=True, ssl=self._listening_tls
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> list[tuple[Any, ...]]:
        """Close the listening socket; the addresses it was bound to."""
        if self._server is None:
            return []
        bound = [sock.getsockname() for sock in self._server.sockets]
        self._server.close()
        self._server = None
        return bound

    def cut_connections(self) -> None:
        """Reset every open connection, as a dying process would."""
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def close(self) -> None:
        """Stop listening, cut every connection and wait for their handlers to end."""
        await self._stop_listening()
        self._held.release()
        self.cut_connections()
        if self._handlers:
            # A cut connection wakes its handler (read returns, drain raises); none may outlive the loop.
            await asyncio.wait(list(self._handlers), timeout=5)

    # Control.

    async def set_fault(self, fault: Fault) -> None:
        """Switch behaviour; ``refuse`` closes the listening socket, leaving it reopens the same port.

        While refusing, the port stays bound without listening, so no other server is handed it meanwhile.
        """
        before, self.fault = self.fault, fault
        if fault.mode is Mode.REFUSE and before.mode is not Mode.REFUSE:
            bound = await self._stop_listening()
            self.cut_connections()
            self._held.hold(bound)
        elif fault.mode is not Mode.REFUSE and before.mode is Mode.REFUSE:
            await self._listen()
            self._held.release()
        elif fault.mode is not Mode.HEALTHY:
            # Kept-alive connections must not carry answers of the previous behaviour past the switch.
            self.cut_connections()

    async def heal(self) -> None:
        """Back to healthy answers."""
        await self.set_fault(HEALTHY)

    def set_tls(self, context: ssl.SSLContext) -> None:
        """Present another certificate from the next connection on (open ones are cut)."""
        self.tls = context
        self.cut_connections()

    def now_ms(self) -> int:
        """The server's (possibly skewed) wall clock in milliseconds."""
        return int(time.time() * 1000) + self.skew_ms

    def add_jobs(self, count: int) -> list[str]:
        """Record *count* successful jobs that just finished (each ran ``JOB_SECONDS`` by the server's clock)."""
        ids = []
        for _ in range(count):
            prompt_id = str(uuid.uuid4())
            entry = copy.deepcopy(self._template)
            end = self.now_ms()
            start = end - int(JOB_SECONDS * 1000)
            entry["prompt"][1] = prompt_id
            entry["prompt"][3] = {"client_id": uuid.uuid4().hex}
            messages = entry["status"]["messages"]
            for event, data in messages:
                data["prompt_id"] = prompt_id
                data["timestamp"] = end if event == "execution_success" else start
            self.history[prompt_id] = entry
            ids.append(prompt_id)
        return ids

    # Serving.

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._writers.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests[request.route] = self.requests.get(request.route, 0) + 1
                fault = self.fault if self.fault.applies_to(request.route) else HEALTHY
                if not await self._answer(request, fault, reader, writer) or not request.keep_alive:
                    return
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return  # includes ssl.SSLError: the client refused our certificate, which is the point
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            writer.transport.abort()

    async def _answer(
        self, request: _Request, fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Write one answer; False when the connection must end afterwards."""
        mode = fault.mode
        if mode is Mode.HEALTHY:
            status, body, content_type = self._healthy(request)
            writer.write(self._head(status, content_type, len(body)) + body)
            await writer.drain()
            return True
        if mode is Mode.ANSWER:
            writer.write(self._head(fault.status, fault.content_type, len(fault.body)) + fault.body)
            await writer.drain()
            return True
        if mode is Mode.REDIRECT_LOOP:
            target = request.path + (("?" + _query_text(request.query)) if request.query else "")
            page = b"<html><body>Found</body></html>"
            head = self._head(302, "text/html", len(page), extra=(("Location", target),))
            writer.write(head + page)
            await writer.drain()
            return True
        if mode is Mode.REFUSE:
            # Accepted just before the listening socket closed: the dying process resets it.
            _reset(writer)
            return False
        if mode is Mode.SILENT:
            # Accepted and read: never a byte back, until the client gives up (or the connection is cut).
            while await reader.read(65536):
                pass
            return False
        if mode is Mode.RESET_MID_BODY:
            _, body, content_type = self._healthy(request)
            body = body if len(body) > 64 else body + b" " * 64
            writer.write(self._head(200, content_type, len(body)) + body[: len(body) // 2])
            await writer.drain()
            _reset(writer)
            return False
        if mode is Mode.SLOW_HEADERS:
            _, body, content_type = self._healthy(request)
            await _trickle(writer, self._head(200, content_type, len(body)) + body)
            return False
        if mode is Mode.SLOW_BODY:
            _, body, content_type = self._healthy(request)
            writer.write(self._head(200, content_type, len(body)))
            await _trickle(writer, body)
            return False
        if mode is Mode.HUGE_DECLARED:
            writer.write(self._head(200, JSON_TYPE, HUGE_BYTES) + b'{"pad": "')
            await _stream(writer, HUGE_BYTES, chunked=False)
            return False
        if mode is Mode.GZIP_BOMB:
            # The healthy answer padded to 8 MiB and gzipped to a few KiB, with a truthful Content-Length:
            # only counting the decoded bytes catches it.
            _, body, content_type = self._healthy(request)
            bomb = gzip.compress(body + b" " * BOMB_PADDING, compresslevel=1)
            head = self._head(200, content_type, len(bomb), extra=(("Content-Encoding", "gzip"),))
            writer.write(head + bomb)
            await writer.drain()
            return True
        if mode is Mode.HUGE_CHUNKED:
            writer.write(self._head(200, JSON_TYPE, None) + _chunk(b'{"pad": "'))
            await _stream(writer, HUGE_BYTES, chunked=True)
            return False
        raise AssertionError(f"unhandled mode {mode}")

    def _healthy(self, request: _Request) -> tuple[int, bytes, str]:
        route, parts = request.route, [p for p in request.path.split("/") if p]
        if request.method == "GET" and route == "system_stats":
            return 200, self.system_body, JSON_TYPE
        if request.method == "GET" and route == "queue":
            body = self.queue_body() if callable(self.queue_body) else self.queue_body
            return 200, body, JSON_TYPE
        if request.method == "GET" and route == "history":
            if parts[-1] != "history":
                prompt_id = parts[-1]
                found = {prompt_id: self.history[prompt_id]} if prompt_id in self.history else {}
                return 200, _dumps(found), JSON_TYPE
            items = list(self.history.items())
            wanted = request.query.get("max_items")
            if wanted:
                try:
                    items = items[-int(wanted[0]):] if int(wanted[0]) > 0 else []
                except ValueError:
                    return 500, b"500 Internal Server Error\n\nServer got itself in trouble", "text/plain"
            return 200, _dumps(dict(items)), JSON_TYPE
        # aiohttp's 404 for an unknown route, as ComfyUI 0.3.64 serves it for /api/jobs
        return 404, b"404: Not Found", "application/octet-stream"

    def _head(
        self, status: int, content_type: str, length: int | None, extra: tuple[tuple[str, str], ...] = ()
    ) -> bytes:
        date = email.utils.formatdate(self.now_ms() / 1000, usegmt=True)
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", f"Content-Type: {content_type}"]
        lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
        lines += [f"Date: {date}", f"Server: {SERVER}"]
        lines += [f"{name}: {value}" for name, value in extra]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _dumps(value: Any) -> bytes:
    # ComfyUI's json.dumps defaults: ", " and ": " separators.
    return json.dumps(value).encode()


def _query_text(query: dict[str, list[str]]) -> str:
    return "&".join(f"{k}={v}" for k, values in query.items() for v in values)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def _stream(writer: asyncio.StreamWriter, total: int, *, chunked: bool) -> None:
    """Write up to *total* bytes of padding, one 64 KiB chunk at a time, until the client hangs up."""
    written = 0
    while written < total and not writer.transport.is_closing():
        writer.write(_chunk(_CHUNK) if chunked else _CHUNK)
        await writer.drain()
        written += len(_CHUNK)


async def _trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    """One byte every ``TRICKLE_SECONDS`` (slowloris), until done or the client hangs up."""
    for byte in data:
        if writer.transport.is_closing():
            return
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(TRICKLE_SECONDS)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), not a FIN: what a crashed process or a dropped middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    """One request head (and any body, discarded); None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(head) > _MAX_HEAD:
        raise ValueError("request head too large")
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if length:
        await reader.readexactly(length)
    parts = urlsplit(target)
    keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
    return _Request(method, parts.path, parse_qs(parts.query), keep_alive)


# Hostile strings and sizes: bodies for ``system_body`` / ``queue_body`` (or an ANSWER fault) that are valid JSON
# of the right shape, with everything a server chooses chosen badly.

#: A lone surrogate (no UTF-8 encoder accepts it), a screen clear, a forged red line, a C1 CSI and a line break.
HOSTILE_TEXT = "\ud800\x1b[2J\x1b[1;31mFAKE: all checks passed\x9b\r\n"
#: The size of the comfyui_version that once became a 21 MB /metrics page.
HUGE_VERSION_CHARS = 20 * 10**6
#: The device count that once became 400,000 samples per scrape.
MANY_DEVICES = 100_000


def hostile_system_stats(*, text: str = "", version: str | None = None, devices: int = 1) -> bytes:
    """The recorded ``/system_stats`` with *text* appended to every string (OS, versions, argv, device name and
    type), ``comfyui_version`` replaced by *version* when given, and *devices* devices (indexes 0, 1, ...)."""
    body = load_json("system_stats_api_prefix.json")
    system = body["system"]
    for key in ("os", "comfyui_version", "python_version", "pytorch_version"):
        system[key] += text
    if version is not None:
        system["comfyui_version"] = version
    system["argv"] = [arg + text for arg in system["argv"]]
    device = body["devices"][0]
    body["devices"] = [
        {**device, "name": device["name"] + text, "type": device["type"] + text, "index": index}
        for index in range(devices)
    ]
    return _dumps(body)


def hostile_queue(text: str = HOSTILE_TEXT) -> bytes:
    """A busy ``/queue`` whose prompt and client ids end in *text*."""
    body = load_json("queue_busy.json")
    for item in body["queue_running"] + body["queue_pending"]:
        item[1] += text
        if isinstance(item[3], dict) and isinstance(item[3].get("client_id"), str):
            item[3]["client_id"] += text
    return _dumps(body)
