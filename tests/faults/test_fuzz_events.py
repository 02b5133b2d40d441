"""Fuzzing what a hostile server can push into the daemon without going through the HTTP parsers.

The parsers, the config loader and the linter have their own fuzz tests (tests/unit); these cover the rest:

* ``PromptFollower.feed``: arbitrary event sequences keep the follower's invariants (a failure is final, the
  reason always comes with the FAILED state, durations are never negative, other prompts never matter).
* ``parse_ws_text`` on text decoded from arbitrary bytes, chained into a follower: ParseError or an event.
* The monitor's message loop (``WebSocketMonitor._session``) driven by a fake connection: any mix of frames
  and any way of ending leaves the daemon with a closed socket, one re-check and no exception.
* ``classify_exception`` / ``classify_status``: any exception (chains, cycles, odd attributes), any status.
* ``parse_file_sd``: any decoded document gives targets and problems, never an exception or a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import socket
import ssl
from collections.abc import Callable
from typing import Any
from unittest import mock

import aiohttp
import httpx
import pytest
import structlog
import websockets.exceptions as wse
from aiohttp import http_exceptions
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.http11 import Response

from comfywatch.config import DiscoveryConfig
from comfywatch.daemon import ws_monitor as monitor_module
from comfywatch.daemon.discovery import MAX_TARGETS_PER_FILE, parse_file_sd
from comfywatch.daemon.ws_monitor import PROGRESS_EVENTS, WebSocketMonitor
from comfywatch.errors import (
    JOB_REASONS,
    TRANSPORT_REASONS,
    BodyTooLargeError,
    Failure,
    ParseError,
    Reason,
    classify_exception,
    classify_status,
)
from comfywatch.parse.canary_events import Progress, PromptFollower
from comfywatch.parse.prompt import WsEvent, parse_ws_text
from comfywatch.state import TargetState
from tests.strategies import FUZZ, json_trees, scalars

SECRET = "s3cr3t-fuzz-pw"
PROMPT = "p-own"

# ---------------------------------------------------------------------------------------------------------
# Values and events.

json_values = json_trees(key_size=8, leaves=20)
EVENT_TYPES = ("status", "execution_start", "execution_cached", "executing", "executed", "progress",
               "progress_state", "execution_success", "execution_error", "execution_interrupted", "feature_flags")
small_json = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=5,
)
KEYS = ("prompt_id", "timestamp", "node", "output", "exception_type", "exception_message", "node_type", "nodes")
timestamps = st.integers(min_value=0, max_value=2**45) | scalars
event_data = st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=6),
    st.one_of(timestamps, small_json, st.sampled_from(["torch.OutOfMemoryError", "RuntimeError", None])),
    max_size=5,
)
events = st.builds(
    WsEvent,
    type=st.sampled_from(EVENT_TYPES) | st.text(max_size=10),
    data=event_data,
    prompt_id=st.sampled_from([PROMPT, "p-other"]) | st.none() | st.text(max_size=4),
)
#: (event, arrival time) with non-decreasing local times, as the canary feeds them.
timelines = st.lists(st.tuples(events, st.floats(min_value=0, max_value=5, allow_nan=False)), max_size=12).map(
    lambda pairs: [(event, sum(step for _, step in pairs[: i + 1])) for i, (event, _) in enumerate(pairs)]
)


def _final(follower: PromptFollower) -> tuple[Any, ...]:
    return (follower.state, follower.failure, follower.failure_detail, follower.started_at, follower.succeeded_at,
            follower.ended_at, follower.server_start_ms, follower.server_end_ms, follower.last_activity,
            json.dumps(follower.outputs, sort_keys=True, default=repr))


class TestPromptFollowerInvariants:
    @FUZZ
    @given(timelines)
    def test_invariants_hold_after_every_event(self, timeline: list[tuple[WsEvent, float]]) -> None:
        """After each event: a failure reason comes exactly with FAILED, finished never reverts, times are sane."""
        follower = PromptFollower(PROMPT)
        was_finished = False
        for event, at in timeline:
            follower.feed(event, at)
            assert (follower.failure is not None) == (follower.state is Progress.FAILED)
            assert follower.failure is None or follower.failure in JOB_REASONS
            assert len(follower.failure_detail) <= 200
            assert follower.finished or not was_finished, "a finished prompt became unfinished"
            was_finished = follower.finished
            seconds = follower.server_seconds
            assert seconds is None or (math.isfinite(seconds) and seconds >= 0)
            for moment in (follower.started_at, follower.succeeded_at, follower.ended_at):
                assert moment is None or 0 <= moment <= at
            assert len(follower.outputs) <= 64

    @FUZZ
    @given(timelines)
    def test_failure_is_final(self, timeline: list[tuple[WsEvent, float]]) -> None:
        """Once FAILED, no later event (success, end marker, progress) turns the prompt into a success."""
        follower = PromptFollower(PROMPT)
        failed = False
        for event, at in timeline:
            follower.feed(event, at)
            failed = failed or follower.state is Progress.FAILED
            if failed:
                assert follower.state is Progress.FAILED

    @FUZZ
    @given(timelines, st.lists(events, max_size=8))
    def test_other_prompts_change_nothing(self, timeline: list[tuple[WsEvent, float]], noise: list[WsEvent]) -> None:
        """Interleaving events of other prompts (or none) leaves the outcome exactly as without them."""
        clean = PromptFollower(PROMPT)
        mixed = PromptFollower(PROMPT)
        others = [WsEvent(e.type, e.data, None if e.prompt_id == PROMPT else e.prompt_id) for e in noise]
        for index, (event, at) in enumerate(timeline):
            clean.feed(event, at)
            if index < len(others):
                mixed.feed(others[index], at)
            mixed.feed(event, at)
        assert _final(mixed) == _final(clean)


# ---------------------------------------------------------------------------------------------------------
# Bytes -> text -> event -> follower.

frame_texts = (
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", errors="surrogateescape"))
    | st.binary(max_size=200).map(lambda b: b.decode("latin-1"))
    | json_values.map(lambda v: json.dumps({"type": "executing", "data": v}, allow_nan=True).encode("utf-16")
                      .decode("latin-1"))
    | st.builds(lambda kind, data: json.dumps({"type": kind, "data": data}, allow_nan=True),
                st.sampled_from(EVENT_TYPES), event_data)
)


class TestFramePipeline:
    @FUZZ
    @given(st.lists(frame_texts, max_size=6))
    def test_decoded_bytes_parse_or_raise_parse_error(self, texts: list[str]) -> None:
        """Text decoded from arbitrary bytes gives a well-formed event or ParseError; the follower absorbs it."""
        follower = PromptFollower(PROMPT)
        for at, text in enumerate(texts):
            try:
                event = parse_ws_text(text)
            except ParseError:
                continue
            assert isinstance(event.type, str) and isinstance(event.data, dict)
            assert event.prompt_id is None or isinstance(event.prompt_id, str)
            follower.feed(event, float(at))
        assert follower.state in set(Progress)

    @pytest.mark.parametrize("text", ["[" * 100_000, '{"type": "x", "data": ' * 50_000, " " * (4 * 2**20 + 1)])
    def test_pathological_frames(self, text: str) -> None:
        """Deep nesting and oversized frames are ParseError, not RecursionError or a memory blow-up."""
        with pytest.raises(ParseError):
            parse_ws_text(text)


# ---------------------------------------------------------------------------------------------------------
# The monitor's message loop, without sockets.


class _FakeApi:
    def ws_url(self, client_id: str) -> str:
        return f"ws://127.0.0.1:1/ws?clientId={client_id}"

    def ws_headers(self) -> dict[str, str]:
        return {}


class _FakeConnection:
    """Yields *messages*, then ends cleanly or raises *ending*; records whether it was closed."""

    def __init__(self, messages: list[str | bytes], ending: BaseException | None) -> None:
        self.messages = messages
        self.ending = ending
        self.closed = False

    def __aiter__(self) -> _FakeConnection:
        return self

    async def __anext__(self) -> str | bytes:
        if self.messages:
            return self.messages.pop(0)
        if self.ending is not None:
            raise self.ending
        self.closed = True  # a clean end of iteration is the server's close handshake
        raise StopAsyncIteration

    async def close(self) -> None:
        self.closed = True


_CLOSED = wse.ConnectionClosedError(None, None)
endings = st.sampled_from([None, _CLOSED, wse.ConnectionClosedOK(None, None), OSError(104, "reset"),
                           TimeoutError(), RuntimeError("bug"), ValueError("odd"), wse.ProtocolError("bad")])
monitor_messages = st.lists(frame_texts | st.binary(max_size=40), max_size=8)


def _run_session(messages: list[str | bytes], ending: BaseException | None,
                 connect_error: BaseException | None = None) -> tuple[TargetState, list[str | None], int,
                                                                      _FakeConnection | None, float | None]:
    state = TargetState("t", "local", "http://x", endpoints=())
    progressed: list[str | None] = []
    original = state.queue_tracker.progress

    def record(prompt_id: str | None, now: float) -> None:
        progressed.append(prompt_id)
        original(prompt_id, now)

    state.queue_tracker.progress = record  # type: ignore[method-assign]
    disconnects = 0

    def on_disconnect() -> None:
        nonlocal disconnects
        disconnects += 1

    connection = None if connect_error is not None else _FakeConnection(list(messages), ending)

    async def fake_connect(server: _FakeApi, client_id: str, **kwargs: Any) -> _FakeConnection:
        if connection is None:
            assert connect_error is not None
            raise connect_error
        return connection

    monitor = WebSocketMonitor(_FakeApi(), state, on_disconnect=on_disconnect)
    with mock.patch.object(monitor_module, "connect", fake_connect), structlog.testing.capture_logs():
        connected_at = asyncio.run(monitor._session())
    return state, progressed, disconnects, connection, connected_at


def _expected_progress(messages: list[str | bytes]) -> list[str | None]:
    wanted: list[str | None] = []
    for message in messages:
        if isinstance(message, bytes):
            continue
        try:
            event = parse_ws_text(message)
        except ParseError:
            continue
        if event.type in PROGRESS_EVENTS:
            wanted.append(event.prompt_id)
    return wanted


class TestMonitorLoop:
    @settings(FUZZ, max_examples=60)
    @given(monitor_messages, endings)
    def test_any_frames_any_ending(self, messages: list[str | bytes], ending: BaseException | None) -> None:
        """Any frames, any ending: progress noted for exactly the progress events, one re-check, socket closed."""
        state, progressed, disconnects, connection, connected_at = _run_session(messages, ending)
        assert connected_at is not None
        assert progressed == _expected_progress(messages)
        assert disconnects == 1
        assert state.websocket_connected == 0.0
        assert connection is not None
        assert connection.closed

    @settings(FUZZ, max_examples=30)
    @given(st.sampled_from([OSError(111, "refused"), TimeoutError(), wse.InvalidURI("ws://x", "bad"),
                            wse.InvalidStatus(Response(403, "Forbidden", Headers(), b"")), ValueError("x"),
                            RuntimeError("x"), socket.gaierror(-2, "no name"), ssl.SSLError(1, "bad cert")]))
    def test_connect_failures(self, error: BaseException) -> None:
        """A failed connect marks the socket down and triggers no re-check (nothing was lost)."""
        state, progressed, disconnects, _, connected_at = _run_session([], None, connect_error=error)
        assert connected_at is None and disconnects == 0 and progressed == []
        assert state.websocket_connected == 0.0


# ---------------------------------------------------------------------------------------------------------
# Classification.


def _request_info() -> aiohttp.RequestInfo:
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    url = URL("http://127.0.0.1:1/api/system_stats")
    return aiohttp.RequestInfo(url, "GET", CIMultiDictProxy(CIMultiDict()), url)


#: Builders of the exceptions a request, a WebSocket or a parser can raise, each given an arbitrary text.
BUILDERS: list[Callable[[str], BaseException]] = [
    Exception, ValueError, RuntimeError, KeyError, TypeError, EOFError, TimeoutError, asyncio.TimeoutError,
    RecursionError, OSError, ConnectionResetError, ConnectionRefusedError, BrokenPipeError,
    lambda t: OSError(101, t),
    lambda t: socket.gaierror(socket.EAI_NONAME, t),
    lambda t: ssl.SSLError(1, t),
    lambda t: ssl.SSLCertVerificationError(1, t),
    lambda t: ssl.CertificateError(t),
    lambda t: UnicodeDecodeError("utf-8", t.encode("utf-8", "surrogatepass"), 0, 1, "invalid"),
    lambda t: json.JSONDecodeError("Expecting value", t, 0),
    lambda t: asyncio.IncompleteReadError(t.encode("utf-8", "surrogatepass"), 10),
    ParseError,
    lambda t: BodyTooLargeError(len(t)),
    httpx.ConnectError, httpx.ReadTimeout, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.TooManyRedirects,
    aiohttp.ClientError, aiohttp.ClientConnectionError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
    aiohttp.ServerTimeoutError, aiohttp.SocketTimeoutError, aiohttp.ConnectionTimeoutError,
    lambda t: aiohttp.ClientOSError(104, t),
    lambda t: aiohttp.ClientResponseError(_request_info(), (), status=500, message=t),
    lambda t: aiohttp.TooManyRedirects(_request_info(), ()),
    lambda t: http_exceptions.ContentLengthError(t),
    lambda t: http_exceptions.ContentEncodingError(t),
    lambda t: http_exceptions.TransferEncodingError(t),
    lambda t: wse.ConnectionClosedError(None, None),
    lambda t: wse.ConnectionClosedOK(None, None),
    lambda t: wse.InvalidStatus(Response(401, t, Headers(), b"")),
    lambda t: wse.InvalidURI("ws://x", t),
    wse.InvalidHandshake, wse.InvalidMessage, wse.PayloadTooBig, wse.ProtocolError, wse.SecurityError,
]


class _Odd:
    """An attribute holder with a ``status_code`` of any type (what ``response`` may be on a foreign error)."""

    def __init__(self, status_code: object) -> None:
        self.status_code = status_code


@st.composite
def exceptions(draw: st.DrawFn) -> BaseException:
    """An exception, maybe with a cause/context chain (possibly cyclic) and an odd ``response`` attribute."""
    chain: list[BaseException] = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        builder = draw(st.sampled_from(BUILDERS))
        try:
            exc = builder(draw(st.text(max_size=30)) + " " + SECRET)
        except (TypeError, ValueError):
            assume(False)
            raise
        if draw(st.booleans()):
            response = _Odd(draw(st.integers() | st.none() | st.text(max_size=3) | st.booleans()))
            with contextlib.suppress(AttributeError):  # a read-only property on that class
                exc.response = response  # type: ignore[attr-defined]
        chain.append(exc)
    for outer, inner in itertools.pairwise(chain):
        if draw(st.booleans()):
            outer.__cause__ = inner
        else:
            outer.__context__ = inner
    if len(chain) > 1 and draw(st.booleans()):
        chain[-1].__context__ = chain[0]  # a cycle
    return chain[0]


def _shows_text(exc: BaseException) -> bool:
    """Whether *exc*'s own message may legitimately appear in a detail (shapes, sizes, TLS library reasons)."""
    return isinstance(exc, ParseError | BodyTooLargeError | ssl.SSLError | ssl.CertificateError)


