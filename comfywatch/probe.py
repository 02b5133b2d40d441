"""``/probe?target=URL&module=NAME``: a stateless, blackbox_exporter-style probe.

Each request builds a fresh client and state, runs the module's checks once within the scrape timeout
Prometheus announces, renders the result without a ``target`` label, and forgets everything. It never
runs a canary: probes must be cheap and side-effect free.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote, urlsplit

from aiohttp import web

from comfywatch.checks import jobs as jobs_check
from comfywatch.checks import queue as queue_check
from comfywatch.checks import system as system_check
from comfywatch.clients.http import RequestFailed
from comfywatch.config import Config, Credentials, ProbeModule, TargetConfig, parse_headers_file
from comfywatch.errors import Reason
from comfywatch.exporter import collect
from comfywatch.exposition import Family, MetricDef, choose_format, render
from comfywatch.runtime import build_runtime

__all__ = ["PROBE_DURATION", "PROBE_SUCCESS", "make_probe_handler"]

PROBE_SUCCESS = MetricDef("comfyui_probe_success", "gauge", "1 if every check of the probe succeeded.")
PROBE_DURATION = MetricDef("comfyui_probe_duration_seconds", "gauge", "How long the probe took.")
DEFAULT_SCRAPE_TIMEOUT = 10.0


def _module_credentials(module: ProbeModule, url: str) -> Credentials:
    """The module's header files, plus basic auth from the target URL's userinfo (like configured targets)."""
    headers: dict[str, str] = {}
    if module.headers_file is not None:
        headers.update(parse_headers_file(module.headers_file.read_text(encoding="utf-8")))
    if module.bearer_token_file is not None:
        headers["Authorization"] = "Bearer " + module.bearer_token_file.read_text(encoding="utf-8").strip()
    parts = urlsplit(url)
    basic = (unquote(parts.username), unquote(parts.password or "")) if parts.username is not None else None
    return Credentials(headers=headers, basic_auth=basic)


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "target has an invalid port"
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "target must be an http(s) URL"
    return None


def _timeout_from(request: web.Request, module: ProbeModule) -> float:
    header = request.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
    try:
        scrape = float(header) if header else DEFAULT_SCRAPE_TIMEOUT
    except ValueError:
        scrape = DEFAULT_SCRAPE_TIMEOUT
    # Leave half a second to render and send before Prometheus gives up on the scrape.
    return max(0.2, min(module.timeout, scrape - 0.5))


def make_probe_handler(
    get_config: Callable[[], Config | None],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.Response:
        config = get_config()
        if config is None:
            return web.Response(status=503, text="not configured\n")
        url = request.query.get("target", "")
        module_name = request.query.get("module", "local")
        module = config.modules.get(module_name)
        if module is None:
            return web.Response(status=400, text=f"unknown module {module_name[:60]!r}\n")
        problem = _url_problem(url)
        if problem is not None:
            # Never echo the target: its userinfo may hold a password.
            return web.Response(status=400, text=problem + "\n")
        if module.kind != "local":
            return web.Response(status=400, text="only local modules can be probed\n")
        timeout = _timeout_from(request, module)
        try:
            # Each request gives up a little before the whole probe does, so a slow server is reported as
            # a counted ``timeout`` failure rather than cut off by the probe's deadline.
            target = TargetConfig(name="probe", kind="local", url=url, timeout=max(0.1, timeout - 0.1))
        except ValueError:
            return web.Response(status=400, text="target is not a usable URL\n")
        try:
            credentials = _module_credentials(module, url)
        except (OSError, ValueError):
            return web.Response(status=500, text="module credentials unreadable\n")
        runtime = build_runtime(config, target, credentials=credentials)
        assert runtime.local is not None
        started = time.perf_counter()
        ok = True
        try:
            async with asyncio.timeout(timeout):
                for check in module.checks:
                    try:
                        if check == "system":
                            await system_check.run(runtime.local, runtime.state)
                        elif check == "queue":
                            await queue_check.run(runtime.local, runtime.state)
                        elif check == "jobs":
                            await jobs_check.run(runtime.local, runtime.state)
                    except RequestFailed:
                        ok = False
                        if check == "system":
                            break
        except TimeoutError:
            ok = False
            if runtime.state.up is None or check == "system":
                runtime.state.set_up(False, Reason.TIMEOUT)
        finally:
            await runtime.close()
        openmetrics, content_type = choose_format(request.headers.get("Accept"))
        summary = [Family(PROBE_SUCCESS, [("", 1.0 if ok else 0.0)]),
                   Family(PROBE_DURATION, [("", time.perf_counter() - started)])]
        families = summary + collect([runtime.state], daemon=None, with_target=False)
        body = render(families, openmetrics=openmetrics)
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    return handler
