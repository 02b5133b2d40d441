"""Comfy Cloud v1 (``https://cloud.comfy.org``, ``X-API-Key``) over the pooled :class:`HttpClient`.

Error semantics follow CLOUD.md: 402 and billing-type 429 are ``payment`` and never retried; ``QUEUE_LIMIT``
429 is ``queue_full``; other 429s are ``rate_limited`` and pause the account's checks until Retry-After;
5xx GETs are retried with jittered exponential back-off; a submit is never retried blindly (it may have
been accepted). The daemon also keeps its own request rate under ``max_requests_per_minute``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from comfywatch.clients.http import HttpClient, HttpResult, RequestFailed
from comfywatch.errors import Failure, Reason
from comfywatch.parse import cloud as cloud_parse

__all__ = ["CloudApi", "RateBudget", "RetryAfterActive"]

T = TypeVar("T")
DEFAULT_RATE_LIMIT_PAUSE = 30.0


class RetryAfterActive(Exception):
    """The account is inside a Retry-After pause: no request was sent."""

    def __init__(self, remaining: float) -> None:
        super().__init__(f"rate limited: {remaining:.1f}s left")
        self.remaining = remaining


class RateBudget:
    """A token bucket: at most ``per_minute`` requests in any minute, with bursts up to a tenth of that."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute / 10.0)
        self.tokens = self.capacity
        self.clock = clock
        self.updated = clock()
        self._lock = asyncio.Lock()

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
        async with self._lock:
            while (wait := self.try_take()) > 0:
                await asyncio.sleep(wait)


class CloudApi:
    """Typed calls to Comfy Cloud for one account. Methods raise RequestFailed or RetryAfterActive."""

    def __init__(self, http: HttpClient, *, divisor: float = 100.0, max_get_retries: int = 2,
                 clock: Callable[[], float] = time.time) -> None:
        self.http = http
        self.divisor = divisor
        self.max_get_retries = max_get_retries
        self.clock = clock
        self.retry_after_until = 0.0

    async def close(self) -> None:
        await self.http.close()

    def paused_for(self) -> float:
        return max(0.0, self.retry_after_until - self.clock())

    def _note_failure(self, failure: Failure) -> None:
        if failure.reason is Reason.RATE_LIMITED:
            pause = failure.retry_after if failure.retry_after is not None else DEFAULT_RATE_LIMIT_PAUSE
            self.retry_after_until = max(self.retry_after_until, self.clock() + pause)

    async def _get(self, route: str, endpoint: str, parser: Callable[[Any], T],
                   params: Mapping[str, str] | None = None) -> T:
        remaining = self.paused_for()
        if remaining > 0:
            raise RetryAfterActive(remaining)
        attempt = 0
        while True:
            try:
                body, _ = await self.http.get_json(route, endpoint=endpoint, parser=parser, params=params)
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
        return await self._get("/api/user", "user", cloud_parse.parse_user)

    async def balance(self) -> cloud_parse.Balance:
        return await self._get("/api/billing/balance", "billing_balance",
                               lambda body: cloud_parse.parse_balance(body, self.divisor))

    async def billing_status(self) -> cloud_parse.BillingStatus:
        return await self._get("/api/billing/status", "billing_status", cloud_parse.parse_billing_status)

    async def features(self) -> cloud_parse.Features:
        return await self._get("/api/features", "features", cloud_parse.parse_features)

    async def queue(self) -> cloud_parse.CloudQueue:
        return await self._get("/api/queue", "queue", cloud_parse.parse_cloud_queue)

    async def jobs(self, limit: int = 100) -> cloud_parse.JobsPage:
        params = {"limit": str(limit), "sort_by": "create_time", "sort_order": "desc"}
        return await self._get("/api/jobs", "jobs", cloud_parse.parse_jobs_list, params)

    async def job_status(self, job_id: str) -> cloud_parse.JobStatus:
        return await self._get(f"/api/job/{job_id}/status", "job_status", cloud_parse.parse_job_status)

    async def job_detail(self, job_id: str) -> cloud_parse.JobDetail:
        return await self._get(f"/api/jobs/{job_id}", "jobs", cloud_parse.parse_job_detail)

    async def submit(self, prompt: Mapping[str, Any], client_id: str | None = None) -> cloud_parse.SubmitResult:
        """POST /api/prompt once: never retried, since a lost answer may hide an accepted (billed) job."""
        remaining = self.paused_for()
        if remaining > 0:
            raise RetryAfterActive(remaining)
        payload: dict[str, Any] = {"prompt": prompt, "extra_data": {}}
        if client_id:
            payload["client_id"] = client_id
        try:
            result = await self.http.request("POST", "/api/prompt", endpoint="prompt", json_body=payload)
        except RequestFailed as failed:
            self._note_failure(failed.failure)
            raise
        return self.http.decode(result, "prompt", cloud_parse.parse_submit)

    async def cancel(self, job_id: str) -> None:
        await self.http.request("POST", f"/api/jobs/{job_id}/cancel", endpoint="jobs", json_body={})

    async def delete_history(self, job_id: str) -> None:
        await self.http.request("POST", "/api/history", endpoint="history", json_body={"delete": [job_id]})

    async def view(self, filename: str, subfolder: str, kind: str) -> HttpResult:
        """Fetch an output: ``/api/view`` answers 302 to a signed URL, fetched WITHOUT the API key."""
        params = {"filename": filename, "subfolder": subfolder, "type": kind}
        redirect = await self.http.request("GET", "/api/view", endpoint="view", params=params, expect_ok=False)
        if redirect.status in {301, 302, 303, 307, 308}:
            location = redirect.headers.get("Location", "")
            return await fetch_unauthenticated(self.http, location)
        if 200 <= redirect.status < 300:
            return redirect
        from comfywatch.errors import classify_status

        failure = classify_status(redirect.status) or Failure(Reason.INVALID_RESPONSE, "view failed")
        raise RequestFailed(failure, "view")


async def fetch_unauthenticated(http: HttpClient, location: str) -> HttpResult:
    """GET a signed storage URL with a bare session: no X-API-Key, no proxy credentials."""
    import aiohttp
    from yarl import URL

    from comfywatch.errors import BodyTooLargeError, classify_exception, classify_status

    url = URL(location)
    if not url.is_absolute():
        url = http.base.join(url)
    started = time.perf_counter()
    try:
        async with aiohttp.ClientSession(trust_env=False) as session, session.get(
            url, timeout=aiohttp.ClientTimeout(total=http.settings.timeout), allow_redirects=False
        ) as response:
            body = await response.content.read(http.settings.max_body_size + 1)
            if len(body) > http.settings.max_body_size:
                raise BodyTooLargeError(http.settings.max_body_size)
            result = HttpResult(response.status, body, response.content_type, dict(response.headers),
                                time.perf_counter() - started)
    except Exception as exc:
        raise RequestFailed(classify_exception(exc), "view") from None
    failure = classify_status(result.status)
    if failure is not None:
        raise RequestFailed(failure, "view")
    return result