class TestClassification:
    @FUZZ
    @given(exceptions())
    def test_any_exception_is_classified(self, exc: BaseException) -> None:
        """Any exception (chained, cyclic, odd attributes) maps to a Failure with a bounded, message-free detail."""
        failure = classify_exception(exc)
        assert isinstance(failure, Failure)
        assert failure.reason in TRANSPORT_REASONS
        assert isinstance(failure.detail, str) and len(failure.detail) <= 300
        if not _shows_text(exc):
            assert SECRET not in failure.detail

    @FUZZ
    @given(st.integers(), json_values | st.binary(max_size=20), st.none() | st.text(max_size=40))
    def test_any_status_is_classified(self, status: int, body: Any, retry_after: str | None) -> None:
        """Any integer status, any body object and any Retry-After: None exactly for 2xx, else a transport Failure."""
        failure = classify_status(status, body, retry_after)
        if 200 <= status < 300:
            assert failure is None
        else:
            # A 400 naming nodes (or a validation error type) is ComfyUI's own validation, the one reason a status
            # gives that no transport failure does.
            assert failure is not None and failure.status == status
            assert failure.reason in TRANSPORT_REASONS or (status == 400 and failure.reason is Reason.VALIDATION)
            assert failure.error_type is None or len(failure.error_type) <= 64
            assert failure.retry_after is None or 0 <= failure.retry_after <= 3600


