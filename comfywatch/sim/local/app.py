"""The aiohttp side of the simulated ComfyUI 0.3.64: routes, WebSocket, Origin check, faults, targets.

One process can serve many independent simulated servers: the root one, and with ``targets=N`` also
``/t/0`` ... ``/t/{N-1}`` (each with its own queue, history, files and WebSockets at ``/t/{i}/ws``).
Rather than registering thousands of aiohttp routes, a single catch-all handler strips the target
prefix and the ``/api`` duplicate, then dispatches on a small route table; it reproduces what aiohttp
itself answers around ComfyUI's routes: the 405 with ``Allow``, and the 404 that ComfyUI's catch-all
static route (``web.static('/', web_root)``) gives for unknown paths (``application/octet-stream``,
chunked, empty).
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from importlib import resources
from typing import Any

from aiohttp import WSMsgType, web

from comfywatch.sim.faults import (
    HTTP_STATUS_FAULTS,
    Fault,
    garbage_json_response,
    http_fault_response,
    parse_faults,
    server_error_500,
    stream_huge_body,
    ws_no_upgrade_response,
)
from comfywatch.sim.local.catalog import Catalog, default_catalog
from comfywatch.sim.local.jobs import JOB_STATUSES
from comfywatch.sim.local.server import FEATURES, SimOptions, SimServer
from comfywatch.sim.local.serverlog import startup_log
from comfywatch.sim.local.validation import MalformedRequestError

__all__ = ["CLUSTER_KEY", "Listener", "PortHold", "SimCluster", "origin_forbidden"]

MAX_UPLOAD_SIZE = 104857600  # --max-upload-size 100 (MB) becomes aiohttp's client_max_size


def _data(name: str) -> Any:
    return json.loads(resources.files("comfywatch.sim").joinpath(f"data/{name}").read_text("utf-8"))


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # The real check resolves the name; the sim knows only "localhost" (no DNS lookups in tests).
        return host == "localhost"


def origin_forbidden(host: str | None, origin: str | None) -> bool:
    """ComfyUI's ``origin_only_middleware``: refuse a loopback ``Host`` with a different ``Origin`` host."""
    if host is None or origin is None:
        return False
    host_domain: str | None = host.lower()
    parsed = urllib.parse.urlparse(origin)
    origin_domain: str | None = parsed.netloc.lower()
    host_parsed = urllib.parse.urlsplit("//" + (host_domain or ""))
    loopback = _is_loopback(host_parsed.hostname)
    try:
        origin_port, host_port = parsed.port, host_parsed.port
    except ValueError:
        return False
    # A side without a port is compared by host name only ("to handle weird browsers").
    if origin_port is None:
        host_domain = host_parsed.hostname
    if host_port is None:
        origin_domain = parsed.hostname
    if loopback and host_domain and origin_domain:
        return host_domain != origin_domain
    return False


class _WsSocket:
    """An aiohttp WebSocket seen through the hub's ``Socket`` protocol."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self._ws = ws
        self._transport = request.transport

    async def send_text(self, data: str) -> None:
        await self._ws.send_str(data)

    async def send_binary(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


@dataclass
class _Call:
    """One dispatched request: the target's server, the request and the path parameters."""

    cluster: SimCluster
    server: SimServer
    request: web.Request
    params: dict[str, str]


_Handler = Callable[[_Call], Awaitable[web.StreamResponse]]


def _empty_200() -> web.Response:
    return web.Response(status=200)


async def _json_body(request: web.Request) -> Any:
    """``await request.json()`` as ComfyUI calls it; a body that is not JSON becomes the 500."""
    try:
        return await request.json()
    except ValueError as ex:
        raise MalformedRequestError(str(ex)) from ex


# ---- route handlers ----------------------------------------------------------------------------


async def _system_stats(call: _Call) -> web.StreamResponse:
    stats = copy.deepcopy(call.cluster.system_stats)
    stats["system"]["argv"] = [
        "main.py",
        "--cpu",
        "--listen",
        call.cluster.host,
        "--port",
        str(call.cluster.port),
    ]
    return web.json_response(stats)


async def _get_prompt(call: _Call) -> web.StreamResponse:
    return web.json_response(call.server.queue_info())


async def _post_prompt(call: _Call) -> web.StreamResponse:
    body = await _json_body(call.request)
    status, response = call.server.post_prompt(body)
    return web.json_response(response, status=status)


