"""The canary (and doctor's upgrade probe) against servers misbehaving on one route: the simulated ComfyUI with
that route served by a handler of the test, everything else as ComfyUI 0.3.64 answers.

Each case checks what the run reports and what it leaves behind: nothing of the canary queued or in history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from comfywatch.checks import websocket as websocket_check
from comfywatch.checks.canary import CanaryRunner
from comfywatch.checks.cloud import CloudCanaryApi
from comfywatch.checks.context import build_context
from comfywatch.clients.ws import CLOSE_WAIT
from comfywatch.config import Config, TargetConfig, VerifyConfig
from comfywatch.errors import Reason
from comfywatch.sim.admin import SimHandle, start_sim
from comfywatch.sim.local.server import SimServer
from comfywatch.workflows import load_workflow
from tests.integration.test_canary import (
    PREVIEW,
    WORKFLOWS,
    assert_left_nothing,
    canary,
    canary_queued,
    run_canary,
    spy,
)
from tests.integration.test_cloud import KEY, api_for

#: A route handler of the test: the request, and the simulated server behind it.
Handler = Callable[[web.Request, SimServer], Awaitable[web.StreamResponse]]

STATUS = {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}
#: The first bytes of a JPEG (SOI + APP0 "JFIF"): an image whose size the canary does not read.
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
BAD_GATEWAY = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"


def override(monkeypatch: pytest.MonkeyPatch, sim: SimHandle, route: str, method: str, handler: Handler) -> None:
    """Serve *method* *route* (with or without the ``/api`` prefix) by *handler*; every other route as before."""
    assert sim.cluster is not None
    routes = sim.cluster.routes
    original = routes.resolve

    async def call(dispatched: Any) -> web.StreamResponse:
        return await handler(dispatched.request, dispatched.server)

    def resolve(path: str, wanted: str) -> tuple[Any, dict[str, str], set[str]]:
        if wanted == method and path.removeprefix("/api") == route:
            return call, {}, set()
        return original(path, wanted)

    monkeypatch.setattr(routes, "resolve", resolve)


@pytest.fixture
async def release() -> AsyncIterator[asyncio.Event]:
    """Set when the test ends: handlers holding a request or a socket open wait for it, so that the simulator
    stops at once instead of after its grace period."""
    event = asyncio.Event()
    try:
        yield event
    finally:
        event.set()


def deaf_socket(release: asyncio.Event, *, send_status: bool) -> Handler:
    """A ``/ws`` that upgrades (and sends ``status`` if *send_status*), then never reads: the client's close
    frame is never answered, as behind a proxy that holds the connection."""

    async def handler(request: web.Request, _server: SimServer) -> web.StreamResponse:
        socket = web.WebSocketResponse(autoclose=False)
        await socket.prepare(request)
        if send_status:
            await socket.send_json(STATUS)
        await release.wait()
        return socket

    return handler


# --------------------------------------------------------------------------------------------------------
# Output verification


def view_answer(body: bytes, content_type: str) -> Handler:
    async def handler(_request: web.Request, _server: SimServer) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type)

    return handler


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/webp", "image/png"])
@pytest.mark.parametrize(("workflow", "verify"), [
    (PREVIEW, None),
    (str(WORKFLOWS / "image_32x24.json"), VerifyConfig(images=1)),
], ids=["expected-size", "any-size"])
async def test_an_empty_image_fails_verification_whatever_its_type(
    monkeypatch: pytest.MonkeyPatch, content_type: str, workflow: str, verify: VerifyConfig | None
) -> None:
    """``/view`` answering 200 with an image type and no bytes is output_invalid, with or without an expected
    image size: an empty body is no image."""
    async with await start_sim() as sim:
        override(monkeypatch, sim, "/view", "GET", view_answer(b"", content_type))
        result = await run_canary(sim.url, workflow, verify=verify)
        assert (result.ok, result.reason) == (False, Reason.OUTPUT_INVALID), result.as_dict()
        assert "empty" in result.detail, result.detail
        assert_left_nothing(sim, result)


async def test_an_image_of_unreadable_size_fails_only_where_a_size_is_expected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A non-PNG image cannot prove the 64x64 the preview-image canary expects (output_invalid, saying why);
    a workflow that expects no size still accepts it."""
    async with await start_sim() as sim:
        override(monkeypatch, sim, "/view", "GET", view_answer(JPEG_HEAD, "image/jpeg"))
        sized = await run_canary(sim.url, PREVIEW)
        assert (sized.ok, sized.reason) == (False, Reason.OUTPUT_INVALID), sized.as_dict()
        assert "cannot read the size" in sized.detail and "64x64" in sized.detail
        assert_left_nothing(sim, sized)
        unsized = await run_canary(sim.url, str(WORKFLOWS / "image_32x24.json"), verify=VerifyConfig(images=1))
        assert unsized.ok, unsized.as_dict()
        assert_left_nothing(sim, unsized)


# --------------------------------------------------------------------------------------------------------
# A WebSocket peer that never answers the close frame


