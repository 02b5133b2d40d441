"""Comfy Cloud v1 (``https://cloud.comfy.org``, ``X-API-Key``) over the pooled :class:`HttpClient`.

Error semantics: 402 and billing-type 429 are ``payment`` and never retried; ``QUEUE_LIMIT``
429 is ``queue_full``; other 429s are ``rate_limited`` and pause the account's checks until Retry-After;
5xx GETs are retried with jittered exponential back-off; a submit is never retried blindly (it may have
been accepted). The daemon also keeps its own request rate under ``max_requests_per_minute``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
from yarl import URL

from comfywatch.clients.http import HttpClient, HttpResult, RequestFailed
from comfywatch.errors import BodyTooLargeError, Failure, Reason, classify_exception, classify_status
from comfywatch.parse import cloud as cloud_parse
from comfywatch.parse.queue import QueueSnapshot

__all__ = ["BUDGET_WAIT", "BudgetExhausted", "CloudApi", "PauseHolder", "RateBudget", "RetryAfterActive",
           "RetryAfterPause"]

T = TypeVar("T")
DEFAULT_RATE_LIMIT_PAUSE = 30.0


class PauseHolder(Protocol):
    """Where an account's Retry-After pause is kept: when it ends, in the API's clock (0: no pause)."""

    retry_after_until: float


@dataclass
class RetryAfterPause:
    """A :class:`PauseHolder` of its own, for an API whose pause nobody else reads."""

    retry_after_until: float = 0.0


class RetryAfterActive(Exception):
    """The account is inside a Retry-After pause: no request was sent."""

    def __init__(self, remaining: float) -> None:
        super().__init__(f"rate limited: {remaining:.1f}s left")
        self.remaining = remaining


class BudgetExhausted(RetryAfterActive):
    """``max_requests_per_minute`` is spent for longer than the caller may wait: no request was sent.

    A subclass of :class:`RetryAfterActive` because callers handle both alike: the request was not made,
    which is neither a success nor a failure of the server.
    """

    def __init__(self, remaining: float) -> None:
        Exception.__init__(self, f"request budget spent: next request possible in {remaining:.1f}s")
        self.remaining = remaining


#: How long a request may wait for the account's request budget, in seconds (``None``: as long as it takes).
#: The daemon's periodic checks set it so that a budget smaller than what the checks want makes them skip
#: a run, rather than wait in line until their timeout strikes and the target looks down; one-shot callers
#: (``doctor``, the canary) leave it unset and wait.
BUDGET_WAIT: ContextVar[float | None] = ContextVar("comfywatch_cloud_budget_wait", default=None)


class RateBudget:
    """A token bucket: at most ``per_minute`` requests in any minute, with bursts up to a tenth of that.

    A bucket of capacity C refilled at r per second lets through up to C - 1 + 60 r requests in a minute
    (a full bucket, then the refill), so r is (per_minute - C + 1) / 60, not per_minute / 60: the
    burst comes out of the minute's allowance instead of on top of it.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.capacity = float(max(1, per_minute // 10))
        self.rate = (per_minute - self.capacity + 1) / 60.0
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def try_take(self) -> float:
        """Take a token if one is there (returns 0.0), else the seconds until one will be."""
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    async def take(self) -> None:
        """Wait for a token, at most :data:`BUDGET_WAIT` seconds; raises :class:`BudgetExhausted` beyond that.

        ``try_take`` runs without an ``await`` in between, so concurrent callers never spend one token twice.
        """
        limit = BUDGET_WAIT.get()
        deadline = None if limit is None else self.clock() + limit
        wait = self.try_take()
        while wait > 0:
            if deadline is not None and self.clock() + wait > deadline:
                raise BudgetExhausted(wait)
            # A timed wait for the bucket to refill; no event could signal it sooner.
            await asyncio.sleep(wait)
            wait = self.try_take()