async def _get_queue(call: _Call) -> web.StreamResponse:
    return web.json_response(call.server.get_queue())


async def _post_queue(call: _Call) -> web.StreamResponse:
    call.server.post_queue(await _json_body(call.request))
    return _empty_200()


async def _get_history(call: _Call) -> web.StreamResponse:
    query = call.request.rel_url.query
    try:
        max_items = int(query["max_items"]) if "max_items" in query else None
        offset = int(query["offset"]) if "offset" in query else -1
    except ValueError as ex:
        raise MalformedRequestError(str(ex)) from ex
    return web.json_response(call.server.get_history(max_items=max_items, offset=offset))


async def _get_history_item(call: _Call) -> web.StreamResponse:
    return web.json_response(call.server.get_history_item(call.params["prompt_id"]))


async def _post_history(call: _Call) -> web.StreamResponse:
    call.server.post_history(await _json_body(call.request))
    return _empty_200()


async def _post_interrupt(call: _Call) -> web.StreamResponse:
    try:
        body = await call.request.json()
    except json.JSONDecodeError:
        body = {}
    if not isinstance(body, dict):
        raise MalformedRequestError("interrupt body must be an object")
    call.server.interrupt(body.get("prompt_id"))
    return _empty_200()


async def _post_free(call: _Call) -> web.StreamResponse:
    body = await _json_body(call.request)
    if not isinstance(body, dict):
        raise MalformedRequestError("free body must be an object")
    return _empty_200()


async def _object_info(call: _Call) -> web.StreamResponse:
    return web.json_response(call.server.catalog.object_info)


async def _object_info_class(call: _Call) -> web.StreamResponse:
    name = call.params["node_class"]
    info = call.server.catalog.object_info.get(name)
    return web.json_response({name: info} if info is not None else {})


async def _features(call: _Call) -> web.StreamResponse:
    return web.json_response(FEATURES)


async def _embeddings(call: _Call) -> web.StreamResponse:
    return web.json_response(call.cluster.static["embeddings"])


async def _extensions(call: _Call) -> web.StreamResponse:
    return web.json_response(call.cluster.static["extensions"])


async def _server_log(call: _Call) -> web.StreamResponse:
    return web.json_response(startup_log(call.server.broken_packs))


async def _models(call: _Call) -> web.StreamResponse:
    return web.json_response(call.cluster.static["models"])


async def _models_folder(call: _Call) -> web.StreamResponse:
    folder = call.params["folder"]
    if folder not in call.cluster.static["models"]:
        return web.Response(status=404)
    # No model files unless deployed (SimServer.deploy): CheckpointLoaderSimple's options stay empty regardless.
    return web.json_response(call.server.models.get(folder, []))


async def _view(call: _Call) -> web.StreamResponse:
    query = call.request.rel_url.query
    status, image, name = call.server.view(query.get("filename"), query.get("subfolder"), query.get("type"))
    if image is None:
        return web.Response(status=status)
    body = image.png()
    headers = {
        "Content-Disposition": f'filename="{name}"',
        "Etag": f'"{int(image.mtime * 1e9):x}-{len(body):x}"',
        "Last-Modified": formatdate(image.mtime, usegmt=True),
        "Accept-Ranges": "bytes",
    }
    return web.Response(body=body, content_type="image/png", headers=headers)


async def _jobs(call: _Call) -> web.StreamResponse:
    # The newer server's GET /api/jobs (Comfy-Org/ComfyUI#11054):
    #   {"jobs": [job...], "pagination": {"offset", "limit", "total", "has_more"}}
    # job = {id, status: pending|in_progress|completed|failed, priority, create_time (ms),
    #        execution_start_time, execution_end_time (ms), execution_error, outputs_count,
    #        preview_output, workflow_id}, keys with a null value left out.
    query = call.request.rel_url.query
    statuses = None
    if query.get("status"):
        statuses = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
        invalid = [s for s in statuses if s not in JOB_STATUSES]
        if invalid:
            message = f"Invalid status value(s): {', '.join(invalid)}. Valid values: {', '.join(JOB_STATUSES)}"
            return web.json_response({"error": message}, status=400)
    sort_by = query.get("sort_by", "created_at").lower()
    sort_order = query.get("sort_order", "desc").lower()
    if sort_by not in ("created_at", "execution_duration"):
        return web.json_response({"error": "sort_by must be 'created_at' or 'execution_duration'"}, status=400)
    if sort_order not in ("asc", "desc"):
        return web.json_response({"error": "sort_order must be 'asc' or 'desc'"}, status=400)
    limit: int | None = None
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            return web.json_response({"error": "limit must be an integer"}, status=400)
        if limit <= 0:
            return web.json_response({"error": "limit must be a positive integer"}, status=400)
    offset = 0
    if "offset" in query:
        try:
            offset = max(0, int(query["offset"]))
        except ValueError:
            return web.json_response({"error": "offset must be an integer"}, status=400)
    jobs, total = call.server.list_jobs(statuses, sort_by, sort_order, limit, offset)
    pagination = {"offset": offset, "limit": limit, "total": total, "has_more": offset + len(jobs) < total}
    return web.json_response({"jobs": jobs, "pagination": pagination})


