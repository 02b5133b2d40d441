"""Comfy Cloud account checks end to end: the real daemon against the simulated Cloud, one fault at a time.

Every test runs the in-process daemon (``running_daemon``) or the real ``comfywatch`` processes against
``start_sim(cloud=True)`` and asserts metric values and the simulator's own request counters (what the
"server" saw), never internals.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from comfywatch.checks.cloud import check_billing
from comfywatch.checks.context import build_context
from comfywatch.clients.cloud import BUDGET_WAIT, BudgetExhausted, CloudApi, RateBudget, RetryAfterActive
from comfywatch.clients.http import RequestFailed
from comfywatch.config import DEFAULT_CLOUD_URL, Config, TargetConfig, load_config
from comfywatch.errors import Reason
from comfywatch.parse.cloud import Balance, BillingStatus
from comfywatch.sim.admin import SimHandle, start_sim
from comfywatch.sim.cloud.model import SimCloud
from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.procs import comfywatch_run, simulate
from tests.helpers import Metrics, eventually, running_daemon, scrape

KEY = "comfyui-" + secrets.token_hex(32)
"""A fresh key per run: a leak can only come from this process, never from a fixture file."""
ENV = {"COMFYWATCH_CLOUD_API_KEY": KEY}
T = "cloud"
"""The target name every test uses (the ``target`` label)."""

CANARY_PROMPT: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}


# ---------------------------------------------------------------------------------------------------------
# Helpers shared with test_cloud_canary.py.


def cloud_config(url: str, state_dir: Path, *, interval: str = "1s", timeout: str = "900ms",
                 target: str = "", canary: str = "", top: str = "") -> str:
    """A config with one Cloud target named ``cloud``; ``target``/``canary`` add TOML lines to those tables."""
    canary_table = f"\n  [targets.canary]\n{canary}" if canary else ""
    return f"""
state_dir = "{state_dir}"
{top}
[defaults]
interval = "{interval}"
timeout = "{timeout}"

[[targets]]
name = "{T}"
kind = "cloud"
url = "{url}"
max_requests_per_minute = 100000
{target}
{canary_table}
"""


def sim_cloud(sim: SimHandle) -> SimCloud:
    """The simulated account behind a handle (to change balance, Retry-After ... mid-test)."""
    assert isinstance(sim.cloud, SimCloud)
    return sim.cloud


def by_method(sim: SimHandle) -> dict[str, int]:
    """Requests the simulator received, keyed ``"GET /api/user"`` (route templates)."""
    counts: dict[str, int] = sim.state()["requests_by_method"]
    return counts


def total_requests(sim: SimHandle) -> int:
    """Every request the simulator received, public routes and WebSocket upgrades included."""
    return sum(by_method(sim).values())


async def metrics_of(base_url: str) -> Metrics:
    """Scrape the daemon's /metrics."""
    return await scrape(f"{base_url}/metrics")


async def wait_metrics(base_url: str, check: Any, what: str, timeout: float = 10.0) -> Metrics:
    """Scrape until ``check(metrics)`` holds."""
    result: Metrics = await eventually(lambda: metrics_of(base_url), check, timeout=timeout, what=what)
    return result


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """One series of the ``cloud`` target."""
    return metrics.value(name, target=T, **labels)


async def submit_jobs(sim: SimHandle, count: int) -> list[str]:
    """Submit ``count`` prompts as the same account (another client of it), like a user's own work."""
    ids = []
    async with aiohttp.ClientSession(headers={"X-API-Key": KEY}) as session:
        for _ in range(count):
            async with session.post(f"{sim.url}/api/prompt", json={"prompt": CANARY_PROMPT}) as response:
                assert response.status == 200, await response.text()
                ids.append((await response.json())["prompt_id"])
    return ids


