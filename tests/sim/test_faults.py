"""Each fault of the simulated ComfyUI does what it says, set at start, in process or by the admin API."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import time

import aiohttp
import pytest

from comfywatch.errors import Reason, classify_execution_error
from comfywatch.sim import SimHandle, start_sim
from comfywatch.sim.faults import HUGE_BODY_BYTES
from tests.fixtures import FIXTURES
from tests.sim.conftest import eventually, history_entry, post_prompt, receive, workflow


def _text_prompt(value: str) -> dict[str, object]:
    return {
        **workflow("canary_text_preview_any"),
        "1": {"class_type": "PrimitiveString", "inputs": {"value": value}},
    }


async def test_down_refuses_connections_and_recovers_on_same_port(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """down closes the listening socket (connection refused) and drops WebSockets; clearing reopens it."""
    ws = await http.ws_connect(sim.url + "/ws?clientId=w")
    await receive(ws)
    await sim.set_faults(["down"])
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        async with http.get(sim.url + "/queue"):
            pass
    assert isinstance(caught.value.os_error, ConnectionRefusedError)
    message = await ws.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    async with http.get(sim.admin_url + "/_sim/state") as response:
        state = await response.json()
    assert state["listening"] is False and state["faults"] == ["down"]
    await sim.set_faults([])
    async with http.get(sim.url + "/queue") as response:
        assert response.status == 200


async def test_down_from_start(http: aiohttp.ClientSession) -> None:
    """--fault down at start: a port is reserved but refuses connections until the fault is cleared."""
    async with await start_sim(faults=["down"]) as sim:
        with pytest.raises(aiohttp.ClientConnectorError):
            async with http.get(sim.url + "/queue"):
                pass
        async with http.post(sim.admin_url + "/_sim/faults", json={"faults": []}) as response:
            assert response.status == 200
        async with http.get(sim.url + "/queue") as response:
            assert response.status == 200


def _assert_port_held(port: int) -> None:
    """Nothing else may bind a downed server's port: it would answer in its place or keep the server from returning."""
    other = socket.socket()
    try:
        with pytest.raises(OSError) as caught:
            other.bind(("127.0.0.1", port))
        assert caught.value.errno == errno.EADDRINUSE
    finally:
        other.close()


@pytest.mark.parametrize("cloud", [False, True], ids=["local", "cloud"])
async def test_down_keeps_the_port_for_the_server(http: aiohttp.ClientSession, cloud: bool) -> None:
    """While down (from the start or switched on) the port refuses connections and no other socket can take it."""
    keys = ["comfyui-sim-key"] if cloud else []
    answered = 401 if cloud else 200  # the Cloud's /api/queue asks for a key
    async with await start_sim(faults=["down"], cloud=cloud, cloud_api_keys=keys) as sim:
        port = int(sim.url.rsplit(":", 1)[1])
        _assert_port_held(port)
        # No request before the second down: a connection it cut would keep the port in TIME_WAIT, bound anyway.
        await sim.set_faults([])
        await sim.set_faults(["down"])
        _assert_port_held(port)
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            async with http.get(sim.url + "/api/queue"):
                pass
        assert isinstance(refused.value.os_error, ConnectionRefusedError)
        await sim.set_faults([])
        async with http.get(sim.url + "/api/queue") as response:
            assert response.status == answered