async def _job(call: _Call) -> web.StreamResponse:
    job = call.server.get_job(call.params["job_id"])
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job)


async def _websocket(call: _Call) -> web.StreamResponse:
    server, request = call.server, call.request
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    socket = _WsSocket(ws, request)
    if Fault.WS_SILENT in server.faults:
        server.track_socket(socket)
        try:
            async for _ in ws:
                pass
        finally:
            server.untrack_socket(socket)
        return ws
    # The parameter is "clientId"; "client_id" is ignored and a random sid assigned.
    sid, generation = await server.ws_open(request.rel_url.query.get("clientId", ""), socket)
    first = True
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT and await server.ws_message(sid, message.data, first):
                first = False
    finally:
        server.ws_closed(sid, socket, generation)
    return ws


_GET, _POST = "GET", "POST"
_ROUTES: list[tuple[str, dict[str, _Handler]]] = [
    ("/ws", {_GET: _websocket}),
    ("/system_stats", {_GET: _system_stats}),
    ("/prompt", {_GET: _get_prompt, _POST: _post_prompt}),
    ("/queue", {_GET: _get_queue, _POST: _post_queue}),
    ("/history", {_GET: _get_history, _POST: _post_history}),
    ("/history/{prompt_id}", {_GET: _get_history_item}),
    ("/interrupt", {_POST: _post_interrupt}),
    ("/free", {_POST: _post_free}),
    ("/object_info", {_GET: _object_info}),
    ("/object_info/{node_class}", {_GET: _object_info_class}),
    ("/features", {_GET: _features}),
    ("/embeddings", {_GET: _embeddings}),
    ("/extensions", {_GET: _extensions}),
    ("/internal/logs/raw", {_GET: _server_log}),
    ("/models", {_GET: _models}),
    ("/models/{folder}", {_GET: _models_folder}),
    ("/view", {_GET: _view}),
]
_JOBS_ROUTES: list[tuple[str, dict[str, _Handler]]] = [
    ("/api/jobs", {_GET: _jobs}),
    ("/api/jobs/{job_id}", {_GET: _job}),
]


class RouteTable:
    """The simulated routes, every one also under ``/api``: ``resolve`` a path to its handler.

    Patterns are grouped by segment count, so a request is matched only against the few patterns of its
    own length (a linear scan of every route cost more than the handler behind it).
    """

    def __init__(self, routes: list[tuple[str, dict[str, _Handler]]]) -> None:
        self._by_length: dict[int, list[tuple[list[str], dict[str, _Handler]]]] = {}
        for pattern, methods in routes:
            segments = pattern.split("/")
            self._by_length.setdefault(len(segments), []).append((segments, methods))

    def resolve(self, path: str, method: str) -> tuple[_Handler | None, dict[str, str], set[str]]:
        """``(handler, params, allowed_methods)``; the first matching route in declaration order wins."""
        allowed: set[str] = set()
        candidates = [path]
        # ComfyUI's internal routes (a sub-application) have no /api duplicate.
        if path.startswith("/api/") and not path.startswith("/api/internal/"):
            candidates.append(path[4:])
        lookup = "GET" if method == "HEAD" else method
        for candidate in candidates:
            got = candidate.split("/")
            for want, methods in self._by_length.get(len(got), ()):
                params = _match(want, got)
                if params is None:
                    continue
                if lookup in methods:
                    return methods[lookup], params, allowed
                allowed.update(methods)
                if "GET" in methods:
                    allowed.add("HEAD")
        return None, {}, allowed


