"""aiohttp application of the simulated Comfy Cloud (v1 ``/api/*`` with ``X-API-Key``, ``/ws``, signed URLs).

The middleware applies the cross-cutting behaviour in this order: count the request, ``slow`` delay,
advance simulated time, then for authenticated routes: 401 (wrong/missing key or ``http_401``), ``http_5xx``
(500; 503 on submit), ``http_429_rate`` (untyped 429 + ``Retry-After``), ``balance_error`` (500 on the
balance only). ``/health``, ``/api/system_stats`` and ``/_signed/*`` (the "GCS" host) are public;
``/api/features`` takes optional auth. The WebSocket upgrade checks only its ``token`` (401). Endpoint shapes
are described in docs/cloud.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from comfywatch.sim.cloud import render
from comfywatch.sim.cloud.jobs import GROUP_OF, PromptPlan, SimJob, check_prompt
from comfywatch.sim.cloud.model import SignedFile, SimCloud
from comfywatch.sim.png import encode_solid_png

__all__ = ["SIM_CLOUD_KEY", "create_cloud_app"]

SIM_CLOUD_KEY = web.AppKey("comfywatch_sim_cloud", SimCloud)
_OWNER_KEY = web.RequestKey("comfywatch_sim_cloud_owner", int)

_PUBLIC_ROUTES = frozenset({"/health", "/api/system_stats", "/_signed/{blob}", "/ws"})
_OPTIONAL_AUTH_ROUTES = frozenset({"/api/features"})
_GROUPS = frozenset(GROUP_OF.values())
_UNMATCHED = "(unmatched)"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Hub:
    """Fans simulator events out to each user's WebSocket connections and wakes the ticker."""

    def __init__(self) -> None:
        self.queues: dict[int, set[asyncio.Queue[dict[str, Any]]]] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self.wake = asyncio.Event()

    def publish(self, owner: int, message: dict[str, Any]) -> None:
        for queue in self.queues.get(owner, ()):
            queue.put_nowait(message)
        self.wake.set()


_HUB_KEY = web.AppKey("comfywatch_sim_cloud_hub", _Hub)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else _UNMATCHED


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(render.error_body(code, message), status=status, headers=headers)


def _retry_headers(sim: SimCloud) -> dict[str, str]:
    return {} if sim.retry_after_s is None else {"Retry-After": str(sim.retry_after_s)}


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    sim = request.app[SIM_CLOUD_KEY]
    route = _route(request)
    sim.count_request(request.method, route)
    if "slow" in sim.faults and route != "/_signed/{blob}":
        await asyncio.sleep(sim.slow_ms / 1000)
    sim.advance()
    if route in _PUBLIC_ROUTES or route == _UNMATCHED:
        return await handler(request)
    key = request.headers.get("X-API-Key")
    if route in _OPTIONAL_AUTH_ROUTES and key is None:
        return await handler(request)
    owner = sim.owner_for_key(key)
    if owner is None:
        return _error(401, "UNAUTHORIZED", "Invalid or missing API key")
    request[_OWNER_KEY] = owner
    if "http_5xx" in sim.faults:
        if request.method == "POST" and route == "/api/prompt":
            return web.json_response(
                render.prompt_error("SERVICE_UNAVAILABLE", "Failed to enqueue job for processing"), status=503
            )
        return _error(500, "INTERNAL_ERROR", "Internal server error")
    if "http_429_rate" in sim.faults:
        return _error(
            429, "RATE_LIMITED", "Rate limit exceeded. Please try again later.", _retry_headers(sim)
        )
    if "balance_error" in sim.faults and route == "/api/billing/balance":
        return _error(500, "INTERNAL_ERROR", "Failed to fetch balance")
    return await handler(request)


def _sim(request: web.Request) -> SimCloud:
    return request.app[SIM_CLOUD_KEY]


def _own_job(request: web.Request, job_id: str) -> SimJob | web.Response:
    """The caller's job, or the 404/403 ``ErrorResponse`` the Cloud answers."""
    job = _sim(request).jobs.get(job_id)
    if job is None:
        return _error(404, "JOB_NOT_FOUND", "Job not found")
    if job.owner != request[_OWNER_KEY]:
        return _error(403, "FORBIDDEN", "Job does not belong to user")
    return job


# -- account ----------------------------------------------------------------------------------------------


async def _user(request: web.Request) -> web.Response:
    return web.json_response({"id": SimCloud.user_id(request[_OWNER_KEY]), "status": "active"})


