"""The one taxonomy on both paths: a local ComfyUI's answers and Comfy Cloud's are classified by the same rules
in :mod:`comfywatch.errors`. Refusals go through :class:`LocalApi` and :class:`CloudApi` against a loopback
server giving the answer under test; failed jobs through each path's parser."""

from __future__ import annotations

import contextlib
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from comfywatch.checks.cloud import check_features, check_queue
from comfywatch.checks.context import TargetContext, build_context
from comfywatch.clients.cloud import CloudApi, RetryAfterActive
from comfywatch.clients.http import ClientSettings, HttpClient, RequestFailed
from comfywatch.clients.local import LocalApi
from comfywatch.config import DEFAULT_CLOUD_URL, Config, TargetConfig
from comfywatch.errors import Reason
from comfywatch.parse.cloud import MAX_TEXT, parse_job_detail
from comfywatch.parse.jobs import parse_jobs
from comfywatch.parse.queue import MAX_QUEUE_ITEMS
from tests.fixtures import load_json


@dataclass
class Answer:
    """What the loopback server answers to every request, and how many it got."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    requests: int = 0


@dataclass
class Failures:
    """A RequestObserver keeping the failures it is told of, as the exporter counts them."""

    seen: list[tuple[str, Reason]] = field(default_factory=list)

    def on_exchange(self, endpoint: str, code: int | None, seconds: float) -> None:
        return None

    def on_failure(self, endpoint: str, reason: Reason) -> None:
        self.seen.append((endpoint, reason))


@contextlib.asynccontextmanager
async def answering(answer: Answer, observer: Failures | None = None) -> AsyncIterator[HttpClient]:
    """An :class:`HttpClient` for a loopback server that gives *answer* to every request."""

    async def handle(request: web.Request) -> web.Response:
        answer.requests += 1
        return web.json_response(answer.body, status=answer.status, headers=dict(answer.headers))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    http = HttpClient(ClientSettings(base_url=f"http://127.0.0.1:{port}"), observer=observer)
    try:
        yield http
    finally:
        await http.close()
        await runner.cleanup()


async def local_failure(answer: Answer) -> RequestFailed:
    """The failure LocalApi raises for a ``GET /api/queue`` that gets *answer*."""
    async with answering(answer) as http:
        with pytest.raises(RequestFailed) as failed:
            await LocalApi(http).queue()
    return failed.value


async def submit_failure(answer: Answer, api: Callable[[HttpClient], LocalApi | CloudApi]
                         ) -> tuple[RequestFailed, list[tuple[str, Reason]]]:
    """The failure a prompt submission raises when it gets *answer*, and the failures counted for it."""
    observer = Failures()
    async with answering(answer, observer) as http:
        with pytest.raises(RequestFailed) as failed:
            await api(http).submit(PROMPT, "comfywatch-test")
    return failed.value, observer.seen


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


PROMPT = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "missing.safetensors"}}}
BOTH = pytest.mark.parametrize("api", [LocalApi, CloudApi], ids=["local", "cloud"])


# ---------------------------------------------------------------------------------------------------------
# A 400 naming nodes (or a validation error.type) is ComfyUI's own validation, whether ComfyUI answered
# directly or behind Comfy Cloud.


@BOTH
@pytest.mark.parametrize("fixture", ["prompt_error_missing_model.json", "prompt_error_unknown_node.json"])
async def test_a_validation_400_is_validation(api: Callable[[HttpClient], LocalApi | CloudApi],
                                              fixture: str) -> None:
    """ComfyUI's recorded validation refusals are ``validation``, and counted so for the prompt endpoint."""
    failed, counted = await submit_failure(Answer(400, load_json(fixture)), api)
    assert (failed.failure.reason, failed.failure.status) == (Reason.VALIDATION, 400)
    assert counted == [("prompt", Reason.VALIDATION)]
    assert failed.body == load_json(fixture), "the canary reads the node errors from the body"


@BOTH
async def test_a_400_without_a_prompt_is_an_invalid_request(api: Callable[[HttpClient], LocalApi | CloudApi]
                                                            ) -> None:
    """``no_prompt`` names no node and no workflow problem: the request itself was malformed."""
    failed, counted = await submit_failure(Answer(400, load_json("prompt_error_no_prompt_key.json")), api)
    assert failed.failure.reason is Reason.INVALID_REQUEST
    assert counted == [("prompt", Reason.INVALID_REQUEST)]


# ---------------------------------------------------------------------------------------------------------
# Retry-After: delta-seconds or an HTTP-date (RFC 9110), at most an hour (the server is not trusted).


@pytest.mark.parametrize(("header", "low", "high"), [("120", 120, 120), ("86400", 3600, 3600)])
async def test_local_retry_after_in_seconds_is_bounded(header: str, low: float, high: float) -> None:
    """A local server's (or its proxy's) 429 keeps its Retry-After in seconds, capped at an hour."""
    failed = await local_failure(Answer(429, {}, {"Retry-After": header}))
    assert failed.failure.reason is Reason.RATE_LIMITED
    assert failed.failure.retry_after is not None and low <= failed.failure.retry_after <= high


@pytest.mark.parametrize(("ahead", "low", "high"), [(120, 110, 120), (86400, 3600, 3600)])
async def test_local_retry_after_as_an_http_date(ahead: float, low: float, high: float) -> None:
    """An HTTP-date Retry-After is the seconds until then, capped at an hour, on the local path too."""
    failed = await local_failure(Answer(429, {}, {"Retry-After": http_date(ahead)}))
    assert failed.failure.retry_after is not None and low <= failed.failure.retry_after <= high


