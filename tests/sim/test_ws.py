"""WebSocket fidelity: live event streams of the simulated ComfyUI against the recorded ``ws_*.jsonl``."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import aiohttp
import pytest

from comfywatch.sim import SimHandle
from tests.sim.conftest import (
    assert_silent,
    eventually,
    frames_until_end,
    is_end,
    post_prompt,
    receive,
    recorded_frames,
    run_to_end,
    signature,
    workflow,
)


async def test_connect_status_frame_and_sid(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """The first frame is status with sid = clientId; no clientId (or client_id=) gets a random hex sid."""
    async with http.ws_connect(sim.url + "/ws?clientId=abc123") as ws:
        frame = await receive(ws)
    assert signature(frame) == signature(recorded_frames("ws_connect_status.jsonl")[0])
    assert frame["msg"]["data"]["sid"] == "abc123"
    for query in ("", "?client_id=my-client-id"):
        async with http.ws_connect(sim.url + "/ws" + query) as ws:
            sid = (await receive(ws))["msg"]["data"]["sid"]
        assert re.fullmatch(r"[0-9a-f]{32}", sid), sid
    async with http.ws_connect(sim.url + "/api/ws?clientId=viaapi") as ws:
        assert (await receive(ws))["msg"]["data"]["sid"] == "viaapi"


async def test_feature_flags_handshake(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """A first feature_flags message is answered with the server's flags, as recorded."""
    async with http.ws_connect(sim.url + "/ws?clientId=ff") as ws:
        await receive(ws)
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        frame = await receive(ws)
    assert frame["msg"] == recorded_frames("ws_feature_flags_handshake.jsonl")[1]["msg"]


@pytest.mark.parametrize(
    ("name", "recording"),
    [
        ("canary_preview_image", "ws_canary_preview_run.jsonl"),
        ("canary_text_preview_any", "ws_canary_text_run.jsonl"),
        ("canary_save_image_output", "ws_canary_save_run.jsonl"),
        ("runtime_error_regex", "ws_runtime_error_run.jsonl"),
        ("canary_save_image_websocket", "ws_canary_wsimage_run.jsonl"),
    ],
)
async def test_canary_stream_matches_recording(
    sim: SimHandle, http: aiohttp.ClientSession, name: str, recording: str
) -> None:
    """Event for event (type, keys, value types, order, binary frames) the run matches the recording."""
    async with http.ws_connect(sim.url + "/ws?clientId=me") as ws:
        await receive(ws)
        _, frames = await run_to_end(http, ws, sim.url, {"prompt": workflow(name), "client_id": "me"})
    assert [signature(f) for f in frames] == [signature(f) for f in recorded_frames(recording)]


