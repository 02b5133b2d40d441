"""The pooled HTTP client every check uses (aiohttp underneath).

Why aiohttp and not httpx here: CPU time per request against ComfyUI on loopback, on a 2-vCPU VM, is
≈ 790 µs with httpx and ≈ 160 µs with aiohttp; polling 1000 targets every 15 s must stay under 1 ms per
target per cycle, which only aiohttp's client allows.

Every exchange is classified with :mod:`comfywatch.errors` and reported to a :class:`RequestObserver`,
which is how ``comfyui_requests_total`` / ``comfyui_request_failures_total`` get counted in one place.

The daemon's targets share one session (:class:`FleetSession`), its connections kept per server; a short-lived
client (one ``/probe``) borrows its session from :class:`SharedSessions`, so that the next probe of the same
server reuses its connection; any other client (doctor, the canary command) opens its own.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp
from yarl import URL

from comfywatch.basic_auth import basic_auth_header
from comfywatch.errors import BodyTooLargeError, Failure, ParseError, Reason, classify_exception, classify_status
from comfywatch.parse.phases import PhaseTimes
from comfywatch.redact import target_scope

__all__ = [
    "ClientSettings",
    "FleetSession",
    "HttpClient",
    "HttpResult",
    "RequestFailed",
    "RequestObserver",
    "SharedSessions",
]

T = TypeVar("T")

#: Distinct request timeouts kept built per client (see ``HttpClient._timeout``).
MAX_CACHED_TIMEOUTS = 16
#: URLs kept built per client (see ``HttpClient.url``): the paths its polls request.
MAX_CACHED_URLS = 16
#: How long a target's idle connection is kept open for its next read: with quiet polls asking nothing, that is
#: every fourth 15 s poll, 60 s later. Under the 75 s that aiohttp servers (ComfyUI) and nginx keep it.
KEEPALIVE_SECONDS = 65.0


class RequestObserver(Protocol):
    """Receives every exchange once, and every failure once (``code`` is None when no response came)."""

    def on_exchange(self, endpoint: str, code: int | None, seconds: float) -> None: ...

    def on_failure(self, endpoint: str, reason: Reason) -> None: ...


class _NullObserver:
    def on_exchange(self, endpoint: str, code: int | None, seconds: float) -> None:
        return None

    def on_failure(self, endpoint: str, reason: Reason) -> None:
        return None


class RequestFailed(Exception):
    """A request ended in a classified :class:`Failure` (transport error, non-2xx, unparseable body)."""

    def __init__(self, failure: Failure, endpoint: str, body: Any = None) -> None:
        super().__init__(f"{endpoint}: {failure.reason}: {failure.detail}")
        self.failure = failure
        self.endpoint = endpoint
        self.body = body


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str]
    seconds: float
    phases: PhaseTimes | None = None


@dataclass(frozen=True)
class ClientSettings:
    base_url: str
    timeout: float = 5.0
    connect_timeout: float | None = None
    max_body_size: int = 32 * 2**20
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | bool = True
    max_connections: int = 4
    user_agent: str = "comfywatch"


class _PhaseTrace:
    """Times one request: request start -> response headers (processing) -> body read (transfer).

    No aiohttp ``TraceConfig``: its signals cost ~0.1 ms of CPU on *every* request of the session, a third of
    a poll's budget at 1000 targets. DNS, connect and TLS times come from the periodic ``network`` check
    (a fresh connection, like a blackbox probe) instead: a kept-alive poll connection has none of them.
    """

    __slots__ = ("headers_at", "start")

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.headers_at: float | None = None

    def result(self, done: float) -> PhaseTimes:
        headers = self.headers_at or done
        return PhaseTimes(None, None, None, max(0.0, headers - self.start), max(0.0, done - headers))


def _new_session(ssl_context: ssl.SSLContext | bool, *, headers: Mapping[str, str], limit: int,
                 keepalive: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=limit, ssl=ssl_context, ttl_dns_cache=60, keepalive_timeout=keepalive)
    return aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        # Environment proxies must not silently reroute probes of loopback servers.
        trust_env=False,
        # Never follow redirects with our credentials attached; callers that expect one handle it.
        raise_for_status=False,
        # Stateless, like a probe: a session cookie picked up from one answer must not keep a revoked
        # token "working" (and no cookie bookkeeping on every poll).
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
    )


def _default_headers(settings: ClientSettings) -> dict[str, str]:
    """What every request of a client carries: its User-Agent and its credentials."""
    headers = {"User-Agent": settings.user_agent, **dict(settings.headers)}
    if settings.basic_auth is not None:
        headers["Authorization"] = basic_auth_header(*settings.basic_auth)
    return headers


_SessionKey = tuple[str, str, int | None, ssl.SSLContext | bool]


@dataclass(eq=False)
class _Shared:
    session: aiohttp.ClientSession
    created: float
    borrowers: int = 0
    retired: bool = False


class SharedSessions:
    """Sessions lent to short-lived clients (``/probe``), one per server (scheme, host, port) and TLS
    verification: the connection one probe opened serves the next probe of that server.

    Only connections (and the DNS cache) are shared. A borrowing :class:`HttpClient` sends its own headers
    and credentials with every request (a shared session has no default headers), cookies are never kept,
    and every probe has its own state.

    A session lends itself for ``max_age`` seconds; then it is retired and a borrower gets a new one (new
    connections, resolved afresh: a server that moved is found). Beyond ``max_sessions`` the least recently
    borrowed is retired. A retired session closes as soon as its last borrower is done, so the open
    connections stay bounded even when more servers are probed than are kept. An idle connection is kept
    ``keepalive`` seconds: ComfyUI's server (aiohttp) and nginx keep one 75 s, so a probe a minute still
    finds it open.

    A sweeper task retires aged sessions and ends when none is left; cancelled (the event loop shutting down,
    as ``asyncio.run`` does when the daemon stops) it closes them all: the owner cannot forget them.
    """

    def __init__(self, *, max_sessions: int = 256, max_age: float = 120.0, keepalive: float = 75.0) -> None:
        self.max_sessions = max_sessions
        self.max_age = max_age
        self.keepalive = keepalive
        self._lending: OrderedDict[_SessionKey, _Shared] = OrderedDict()
        #: Retired while still borrowed.
        self._retired: set[_Shared] = set()
        self._closing: set[_Shared] = set()
        # The loop keeps only weak references to tasks: a close nobody holds could be collected half-way.
        self._close_tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Sessions not retired, or retired but still borrowed."""
        return len(self._lending) + len(self._retired)

    def borrow(self, settings: ClientSettings) -> _Shared:
        """A session for *settings*' server; hand it back with :meth:`give_back`."""
        base = URL(settings.base_url)
        key: _SessionKey = (base.scheme, base.host or "", base.port, settings.ssl_context)
        now = time.monotonic()
        shared = self._lending.get(key)
        if shared is not None and now - shared.created > self.max_age:
            self._retire(key)
            shared = None
        if shared is None:
            # No connection limit: a probe never waits for another probe's connection, as with its own session.
            session = _new_session(settings.ssl_context, headers={}, limit=0, keepalive=self.keepalive)
            shared = self._lending[key] = _Shared(session, now)
            while len(self._lending) > self.max_sessions:
                self._retire(next(iter(self._lending)))
            self._sweep_later()
        else:
            self._lending.move_to_end(key)
        shared.borrowers += 1
        return shared

    def give_back(self, shared: _Shared) -> None:
        shared.borrowers -= 1
        if shared.retired and shared.borrowers == 0:
            self._retired.discard(shared)
            self._close_soon(shared)

    def _retire(self, key: _SessionKey) -> None:
        shared = self._lending.pop(key)
        shared.retired = True
        if shared.borrowers:
            self._retired.add(shared)
        else:
            self._close_soon(shared)

    def _close_soon(self, shared: _Shared) -> None:
        self._closing.add(shared)
        task = asyncio.get_running_loop().create_task(shared.session.close())
        self._close_tasks.add(task)
        task.add_done_callback(self._close_tasks.discard)
        task.add_done_callback(lambda _: self._closing.discard(shared))

    def _sweep_later(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="shared-sessions-sweeper")

    async def _sweep(self) -> None:
        try:
            # Ends without awaiting once nothing is left, so a session borrowed from then on starts a new sweeper.
            while self._lending or self._retired:
                await asyncio.sleep(self.max_age / 2)
                now = time.monotonic()
                for key in [key for key, shared in self._lending.items() if now - shared.created > self.max_age]:
                    self._retire(key)
        except asyncio.CancelledError:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every session, lent or not (a borrower still at work sees its request fail)."""
        every = [*self._lending.values(), *self._retired, *self._closing]
        self._lending.clear()
        self._retired.clear()
        for shared in every:
            shared.retired = True
            await shared.session.close()  # again for one whose close was only scheduled: a no-op once closed
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and sweeper is not asyncio.current_task():
            sweeper.cancel()


class FleetSession:
    """One session for every target of a daemon.

    Connections stay per server: aiohttp pools them by scheme, host, port and TLS setting, and a target's
    requests use its server's. What the targets share is the session, its connector, its DNS cache and the
    connector's cleanup timer, which a daemon would otherwise keep once per target (about 6 KB each, and a
    timer each, at 10,000 targets). As with :class:`SharedSessions`, a client sends its own headers and
    credentials with every request, and its own TLS setting; cookies are never kept. There is no connection
    limit per server here: the daemon's limiter bounds the requests in flight across the fleet.

    A client that closes (its target removed on reload) sends no new request; one already in flight ends by
    its timeout, and the idle connection by the keep-alive timeout (:data:`KEEPALIVE_SECONDS`). Once the
    fleet's session is closed, nothing opens it again: a check that outlived the daemon's shutdown gets
    ``ConnectionError``, not a session nobody would close.
    """

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session, created inside the running loop on first use."""
        if self._closed:
            raise ConnectionError("the daemon's HTTP session is closed")
        if self._session is None or self._session.closed:
            self._session = _new_session(True, headers={}, limit=0, keepalive=KEEPALIVE_SECONDS)
        return self._session

    async def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class HttpClient:
    """One target's HTTP client, with per-phase timeouts and a hard body-size cap.

    The session is created lazily inside the running loop and reused for the daemon's lifetime; with *fleet*
    the fleet's is used instead, and with *shared* one is borrowed from there and handed back by :meth:`close`.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        observer: RequestObserver | None = None,
        limiter: asyncio.Semaphore | None = None,
        before_request: Callable[[], Awaitable[None]] | None = None,
        shared: SharedSessions | None = None,
        fleet: FleetSession | None = None,
        secret_forms: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        #: What this client sends that its server could echo (redact.secret_forms): masked in what its answers'
        #: parsers keep.
        self.secret_forms = secret_forms
        self.base = URL(settings.base_url.rstrip("/"))
        self.observer: RequestObserver = observer or _NullObserver()
        self._limiter = limiter
        self._before_request = before_request
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._headers = _default_headers(settings)
        self._shared = shared
        self._fleet = fleet
        self._borrowed: _Shared | None = None
        # Built once per polled path and per timeout: a poll makes the same three requests every cycle.
        self._urls: dict[str, URL] = {}
        self._timeouts: OrderedDict[float, aiohttp.ClientTimeout] = OrderedDict()

    # Session management.

    def _make_session(self) -> aiohttp.ClientSession:
        return _new_session(self.settings.ssl_context, headers=self._headers, limit=self.settings.max_connections,
                            keepalive=KEEPALIVE_SECONDS)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            # A check still running for a target removed on reload must not open a session nobody closes.
            raise ConnectionError("HTTP client closed")
        if self._fleet is not None:
            return self._fleet.session
        if self._shared is not None:
            if self._borrowed is None:
                self._borrowed = self._shared.borrow(self.settings)
            return self._borrowed.session
        if self._session is None or self._session.closed:
            self._session = self._make_session()
        return self._session

    def websocket_url(self, path: str, query: Mapping[str, str]) -> str:
        """The ``ws``/``wss`` URL of *path* on this client's server: the base's host, port and path prefix (an IPv6
        host keeps its brackets), without its userinfo (sent as a header, never in a URL)."""
        base = self.base
        url = URL.build(scheme="wss" if base.scheme == "https" else "ws", host=base.host or "",
                        port=base.explicit_port, path=base.path.rstrip("/") + path)
        return str(url.with_query(dict(query)))

    async def close(self) -> None:
        """Close the client for good (its own session closed, a borrowed one handed back, a fleet's left open):
        later requests fail as ``connect`` instead of reopening it."""
        self._closed = True
        borrowed, self._borrowed = self._borrowed, None
        if borrowed is not None and self._shared is not None:
            self._shared.give_back(borrowed)
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def url(self, path: str, *, keep: bool = False) -> URL:
        """The URL of *path* on this client's server; with *keep*, built once and kept for the next request.

        Only what the polls request is kept: a URL caches its parts as aiohttp reads them (about 600 bytes), and
        the two dozen paths of a catalogue read, twice an hour, would cost a fleet of 10,000 targets 130 MB."""
        url = self._urls.get(path)
        if url is None:
            url = self.base.with_path(self.base.path.rstrip("/") + path, encoded=False)
            if keep and len(self._urls) < MAX_CACHED_URLS:
                self._urls[path] = url
        return url

    def _timeout(self, total: float) -> aiohttp.ClientTimeout:
        timeouts = self._timeouts
        client_timeout = timeouts.get(total)
        if client_timeout is not None:
            timeouts.move_to_end(total)
            return client_timeout
        connect = self.settings.connect_timeout or min(total, max(1.0, total / 2))
        # No sock_read: it would equal total, and aiohttp re-arms its timer on every chunk received.
        client_timeout = timeouts[total] = aiohttp.ClientTimeout(total=total, connect=connect)
        # Polls reuse a few fixed timeouts; a canary's are what is left of its deadline, a new value on every
        # request. Least recently used first out: the cache stays small and the polls' values stay in it.
        if len(timeouts) > MAX_CACHED_TIMEOUTS:
            timeouts.popitem(last=False)
        return client_timeout

    def _request_headers(self, extra: Mapping[str, str] | None) -> Mapping[str, str] | None:
        if self._shared is None and self._fleet is None:
            return extra  # the client's own session carries its headers
        return self._headers if extra is None else {**self._headers, **extra}

    # Requests.

    async def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        timeout: float | None = None,
        expect_ok: bool = True,
        allow_redirects: bool = False,
        extra_headers: Mapping[str, str] | None = None,
        record_phases: bool = False,
        max_body: int | None = None,
        keep_url: bool = False,
    ) -> HttpResult:
        """Send one request and read the (capped) body.

        The body is capped at ``settings.max_body_size``, or at *max_body* when that is smaller: an endpoint
        whose answer has a small fixed shape refuses a large one before anything decodes it. *keep_url*: a path
        requested on every poll (see :meth:`url`).

        Raises:
            RequestFailed: transport failure, body too large, or (with ``expect_ok``) a non-2xx status.
        """
        client_timeout = self._timeout(timeout if timeout is not None else self.settings.timeout)
        limit = self.settings.max_body_size if max_body is None else min(self.settings.max_body_size, max_body)
        started = time.perf_counter()
        trace = _PhaseTrace() if record_phases else None
        if self._before_request is not None:
            await self._before_request()
        try:
            url = self.url(path, keep=keep_url)
            if self._limiter is not None:
                async with self._limiter:
                    result = await self._send(
                        method, url, params, json_body, client_timeout, allow_redirects, extra_headers, trace, limit
                    )
            else:
                result = await self._send(
                    method, url, params, json_body, client_timeout, allow_redirects, extra_headers, trace, limit
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is classified, none escapes unclassified
            failure = classify_exception(exc)
            self.observer.on_exchange(endpoint, None, time.perf_counter() - started)
            self.observer.on_failure(endpoint, failure.reason)
            raise RequestFailed(failure, endpoint) from None
        self.observer.on_exchange(endpoint, result.status, result.seconds)
        if expect_ok and not 200 <= result.status < 300:
            # Decode the body only for refusals (Cloud's error.type tells 429s apart); a 2xx body is decoded
            # once, by its parser.
            body = _maybe_json(result)
            refused = classify_status(result.status, body, result.headers.get("Retry-After"))
            if refused is not None:
                self.observer.on_failure(endpoint, refused.reason)
                raise RequestFailed(refused, endpoint, body)
        return result

    async def _send(
        self,
        method: str,
        url: URL,
        params: Mapping[str, str] | None,
        json_body: Any,
        client_timeout: aiohttp.ClientTimeout,
        allow_redirects: bool,
        extra_headers: Mapping[str, str] | None,
        trace: _PhaseTrace | None,
        limit: int,
    ) -> HttpResult:
        started = time.perf_counter()
        async with self.session.request(
            method,
            url,
            params=params,
            json=json_body,
            timeout=client_timeout,
            allow_redirects=allow_redirects,
            headers=self._request_headers(extra_headers),
            # The target's own TLS setting, whosever the session (a fleet's verifies by default).
            ssl=self.settings.ssl_context,
        ) as response:
            if trace is not None:
                trace.headers_at = time.perf_counter()
            declared = response.content_length
            if declared is not None and declared > limit:
                raise BodyTooLargeError(limit)
            if declared is not None and "Content-Encoding" not in response.headers:
                # The declared length is what will be read (aiohttp stops there): no need to count chunks.
                body = await response.read()
            else:
                # Chunked or compressed: only counting what arrives bounds it (a small gzip can inflate to GBs).
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_chunked(65536):
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLargeError(limit)
                    chunks.append(chunk)
                body = b"".join(chunks)
            done = time.perf_counter()
            return HttpResult(
                status=response.status,
                body=body,
                content_type=response.content_type,
                # Case-insensitive, as HTTP header names are ("retry-after" is "Retry-After").
                headers=response.headers,
                seconds=done - started,
                phases=trace.result(done) if trace is not None else None,
            )

    async def get_json(
        self,
        path: str,
        *,
        endpoint: str,
        parser: Callable[[Any], T],
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
        record_phases: bool = False,
        max_body: int | None = None,
        keep_url: bool = False,
    ) -> tuple[T, HttpResult]:
        """GET, decode JSON and parse it with *parser*; a bad body (or one over *max_body*, see
        :meth:`request`) is an ``invalid_response`` failure."""
        result = await self.request(
            "GET", path, endpoint=endpoint, params=params, timeout=timeout, record_phases=record_phases,
            max_body=max_body, keep_url=keep_url,
        )
        return self.decode(result, endpoint, parser), result

    def decode(self, result: HttpResult, endpoint: str, parser: Callable[[Any], T]) -> T:
        """Decode and parse a 2xx body; failures are counted as ``invalid_response`` for *endpoint*.

        ``request()`` already counted the exchange under its status code; this adds only the failure.
        """
        try:
            with target_scope(self.secret_forms):
                return parser(json.loads(result.body))
        except (ValueError, ParseError, RecursionError) as exc:
            failure = classify_exception(exc)
            if failure.reason is not Reason.INVALID_RESPONSE:
                failure = Failure(Reason.INVALID_RESPONSE, "response is not valid JSON")
            self.observer.on_failure(endpoint, failure.reason)
            raise RequestFailed(failure, endpoint) from None


def _maybe_json(result: HttpResult) -> Any:
    if not result.body or len(result.body) > 2**20 or "json" not in result.content_type:
        return None
    try:
        return json.loads(result.body)
    except (ValueError, RecursionError):
        return None