async def _balance(request: web.Request) -> web.Response:
    return web.json_response(_sim(request).balance_body())


async def _billing_status(request: web.Request) -> web.Response:
    return web.json_response(_sim(request).billing_status_body())


async def _features(request: web.Request) -> web.Response:
    owner = request.get(_OWNER_KEY)
    return web.json_response(_sim(request).features_body(owner))


async def _system_stats(request: web.Request) -> web.Response:
    return web.json_response(render.system_stats())


async def _health(request: web.Request) -> web.Response:
    if "http_5xx" in _sim(request).faults:
        return web.Response(status=503, text="Service is unhealthy", content_type="text/plain")
    return web.Response(text="ok", content_type="text/plain")


# -- prompt and queue -------------------------------------------------------------------------------------


async def _read_json(request: web.Request) -> object:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _INVALID


_INVALID = object()


async def _submit(request: web.Request) -> web.Response:
    sim = _sim(request)
    owner = request[_OWNER_KEY]
    body = await _read_json(request)
    checked = check_prompt(body) if body is not _INVALID else check_prompt(None)
    if not isinstance(checked, PromptPlan):
        return web.json_response(checked, status=400)
    refusal = sim.submit_refusal(owner)
    if refusal is not None:
        status, error = refusal
        return web.json_response(error, status=status, headers=_retry_headers(sim) if status == 429 else None)
    job = sim.submit(owner, checked)
    return web.json_response({"prompt_id": job.id, "number": job.number, "node_errors": {}})


async def _prompt_info(request: web.Request) -> web.Response:
    remaining = _sim(request).queue_remaining(request[_OWNER_KEY])
    return web.json_response({"exec_info": {"queue_remaining": remaining}})


async def _queue(request: web.Request) -> web.Response:
    sim = _sim(request)
    owner = request[_OWNER_KEY]
    running = sim.active(owner)
    pending = sim.waiting(owner)
    return web.json_response(
        {
            "queue_running": [render.queue_item(job, i + 1) for i, job in enumerate(running)],
            "queue_pending": [render.queue_item(job, len(running) + i + 1) for i, job in enumerate(pending)],
        }
    )


async def _manage_queue(request: web.Request) -> web.Response:
    sim = _sim(request)
    owner = request[_OWNER_KEY]
    body = await _read_json(request)
    if not isinstance(body, dict) or set(body) - {"delete", "clear"}:
        return _error(400, "INVALID_REQUEST", 'Expected {"delete": [ids]} or {"clear": true}')
    delete = body.get("delete", [])
    if not isinstance(delete, list) or not all(isinstance(item, str) for item in delete):
        return _error(400, "INVALID_REQUEST", "delete must be an array of job ids")
    deleted: list[str] = []
    for job_id in delete:
        job = sim.jobs.get(job_id)
        if job is not None and job.owner == owner and sim.cancel(job):
            deleted.append(job_id)
    cleared = body.get("clear") is True
    if cleared:
        for job in sim.waiting(owner):
            if sim.cancel(job):
                deleted.append(job.id)
    return web.json_response({"deleted": deleted, "cleared": cleared})


async def _interrupt(request: web.Request) -> web.Response:
    body = await _read_json(request) if request.can_read_body else None
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    _sim(request).interrupt(request[_OWNER_KEY], prompt_id if isinstance(prompt_id, str) else None)
    return web.Response(status=200)


# -- jobs -------------------------------------------------------------------------------------------------


def _query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if low <= value <= high else None


async def _jobs(request: web.Request) -> web.Response:
    sim = _sim(request)
    limit = _query_int(request, "limit", 100, 1, 1000)
    offset = _query_int(request, "offset", 0, 0, 10**9)
    sort_by = request.query.get("sort_by", "create_time")
    sort_order = request.query.get("sort_order", "desc")
    statuses = {part for part in request.query.get("status", "").split(",") if part}
    if limit is None or offset is None:
        return _error(400, "INVALID_PARAMETER", "limit must be 1-1000 and offset >= 0")
    if sort_by not in ("create_time", "execution_time") or sort_order not in ("asc", "desc"):
        return _error(400, "INVALID_PARAMETER", "invalid sort_by or sort_order")
    if statuses - _GROUPS:
        return _error(400, "INVALID_PARAMETER", "unknown status filter")
    jobs = [job for job in sim.jobs_of(request[_OWNER_KEY]) if not statuses or job.group in statuses]
    workflow_id = request.query.get("workflow_id")
    if workflow_id:
        jobs = [job for job in jobs if job.workflow_id == workflow_id]
    if sort_by == "create_time":
        jobs.sort(key=lambda job: (job.create_ms, job.number), reverse=sort_order == "desc")
    else:
        finished = [job for job in jobs if job.start_ms is not None and job.end_ms is not None]
        finished.sort(key=lambda job: (job.end_ms or 0) - (job.start_ms or 0), reverse=sort_order == "desc")
        jobs = finished + [job for job in jobs if job not in finished]
    page = jobs[offset : offset + limit]
    return web.json_response(
        {
            "jobs": [render.job_entry(job) for job in page],
            "pagination": {
                "offset": offset,
                "limit": limit,
                "total": len(jobs),
                "has_more": offset + limit < len(jobs),
            },
        }
    )