@pytest.mark.parametrize(("header", "low", "high"), [
    (lambda: http_date(120), 110, 120), (lambda: http_date(86400), 3590, 3600), (lambda: "86400", 3590, 3600),
], ids=["date", "far-date", "seconds"])
async def test_cloud_pauses_for_an_http_date_or_seconds_at_most_an_hour(header: Callable[[], str], low: float,
                                                                        high: float) -> None:
    """Comfy Cloud's 429 pauses the account until the HTTP-date (or for the seconds), at most an hour; within
    the pause nothing is sent."""
    answer = Answer(429, {"code": "RATE_LIMITED", "message": "Rate limit exceeded."}, {"Retry-After": header()})
    async with answering(answer) as http:
        api = CloudApi(http)
        with pytest.raises(RequestFailed) as failed:
            await api.user()
        assert failed.value.failure.reason is Reason.RATE_LIMITED
        assert low <= api.paused_for() <= high
        with pytest.raises(RetryAfterActive):
            await api.user()
    assert answer.requests == 1


# ---------------------------------------------------------------------------------------------------------
# A Cloud integer too large for a float is a bad answer like any other: every number ends up a float (a metric),
# so the parser refuses it rather than leave the check that exports it to crash.

HUGE = 10**400


@pytest.mark.parametrize(("check", "endpoint", "body"), [
    (check_features, "features", {"max_concurrent_jobs": HUGE}),
    (check_queue, "queue", {"queue_running": [[HUGE, "p1", {}, [], {"create_time": 1700000000000}]],
                            "queue_pending": []}),
], ids=["features", "queue"])
async def test_a_cloud_integer_no_float_can_hold_is_a_counted_invalid_response(
        check: Callable[[TargetContext], Awaitable[None]], endpoint: str, body: dict[str, Any]) -> None:
    """The features and queue checks fail with an ``invalid_response`` RequestFailed (not an OverflowError)
    when Comfy Cloud sends a 401-digit integer, and the failure is counted for the endpoint."""
    observer = Failures()
    runtime = build_context(Config(), TargetConfig(name="cloud", kind="cloud", url=DEFAULT_CLOUD_URL),
                            env={"COMFYWATCH_CLOUD_API_KEY": "comfyui-" + "0" * 64})
    try:
        async with answering(Answer(200, body), observer) as http:
            runtime.cloud = CloudApi(http)
            with pytest.raises(RequestFailed) as failed:
                await check(runtime)
    finally:
        await runtime.close()
    assert failed.value.failure.reason is Reason.INVALID_RESPONSE
    assert observer.seen == [(endpoint, Reason.INVALID_RESPONSE)]


# ---------------------------------------------------------------------------------------------------------
# A job's execution error: the same exception type and message are the same reason, locally and on Comfy
# Cloud, read from the exception type and the whole message.

#: Longer than what a Cloud job keeps of its message (MAX_TEXT): an OOM named only after that is still oom.
LATE_OOM = "x" * (MAX_TEXT + 100) + " CUDA out of memory"


@pytest.mark.parametrize(
    ("exception_type", "message", "reason"),
    [
        ("OOMError", "Allocation on device would exceed allowed memory.", Reason.OOM),
        ("torch.cuda.OutOfMemoryError", "CUDA out of memory. Tried to allocate 20.00 MiB", Reason.OOM),
        ("RuntimeError", "CUDA out of memory. Tried to allocate 20.00 MiB", Reason.OOM),
        ("RuntimeError", LATE_OOM, Reason.OOM),
        ("InsufficientFundsError", "Insufficient funds to run job.", Reason.PAYMENT),
        ("comfy.billing.InactiveSubscriptionError", "", Reason.PAYMENT),
        ("ValueError", "Image too small", Reason.EXECUTION_ERROR),
        (None, None, Reason.EXECUTION_ERROR),
    ],
)
def test_a_failed_job_has_the_same_reason_locally_and_on_cloud(exception_type: str | None, message: str | None,
                                                               reason: Reason) -> None:
    """A local /api/jobs entry and a Comfy Cloud job with the same execution error fail for the same reason."""
    error = {"node_id": "3", "node_type": "KSampler", "exception_type": exception_type,
             "exception_message": message}
    local = parse_jobs({"jobs": [{"id": "a", "status": "failed", "execution_error": error}]}).jobs[0]
    cloud = parse_job_detail({"id": "a", "status": "error", "create_time": 1755684000, "execution_error": error})
    assert (local.failure_reason, cloud.failure_reason) == (reason, reason)


# ---------------------------------------------------------------------------------------------------------
# A queue too long to read whole: the canary's own prompt may be among the entries not read.


@pytest.mark.parametrize(("pending", "in_flight", "requests"), [
    (MAX_QUEUE_ITEMS, False, 2),
    (MAX_QUEUE_ITEMS + 1, True, 3),
], ids=["read-whole", "longer-than-read"])
async def test_a_prompt_among_unread_queue_entries_is_in_flight_and_deleted(
        pending: int, in_flight: bool, requests: int) -> None:
    """A queue read whole without the canary's prompt means it is gone, and cancelling it asks nothing more; a
    queue with entries left unread may hold it: it counts as in flight (not lost), and cancelling it deletes it."""
    answer = Answer(200, {"queue_running": [], "queue_pending": [[index, f"p{index}", {}, {}, []]
                                                                 for index in range(pending)]})
    async with answering(answer) as http:
        api = LocalApi(http)
        assert await api.in_flight("canary-prompt") is in_flight
        await api.cancel_own("canary-prompt")
    assert answer.requests == requests
