"""HTTP fidelity of the simulated ComfyUI against the responses recorded from a real 0.3.64."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import aiohttp
import pytest

from comfywatch.sim import SimHandle, start_sim
from comfywatch.sim.local.files import EAGER_PNG_PIXELS
from comfywatch.sim.png import encode_solid_png
from tests.fixtures import FIXTURES, load_json
from tests.sim.conftest import (
    assert_headers_like,
    eventually,
    history_entry,
    manifest,
    manifest_entry,
    only_value,
    post_prompt,
    shape,
    workflow,
)

# Recorded requests whose answer does not depend on server state: replayed verbatim, compared byte for byte.
_STATELESS_FILES = [
    "queue_idle.json",
    "prompt_get_idle.json",
    "features.json",
    "embeddings.json",
    "extensions.json",
    "models.json",
    "models_checkpoints.json",
    "models_unknown_folder_404.txt",
    "object_info_EmptyImage.json",
    "object_info_PreviewImage.json",
    "object_info_SaveImage.json",
    "object_info_ImageScale.json",
    "object_info_PrimitiveString.json",
    "object_info_PreviewAny.json",
    "object_info_SaveImageWebsocket.json",
    "object_info_RegexReplace.json",
    "object_info_CheckpointLoaderSimple.json",
    "object_info_EmptyLatentImage.json",
    "object_info_unknown_class.json",
    "history_empty.json",
    "history_unknown_id.json",
    "prompt_error_unknown_node.json",
    "prompt_error_missing_input.json",
    "prompt_error_missing_model.json",
    "prompt_error_empty_prompt.json",
    "prompt_error_no_prompt_key.json",
    "prompt_error_missing_class_type.json",
    "prompt_error_value_below_min.json",
    "prompt_error_invalid_input_type.json",
    "prompt_error_value_not_in_list.json",
    "prompt_error_return_type_mismatch.json",
    "prompt_error_bad_linked_input.json",
    "prompt_error_link_to_missing_node.json",
    "prompt_error_no_output_node.json",
    "prompt_error_not_json.txt",
    "prompt_error_prompt_is_string.txt",
    "prompt_error_prompt_is_list.txt",
    "prompt_error_body_is_list.txt",
    "origin_mismatch_prompt_403.txt",
    "origin_mismatch_get_403.txt",
    "view_not_found_404.txt",
    "view_traversal_400.txt",
    "view_no_params_404.txt",
    "view_bad_type_400.txt",
    "history_bad_max_items_500.txt",
    "queue_post_no_body_500.txt",
    "free_ok.txt",
    "free_no_body_500.txt",
    "interrupt_idle_no_body.txt",
]


async def _replay(
    http: aiohttp.ClientSession, base: str, entry: dict[str, Any]
) -> tuple[aiohttp.ClientResponse, bytes]:
    body = entry["request_body"]
    data: bytes | None = None
    if isinstance(body, str):
        data = body.encode()
    elif body is not None:
        data = json.dumps(body).encode()
    headers = dict(entry["request_headers"] or {})
    if "Origin" in headers:
        # The recording's Host was 127.0.0.1:8188; keep the same mismatch against the sim's real port.
        headers["Origin"] = "http://evil.example.com"
    async with http.request(entry["method"], base + entry["path"], data=data, headers=headers) as response:
        return response, await response.read()


@pytest.mark.parametrize("file", _STATELESS_FILES)
async def test_stateless_responses_match_recording(sim: SimHandle, http: aiohttp.ClientSession, file: str) -> None:
    """Replaying a recorded stateless request gives the same status, headers and exact body bytes."""
    entry = manifest_entry(file)
    response, body = await _replay(http, sim.url, entry)
    assert_headers_like(response, entry)
    assert body == (FIXTURES / file).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/api/internal/logs",
        "/metrics",
        "/api/metrics",
        "/providers",
        "/api/providers",
        "/api/jobs",
        "/jobs",
        "/health",
    ],
)
async def test_unknown_routes_get_static_404(sim: SimHandle, http: aiohttp.ClientSession, path: str) -> None:
    """Unknown paths answer like ComfyUI's catch-all static route: 404 octet-stream, chunked, empty."""
    entry = next(e for e in manifest() if e["path"] == path)
    async with http.get(sim.url + path) as response:
        assert_headers_like(response, entry)
        assert await response.read() == b""