# ---------------------------------------------------------------------------------------------------------
# file_sd documents.

hosts = st.sampled_from(["127.0.0.1", "localhost", "comfy.lan", "[::1]", "", "bad host", "ünï.example", "[::1"])
ports = st.sampled_from(["", ":8188", ":0", ":65536", ":-1", ":x", ":99999999999"])
entries = (
    st.builds(lambda s, h, p, path: f"{s}{h}{p}{path}", st.sampled_from(["", "http://", "https://", "ftp://"]),
              hosts, ports, st.sampled_from(["", "/", "/t/0", "/a b", "/" + "x" * 80]))
    | st.builds(lambda h, p: f"http://user:{SECRET}@{h}{p}", hosts, ports)
    | st.text(max_size=30)
)
label_sets = st.dictionaries(
    st.sampled_from(["name", "__scheme__", "__meta", "team", "target", "reason", "9bad", "x" * 60])
    | st.text(max_size=8),
    st.sampled_from(["http", "https", "gopher", "a", "x" * 200, ""]) | st.text(max_size=10) | scalars,
    max_size=5,
)
groups = st.fixed_dictionaries(
    {},
    optional={"targets": st.lists(entries, max_size=4) | json_values, "labels": label_sets | json_values},
)
documents = json_values | st.lists(groups | json_values, max_size=4)


class TestFileSd:
    @settings(FUZZ, max_examples=120)
    @given(documents)
    def test_any_document_gives_targets_and_problems(self, data: Any) -> None:
        """Any decoded file_sd document yields valid targets plus problem lines; no exception, no secret shown."""
        targets, problems = parse_file_sd(data, "sd.json", DiscoveryConfig())
        assert len(targets) <= MAX_TARGETS_PER_FILE
        assert all(isinstance(p, str) and p.startswith("sd.json") for p in problems)
        assert not any(SECRET in p for p in problems)
        names = [t.name for t in targets]
        assert all(SECRET not in name for name in names)
        for target in targets:
            assert target.url.startswith(("http://", "https://"))
            assert not any(key.startswith("__") for key in target.labels)
