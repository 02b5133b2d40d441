"""The status page's routes: ``/`` (fleet), ``/targets/<name>``, ``/api/v1/status``, ``/api/v1/targets/<name>``
and the page's own stylesheet and script under ``/static/``.

Read-only: every route is a GET that changes nothing. Nothing on the pages is fetched from anywhere but this
origin, so they work offline and behind the same TLS and basic auth as ``/metrics``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib import resources

from aiohttp import web

from comfywatch.status import html
from comfywatch.status.model import FleetStatus, StatusInputs, TargetDetail, as_json, detail, fleet

__all__ = ["StatusSource", "add_status_routes"]

StatusSource = Callable[[], StatusInputs]

_STATIC_TYPES = {"status.css": "text/css", "status.js": "text/javascript", "favicon.svg": "image/svg+xml"}
#: Pages are always current; the stylesheet and script change only with the version (their URLs carry it).
_NO_STORE = {"Cache-Control": "no-store"}


def _static(name: str) -> bytes:
    return resources.files("comfywatch.status").joinpath("static", name).read_bytes()


def _page_number(request: web.Request) -> int:
    raw = request.query.get("page", "1")
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 6 else 1


def add_status_routes(app: web.Application, source: StatusSource) -> None:
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

    async def fleet_page(request: web.Request) -> web.Response:
        return web.Response(text=html.render_fleet(_fleet(), page=_page_number(request)), content_type="text/html",
                            headers=_NO_STORE)

    async def target_page(request: web.Request) -> web.Response:
        return web.Response(text=html.render_target(_target(request)), content_type="text/html",
                            headers=_NO_STORE)

    async def fleet_json(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(as_json(_fleet()), allow_nan=False),
                            content_type="application/json", headers=_NO_STORE)

    async def target_json(request: web.Request) -> web.Response:
        document = as_json(_target(request))
        return web.Response(text=json.dumps(document, allow_nan=False),
                            content_type="application/json", headers=_NO_STORE)

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
