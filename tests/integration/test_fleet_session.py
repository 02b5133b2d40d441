"""The daemon's targets share one HTTP session (``FleetSession``) and still keep to themselves: each request
carries only its own target's credentials, no cookie from another's answer, its target's own TLS setting, and
goes over a connection to its own server."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from comfywatch.basic_auth import basic_auth_header
from comfywatch.clients.http import ClientSettings, FleetSession, HttpClient, RequestFailed
from comfywatch.errors import Reason
from comfywatch.sim.admin import start_sim
from tests.certs import make_certs
from tests.helpers import RecordingServer, recording_server
from tests.integration.conftest import config_toml, target_toml, watching

#: Starts a recording server (TLS with the context given, if any).
Serve = Callable[..., Awaitable[RecordingServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts recording servers answering ``/x`` (with a TLS context, if given), stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:
        async def start(tls: ssl.SSLContext | None = None) -> RecordingServer:
            return await stack.enter_async_context(recording_server("/x", {}, tls))

        yield start


async def _get(client: HttpClient) -> None:
    await client.get_json("/x", endpoint="x", parser=lambda body: body)


async def test_targets_send_only_their_own_credentials_over_their_own_servers_connections(serve: Serve) -> None:
    first, second = await serve(), await serve()
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
    assert [(seen.authorization, seen.cookie) for seen in first.requests] == [
        (basic_auth_header("alice", "pw-one"), None), (basic_auth_header("bob", "pw-two"), None)] * 2
    assert [(seen.authorization, seen.cookie) for seen in second.requests] == [("Bearer t0ken", None)] * 2
    # Kept alive: one connection to each server, whoever's requests it carried.
    assert len({seen.peer_port for seen in first.requests}) == 1
    assert len({seen.peer_port for seen in second.requests}) == 1
    # A closed client does not reopen anything; the fleet's session stays open for the others.
    with pytest.raises(RequestFailed):
        await _get(alice)
    assert not session.closed and fleet.session is session
    await fleet.close()
    assert session.closed
    # Closed for good: nothing can open the fleet's session again.
    with pytest.raises(ConnectionError):
        _ = fleet.session


async def test_each_target_keeps_its_own_tls_setting(serve: Serve, tmp_path: Path) -> None:
    """One session, one server whose certificate only the test CA vouches for: the target trusting that CA and
    the one skipping verification read it, the one verifying against the system's store fails as ``tls``, in
    whatever order they come."""
    certs = make_certs(tmp_path)
    server = await serve(certs.valid.server_context())
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
    assert len(server.requests) == 4


async def test_the_daemons_targets_use_its_one_session_closed_at_shutdown(tmp_path: Path) -> None:
    async with await start_sim(targets=2) as sim:
        config = config_toml(target_toml("sim", sim.target_url(0)), target_toml("other", sim.target_url(1)))
        async with watching(config, tmp_path) as watch:
            await watch.until(lambda m: m.value("comfyui_up", target="other") == 1.0, "other up")
            daemon = watch.daemon
            session = daemon.sessions.session
            assert {id(runtime.http.session) for runtime in daemon.runtimes.values()} == {id(session)}
        assert session.closed