async def test_cached_stream_matches_recording(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """The identical prompt again: everything cached, no executing frames, executed still sent."""
    body = {"prompt": workflow("canary_preview_image"), "client_id": "me"}
    async with http.ws_connect(sim.url + "/ws?clientId=me") as ws:
        await receive(ws)
        await run_to_end(http, ws, sim.url, body)
        _, frames = await run_to_end(http, ws, sim.url, body)
    assert [signature(f) for f in frames] == [
        signature(f) for f in recorded_frames("ws_canary_preview_cached_run.jsonl")
    ]
    assert frames[3]["msg"]["data"]["nodes"] == ["1", "2"]


async def test_binary_preview_frames(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """SaveImageWebsocket sends type 1 (PNG) by default and type 4 with metadata once negotiated."""
    async with http.ws_connect(sim.url + "/ws?clientId=plain") as ws:
        await receive(ws)
        _, frames = await run_to_end(
            http, ws, sim.url, {"prompt": workflow("canary_save_image_websocket"), "client_id": "plain"}
        )
    binary = next(f for f in frames if f["kind"] == "binary")
    assert binary["data"][:8] == (1).to_bytes(4, "big") + (2).to_bytes(4, "big")
    assert binary["data"][8:16] == b"\x89PNG\r\n\x1a\n"

    async with http.ws_connect(sim.url + "/ws?clientId=meta") as ws:
        await receive(ws)
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        await receive(ws)
        prompt = workflow("canary_save_image_websocket")
        prompt["1"]["inputs"]["color"] = 658188  # a new colour, or EmptyImage would come from the cache
        prompt_id, frames = await run_to_end(http, ws, sim.url, {"prompt": prompt, "client_id": "meta"})
    recorded = recorded_frames("ws_canary_wsimage_with_metadata_run.jsonl")
    assert [signature(f) for f in frames] == [signature(f) for f in recorded]
    data = next(f for f in frames if f["kind"] == "binary")["data"]
    length = int.from_bytes(data[4:8], "big")
    metadata = json.loads(data[8 : 8 + length])
    expected = next(f for f in recorded if f["kind"] == "binary")["metadata"]
    assert metadata == {**expected, "prompt_id": prompt_id}
    assert data[8 + length : 16 + length] == b"\x89PNG\r\n\x1a\n"


async def test_observer_sees_only_status_of_other_clients(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """Another client's prompt shows up on an observer socket only as status frames."""
    async with (
        http.ws_connect(sim.url + "/ws?clientId=obs") as observer,
        http.ws_connect(sim.url + "/ws?clientId=me") as me,
    ):
        await receive(observer)
        await receive(me)
        prompt_id, _ = await run_to_end(
            http, me, sim.url, {"prompt": workflow("canary_text_preview_any"), "client_id": "me"}
        )
        frames = [await receive(observer) for _ in range(3)]
        recorded = recorded_frames("ws_observer_during_other_client_run.jsonl")
        assert [signature(f) for f in frames] == [signature(f) for f in recorded]
        assert prompt_id in sim.state()["history"]


async def test_prompt_without_client_id_broadcasts_status_and_progress(
    sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    """A prompt posted without client_id sends every socket status and progress_state, nothing else."""
    async with http.ws_connect(sim.url + "/ws?clientId=obs") as observer:
        await receive(observer)
        _, answer = await post_prompt(http, sim.url, {"prompt": workflow("canary_preview_image")})
        recorded = recorded_frames("ws_observer_prompt_without_client_id.jsonl")
        frames = [await receive(observer) for _ in recorded]
        assert [signature(f) for f in frames] == [signature(f) for f in recorded]
        await eventually(lambda: answer["prompt_id"] in sim.state()["history"])


async def test_interrupted_stream(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """Interrupting the running prompt ends it with execution_interrupted (to its client), like recorded."""
    async with http.ws_connect(sim.url + "/ws?clientId=me") as ws:
        await receive(ws)
        _, answer = await post_prompt(
            http, sim.url, {"prompt": workflow("slow_cpu_6s"), "client_id": "me", "sim_exec_ms": 60000}
        )
        frames: list[dict[str, Any]] = []
        while not (frames and frames[-1]["msg"]["type"] == "executing" and frames[-1]["msg"]["data"]["node"] == "3"):
            frames.append(await receive(ws))
        async with http.post(sim.url + "/interrupt", json={"prompt_id": answer["prompt_id"]}):
            pass
        frames += await frames_until_end(ws, answer["prompt_id"])
    recorded = recorded_frames("ws_queue_ops_and_interrupt.jsonl")
    start = next(i for i, f in enumerate(recorded) if f["msg"]["type"] == "execution_start")
    end = next(i for i, f in enumerate(recorded) if f["msg"]["type"] == "execution_interrupted")
    expected = [f for f in recorded[start - 2 : end + 3] if f["msg"]["type"] != "status"]
    live = [f for f in frames if f["msg"]["type"] != "status"]
    # The recording has extra queue activity in between; without status frames the sequences agree.
    assert [signature(f) for f in live] == [signature(f) for f in expected]
    interrupted = next(f for f in frames if f["msg"]["type"] == "execution_interrupted")["msg"]["data"]
    assert interrupted["node_id"] == "3" and interrupted["node_type"] == "ImageScale"
    assert interrupted["executed"] == ["2", "1"]


async def test_interrupt_of_client_less_prompt_is_broadcast(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """execution_interrupted of a prompt posted without client_id reaches every socket."""
    async with http.ws_connect(sim.url + "/ws?clientId=obs") as observer:
        await receive(observer)
        _, answer = await post_prompt(http, sim.url, {"prompt": workflow("slow_cpu_6s"), "sim_exec_ms": 60000})
        await eventually(lambda: sim.state()["queue_running"] == [answer["prompt_id"]])
        async with http.post(sim.url + "/interrupt", json={}):
            pass
        types = []
        while "execution_interrupted" not in types:
            types.append((await receive(observer))["msg"]["type"])
        assert "executing" not in types and "execution_start" not in types


async def test_reconnect_with_same_client_id(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """A same-clientId reconnect gets executing {node} without prompt_id; the old socket goes silent."""
    async with http.ws_connect(sim.url + "/ws?clientId=same") as old:
        await receive(old)
        _, answer = await post_prompt(
            http, sim.url, {"prompt": workflow("slow_cpu_6s"), "client_id": "same", "sim_exec_ms": 60000}
        )
        while (await receive(old))["msg"]["data"].get("node") != "3":
            pass  # drain what the old socket got while it was registered, up to the busy node 3
        async with http.ws_connect(sim.url + "/ws?clientId=same") as new:
            first, second = await receive(new), await receive(new)
            recorded = recorded_frames("ws_reconnect_same_client_id_mid_run.jsonl")
            assert [signature(first), signature(second)] == [signature(f) for f in recorded[:2]]
            assert second["msg"]["data"] == {"node": "3"}
            async with http.post(sim.url + "/interrupt", json={"prompt_id": answer["prompt_id"]}):
                pass
            frames = await frames_until_end(new, answer["prompt_id"])
            # The recording's new socket also saw node 3 start; here it connected while node 3 ran.
            assert [signature(f) for f in frames] == [signature(f) for f in recorded[-3:]]
            await assert_silent(old, eventually(lambda: answer["prompt_id"] in sim.state()["history"]))


async def test_old_socket_closing_drops_the_new_one(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """The old socket closing after the reconnect drops the new one: it gets nothing, not even status."""
    old = await http.ws_connect(sim.url + "/ws?clientId=dup")
    await receive(old)
    async with http.ws_connect(sim.url + "/ws?clientId=dup") as new:
        frame = await receive(new)
        assert signature(frame) == signature(recorded_frames("ws_new_socket_after_old_same_client_id_closed.jsonl")[0])
        await old.close()
        await eventually(lambda: sim.state()["ws_clients"] == [])
        async with http.ws_connect(sim.url + "/ws?clientId=other") as other:
            await receive(other)

            async def barrier() -> None:
                await post_prompt(http, sim.url, {"prompt": workflow("canary_text_preview_any")})
                while True:
                    msg = (await receive(other))["msg"]
                    if msg["type"] == "status" and msg["data"]["status"]["exec_info"]["queue_remaining"] == 0:
                        return

            await assert_silent(new, barrier())


async def test_end_marker_comes_after_history(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """When executing {node: null} arrives, GET /history/{id} already has the entry."""
    async with http.ws_connect(sim.url + "/ws?clientId=me") as ws:
        await receive(ws)
        _, answer = await post_prompt(http, sim.url, {"prompt": workflow("canary_text_preview_any"), "client_id": "me"})
        while not is_end(await receive(ws), answer["prompt_id"]):
            pass
        async with http.get(f"{sim.url}/history/{answer['prompt_id']}") as response:
            assert answer["prompt_id"] in await response.json()


async def test_foreign_origin_refuses_upgrade(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """The Origin check also refuses the WebSocket upgrade with 403."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(sim.url + "/ws?clientId=x", headers={"Origin": "http://evil.example.com"})
    assert caught.value.status == 403


async def test_timestamps_are_wall_clock_ms(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """execution_* timestamps are the server's wall clock in milliseconds."""
    before = int(time.time() * 1000)
    async with http.ws_connect(sim.url + "/ws?clientId=me") as ws:
        await receive(ws)
        _, frames = await run_to_end(http, ws, sim.url, {"prompt": workflow("canary_preview_image"), "client_id": "me"})
    after = int(time.time() * 1000)
    stamps = [f["msg"]["data"]["timestamp"] for f in frames if "timestamp" in f["msg"]["data"]]
    assert len(stamps) == 3 and all(before <= stamp <= after for stamp in stamps)
