"""Fault names of the simulated ComfyUI and the HTTP responses the proxy-style faults send.

Faults are switched per target (``--fault NAME`` at start, the admin API or :class:`SimHandle` at run
time). What each one does:

- ``down``: connection refused. For the root target the listening socket is closed (and reopened on the
  same port when cleared); prefixed targets (``/t/i``) share that socket, so their connections are
  aborted without a response instead.
- ``slow``: every HTTP response (and the ``/ws`` handshake) is delayed by ``slow_ms`` (default 3000).
- ``stall``: the running job stops making progress and never finishes (no WebSocket frames) until the
  fault is cleared or the job is interrupted.
- ``worker_dead``: the worker takes nothing more from the queue; pending jobs pile up.
- ``execution_error`` / ``oom``: every job fails at run time (``execution_error`` with a generic
  ``RuntimeError`` / ``torch.OutOfMemoryError`` with PyTorch's CUDA message).
- ``http_401`` / ``http_403`` / ``http_429`` / ``http_500`` / ``http_502_html``: what an auth proxy,
  rate limiter or dead upstream answers instead of ComfyUI.
- ``garbage_json``: 200 ``application/json`` whose body is not JSON. ``huge_body``: 200 JSON streaming
  2 GiB lazily.
- ``restart``: one-shot; empties queue and history, resets the counter, drops WebSockets.
- ``ws_no_upgrade``: a proxy that strips ``Upgrade``: ``GET /ws`` gets aiohttp's own 400 answer to a
  plain GET on a WebSocket route. ``ws_silent``: the upgrade succeeds but nothing is ever sent.

HTTP faults never touch the admin API, which has its own port.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from aiohttp import web

__all__ = [
    "DEFAULT_SLOW_MS",
    "HTTP_STATUS_FAULTS",
    "HUGE_BODY_BYTES",
    "JOB_FAILURE_FAULTS",
    "Fault",
    "garbage_json_response",
    "http_fault_response",
    "parse_faults",
    "stream_huge_body",
    "ws_no_upgrade_response",
]

DEFAULT_SLOW_MS = 3000
HUGE_BODY_BYTES = 2 * 1024**3
_HUGE_CHUNK = b"x" * (64 * 1024)
_PROXY_SERVER = "nginx/1.24.0 (Ubuntu)"


class Fault(StrEnum):
    """Every fault the simulated ComfyUI can inject."""

    DOWN = "down"
    SLOW = "slow"
    STALL = "stall"
    WORKER_DEAD = "worker_dead"
    EXECUTION_ERROR = "execution_error"
    OOM = "oom"
    HTTP_401 = "http_401"
    HTTP_403 = "http_403"
    HTTP_429 = "http_429"
    HTTP_500 = "http_500"
    HTTP_502_HTML = "http_502_html"
    GARBAGE_JSON = "garbage_json"
    HUGE_BODY = "huge_body"
    RESTART = "restart"
    WS_NO_UPGRADE = "ws_no_upgrade"
    WS_SILENT = "ws_silent"


# Faults that answer any ComfyUI request (HTTP or the /ws handshake) with a canned status.
HTTP_STATUS_FAULTS = (Fault.HTTP_401, Fault.HTTP_403, Fault.HTTP_429, Fault.HTTP_500, Fault.HTTP_502_HTML)
# Faults that make every job fail at run time.
JOB_FAILURE_FAULTS = (Fault.OOM, Fault.EXECUTION_ERROR)


def parse_faults(names: Iterable[str]) -> frozenset[Fault]:
    """Validate fault names; raise ``ValueError`` naming the unknown ones and the valid choices."""
    wanted = list(names)
    unknown = sorted({name for name in wanted if name not in Fault._value2member_map_})
    if unknown:
        valid = ", ".join(f.value for f in Fault)
        raise ValueError(f"unknown fault(s): {', '.join(unknown)} (valid: {valid})")
    return frozenset(Fault(name) for name in wanted)


def _nginx_page(status_line: str) -> str:
    # nginx's built-in error page, byte for byte apart from the version string.
    return (
        f"<html>\r\n<head><title>{status_line}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status_line}</h1></center>\r\n<hr><center>{_PROXY_SERVER}</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


def http_fault_response(fault: Fault) -> web.Response:
    """The response a proxy (or a crashing handler, for ``http_500``) sends for a status fault."""
    if fault is Fault.HTTP_401:
        return web.Response(
            status=401,
            text=_nginx_page("401 Authorization Required"),
            content_type="text/html",
            headers={"WWW-Authenticate": 'Basic realm="ComfyUI"', "Server": _PROXY_SERVER},
        )
    if fault is Fault.HTTP_403:
        # Same as ComfyUI's own Origin-check refusal: no body, no content type.
        return web.Response(status=403)
    if fault is Fault.HTTP_429:
        return web.Response(
            status=429,
            text=_nginx_page("429 Too Many Requests"),
            content_type="text/html",
            headers={"Retry-After": "7", "Server": _PROXY_SERVER},
        )
    if fault is Fault.HTTP_500:
        return server_error_500()
    if fault is Fault.HTTP_502_HTML:
        return web.Response(
            status=502,
            text=_nginx_page("502 Bad Gateway"),
            content_type="text/html",
            headers={"Server": _PROXY_SERVER},
        )
    raise ValueError(f"{fault} is not an HTTP status fault")


def server_error_500() -> web.Response:
    """aiohttp's answer to an exception escaping a handler, exactly as ComfyUI serves it."""
    response = web.Response(
        status=500,
        text="500 Internal Server Error\n\nServer got itself in trouble",
        content_type="text/plain",
    )
    # aiohttp closes the connection after an unhandled exception ("Connection: close").
    response.force_close()
    return response


def garbage_json_response() -> web.Response:
    """200 with a JSON content type and a body no JSON parser accepts (a truncated, corrupted write)."""
    body = b'{"exec_info": {"queue_remaining": 0}, "queue_running": [[12, "5f0e\x00\xff<html><body>upstream'
    return web.Response(status=200, body=body, content_type="application/json", charset="utf-8")


def ws_no_upgrade_response() -> web.Response:
    """What aiohttp answers when ``GET /ws`` reaches it without ``Upgrade: websocket`` (a stripping proxy)."""
    return web.Response(
        status=400,
        text='No WebSocket UPGRADE hdr: None\n Can "Upgrade" only to "WebSocket".',
        content_type="text/plain",
    )


async def stream_huge_body(request: web.Request) -> tuple[web.StreamResponse, int]:
    """Stream a 2 GiB JSON-looking body lazily; stop as soon as the client goes away.

    Only one 64 KiB chunk ever exists. Returns the response and how many bytes were written, so the
    caller can show that the stream stopped early.
    """
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.charset = "utf-8"
    response.content_length = HUGE_BODY_BYTES
    head, tail = b'{"pad": "', b'"}'
    written = 0
    try:
        await response.prepare(request)
        await response.write(head)
        written = len(head)
        limit = HUGE_BODY_BYTES - len(tail)
        while written < limit:
            if request.transport is None or request.transport.is_closing():
                return response, written
            chunk = _HUGE_CHUNK if limit - written >= len(_HUGE_CHUNK) else _HUGE_CHUNK[: limit - written]
            await response.write(chunk)
            written += len(chunk)
        await response.write(tail)
        written += len(tail)
        await response.write_eof()
    except ConnectionError:
        # The client hung up: the expected way for this response to end.
        pass
    return response, written