class CloudApi:
    """Typed calls to Comfy Cloud for one account. Methods raise RequestFailed or RetryAfterActive."""

    def __init__(self, http: HttpClient, *, divisor: float = 100.0, max_get_retries: int = 2,
                 clock: Callable[[], float] = time.time, pause: PauseHolder | None = None) -> None:
        """*pause* is where the Retry-After pause is kept: the daemon passes the target's state, which
        exports the seconds left at every scrape, whichever call (a check, the canary) met the 429."""
        self.http = http
        self.divisor = divisor
        self.max_get_retries = max_get_retries
        self.clock = clock
        self.pause = pause if pause is not None else RetryAfterPause()

    async def close(self) -> None:
        await self.http.close()

    def paused_for(self) -> float:
        return max(0.0, self.pause.retry_after_until - self.clock())

    def _note_failure(self, failure: Failure) -> None:
        if failure.reason is Reason.RATE_LIMITED:
            seconds = failure.retry_after if failure.retry_after is not None else DEFAULT_RATE_LIMIT_PAUSE
            self.pause.retry_after_until = max(self.pause.retry_after_until, self.clock() + seconds)

    def _ensure_not_paused(self) -> None:
        """Raise :class:`RetryAfterActive` inside a Retry-After pause: nothing may be sent to the account."""
        remaining = self.paused_for()
        if remaining > 0:
            raise RetryAfterActive(remaining)

    async def _get(self, route: str, endpoint: str, parser: Callable[[Any], T],
                   params: Mapping[str, str] | None = None, *, polled: bool = False) -> T:
        """GET *route*, retried after a server error, refused connection or timeout; *polled*: a fixed route
        (its URL is kept), not one with a job's id."""
        self._ensure_not_paused()
        attempt = 0
        while True:
            try:
                body, _ = await self.http.get_json(route, endpoint=endpoint, parser=parser, params=params,
                                                   keep_url=polled)
                return body
            except RequestFailed as failed:
                self._note_failure(failed.failure)
                retryable = failed.failure.reason in {Reason.SERVER_ERROR, Reason.CONNECT, Reason.TIMEOUT}
                if not retryable or attempt >= self.max_get_retries:
                    raise
            attempt += 1
            # Jittered exponential back-off: 0.25-0.5 s, then 0.5-1 s ... (full jitter halves).
            base = 0.25 * 2 ** (attempt - 1)
            await asyncio.sleep(base + random.uniform(0, base))

    async def user(self) -> cloud_parse.CloudUser:
        return await self._get("/api/user", "user", cloud_parse.parse_user, polled=True)

    async def balance(self) -> cloud_parse.Balance:
        return await self._get("/api/billing/balance", "billing_balance",
                               lambda body: cloud_parse.parse_balance(body, self.divisor), polled=True)

    async def billing_status(self) -> cloud_parse.BillingStatus:
        return await self._get("/api/billing/status", "billing_status", cloud_parse.parse_billing_status, polled=True)

    async def features(self) -> cloud_parse.Features:
        return await self._get("/api/features", "features", cloud_parse.parse_features, polled=True)

    async def queue(self) -> QueueSnapshot:
        return await self._get("/api/queue", "queue", cloud_parse.parse_cloud_queue, polled=True)

    async def jobs(self, limit: int = 100) -> cloud_parse.JobsPage:
        params = {"limit": str(limit), "sort_by": "create_time", "sort_order": "desc"}
        return await self._get("/api/jobs", "jobs", cloud_parse.parse_jobs_list, params, polled=True)

    async def job_status(self, job_id: str) -> cloud_parse.JobStatus:
        return await self._get(f"/api/job/{job_id}/status", "job_status", cloud_parse.parse_job_status)

    async def job_detail(self, job_id: str) -> cloud_parse.JobDetail:
        return await self._get(f"/api/jobs/{job_id}", "jobs", cloud_parse.parse_job_detail)

    async def submit(self, prompt: Mapping[str, Any], client_id: str | None = None) -> cloud_parse.SubmitResult:
        """POST /api/prompt once: never retried, since a lost answer may hide an accepted (billed) job."""
        self._ensure_not_paused()
        payload: dict[str, Any] = {"prompt": prompt, "extra_data": {}}
        if client_id:
            payload["client_id"] = client_id
        try:
            result = await self.http.request("POST", "/api/prompt", endpoint="prompt", json_body=payload)
        except RequestFailed as failed:
            self._note_failure(failed.failure)
            raise
        return self.http.decode(result, "prompt", cloud_parse.parse_submit)

    async def _post(self, route: str, endpoint: str, body: Any) -> HttpResult:
        self._ensure_not_paused()
        try:
            return await self.http.request("POST", route, endpoint=endpoint, json_body=body)
        except RequestFailed as failed:
            self._note_failure(failed.failure)
            raise

    async def cancel(self, job_id: str) -> None:
        await self._post(f"/api/jobs/{job_id}/cancel", "jobs", {})

    async def delete_history(self, job_id: str) -> None:
        await self._post("/api/history", "history", {"delete": [job_id]})

    async def view(self, filename: str, subfolder: str, kind: str) -> HttpResult:
        """Fetch an output: ``/api/view`` answers 302 to a signed URL, fetched WITHOUT the API key."""
        params = {"filename": filename, "subfolder": subfolder, "type": kind}
        self._ensure_not_paused()
        redirect = await self.http.request("GET", "/api/view", endpoint="view", params=params, expect_ok=False)
        if redirect.status in {301, 302, 303, 307, 308}:
            try:
                return await fetch_unauthenticated(self.http, redirect.headers.get("Location", ""))
            except RequestFailed as failed:
                # Counted as the view's failure, as one of /api/view itself is; storage is not the account's API,
                # so its 429 pauses nothing.
                self.http.observer.on_failure("view", failed.failure.reason)
                raise
        if 200 <= redirect.status < 300:
            return redirect
        failure = classify_status(redirect.status, None, redirect.headers.get("Retry-After")) or Failure(
            Reason.INVALID_RESPONSE, "view failed")
        # Counted and honoured like every other call (a 429 here pauses the account too).
        self.http.observer.on_failure("view", failure.reason)
        self._note_failure(failure)
        raise RequestFailed(failure, "view")


