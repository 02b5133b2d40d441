"""What a golden comparison leaves out, in one place: values no fixed clock can pin down.

Everything else is compared byte for byte: metric names, label sets, order, HELP/TYPE lines and every other
value; doctor's check ids, statuses, summaries, hints, details and exit codes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["ELAPSED", "mask_doctor", "mask_exposition"]

ELAPSED = "<elapsed>"
PORT = "<port>"

#: Ephemeral ports of the simulators (and of the port nothing listens on), wherever an URL shows one.
_LOOPBACK_PORT = re.compile(r"(127\.0\.0\.1|localhost):\d+")

# /metrics ------------------------------------------------------------------------------------------------

#: Series whose values are real elapsed times (request and check durations, HTTP and canary phases: histogram
#: buckets and sums of latencies, but not their counts) or figures of the rendering process itself.
ELAPSED_SERIES = frozenset({
    "comfyui_request_duration_seconds_bucket",
    "comfyui_request_duration_seconds_sum",
    "comfyui_http_phase_seconds",
    "comfyui_canary_phase_seconds",
    "comfyui_canary_duration_seconds_bucket",
    "comfyui_canary_duration_seconds_sum",
    "comfywatch_check_duration_seconds",
    "comfywatch_asyncio_tasks",
    "comfywatch_polls_total",
    "comfywatch_quiet_polls_total",
    "process_resident_memory_bytes",
    "process_open_fds",
})
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{.*\})? (?P<value>\S+)$")


def mask_exposition(text: str) -> str:
    """*text* (Prometheus text or OpenMetrics) with elapsed values and loopback ports replaced."""
    lines = []
    for line in text.split("\n"):
        sample = _SAMPLE.match(line)
        if sample is not None and sample["name"] in ELAPSED_SERIES:
            line = f"{sample['name']}{sample['labels'] or ''} {ELAPSED}"
        lines.append(_LOOPBACK_PORT.sub(rf"\1:{PORT}", line))
    return "\n".join(lines)


# doctor --json -------------------------------------------------------------------------------------------

#: ``details`` keys that hold measured durations: DNS/TCP/HTTP/WebSocket timings, HTTP and canary phases,
#: the server's own execution time, and the clock skew measured over one request.
DOCTOR_TIMING_KEYS = frozenset({"seconds", "phases", "server_seconds", "skew_seconds"})
#: Measured durations inside text (summaries, the canary's phase table): milliseconds, and the skew rounded.
_TIMING_TEXT = (
    (re.compile(r" *\d+(?:\.\d+)? ms\b"), f" {ELAPSED} ms"),
    (re.compile(r"clock skew [+-]\d+ s\b"), f"clock skew {ELAPSED} s"),
)
#: The simulator's ``Server`` header, which doctor quotes: the Python and aiohttp running the tests, not
#: anything of comfywatch's.
_SIMULATOR_SOFTWARE = (re.compile(r"Python/[\w.]+ aiohttp/[\w.]+"), "Python/<version> aiohttp/<version>")


def _mask_text(text: str, ports: Iterable[int]) -> str:
    for pattern, replacement in (*_TIMING_TEXT, _SIMULATOR_SOFTWARE):
        text = pattern.sub(replacement, text)
    text = _LOOPBACK_PORT.sub(rf"\1:{PORT}", text)
    for port in ports:
        # A hint may name the bare port ("Is ComfyUI running, and on port 41234?").
        text = re.sub(rf"\b{port}\b", PORT, text)
    return text


def _mask_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _mask_timings(item) for key, item in value.items()}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ELAPSED
    return value


def mask_doctor(value: Any, ports: Iterable[int]) -> Any:
    """A doctor report with timings (numbers only: which phases were measured stays) and the simulator's
    *ports* replaced, at any depth."""
    ports = tuple(ports)
    if isinstance(value, dict):
        return {key: _mask_timings(item) if key in DOCTOR_TIMING_KEYS else mask_doctor(item, ports)
                for key, item in value.items()}
    if isinstance(value, list):
        return [mask_doctor(item, ports) for item in value]
    if isinstance(value, str):
        return _mask_text(value, ports)
    return value
