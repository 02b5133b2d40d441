"""HTTP phase timings from httpx's ``trace`` extension, for ``comfyui_http_phase_seconds{phase}``.

httpcore reports ``<prefix>.<event>.started|complete|failed`` (prefix ``connection``, ``http11``,
``http2`` ...) for ``connect_tcp``, ``start_tls``, ``send_request_headers``, ``send_request_body``,
``receive_response_headers``, ``receive_response_body`` and ``response_closed``. Two facts shape this
module:

- There is no DNS event: ``connect_tcp`` includes ``getaddrinfo``. A caller that wants a DNS phase times
  its own resolution first (``comfywatch.clients.net.resolve``) and passes the seconds in; ``connect`` is
  then ``connect_tcp`` minus that figure.
- A request on a reused keep-alive connection emits no connect or TLS events: ``reused`` is True and
  those phases are None.

Phases (seconds): ``connect`` = connect_tcp (minus dns), ``tls`` = start_tls, ``processing`` = request
fully sent → response headers received (time to first byte), ``transfer`` = headers → body fully read.

Usage::

    recorder = PhaseRecorder(dns=dns_result.seconds)
    response = await client.get(url, extensions={"trace": recorder})
    timings = recorder.timings()

The accounting is pure: ``record(name, at=...)`` takes synthetic events and timestamps, and the clock is
injectable, so the logic is tested without sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["PHASES", "PhaseRecorder", "PhaseTimings"]

#: Values of the ``phase`` label, in the order a request goes through them.
PHASES: Final = ("dns", "connect", "tls", "processing", "transfer")


@dataclass(frozen=True, slots=True)
class PhaseTimings:
    """Durations of one HTTP request's phases in seconds; None when the phase did not happen or failed."""

    dns: float | None
    connect: float | None
    tls: float | None
    processing: float | None
    transfer: float | None
    reused: bool  # the request went over a kept-alive connection: no dns/connect/tls cost was paid

    def as_metrics(self) -> dict[str, float]:
        """One value per ``PHASES`` label for the gauge; a phase that did not happen counts as 0.

        This matches blackbox_exporter, which reports ``tls`` 0 for plain http, and reports what the
        request really spent when the connection was reused.
        """
        return {phase: getattr(self, phase) or 0.0 for phase in PHASES}


# Events that open a new request/response exchange; seeing one after a finished exchange (a redirect, a
# retry on a new connection) starts the accounting over, so the last exchange wins.
_OPENERS: Final = frozenset({"connect_tcp", "send_request_headers"})


class PhaseRecorder:
    """An httpx ``trace`` callback that accumulates one request's phase timings.

    Use one recorder per request (``extensions={"trace": recorder}``); with redirects the last hop wins.
    """

    def __init__(self, *, dns: float | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        """Start an empty recording.

        ``dns`` is the seconds the caller spent resolving the host before the request, if it did;
        ``clock`` is a monotonic clock in seconds, injectable for tests.
        """
        self.dns = dns
        self._clock = clock
        self._marks: dict[tuple[str, str], float] = {}

    async def __call__(self, name: str, info: Mapping[str, Any]) -> None:
        """The callback httpx's async transport awaits for every trace event."""
        self.record(name)

    def record(self, name: str, at: float | None = None) -> None:
        """Note trace event ``name`` (e.g. ``"connection.connect_tcp.started"``) at ``at`` or now."""
        _prefix, _, rest = name.partition(".")
        event, _, stage = rest.rpartition(".")
        if not event:
            return
        when = self._clock() if at is None else at
        if event in _OPENERS and stage == "started" and self._finished():
            self._marks.clear()
        # the first occurrence counts: an event is reported once per exchange
        self._marks.setdefault((event, stage), when)

    def _finished(self) -> bool:
        return ("receive_response_headers", "complete") in self._marks

    def _span(self, start: tuple[str, str], end: tuple[str, str]) -> float | None:
        a, b = self._marks.get(start), self._marks.get(end)
        return None if a is None or b is None else max(0.0, b - a)

    def timings(self) -> PhaseTimings:
        """The phases recorded so far (a request that failed part-way has None for later phases)."""
        marks = self._marks
        connect = self._span(("connect_tcp", "started"), ("connect_tcp", "complete"))
        if connect is not None and self.dns is not None:
            # connect_tcp re-resolves the name; the caller's own resolution stands in for that share
            connect = max(0.0, connect - self.dns)
        sent = marks.get(("send_request_body", "complete"), marks.get(("send_request_headers", "complete")))
        headers = marks.get(("receive_response_headers", "complete"))
        processing = None if sent is None or headers is None else max(0.0, headers - sent)
        return PhaseTimings(
            dns=self.dns,
            connect=connect,
            tls=self._span(("start_tls", "started"), ("start_tls", "complete")),
            processing=processing,
            transfer=self._span(
                ("receive_response_headers", "complete"), ("receive_response_body", "complete")
            ),
            reused=("send_request_headers", "started") in marks and ("connect_tcp", "started") not in marks,
        )
