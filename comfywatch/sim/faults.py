"""Fault names of the simulated ComfyUI, what each one does, and the HTTP responses the proxy-style faults send.

Faults are switched per target (``--fault NAME`` at start, the admin API or :class:`SimHandle` at run
time). :data:`FAULT_DESCRIPTIONS` is the one description of each fault; ``comfywatch simulate --help`` prints
it. HTTP faults never touch the admin API, which has its own port.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Final

from aiohttp import web

__all__ = [
    "DEFAULT_SLOW_MS",
    "FAULT_DESCRIPTIONS",
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


FAULT_DESCRIPTIONS: Final[Mapping[Fault, str]] = {
    Fault.DOWN: "connection refused: the port closes until cleared (targets /t/i: connections aborted)",
    Fault.SLOW: "every HTTP response and the /ws handshake is delayed by slow_ms (default 3000)",
    Fault.STALL: "the running job stops making progress and never finishes until cleared or interrupted",
    Fault.WORKER_DEAD: "the worker takes nothing more from the queue: pending jobs pile up",
    Fault.EXECUTION_ERROR: "every job fails at run time with a RuntimeError",
    Fault.OOM: "every job fails at run time with torch.OutOfMemoryError (PyTorch's CUDA message)",
    Fault.HTTP_401: "every request, /ws included, gets an auth proxy's 401 page (WWW-Authenticate: Basic)",
    Fault.HTTP_403: "every request gets an empty 403, like ComfyUI's own refusal of a foreign Origin",
    Fault.HTTP_429: "every request gets a rate limiter's 429 page with Retry-After: 7",
    Fault.HTTP_500: "every request gets aiohttp's 500 for a crashed handler, and the connection closes",
    Fault.HTTP_502_HTML: "every request gets nginx's 502 Bad Gateway page (dead upstream)",
    Fault.GARBAGE_JSON: "every HTTP request gets 200 application/json with a body that is not JSON",
    Fault.HUGE_BODY: "every HTTP request gets 200 JSON streaming 2 GiB (stops when the client hangs up)",
    Fault.RESTART: "one-shot process restart: queue, history, prompt counter, cache, temp files, sockets gone",
    Fault.WS_NO_UPGRADE: "a proxy that strips Upgrade: GET /ws gets aiohttp's 400 for a plain GET",
    Fault.WS_SILENT: "the /ws upgrade succeeds but nothing is ever sent on the socket",
}
"""What each fault does, in one line (``comfywatch simulate --help`` and docs/simulator.md)."""


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
