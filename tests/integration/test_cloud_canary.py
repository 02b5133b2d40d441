"""The Comfy Cloud canary end to end: budget across restarts, output fetched without the key, fault reasons.

The real daemon runs the built-in ``preview-image`` canary against the simulated Cloud; assertions use the
daemon's metrics and the simulator's own counters (submits received, signed-URL fetches, key leaks).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comfywatch.checks.canary import CanaryRunner
from comfywatch.checks.cloud import CloudCanaryApi
from comfywatch.errors import Reason
from comfywatch.sim.admin import SimHandle, start_sim
from comfywatch.workflows import load_workflow
from tests.helpers import Metrics, running_daemon
from tests.integration.test_cloud import (
    ENV,
    KEY,
    T,
    api_for,
    by_method,
    cloud_config,
    jobs_polled,
    sim_cloud,
    submit_jobs,
    value,
    wait_metrics,
)

CANARY = "preview-image"


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    """A simulated Comfy Cloud accepting ``KEY`` (CREATOR tier, 6000 cents)."""
    async with await start_sim(cloud=True, cloud_api_keys=[KEY]) as handle:
        yield handle


def canary_table(*, runs: int = 1000, interval: str = "1s", timeout: str = "5s", extra: str = "") -> str:
    """The ``[targets.canary]`` lines: enabled (Cloud canaries are opt-in), fast, with a daily cap."""
    return (f'enabled = true\n  interval = "{interval}"\n  timeout = "{timeout}"\n'
            f"  max_runs_per_day = {runs}\n  {extra}")


def canary_value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """A canary series of the ``cloud`` target."""
    return value(metrics, name, canary=CANARY, **labels)


def submits(sim: SimHandle) -> int:
    """POST /api/prompt requests the simulator received."""
    return by_method(sim).get("POST /api/prompt", 0)


async def test_canary_succeeds_and_fetches_its_output_without_the_key(sim: SimHandle, tmp_path: Path) -> None:
    """A Cloud canary run submits, follows the WebSocket, and fetches /api/view's 302 target without X-API-Key."""
    account = sim_cloud(sim)
    account.reject_leaks = True  # a signed-URL fetch carrying the key would fail the run as well
    config = cloud_config(sim.url, tmp_path, canary=canary_table())
    async with running_daemon(config, tmp_path, ENV) as (daemon, url):
        m = await wait_metrics(url, lambda m: (canary_value(m, "comfyui_canary_runs_total") or 0) >= 2,
                               "two canary runs")
        assert canary_value(m, "comfyui_canary_success") == 1.0
        assert canary_value(m, "comfyui_canary_websocket_ok") == 1.0
        assert m.total("comfyui_canary_failures_total", target=T) == 0.0
        assert (value(m, "comfy_cloud_canary_runs_today") or 0) >= 2
        assert canary_value(m, "comfyui_canary_phase_seconds", phase="fetch") is not None
        state = sim.state()
        assert state["key_leaks"] == 0
        assert state["signed_fetches"] >= 2
        assert by_method(sim)["GET /api/view"] >= 2
        # The canary's own jobs are not users' jobs.
        m = await jobs_polled(daemon, url)
        assert value(m, "comfyui_jobs_total") == 0.0


async def test_daily_cap_holds_across_a_restart(sim: SimHandle, tmp_path: Path) -> None:
    """max_runs_per_day = 2 is spent by the first daemon; a second one on the same state_dir submits nothing."""
    config = cloud_config(sim.url, tmp_path, canary=canary_table(runs=2))
    async with running_daemon(config, tmp_path, ENV) as (_daemon, url):
        m = await wait_metrics(url, lambda m: canary_value(m, "comfyui_canary_runs_total") == 2
                               and (canary_value(m, "comfyui_canary_skipped_total") or 0) >= 1, "cap reached")
        assert value(m, "comfy_cloud_canary_runs_today") == 2.0
    assert submits(sim) == 2
    saved = json.loads((tmp_path / "canary-budget.json").read_text(encoding="utf-8"))
    assert saved[f"{T}:{CANARY}"]["runs"] == 2
    async with running_daemon(config, tmp_path, ENV) as (_daemon, url):
        m = await wait_metrics(url, lambda m: (canary_value(m, "comfyui_canary_skipped_total") or 0) >= 3,
                               "the canary check ran again")
        assert canary_value(m, "comfyui_canary_runs_total") == 0
        assert value(m, "comfy_cloud_canary_runs_today") == 2.0
    assert submits(sim) == 2


async def test_unreadable_budget_file_spends_nothing(sim: SimHandle, tmp_path: Path) -> None:
    """A corrupt budget file counts as 'budget used up', never as 'reset': no canary is submitted."""
    (tmp_path / "canary-budget.json").write_text("{not json", encoding="utf-8")
    config = cloud_config(sim.url, tmp_path, canary=canary_table(runs=5))
    async with running_daemon(config, tmp_path, ENV) as (_daemon, url):
        m = await wait_metrics(url, lambda m: (canary_value(m, "comfyui_canary_skipped_total") or 0) >= 2,
                               "canary skipped")
        assert canary_value(m, "comfyui_canary_runs_total") == 0
    assert submits(sim) == 0


