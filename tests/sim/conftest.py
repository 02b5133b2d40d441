"""Fixtures and helpers for the simulated-ComfyUI fidelity tests: a running sim, an HTTP session, and
comparisons of live responses and WebSocket streams with the recorded ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from comfywatch.sim import SimHandle, start_sim
from tests.fixtures import FIXTURES, load_json, load_jsonl

TIMEOUT = 10.0


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    """A simulated ComfyUI with default options on ephemeral ports."""
    async with await start_sim() as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client session."""
    async with aiohttp.ClientSession() as session:
        yield session


def workflow(name: str) -> dict[str, Any]:
    """One of the recorded API-format workflows (``workflows/<name>.json``)."""
    data: dict[str, Any] = json.loads((FIXTURES / "workflows" / f"{name}.json").read_text(encoding="utf-8"))
    return data


def manifest() -> list[dict[str, Any]]:
    """Every recorded request with its status and headers."""
    entries: list[dict[str, Any]] = load_json("manifest.json")
    return entries


def manifest_entry(file: str) -> dict[str, Any]:
    """The manifest entry that produced ``file``."""
    return next(e for e in manifest() if e["file"] == file)


def shape(value: Any) -> Any:
    """Keys and value types, recursively; lists become the set of their element shapes."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return ["list", sorted({json.dumps(shape(item), sort_keys=True) for item in value})]
    return type(value).__name__


def only_value(mapping: dict[str, Any]) -> Any:
    """The value of a one-entry mapping keyed by a prompt id."""
    assert len(mapping) == 1, mapping
    return next(iter(mapping.values()))


def assert_headers_like(response: aiohttp.ClientResponse, entry: dict[str, Any]) -> None:
    """Status, content type, framing (length vs chunked) and ``Connection: close`` as recorded."""
    assert response.status == entry["status"]
    assert response.headers.get("Content-Type") == entry["content_type"]
    recorded = entry["response_headers"]
    assert ("Content-Length" in response.headers) == ("Content-Length" in recorded)
    assert response.headers.get("Transfer-Encoding") == recorded.get("Transfer-Encoding")
    assert response.headers.get("Connection") == recorded.get("Connection")


def recorded_frames(name: str) -> list[dict[str, Any]]:
    """A recorded WebSocket session."""
    return load_jsonl(name)


def signature(frame: dict[str, Any]) -> tuple[Any, ...]:
    """What must match between a recorded and a live frame: type and data shape, or the binary event."""
    if frame["kind"] == "binary":
        return ("binary", frame["event_type"])
    return ("text", frame["msg"]["type"], json.dumps(shape(frame["msg"]["data"]), sort_keys=True))


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next frame as the recordings describe it (``kind`` + ``msg`` or ``event_type``/``data``)."""
    message = await ws.receive(timeout=timeout)
    if message.type == aiohttp.WSMsgType.TEXT:
        return {"kind": "text", "msg": json.loads(message.data)}
    if message.type == aiohttp.WSMsgType.BINARY:
        data: bytes = message.data
        return {"kind": "binary", "event_type": int.from_bytes(data[:4], "big"), "data": data}
    raise AssertionError(f"unexpected WebSocket message {message.type}")


def is_end(frame: dict[str, Any], prompt_id: str) -> bool:
    """The end-of-prompt marker: ``executing`` with ``node: null``."""
    msg = frame.get("msg") or {}
    data = msg.get("data") or {}
    return msg.get("type") == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id


async def frames_until_end(ws: aiohttp.ClientWebSocketResponse, prompt_id: str) -> list[dict[str, Any]]:
    """Every frame up to and including the end marker of ``prompt_id``."""
    frames = []
    while True:
        frame = await receive(ws)
        frames.append(frame)
        if is_end(frame, prompt_id):
            return frames


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` until it holds, failing after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def post_prompt(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """POST /prompt and decode the JSON answer."""
    async with http.post(f"{base}/prompt", json=body) as response:
        return response.status, await response.json()


async def run_to_end(
    http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, base: str, body: dict[str, Any]
) -> tuple[str, list[dict[str, Any]]]:
    """Post a prompt and collect its frames on ``ws`` until the end marker."""
    status, answer = await post_prompt(http, base, body)
    assert status == 200, answer
    return answer["prompt_id"], await frames_until_end(ws, answer["prompt_id"])


async def history_entry(http: aiohttp.ClientSession, base: str, prompt_id: str) -> dict[str, Any]:
    """``GET /history/{id}`` unwrapped."""
    async with http.get(f"{base}/history/{prompt_id}") as response:
        return only_value(await response.json())  # type: ignore[no-any-return]


async def assert_silent(ws: aiohttp.ClientWebSocketResponse, barrier: Awaitable[Any]) -> None:
    """``ws`` receives nothing while ``barrier`` (frames reaching another, registered socket) completes."""
    await barrier
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.05)