async def wait_sim(sim: SimHandle, check: Any, what: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll the simulator's state until ``check(state)`` holds."""

    async def probe() -> dict[str, Any]:
        return sim.state()

    result: dict[str, Any] = await eventually(probe, check, timeout=timeout, what=what)
    return result


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    """A simulated Comfy Cloud accepting ``KEY`` (CREATOR tier, 6000 cents)."""
    async with await start_sim(cloud=True, cloud_api_keys=[KEY]) as handle:
        yield handle


def api_for(url: str, tmp_path: Path, *, timeout: str = "1s") -> CloudApi:
    """The CloudApi the daemon would build for a Cloud target at ``url`` (same headers, budget, divisor)."""
    path = tmp_path / "api.toml"
    # No daemon polls this API: the interval only has to be longer than the timeout.
    path.write_text(cloud_config(url, tmp_path, interval="60s", timeout=timeout), encoding="utf-8")
    config = load_config(path, ENV)
    return build_context(config, config.targets[0], env=ENV).cloud_api()


# ---------------------------------------------------------------------------------------------------------
# Healthy account, balance units.


async def test_healthy_account_exports_balance_in_usd_and_subscription(sim: SimHandle, tmp_path: Path) -> None:
    """6000 cents in the *_micros fields with the default divisor 100 export as 60.0 USD, plus the plan."""
    async with running_daemon(cloud_config(sim.url, tmp_path), tmp_path, ENV) as (daemon, url):
        daemon.trigger(T, "billing")
        daemon.trigger(T, "features")
        m = await wait_metrics(url, lambda m: value(m, "comfy_cloud_balance_usd") is not None
                               and value(m, "comfy_cloud_max_concurrent_jobs") is not None
                               and value(m, "comfyui_up") is not None, "account polled")
        assert value(m, "comfyui_up") == 1.0
        assert value(m, "comfy_cloud_balance_usd") == 60.0
        assert value(m, "comfy_cloud_effective_balance_usd") == 60.0
        assert value(m, "comfy_cloud_has_funds") == 1.0
        assert value(m, "comfy_cloud_subscription_active") == 1.0
        assert value(m, "comfy_cloud_subscription_info", tier="CREATOR", status="active") == 1.0
        assert value(m, "comfy_cloud_max_concurrent_jobs") == 3.0
        assert value(m, "comfy_cloud_retry_after_seconds") == 0.0
        assert m.total("comfyui_request_failures_total", target=T) == 0.0
    # Every account endpoint went out with the key (no 401 seen by the simulator).
    seen = by_method(sim)
    for route in ("GET /api/user", "GET /api/billing/balance", "GET /api/billing/status", "GET /api/queue"):
        assert seen.get(route, 0) >= 1, seen


async def test_balance_divisor_is_configurable(sim: SimHandle, tmp_path: Path) -> None:
    """balance_divisor = 1e6 reads the same 6000 as micros: 0.006 USD (the unit of the *_micros fields is disputed)."""
    config = cloud_config(sim.url, tmp_path, target="balance_divisor = 1000000")
    async with running_daemon(config, tmp_path, ENV) as (daemon, url):
        daemon.trigger(T, "billing")
        m = await wait_metrics(url, lambda m: value(m, "comfy_cloud_balance_usd") is not None, "balance polled")
        assert value(m, "comfy_cloud_balance_usd") == pytest.approx(0.006)


async def test_zero_balance_without_subscription_or_funds_is_unknown(sim: SimHandle, tmp_path: Path) -> None:
    """$0 with has_funds=false and no tier is a billing-data gap: balance absent, not 0."""
    account = sim_cloud(sim)
    account.balance_cents = 0
    await sim.set_faults(["inactive_subscription"])
    async with running_daemon(cloud_config(sim.url, tmp_path), tmp_path, ENV) as (daemon, url):
        daemon.trigger(T, "billing")
        m = await wait_metrics(url, lambda m: value(m, "comfy_cloud_has_funds") is not None, "billing polled")
        assert value(m, "comfy_cloud_has_funds") == 0.0
        assert value(m, "comfy_cloud_subscription_active") == 0.0
        assert value(m, "comfy_cloud_balance_usd") is None
        # With an active plan the same $0 is a real, empty balance.
        await sim.set_faults([])
        daemon.trigger(T, "billing")
        m = await wait_metrics(url, lambda m: value(m, "comfy_cloud_subscription_active") == 1.0, "plan back")
        assert value(m, "comfy_cloud_balance_usd") == 0.0


async def test_api_key_file_wins_over_the_environment(sim: SimHandle, tmp_path: Path) -> None:
    """api_key_file is used before COMFYWATCH_CLOUD_API_KEY (docs/cloud.md order); the env key alone is refused."""
    key_file = tmp_path / "cloud.key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    wrong = {"COMFYWATCH_CLOUD_API_KEY": "comfyui-" + "0" * 64}
    config = cloud_config(sim.url, tmp_path, target=f'api_key_file = "{key_file}"')
    async with running_daemon(config, tmp_path, wrong) as (_daemon, url):
        await wait_metrics(url, lambda m: value(m, "comfyui_up") == 1.0, "authenticated with the file's key")
    async with running_daemon(cloud_config(sim.url, tmp_path), tmp_path, wrong) as (_daemon, url):
        await wait_metrics(url, lambda m: value(m, "comfyui_up") == 0.0, "the environment's wrong key refused")


# ---------------------------------------------------------------------------------------------------------
# Faults of the account endpoints.


async def test_401_marks_the_target_down_with_reason_auth(sim: SimHandle, tmp_path: Path) -> None:
    """An invalid key: comfyui_up 0 and auth failures on /api/user, retried once (false-401 tolerance)."""
    await sim.set_faults(["http_401"])
    async with running_daemon(cloud_config(sim.url, tmp_path), tmp_path, ENV) as (daemon, url):
        m = await wait_metrics(url, lambda m: value(m, "comfyui_up") == 0.0, "target down")
        assert (value(m, "comfyui_request_failures_total", endpoint="user", reason="auth") or 0) >= 2
        assert (value(m, "comfyui_requests_total", endpoint="user", code="401") or 0) >= 2
        assert daemon.runtimes[T].state.up_reason is Reason.AUTH
        # A 401 is not a rate limit: nothing is paused.
        assert value(m, "comfy_cloud_retry_after_seconds") == 0.0
        await sim.set_faults([])
        await wait_metrics(url, lambda m: value(m, "comfyui_up") == 1.0, "target back up")


async def test_untyped_429_pauses_every_request_until_retry_after(sim: SimHandle, tmp_path: Path) -> None:
    """A plain 429: rate_limited, retry_after > 0, and the simulator sees no request until Retry-After ends."""
    account = sim_cloud(sim)
    account.retry_after_s = 2
    canary = 'enabled = true\n  interval = "1s"\n  timeout = "5s"\n  max_runs_per_day = 1000'
    config = cloud_config(sim.url, tmp_path, canary=canary)
    async with running_daemon(config, tmp_path, ENV) as (_daemon, url):
        m = await wait_metrics(url, lambda m: value(m, "comfyui_up") == 1.0, "target up")
        # Every skip series of the five periodic checks is there at 0 before the first skip, and no other.
        assert sorted((labels["check"], labels["reason"], count)
                      for labels, count in m.find("comfywatch_check_skips_total", target=T)) == sorted(
            (check, reason, 0.0) for check in ("auth", "billing", "features", "queue", "jobs")
            for reason in ("retry_after", "request_budget"))
        await sim.set_faults(["http_429_rate"])
        m = await wait_metrics(url, lambda m: (value(m, "comfy_cloud_retry_after_seconds") or 0) > 0, "paused")
        paused_at = time.monotonic()
        remaining = value(m, "comfy_cloud_retry_after_seconds")
        assert remaining is not None and 0 < remaining <= 2.0
        assert value(m, "comfyui_request_failures_total", reason="rate_limited", endpoint="user") is not None
        assert m.total("comfyui_request_failures_total", target=T, reason="rate_limited") >= 1
        baseline = total_requests(sim)
        resume_at = paused_at + remaining
        early: list[tuple[float, int]] = []

        async def probe() -> tuple[float, int]:
            now, seen = time.monotonic(), total_requests(sim)
            if now < resume_at - 0.05:
                early.append((now - paused_at, seen))
            return now, seen

        # Poll the simulator's counters through the whole pause and until the daemon tries again.
        resumed_at, _ = await eventually(probe, lambda s: s[1] > baseline, timeout=10,
                                         what="requests resume after Retry-After")
        assert early, "the pause was not observed at all"
        assert all(seen == baseline for _, seen in early), (baseline, early)
        assert resumed_at >= resume_at - 0.05
        # The checks kept running during the pause without counting failures for requests never sent.
        m = await metrics_of(url)
        assert (value(m, "comfyui_canary_skipped_total", canary="preview-image") or 0) >= 1
        # ... and each periodic check skipped during the pause is counted as such, not as the request budget.
        assert m.total("comfywatch_check_skips_total", target=T, reason="retry_after") >= 1
        assert m.total("comfywatch_check_skips_total", target=T, reason="request_budget") == 0


async def test_retry_after_counts_down_when_the_canary_met_the_429(sim: SimHandle, tmp_path: Path) -> None:
    """A 429 that the canary met pauses the account's checks: comfy_cloud_retry_after_seconds shows the seconds
    left at every scrape, counting down from Retry-After, while no other check has run since."""
    sim_cloud(sim).retry_after_s = 600
    canary = 'enabled = true\n  interval = "60s"\n  timeout = "5s"\n  max_runs_per_day = 1000'
    # Every check runs once at start, then not again for a minute: only the triggered canary meets the 429.
    config = cloud_config(sim.url, tmp_path, interval="60s", canary=canary)
    async with running_daemon(config, tmp_path, ENV) as (daemon, url):
        await wait_metrics(url, lambda m: value(m, "comfyui_up") == 1.0
                           and value(m, "comfyui_canary_success", canary="preview-image") == 1.0, "first round done")
        await sim.set_faults(["http_429_rate"])
        daemon.trigger(T, "canary")
        m = await wait_metrics(url, lambda m: value(m, "comfyui_canary_failures_total", canary="preview-image",
                                                    reason="rate_limited") == 1.0, "the canary met the 429")
        first = value(m, "comfy_cloud_retry_after_seconds")
        assert first is not None and 590.0 < first <= 600.0, m.text
        m = await wait_metrics(url, lambda m: (value(m, "comfy_cloud_retry_after_seconds") or 0.0) < first,
                               "a later scrape")
        later = value(m, "comfy_cloud_retry_after_seconds")
        assert later is not None and 0.0 < later < first


async def test_5xx_is_server_error_and_gets_are_retried(sim: SimHandle, tmp_path: Path) -> None:
    """HTTP 500 on every account call: server_error, target down, each GET sent 1 + 2 retries."""
    await sim.set_faults(["http_5xx"])
    # A long interval: exactly one auth run (the triggered one) happens while the test looks.
    config = cloud_config(sim.url, tmp_path, interval="10s")
    async with running_daemon(config, tmp_path, ENV) as (daemon, url):
        daemon.trigger(T, "auth")
        m = await wait_metrics(url, lambda m: value(m, "comfyui_up") == 0.0, "target down", timeout=15)
        assert daemon.runtimes[T].state.up_reason is Reason.SERVER_ERROR
        assert value(m, "comfyui_request_failures_total", endpoint="user", reason="server_error") == 3
        assert value(m, "comfyui_requests_total", endpoint="user", code="500") == 3
    assert by_method(sim)["GET /api/user"] == 3


async def test_api_retries_get_but_never_a_submit(sim: SimHandle, tmp_path: Path) -> None:
    """CloudApi: a 500 GET goes out 3 times; a 503 POST /api/prompt and a 402 go out exactly once."""
    api = api_for(sim.url, tmp_path)
    try:
        await sim.set_faults(["http_5xx"])
        with pytest.raises(RequestFailed) as failed:
            await api.user()
        assert failed.value.failure.reason is Reason.SERVER_ERROR
        with pytest.raises(RequestFailed) as failed:
            await api.submit(CANARY_PROMPT)
        assert failed.value.failure.reason is Reason.SERVER_ERROR
        assert by_method(sim)["GET /api/user"] == 3
        assert by_method(sim)["POST /api/prompt"] == 1
        await sim.set_faults(["http_402"])
        with pytest.raises(RequestFailed) as failed:
            await api.submit(CANARY_PROMPT)
        assert failed.value.failure.reason is Reason.PAYMENT
        assert failed.value.failure.error_type == "PAYMENT_REQUIRED"
        assert by_method(sim)["POST /api/prompt"] == 2
    finally:
        await api.close()


async def test_api_refuses_to_send_during_retry_after(sim: SimHandle, tmp_path: Path) -> None:
    """CloudApi: after a plain 429 the next call raises RetryAfterActive without reaching the server."""
    api = api_for(sim.url, tmp_path)
    try:
        await sim.set_faults(["http_429_rate"])
        with pytest.raises(RequestFailed) as failed:
            await api.user()
        assert failed.value.failure.reason is Reason.RATE_LIMITED
        assert failed.value.failure.retry_after == 5.0
        assert 4.0 < api.paused_for() <= 5.0
        sent = total_requests(sim)
        with pytest.raises(RetryAfterActive):
            await api.queue()
        with pytest.raises(RetryAfterActive):
            await api.submit(CANARY_PROMPT)
        assert total_requests(sim) == sent == 1
    finally:
        await api.close()


async def test_slow_server_is_a_timeout(sim: SimHandle, tmp_path: Path) -> None:
    """Answers slower than the timeout: reason timeout and the target counts as down."""
    await sim.set_faults(["slow"], slow_ms=int(1500 * TIMEOUT_FACTOR))
    config = cloud_config(sim.url, tmp_path, interval="10s", timeout="300ms")
    async with running_daemon(config, tmp_path, ENV) as (daemon, url):
        daemon.trigger(T, "auth")
        m = await wait_metrics(url, lambda m: value(m, "comfyui_up") == 0.0, "target down", timeout=15)
        assert daemon.runtimes[T].state.up_reason is Reason.TIMEOUT
        assert (value(m, "comfyui_request_failures_total", endpoint="user", reason="timeout") or 0) >= 1
        assert (value(m, "comfyui_requests_total", endpoint="user", code="none") or 0) >= 1


async def test_stuck_jobs_are_counted(sim: SimHandle, tmp_path: Path) -> None:
    """Jobs that never get a slot for longer than stall_after: comfy_cloud_jobs_stuck counts them."""
    await sim.set_faults(["stuck_jobs"])
    await submit_jobs(sim, 2)
    config = cloud_config(sim.url, tmp_path, target='stall_after = "100ms"')
    async with running_daemon(config, tmp_path, ENV) as (daemon, url):

        async def stuck() -> Metrics:
            daemon.trigger(T, "jobs")
            return await metrics_of(url)

        m = await eventually(stuck, lambda m: value(m, "comfy_cloud_jobs_stuck") == 2.0, what="2 stuck jobs")
        assert value(m, "comfyui_queue_pending") == 2.0
        assert value(m, "comfyui_queue_running") == 0.0
        # Released jobs run, finish and stop counting as stuck.
        await sim.set_faults([])
        await eventually(stuck, lambda m: value(m, "comfy_cloud_jobs_stuck") == 0.0
                         and value(m, "comfyui_jobs_total") == 2.0, what="jobs released and counted")


async def test_balance_error_leaves_balance_absent_not_zero(sim: SimHandle, tmp_path: Path) -> None:
    """A failing /api/billing/balance: the balance series disappears while has_funds is still exported."""
    await sim.set_faults(["balance_error"])
    async with running_daemon(cloud_config(sim.url, tmp_path), tmp_path, ENV) as (daemon, url):
        daemon.trigger(T, "billing")
        m = await wait_metrics(url, lambda m: value(m, "comfy_cloud_has_funds") is not None
                               and (value(m, "comfyui_request_failures_total", endpoint="billing_balance",
                                          reason="server_error") or 0) >= 1, "billing polled")
        assert value(m, "comfy_cloud_has_funds") == 1.0
        assert value(m, "comfy_cloud_subscription_active") == 1.0
        assert value(m, "comfy_cloud_balance_usd") is None
        assert value(m, "comfy_cloud_effective_balance_usd") is None
        assert "comfy_cloud_balance_usd{" not in m.text


async def test_balance_error_clears_a_previously_known_balance(sim: SimHandle, tmp_path: Path) -> None:
    """A balance known a minute ago is not shown as current once the balance endpoint fails."""
    async with running_daemon(cloud_config(sim.url, tmp_path), tmp_path, ENV) as (daemon, url):
        daemon.trigger(T, "billing")
        await wait_metrics(url, lambda m: value(m, "comfy_cloud_balance_usd") == 60.0, "balance known")
        await sim.set_faults(["balance_error"])
        failures_before = by_method(sim).get("GET /api/billing/balance", 0)
        daemon.trigger(T, "billing")
        await wait_metrics(url, lambda m: value(m, "comfy_cloud_balance_usd") is None, "balance gone")
        assert by_method(sim)["GET /api/billing/balance"] >= failures_before + 1
        m = await metrics_of(url)
        assert value(m, "comfy_cloud_has_funds") == 1.0


async def test_billing_status_is_fetched_even_while_balance_retries(sim: SimHandle, tmp_path: Path) -> None:
    """check_billing: a failing balance (with its retries) does not hold back the subscription status."""
    await sim.set_faults(["balance_error"])
    path = tmp_path / "c.toml"
    path.write_text(cloud_config(sim.url, tmp_path), encoding="utf-8")
    config = load_config(path, ENV)
    runtime = build_context(config, config.targets[0], env=ENV)
    try:
        # A budget shorter than the balance's retry back-off (0.75 s at least) still updates has_funds.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await check_billing(runtime)
        cloud = runtime.state.cloud
        assert cloud is not None
        assert cloud.has_funds == 1.0
        assert cloud.subscription_active == 1.0
        assert cloud.balance_usd is None
    finally:
        await runtime.close()


class _OrderedBilling:
    """A Comfy Cloud API whose balance ($0) and billing status (no funds, no plan) answer when told to."""

    def __init__(self) -> None:
        self.release_balance, self.release_status = asyncio.Event(), asyncio.Event()

    async def balance(self) -> Balance:
        await self.release_balance.wait()
        return Balance(0.0, 0.0, 0.0, None, None, None, "USD")

    async def billing_status(self) -> BillingStatus:
        await self.release_status.wait()
        return BillingStatus(False, False, None, None, "ended", None, None, None, None, None, None, None)


@pytest.mark.parametrize("balance_first", [True, False])
async def test_a_zero_balance_is_judged_with_the_status_in_the_same_step(balance_first: bool) -> None:
    """check_billing never exposes "no funds, no plan" next to a $0 balance (a billing-data gap),
    whichever answer comes first: a scrape between the two answers must not see the pair half judged."""
    runtime = build_context(Config(), TargetConfig(name=T, kind="cloud", url=DEFAULT_CLOUD_URL), env=ENV)
    cloud = runtime.state.cloud
    assert cloud is not None
    api = runtime.cloud = _OrderedBilling()  # type: ignore[assignment]
    task = asyncio.create_task(check_billing(runtime))
    first, second = ((api.release_balance, api.release_status) if balance_first
                     else (api.release_status, api.release_balance))
    for release in (first, second):
        release.set()
        for _ in range(5):  # every step of the event loop is a moment a scrape could look
            await asyncio.sleep(0)
            assert not (cloud.has_funds == 0.0 and cloud.balance_usd == 0.0), (cloud.has_funds, cloud.balance_usd)
    await task
    assert (cloud.has_funds, cloud.subscription_active, cloud.balance_usd) == (0.0, 0.0, None)


async def test_inactive_subscription_is_exported(sim: SimHandle, tmp_path: Path) -> None:
    """inactive_subscription: subscription_active 0, has_funds 0, the status label says ended."""
    await sim.set_faults(["inactive_subscription"])
    async with running_daemon(cloud_config(sim.url, tmp_path), tmp_path, ENV) as (daemon, url):
        daemon.trigger(T, "billing")
        m = await wait_metrics(url, lambda m: value(m, "comfy_cloud_subscription_active") is not None
                               and value(m, "comfyui_up") is not None, "billing and auth polled")
        assert value(m, "comfy_cloud_subscription_active") == 0.0
        assert value(m, "comfy_cloud_has_funds") == 0.0
        assert value(m, "comfy_cloud_subscription_info", tier="none", status="ended") == 1.0
        # The key itself is fine: the account is reachable, only the plan is gone.
        assert value(m, "comfyui_up") == 1.0


async def jobs_polled(daemon: Any, url: str) -> Metrics:
    """Run the jobs check now and scrape once it has finished."""
    state = daemon.runtimes[T].state
    before = state.check("jobs").last_success or 0.0
    daemon.trigger(T, "jobs")

    async def probe() -> float:
        return state.check("jobs").last_success or 0.0

    await eventually(probe, lambda last: last > before, what="jobs check ran")
    return await metrics_of(url)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("insufficient_funds_runtime", "payment"), ("oom", "oom"), ("lost", "lost")],
)
async def test_failed_jobs_are_counted_by_reason(sim: SimHandle, tmp_path: Path, fault: str, reason: str) -> None:
    """Jobs that fail on the Cloud after a 200 submit are counted once each under the right reason."""
    await sim.set_faults([fault])
    async with running_daemon(cloud_config(sim.url, tmp_path), tmp_path, ENV) as (daemon, url):
        # Jobs finished before comfywatch started are not counted: let the first poll see an empty list.
        m = await jobs_polled(daemon, url)
        assert value(m, "comfyui_jobs_total") == 0.0
        await submit_jobs(sim, 2)
        await wait_sim(sim, lambda s: s["jobs"] and set(s["jobs"]) <= {"error", "non_retryable_error", "lost"}
                       and sum(s["jobs"].values()) == 2, "jobs failed")
        m = await jobs_polled(daemon, url)
        assert value(m, "comfyui_jobs_total") == 2.0
        assert value(m, "comfyui_job_failures_total", reason=reason) == 2.0
        assert m.total("comfyui_job_failures_total", target=T) == 2.0
        # A second poll of the same page counts nothing twice.
        m = await jobs_polled(daemon, url)
        assert value(m, "comfyui_jobs_total") == 2.0
        assert value(m, "comfyui_job_failures_total", reason=reason) == 2.0