async def test_a_silent_socket_deaf_to_close_still_leaves_time_to_poll(
    monkeypatch: pytest.MonkeyPatch, release: asyncio.Event
) -> None:
    """A socket that upgrades, stays silent and never answers the close frame costs the wait for ``status``
    plus at most :data:`CLOSE_WAIT` (not the connection's 10 s close timeout): the run falls back to
    polling and succeeds within its 4 s budget."""
    async with await start_sim(exec_ms=30) as sim:
        override(monkeypatch, sim, "/ws", "GET", deaf_socket(release, send_status=False))
        started = time.perf_counter()
        result = await run_canary(sim.url, timeout=4.0)
        elapsed = time.perf_counter() - started
        assert result.ok, result.as_dict()
        assert result.websocket_ok is False
        # status wait (a quarter of the budget) + the bounded close + a few polls.
        assert elapsed < 1.0 + CLOSE_WAIT + 1.5, elapsed
        assert_left_nothing(sim, result)


async def test_doctor_keeps_the_status_frame_of_a_socket_deaf_to_close(
    monkeypatch: pytest.MonkeyPatch, release: asyncio.Event
) -> None:
    """doctor's probe of a server that sends ``status`` at once but never answers the close frame reports the
    status frame (not a timeout), and returns within :data:`CLOSE_WAIT` of receiving it."""
    async with await start_sim() as sim:
        override(monkeypatch, sim, "/ws", "GET", deaf_socket(release, send_status=True))
        runtime = build_context(Config(), TargetConfig(name="t", url=sim.url))
        try:
            started = time.perf_counter()
            seen = await websocket_check.observe(runtime, 5.0)
            elapsed = time.perf_counter() - started
        finally:
            await runtime.close()
        assert (seen.status_frame, seen.timed_out, seen.failure) == (True, False, None), seen
        assert seen.opened_seconds is not None
        assert elapsed < seen.opened_seconds + CLOSE_WAIT + 1.0, elapsed


# --------------------------------------------------------------------------------------------------------
# A submit that fails after the prompt was queued


def queue_then(answer: str, release: asyncio.Event) -> Handler:
    """``POST /prompt`` that queues the prompt as ComfyUI does, then answers nginx's 502 (*answer* ``"502"``) or
    nothing until the test ends (``"hang"``): a proxy in front of a working server."""

    async def handler(request: web.Request, server: SimServer) -> web.StreamResponse:
        server.post_prompt(await request.json())
        if answer == "hang":
            await release.wait()
        return web.Response(status=502, text=BAD_GATEWAY, content_type="text/html")

    return handler


@pytest.mark.parametrize(("answer", "reason"), [("502", Reason.SERVER_ERROR), ("hang", Reason.TIMEOUT)])
async def test_a_prompt_queued_behind_a_failed_submit_is_cancelled(
    monkeypatch: pytest.MonkeyPatch, release: asyncio.Event, answer: str, reason: Reason
) -> None:
    """When ``POST /prompt`` queues the prompt but its answer is a 502 or never comes, the run reports the
    submit's failure and still cleans up: it sent its own ``prompt_id``, so it interrupts exactly that prompt
    (running, stalled) and deletes its history entry; the id is also handed to ``on_accepted``."""
    async with await start_sim(faults=["stall"]) as sim:
        posted = spy(monkeypatch, sim, "post_prompt")
        interrupts = spy(monkeypatch, sim, "interrupt")
        override(monkeypatch, sim, "/prompt", "POST", queue_then(answer, release))
        async with canary(sim.url, timeout=1.5) as runner:
            accepted: list[str] = []
            runner.on_accepted = accepted.append
            result = await runner.run()
        assert (result.ok, result.reason) == (False, reason), result.as_dict()
        assert len(posted) == 1
        sent = posted[0]["prompt_id"]
        assert isinstance(sent, str) and sent
        assert accepted == [sent]
        assert interrupts == [sent]  # targeted at our prompt, never a global interrupt
        state = sim.state()
        assert (state["jobs_interrupted"], state["queue_running"], canary_queued(sim)) == (1, [], [])
        assert sent not in state["history"]
        assert_left_nothing(sim, result)


async def test_a_refused_submit_cleans_up_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 400 from ``POST /prompt`` proves nothing was queued: no cancel, no history delete."""
    async with await start_sim() as sim:
        queue_reads = spy(monkeypatch, sim, "get_queue")
        history_posts = spy(monkeypatch, sim, "post_history")
        workflow = str(WORKFLOWS / "invalid_inputs.json")
        result = await run_canary(sim.url, workflow, when_busy="queue")
        assert result.reason is Reason.VALIDATION, result.as_dict()
        assert (queue_reads, history_posts) == ([], [])
        assert_left_nothing(sim, result)


async def test_a_local_canary_submits_its_own_prompt_id_and_uses_the_one_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The POST body carries a fresh ``prompt_id`` per run, and the simulator (like ComfyUI 0.3.64) queues the
    prompt under it."""
    async with await start_sim() as sim:
        posted = spy(monkeypatch, sim, "post_prompt")
        async with canary(sim.url) as runner:
            first, second = await runner.run(), await runner.run()
        assert first.ok and second.ok, (first.as_dict(), second.as_dict())
        assert [body["prompt_id"] for body in posted] == [first.prompt_id, second.prompt_id]
        assert first.prompt_id != second.prompt_id
        assert_left_nothing(sim, second)


