"""``clients.ws.connect`` opens a target's ``/ws`` as its HTTP client reaches the target: same path prefix,
same credentials, the caller's clientId."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from websockets.datastructures import Headers
from websockets.http11 import Request

from comfywatch.checks.context import build_context, ssl_context_for
from comfywatch.clients.ws import BoundedClientConnection, connect
from comfywatch.config import Config, TargetConfig

STATUS = {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}


@dataclass
class Upgrade:
    path: str
    client_id: str | None
    authorization: str | None


@dataclass
class ComfyBehindProxy:
    """A ComfyUI stand-in mounted under ``/comfy``: records each upgrade request and sends one status frame."""

    port: int = 0
    upgrades: list[Upgrade] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[ComfyBehindProxy]:
    recorded = ComfyBehindProxy()

    async def ws(request: web.Request) -> web.WebSocketResponse:
        recorded.upgrades.append(Upgrade(request.path, request.query.get("clientId"),
                                         request.headers.get("Authorization")))
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json(STATUS)
        async for _ in socket:  # until the client closes
            pass
        return socket

    app = web.Application()
    app.router.add_get("/comfy/api/ws", ws)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recorded.port = runner.addresses[0][1]
    try:
        yield recorded
    finally:
        await runner.cleanup()


def reachable(root: object, wanted: tuple[type, ...]) -> list[object]:
    """The objects of the *wanted* types that *root* keeps alive through websockets' objects, plain containers
    and generators (a protocol's parser is one: its frame keeps what it parsed)."""
    seen, found, todo = {id(root)}, [], [root]
    while todo:
        for ref in gc.get_referents(todo.pop()):
            if id(ref) in seen:
                continue
            seen.add(id(ref))
            if isinstance(ref, wanted):
                found.append(ref)
            if isinstance(ref, dict | list | tuple | collections.deque | types.GeneratorType) or (
                    type(ref).__module__.startswith("websockets.")):
                todo.append(ref)
    return found


@contextlib.asynccontextmanager
async def opened(server: ComfyBehindProxy) -> AsyncIterator[BoundedClientConnection]:
    """The socket of a target on *server* whose URL carries proxy credentials, open for clientId
    ``comfywatch-test``; its context is closed afterwards."""
    target = TargetConfig(name="t", url=f"http://alice:ws-upgrade-s3cret@127.0.0.1:{server.port}/comfy")
    context = build_context(Config(), target)
    assert context.local is not None
    try:
        async with asyncio.timeout(10):
            async with connect(context.local, "comfywatch-test", tls=ssl_context_for(target),
                               open_timeout=5, close_timeout=1) as socket:
                yield socket
    finally:
        await context.close()


async def test_the_socket_carries_the_targets_prefix_credentials_and_client_id(server: ComfyBehindProxy) -> None:
    async with opened(server) as socket:
        assert '"status"' in str(await socket.recv())
    assert server.upgrades == [Upgrade("/comfy/api/ws", "comfywatch-test", "Basic YWxpY2U6d3MtdXBncmFkZS1zM2NyZXQ=")]


async def test_an_open_socket_keeps_neither_its_upgrade_request_nor_the_answers_headers(
        server: ComfyBehindProxy) -> None:
    """A monitoring socket lives for days: once open it holds no copy of the upgrade request (the credentials
    are among its headers) nor of the answer's headers, only the answer's status; and it still reads."""
    async with opened(server) as socket:
        assert socket.request is None
        assert socket.response is not None
        assert (socket.response.status_code, len(socket.response.headers)) == (101, 0)
        kept = reachable(socket, (Headers, Request))
        assert kept and all(isinstance(item, Headers) and not item for item in kept), kept
        assert '"status"' in str(await socket.recv())
    assert [upgrade.authorization for upgrade in server.upgrades] == ["Basic YWxpY2U6d3MtdXBncmFkZS1zM2NyZXQ="]
