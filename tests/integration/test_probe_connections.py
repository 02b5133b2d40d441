"""``/probe`` shares connections between probes, and nothing else.

The connection a probe opened serves the next probe of the same server (the cost of a stateless probe is
mostly its connection), while credentials, cookies and state stay each probe's own. Sessions are bounded
in number and age and are closed with the event loop.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from comfywatch import __version__
from comfywatch.basic_auth import basic_auth_header
from comfywatch.checks.context import ssl_context_for
from comfywatch.clients.http import ClientSettings, HttpClient, SharedSessions
from comfywatch.config import TargetConfig
from comfywatch.sim.admin import start_sim
from tests.certs import make_certs
from tests.fixtures import load_json
from tests.helpers import Metrics, RecordingServer, recording_server, running_daemon
from tests.integration.test_probe import TOKEN, daemon_config, probe


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingServer]:
    """A stand-in ComfyUI that answers /api/system_stats with a session cookie and records every request."""
    async with recording_server("/api/system_stats", load_json("system_stats.json")) as server:
        yield server


@pytest.fixture
async def probe_base(tmp_path: Path) -> AsyncIterator[str]:
    async with await start_sim() as watched, running_daemon(daemon_config(tmp_path, watched.url), tmp_path) as (
        _daemon, base
    ):
        yield base


async def probe_ok(base: str, target: str, module: str) -> None:
    status, body, _ = await probe(base, target, module)
    assert status == 200
    assert Metrics(body).value("comfyui_probe_success") == 1.0


async def test_probes_share_a_connection_and_send_only_their_own_credentials(
    probe_base: str, recorder: RecordingServer
) -> None:
    """Five probes of one server, with two users' passwords, none, and the module's bearer token: one connection
    serves them all, and each request carries exactly its own probe's credentials (never the previous one's),
    no cookie from an earlier answer, and comfywatch's User-Agent."""
    host = recorder.address
    for target, module in [(f"http://alice:pw-one@{host}", "quick"), (f"http://bob:pw-two@{host}", "quick"),
                           (f"http://{host}", "quick"), (f"http://{host}", "authed"), (f"http://{host}", "quick")]:
        await probe_ok(probe_base, target, module)
    assert [seen.authorization for seen in recorder.requests] == [
        basic_auth_header("alice", "pw-one"), basic_auth_header("bob", "pw-two"), None, f"Bearer {TOKEN}", None,
    ]
    assert [seen.cookie for seen in recorder.requests] == [None] * 5
    assert {seen.user_agent for seen in recorder.requests} == {f"comfywatch/{__version__}"}
    assert len({seen.peer_port for seen in recorder.requests}) == 1


async def test_probes_of_different_servers_keep_their_own_state(probe_base: str) -> None:
    """A failing server probed between two probes of a healthy one: each answer counts only its own probe's
    requests, and the healthy server's version is not in the failing server's answer."""
    async with await start_sim() as healthy, await start_sim(faults=["http_500"]) as broken:
        answers = [await probe(probe_base, url, "everything") for url in (healthy.url, broken.url, healthy.url)]
    first, failing, again = (Metrics(body) for _, body, _ in answers)
    for metrics in (first, again):
        assert metrics.value("comfyui_probe_success") == 1.0
        assert metrics.value("comfyui_requests_total", endpoint="system_stats", code="200") == 1.0
        # Absent or 0, whichever series the metrics detail keeps: never the failing probe's 1.
        assert metrics.value("comfyui_request_failures_total", endpoint="system_stats",
                             reason="server_error") in (None, 0.0)
    assert failing.value("comfyui_probe_success") == 0.0
    assert failing.value("comfyui_request_failures_total", endpoint="system_stats", reason="server_error") == 1.0
    assert failing.value("comfyui_info", version="0.3.64") is None


async def test_a_server_that_went_down_fails_the_probe_and_is_reconnected_when_back(
    probe_base: str,
) -> None:
    """The kept connection does not outlive its server: a probe after the server went down reports ``connect``,
    and once it listens again the next probe connects anew and succeeds."""
    async with await start_sim() as sim:
        await probe_ok(probe_base, sim.url, "quick")
        await sim.set_faults(["down"])
        status, body, _ = await probe(probe_base, sim.url, "quick")
        assert status == 200
        metrics = Metrics(body)
        assert metrics.value("comfyui_probe_success") == 0.0
        assert metrics.value("comfyui_request_failures_total", endpoint="system_stats", reason="connect") == 1.0
        await sim.set_faults([])
        await probe_ok(probe_base, sim.url, "quick")