def _match(want: list[str], got: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for w, g in zip(want, got, strict=True):
        if w.startswith("{"):
            if not g:
                return None
            params[w[1:-1]] = g
        elif w != g:
            return None
    return params


async def _static_404(request: web.Request) -> web.StreamResponse:
    # What aiohttp's static route at "/" answers for a missing file in 3.14 (recorded: 404,
    # application/octet-stream, chunked, empty body).
    response = web.StreamResponse(status=404)
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    await response.write_eof()
    return response


#: How long :meth:`Listener.close` lets requests in flight finish before cancelling them. Faults hold requests on
#: purpose (slow, stall, huge_body, ws_silent), and aiohttp's default would make the process wait a minute to
#: exit.
STOP_GRACE_SECONDS = 1.0


class Listener:
    """The listening socket of a simulated server; ``stop`` makes connections fail with "refused".

    While stopped its port is held (:class:`PortHold`), so ``reopen`` gets it back.

    Used for the simulated ComfyUI and, by :mod:`comfywatch.sim.admin`, for the simulated Cloud app.
    """

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._held = PortHold()

    @property
    def listening(self) -> bool:
        """Whether the port accepts connections."""
        return self._site is not None

    async def start(self, host: str, port: int) -> None:
        """Bind ``host:port``; port 0 picks an ephemeral port that later ``reopen`` calls reuse."""
        self.host = host
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=STOP_GRACE_SECONDS)
        await self._runner.setup()
        await self._bind(port)

    async def _bind(self, port: int) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, port)
        await site.start()
        self._site = site
        self.port = self._runner.addresses[-1][1]

    async def stop(self) -> None:
        """Close the listening socket and every open connection (keep-alive and WebSockets)."""
        if self._site is None or self._runner is None:
            return
        bound = self._runner.addresses
        await self._site.stop()
        self._site = None
        # A dead server takes its open connections with it.
        connections = self._runner.server.connections if self._runner.server is not None else []
        for connection in list(connections):
            connection.force_close()
        self._held.hold(bound)

    async def reopen(self) -> None:
        """Listen again on the same port after :meth:`stop`."""
        if self._site is None and self._runner is not None:
            await self._bind(self.port)
            self._held.release()

    async def close(self) -> None:
        """Release everything."""
        self._held.release()
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self._site = None


class PortHold:
    """A closed listener's addresses bound again without listening: connections are refused, the ports kept.

    Kept from whoever binds port 0 next: another server would answer in the closed one's place, and the closed
    one could not come back. ``SO_REUSEADDR`` on both sides lets the listener bind again while the hold lasts
    (Linux refuses that only when a socket on the port listens) and keeps its closed connections' ``TIME_WAIT``
    from blocking the bind; IPv6 addresses are held IPv6-only, as asyncio binds them.
    """

    def __init__(self) -> None:
        self._sockets: list[socket.socket] = []

    def hold(self, addresses: Iterable[tuple[Any, ...]]) -> None:
        """Bind each address (a listener's ``getsockname()``); one taken since it closed, or of a family the host
        lacks, is left unheld."""
        self.release()
        for address in addresses:
            try:
                holder = socket.socket(socket.AF_INET6 if len(address) == 4 else socket.AF_INET, socket.SOCK_STREAM)
            except OSError:
                continue
            try:
                holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if holder.family == socket.AF_INET6:
                    holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                holder.bind(address)
            except OSError:
                holder.close()
                continue
            self._sockets.append(holder)

    def release(self) -> None:
        """Unbind every held address."""
        for holder in self._sockets:
            holder.close()
        self._sockets = []


