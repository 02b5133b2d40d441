"""The exporter's HTTP server: ``/metrics``, ``/probe``, ``/healthz`` and a landing page (aiohttp)."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from comfywatch import __version__
from comfywatch.exporter import DaemonInfo, render_metrics
from comfywatch.exposition import choose_format
from comfywatch.state import TargetState

__all__ = ["MetricsSource", "create_app"]

MetricsSource = Callable[[], tuple[Sequence[TargetState], DaemonInfo]]
ProbeHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HealthCheck = Callable[[], bool]


def _landing(sources: MetricsSource) -> str:
    states, _ = sources()
    rows = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{html.escape(s.kind)}</td>"
        f"<td>{'up' if s.up == 1.0 else ('down: ' + html.escape(str(s.up_reason)) if s.up == 0.0 else 'pending')}"
        "</td></tr>"
        for s in states[:200]
    )
    return (
        "<!doctype html><html><head><title>comfywatch</title></head><body>"
        f"<h1>comfywatch {html.escape(__version__)}</h1>"
        '<p><a href="/metrics">Metrics</a> · <a href="/healthz">Health</a> · '
        "<code>/probe?target=URL&amp;module=local</code></p>"
        f"<table><tr><th>target</th><th>kind</th><th>state</th></tr>{rows}</table></body></html>"
    )


def create_app(
    source: MetricsSource,
    *,
    probe: ProbeHandler | None = None,
    healthy: HealthCheck | None = None,
    middlewares: Sequence[object] = (),
) -> web.Application:
    """The exporter app. *source* returns a consistent (states, daemon info) pair at render time."""

    async def metrics(request: web.Request) -> web.Response:
        openmetrics, content_type = choose_format(request.headers.get("Accept"))
        states, daemon = source()
        body = render_metrics(states, daemon=daemon, openmetrics=openmetrics)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        if "gzip" in request.headers.get("Accept-Encoding", "") and len(body) > 4096:
            response.enable_compression()
        return response

    async def healthz(request: web.Request) -> web.Response:
        ok = healthy() if healthy is not None else True
        return web.Response(text="ok\n" if ok else "scheduler stalled\n", status=200 if ok else 503)

    async def landing(request: web.Request) -> web.Response:
        return web.Response(text=_landing(source), content_type="text/html")

    async def no_probe(request: web.Request) -> web.Response:
        return web.Response(text="probing is not available\n", status=404)

    app = web.Application(middlewares=list(middlewares))  # type: ignore[arg-type]
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", landing)
    app.router.add_get("/probe", probe or no_probe)
    return app
