"""WebSocket /ws?clientId=&token=: 401 on a bad token; every connection of a user gets all its events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from comfywatch.errors import Reason, classify_execution_error
from comfywatch.sim.cloud.app import create_cloud_app
from comfywatch.sim.cloud.jobs import PromptPlan, check_prompt
from comfywatch.sim.cloud.model import SimCloud
from tests.conftest import TIMEOUT_FACTOR
from tests.sim_cloud import CANARY, KEY, OTHER_KEY, Served, serve, submit, ws_errors


@pytest.fixture
async def cloud() -> AsyncIterator[Served]:
    """A default simulator with two users."""
    async with serve(SimCloud(api_keys=[KEY, OTHER_KEY], exec_ms=20)) as served:
        yield served


async def _until_done(ws: aiohttp.ClientWebSocketResponse, prompt_id: str, timeout: float = 5.0) -> list[Any]:
    """Frames up to and including ``executing`` with node null for ``prompt_id``."""
    frames: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.receive_json()
            frames.append(frame)
            data = frame["data"]
            if frame["type"] == "executing" and data["node"] is None and data["prompt_id"] == prompt_id:
                return frames


async def test_bad_or_missing_token_fails_the_upgrade_with_401(cloud: Served) -> None:
    """A wrong or missing token gets HTTP 401 instead of a WebSocket."""
    for query in ("?clientId=a&token=comfyui-wrong", "?clientId=a"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await cloud.anon.ws_connect(f"/ws{query}")
        assert refused.value.status == 401


async def test_a_run_emits_comfyui_shaped_events_in_order(cloud: Served) -> None:
    """status(sid) first, then execution_start .. executed .. execution_success, status, executing null."""
    async with cloud.anon.ws_connect(f"/ws?clientId=anything&token={KEY}") as ws:
        hello = await ws.receive_json()
        assert hello["type"] == "status"
        assert hello["data"]["sid"]
        assert hello["data"]["status"]["exec_info"]["queue_remaining"] == 0
        prompt_id = await submit(cloud)
        frames = await _until_done(ws, prompt_id)
    kinds = [frame["type"] for frame in frames]
    assert kinds == [
        "status",
        "execution_start",
        "execution_cached",
        "executing",
        "executing",
        "executed",
        "execution_success",
        "status",
        "executing",
    ]
    assert frames[0]["data"]["status"]["exec_info"]["queue_remaining"] == 1
    assert "sid" not in frames[0]["data"]
    assert [frame["data"]["node"] for frame in frames if frame["type"] == "executing"] == ["1", "2", None]
    executed = frames[kinds.index("executed")]["data"]
    assert executed["output"]["images"][0]["filename"].startswith("comfywatch_")
    assert frames[-2]["data"]["status"]["exec_info"]["queue_remaining"] == 0
    for frame in [hello, *frames]:
        assert ws_errors(frame) == [], frame


async def test_client_id_is_ignored_and_events_stay_per_user(cloud: Served) -> None:
    """Two sockets of one user with different clientIds both get the run; another user's socket does not."""
    async with (
        cloud.anon.ws_connect(f"/ws?clientId=one&token={KEY}") as first,
        cloud.anon.ws_connect(f"/ws?clientId=two&token={KEY}") as second,
        cloud.anon.ws_connect(f"/ws?clientId=one&token={OTHER_KEY}") as stranger,
    ):
        for ws in (first, second, stranger):
            assert (await ws.receive_json())["type"] == "status"
        prompt_id = await submit(cloud)
        one = await _until_done(first, prompt_id)
        two = await _until_done(second, prompt_id)
        assert [frame["type"] for frame in one] == [frame["type"] for frame in two]
        assert cloud.sim.snapshot()["ws_connections"] == 3
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await stranger.receive_json()


@pytest.mark.parametrize(
    ("fault", "exception_type", "reason"),
    [
        ("oom", "OOMError", Reason.OOM),
        ("insufficient_funds_runtime", "InsufficientFundsError", Reason.PAYMENT),
    ],
)
async def test_execution_errors_carry_cloud_exception_types(
    cloud: Served, fault: str, exception_type: str, reason: Reason
) -> None:
    """A failing run sends execution_error with the Cloud exception type, then status and executing null."""
    cloud.sim.set_faults([fault])
    async with cloud.anon.ws_connect(f"/ws?token={KEY}") as ws:
        await ws.receive_json()
        prompt_id = await submit(cloud)
        frames = await _until_done(ws, prompt_id)
    kinds = [frame["type"] for frame in frames]
    assert kinds[-3:] == ["execution_error", "status", "executing"]
    error = frames[-3]["data"]
    assert (error["prompt_id"], error["exception_type"]) == (prompt_id, exception_type)
    assert classify_execution_error(error["exception_type"], error["exception_message"]) is reason
    for frame in frames:
        assert ws_errors(frame) == [], frame


async def test_interrupt_sends_execution_interrupted(cloud: Served) -> None:
    """Interrupting an executing job sends execution_interrupted, then status and executing null."""
    cloud.sim.exec_ms = 60_000
    async with cloud.anon.ws_connect(f"/ws?token={KEY}") as ws:
        await ws.receive_json()
        prompt_id = await submit(cloud)
        async with asyncio.timeout(5):
            while (await ws.receive_json())["type"] != "execution_start":
                pass
        async with cloud.http.post("/api/interrupt", json={"prompt_id": prompt_id}) as answer:
            assert answer.status == 200
        frames = await _until_done(ws, prompt_id)
    assert [frame["type"] for frame in frames] == [
        "execution_cached",
        "executing",
        "execution_interrupted",
        "status",
        "executing",
    ]
    assert frames[2]["data"]["prompt_id"] == prompt_id
    for frame in frames:
        assert ws_errors(frame) == [], frame


async def test_shutdown_closes_open_sockets() -> None:
    """Stopping the app closes connected clients (code 1001) instead of hanging the cleanup."""
    sim = SimCloud(api_keys=[KEY])
    runner = web.AppRunner(create_cloud_app(sim))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws?token={KEY}")
        await ws.receive_json()
        async with asyncio.timeout(5):
            await runner.cleanup()
            closing = await ws.receive()
        assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    assert sim.snapshot()["ws_connections"] == 0


async def test_an_event_as_the_app_stops_does_not_keep_the_cleanup_waiting() -> None:
    """The clock task is cancelled in the same loop turn as an event wakes it: the cleanup still ends."""
    sim = SimCloud(api_keys=[KEY])
    owner = sim.owner_for_key(KEY)
    plan = check_prompt(CANARY)
    assert owner is not None and isinstance(plan, PromptPlan)
    app = create_cloud_app(sim)

    async def submit_as_the_app_stops(_app: web.Application) -> AsyncIterator[None]:
        yield
        # Cleanup contexts exit in reverse order with no await between them: the event this submit publishes
        # wakes the clock task just before the simulator's own context cancels it.
        sim.submit(owner, plan)

    app.cleanup_ctx.append(submit_as_the_app_stops)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    # A task of its own: a deadline on this one could be swallowed by the very wait it is meant to end.
    cleanup = asyncio.create_task(runner.cleanup())
    done, _ = await asyncio.wait({cleanup}, timeout=5 * TIMEOUT_FACTOR)
    assert cleanup in done, "the cleanup still waits for the clock task"
    cleanup.result()
