"""A long-lived monitoring WebSocket per local target: fast down-detection and progress signals.

* When the socket closes (ComfyUI died or restarted) the ``system`` check is triggered at once, so
  ``comfyui_up`` drops within about a second instead of at the next poll.
* ``progress``/``progress_state``/``executing`` frames are broadcast for every user's prompt; they are the
  "sign of progress" that keeps a long but healthy job from being reported as stalled.
Each connection uses a fresh clientId (a second socket with the same clientId silences the first).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
import uuid
from collections.abc import Callable

import structlog

from comfywatch.checks import CANARY_CLIENT_PREFIX
from comfywatch.clients.ws import WebSocketServer, close_within, connect
from comfywatch.errors import Reason, classify_exception
from comfywatch.parse.prompt import ws_event
from comfywatch.state import TargetState

__all__ = ["PROGRESS_EVENTS", "WebSocketMonitor"]

log = structlog.get_logger("comfywatch.monitor")

PROGRESS_EVENTS = frozenset({"progress", "progress_state", "executing", "executed", "execution_start",
                             "execution_cached"})
MAX_BACKOFF = 30.0
#: Seconds between pings on the idle socket, and the most a pong may take.
KEEPALIVE = 20.0


class WebSocketMonitor:
    def __init__(
        self,
        server: WebSocketServer,
        state: TargetState,
        *,
        on_disconnect: Callable[[], None],
        on_reconnect: Callable[[], None] = lambda: None,
        ssl_context: ssl.SSLContext | bool = True,
        open_timeout: float = 5.0,
    ) -> None:
        self.server = server
        self.state = state
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self._connected_before = False
        self.ssl_context = ssl_context
        self.open_timeout = open_timeout
        self._task: asyncio.Task[None] | None = None

    def start(self, delay: float = 0.0) -> None:
        """Connect after *delay* seconds, and keep reconnecting until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(delay), name=f"monitor:{self.state.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self.state.websocket_connected = None
        self.state.monitor_forwarded = False

    async def _run(self, delay: float) -> None:
        if delay > 0.0:
            await asyncio.sleep(delay)
        backoff = 1.0
        while True:
            connected_at = await self._session()
            if connected_at is not None and time.monotonic() - connected_at > 10:
                backoff = 1.0
            # Jitter so a fleet whose proxy restarted does not reconnect in lockstep.
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _session(self) -> float | None:
        client_id = CANARY_CLIENT_PREFIX + "monitor-" + uuid.uuid4().hex
        try:
            # Pings find a peer that vanished without a close (a proxy or NAT dropping the idle socket).
            ws = await connect(self.server, client_id, tls=self.ssl_context, open_timeout=self.open_timeout,
                               keepalive=KEEPALIVE, close_timeout=1)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.state.websocket_connected = 0.0
            return None
        connected_at = time.monotonic()
        self.state.monitor_connection += 1
        self.state.websocket_connected = 1.0
        self.state.monitor_forwarded = False
        if self._connected_before:
            # Back after a drop: perhaps a restart, perhaps onto another build.
            self.state.monitor_reconnects += 1
            self.on_reconnect()
        self._connected_before = True
        try:
            async for message in ws:
                # ComfyUI's first frame on a socket is ``status``: any frame shows it forwards (trackers.QuietQueue).
                self.state.monitor_forwarded = True
                event = ws_event(message)
                if event is None:
                    continue
                if event.type == "status":
                    # Every queue change is broadcast as one: see trackers.QuietQueue.
                    self.state.monitor_status_frames += 1
                elif event.type in PROGRESS_EVENTS:
                    self.state.queue_tracker.progress(event.prompt_id, time.time())
        except asyncio.CancelledError:
            await close_within(ws)
            raise
        except Exception as exc:
            # A peer cut off for flooding is counted; any other close is a restart or a network failure,
            # which the system check (triggered below) reports.
            if (reason := classify_exception(exc).reason) is Reason.WS_FLOOD:
                self.state.on_failure("ws", reason)
            # Any receive failure means the socket is gone or unusable; close it in case it is only the
            # latter, or each reconnect would leave one more connection (and its fd and tasks) behind.
            await close_within(ws)
        self.state.websocket_connected = 0.0
        self.state.monitor_forwarded = False
        self.state.monitor_connection += 1  # whatever was counted on the old socket no longer vouches
        log.info("monitor_websocket_closed", target=self.state.name)
        self.on_disconnect()
        return connected_at