async def test_a_cloud_canary_sends_no_prompt_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Comfy Cloud's ``PromptRequest`` documents no ``prompt_id``: the Cloud canary's POST body has none."""
    async with await start_sim(cloud=True, cloud_api_keys=[KEY]) as sim:
        api = api_for(sim.url, tmp_path, timeout="5s")
        bodies: list[Any] = []
        original = api.http.request

        async def recording(method: str, path: str, **kwargs: Any) -> Any:
            if method == "POST" and path.endswith("/prompt"):
                bodies.append(kwargs.get("json_body"))
            return await original(method, path, **kwargs)

        monkeypatch.setattr(api.http, "request", recording)
        try:
            runner = CanaryRunner(CloudCanaryApi(api, KEY), load_workflow(PREVIEW, "preview-image"), timeout=5,
                                  when_busy="queue")
            result = await runner.run()
        finally:
            await api.close()
        assert result.ok, result.as_dict()
        assert len(bodies) == 1 and "prompt_id" not in bodies[0]


# --------------------------------------------------------------------------------------------------------
# Polling: a history entry written before the prompt ended


def unfinished_while_running(server: SimServer, served: list[str], *, completed: bool = False
                             ) -> Callable[[str], dict[str, Any]]:
    """``GET /history/{id}`` as from a server that writes the entry when the prompt starts: while it runs,
    ``status_str`` null, ``completed`` as given and only ``execution_start``. Each id so answered is appended to
    *served*."""
    original = server.get_history_item

    def get_history_item(prompt_id: str) -> dict[str, Any]:
        running = server.running
        if running is not None and running.prompt_id == prompt_id:
            served.append(prompt_id)
            start = {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)}
            status = {"status_str": None, "completed": completed, "messages": [["execution_start", start]]}
            return {prompt_id: {"prompt": [0, prompt_id, running.prompt, running.extra_data, []],
                                "outputs": {}, "status": status}}
        return original(prompt_id)

    return get_history_item


async def test_polling_an_unfinished_history_entry_waits_and_cancels_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a WebSocket, an entry with ``completed`` false and no verdict means "still running": the run
    polls until its deadline, reports timeout (never execution_error) and interrupts its own prompt."""
    async with await start_sim(faults=["stall", "ws_no_upgrade"]) as sim:
        server = sim.server()
        served: list[str] = []
        monkeypatch.setattr(server, "get_history_item", unfinished_while_running(server, served))
        interrupts = spy(monkeypatch, sim, "interrupt")
        result = await run_canary(sim.url, timeout=1.0)
        assert (result.ok, result.reason, result.websocket_ok) == (False, Reason.TIMEOUT, False), result.as_dict()
        assert result.phases["total"] >= 0.9  # polled on until the deadline
        assert result.prompt_id is not None and interrupts == [result.prompt_id]
        assert len(served) >= 2 and set(served) == {result.prompt_id}
        assert sim.state()["jobs_interrupted"] == 1
        assert_left_nothing(sim, result)


async def test_polling_an_entry_that_finishes_later_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unfinished entry seen while the prompt runs is polled past: once the prompt ends, the run succeeds."""
    async with await start_sim(faults=["ws_no_upgrade"], exec_ms=300) as sim:
        server = sim.server()
        served: list[str] = []
        monkeypatch.setattr(server, "get_history_item", unfinished_while_running(server, served))
        result = await run_canary(sim.url, timeout=5.0)
        assert result.ok, result.as_dict()
        assert served and set(served) == {result.prompt_id}  # the unfinished entry was seen, and polled past
        assert_left_nothing(sim, result)


async def test_a_verdict_history_does_not_recognise_still_cancels_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry marked ``completed`` but with no verdict the canary recognises fails the run (execution_error,
    "history says unknown"), and since it does not prove the prompt over, the run still cancels its own prompt,
    here still running."""
    async with await start_sim(faults=["stall", "ws_no_upgrade"]) as sim:
        server = sim.server()
        served: list[str] = []
        monkeypatch.setattr(server, "get_history_item", unfinished_while_running(server, served, completed=True))
        interrupts = spy(monkeypatch, sim, "interrupt")
        result = await run_canary(sim.url, timeout=5.0)
        assert (result.ok, result.reason) == (False, Reason.EXECUTION_ERROR), result.as_dict()
        assert "history says unknown" in result.detail
        assert result.prompt_id is not None and interrupts == [result.prompt_id]
        assert sim.state()["jobs_interrupted"] == 1
        assert_left_nothing(sim, result)
