"""The daemon's targets share one HTTP session (``FleetSession``) and still keep to themselves: each request
carries only its own target's credentials, no cookie from another's answer, its target's own TLS setting, and
goes over a connection to its own server."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from comfywatch.basic_auth import basic_auth_header
from comfywatch.clients.http import ClientSettings, FleetSession, HttpClient, RequestFailed
from comfywatch.errors import Reason
from comfywatch.sim.admin import start_sim
from tests.certs import make_certs
from tests.integration.conftest import config_toml, target_toml, watching


@dataclass
class Server:
    """A loopback server answering ``/x`` with a session cookie, recording each request."""

    url: str = ""
    #: (Authorization, Cookie, the client's port: the same port is the same connection)
    seen: list[tuple[str | None, str | None, int]] = field(default_factory=list)


@pytest.fixture
async def serve() -> AsyncIterator[object]:
    runners: list[web.AppRunner] = []

    async def start(tls: ssl.SSLContext | None = None) -> Server:
        server = Server()

        async def answer(request: web.Request) -> web.Response:
            peer = request.transport.get_extra_info("peername") if request.transport is not None else None
            server.seen.append((request.headers.get("Authorization"), request.headers.get("Cookie"),
                                peer[1] if peer else -1))
            response = web.json_response({})
            response.set_cookie("session", "granted-to-whoever-asked-first")
            return response

        app = web.Application()
        app.router.add_get("/x", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
        runners.append(runner)
        server.url = f"{'https' if tls else 'http'}://127.0.0.1:{runner.addresses[0][1]}"
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


async def _get(client: HttpClient) -> None:
    await client.get_json("/x", endpoint="x", parser=lambda body: body)


async def test_targets_send_only_their_own_credentials_over_their_own_servers_connections(serve: object) -> None:
    first, second = await serve(), await serve()  # type: ignore[operator]
    fleet = FleetSession()
    session = fleet.session
    alice = HttpClient(ClientSettings(base_url=first.url, basic_auth=("alice", "pw-one")), fleet=fleet)
    bob = HttpClient(ClientSettings(base_url=first.url, basic_auth=("bob", "pw-two")), fleet=fleet)
    other = HttpClient(ClientSettings(base_url=second.url, headers={"Authorization": "Bearer t0ken"}), fleet=fleet)
    try:
        for client in (alice, bob, other, alice, bob, other):
            await _get(client)
        assert alice.session is bob.session is other.session is session
    finally:
        for client in (alice, bob, other):
            await client.close()
    assert [(auth, cookie) for auth, cookie, _ in first.seen] == [
        (basic_auth_header("alice", "pw-one"), None), (basic_auth_header("bob", "pw-two"), None)] * 2
    assert [(auth, cookie) for auth, cookie, _ in second.seen] == [("Bearer t0ken", None)] * 2
    # Kept alive: one connection to each server, whoever's requests it carried.
    assert len({port for *_, port in first.seen}) == 1 and len({port for *_, port in second.seen}) == 1
    # A closed client does not reopen anything; the fleet's session stays open for the others.
    with pytest.raises(RequestFailed):
        await _get(alice)
    assert not session.closed and fleet.session is session
    await fleet.close()
    assert session.closed
    # Closed for good: nothing can open the fleet's session again.
    with pytest.raises(ConnectionError):
        _ = fleet.session


async def test_each_target_keeps_its_own_tls_setting(serve: object, tmp_path: Path) -> None:
    """One session, one server whose certificate only the test CA vouches for: the target trusting that CA and
    the one skipping verification read it, the one verifying against the system's store fails as ``tls``, in
    whatever order they come."""
    certs = make_certs(tmp_path)
    server = await serve(certs.valid.server_context())  # type: ignore[operator]
    fleet = FleetSession()
    verifying = HttpClient(ClientSettings(base_url=server.url), fleet=fleet)
    skipping = HttpClient(ClientSettings(base_url=server.url, ssl_context=False), fleet=fleet)
    trusting = HttpClient(ClientSettings(base_url=server.url, ssl_context=certs.client_context()), fleet=fleet)
    try:
        for _ in range(2):
            await _get(skipping)
            with pytest.raises(RequestFailed) as failed:
                await _get(verifying)
            assert failed.value.failure.reason is Reason.TLS
            await _get(trusting)
    finally:
        for client in (verifying, skipping, trusting):
            await client.close()
        await fleet.close()
    assert len(server.seen) == 4


async def test_the_daemons_targets_use_its_one_session_closed_at_shutdown(tmp_path: Path) -> None:
    async with await start_sim(targets=2) as sim:
        config = config_toml(target_toml("sim", sim.target_url(0)), target_toml("other", sim.target_url(1)))
        async with watching(config, tmp_path) as watch:
            await watch.until(lambda m: m.value("comfyui_up", target="other") == 1.0, "other up")
            daemon = watch.daemon
            session = daemon.sessions.session
            assert {id(runtime.http.session) for runtime in daemon.runtimes.values()} == {id(session)}
        assert session.closed