class SimCluster:
    """Every simulated ComfyUI of one process and the listening socket they share."""

    def __init__(
        self,
        options: SimOptions | None = None,
        *,
        targets: int = 0,
        faults: Iterable[str] = (),
        catalog: Catalog | None = None,
    ) -> None:
        self.options = options or SimOptions()
        self.targets = targets
        self.start_faults = parse_faults(faults)
        self.catalog = catalog or default_catalog()
        self.system_stats: dict[str, Any] = _data("system_stats.json")
        self.static: dict[str, Any] = _data("static.json")
        self.routes = RouteTable(_ROUTES + (_JOBS_ROUTES if self.options.jobs_api else []))
        self._servers: dict[int | None, SimServer] = {}
        self.app = web.Application(client_max_size=MAX_UPLOAD_SIZE)
        self.app[CLUSTER_KEY] = self
        self.app.router.add_route("*", "/{tail:.*}", _dispatch)
        self.listener = Listener(self.app)

    # ---- targets ------------------------------------------------------------------------------

    def server(self, target: int | None = None) -> SimServer:
        """The simulated server of ``target`` (``None``: the root one), created on first use."""
        if target is not None and not 0 <= target < self.targets:
            raise KeyError(f"no target {target} (targets: {self.targets})")
        server = self._servers.get(target)
        if server is None:
            server = SimServer(self.catalog, self.options, faults=self.start_faults)
            self._servers[target] = server
        return server

    def existing_servers(self) -> list[SimServer]:
        """The servers created so far."""
        return list(self._servers.values())

    def split(self, path: str) -> tuple[int | None, str]:
        """``/t/{i}/rest`` -> ``(i, "/rest")`` for a configured target; anything else belongs to the root."""
        if self.targets and path.startswith("/t/"):
            segment, _, rest = path[3:].partition("/")
            if segment.isdigit() and str(int(segment)) == segment and int(segment) < self.targets:
                return int(segment), "/" + rest
        return None, path

    def url(self, target: int | None = None) -> str:
        """Base URL of a target (no trailing slash)."""
        base = f"http://{self.host}:{self.port}"
        return base if target is None else f"{base}/t/{target}"

    # ---- listening ----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address served."""
        return self.listener.host

    @property
    def port(self) -> int:
        """The port served (stays the same across ``down`` and recovery)."""
        return self.listener.port

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (port 0: an ephemeral port, kept for later ``down`` recoveries)."""
        self.server(None)
        if self.options.load_per_min > 0:
            # Background load needs every target's worker running from the start.
            for index in range(self.targets):
                self.server(index)
        await self.listener.start(host, port)
        if Fault.DOWN in self.start_faults:
            await self._go_down()

    async def _go_down(self) -> None:
        await self.listener.stop()
        for server in self.existing_servers():
            server.drop_sockets()

    @property
    def listening(self) -> bool:
        """Whether the shared port accepts connections."""
        return self.listener.listening

    async def set_faults(self, target: int | None, faults: Iterable[str], slow_ms: int | None = None) -> None:
        """Replace a target's faults (``ValueError`` for unknown names).

        ``down`` on the root stops listening on the shared port, which stays held (listened on again when cleared).
        """
        wanted = parse_faults(faults)
        server = self.server(target)
        server.set_faults(wanted, slow_ms)
        if Fault.DOWN in wanted:
            server.drop_sockets()
        if target is None:
            if Fault.DOWN in wanted:
                await self._go_down()
            else:
                await self.listener.reopen()

    async def restart(self, target: int | None) -> None:
        """The one-shot ``restart`` fault for one target."""
        self.server(target).restart()

    async def close(self) -> None:
        """Stop every server and the listener."""
        for server in self.existing_servers():
            await server.close()
        await self.listener.close()


CLUSTER_KEY = web.AppKey("comfywatch_sim_cluster", SimCluster)


async def _dispatch(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    target, path = cluster.split(request.path)
    server = cluster.server(target)
    faults = server.faults
    if Fault.DOWN in faults:
        # Only prefixed targets get here (the root's port is closed): refuse by dropping the connection.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=503)
    if Fault.SLOW in faults:
        await asyncio.sleep(server.slow_ms / 1000)
    for fault in HTTP_STATUS_FAULTS:
        if fault in faults:
            return http_fault_response(fault)
    is_ws = path in ("/ws", "/api/ws")
    if is_ws and Fault.WS_NO_UPGRADE in faults and request.method == "GET":
        return ws_no_upgrade_response()
    if not is_ws and Fault.GARBAGE_JSON in faults:
        return garbage_json_response()
    if not is_ws and Fault.HUGE_BODY in faults:
        server.stats.huge_bodies_active += 1
        try:
            response, written = await stream_huge_body(request)
        finally:
            server.stats.huge_bodies_active -= 1
        server.stats.huge_body_bytes += written
        return response
    if origin_forbidden(request.headers.get("Host"), request.headers.get("Origin")):
        return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    handler, params, allowed = cluster.routes.resolve(path, request.method)
    if handler is None:
        if request.method in ("GET", "HEAD"):
            return await _static_404(request)
        # ComfyUI's static route also answers every path for GET/HEAD, hence the Allow header.
        allowed |= {"GET", "HEAD"}
        return web.Response(status=405, text="405: Method Not Allowed", headers={"Allow": ",".join(sorted(allowed))})
    try:
        return await handler(_Call(cluster, server, request, params))
    except MalformedRequestError:
        return server_error_500()
