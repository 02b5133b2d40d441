"""Each fault switch of the simulated Cloud produces the status and body the real service sends (docs/cloud.md)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from comfywatch.errors import Failure, Reason, classify_status, parse_retry_after
from comfywatch.parse.cloud import (
    parse_billing_status,
    parse_features,
    parse_job_detail,
    parse_job_status,
)
from comfywatch.sim.cloud.jobs import FAULTS
from comfywatch.sim.cloud.model import SimCloud
from tests.sim_cloud import (
    CANARY,
    KEY,
    UNDECLARED,
    FakeClock,
    Served,
    assert_conforms,
    call,
    serve,
    submit,
    wait_terminal,
)

AUTHENTICATED_GETS = [
    "/api/user",
    "/api/billing/balance",
    "/api/billing/status",
    "/api/queue",
    "/api/prompt",
    "/api/jobs",
    f"/api/jobs/{uuid.UUID(int=1)}",
    f"/api/job/{uuid.UUID(int=1)}/status",
    f"/api/history_v2/{uuid.UUID(int=1)}",
    "/api/view?filename=x.png",
]


def refusal(status: int, body: Any) -> Failure:
    """The simulator's refusal as comfywatch's clients classify it (errors.classify_status)."""
    failure = classify_status(status, body)
    assert failure is not None
    return failure


@pytest.fixture
async def cloud() -> AsyncIterator[Served]:
    """A default simulator on a loopback port."""
    async with serve(SimCloud(api_keys=[KEY])) as served:
        yield served


def test_unknown_fault_is_rejected_by_name() -> None:
    """set_faults and the constructor refuse a fault name they do not know, naming it."""
    with pytest.raises(ValueError, match="http_418"):
        SimCloud(api_keys=[KEY], faults=["http_418"])
    sim = SimCloud(api_keys=[KEY], faults=["oom"])
    with pytest.raises(ValueError, match="nope"):
        sim.set_faults(["lost", "nope"])
    assert sim.snapshot()["faults"] == ["oom"]
    sim.set_faults(FAULTS)
    assert sim.snapshot()["faults"] == sorted(FAULTS)


async def test_http_401_rejects_a_valid_key_everywhere_but_public_routes(cloud: Served) -> None:
    """http_401: every authenticated endpoint and the WS upgrade answer 401; /health stays 200."""
    cloud.sim.set_faults(["http_401"])
    for path in AUTHENTICATED_GETS:
        answer = await call(cloud.http, "GET", path)
        assert answer.status == 401, path
        assert refusal(401, answer.json()).reason is Reason.AUTH
    assert_conforms(await call(cloud.http, "GET", "/api/user"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await cloud.http.ws_connect(f"/ws?clientId=x&token={KEY}")
    assert refused.value.status == 401
    assert (await call(cloud.anon, "GET", "/health")).status == 200
    cloud.sim.set_faults([])
    assert (await call(cloud.http, "GET", "/api/user")).status == 200


async def test_http_402_refuses_submit_and_clears_has_funds(cloud: Served) -> None:
    """http_402: submit gets 402 {"error":{"type":"PAYMENT_REQUIRED"}} and billing status has_funds=false."""
    cloud.sim.set_faults(["http_402"])
    refused = await call(cloud.http, "POST", "/api/prompt", json=CANARY)
    assert refused.status == 402
    assert refused.json()["error"]["type"] == "PAYMENT_REQUIRED"
    assert_conforms(refused)
    info = refusal(402, refused.json())
    assert (info.reason, info.error_type) == (Reason.PAYMENT, "PAYMENT_REQUIRED")
    status = parse_billing_status((await call(cloud.http, "GET", "/api/billing/status")).json())
    assert (status.is_active, status.has_funds) == (True, False)
    assert cloud.sim.snapshot()["jobs_submitted"] == 0


async def test_http_402_error_type_is_configurable(cloud: Served) -> None:
    """payment_error_type changes the 402 error.type (e.g. CLOUD_SUBSCRIPTION_REQUIRED)."""
    cloud.sim.set_faults(["http_402"])
    cloud.sim.payment_error_type = "CLOUD_SUBSCRIPTION_REQUIRED"
    refused = await call(cloud.http, "POST", "/api/prompt", json=CANARY)
    assert refusal(refused.status, refused.json()).error_type == "CLOUD_SUBSCRIPTION_REQUIRED"


async def test_http_429_rate_is_untyped_with_retry_after_on_every_authenticated_endpoint(
    cloud: Served,
) -> None:
    """http_429_rate: untyped 429 + Retry-After: 5 everywhere authenticated; public routes unaffected."""
    cloud.sim.set_faults(["http_429_rate"])
    for path in AUTHENTICATED_GETS:
        answer = await call(cloud.http, "GET", path)
        assert answer.status == 429, path
        assert answer.headers["Retry-After"] == "5"
        info = refusal(429, answer.json())
        assert (info.reason, info.error_type) == (Reason.RATE_LIMITED, None)
    submit_answer = await call(cloud.http, "POST", "/api/prompt", json=CANARY)
    assert submit_answer.status == 429
    assert refusal(429, submit_answer.json()).reason is Reason.RATE_LIMITED
    assert_conforms(submit_answer)
    assert_conforms(await call(cloud.http, "GET", "/api/jobs"), UNDECLARED)
    assert (await call(cloud.anon, "GET", "/api/system_stats")).status == 200
    assert (await call(cloud.anon, "GET", "/health")).status == 200


async def test_retry_after_value_is_configurable_and_can_be_left_out(cloud: Served) -> None:
    """retry_after_s sets the header (and shows in the snapshot); None leaves it out."""
    cloud.sim.set_faults(["http_429_rate"])
    cloud.sim.retry_after_s = 17
    answer = await call(cloud.http, "GET", "/api/user")
    assert parse_retry_after(answer.headers["Retry-After"]) == 17.0
    assert cloud.sim.snapshot()["retry_after_s"] == 17
    cloud.sim.retry_after_s = None
    answer = await call(cloud.http, "GET", "/api/user")
    assert answer.status == 429
    assert "Retry-After" not in answer.headers


async def test_http_429_queue_limit_on_submit_only(cloud: Served) -> None:
    """http_429_queue_limit: submit gets 429 QUEUE_LIMIT (+Retry-After); reads still work."""
    cloud.sim.set_faults(["http_429_queue_limit"])
    refused = await call(cloud.http, "POST", "/api/prompt", json=CANARY)
    assert refused.status == 429
    assert refused.json()["error"]["type"] == "QUEUE_LIMIT"
    assert refused.headers["Retry-After"] == "5"
    assert_conforms(refused)
    assert refusal(429, refused.json()).reason is Reason.QUEUE_FULL
    assert (await call(cloud.http, "GET", "/api/queue")).status == 200


async def test_http_429_payment_is_a_billing_type(cloud: Served) -> None:
    """http_429_payment: submit gets 429 with a billing error.type, which means payment, not rate limiting."""
    cloud.sim.set_faults(["http_429_payment"])
    refused = await call(cloud.http, "POST", "/api/prompt", json=CANARY)
    assert refused.status == 429
    assert refused.json()["error"]["type"] == "FREE_TIER_EXHAUSTED"
    info = refusal(429, refused.json())
    assert (info.reason, info.error_type) == (Reason.PAYMENT, "FREE_TIER_EXHAUSTED")
    cloud.sim.billing_429_type = "PAYMENT_REQUIRED"
    refused = await call(cloud.http, "POST", "/api/prompt", json=CANARY)
    assert refused.json()["error"]["type"] == "PAYMENT_REQUIRED"


async def test_http_5xx_gives_500_on_reads_503_on_submit_and_unhealthy_health(cloud: Served) -> None:
    """http_5xx: 500 ErrorResponse on authenticated reads, 503 on submit, 503 text on /health."""
    cloud.sim.set_faults(["http_5xx"])
    for path in AUTHENTICATED_GETS:
        answer = await call(cloud.http, "GET", path)
        assert answer.status == 500, path
        assert set(answer.json()) == {"code", "message"}
    jobs = await call(cloud.http, "GET", "/api/jobs")
    assert_conforms(jobs)
    refused = await call(cloud.http, "POST", "/api/prompt", json=CANARY)
    assert refused.status == 503
    assert_conforms(refused)
    assert refusal(503, refused.json()).reason is Reason.SERVER_ERROR
    health = await call(cloud.anon, "GET", "/health")
    assert (health.status, health.body) == (503, b"Service is unhealthy")
    assert_conforms(health, UNDECLARED)


async def test_slow_delays_every_response(cloud: Served) -> None:
    """slow: each response, public or not, waits slow_ms (default 3000) before it is answered."""
    assert cloud.sim.slow_ms == 3000
    cloud.sim.slow_ms = 150
    cloud.sim.set_faults(["slow"])
    started = time.monotonic()
    assert (await call(cloud.anon, "GET", "/health")).status == 200
    assert (await call(cloud.http, "GET", "/api/user")).status == 200
    assert time.monotonic() - started >= 0.3


async def test_stuck_jobs_stay_queued_limited_until_the_fault_clears() -> None:
    """stuck_jobs: new jobs sit in queued_limited however much time passes; clearing the fault runs them."""
    clock = FakeClock()
    sim = SimCloud(api_keys=[KEY], faults=["stuck_jobs"])
    sim.clock = clock
    async with serve(sim) as served:
        job_id = await submit(served)
        clock.tick(3_600_000)
        status = parse_job_status((await call(served.http, "GET", f"/api/job/{job_id}/status")).json())
        assert status.status == "queued_limited"
        assert not status.state.terminal
        sim.set_faults([])
        clock.tick(1_000)
        status = parse_job_status((await call(served.http, "GET", f"/api/job/{job_id}/status")).json())
        assert status.status == "success"


async def test_balance_error_fails_only_the_balance(cloud: Served) -> None:
    """balance_error: /api/billing/balance answers 500; billing status and the rest stay 200."""
    cloud.sim.set_faults(["balance_error"])
    balance = await call(cloud.http, "GET", "/api/billing/balance")
    assert balance.status == 500
    assert_conforms(balance, UNDECLARED)
    assert (await call(cloud.http, "GET", "/api/billing/status")).status == 200
    assert (await call(cloud.http, "GET", "/api/user")).status == 200


@pytest.mark.parametrize(
    ("fault", "raw_state", "exception_type", "reason"),
    [
        ("insufficient_funds_runtime", "non_retryable_error", "InsufficientFundsError", Reason.PAYMENT),
        ("oom", "error", "OOMError", Reason.OOM),
    ],
)
async def test_execution_faults_fail_the_job_with_a_cloud_exception_type(
    cloud: Served, fault: str, raw_state: str, exception_type: str, reason: Reason
) -> None:
    """insufficient_funds_runtime/oom: a 200 submit, then the job fails with the Cloud exception type."""
    cloud.sim.set_faults([fault])
    job_id = await submit(cloud)
    status = await wait_terminal(cloud, job_id)
    assert status["status"] == raw_state
    assert status["error_message"]
    detail = await call(cloud.http, "GET", f"/api/jobs/{job_id}")
    assert_conforms(detail)
    body = detail.json()
    assert body["status"] == "failed"
    assert body["execution_error"]["exception_type"] == exception_type
    parsed = parse_job_detail(body)
    assert parsed.failure_reason is reason
    assert parsed.status_str == "error"


async def test_lost_jobs_end_in_raw_state_lost(cloud: Served) -> None:
    """lost: the job ends in raw state lost (group failed) with no outputs and no execution_error."""
    cloud.sim.set_faults(["lost"])
    job_id = await submit(cloud)
    status = await wait_terminal(cloud, job_id)
    assert status["status"] == "lost"
    assert parse_job_status(status).failure_reason is Reason.LOST
    detail = (await call(cloud.http, "GET", f"/api/jobs/{job_id}")).json()
    assert detail["status"] == "failed"
    assert detail["outputs"] == {}
    assert "execution_error" not in detail


async def test_inactive_subscription_reports_no_tier_and_refuses_submit(cloud: Served) -> None:
    """inactive_subscription: is_active false, subscription_status ended, no tier; submit 402."""
    cloud.sim.set_faults(["inactive_subscription"])
    answer = await call(cloud.http, "GET", "/api/billing/status")
    assert_conforms(answer, UNDECLARED)
    body = answer.json()
    assert "subscription_tier" not in body
    status = parse_billing_status(body)
    assert (status.is_active, status.subscription_status, status.tier) == (False, "ended", None)
    assert (status.tier_label, status.billing_status) == ("none", "inactive")
    refused = await call(cloud.http, "POST", "/api/prompt", json=CANARY)
    assert refused.status == 402
    assert refusal(402, refused.json()).reason is Reason.PAYMENT
    features = parse_features((await call(cloud.http, "GET", "/api/features")).json())
    assert (features.max_concurrent_jobs, features.subscription_required) == (None, True)


async def test_faults_can_change_while_serving(cloud: Served) -> None:
    """set_faults takes effect on the next request without restarting the app."""
    assert (await call(cloud.http, "GET", "/api/user")).status == 200
    cloud.sim.set_faults(["http_5xx"])
    assert (await call(cloud.http, "GET", "/api/user")).status == 500
    cloud.sim.set_faults([])
    assert (await call(cloud.http, "GET", "/api/user")).status == 200
