"""The status page's routes: ``/`` (fleet), ``/targets/<name>``, ``/api/v1/status``, ``/api/v1/targets/<name>``
and the page's own stylesheet and script under ``/static/``.

Read-only: every route is a GET that changes nothing. Nothing on the pages is fetched from anywhere but this
origin, so they work offline and behind the same TLS and basic auth as ``/metrics``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Protocol

from aiohttp import web

from comfywatch.status import html
from comfywatch.status.model import FleetStatus, StatusInputs, TargetDetail, as_json, detail, fleet

__all__ = ["Sender", "StatusSource", "add_status_routes"]

StatusSource = Callable[[], StatusInputs]


class Sender(Protocol):
    """Sends a body within the exporter's bounds (``comfywatch.server.app.send_body``)."""

    def __call__(self, request: web.Request, body: bytes, *, content_type: str,
                 headers: Mapping[str, str] | None = None) -> Awaitable[web.StreamResponse]: ...

_STATIC_TYPES = {"status.css": "text/css", "status.js": "text/javascript", "favicon.svg": "image/svg+xml"}
#: Pages are always current; the stylesheet and script change only with the version (their URLs carry it).
_NO_STORE = {"Cache-Control": "no-store"}
_HTML = "text/html; charset=utf-8"
_JSON = "application/json; charset=utf-8"


def _static(name: str) -> bytes:
    return resources.files("comfywatch.status").joinpath("static", name).read_bytes()


def _page_number(request: web.Request) -> int:
    raw = request.query.get("page", "1")
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 1


def add_status_routes(app: web.Application, source: StatusSource, send: Sender) -> None:
    """The routes, whose pages *send* answers: gzipped when taken, and a client that stops reading is cut off (at
    10,000 targets ``/api/v1/status`` is 9 MB)."""
    static = {name: _static(name) for name in _STATIC_TYPES}

    def _fleet() -> FleetStatus:
        inputs = source()
        return fleet(inputs.states, time.time(), events=inputs.events, reload_success=inputs.reload_success)

    def _target(request: web.Request) -> TargetDetail:
        inputs = source()
        name = request.match_info["name"]
        state = next((s for s in inputs.states if s.name == name), None)
        if state is None:
            raise web.HTTPNotFound(text="no such target\n")
        return detail(state, time.time(), daemon_events=inputs.events)

    async def fleet_page(request: web.Request) -> web.StreamResponse:
        page = html.render_fleet(_fleet(), page=_page_number(request))
        return await send(request, page.encode(), content_type=_HTML, headers=_NO_STORE)

    async def target_page(request: web.Request) -> web.StreamResponse:
        page = html.render_target(_target(request))
        return await send(request, page.encode(), content_type=_HTML, headers=_NO_STORE)

    async def fleet_json(request: web.Request) -> web.StreamResponse:
        document = json.dumps(as_json(_fleet()), allow_nan=False)
        return await send(request, document.encode(), content_type=_JSON, headers=_NO_STORE)

    async def target_json(request: web.Request) -> web.StreamResponse:
        document = json.dumps(as_json(_target(request)), allow_nan=False)
        return await send(request, document.encode(), content_type=_JSON, headers=_NO_STORE)

    async def static_file(request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in static:
            raise web.HTTPNotFound(text="not found\n")
        return web.Response(body=static[name], content_type=_STATIC_TYPES[name], charset="utf-8",
                            headers={"Cache-Control": "max-age=3600"})

    app.router.add_get("/", fleet_page)
    app.router.add_get("/targets/{name}", target_page)
    app.router.add_get("/api/v1/status", fleet_json)
    app.router.add_get("/api/v1/targets/{name}", target_json)
    app.router.add_get("/static/{file}", static_file)
