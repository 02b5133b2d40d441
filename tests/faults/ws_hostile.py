"""A hostile WebSocket peer: a raw asyncio server that completes the upgrade, then floods and never reads.

After the ``101 Switching Protocols`` it stops reading its socket (with a 4 KiB receive buffer, so the
client's replies back up into the client's process quickly instead of into kernel buffers) and writes Ping
frames with the largest control payload (125 bytes):

* ``pings_per_second=None``: as fast as the client takes them;
* a number: that many a second, each followed by a ComfyUI-like ``status`` text message, so a client can
  tell it is being served.

``messages=True`` floods ``status`` text messages instead of pings, as fast as the client takes them.

``burst=N`` first writes N ``status`` messages at once, as ComfyUI ends an execution with a burst of frames;
``message_bytes`` pads every ``status`` message to that size.

Nothing is parsed beyond the request head: the peer needs only the ``Sec-WebSocket-Key``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import ssl
import struct

__all__ = ["WsFloodPeer"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
_PING = b"\x89\x7d" + b"p" * 125
#: Pings written per drain when flooding: 64 KiB.
_BURST = _PING * (65536 // len(_PING))
_RECEIVE_BUFFER = 4096


def _text_frame(text: str) -> bytes:
    data = text.encode()
    if len(data) < 126:
        return bytes([0x81, len(data)]) + data
    if len(data) < 2**16:
        return bytes([0x81, 126]) + struct.pack(">H", len(data)) + data
    return bytes([0x81, 127]) + struct.pack(">Q", len(data)) + data


def _status_frame(size: int | None) -> bytes:
    status = json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}})
    return _text_frame(status if size is None else status[:-1] + ', "pad": "' + "x" * (size - len(status) - 11) + '"}')


class WsFloodPeer:
    """The hostile server. Use as ``async with WsFloodPeer(...) as peer:``; it is a
    :class:`comfywatch.clients.ws.WebSocketServer`, so ``connect(peer, ...)`` opens its socket."""

    def __init__(self, *, pings_per_second: float | None = None, tls: ssl.SSLContext | None = None, burst: int = 0,
                 message_bytes: int | None = None, messages: bool = False) -> None:
        self.pings_per_second = pings_per_second
        self.messages = messages
        self.tls = tls
        self.burst = burst
        self.status = _status_frame(message_bytes)
        self.pings_sent = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    def ws_url(self, client_id: str) -> str:
        assert self._server is not None, "not started"
        port = self._server.sockets[0].getsockname()[1]
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{port}/ws?clientId={client_id}"

    def ws_headers(self) -> dict[str, str]:
        return {}

    async def __aenter__(self) -> WsFloodPeer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Accepted sockets inherit it: the client's replies stop fitting in this peer's kernel buffer at once.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        listener.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(self._connection, sock=listener, ssl=self.tls)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        # Cut every connection rather than cancel the handlers: their next write then ends them.
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.gather(*self._handlers)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(_switching_protocols(head) + self.status * self.burst)
            transport = writer.transport
            assert isinstance(transport, asyncio.ReadTransport)
            transport.pause_reading()
            await self._flood(writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client hung up (what a bounded client does), or this peer is closing
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _flood(self, writer: asyncio.StreamWriter) -> None:
        if self.messages:
            burst = self.status * (65536 // len(self.status))
            while True:
                writer.write(burst)
                await writer.drain()
        if self.pings_per_second is None:
            while True:
                writer.write(_BURST)
                self.pings_sent += len(_BURST) // len(_PING)
                await writer.drain()
        while True:
            writer.write(_PING + self.status)
            self.pings_sent += 1
            await writer.drain()
            await asyncio.sleep(1 / self.pings_per_second)


def _switching_protocols(head: bytes) -> bytes:
    key = b""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
