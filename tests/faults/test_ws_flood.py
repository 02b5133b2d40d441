"""A WebSocket peer that floods pings and never reads is cut off with a reason, and memory stays bounded.

Every WebSocket comfywatch opens goes through :func:`comfywatch.clients.ws.connect`; here it meets
:class:`tests.faults.ws_hostile.WsFloodPeer`. The connection's transport is watched after every write, so
the assertion on unsent bytes is exact, not sampled. The last test is the control: websockets' own client,
as comfywatch used it before, keeps every pong it cannot send.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as websockets_connect
from websockets.exceptions import ConnectionClosedError

from comfywatch.clients import ws
from comfywatch.clients.ws import AbuseKind, BoundedClientConnection, WebSocketAbuse, connect
from tests.certs import make_certs
from tests.conftest import TIMEOUT_FACTOR
from tests.faults.ws_hostile import WsFloodPeer
from tests.helpers import eventually

DEADLINE_S = 5.0
CLIENT_ID = "flood"
#: asyncio reads at most 256 KiB at a time; answering 2-byte pings with 6-byte masked pongs triples it.
ONE_READ_REPLIES = 3 * 256 * 1024
RSS_GROWTH_LIMIT = 32 * 2**20


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class _Tracked(ClientConnection):
    """Records the most bytes ever waiting in the transport, read after each write."""

    peak = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        write = transport.write
        self.far_over_bound = asyncio.Event()

        def tracked_write(data: bytes) -> None:
            write(data)
            self.peak = max(self.peak, transport.get_write_buffer_size())
            if self.peak > 8 * ws.MAX_UNSENT_BYTES:
                self.far_over_bound.set()

        transport.write = tracked_write


class _TrackedBounded(_Tracked, BoundedClientConnection):
    pass


@pytest.fixture
def tracked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make :func:`connect` build connections that record their peak of unsent bytes."""
    monkeypatch.setattr(ws, "BoundedClientConnection", _TrackedBounded)


async def _abuse_that_closed(connection: ClientConnection) -> WebSocketAbuse:
    """Receive until the connection fails (within the deadline); the abuse it failed with."""
    with pytest.raises(ConnectionClosedError) as closed:
        async with asyncio.timeout(DEADLINE_S * TIMEOUT_FACTOR):
            async for _ in connection:
                pass
    cause = closed.value.__cause__
    assert isinstance(cause, WebSocketAbuse), repr(cause)
    assert isinstance(connection, BoundedClientConnection)
    assert connection.abuse is cause
    assert closed.value.sent is not None and closed.value.sent.code == 1008
    return cause


@pytest.mark.usefixtures("tracked")
async def test_ping_flood_is_cut_off_as_a_control_flood() -> None:
    """Pings as fast as the socket takes them: disconnected for the rate, unsent bytes within the bound."""
    rss_before = _rss_bytes()
    async with WsFloodPeer() as peer:
        connection = await connect(peer, CLIENT_ID, tls=True, open_timeout=DEADLINE_S)
        abuse = await _abuse_that_closed(connection)
    assert abuse.kind is AbuseKind.CONTROL_FLOOD
    assert isinstance(connection, _Tracked)
    assert connection.peak <= ws.MAX_UNSENT_BYTES + ONE_READ_REPLIES
    assert _rss_bytes() - rss_before < RSS_GROWTH_LIMIT


async def test_message_flood_is_cut_off_as_a_data_flood() -> None:
    """Status messages as fast as the client reads them: disconnected for the rate of data frames, which would
    otherwise keep the event loop parsing them."""
    async with WsFloodPeer(messages=True) as peer:
        connection = await connect(peer, CLIENT_ID, tls=True, open_timeout=DEADLINE_S)
        abuse = await _abuse_that_closed(connection)
    assert abuse.kind is AbuseKind.DATA_FLOOD