async def test_busy_account_does_not_eat_the_daily_budget(sim: SimHandle, tmp_path: Path) -> None:
    """A canary skipped because the account's queue is busy gives its budget back: it runs once the queue drains."""
    await sim.set_faults(["stuck_jobs"])
    await submit_jobs(sim, 1)  # a user's job that waits: the canary (when_busy = skip) must not queue behind it
    config = cloud_config(sim.url, tmp_path, canary=canary_table(runs=1))
    async with running_daemon(config, tmp_path, ENV) as (_daemon, url):
        m = await wait_metrics(url, lambda m: (canary_value(m, "comfyui_canary_skipped_total") or 0) >= 3,
                               "canary skipped while busy")
        assert canary_value(m, "comfyui_canary_runs_total") == 0
        assert value(m, "comfy_cloud_canary_runs_today") == 0.0
        await sim.set_faults([])
        m = await wait_metrics(url, lambda m: canary_value(m, "comfyui_canary_success") == 1.0, "canary ran")
        assert value(m, "comfy_cloud_canary_runs_today") == 1.0
    assert submits(sim) == 2  # the user's job and exactly one canary


@pytest.mark.parametrize(
    ("fault", "reason", "error_type"),
    [
        ("http_402", "payment", "PAYMENT_REQUIRED"),
        ("inactive_subscription", "payment", "PAYMENT_REQUIRED"),
        ("http_429_payment", "payment", "FREE_TIER_EXHAUSTED"),
        ("http_429_queue_limit", "queue_full", "QUEUE_LIMIT"),
        ("http_5xx", "server_error", "SERVICE_UNAVAILABLE"),
    ],
)
async def test_refused_submit_is_classified_and_never_retried(
    sim: SimHandle, tmp_path: Path, fault: str, reason: str, error_type: str
) -> None:
    """A refused POST /api/prompt fails the canary with the right reason, one submit per run, and no pause."""
    await sim.set_faults([fault])
    # when_busy = queue: the canary goes straight to submit (under http_5xx the queue read fails too).
    config = cloud_config(sim.url, tmp_path, canary=canary_table(extra='when_busy = "queue"'))
    async with running_daemon(config, tmp_path, ENV) as (_daemon, url):
        m = await wait_metrics(url, lambda m: (canary_value(m, "comfyui_canary_failures_total", reason=reason)
                                               or 0) >= 2, f"canary failed with {reason}")
        assert canary_value(m, "comfyui_canary_success") == 0.0
        # Billing refusals and a full queue are not rate limits: nothing is paused.
        assert value(m, "comfy_cloud_retry_after_seconds") == 0.0
        runs = canary_value(m, "comfyui_canary_runs_total")
        prompt_failures = value(m, "comfyui_request_failures_total", endpoint="prompt", reason=reason)
    # One POST per run: a 402/429/503 submit is never retried (a lost answer may hide a billed job).
    assert submits(sim) == runs == prompt_failures
    assert runs is not None and runs >= 2


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("insufficient_funds_runtime", "payment"),
        ("oom", "oom"),
        ("lost", "lost"),
    ],
)
async def test_job_failing_after_submit_is_classified(sim: SimHandle, tmp_path: Path, fault: str, reason: str
                                                       ) -> None:
    """A canary job accepted (200) but failing on the Cloud reports the failure's reason."""
    await sim.set_faults([fault])
    config = cloud_config(sim.url, tmp_path, canary=canary_table(timeout="2s", runs=1))
    async with running_daemon(config, tmp_path, ENV) as (_daemon, url):
        m = await wait_metrics(url, lambda m: canary_value(m, "comfyui_canary_runs_total") == 1
                               and canary_value(m, "comfyui_canary_success") is not None, "canary finished")
        assert canary_value(m, "comfyui_canary_success") == 0.0
        assert canary_value(m, "comfyui_canary_failures_total", reason=reason) == 1


async def test_canary_inside_a_retry_after_pause_fails_as_rate_limited(sim: SimHandle, tmp_path: Path) -> None:
    """A canary run that meets a Retry-After pause reports rate_limited and sends nothing (it does not crash)."""
    api = api_for(sim.url, tmp_path)
    try:
        api.pause.retry_after_until = time.time() + 30
        runner = CanaryRunner(CloudCanaryApi(api, KEY), load_workflow("builtin:preview-image", CANARY),
                              timeout=5)
        result = await runner.run()
        assert result.reason is Reason.RATE_LIMITED
        assert result.prompt_id is None
        runner = CanaryRunner(CloudCanaryApi(api, KEY), load_workflow("builtin:preview-image", CANARY),
                              timeout=5, when_busy="queue")
        result = await runner.run()
        assert result.reason is Reason.RATE_LIMITED
    finally:
        await api.close()
    assert sum(by_method(sim).get(k, 0) for k in by_method(sim) if "/api/" in k) == 0


async def test_canary_cleanup_is_accepted(sim: SimHandle, tmp_path: Path) -> None:
    """The canary deletes its history entry with POST /api/history {"delete": [id]} without a failure."""
    config = cloud_config(sim.url, tmp_path, canary=canary_table())
    async with running_daemon(config, tmp_path, ENV) as (_daemon, url):
        m = await wait_metrics(url, lambda m: canary_value(m, "comfyui_canary_success") == 1.0, "canary ran")
        assert m.total("comfyui_requests_total", target=T, endpoint="history") >= 1
        assert m.total("comfyui_request_failures_total", target=T, endpoint="history") == 0.0


async def test_ws_url_keeps_path_prefix_and_ipv6_brackets(tmp_path: Path) -> None:
    """The canary's WebSocket URL is built from the target URL: scheme swapped, prefix and [::1] kept."""
    api = api_for("https://[::1]:8443/comfy", tmp_path)
    try:
        url = CloudCanaryApi(api, KEY).ws_url("c1")
    finally:
        await api.close()
    assert url.startswith("wss://[::1]:8443/comfy/ws?clientId=c1&token=")