async def test_wrong_method_is_405_with_allow(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """A route hit with an unsupported method answers aiohttp's 405 with the allowed methods."""
    async with http.delete(sim.url + "/queue") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET,HEAD,POST"
        assert await response.text() == "405: Method Not Allowed"
    async with http.post(sim.url + "/metrics") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET,HEAD"


async def test_system_stats_shape_and_api_prefix(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """/system_stats and /api/system_stats have the recorded keys and value types."""
    for path, file in (
        ("/system_stats", "system_stats.json"),
        ("/api/system_stats", "system_stats_api_prefix.json"),
    ):
        async with http.get(sim.url + path) as response:
            assert_headers_like(response, manifest_entry(file))
            body = await response.json()
        assert shape(body) == shape(load_json(file))
        assert body["system"]["comfyui_version"] == "0.3.64"


async def test_object_info_serves_supported_classes(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """GET /object_info holds the supported classes exactly as the full recorded catalogue has them."""
    async with http.get(sim.url + "/api/object_info") as response:
        served = await response.json()
    recorded = load_json("object_info.json")
    assert {"EmptyImage", "PreviewImage", "SaveImageWebsocket", "RegexReplace"} <= set(served)
    for name, info in served.items():
        assert info == recorded[name]


@pytest.mark.parametrize(
    ("name", "ok_file", "history_file"),
    [
        ("canary_preview_image", "prompt_ok_canary_preview.json", "history_success_preview.json"),
        ("canary_text_preview_any", "prompt_ok_canary_text.json", "history_success_text.json"),
        ("canary_save_image_output", "prompt_ok_canary_save.json", "history_success_save.json"),
        ("canary_save_image_websocket", "prompt_ok_canary_wsimage.json", "history_success_wsimage.json"),
        ("runtime_error_regex", "prompt_ok_runtime_error_accepted.json", "history_error_runtime.json"),
    ],
)
async def test_prompt_and_history_shapes(
    sim: SimHandle, http: aiohttp.ClientSession, name: str, ok_file: str, history_file: str
) -> None:
    """POST /prompt and the finished /history/{id} entry have the recorded keys and value types."""
    status, answer = await post_prompt(http, sim.url, {"prompt": workflow(name), "client_id": "cw"})
    assert status == 200
    assert shape(answer) == shape(load_json(ok_file))
    await eventually(lambda: answer["prompt_id"] in sim.state()["history"])
    async with http.get(f"{sim.url}/history/{answer['prompt_id']}") as response:
        assert_headers_like(response, manifest_entry(history_file))
        entry = only_value(await response.json())
    assert shape(entry) == shape(only_value(load_json(history_file)))


async def test_cached_canary_matches_recording(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """An identical prompt runs from cache: all nodes in execution_cached, same outputs and shape."""
    body = {"prompt": workflow("canary_preview_image"), "client_id": "cw"}
    first = (await post_prompt(http, sim.url, body))[1]["prompt_id"]
    await eventually(lambda: first in sim.state()["history"])
    second = (await post_prompt(http, sim.url, body))[1]["prompt_id"]
    await eventually(lambda: second in sim.state()["history"])
    entry = await history_entry(http, sim.url, second)
    assert shape(entry) == shape(only_value(load_json("history_success_preview_cached.json")))
    assert entry["status"]["messages"][1] == [
        "execution_cached",
        {**entry["status"]["messages"][1][1], "nodes": ["1", "2"]},
    ]
    assert entry["outputs"] == (await history_entry(http, sim.url, first))["outputs"]


def _png_pixels(png: bytes) -> tuple[int, int, bytes]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    idat, offset = b"", 8
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        if png[offset + 4 : offset + 8] == b"IDAT":
            idat += png[offset + 8 : offset + 8 + length]
        offset += 12 + length
    return width, height, zlib.decompress(idat)


async def test_preview_writes_real_temp_png(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """PreviewImage writes a real PNG of the requested size and colour to temp/, served by /view."""
    _, answer = await post_prompt(http, sim.url, {"prompt": workflow("canary_preview_image")})
    await eventually(lambda: answer["prompt_id"] in sim.state()["history"])
    image = (await history_entry(http, sim.url, answer["prompt_id"]))["outputs"]["2"]["images"][0]
    assert image["type"] == "temp" and image["filename"].startswith("ComfyUI_temp_")
    assert image["filename"].endswith("_00001_.png")
    params = {"filename": image["filename"], "subfolder": "", "type": "temp"}
    async with http.get(sim.url + "/view", params=params) as response:
        assert_headers_like(response, manifest_entry("view_canary_preview.png"))
        assert response.headers["Content-Disposition"] == f'filename="{image["filename"]}"'
        png = await response.read()
    width, height, pixels = _png_pixels(png)
    assert (width, height) == (64, 64)
    assert pixels[1:4] == (1056816).to_bytes(3, "big")  # color input of the canary, as 0xRRGGBB
    assert b"tEXtprompt" in png
    state = sim.state()
    assert state["output_files"] == [] and state["output_writes"] == 0


@pytest.mark.parametrize("side", [64, 1024])
async def test_view_serves_the_same_png_whether_encoded_at_save_or_at_view(
    sim: SimHandle, http: aiohttp.ClientSession, side: int
) -> None:
    """Small previews are encoded while the node runs (as ComfyUI does), large ones when viewed: the bytes
    served are the same encoding either way."""
    prompt = workflow("canary_preview_image")
    prompt["1"]["inputs"].update(width=side, height=side)
    _, answer = await post_prompt(http, sim.url, {"prompt": prompt})
    await eventually(lambda: answer["prompt_id"] in sim.state()["history"])
    image = (await history_entry(http, sim.url, answer["prompt_id"]))["outputs"]["2"]["images"][0]
    params = {"filename": image["filename"], "subfolder": "", "type": "temp"}
    async with http.get(sim.url + "/view", params=params) as response:
        png = await response.read()
    text = {"prompt": json.dumps(prompt)}
    assert png == encode_solid_png(side, side, prompt["1"]["inputs"]["color"], text=text)
    stored = next(iter(sim.cluster.server().temp.files.values()))
    assert (stored.encoded is not None) == (side * side <= EAGER_PNG_PIXELS)


async def test_non_latin1_pnginfo_key_fails_the_node_and_the_worker_goes_on(
    sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    """A tEXt key PIL cannot encode fails the saving node with execution_error, as in ComfyUI; the next
    prompt still runs (the sim's worker once died on it, leaving the prompt running for ever)."""
    body = {"prompt": workflow("canary_preview_image"), "extra_data": {"extra_pnginfo": {"工作流": {"a": 1}}}}
    _, failed = await post_prompt(http, sim.url, body)
    await eventually(lambda: failed["prompt_id"] in sim.state()["history"])
    entry = await history_entry(http, sim.url, failed["prompt_id"])
    errors = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
    assert entry["status"]["status_str"] == "error"
    assert errors and errors[0]["exception_type"] == "UnicodeEncodeError"
    assert errors[0]["node_type"] == "PreviewImage"
    _, answer = await post_prompt(http, sim.url, {"prompt": workflow("canary_preview_image")})
    await eventually(lambda: answer["prompt_id"] in sim.state()["history"])
    assert (await history_entry(http, sim.url, answer["prompt_id"]))["status"]["status_str"] == "success"


async def test_save_image_writes_output(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """SaveImage records its file in the output folder (scaled to 32x32), unlike the preview canary."""
    _, answer = await post_prompt(http, sim.url, {"prompt": workflow("canary_save_image_output")})
    await eventually(lambda: answer["prompt_id"] in sim.state()["history"])
    assert sim.state()["output_files"] == ["comfywatch_canary_00001_.png"]
    params = {"filename": "comfywatch_canary_00001_.png", "type": "output"}
    async with http.get(sim.url + "/view", params=params) as response:
        assert response.status == 200
        width, height, _ = _png_pixels(await response.read())
    assert (width, height) == (32, 32)


async def test_view_subfolder_escape_is_403(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """A subfolder climbing out of the folder is refused with 403 and no body."""
    async with http.get(sim.url + "/view", params={"filename": "x.png", "subfolder": "../..", "type": "temp"}) as r:
        assert r.status == 403
        assert await r.read() == b""


async def test_runtime_error_details(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """RegexReplace with "(" fails at run time with Python's re.error, like the recording."""
    _, answer = await post_prompt(http, sim.url, {"prompt": workflow("runtime_error_regex")})
    await eventually(lambda: answer["prompt_id"] in sim.state()["history"])
    entry = await history_entry(http, sim.url, answer["prompt_id"])
    error = entry["status"]["messages"][-1][1]
    recorded = only_value(load_json("history_error_runtime.json"))["status"]["messages"][-1][1]
    for key in ("node_id", "node_type", "executed", "exception_message", "exception_type", "current_inputs"):
        assert error[key] == recorded[key], key
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False


async def test_partial_prompt_runs_valid_outputs(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """A prompt with one valid output is accepted with node_errors for the other, which never runs."""
    entry = manifest_entry("prompt_ok_partial_with_node_errors.json")
    status, answer = await post_prompt(http, sim.url, entry["request_body"])
    assert status == 200
    recorded = load_json("prompt_ok_partial_with_node_errors.json")
    assert answer["node_errors"] == recorded["node_errors"]
    await eventually(lambda: answer["prompt_id"] in sim.state()["history"])
    history = await history_entry(http, sim.url, answer["prompt_id"])
    assert shape(history) == shape(only_value(load_json("history_partial_with_node_errors.json")))
    assert history["prompt"][4] == ["2"]


async def test_number_counter_explicit_and_front(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """number counts every post (even rejected ones); an explicit number comes back a float, front negates."""
    text = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "n"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    assert (await post_prompt(http, sim.url, {"prompt": text}))[1]["number"] == 0
    assert (await post_prompt(http, sim.url, {}))[0] == 400
    assert (await post_prompt(http, sim.url, {"prompt": text, "number": 5}))[1]["number"] == 5.0
    async with http.post(sim.url + "/prompt", json={"prompt": text, "number": 5}) as response:
        assert b'"number": 5.0' in await response.read()
    assert (await post_prompt(http, sim.url, {"prompt": text, "front": True}))[1]["number"] == -2
    assert (await post_prompt(http, sim.url, {"prompt": text, "prompt_id": "comfywatch-canary-0001"}))[1][
        "prompt_id"
    ] == "comfywatch-canary-0001"


async def test_sensitive_extra_data_stripped_from_history_only(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """api_key_comfy_org stays in the queued extra_data (0.3.64) but never reaches history."""
    async with await start_sim(faults=["worker_dead"]) as stuck:
        body = {
            "prompt": workflow("canary_text_preview_any"),
            "client_id": "c",
            "extra_data": {"comfywatch": {"canary": "preview"}, "api_key_comfy_org": "secret-key"},
        }
        _, answer = await post_prompt(http, stuck.url, body)
        async with http.get(stuck.url + "/queue") as response:
            queued = (await response.json())["queue_pending"][0]
        assert queued[3] == {
            "comfywatch": {"canary": "preview"},
            "api_key_comfy_org": "secret-key",
            "client_id": "c",
        }
        await stuck.set_faults([])
        await eventually(lambda: answer["prompt_id"] in stuck.state()["history"])
        entry = await history_entry(http, stuck.url, answer["prompt_id"])
    assert entry["prompt"][3] == {"comfywatch": {"canary": "preview"}, "client_id": "c"}
    assert shape(entry) == shape(only_value(load_json("history_extra_data_sensitive_stripped.json")))


async def _slow_prompt(http: aiohttp.ClientSession, base: str, exec_ms: int = 60000, **extra: Any) -> str:
    _, answer = await post_prompt(http, base, {"prompt": workflow("slow_cpu_6s"), "sim_exec_ms": exec_ms, **extra})
    return str(answer["prompt_id"])


async def test_queue_operations_match_recording(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """Busy queue shape, delete by id list, the bool form's 500, running delete no-op, and clear."""
    running = await _slow_prompt(http, sim.url, client_id="c")
    pending_b = await _slow_prompt(http, sim.url, client_id="c")
    text = {
        **workflow("canary_text_preview_any"),
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "after"}},
    }
    pending_c = (await post_prompt(http, sim.url, {"prompt": text, "client_id": "c"}))[1]["prompt_id"]
    await eventually(lambda: sim.state()["queue_running"] == [running])
    async with http.get(sim.url + "/queue") as response:
        assert_headers_like(response, manifest_entry("queue_busy.json"))
        busy = await response.json()
    assert shape(busy) == shape(load_json("queue_busy.json"))
    async with http.get(sim.url + "/prompt") as response:
        assert await response.json() == load_json("prompt_get_busy.json")
    for file, body in (
        ("queue_delete_ok.txt", {"delete": [pending_b]}),
        ("queue_delete_seed_claim_form.txt", {"prompt_id": pending_c, "delete": True}),
        ("queue_delete_running_noop.txt", {"delete": [running]}),
    ):
        async with http.post(sim.url + "/queue", json=body) as response:
            assert_headers_like(response, manifest_entry(file))
            assert await response.read() == (FIXTURES / file).read_bytes()
    assert sim.state()["queue_pending"] == [pending_c] and sim.state()["queue_running"] == [running]
    async with http.post(sim.url + "/queue", json={"clear": True}) as response:
        assert response.status == 200
    async with http.get(sim.url + "/queue") as response:
        assert shape(await response.json()) == shape(load_json("queue_after_clear.json"))
    assert pending_b not in sim.state()["history"]


async def test_interrupt_targeted_global_and_other(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """Targeted interrupt acts only on the running id; the result looks like history_interrupted.json."""
    running = await _slow_prompt(http, sim.url, client_id="c")
    await eventually(lambda: sim.state()["queue_running"] == [running])
    async with http.post(sim.url + "/interrupt", json={"prompt_id": "not-the-running-one"}) as response:
        assert_headers_like(response, manifest_entry("interrupt_other_prompt_id.txt"))
    async with http.get(f"{sim.url}/history/{running}") as response:
        assert await response.json() == load_json("history_while_running.json")
    async with http.post(sim.url + "/interrupt", json={"prompt_id": running}) as response:
        assert_headers_like(response, manifest_entry("interrupt_targeted.txt"))
    await eventually(lambda: running in sim.state()["history"])
    entry = await history_entry(http, sim.url, running)
    assert shape(entry) == shape(only_value(load_json("history_interrupted.json")))
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    second = await _slow_prompt(http, sim.url)
    await eventually(lambda: sim.state()["queue_running"] == [second])
    async with http.post(sim.url + "/interrupt", json={}) as response:
        assert_headers_like(response, manifest_entry("interrupt_global.txt"))
    await eventually(lambda: second in sim.state()["history"])
    assert sim.state()["jobs_interrupted"] == 2


async def test_history_paging_delete_and_clear(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """max_items gives the newest N, offset pages from the oldest; POST /history deletes and clears."""
    ids = []
    for value in ("a", "b", "c"):
        body = {
            "prompt": {
                **workflow("canary_text_preview_any"),
                "1": {"class_type": "PrimitiveString", "inputs": {"value": value}},
            }
        }
        ids.append((await post_prompt(http, sim.url, body))[1]["prompt_id"])
    await eventually(lambda: len(sim.state()["history"]) == 3)
    async with http.get(sim.url + "/history", params={"max_items": "2"}) as response:
        assert list(await response.json()) == ids[1:]
    async with http.get(sim.url + "/api/history", params={"max_items": "1", "offset": "0"}) as response:
        assert list(await response.json()) == ids[:1]
    async with http.post(sim.url + "/history", json={"delete": [ids[0]]}) as response:
        assert_headers_like(response, manifest_entry("history_delete_ok.txt"))
    async with http.get(f"{sim.url}/history/{ids[0]}") as response:
        assert await response.json() == load_json("history_after_delete.json")
    async with http.post(sim.url + "/history", json={"clear": True}) as response:
        assert_headers_like(response, manifest_entry("history_clear_ok.txt"))
    async with http.get(sim.url + "/history") as response:
        assert await response.json() == load_json("history_after_clear.json")


async def test_history_is_capped(http: aiohttp.ClientSession) -> None:
    """History keeps at most history_max entries (10000 by default), dropping the oldest."""
    async with await start_sim(history_max=2) as small:
        ids = []
        for value in ("a", "b", "c"):
            body = {
                "prompt": {
                    **workflow("canary_text_preview_any"),
                    "1": {"class_type": "PrimitiveString", "inputs": {"value": value}},
                }
            }
            ids.append((await post_prompt(http, small.url, body))[1]["prompt_id"])
            await eventually(lambda: ids[-1] in small.state()["history"])
        assert small.state()["history"] == ids[1:]


async def test_origin_check(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """A foreign Origin on a loopback Host is refused with an empty 403; a matching one passes."""
    port = sim.url.rsplit(":", 1)[1]
    async with http.get(sim.url + "/queue", headers={"Origin": f"http://127.0.0.1:{port}"}) as response:
        assert response.status == 200
    async with http.get(sim.url + "/queue", headers={"Origin": "http://localhost"}) as response:
        assert response.status == 403
    async with http.get(sim.url + "/queue", headers={"Origin": "http://127.0.0.1"}) as response:
        assert response.status == 200  # no port on the Origin: compared by host name only
    async with http.get(
        sim.url + "/queue", headers={"Origin": "http://evil.example.com", "Host": "comfy.lan:8188"}
    ) as r:
        assert r.status == 200  # the check only guards loopback hosts


async def test_jobs_api_optional(http: aiohttp.ClientSession) -> None:
    """jobs_api=True serves /api/jobs (list + pagination) and /api/jobs/{id} with the newer job fields."""
    async with await start_sim(jobs_api=True, faults=["worker_dead"]) as sim:
        _, pending = await post_prompt(http, sim.url, {"prompt": workflow("canary_text_preview_any")})
        async with http.get(sim.url + "/api/jobs") as response:
            listing = await response.json()
        assert listing["pagination"] == {"offset": 0, "limit": None, "total": 1, "has_more": False}
        job = listing["jobs"][0]
        assert job["status"] == "pending" and isinstance(job["create_time"], int)
        await sim.set_faults([])
        await eventually(lambda: pending["prompt_id"] in sim.state()["history"])
        _, failed = await post_prompt(http, sim.url, {"prompt": workflow("runtime_error_regex")})
        await eventually(lambda: failed["prompt_id"] in sim.state()["history"])
        async with http.get(sim.url + "/api/jobs", params={"status": "failed,completed", "limit": "1"}) as response:
            page = await response.json()
        assert page["pagination"] == {"offset": 0, "limit": 1, "total": 2, "has_more": True}
        async with http.get(f"{sim.url}/api/jobs/{failed['prompt_id']}") as response:
            detail = await response.json()
        assert detail["status"] == "failed"
        assert detail["execution_error"]["exception_type"] == "re.error"
        assert detail["execution_end_time"] >= detail["execution_start_time"] >= detail["create_time"]
        async with http.get(sim.url + "/api/jobs/nope") as response:
            assert response.status == 404
        async with http.get(sim.url + "/api/jobs", params={"status": "bogus"}) as response:
            assert response.status == 400


async def test_interrupt_with_list_body_is_500(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    """POST /interrupt with a JSON list crashes the real handler (.get on a list): 500 text/plain."""
    async with http.post(sim.url + "/interrupt", json=[1]) as response:
        assert response.status == 500
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