async def fetch_unauthenticated(http: HttpClient, location: str) -> HttpResult:
    """GET a signed storage URL with a bare session: no X-API-Key, no proxy credentials.

    The body is read whole: to its declared length (``output_invalid`` when the connection ends before it) or,
    without one, to the connection's end; either way at most the client's ``max_body_size``.
    """
    started = time.perf_counter()
    try:
        url = _redirect_url(http, location)
        async with aiohttp.ClientSession(trust_env=False) as session, session.get(
            url, timeout=aiohttp.ClientTimeout(total=http.settings.timeout), allow_redirects=False
        ) as response:
            body = await _read_whole(response, http.settings.max_body_size)
            result = HttpResult(response.status, body, response.content_type, dict(response.headers),
                                time.perf_counter() - started)
    except RequestFailed:
        raise
    except Exception as exc:
        raise RequestFailed(classify_exception(exc), "view") from None
    failure = classify_status(result.status)
    if failure is not None:
        raise RequestFailed(failure, "view")
    return result


def _redirect_url(http: HttpClient, location: str) -> URL:
    """A redirect's *location* as an absolute URL (relative to the API's base).

    The Location comes from the server: none, or one that is not a URL (``http://[x``), is a bad answer (an empty
    one would fetch the API's base instead), and its text, a signed URL's, is left out of the failure.
    """
    if not location.strip():
        raise RequestFailed(Failure(Reason.INVALID_RESPONSE, "the view redirect has no Location"), "view")
    try:
        url = URL(location)
        return url if url.is_absolute() else http.base.join(url)
    except ValueError:
        raise RequestFailed(Failure(Reason.INVALID_RESPONSE, "the view redirect's Location is not a valid URL"),
                            "view") from None


async def _read_whole(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """*response*'s body to its declared length or the connection's end, at most *limit* bytes once decoded.

    ``content.read(n)`` would return what has arrived so far, which for a body sent in bursts is a prefix.
    """
    declared = response.content_length
    if declared is not None and declared > limit:
        raise BodyTooLargeError(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(limit)
            chunks.append(chunk)
    except aiohttp.ClientPayloadError:
        # aiohttp's error for a connection that closed before the declared length is told as such below;
        # a payload error of any other kind (a broken chunked or compressed stream) is the connection's.
        if declared is None or response.content.total_raw_bytes >= declared:
            raise
    received = response.content.total_raw_bytes
    if declared is not None and received < declared:
        raise RequestFailed(Failure(Reason.OUTPUT_INVALID, f"the download ended after {received} of its "
                                                           f"{declared} bytes"), "view")
    return b"".join(chunks)
