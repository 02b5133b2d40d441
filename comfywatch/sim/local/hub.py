"""WebSocket fan-out of a simulated ComfyUI: the registered sockets and the frames queued for them."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Protocol

__all__ = ["Hub", "Socket"]


class Socket(Protocol):
    """A connected WebSocket as the simulated server sees it."""

    async def send_text(self, data: str) -> None:
        """Send one text frame."""

    async def send_binary(self, data: bytes) -> None:
        """Send one binary frame."""

    def abort(self) -> None:
        """Drop the connection without a close frame, as a dying process does."""


class Hub:
    """``PromptServer.sockets`` plus its ``publish_loop``: frames leave in the order they were queued."""

    def __init__(self) -> None:
        self.sockets: dict[str, Socket] = {}
        self.metadata: dict[str, dict[str, Any]] = {}
        self.every_socket: set[Socket] = set()
        self._queue: asyncio.Queue[tuple[str | bytes, str | None]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def supports_metadata(self, sid: str | None) -> bool:
        if sid is None or sid not in self.metadata:
            return False
        return bool(self.metadata[sid].get("feature_flags", {}).get("supports_preview_metadata", False))

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        """Queue a JSON frame for one socket id (``None``: every registered socket)."""
        if self.sockets:
            self._enqueue(json.dumps({"type": event, "data": data}), sid)

    def send_bytes_sync(self, payload: bytes, sid: str | None = None) -> None:
        """Queue a binary frame."""
        if self.sockets:
            self._enqueue(payload, sid)

    def _enqueue(self, frame: str | bytes, sid: str | None) -> None:
        self._queue.put_nowait((frame, sid))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._publish_loop())

    async def send_now(self, event: str, data: Any, sid: str) -> None:
        """Send directly from the connection handler (the first ``status`` frame)."""
        socket = self.sockets.get(sid)
        if socket is not None:
            await _send_catching(socket, json.dumps({"type": event, "data": data}))

    async def _publish_loop(self) -> None:
        while not self._queue.empty():
            frame, sid = self._queue.get_nowait()
            targets = list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
            for socket in targets:
                await _send_catching(socket, frame)

    async def close(self) -> None:
        """Drop every socket and wait for the publisher to stop."""
        task = self._task
        self.drop_all()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def drop_all(self) -> None:
        """Abort every socket (also ones silenced by a reconnect) and forget queued frames."""
        for socket in list(self.every_socket):
            socket.abort()
        self.every_socket.clear()
        self.sockets.clear()
        self.metadata.clear()
        self._queue = asyncio.Queue()
        if self._task is not None:
            self._task.cancel()
            self._task = None


async def _send_catching(socket: Socket, frame: str | bytes) -> None:
    # server.py send_socket_catch_exception: a dead socket must not stop the fan-out.
    with contextlib.suppress(Exception):
        if isinstance(frame, str):
            await socket.send_text(frame)
        else:
            await socket.send_binary(frame)
