"""Many simulated servers in one process: ``/t/{i}`` prefixes with isolated state and per-target faults."""

from __future__ import annotations

import aiohttp
import pytest

from comfywatch.sim import start_sim
from tests.sim.conftest import eventually, post_prompt, receive, run_to_end, workflow


async def test_prefixes_isolate_state(http: aiohttp.ClientSession) -> None:
    """A prompt on /t/1 shows up in t1's queue, history and WebSocket only."""
    async with await start_sim(targets=3) as sim:
        t1 = sim.target_url(1)
        assert t1 == f"{sim.url}/t/1"
        async with (
            http.ws_connect(t1 + "/ws?clientId=me") as ws,
            http.ws_connect(sim.url + "/ws?clientId=me") as root_ws,
        ):
            await receive(ws)
            await receive(root_ws)
            prompt_id, frames = await run_to_end(
                http, ws, t1, {"prompt": workflow("canary_preview_image"), "client_id": "me"}
            )
            assert frames[-1]["msg"]["data"] == {"node": None, "prompt_id": prompt_id}
        assert sim.state(1)["history"] == [prompt_id]
        assert sim.state(None)["history"] == [] and sim.state(0)["history"] == []
        async with http.get(t1 + "/api/history", params={"max_items": "5"}) as response:
            assert list(await response.json()) == [prompt_id]
        async with http.get(sim.target_url(2) + "/history") as response:
            assert await response.json() == {}
        # The number counter is per server too.
        assert (await post_prompt(http, sim.target_url(0), {"prompt": workflow("canary_preview_image")}))[1][
            "number"
        ] == 0
        async with http.get(
            f"{t1}/view",
            params={"filename": frames[-5]["msg"]["data"]["output"]["images"][0]["filename"], "type": "temp"},
        ) as r:
            assert r.status == 200


async def test_unknown_target_falls_through_to_root_404(http: aiohttp.ClientSession) -> None:
    """A prefix outside 0..N-1 is just an unknown path of the root server."""
    async with await start_sim(targets=2) as sim:
        for path in ("/t/2/queue", "/t/01/queue", "/t/x/queue"):
            async with http.get(sim.url + path) as response:
                assert response.status == 404
                assert response.headers["Content-Type"] == "application/octet-stream"
        with pytest.raises(KeyError):
            sim.state(2)


async def test_per_target_faults(http: aiohttp.ClientSession) -> None:
    """Faults switched on one target (via the admin API) leave the others alone; down drops connections."""
    async with await start_sim(targets=3) as sim:
        async with http.post(sim.admin_url + "/_sim/faults", json={"target": 2, "faults": ["http_502_html"]}) as r:
            assert (await r.json())["faults"] == ["http_502_html"]
        await sim.set_faults(["down"], target=0)
        async with http.get(sim.target_url(2) + "/queue") as response:
            assert response.status == 502
        with pytest.raises(aiohttp.ClientError):
            async with http.get(sim.target_url(0) + "/queue"):
                pass
        for target in (None, 1):
            async with http.get(sim.target_url(target) + "/queue") as response:
                assert response.status == 200
        async with http.get(sim.admin_url + "/_sim/state", params={"target": "0"}) as response:
            state = await response.json()
        assert state["faults"] == ["down"] and state["target"] == 0 and state["listening"] is True
        await sim.set_faults([], target=0)
        async with http.get(sim.target_url(0) + "/queue") as response:
            assert response.status == 200


async def test_targets_are_created_lazily(http: aiohttp.ClientSession) -> None:
    """With 1000 targets only the ones used hold state, so scale tests stay small."""
    async with await start_sim(targets=1000) as sim:
        async with http.get(sim.target_url(999) + "/prompt") as response:
            assert await response.json() == {"exec_info": {"queue_remaining": 0}}
        assert sim.cluster is not None
        assert len(sim.cluster.existing_servers()) == 2  # root + /t/999