async def test_slow_delays_every_response(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """slow delays responses by slow_ms; the admin API is not delayed."""
    await sim.set_faults(["slow"], slow_ms=200)
    started = time.monotonic()
    async with http.get(sim.url + "/queue") as response:
        assert response.status == 200
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    async with http.get(sim.admin_url + "/_sim/state") as response:
        assert response.status == 200
    assert time.monotonic() - started < 0.2


async def test_stall_freezes_running_job_until_cleared(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """stall: the job starts, sends no progress and never finishes; clearing it lets the job complete."""
    await sim.set_faults(["stall"])
    async with http.ws_connect(sim.url + "/ws?clientId=me") as ws:
        await receive(ws)
        _, answer = await post_prompt(http, sim.url, {"prompt": workflow("canary_preview_image"), "client_id": "me"})
        types = []
        while "executing" not in types:
            types.append((await receive(ws))["msg"]["type"])
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.1)
        assert sim.state()["queue_running"] == [answer["prompt_id"]] and sim.state()["history"] == []
        await sim.set_faults([])
        await eventually(lambda: answer["prompt_id"] in sim.state()["history"])
    assert (await history_entry(http, sim.url, answer["prompt_id"]))["status"]["status_str"] == "success"


async def test_stalled_job_can_be_interrupted(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """An interrupt ends a stalled job (recorded as interrupted) and the worker moves on."""
    await sim.set_faults(["stall"])
    _, answer = await post_prompt(http, sim.url, {"prompt": workflow("canary_preview_image")})
    await eventually(lambda: sim.state()["queue_running"] == [answer["prompt_id"]])
    async with http.post(sim.url + "/interrupt", json={"prompt_id": answer["prompt_id"]}):
        pass
    await eventually(lambda: answer["prompt_id"] in sim.state()["history"])
    assert sim.state()["jobs_interrupted"] == 1


async def test_worker_dead_leaves_jobs_pending(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """worker_dead: nothing leaves pending (running stays empty); clearing it drains the queue."""
    await sim.set_faults(["worker_dead"])
    ids = [(await post_prompt(http, sim.url, {"prompt": _text_prompt(v)}))[1]["prompt_id"] for v in "ab"]
    async with http.get(sim.url + "/prompt") as response:
        assert await response.json() == {"exec_info": {"queue_remaining": 2}}
    state = sim.state()
    assert state["queue_running"] == [] and state["queue_pending"] == ids
    await sim.set_faults([])
    await eventually(lambda: sim.state()["history"] == ids)


@pytest.mark.parametrize(
    ("fault", "exception_type", "reason"),
    [
        ("execution_error", "RuntimeError", Reason.EXECUTION_ERROR),
        ("oom", "torch.OutOfMemoryError", Reason.OOM),
    ],
)
async def test_job_failure_faults(
    sim: SimHandle, http: aiohttp.ClientSession, fault: str, exception_type: str, reason: Reason
) -> None:
    """execution_error / oom: every prompt (even one that would be cached) fails at run time."""
    body = {"prompt": workflow("canary_preview_image")}
    first = (await post_prompt(http, sim.url, body))[1]["prompt_id"]
    await eventually(lambda: first in sim.state()["history"])
    await sim.set_faults([fault])
    second = (await post_prompt(http, sim.url, body))[1]["prompt_id"]
    await eventually(lambda: second in sim.state()["history"])
    entry = await history_entry(http, sim.url, second)
    assert entry["status"]["status_str"] == "error"
    event, error = entry["status"]["messages"][-1]
    assert event == "execution_error" and error["exception_type"] == exception_type
    assert error["node_type"] == "EmptyImage" and error["traceback"]
    assert classify_execution_error(error["exception_type"], error["exception_message"]) is reason
    if fault == "oom":
        assert error["exception_message"].startswith(
            "Allocation on device 0 would exceed allowed memory. (out of memory)\n"
        )
    assert sim.state()["jobs_failed"] == 1


async def test_http_401_like_an_auth_proxy(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """http_401: 401 with WWW-Authenticate Basic and nginx's HTML page, also for the WebSocket upgrade."""
    await sim.set_faults(["http_401"])
    async with http.get(sim.url + "/system_stats") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "<center><h1>401 Authorization Required</h1></center>" in await response.text()
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(sim.url + "/ws?clientId=x")
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("fault", "status", "content_type", "body_part"),
    [
        ("http_403", 403, None, ""),
        ("http_429", 429, "text/html; charset=utf-8", "429 Too Many Requests"),
        (
            "http_500",
            500,
            "text/plain; charset=utf-8",
            "500 Internal Server Error\n\nServer got itself in trouble",
        ),
        ("http_502_html", 502, "text/html; charset=utf-8", "<title>502 Bad Gateway</title>"),
    ],
)
async def test_http_status_faults(
    sim: SimHandle,
    http: aiohttp.ClientSession,
    fault: str,
    status: int,
    content_type: str | None,
    body_part: str,
) -> None:
    """Each status fault answers every ComfyUI route with its canned response."""
    await sim.set_faults([fault])
    for path in ("/queue", "/api/prompt", "/history?max_items=1", "/no/such/route"):
        async with http.get(sim.url + path) as response:
            assert response.status == status
            assert response.headers.get("Content-Type") == content_type
            text = await response.text()
            assert body_part in text if body_part else text == ""
            if fault == "http_429":
                assert response.headers["Retry-After"] == "7"
    async with http.get(sim.admin_url + "/_sim/state") as response:
        assert response.status == 200


async def test_http_500_body_matches_aiohttp(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """http_500 is byte-identical to the recorded crash answer of the real server."""
    await sim.set_faults(["http_500"])
    async with http.get(sim.url + "/queue") as response:
        assert await response.read() == (FIXTURES / "queue_post_no_body_500.txt").read_bytes()
        assert response.headers["Connection"] == "close"


async def test_garbage_json(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """garbage_json: 200 application/json whose body no JSON parser accepts."""
    await sim.set_faults(["garbage_json"])
    async with http.get(sim.url + "/queue") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        body = await response.read()
    with pytest.raises(ValueError):
        json.loads(body)


async def test_huge_body_streams_lazily_and_stops(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """huge_body announces 2 GiB, streams it in chunks and stops once the client hangs up."""
    await sim.set_faults(["huge_body"])
    response = await http.get(sim.url + "/queue")
    assert response.status == 200
    assert response.headers["Content-Length"] == str(HUGE_BODY_BYTES)
    first = await response.content.read(1024)
    assert first.startswith(b'{"pad": "xxx')
    response.close()
    await eventually(lambda: sim.state()["huge_bodies_active"] == 0)
    assert 0 < sim.state()["huge_body_bytes"] < HUGE_BODY_BYTES


async def test_restart_empties_everything_once(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """restart: queue, history, counter and temp files gone, WebSockets dropped; the fault clears itself."""
    done = (await post_prompt(http, sim.url, {"prompt": workflow("canary_preview_image")}))[1]["prompt_id"]
    await eventually(lambda: done in sim.state()["history"])
    await sim.set_faults(["worker_dead"])
    await post_prompt(http, sim.url, {"prompt": _text_prompt("pending")})
    ws = await http.ws_connect(sim.url + "/ws?clientId=w")
    await receive(ws)
    async with http.post(sim.admin_url + "/_sim/faults", json={"faults": ["restart"]}) as response:
        state = await response.json()
    assert state["faults"] == [] and state["history"] == [] and state["queue_pending"] == []
    assert state["temp_files"] == [] and state["restarts"] == 1
    message = await ws.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert (await post_prompt(http, sim.url, {"prompt": _text_prompt("after")}))[1]["number"] == 0
    async with http.post(sim.admin_url + "/_sim/restart", json={"target": None}) as response:
        assert (await response.json())["restarts"] == 2


async def test_ws_no_upgrade(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """ws_no_upgrade: the handshake fails with aiohttp's 400 for a GET without Upgrade; HTTP still works."""
    await sim.set_faults(["ws_no_upgrade"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(sim.url + "/ws?clientId=x")
    assert caught.value.status == 400
    async with http.get(sim.url + "/ws") as response:
        assert response.status == 400
        assert await response.text() == 'No WebSocket UPGRADE hdr: None\n Can "Upgrade" only to "WebSocket".'
    async with http.get(sim.url + "/queue") as response:
        assert response.status == 200


async def test_ws_silent(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """ws_silent: the upgrade succeeds but no status (or anything else) ever arrives."""
    await sim.set_faults(["ws_silent"])
    async with http.ws_connect(sim.url + "/ws?clientId=quiet") as ws:
        await eventually(lambda: sim.state()["ws_connections"] == 1)
        _, answer = await post_prompt(http, sim.url, {"prompt": workflow("canary_preview_image"), "client_id": "quiet"})
        await eventually(lambda: answer["prompt_id"] in sim.state()["history"])
        with pytest.raises(asyncio.TimeoutError):
            await ws.receive(timeout=0.05)
    assert sim.state()["ws_clients"] == []


async def test_admin_api_rejects_bad_requests(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """Unknown faults, bad targets and bad bodies get 400 with an error; nothing changes."""
    for body in (
        {"faults": ["nope"]},
        {"faults": "down"},
        {"faults": [], "target": 3},
        {"faults": [], "slow_ms": -1},
    ):
        async with http.post(sim.admin_url + "/_sim/faults", json=body) as response:
            assert response.status == 400, body
            assert "error" in await response.json()
    async with http.get(sim.admin_url + "/_sim/state", params={"target": "x"}) as response:
        assert response.status == 400
    assert sim.state()["faults"] == []
    with pytest.raises(ValueError):
        await sim.set_faults(["bogus"])


async def test_admin_submit_and_info(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """POST /_sim/submit queues a background job from another client id; /_sim/info tells the URLs."""
    async with http.post(sim.admin_url + "/_sim/submit", json={"job_ms": 1}) as response:
        job = await response.json()
    await eventually(lambda: job["prompt_id"] in sim.state()["history"])
    assert sim.state()["jobs_background_submitted"] == 1
    async with http.get(sim.admin_url + "/_sim/info") as response:
        assert await response.json() == {
            "url": sim.url,
            "admin_url": sim.admin_url,
            "targets": 0,
            "mode": "local",
        }


async def test_background_load_obeys_faults(http: aiohttp.ClientSession) -> None:
    """load_per_min submits other users' jobs; they finish, fail under oom and pile up under worker_dead."""
    async with await start_sim(load_per_min=1200, job_ms=1) as sim:
        await eventually(lambda: sim.state()["jobs_succeeded"] >= 2)
        await sim.set_faults(["oom"])
        await eventually(lambda: sim.state()["jobs_failed"] >= 1)
        await sim.set_faults(["worker_dead"])
        await eventually(lambda: len(sim.state()["queue_pending"]) >= 2)
        assert sim.state()["queue_running"] == []
        pending = sim.state()["queue_pending"][0]
        async with http.get(sim.url + "/queue") as response:
            queued = (await response.json())["queue_pending"]
        item = next(q for q in queued if q[1] == pending)
        assert item[3]["client_id"] and item[2]["1"]["class_type"] == "EmptyImage"