async def _job_detail(request: web.Request) -> web.Response:
    job = _own_job(request, request.match_info["job_id"])
    if isinstance(job, web.Response):
        return job
    owner = request[_OWNER_KEY]
    return web.json_response(
        render.job_detail(job, user_id=SimCloud.user_id(owner), workspace_id=SimCloud.workspace_id(owner))
    )


async def _job_status(request: web.Request) -> web.Response:
    job = _own_job(request, request.match_info["job_id"])
    if isinstance(job, web.Response):
        return job
    return web.json_response(render.job_status(job))


async def _job_cancel(request: web.Request) -> web.Response:
    job = _own_job(request, request.match_info["job_id"])
    if isinstance(job, web.Response):
        return job
    return web.json_response({"cancelled": _sim(request).cancel(job)})


async def _history_list(request: web.Request) -> web.Response:
    max_items = _query_int(request, "max_items", 10**9, 0, 10**9)
    offset = _query_int(request, "offset", 0, 0, 10**9)
    if max_items is None or offset is None:
        return _error(400, "INVALID_PARAMETER", "max_items and offset must be non-negative integers")
    sim = _sim(request)
    done = [job for job in reversed(sim.jobs_of(request[_OWNER_KEY]))
            if job.terminal and job.id not in sim.history_deleted]
    return web.json_response(
        {"history": [render.history_entry(job) for job in done[offset : offset + max_items]]}
    )


async def _history_detail(request: web.Request) -> web.Response:
    sim = _sim(request)
    job = sim.jobs.get(request.match_info["prompt_id"])
    if job is None or job.owner != request[_OWNER_KEY] or job.id in sim.history_deleted:
        # The spec declares no 403 here: another user's prompt is simply not found.
        return _error(404, "NOT_FOUND", "Prompt not found")
    # Like ComfyUI's /history/{id}: an unfinished prompt has no history entry yet.
    return web.json_response(render.history_detail(job) if job.terminal else {})


async def _manage_history(request: web.Request) -> web.Response:
    """POST /api/history: ``{"delete": [ids]}`` or ``{"clear": true}`` (spec operationId manageHistory)."""
    sim = _sim(request)
    owner = request[_OWNER_KEY]
    body = await _read_json(request)
    if not isinstance(body, dict) or not body or set(body) - {"delete", "clear"}:
        return _error(400, "INVALID_REQUEST", 'Expected {"delete": [ids]} or {"clear": true}')
    delete = body.get("delete", [])
    if not isinstance(delete, list) or not all(isinstance(item, str) for item in delete):
        return _error(400, "INVALID_REQUEST", "delete must be an array of prompt ids")
    mine = {job.id for job in sim.jobs_of(owner) if job.terminal}
    if body.get("clear") is True:
        sim.history_deleted.update(mine)
    sim.history_deleted.update(pid for pid in delete if pid in mine)
    return web.Response(status=200)


async def _history_legacy(request: web.Request) -> web.Response:
    return _error(404, "NOT_FOUND", "use /api/history_v2")


# -- files ------------------------------------------------------------------------------------------------


def _gcs_error(status: int, code: str, message: str) -> web.Response:
    xml = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return web.Response(status=status, text=xml, content_type="application/xml")


def _png_response(spec: SignedFile) -> web.Response:
    return web.Response(body=encode_solid_png(spec.width, spec.height, spec.color), content_type="image/png")


async def _view(request: web.Request) -> web.Response:
    sim = _sim(request)
    filename = request.query.get("filename")
    if not filename:
        return _error(400, "INVALID_REQUEST", "filename is required")
    spec = sim.file_for(request[_OWNER_KEY], filename)
    if spec is None:
        return _error(404, "NOT_FOUND", "File not found or unauthorized")
    if "channel" in request.query or "res" in request.query:
        return _png_response(spec)
    location = f"{request.scheme}://{request.host}{sim.sign(spec)}"
    return web.Response(status=302, headers={"Location": location})