async def test_a_burst_of_thousands_of_frames_keeps_its_connection() -> None:
    """Half the per-second bound at once, as a large workflow's end could send, then a message a second: every
    frame is read and the connection is not cut off."""
    burst = ws.MAX_DATA_FRAMES_PER_SECOND // 2
    async with (WsFloodPeer(pings_per_second=1, burst=burst) as peer,
                connect(peer, CLIENT_ID, tls=True, open_timeout=DEADLINE_S, close_timeout=1) as connection):
        async with asyncio.timeout(DEADLINE_S * TIMEOUT_FACTOR):
            for _ in range(burst + 2):
                assert '"status"' in str(await connection.recv())
        assert isinstance(connection, BoundedClientConnection)
        assert connection.abuse is None


@pytest.mark.usefixtures("tracked")
async def test_unread_replies_are_cut_off_as_an_unsent_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the rate bound out of the way, the pongs the peer never reads hit the unsent-bytes bound."""
    monkeypatch.setattr(ws, "MAX_CONTROL_FRAMES_PER_SECOND", 10**9)
    rss_before = _rss_bytes()
    async with WsFloodPeer() as peer:
        connection = await connect(peer, CLIENT_ID, tls=True, open_timeout=DEADLINE_S)
        abuse = await _abuse_that_closed(connection)
    assert abuse.kind is AbuseKind.UNSENT_BACKLOG
    assert isinstance(connection, _Tracked)
    assert ws.MAX_UNSENT_BYTES < connection.peak <= ws.MAX_UNSENT_BYTES + ONE_READ_REPLIES
    assert _rss_bytes() - rss_before < RSS_GROWTH_LIMIT


async def test_a_peer_within_the_bounds_keeps_its_connection() -> None:
    """Ten pings a second with a status message each, never reading our pongs: served, not cut off."""
    async with WsFloodPeer(pings_per_second=10) as peer:
        async with connect(peer, CLIENT_ID, tls=True, open_timeout=DEADLINE_S, close_timeout=1) as connection:
            async with asyncio.timeout(DEADLINE_S * TIMEOUT_FACTOR):
                for _ in range(12):  # over one second's worth: the rate window rolls over at least once
                    assert '"status"' in str(await connection.recv())
            assert isinstance(connection, BoundedClientConnection)
            assert connection.abuse is None
        assert peer.pings_sent >= 12


async def test_keepalive_gives_up_a_peer_that_never_answers_its_pings() -> None:
    """The monitor's keepalive: a peer that keeps sending but never reads our pings is closed after one
    unanswered ping (a socket without keepalive stays open, as in the test above)."""
    async with WsFloodPeer(pings_per_second=10) as peer:
        connection = await connect(peer, CLIENT_ID, tls=True, open_timeout=DEADLINE_S, keepalive=0.2,
                                   close_timeout=0.5)
        with pytest.raises(ConnectionClosedError) as closed:
            async with asyncio.timeout(DEADLINE_S * TIMEOUT_FACTOR):
                async for _ in connection:
                    pass
    assert closed.value.sent is not None
    assert (closed.value.sent.code, closed.value.sent.reason) == (1011, "keepalive ping timeout")
    assert isinstance(connection, BoundedClientConnection) and connection.abuse is None


async def test_bounds_hold_over_tls_and_tls_true_verifies(tmp_path: Path) -> None:
    """wss: ``tls=True`` verifies against the system CAs (the test CA is not one); with ``tls=False`` or a
    context trusting the test CA the flood is cut off exactly as over plain TCP."""
    certs = make_certs(tmp_path)
    async with WsFloodPeer(tls=certs.valid.server_context()) as peer:
        assert peer.ws_url(CLIENT_ID).startswith("wss:")
        with pytest.raises(ssl.SSLCertVerificationError):
            await connect(peer, CLIENT_ID, tls=True, open_timeout=DEADLINE_S)
        for tls in (False, certs.client_context()):
            connection = await connect(peer, CLIENT_ID, tls=tls, open_timeout=DEADLINE_S)
            assert (await _abuse_that_closed(connection)).kind is AbuseKind.CONTROL_FLOOD


async def test_plain_websockets_client_buffers_pongs_without_bound() -> None:
    """The control: websockets' client as comfywatch called it before keeps answering the flood into its
    own memory, eight times the bound and still connected."""
    async with WsFloodPeer() as peer:
        connection = await websockets_connect(
            peer.ws_url(CLIENT_ID), open_timeout=DEADLINE_S, max_size=16 * 2**20, proxy=None, compression=None,
            ping_interval=None, create_connection=_Tracked,
        )
        try:
            assert isinstance(connection, _Tracked)
            await asyncio.wait_for(connection.far_over_bound.wait(), DEADLINE_S * 2 * TIMEOUT_FACTOR)
            assert connection.state.name == "OPEN"
        finally:
            # Not close(): its closing handshake would wait for the peer to read, which it never does.
            connection.transport.abort()


async def test_a_burst_of_small_frames_is_read_without_a_pause() -> None:
    """ComfyUI ends an execution with a burst of small frames: all of them wait for recv() with reading on (a
    pause would hold back the last one, the canary's end marker), and all arrive."""
    burst = 40
    async with (WsFloodPeer(pings_per_second=1, burst=burst) as peer,
                connect(peer, CLIENT_ID, tls=True, open_timeout=DEADLINE_S, close_timeout=0.1) as connection):

        async def queued() -> int:
            return len(connection.recv_messages.frames)

        await eventually(queued, lambda count: count >= burst, timeout=DEADLINE_S, what="the burst queued")
        assert not connection.recv_messages.paused
        async with asyncio.timeout(DEADLINE_S * TIMEOUT_FACTOR):
            for _ in range(burst):
                assert '"status"' in str(await connection.recv())


async def test_large_frames_pause_reading_by_their_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames waiting for recv() are bounded in bytes too: ten of 64 KiB against a 256 KiB bound pause reading
    with far fewer frames waiting than their number bound (and not much more than the bytes bound waiting);
    reading them resumes reading, and all ten arrive."""
    monkeypatch.setattr(ws, "MAX_QUEUED_BYTES", 256 * 1024)
    size, count = 64 * 1024, 10
    async with (WsFloodPeer(pings_per_second=1, burst=count, message_bytes=size) as peer,
                connect(peer, CLIENT_ID, tls=True, open_timeout=DEADLINE_S, close_timeout=0.1) as connection):

        async def paused() -> bool:
            return connection.recv_messages.paused

        await eventually(paused, bool, timeout=DEADLINE_S, what="reading paused by bytes")
        waiting = [frame.data for frame in connection.recv_messages.frames.queue]
        assert len(waiting) < ws.MAX_QUEUED_FRAMES
        assert ws.MAX_QUEUED_BYTES < sum(map(len, waiting)) <= ws.MAX_QUEUED_BYTES + 256 * 1024 + size
        async with asyncio.timeout(DEADLINE_S * TIMEOUT_FACTOR):
            for _ in range(count):
                assert len(await connection.recv()) == size
        assert not connection.recv_messages.paused


async def test_close_behind_unread_frames_is_prompt() -> None:
    """Frames nobody read pause reading, so the peer's close frame cannot arrive: close() aborts instead of
    waiting out the closing handshake's timeout."""
    async with WsFloodPeer(pings_per_second=20, burst=ws.MAX_QUEUED_FRAMES) as peer:
        connection = await connect(peer, CLIENT_ID, tls=True, open_timeout=DEADLINE_S, close_timeout=10)
        assert isinstance(connection, BoundedClientConnection)

        async def paused() -> bool:
            return connection.recv_messages.paused

        await eventually(paused, bool, timeout=DEADLINE_S, what="reading paused behind unread frames")
        async with asyncio.timeout(1.0):
            await connection.close()
        assert connection.transport.is_closing()


async def test_close_cancelled_by_its_caller_still_releases_the_socket() -> None:
    """The peer never answers our close frame; the caller gives close() 0.2 s: the socket is closed anyway."""
    async with WsFloodPeer(pings_per_second=10) as peer:
        connection = await connect(peer, CLIENT_ID, tls=True, open_timeout=DEADLINE_S, close_timeout=10)
        await connection.recv()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(connection.close(), 0.2)
        assert connection.transport.is_closing()