# ---------------------------------------------------------------------------------------------------------
# Request budget.


def test_rate_budget_allows_at_most_the_limit_in_any_minute() -> None:
    """RateBudget: with a fake clock, no 60 s window ever holds more than max_requests_per_minute takes."""
    for per_minute in (1, 7, 60, 600):
        now = [0.0]
        budget = RateBudget(per_minute, clock=lambda now=now: now[0])  # type: ignore[misc]
        taken: list[float] = []
        while now[0] < 300.0:
            wait = budget.try_take()
            if wait == 0.0:
                taken.append(now[0])
            else:
                now[0] += max(wait, 1e-6)  # float rounding can ask for 1e-17 s, which a float clock ignores
        assert len(taken) > per_minute * 4  # the budget is not needlessly stingy either
        for index, start in enumerate(taken):
            # (a hair under 60 s: the fake clock adds floats, and 8.57 * 7 may land at 59.99999)
            in_window = bisect.bisect_left(taken, start + 60.0 - 1e-3) - index
            assert in_window <= per_minute, (per_minute, start, in_window)


async def test_budget_wait_limit_skips_instead_of_queueing() -> None:
    """With BUDGET_WAIT set, an empty bucket raises BudgetExhausted at once; unset, take() waits for a token."""
    budget = RateBudget(600)  # 60 at once, then 541 a minute (one every 0.11 s)
    for _ in range(60):
        await budget.take()
    limit = BUDGET_WAIT.set(0.01)
    try:
        started = time.monotonic()
        with pytest.raises(BudgetExhausted) as skipped:
            await budget.take()
        assert time.monotonic() - started < 0.05
        assert isinstance(skipped.value, RetryAfterActive) and 0 < skipped.value.remaining <= 60 / 541
    finally:
        BUDGET_WAIT.reset(limit)
    started = time.monotonic()
    await budget.take()
    assert time.monotonic() - started >= 0.05


