"""The one way comfywatch opens a WebSocket: to a server's ``/ws``, with everything the peer controls bounded.

:func:`connect` takes the server (:class:`WebSocketServer`: its ``/ws`` URL, built from the target's base URL,
and the headers its HTTP requests carry, credentials included), the clientId and the target's TLS setting, so
no caller assembles them. The canary, the daemon's monitoring socket and ``doctor``'s upgrade check differ only
in how long they wait for the upgrade, whether they keep the socket alive with pings, and how long a close may
take: those are its parameters.

websockets answers every Ping with a Pong that it writes to the transport at once, outside flow control:
``write_limit`` only makes ``send()`` wait, and reading pauses only while ``max_queue`` *data* frames wait for
``recv()``. A peer that floods pings and never reads therefore has its pongs piled up in the transport's
buffer without end. :func:`connect` bounds, per connection:

* control frames (pings and pongs) received: :data:`MAX_CONTROL_FRAMES_PER_SECOND` per one-second window;
* data frames received: :data:`MAX_DATA_FRAMES_PER_SECOND` per one-second window (each costs a parse, and a
  peer streaming them as fast as it can would take the event loop from every other target);
* bytes written but not yet taken by the peer: :data:`MAX_UNSENT_BYTES` (checked after every write, so the
  buffer never holds more than that plus the replies to one read of at most 256 KiB);
* each message: :data:`MAX_MESSAGE_BYTES` (``max_size``);
* frames waiting for ``recv()``: reading pauses while they hold over :data:`MAX_QUEUED_BYTES` or number over
  :data:`MAX_QUEUED_FRAMES` (``max_queue``), and resumes once both are down to a quarter;
* ``send()`` waits above :data:`WRITE_LIMIT` unsent bytes (``write_limit``).

A peer over the first three bounds is disconnected at once: the transport is aborted, as a peer that does not
read would never take a closing handshake. ``recv()`` and ``async for`` then raise
``websockets.exceptions.ConnectionClosedError`` whose ``__cause__`` is the :class:`WebSocketAbuse`, also kept
in :attr:`BoundedClientConnection.abuse`. ``close()`` never leaves the socket open: cancelled by its caller's
timeout, or with reading paused behind unread frames (the peer's close frame could never arrive), it aborts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as _websockets_connect
from websockets.asyncio.messages import Assembler
from websockets.datastructures import HeadersLike
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import USER_AGENT
from websockets.protocol import Event, State

from comfywatch.errors import AbuseKind, WebSocketAbuse

__all__ = [
    "CLOSE_WAIT",
    "MAX_CONTROL_FRAMES_PER_SECOND",
    "MAX_DATA_FRAMES_PER_SECOND",
    "MAX_MESSAGE_BYTES",
    "MAX_QUEUED_BYTES",
    "MAX_QUEUED_FRAMES",
    "MAX_UNSENT_BYTES",
    "WRITE_LIMIT",
    "AbuseKind",
    "BoundedClientConnection",
    "WebSocketAbuse",
    "WebSocketServer",
    "close_within",
    "connect",
]

#: ComfyUI and Comfy Cloud ping rarely if ever (proxies every 20-60 s); 50 a second is no keepalive.
MAX_CONTROL_FRAMES_PER_SECOND = 50
#: ComfyUI sends a few frames per node executed (a burst of them as a large workflow ends, about three per
#: node) and a progress frame and a preview per sampler step: hundreds a second, not thousands.
MAX_DATA_FRAMES_PER_SECOND = 5000
#: comfywatch sends only its own pings and the close frame: anything near this is replies piling up.
MAX_UNSENT_BYTES = 256 * 1024
#: ComfyUI's binary frames are image previews; 16 MiB holds a full-size PNG.
MAX_MESSAGE_BYTES = 16 * 2**20
#: At most four full-size messages wait for a slow reader before reading pauses.
MAX_QUEUED_BYTES = 4 * MAX_MESSAGE_BYTES
#: Small frames are bounded by number: ComfyUI ends each execution with a burst of them (about three per node),
#: and a pause inside it would hold back the last, the end marker the canary's clock is waiting for.
MAX_QUEUED_FRAMES = 64
WRITE_LIMIT = 32 * 1024
#: How long closing a socket may take once comfywatch is done with it (:func:`close_within`): a peer that never
#: answers the close frame would otherwise hold its caller for the connection's whole close timeout.
CLOSE_WAIT = 1.0


class WebSocketServer(Protocol):
    """A server's ``/ws``: a local ComfyUI (:class:`comfywatch.clients.local.LocalApi`) or Comfy Cloud."""

    def ws_url(self, client_id: str) -> str:
        """``ws:`` or ``wss:`` URL of the socket for *client_id* (the target's scheme, host and path prefix)."""
        ...

    def ws_headers(self) -> dict[str, str]:
        """Headers the upgrade request carries: the same proxy credentials as the server's HTTP requests."""
        ...


