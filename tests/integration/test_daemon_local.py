"""The daemon against the simulated ComfyUI: a healthy target, then every local fault switched at run time.

Each fault test checks the classified metric, that the daemon keeps serving ``/metrics`` while the fault
lasts, and that the target recovers once the fault is cleared.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from comfywatch.checks.context import LOCAL_ENDPOINTS
from comfywatch.errors import TRANSPORT_REASONS, possible_reasons
from comfywatch.sim.admin import SimHandle, start_sim
from tests.conftest import TIMEOUT_FACTOR
from tests.helpers import Metrics
from tests.integration.conftest import (
    CHECKS,
    TARGET,
    Watch,
    config_toml,
    sim_state_until,
    target_toml,
    watching,
)

FAILURES = "comfyui_request_failures_total"
#: A scrape slower than this means the event loop is blocked (by a slow target or a huge body).
QUICK = 0.5 * TIMEOUT_FACTOR


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.json()


def _rss_bytes() -> int:
    # The daemon runs in this process: its resident memory is ours.
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def _timed_scrape(watch: Watch) -> tuple[Metrics, float]:
    started = time.perf_counter()
    metrics = await watch.metrics()
    return metrics, time.perf_counter() - started


async def test_healthy_target_reports_the_simulator_values(local_sim: SimHandle, watch: Watch) -> None:
    """A healthy 0.3.64 target: up, build info, RAM/VRAM as served, idle queue, clean counters, fresh checks."""
    stats = await _get_json(f"{local_sim.url}/system_stats")
    started = time.time()
    m = await watch.metrics()
    v = watch.value
    assert v(m, "comfyui_up") == 1.0
    assert v(m, "comfyui_info", version="0.3.64", python_version="3.11.7", os="posix") == 1.0
    assert v(m, "comfyui_target_info", kind="local", url=local_sim.url) == 1.0
    assert v(m, "comfyui_ram_total_bytes") == stats["system"]["ram_total"]
    assert v(m, "comfyui_ram_free_bytes") == stats["system"]["ram_free"]
    (device,) = stats["devices"]
    labels = {"device": device["name"], "type": device["type"], "index": ""}
    for field in ("vram_total", "vram_free", "torch_vram_total", "torch_vram_free"):
        assert v(m, f"comfyui_device_{field}_bytes", **labels) == device[field], field
    for gauge in ("running", "pending", "running_seconds", "oldest_pending_seconds", "stalled",
                  "worker_not_consuming"):
        assert v(m, f"comfyui_queue_{gauge}") == 0.0, gauge
    assert v(m, "comfyui_jobs_total") == 0.0
    # A reason's series appears with its first failure (docs/metrics.md): 0.3.64 has no /api/jobs, probed once
    # (one 404), then /history is used for good; nothing else has failed.
    assert [(lab["endpoint"], lab["reason"], value) for lab, value in m.find(FAILURES, target=TARGET)] == [
        ("jobs", "not_found", 1.0)]
    assert v(m, "comfywatch_websocket_connected") == 1.0
    assert m.value("comfywatch_targets", kind="local") == 1.0
    assert m.value("comfywatch_config_last_reload_success") == 1.0
    for check in CHECKS:
        last = v(m, "comfywatch_check_last_success_timestamp_seconds", check=check)
        assert last is not None and started - 60 < last <= time.time(), check
        assert 0 <= (v(m, "comfywatch_check_duration_seconds", check=check) or -1) < 1.0, check
    # Only the account limits of a Cloud target skip checks: a local target has no skip series at all.
    assert not m.find("comfywatch_check_skips_total")

    before = {e: v(m, "comfyui_requests_total", endpoint=e, code="200") or 0.0 for e in LOCAL_ENDPOINTS}
    later = await watch.polls(2, check="jobs")
    for endpoint in LOCAL_ENDPOINTS:
        assert (v(later, "comfyui_requests_total", endpoint=endpoint, code="200") or 0.0) > before[endpoint]
        assert not [lab for lab, _ in later.find("comfyui_requests_total", target=TARGET, endpoint=endpoint)
                    if lab["code"] != "200"], endpoint
    assert v(later, FAILURES, endpoint="jobs", reason="not_found") == 1.0
    assert v(later, "comfyui_requests_total", endpoint="jobs", code="404") == 1.0


async def test_down_counts_connect_failures_and_recovers(local_sim: SimHandle, watch: Watch) -> None:
    """Connection refused: up 0 with reason connect on system_stats, then up 1 again once the port reopens."""
    await local_sim.set_faults(["down"])
    m = await watch.until(
        lambda m: watch.value(m, "comfyui_up") == 0.0
        and (watch.value(m, FAILURES, endpoint="system_stats", reason="connect") or 0) >= 1,
        "up 0 with a connect failure",
    )
    assert watch.value(m, FAILURES, endpoint="system_stats", reason="timeout") is None
    assert (watch.value(m, "comfyui_requests_total", endpoint="system_stats", code="none") or 0) >= 1
    # Staleness stays visible: the last success does not move while every poll fails.
    last_ok = watch.value(m, "comfywatch_check_last_success_timestamp_seconds", check="system")
    failed = watch.value(m, FAILURES, endpoint="system_stats", reason="connect") or 0
    m = await watch.until(
        lambda m: (watch.value(m, FAILURES, endpoint="system_stats", reason="connect") or 0) > failed,
        "another failed poll",
    )
    assert watch.value(m, "comfywatch_check_last_success_timestamp_seconds", check="system") == last_ok
    await local_sim.set_faults([])
    m = await watch.until(lambda m: watch.value(m, "comfyui_up") == 1.0, "up 1 after the port reopened")
    connects = watch.value(m, FAILURES, endpoint="system_stats", reason="connect")
    m = await watch.polls(2, check="system")
    assert watch.value(m, FAILURES, endpoint="system_stats", reason="connect") == connects
    assert watch.value(m, "comfyui_up") == 1.0


async def test_slow_target_times_out_and_recovers(local_sim: SimHandle, tmp_path: Path) -> None:
    """Answers slower than the target timeout: up 0 with reason timeout; /metrics stays fast; recovery."""
    config = config_toml(target_toml(TARGET, local_sim.url, timeout="300ms"))
    async with watching(config, tmp_path) as watch:
        await local_sim.set_faults(["slow"], slow_ms=800)
        m = await watch.until(
            lambda m: watch.value(m, "comfyui_up") == 0.0
            and (watch.value(m, FAILURES, endpoint="system_stats", reason="timeout") or 0) >= 1,
            "up 0 with a timeout failure",
        )
        assert watch.value(m, FAILURES, endpoint="system_stats", reason="connect") is None
        _, seconds = await _timed_scrape(watch)
        assert seconds < QUICK, seconds
        await local_sim.set_faults([])
        await watch.until(lambda m: watch.value(m, "comfyui_up") == 1.0, "up 1 once answers are fast again")


async def test_stalled_job_is_flagged_until_the_fault_clears_or_the_server_restarts(
    local_sim: SimHandle, tmp_path: Path
) -> None:
    """A running job without progress for stall_after sets comfyui_queue_stalled 1; clearing or restart resets it."""
    config = config_toml(target_toml(TARGET, local_sim.url, stall_after="1s"))
    async with watching(config, tmp_path) as watch:
        await local_sim.set_faults(["stall"])
        await local_sim.submit(job_ms=20)
        m = await watch.until(lambda m: watch.value(m, "comfyui_queue_stalled") == 1.0, "stalled 1")
        assert watch.value(m, "comfyui_queue_running") == 1.0
        assert (watch.value(m, "comfyui_queue_running_seconds") or 0) >= 1.0
        assert watch.value(m, "comfyui_up") == 1.0  # a stalled worker still answers HTTP

        await local_sim.set_faults([])
        m = await watch.until(
            lambda m: watch.value(m, "comfyui_queue_stalled") == 0.0 and watch.value(m, "comfyui_jobs_total") == 1.0,
            "stall cleared and the job counted once it finished",
        )
        assert watch.value(m, "comfyui_queue_running") == 0.0

        await local_sim.set_faults(["stall"])
        await local_sim.submit(job_ms=20)
        await watch.until(lambda m: watch.value(m, "comfyui_queue_stalled") == 1.0, "stalled 1 again")
        await local_sim.restart()
        m = await watch.until(
            lambda m: watch.value(m, "comfyui_queue_stalled") == 0.0 and watch.value(m, "comfyui_queue_running") == 0.0,
            "stall gone after the restart emptied the queue",
        )
        assert watch.value(m, "comfyui_jobs_total") == 1.0  # the lost job never finished


async def test_dead_worker_is_flagged_while_jobs_pile_up(local_sim: SimHandle, watch: Watch) -> None:
    """Pending jobs with nothing running for several polls set worker_not_consuming 1, and 0 once they drain."""
    await local_sim.set_faults(["worker_dead"])
    for _ in range(3):
        await local_sim.submit(job_ms=5)
    m = await watch.until(
        lambda m: watch.value(m, "comfyui_queue_worker_not_consuming") == 1.0, "worker_not_consuming 1"
    )
    assert watch.value(m, "comfyui_queue_pending") == 3.0
    assert watch.value(m, "comfyui_queue_running") == 0.0
    assert (watch.value(m, "comfyui_queue_oldest_pending_seconds") or 0) > 0
    assert watch.value(m, "comfyui_up") == 1.0
    await local_sim.set_faults([])
    m = await watch.until(
        lambda m: watch.value(m, "comfyui_queue_worker_not_consuming") == 0.0
        and watch.value(m, "comfyui_queue_pending") == 0.0
        and watch.value(m, "comfyui_jobs_total") == 3.0,
        "queue drained and the three jobs counted",
    )
    assert watch.value(m, "comfyui_queue_oldest_pending_seconds") == 0.0


@pytest.mark.parametrize(("fault", "reason", "other"), [("execution_error", "execution_error", "oom"),
                                                        ("oom", "oom", "execution_error")])
async def test_failing_jobs_are_counted_by_reason(
    local_sim: SimHandle, watch: Watch, fault: str, reason: str, other: str
) -> None:
    """Jobs failing at run time count in jobs_total and in job_failures_total under their own reason."""
    await local_sim.set_faults([fault])
    for _ in range(3):
        await local_sim.submit(job_ms=5)
    m = await watch.until(
        lambda m: watch.value(m, "comfyui_jobs_total") == 3.0
        and watch.value(m, "comfyui_job_failures_total", reason=reason) == 3.0,
        f"three {reason} failures",
    )
    assert watch.value(m, "comfyui_job_failures_total", reason=other) == 0.0
    assert watch.value(m, "comfyui_job_duration_seconds_count") == 3.0
    assert watch.value(m, "comfyui_up") == 1.0
    assert local_sim.state()["jobs_failed"] == 3

    await local_sim.set_faults([])
    await local_sim.submit(job_ms=5)
    m = await watch.until(lambda m: watch.value(m, "comfyui_jobs_total") == 4.0, "a fourth, successful job")
    assert watch.value(m, "comfyui_job_failures_total", reason=reason) == 3.0


@pytest.mark.parametrize(
    ("fault", "reason", "code"),
    [
        ("http_401", "auth", "401"),
        ("http_403", "forbidden", "403"),
        ("http_429", "rate_limited", "429"),
        ("http_500", "server_error", "500"),
        ("http_502_html", "server_error", "502"),
        ("garbage_json", "invalid_response", "200"),
    ],
)
async def test_refusals_and_bad_bodies_are_classified(
    local_sim: SimHandle, watch: Watch, fault: str, reason: str, code: str
) -> None:
    """Proxy refusals and unparseable bodies: up 0, the right reason per endpoint, then recovery."""
    before = await watch.metrics()
    ok_before = watch.value(before, "comfyui_requests_total", endpoint="system_stats", code="200") or 0.0
    await local_sim.set_faults([fault])
    m = await watch.until(
        lambda m: watch.value(m, "comfyui_up") == 0.0
        and all((watch.value(m, FAILURES, endpoint=e, reason=reason) or 0) >= 1 for e in ("system_stats", "queue")),
        f"up 0 with {reason} on system_stats and queue",
    )
    seen = watch.value(m, "comfyui_requests_total", endpoint="system_stats", code=code) or 0.0
    assert seen - (ok_before if code == "200" else 0.0) >= 1
    for other in possible_reasons(TRANSPORT_REASONS, cloud=False, https=False):
        if other != reason:
            assert watch.value(m, FAILURES, endpoint="system_stats", reason=other) is None, other
    await local_sim.set_faults([])
    await watch.until(lambda m: watch.value(m, "comfyui_up") == 1.0, "up 1 after the fault cleared")


async def test_huge_body_is_capped_without_memory_growth(local_sim: SimHandle, watch: Watch) -> None:
    """A 2 GiB answer is refused as invalid_response at the body cap; RSS stays flat and /metrics stays fast."""
    rss_before = _rss_bytes()
    await local_sim.set_faults(["huge_body"])
    m = await watch.until(
        lambda m: watch.value(m, "comfyui_up") == 0.0
        and (watch.value(m, FAILURES, endpoint="system_stats", reason="invalid_response") or 0) >= 3,
        "three capped system_stats answers",
    )
    for _ in range(5):
        m, seconds = await _timed_scrape(watch)
        assert seconds < QUICK, seconds
    assert watch.value(m, FAILURES, endpoint="queue", reason="invalid_response")
    assert _rss_bytes() - rss_before < 64 * 2**20
    # The client hangs up at once (the declared length is over the cap): each stream stops after what the
    # socket buffers took, far below the 32 MiB cap, let alone 2 GiB.
    state = await sim_state_until(local_sim, lambda s: s["huge_bodies_active"] == 0, "huge streams closed")
    refused = (await watch.metrics()).total(FAILURES, target=TARGET, reason="invalid_response")
    assert state["huge_body_bytes"] / refused < 32 * 2**20, (state["huge_body_bytes"], refused)
    await local_sim.set_faults([])
    await watch.until(lambda m: watch.value(m, "comfyui_up") == 1.0, "up 1 after the fault cleared")


@pytest.mark.parametrize("jobs_api", [False, True], ids=["history", "jobs_api"])
async def test_restart_does_not_double_count_jobs(tmp_path: Path, jobs_api: bool) -> None:
    """After a server restart (history emptied) jobs_total equals the number of distinct finished jobs."""
    async with await start_sim(jobs_api=jobs_api) as local_sim, watching(
        config_toml(target_toml(TARGET, local_sim.url)), tmp_path
    ) as watch:
        for _ in range(3):
            await local_sim.submit(job_ms=5)
        await watch.until(lambda m: watch.value(m, "comfyui_jobs_total") == 3.0, "three jobs before the restart")
        first = set(local_sim.state()["history"])
        await local_sim.restart()
        assert local_sim.state()["history"] == []
        for _ in range(2):
            await local_sim.submit(job_ms=5)
        await watch.until(lambda m: watch.value(m, "comfyui_jobs_total") == 5.0, "five jobs after the restart")
        distinct = first | set(local_sim.state()["history"])
        assert len(distinct) == 5
        m = await watch.polls(2, check="jobs")
        assert watch.value(m, "comfyui_jobs_total") == len(distinct)
        assert watch.value(m, "comfyui_job_duration_seconds_count") == len(distinct)
        assert watch.value(m, "comfyui_up") == 1.0


async def test_request_cut_by_the_check_budget_still_counts_as_a_timeout(tmp_path: Path) -> None:
    """A poll abandoned because the check ran out of time counts as a timeout failure, like one the client ends."""
    # A request ends on its own 900 ms timeout, before its check's budget (timeout + 0.5 s): only the wait for a
    # request slot can use up the rest. With a single slot, a rival target listed first (so polled first in the
    # poll slot both share) that holds it for its whole timeout makes every check of the target wait past its budget.
    async with await start_sim(targets=1) as sim:
        config = "[server]\nmax_concurrency = 1\n\n" + config_toml(
            target_toml("rival", sim.target_url(0)), target_toml(TARGET, sim.url), interval="1s", timeout="900ms")
        async with watching(config, tmp_path) as watch:
            # First the catalogue reads each target gets when it comes up: made slow, their two dozen requests
            # would hold the single slot too, and no poll of the target could start at all.
            await watch.until(lambda m: all(
                m.value("comfywatch_check_last_success_timestamp_seconds", target=name, check="catalog") is not None
                for name in ("rival", TARGET)), "both catalogues read")
            await sim.set_faults(["slow"], slow_ms=1500)
            m = await watch.until(
                lambda m: watch.value(m, "comfyui_up") == 0.0
                and (watch.value(m, FAILURES, endpoint="system_stats", reason="timeout") or 0) >= 1,
                "up 0 while the target is slow, the client ending its requests",
            )
            await sim.set_faults(["slow"], target=0, slow_ms=1500)
            m = await watch.until(
                lambda m: (watch.value(m, "comfywatch_check_overruns_total", check="system") or 0) >= 2,
                "two system checks cut by their budget",
            )
            assert watch.value(m, "comfyui_up") == 0.0
            assert (watch.value(m, FAILURES, endpoint="system_stats", reason="timeout") or 0) >= 1
            await sim.set_faults([])
            await sim.set_faults([], target=0)