async def test_max_requests_per_minute_is_respected(sim: SimHandle, tmp_path: Path) -> None:
    """With max_requests_per_minute = 60 the simulator never sees more than the budget allows so far."""
    config = cloud_config(sim.url, tmp_path).replace(
        "max_requests_per_minute = 100000", "max_requests_per_minute = 60")
    async with running_daemon(config, tmp_path, ENV) as (daemon, url):
        started = time.monotonic()
        burst, rate = 6, 55 / 60  # RateBudget(60): 6 at once, then the rest of the minute's 60
        samples: list[tuple[float, int]] = []

        async def probe() -> float:
            elapsed, seen = time.monotonic() - started, total_requests(sim)
            samples.append((elapsed, seen))
            return elapsed

        await eventually(probe, lambda elapsed: elapsed >= 3.0, timeout=10, what="a 3 s window")
        for elapsed, seen in samples:
            assert seen <= burst + rate * elapsed + 1, (elapsed, seen)
        # The daemon wanted more (every check at start, then auth and queue every second): the budget, not
        # idleness, kept it low.
        assert samples[-1][1] >= burst
        # Checks that found the budget spent skipped their run: none waited into its timeout, and the
        # (healthy) target was never reported down for it.
        m = await metrics_of(url)
        assert value(m, "comfyui_up") == 1.0
        assert m.total("comfyui_request_failures_total", target=T) == 0.0
        assert all(daemon.runtimes[T].state.check(name).last_reason is None for name in ("auth", "queue"))
        # Those skips are counted, as the request budget's and not as a Retry-After pause.
        m = await wait_metrics(url, lambda m: m.total("comfywatch_check_skips_total", target=T,
                                                      reason="request_budget") >= 1, "a budget skip counted")
        assert m.total("comfywatch_check_skips_total", target=T, reason="retry_after") == 0


