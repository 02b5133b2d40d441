"""ComfyUI's local REST API over the pooled :class:`HttpClient` (routes: docs/architecture.md, "Facts about ComfyUI").

Routes are called under ``/api/`` (ComfyUI 0.3.x serves every route there too, and reverse proxies are often
configured to forward only ``/api``); a server answering 404 there is retried once without the prefix and
remembered, so older servers keep working.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from comfywatch.basic_auth import basic_auth_header
from comfywatch.clients.http import HttpClient, HttpResult, RequestFailed
from comfywatch.errors import Reason
from comfywatch.parse.history import HistoryEntry, parse_history, parse_history_entry
from comfywatch.parse.jobs import JobsPage, parse_jobs
from comfywatch.parse.models import parse_model_files, parse_model_folders
from comfywatch.parse.prompt import PromptAccepted, parse_prompt_accepted
from comfywatch.parse.queue import QueueSnapshot, parse_queue
from comfywatch.parse.serverlog import ServerLog, parse_server_log
from comfywatch.parse.shape import as_map
from comfywatch.parse.system import SystemStats, parse_system_stats

__all__ = ["SERVER_LOG_MAX_BODY", "SYSTEM_STATS_MAX_BODY", "LocalApi"]

#: Cap on a ``/system_stats`` answer, below the target's ``max_body_size``: a real one is about 1.3 KB and 64
#: devices (all that is kept of them) about 15 KB: a mebibyte leaves room to spare, and a larger answer is
#: refused before it is decoded. Decoding runs on the event loop, where a 16 MB answer (100,000 devices) costs
#: every other target half a second.
SYSTEM_STATS_MAX_BODY = 2**20
#: Cap on ``/internal/logs/raw``: ComfyUI keeps its last few hundred log messages (tens of kilobytes; a long
#: traceback each at most), so a few megabytes means a log not worth decoding.
SERVER_LOG_MAX_BODY = 4 * 2**20


def _json_object(body: Any) -> dict[str, Any]:
    as_map(body, "$")  # a ParseError unless it is an object: the catalogue itself is not copied
    return cast(dict[str, Any], body)


class LocalApi:
    """Typed calls to one ComfyUI server. Every method raises :class:`RequestFailed` on failure."""

    def __init__(self, http: HttpClient, *, api_prefix: str = "/api") -> None:
        self.http = http
        self.prefix = api_prefix

    async def close(self) -> None:
        await self.http.close()

    async def _get(
        self, route: str, endpoint: str, parser: Any, params: Mapping[str, str] | None = None,
        *, record_phases: bool = False, timeout: float | None = None, max_body: int | None = None,
        polled: bool = False,
    ) -> tuple[Any, HttpResult]:
        """GET *route* (under the prefix); *polled*: a fixed route the polls request (its URL is kept)."""
        try:
            return await self.http.get_json(
                self.prefix + route, endpoint=endpoint, parser=parser, params=params,
                record_phases=record_phases, timeout=timeout, max_body=max_body, keep_url=polled,
            )
        except RequestFailed as failed:
            if failed.failure.reason is Reason.NOT_FOUND and self.prefix and endpoint == "system_stats":
                # An old server (or a proxy) without the /api duplication: fall back to bare routes.
                self.prefix = ""
                return await self.http.get_json(
                    route, endpoint=endpoint, parser=parser, params=params,
                    record_phases=record_phases, timeout=timeout, max_body=max_body, keep_url=polled,
                )
            raise

    async def system_stats(self, *, record_phases: bool = True) -> tuple[SystemStats, HttpResult]:
        return await self._get("/system_stats", "system_stats", parse_system_stats, record_phases=record_phases,
                               max_body=SYSTEM_STATS_MAX_BODY, polled=True)

    async def queue(self) -> QueueSnapshot:
        snapshot, _ = await self._get("/queue", "queue", parse_queue, polled=True)
        return snapshot  # type: ignore[no-any-return]

    async def queue_and_clock(self) -> tuple[QueueSnapshot, float | None]:
        """The queue plus the server's clock offset (server minus local, seconds) from its Date header."""
        snapshot, result = await self._get("/queue", "queue", parse_queue, polled=True)
        return snapshot, clock_offset(result.headers.get("Date"))

    async def history(self, max_items: int) -> list[HistoryEntry]:
        entries, _ = await self._get("/history", "history", parse_history, {"max_items": str(max_items)},
                                     polled=True)
        return entries  # type: ignore[no-any-return]

    async def history_entry(self, prompt_id: str, *, timeout: float | None = None) -> HistoryEntry | None:
        """The finished entry, or ``None`` while it is unknown, queued or running (ComfyUI answers ``{}``)."""

        def parse(body: Any) -> HistoryEntry | None:
            root = as_map(body, "$")
            if prompt_id not in root:
                return None
            return parse_history_entry(prompt_id, root[prompt_id], "$")

        entry, _ = await self._get(f"/history/{prompt_id}", "history", parse, timeout=timeout)
        return entry  # type: ignore[no-any-return]

    async def in_flight(self, prompt_id: str) -> bool:
        """True while *prompt_id* is running or pending (the canary's "lost" check), or may be: among the entries
        of a queue too long to read whole."""
        snapshot = await self.queue()
        return (snapshot.running_unread > 0 or snapshot.pending_unread > 0
                or any(i.prompt_id == prompt_id for i in (*snapshot.running, *snapshot.pending)))

    async def cancel_own(self, prompt_id: str) -> None:
        """Cancel only *prompt_id*: delete it if pending, targeted interrupt if running."""
        snapshot = await self.queue()
        if any(i.prompt_id == prompt_id for i in snapshot.running):
            await self.interrupt(prompt_id)
        elif snapshot.pending_unread > 0 or any(i.prompt_id == prompt_id for i in snapshot.pending):
            # Among unread entries it may be pending: deleting an id the queue does not hold changes nothing.
            await self.delete_pending([prompt_id])

    async def busy(self) -> tuple[int, int]:
        """(running, pending) right now."""
        snapshot = await self.queue()
        return snapshot.running_count, snapshot.pending_count

    async def jobs(self, limit: int) -> JobsPage:
        # No sort_by: local ComfyUI answers 400 to anything but "created_at"/"execution_duration" (Comfy
        # Cloud spells it "create_time"), and its default is already newest-created first.
        params = {"limit": str(limit), "sort_order": "desc"}
        page, _ = await self._get("/jobs", "jobs", parse_jobs, params, polled=True)
        return page  # type: ignore[no-any-return]

    async def submit(
        self, prompt: Mapping[str, Any], client_id: str, *, prompt_id: str | None = None,
        extra: Mapping[str, Any] | None = None, timeout: float | None = None,
    ) -> PromptAccepted:
        """POST /prompt. A 400 raises RequestFailed whose ``body`` holds ComfyUI's node_errors.

        *prompt_id*: queue the prompt under this id instead of one the server picks (ComfyUI takes the body's
        ``prompt_id`` as is, recorded in ``prompt_ok_custom_prompt_id.json``), so the caller knows it even when
        no answer arrives. A server that ignores the field answers its own id, which is the one to use.
        """
        payload: dict[str, Any] = {"prompt": prompt, "client_id": client_id}
        if prompt_id is not None:
            payload["prompt_id"] = prompt_id
        if extra:
            payload["extra_data"] = dict(extra)
        result = await self.http.request(
            "POST", self.prefix + "/prompt", endpoint="prompt", json_body=payload, timeout=timeout
        )
        return self.http.decode(result, "prompt", parse_prompt_accepted)

    async def _post_empty(self, route: str, endpoint: str, body: Any) -> None:
        await self.http.request("POST", self.prefix + route, endpoint=endpoint, json_body=body)

    async def delete_history(self, prompt_ids: Sequence[str]) -> None:
        await self._post_empty("/history", "history", {"delete": list(prompt_ids)})

    async def delete_pending(self, prompt_ids: Sequence[str]) -> None:
        """Remove pending items (ComfyUI wants a *list*; a running id is a silent no-op)."""
        await self._post_empty("/queue", "queue", {"delete": list(prompt_ids)})

    async def interrupt(self, prompt_id: str) -> None:
        """Targeted interrupt: acts only if *prompt_id* is the one running (never someone else's job)."""
        await self._post_empty("/interrupt", "interrupt", {"prompt_id": prompt_id})

    async def view(self, filename: str, subfolder: str, kind: str) -> HttpResult:
        params = {"filename": filename, "subfolder": subfolder, "type": kind}
        return await self.http.request("GET", self.prefix + "/view", endpoint="view", params=params)

    async def object_info(self) -> dict[str, Any]:
        return self.decode_object_info(await self.object_info_response())

    async def object_info_response(self) -> HttpResult:
        """``/object_info`` as received, not decoded yet (:meth:`decode_object_info`): a caller that has seen the
        same bytes before can skip decoding megabytes of JSON."""
        # Building it may take a server with many node packs seconds: 30 s at least.
        return await self.http.request("GET", self.prefix + "/object_info", endpoint="object_info",
                                       timeout=max(self.http.settings.timeout, 30.0))

    def decode_object_info(self, response: HttpResult) -> dict[str, Any]:
        """The catalogue of an :meth:`object_info_response`; a body that is not a JSON object is counted and
        raised as ``invalid_response``."""
        return self.http.decode(response, "object_info", _json_object)

    async def model_folders(self) -> tuple[str, ...]:
        folders, _ = await self._get("/models", "models", parse_model_folders)
        return folders  # type: ignore[no-any-return]

    async def model_files(self, folder: str) -> tuple[str, ...]:
        """The files of one folder of :meth:`model_folders` (a plain name: it goes into the path as is)."""
        files, _ = await self._get(f"/models/{folder}", "models", parse_model_files)
        return files  # type: ignore[no-any-return]

    async def server_log(self) -> ServerLog:
        """ComfyUI's recent log (``/internal/logs/raw``, ComfyUI ≥ 0.3; a 404 on older servers)."""
        # The internal routes are a sub-application: never under /api.
        log, _ = await self.http.get_json("/internal/logs/raw", endpoint="logs", parser=parse_server_log,
                                          max_body=SERVER_LOG_MAX_BODY)
        return log

    #: ComfyUI queues a prompt under the ``prompt_id`` its body carries (recorded from 0.3.64:
    #: ``prompt_ok_custom_prompt_id.json``), so a caller can know the id before any answer.
    takes_prompt_id = True

    @property
    def secret_forms(self) -> tuple[str, ...]:
        """What this server is sent that it could echo (:func:`comfywatch.redact.secret_forms`)."""
        return self.http.secret_forms

    def ws_url(self, client_id: str) -> str:
        return self.http.websocket_url(self.prefix + "/ws", {"clientId": client_id})

    def ws_headers(self) -> dict[str, str]:
        """Headers the WebSocket upgrade needs: the same proxy credentials as HTTP (never an Origin)."""
        headers = dict(self.http.settings.headers)
        if self.http.settings.basic_auth is not None:
            headers["Authorization"] = basic_auth_header(*self.http.settings.basic_auth)
        return headers


def server_time(date_header: str | None) -> float | None:
    """The time an HTTP ``Date`` header gives (1 s resolution), or None when it is absent or unusable (the server
    chooses it: a zone of twenty digits overflows, a truncated one fails to index)."""
    import email.utils

    if not date_header:
        return None
    try:
        return email.utils.parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def clock_offset(date_header: str | None, now: float | None = None) -> float | None:
    """Server clock minus local clock from an HTTP ``Date`` header (1 s resolution), or None."""
    import time

    server = server_time(date_header)
    if server is None:
        return None
    local = time.time() if now is None else now
    # The header truncates to whole seconds: a server in sync looks up to 1 s behind.
    offset = server - local
    return 0.0 if -1.5 < offset < 0.5 else offset


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
