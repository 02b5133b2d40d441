"""A TCP proxy in front of the simulated ComfyUI that misbehaves on WebSocket connections only.

Plain HTTP connections are piped through untouched, so polling and the canary's HTTP calls see a healthy
server. A WebSocket upgrade (``Upgrade: websocket`` in the request head) is forwarded too, the 101 answer
as well, and then the server's frames are parsed (server frames are never masked, RFC 6455 §5.1) and treated
according to :attr:`WsFaultProxy.mode`:

- ``pass``: forwarded as they are.
- ``close_mid_run``: the connection is cut (no close frame) right after the frame that says a prompt started
  executing (``execution_start``): ComfyUI died or a proxy timed out in the middle of a run.
- ``garbage_text``: after the first frame and after ``execution_start``, junk that is still valid WebSocket
  framing is slipped in: text that is not JSON, JSON of the wrong shape, an unknown binary event.
- ``garbage_frames``: after the first frame, a frame with a reserved opcode (a protocol violation).
- ``oversized``: after the first frame, a text frame of 17 MiB (the clients' limit is 16 MiB).
- ``no_status``: the upgrade succeeds, then nothing the server sends is forwarded (not even ``status``).

:meth:`WsFaultProxy.set_mode` cuts the WebSocket connections already open (as a proxy reload would), so
long-lived sockets such as the daemon's monitor reconnect into the new behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from enum import StrEnum
from typing import Any

__all__ = ["OVERSIZED_BYTES", "WsFaultProxy", "WsMode"]

OVERSIZED_BYTES = 17 * 2**20
_CHUNK = b"x" * 65536
_JUNK_TEXT = (b"not json at all", b'{"type": 5, "data": {}}', b'{"type": "executing", "data": [1, 2]}', b"[]",
              b'{"type": "progress", "data": {"value": "NaN", "max": null, "prompt_id": 7}}')
#: An unknown binary event type (ComfyUI's binary frames start with a big-endian u32 event type).
_JUNK_BINARY = struct.pack(">I", 99) + b"\x00\xffjunk"


class WsMode(StrEnum):
    """What happens to the server's frames on a WebSocket connection."""

    PASS = "pass"
    CLOSE_MID_RUN = "close_mid_run"
    GARBAGE_TEXT = "garbage_text"
    GARBAGE_FRAMES = "garbage_frames"
    OVERSIZED = "oversized"
    NO_STATUS = "no_status"


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    length = len(payload)
    if length < 126:
        head = struct.pack(">BB", 0x80 | opcode, length)
    elif length < 2**16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, length)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, length)
    return head + payload


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """(opcode, payload, raw bytes) of the next server frame."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    extra = b""
    if length == 126:
        extra = await reader.readexactly(2)
        length = struct.unpack(">H", extra)[0]
    elif length == 127:
        extra = await reader.readexactly(8)
        length = struct.unpack(">Q", extra)[0]
    payload = await reader.readexactly(length)
    return head[0] & 0x0F, payload, head + extra + payload


class WsFaultProxy:
    """Listens on an ephemeral loopback port and forwards to ``upstream`` (host, port)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = WsMode.PASS
        self.port = 0
        self.websockets_opened = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._websockets: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        """Base URL to give the daemon instead of the server's."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> WsFaultProxy:
        """Start listening."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def set_mode(self, mode: WsMode) -> None:
        """Switch behaviour and cut the open WebSocket connections (plain HTTP ones are left alone)."""
        self.mode = mode
        for writer in list(self._websockets):
            writer.transport.abort()

    async def close(self) -> None:
        """Stop listening, cut every connection and wait for the pipes to end."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    def _track(self, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._track(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            up_reader, upstream = await asyncio.open_connection(*self.upstream)
            self._track(upstream)
            upstream.write(head)
            is_ws = b"upgrade: websocket" in head.lower()
            mode = self.mode if is_ws else WsMode.PASS
            if is_ws:
                self.websockets_opened += 1
                self._websockets.add(writer)
            forward = asyncio.ensure_future(_pipe(reader, upstream))
            try:
                if mode is WsMode.PASS:
                    await _pipe(up_reader, writer)
                else:
                    writer.write(await up_reader.readuntil(b"\r\n\r\n"))  # the 101 answer
                    await self._frames(mode, up_reader, writer)
            finally:
                forward.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await forward
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for side in (writer, upstream):
                if side is not None:
                    self._writers.discard(side)
                    self._websockets.discard(side)
                    side.transport.abort()
            if task is not None:
                self._tasks.discard(task)

    async def _frames(self, mode: WsMode, up: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        first = True
        while True:
            opcode, payload, raw = await _read_frame(up)
            if mode is WsMode.NO_STATUS:
                continue
            client.write(raw)
            await client.drain()
            started = opcode == 1 and b'"execution_start"' in payload
            if mode is WsMode.CLOSE_MID_RUN and started:
                return  # the finally of _accept cuts both sides
            if mode is WsMode.GARBAGE_TEXT and (first or started):
                client.write(b"".join(frame(1, junk) for junk in _JUNK_TEXT) + frame(2, _JUNK_BINARY))
            if mode is WsMode.GARBAGE_FRAMES and first:
                client.write(frame(3, b"reserved opcode"))
            if mode is WsMode.OVERSIZED and first:
                client.write(struct.pack(">BBQ", 0x81, 127, OVERSIZED_BYTES))
                sent = 0
                while sent < OVERSIZED_BYTES and not client.transport.is_closing():
                    client.write(_CHUNK)
                    await client.drain()
                    sent += len(_CHUNK)
            await client.drain()
            first = False


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes until EOF, then half-close the other side."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()