# ---------------------------------------------------------------------------------------------------------
# The key never leaks.


def _scrape_text(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def _admin(admin_url: str, faults: list[str]) -> None:
    body = json.dumps({"faults": faults}).encode()
    request = urllib.request.Request(f"{admin_url}/_sim/faults", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _wait_text(url: str, predicate: Any, what: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    text = ""
    while time.monotonic() < deadline:
        text = _scrape_text(url)
        if predicate(Metrics(text)):
            return text
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached\n{text[-3000:]}")


def _assert_no_key(text: str, where: str) -> None:
    secret_part = KEY.removeprefix("comfyui-")
    assert KEY not in text, f"API key in {where}"
    # Also no recognisable fragment of it (a truncated or re-encoded key is still a leak).
    for start in range(0, len(secret_part) - 16, 8):
        assert secret_part[start:start + 16] not in text, f"part of the API key in {where}"


def test_key_never_appears_in_logs_or_metrics(tmp_path: Path) -> None:
    """`comfywatch run` at debug level through auth, rate-limit, 5xx, payment faults and canary runs: the key
    is in no byte of its output or of /metrics."""
    canary = 'enabled = true\n  interval = "1s"\n  timeout = "5s"\n  max_runs_per_day = 1000'
    with simulate(tmp_path, "--cloud", "--cloud-api-key", KEY) as sim_proc:
        assert sim_proc.admin_url is not None
        config = cloud_config(sim_proc.url, tmp_path, canary=canary)
        scraped: list[str] = []
        with comfywatch_run(tmp_path, config, "--log-level", "debug", "--log-format", "json",
                            env=ENV) as daemon:
            scraped.append(_wait_text(daemon.url, lambda m: (m.value("comfyui_canary_runs_total", target=T,
                                      canary="preview-image") or 0) >= 1, "a canary run"))
            for fault, reason in (("http_401", "auth"), ("http_5xx", "server_error"),
                                  ("http_402", "payment"), ("http_429_rate", "rate_limited")):
                _admin(sim_proc.admin_url, [fault])
                scraped.append(_wait_text(daemon.url, lambda m, r=reason: m.total(
                    "comfyui_request_failures_total", target=T, reason=r) >= 1, f"{fault} seen"))
        log = daemon.output()
    assert '"event": "check_failed"' in log and '"reason": "auth"' in log  # the faults were logged
    _assert_no_key(log, "the daemon's log")
    for text in scraped:
        _assert_no_key(text, "/metrics")


def _doctor(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "comfywatch", "doctor", "--cloud", "--url", url, "--json"],
        capture_output=True, text=True, timeout=60 * TIMEOUT_FACTOR,
        env={**os.environ, **ENV, "NO_COLOR": "1"},
    )


def _checks(output: str) -> dict[str, dict[str, Any]]:
    report = json.loads(output)
    return {check["id"]: check for target in report["targets"] for check in target["checks"]}


def test_doctor_cloud_reports_without_the_key(tmp_path: Path) -> None:
    """`comfywatch doctor --cloud --json` checks the account (balance $60) and never prints the key."""
    with simulate(tmp_path, "--cloud", "--cloud-api-key", KEY) as sim_proc:
        assert sim_proc.admin_url is not None
        healthy = _doctor(sim_proc.url)
        _admin(sim_proc.admin_url, ["http_401"])
        refused = _doctor(sim_proc.url)
    checks = _checks(healthy.stdout)
    assert checks["cloud.auth"]["status"] == "ok", healthy.stdout
    assert checks["cloud.balance"]["details"]["balance_usd"] == 60.0
    assert checks["cloud.subscription"]["status"] == "ok"
    assert _checks(refused.stdout)["cloud.auth"]["status"] == "fail"
    assert refused.returncode == 1
    for run in (healthy, refused):
        _assert_no_key(run.stdout + run.stderr, "doctor output")