# The pool itself.


def settings_for(url: str) -> ClientSettings:
    return ClientSettings(base_url=url)


async def wait_closed(sessions: list[aiohttp.ClientSession], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(session.closed for session in sessions):
        assert time.monotonic() < deadline, "sessions not closed"
        await asyncio.sleep(0.01)


async def test_the_least_recently_borrowed_session_is_retired_beyond_the_bound() -> None:
    """With room for two servers, a third retires the least recently borrowed one: closed as soon as it is
    given back (not at the next sweep, a minute away), while the two kept ones stay open."""
    pool = SharedSessions(max_sessions=2)
    first, second = pool.borrow(settings_for("http://127.0.0.1:1")), pool.borrow(settings_for("http://127.0.0.1:2"))
    assert pool.borrow(settings_for("http://127.0.0.1:1")) is first  # now the most recently borrowed
    third = pool.borrow(settings_for("http://127.0.0.1:3"))
    assert len(pool) == 3  # the retired one waits for its borrower
    pool.give_back(second)
    await wait_closed([second.session], timeout=2.0)
    assert len(pool) == 2
    assert [first.session.closed, third.session.closed] == [False, False]
    await pool.close()
    assert [first.session.closed, third.session.closed] == [True, True]


async def test_a_session_lends_itself_for_max_age_then_a_new_one_is_made(recorder: RecordingServer) -> None:
    """Within ``max_age`` clients of one server reuse its connection; after it they get a new session (a new
    connection, resolved anew), and the old one closes once given back. An idle pool ends up empty."""
    pool = SharedSessions(max_age=1.0)
    settings = settings_for(f"http://{recorder.address}")

    async def one_request() -> None:
        client = HttpClient(settings, shared=pool)
        await client.request("GET", "/api/system_stats", endpoint="system_stats")
        await client.close()

    await one_request()
    await one_request()
    first = recorder.requests[0].peer_port
    assert recorder.requests[1].peer_port == first
    old = pool.borrow(settings)
    pool.give_back(old)
    deadline = time.monotonic() + 10
    while (current := pool.borrow(settings)) is old:
        pool.give_back(current)
        assert time.monotonic() < deadline, "the session was not renewed"
        await asyncio.sleep(0.02)
    pool.give_back(current)
    await wait_closed([old.session])
    await one_request()
    assert recorder.requests[-1].peer_port != first
    deadline = time.monotonic() + 10
    while len(pool):
        assert time.monotonic() < deadline, "idle sessions were not retired"
        await asyncio.sleep(0.02)
    await wait_closed([current.session])


def test_sessions_close_when_the_event_loop_ends() -> None:
    """The daemon's ``asyncio.run`` ending (its shutdown) closes every session the pool still holds, lent or not."""
    pool = SharedSessions()

    async def borrow_and_keep() -> list[aiohttp.ClientSession]:
        kept = pool.borrow(settings_for("http://127.0.0.1:1"))
        lent = pool.borrow(settings_for("http://127.0.0.1:2"))
        pool.give_back(kept)
        return [kept.session, lent.session]

    sessions = asyncio.run(borrow_and_keep())
    assert all(session.closed for session in sessions)
    assert len(pool) == 0


def test_a_ca_file_is_loaded_once_per_version(tmp_path: Path) -> None:
    """Targets trusting the same CA file share one context; a rewritten file is loaded anew."""
    certs = make_certs(tmp_path / "certs")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(certs.ca_cert.read_bytes())
    first = ssl_context_for(TargetConfig(name="a", url="https://127.0.0.1:1", tls_ca_file=ca_file))
    assert isinstance(first, ssl.SSLContext)
    assert ssl_context_for(TargetConfig(name="b", url="https://127.0.0.1:2", tls_ca_file=ca_file)) is first
    ca_file.write_bytes(certs.ca_cert.read_bytes() + b"\n")  # a new version: another size and time
    renewed = ssl_context_for(TargetConfig(name="a", url="https://127.0.0.1:1", tls_ca_file=ca_file))
    assert isinstance(renewed, ssl.SSLContext)
    assert renewed is not first
    assert ssl_context_for(TargetConfig(name="a", url="https://127.0.0.1:1", tls_ca_file=ca_file)) is renewed