class _QueueBoundedInBytes(Assembler):
    """websockets' queue of frames waiting for ``recv()``, which bounds only their number, bounded in bytes too."""

    def maybe_pause(self) -> None:
        if not self.paused and self.high is not None and (
                len(self.frames) > self.high or self._queued_bytes() > MAX_QUEUED_BYTES):
            self.paused = True
            self.pause()

    def maybe_resume(self) -> None:
        if self.paused and self.low is not None and len(self.frames) <= self.low and (
                self._queued_bytes() <= MAX_QUEUED_BYTES // 4):
            self.paused = False
            self.resume()

    def _queued_bytes(self) -> int:
        return sum(len(frame.data) for frame in self.frames.queue)


class _PerSecond:
    """Events counted in one-second windows."""

    __slots__ = ("_count", "_started")

    def __init__(self, now: float) -> None:
        self._started = now
        self._count = 0

    def count(self, now: float) -> int:
        """Count one event at *now*; how many its window holds."""
        if now - self._started >= 1.0:
            self._started, self._count = now, 0
        self._count += 1
        return self._count


class BoundedClientConnection(ClientConnection):
    """A :class:`ClientConnection` that disconnects a peer over the control-frame, data-frame or unsent-bytes
    bound."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.abuse: WebSocketAbuse | None = None
        self._control_frames = _PerSecond(self.loop.time())
        self._data_frames = _PerSecond(self.loop.time())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        counted = self.recv_messages
        self.recv_messages = _QueueBoundedInBytes(counted.high, counted.low, pause=counted.pause,
                                                  resume=counted.resume)

    async def handshake(self, additional_headers: HeadersLike | None = None,
                        user_agent_header: str | None = USER_AGENT) -> None:
        await super().handshake(additional_headers, user_agent_header)
        # A monitoring socket stays open for days, and websockets keeps the upgrade's request (the target's
        # credentials among its headers) and the answer's headers as long: about 4.5 KB a socket, 45 MB at
        # 10,000 targets. Nothing reads them once open; the answer's status stays, as the handshake left it.
        # The headers are emptied in place: the protocol's parser keeps the same answer for the socket's life.
        self.request = None
        if self.response is not None:
            self.response.headers.clear()

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame):
            if event.opcode in (Opcode.PING, Opcode.PONG):
                if self._control_frames.count(self.loop.time()) > MAX_CONTROL_FRAMES_PER_SECOND:
                    self._disconnect(WebSocketAbuse(
                        AbuseKind.CONTROL_FLOOD,
                        f"the peer sent over {MAX_CONTROL_FRAMES_PER_SECOND} pings or pongs in one second",
                    ))
            elif self._data_frames.count(self.loop.time()) > MAX_DATA_FRAMES_PER_SECOND:
                self._disconnect(WebSocketAbuse(
                    AbuseKind.DATA_FLOOD, f"the peer sent over {MAX_DATA_FRAMES_PER_SECOND} frames in one second",
                ))
        super().process_event(event)

    def send_data(self) -> None:
        super().send_data()
        unsent = self.transport.get_write_buffer_size()
        if unsent > MAX_UNSENT_BYTES:
            self._disconnect(WebSocketAbuse(
                AbuseKind.UNSENT_BACKLOG,
                f"the peer left {unsent} bytes unread (bound {MAX_UNSENT_BYTES})",
            ))

    async def close(self, code: CloseCode | int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        if self.recv_messages.paused:
            # Reading is paused behind unread frames, so the peer's close frame could never
            # be read: the closing handshake would only run out its timeout.
            self.transport.abort()
        try:
            await super().close(code, reason)
        finally:
            if self.protocol.state is not State.CLOSED:
                # Cancelled by the caller's own timeout: the socket must not outlive the connection object.
                self.transport.abort()

    def _disconnect(self, abuse: WebSocketAbuse) -> None:
        if self.abuse is not None:
            return
        self.abuse = abuse
        self.set_connection_exc(abuse)
        # Records a 1008 close as ours in the ConnectionClosedError; the frame itself is dropped by the abort.
        self.protocol.fail(CloseCode.POLICY_VIOLATION, abuse.kind)
        self.transport.abort()


def connect(
    server: WebSocketServer,
    client_id: str,
    *,
    tls: ssl.SSLContext | bool,
    open_timeout: float | None,
    keepalive: float | None = None,
    close_timeout: float = 10,
) -> _websockets_connect:
    """Open *server*'s socket for *client_id* with every bound of this module; await it or use it as an async
    context manager.

    *tls* is the target's TLS setting, as for HTTP: ``True`` verifies against the system's CAs, ``False``
    (``tls_insecure_skip_verify``) does not verify, a context is used as given; it only matters for ``wss:``.
    *open_timeout* bounds the upgrade (``None``: the caller's own timeout does). *keepalive*: for a long-lived
    socket, send a ping every that many seconds and give the connection up when its pong takes as long (``None``
    sends none). *close_timeout* bounds the closing handshake. No proxy from the environment (the HTTP client
    ignores it too) and no compression (a deflate bomb would cost CPU before ``max_size`` stops it).
    """
    uri = server.ws_url(client_id)
    secure: dict[str, Any] = {"ssl": _ssl_argument(tls)} if uri.startswith("wss:") else {}
    return _websockets_connect(
        uri,
        additional_headers=server.ws_headers(),
        open_timeout=open_timeout,
        ping_interval=keepalive,
        ping_timeout=keepalive,
        close_timeout=close_timeout,
        max_size=MAX_MESSAGE_BYTES,
        max_queue=MAX_QUEUED_FRAMES,
        write_limit=WRITE_LIMIT,
        compression=None,
        proxy=None,
        create_connection=BoundedClientConnection,
        **secure,
    )


async def close_within(ws: ClientConnection, seconds: float = CLOSE_WAIT) -> None:
    """Close *ws* within *seconds*, whatever the peer does with the close frame; never raises (a cancellation of
    the caller still propagates). Cut short, the close aborts the connection (:class:`BoundedClientConnection`)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            await ws.close()


def _ssl_argument(tls: ssl.SSLContext | bool) -> ssl.SSLContext | bool:
    # websockets refuses ssl=None for wss: (it does not mean "the default"), so True is passed on as True.
    if tls is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return tls
