"""A canary whose server echoes the target's credentials in its events keeps them masked.

The failure detail of a canary run (node and exception type of ComfyUI's ``execution_error``) is shown on the
status page, which is not scrubbed on output: the run masks what its target was sent, as the HTTP client does for
answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from comfywatch.checks.canary import CanaryRunner
from comfywatch.clients.http import HttpResult
from comfywatch.errors import Reason
from comfywatch.parse.history import HistoryEntry
from comfywatch.parse.prompt import PromptAccepted
from comfywatch.redact import MASK, secret_forms
from comfywatch.workflows import load_workflow

pytestmark = pytest.mark.asyncio

PASSWORD = "S3cret/Pass+w0rd"
PROMPT_ID = "p-echo"


class EchoingServer:
    """A ComfyUI stand-in: its ``/ws`` sends a status frame, and once the prompt is submitted, an
    ``execution_error`` whose node and exception types carry the password. Implements the canary's API."""

    takes_prompt_id = False

    def __init__(self) -> None:
        self.submitted = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def secret_forms(self) -> tuple[str, ...]:
        return secret_forms([PASSWORD])

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}))
        await self.submitted.wait()
        await ws.send_str(json.dumps({"type": "execution_start", "data": {"prompt_id": PROMPT_ID}}))
        await ws.send_str(json.dumps({"type": "execution_error", "data": {
            "prompt_id": PROMPT_ID, "node_id": "1", "node_type": f"Loader {PASSWORD}",
            "exception_type": f"ValueError {PASSWORD}", "exception_message": "bad", "traceback": []}}))
        await ws.receive()  # until the canary closes
        return ws

    def ws_url(self, client_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}"

    def ws_headers(self) -> dict[str, str]:
        return {}

    async def busy(self) -> tuple[int, int]:
        return 0, 0

    async def submit(self, prompt: Mapping[str, Any], client_id: str, *, prompt_id: str | None = None,
                     timeout: float | None = None) -> PromptAccepted:
        self.submitted.set()
        return PromptAccepted(prompt_id=PROMPT_ID, number=1, node_errors={})

    async def history_entry(self, prompt_id: str, *, timeout: float | None = None) -> HistoryEntry | None:
        return None

    async def in_flight(self, prompt_id: str) -> bool:
        return True

    async def view(self, filename: str, subfolder: str, kind: str) -> HttpResult:
        raise AssertionError("a failed run fetches no output")

    async def cancel_own(self, prompt_id: str) -> None:
        return None

    async def delete_history(self, prompt_ids: Sequence[str]) -> None:
        return None


@pytest_asyncio.fixture
async def server() -> AsyncIterator[EchoingServer]:
    served = EchoingServer()
    await served.start()
    try:
        yield served
    finally:
        await served.close()


async def test_a_failed_runs_detail_masks_what_its_server_echoes(server: EchoingServer) -> None:
    """The node and exception type are kept around the mask; the password appears in no form."""
    runner = CanaryRunner(server, load_workflow("builtin:preview-image", "echo"), timeout=10, when_busy="queue")
    result = await runner.run()
    assert result.reason is Reason.EXECUTION_ERROR, result
    assert result.detail == f"Loader {MASK}: ValueError {MASK}"
    for form in server.secret_forms:
        assert form not in json.dumps(result.as_dict())