async def _signed(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.signed_fetches += 1
    leaked = "X-API-Key" in request.headers or "Authorization" in request.headers
    if leaked:
        sim.key_leaks += 1
        if sim.reject_leaks:
            return _gcs_error(400, "InvalidArgument", "Credentials must not be sent with a signed URL.")
    query = request.query
    found = sim.signed_file(
        request.match_info["blob"],
        query.get("X-Goog-Date", ""),
        query.get("X-Goog-Expires", ""),
        query.get("X-Goog-Signature", ""),
    )
    if found == "ExpiredToken":
        return _gcs_error(400, "ExpiredToken", "Invalid argument.")
    if found == "NoSuchKey":
        return _gcs_error(404, "NoSuchKey", "The specified key does not exist.")
    if isinstance(found, str):
        return _gcs_error(403, found, "Access denied.")
    return _png_response(found)


# -- websocket --------------------------------------------------------------------------------------------


async def _websocket(request: web.Request) -> web.StreamResponse:
    sim = _sim(request)
    owner = sim.owner_for_key(request.query.get("token"))
    if owner is None:
        return _error(401, "UNAUTHORIZED", "Invalid or missing token")
    hub = request.app[_HUB_KEY]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    hub.queues.setdefault(owner, set()).add(queue)
    hub.sockets.add(ws)
    sim.ws_connections += 1
    # The Cloud ignores clientId: every connection of a user gets all of that user's events.
    first = render.ws("status", {"status": {"exec_info": {"queue_remaining": sim.queue_remaining(owner)}}})
    first["data"]["sid"] = uuid.uuid4().hex
    queue.put_nowait(first)

    async def pump() -> None:
        while True:
            await ws.send_json(await queue.get())

    sender = asyncio.create_task(pump())
    try:
        async for message in ws:
            if message.type == WSMsgType.ERROR:
                break
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        hub.queues.get(owner, set()).discard(queue)
        hub.sockets.discard(ws)
        sim.ws_connections -= 1
    return ws


# -- lifecycle --------------------------------------------------------------------------------------------


async def _ticker(sim: SimCloud, hub: _Hub) -> None:
    """Drive simulated time so WebSocket events flow even when nobody polls."""
    while True:
        hub.wake.clear()
        sim.advance()
        due = sim.next_due_ms()
        delay = 1.0 if due is None else min(1.0, max(0.001, (due - sim.clock()) / 1000))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await hub.wake.wait()


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    sim = app[SIM_CLOUD_KEY]
    hub = _Hub()
    app[_HUB_KEY] = hub
    sim.add_listener(hub.publish)
    task = asyncio.create_task(_ticker(sim, hub))
    yield
    sim.remove_listener(hub.publish)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[_HUB_KEY].sockets):
        await ws.close(code=1001, message=b"server shutdown")


def create_cloud_app(sim: SimCloud) -> web.Application:
    """Build the aiohttp application serving ``sim`` (run it with ``web.AppRunner`` on any port)."""
    app = web.Application(middlewares=[_middleware])
    app[SIM_CLOUD_KEY] = sim
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/health", _health)
    app.router.add_get("/api/system_stats", _system_stats)
    app.router.add_get("/api/features", _features)
    app.router.add_get("/api/user", _user)
    app.router.add_get("/api/billing/balance", _balance)
    app.router.add_get("/api/billing/status", _billing_status)
    app.router.add_post("/api/prompt", _submit)
    app.router.add_get("/api/prompt", _prompt_info)
    app.router.add_get("/api/queue", _queue)
    app.router.add_post("/api/queue", _manage_queue)
    app.router.add_post("/api/interrupt", _interrupt)
    app.router.add_get("/api/jobs", _jobs)
    app.router.add_get("/api/jobs/{job_id}", _job_detail)
    app.router.add_post("/api/jobs/{job_id}/cancel", _job_cancel)
    app.router.add_get("/api/job/{job_id}/status", _job_status)
    app.router.add_get("/api/history", _history_legacy)
    app.router.add_post("/api/history", _manage_history)
    app.router.add_get("/api/history_v2", _history_list)
    app.router.add_get("/api/history_v2/{prompt_id}", _history_detail)
    app.router.add_get("/api/view", _view)
    app.router.add_get("/_signed/{blob}", _signed)
    app.router.add_get("/ws", _websocket)
    return app