async def test_background_load_runs_on_every_target(http: aiohttp.ClientSession) -> None:
    """load_per_min gives every target its own stream of other users' jobs."""
    async with await start_sim(targets=2, load_per_min=1200, job_ms=1) as sim:
        await eventually(lambda: all(sim.state(t)["jobs_finished"] >= 1 for t in (None, 0, 1)))


async def test_restart_one_target(http: aiohttp.ClientSession) -> None:
    """Restarting one target empties only its history."""
    async with await start_sim(targets=2) as multi:
        ids = {}
        for target in (0, 1):
            _, answer = await post_prompt(http, multi.target_url(target), {"prompt": workflow("canary_preview_image")})
            ids[target] = answer["prompt_id"]
        await eventually(lambda: all(ids[t] in multi.state(t)["history"] for t in ids))
        await multi.restart(0)
        assert multi.state(0)["history"] == [] and multi.state(1)["history"] == [ids[1]]


async def test_deploy_changes_one_target_s_catalogue_and_models_across_restarts(http: aiohttp.ClientSession) -> None:
    """POST /_sim/deploy on target 0: a class gone from /object_info (and from validation), a COMBO's options
    replaced, /models/checkpoints listing files; target 1 unchanged; a restart keeps the deploy."""
    async with await start_sim(targets=2) as multi:
        body = {"target": 0, "remove": ["PreviewImage"],
                "options": {"ImageScale": {"upscale_method": ["nearest-exact"]}},
                "models": {"checkpoints": ["sdxl.safetensors"]}}
        async with http.post(multi.admin_url + "/_sim/deploy", json=body) as response:
            assert response.status == 200, await response.text()
        async with http.post(multi.admin_url + "/_sim/deploy", json={"remove": "PreviewImage"}) as response:
            assert response.status == 400
        await multi.restart(0)
        for target, has_preview, methods, models in ((0, False, ["nearest-exact"], ["sdxl.safetensors"]),
                                                     (1, True, None, [])):
            base = multi.target_url(target)
            async with http.get(base + "/object_info") as response:
                info = await response.json()
            assert ("PreviewImage" in info) is has_preview
            upscale = info["ImageScale"]["input"]["required"]["upscale_method"][0]
            assert upscale == methods if methods else len(upscale) > 1, upscale
            async with http.get(base + "/models/checkpoints") as response:
                assert await response.json() == models
        status, answer = await post_prompt(http, multi.target_url(0), {"prompt": workflow("canary_preview_image")})
        assert status == 400 and answer["error"]["type"] == "invalid_prompt", answer
        await multi.deploy(0, reset=True)
        async with http.get(multi.target_url(0) + "/object_info") as response:
            assert "PreviewImage" in await response.json()
        async with http.get(multi.target_url(0) + "/models/checkpoints") as response:
            assert await response.json() == []


async def test_the_start_up_log_names_the_packs_a_deploy_broke(http: aiohttp.ClientSession) -> None:
    """/internal/logs/raw answers the recorded start-up log, with each broken pack's traceback, "Cannot import"
    line and failed row; like ComfyUI's internal routes it has no /api duplicate."""
    async with await start_sim(targets=1) as multi:
        await multi.deploy(0, broken={"broken_pack": "No module named 'x'"})
        async with http.get(multi.target_url(0) + "/internal/logs/raw") as response:
            log = await response.json()
        async with http.get(multi.target_url(0) + "/api/internal/logs/raw") as response:
            assert response.status == 404
        messages = [entry["m"] for entry in log["entries"]]
        assert "Cannot import /opt/ComfyUI/custom_nodes/broken_pack module for custom nodes: No module named 'x'\n" \
            in messages
        assert "   0.0 seconds (IMPORT FAILED): /opt/ComfyUI/custom_nodes/broken_pack\n" in messages
        assert messages.index("   0.0 seconds: /opt/ComfyUI/custom_nodes/websocket_image_save.py\n") \
            < messages.index("   0.0 seconds (IMPORT FAILED): /opt/ComfyUI/custom_nodes/broken_pack\n")
        async with http.get(multi.url + "/internal/logs/raw") as response:
            untouched = [entry["m"] for entry in (await response.json())["entries"]]
        assert not any("broken_pack" in m for m in untouched)
