"""WebSocket faults and a restart mid-canary, against the real daemon process and the real simulator.

One ``comfywatch run`` watches one simulated ComfyUI per WebSocket fault, each behind a :class:`WsFaultProxy`
that breaks only the WebSocket (so the canary must fall back to polling and still succeed), plus one simulator
that restarts while the canary's prompt waits in its queue (the canary must report ``lost``, never success).
Background jobs run on every simulator while the faults last; after the faults end each target must be back
to a WebSocket canary and must have counted exactly those jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from comfywatch.checks import CANARY_CLIENT_PREFIX
from comfywatch.sim import SimHandle, start_sim
from tests.faults.harness import Metrics, Watch, daemon_process, failure_deltas, wait_for
from tests.faults.wsproxy import WsFaultProxy, WsMode
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CANARY = "preview-image"
RESTART = "restart_mid_canary"
JOBS_DURING_FAULT = 2
#: name -> (mode, whether the canary still gets its events over the WebSocket, monitor stays connected)
WS_CASES: dict[str, tuple[WsMode, bool, bool]] = {
    "ws_close_mid_run": (WsMode.CLOSE_MID_RUN, False, True),
    "ws_garbage_text": (WsMode.GARBAGE_TEXT, True, True),
    "ws_garbage_frames": (WsMode.GARBAGE_FRAMES, False, False),
    "ws_oversized": (WsMode.OVERSIZED, False, False),
    "ws_no_status": (WsMode.NO_STATUS, False, True),
}
SCRAPE_LIMIT_S = 2.0


def _canary(metrics: Metrics, name: str, metric: str) -> float | None:
    return metrics.value(metric, target=name, canary=CANARY)


@dataclass
class RestartRecord:
    """The restart case: canary counters just before the restart and once the interrupted run reported."""

    before_runs: float
    before_lost: float
    reported: Metrics


@dataclass
class Record:
    baseline: Metrics
    during: Metrics
    recovered: Metrics
    after: Metrics
    watch: Watch
    restart: RestartRecord
    alive_at_end: bool


def _config(urls: dict[str, str]) -> str:
    parts = ['[defaults]\ninterval = "1s"\ntimeout = "900ms"\nstall_after = "60s"\n']
    for name, url in urls.items():
        when_busy = 'when_busy = "queue"\n  ' if name == RESTART else ""
        parts.append(f'[[targets]]\nname = "{name}"\nurl = "{url}"\n'
                     f'  [targets.canary]\n  interval = "1s"\n  timeout = "20s"\n  {when_busy}\n')
    return "\n".join(parts)


def _healthy(metrics: Metrics, names: list[str]) -> bool:
    return all(
        metrics.value("comfyui_up", target=name) == 1.0
        and _canary(metrics, name, "comfyui_canary_success") == 1.0
        and _canary(metrics, name, "comfyui_canary_websocket_ok") == 1.0
        and metrics.value("comfywatch_websocket_connected", target=name) == 1.0
        and (metrics.value("comfywatch_check_last_success_timestamp_seconds", target=name, check="jobs") or 0) > 0
        for name in names
    )


def _runs(metrics: Metrics, name: str) -> float:
    return _canary(metrics, name, "comfyui_canary_runs_total") or 0.0


async def _restart_mid_canary(sim: SimHandle, watch: Watch) -> RestartRecord:
    """Hold the canary's prompt in the queue behind a long job, then restart the server under it."""
    await sim.submit(job_ms=60_000)
    # The canary (when_busy = "queue") submits behind the blocker; wait until its prompt is pending.
    async def canary_pending() -> bool:
        return any(str(entry[3].extra_data.get("client_id", "")).startswith(CANARY_CLIENT_PREFIX)
                   for entry in sim.server().pending)

    await eventually(canary_pending, bool, timeout=20, what="the canary's prompt queued behind the blocker")
    marked = await watch.scrape()
    await sim.restart()
    runs = _runs(marked, RESTART)
    reported = await wait_for(watch, lambda m: _runs(m, RESTART) > runs, timeout=30,
                              what="the interrupted canary run reported")
    return RestartRecord(
        before_runs=runs,
        before_lost=marked.value("comfyui_canary_failures_total", target=RESTART, canary=CANARY,
                                 reason="lost") or 0.0,
        reported=reported,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def record(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Record]:
    """Healthy -> WebSocket faults (and the restart) -> healed, with background jobs during the faults."""
    tmp: Path = tmp_path_factory.mktemp("wsfaults")
    sims: dict[str, SimHandle] = {}
    proxies: dict[str, WsFaultProxy] = {}
    watch_task: asyncio.Task[None] | None = None
    try:
        for name in [*WS_CASES, RESTART]:
            sims[name] = await start_sim()
        for name in WS_CASES:
            port = int(sims[name].url.rsplit(":", 1)[1])
            proxies[name] = await WsFaultProxy("127.0.0.1", port).start()
        urls = {name: proxies[name].url for name in WS_CASES} | {RESTART: sims[RESTART].url}
        names = list(urls)
        async with daemon_process(tmp, _config(urls)) as proc:
            watch = Watch(f"{proc.url}/metrics")
            try:
                await wait_for(watch, lambda m: _healthy(m, names), timeout=30, what="every canary green over WS")
                watch_task = asyncio.create_task(watch.run())
                baseline = await watch.scrape()
                watch.phase = "fault"
                for name, (mode, _, _) in WS_CASES.items():
                    proxies[name].set_mode(mode)
                restart = asyncio.create_task(_restart_mid_canary(sims[RESTART], watch))
                for name in WS_CASES:
                    for _ in range(JOBS_DURING_FAULT):
                        await sims[name].submit(job_ms=50)
                # Two canary runs under each fault (the no-status one waits 2 s for its status frame).
                during = await wait_for(
                    watch, lambda m: all(_runs(m, n) - _runs(baseline, n) >= 2 for n in WS_CASES),
                    timeout=40, what="two canary runs under every WebSocket fault",
                )
                restart_record = await restart
                watch.phase = "healing"
                heal_wall = time.time()
                for proxy in proxies.values():
                    proxy.set_mode(WsMode.PASS)

                def recovered(m: Metrics) -> bool:
                    return _healthy(m, names) and all(
                        (_canary(m, n, "comfyui_canary_last_success_timestamp_seconds") or 0) > heal_wall
                        and m.value("comfyui_jobs_total", target=n) == JOBS_DURING_FAULT
                        for n in WS_CASES
                    )

                # The monitor's reconnect back-off grows while a fault lasts: allow for it.
                recovered_metrics = await wait_for(watch, recovered, timeout=40, strict=False,
                                                   what="every target back on its WebSocket")
                watch.phase = "recovered"
                after = await watch.scrape()
                alive = proc.process.poll() is None
            finally:
                if watch_task is not None:
                    watch_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watch_task
                await watch.close()
        yield Record(baseline, during, recovered_metrics, after, watch, restart_record, alive)
    finally:
        for proxy in proxies.values():
            await proxy.close()
        for sim in sims.values():
            await sim.close()


# -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(WS_CASES))
async def test_canary_survives_websocket_fault(record: Record, name: str) -> None:
    """The canary still succeeds under a broken WebSocket, and says whether it had to poll instead."""
    _, websocket_ok, _ = WS_CASES[name]
    during = record.during
    assert _canary(during, name, "comfyui_canary_success") == 1.0
    assert _canary(during, name, "comfyui_canary_websocket_ok") == (1.0 if websocket_ok else 0.0)
    failed = during.total("comfyui_canary_failures_total", target=name) - record.baseline.total(
        "comfyui_canary_failures_total", target=name)
    assert failed == 0


@pytest.mark.parametrize("name", list(WS_CASES))
async def test_websocket_fault_never_marks_target_down(record: Record, name: str) -> None:
    """Monitor sockets dying or misbehaving never turn comfyui_up to 0 (the re-check finds the server up)."""
    seen = record.watch.values("comfyui_up", phase="fault", target=name)
    assert len(seen) >= 3 and set(seen) == {1.0}, seen
    assert failure_deltas(record.baseline, record.after, name) == {}


@pytest.mark.parametrize("name", list(WS_CASES))
async def test_monitor_socket_state(record: Record, name: str) -> None:
    """The monitor socket drops on invalid or oversized frames, survives the other faults, and ends up connected."""
    _, _, stays = WS_CASES[name]
    seen = record.watch.values("comfywatch_websocket_connected", phase="fault", target=name)
    if stays:
        # Cut once when the fault started (a proxy reload), then reconnected and kept open despite the fault.
        assert seen and seen[-1] == 1.0, seen
    else:
        assert 0.0 in seen, seen
    assert record.recovered.value("comfywatch_websocket_connected", target=name) == 1.0


@pytest.mark.parametrize("name", list(WS_CASES))
async def test_websocket_fault_recovers(record: Record, name: str) -> None:
    """After the fault the canary runs over the WebSocket again and succeeds."""
    assert _canary(record.recovered, name, "comfyui_canary_success") == 1.0
    assert _canary(record.recovered, name, "comfyui_canary_websocket_ok") == 1.0


@pytest.mark.parametrize("name", list(WS_CASES))
async def test_websocket_fault_loses_no_job(record: Record, name: str) -> None:
    """Background jobs finished during the fault are counted exactly once; canary prompts never are."""
    assert record.after.value("comfyui_jobs_total", target=name) == JOBS_DURING_FAULT
    assert record.after.total("comfyui_job_failures_total", target=name) == 0


async def test_restart_mid_canary_is_lost_never_success(record: Record) -> None:
    """A restart while the canary's prompt waits in the queue ends that run as lost, not as a success."""
    reported = record.restart.reported
    assert _runs(reported, RESTART) == record.restart.before_runs + 1
    assert _canary(reported, RESTART, "comfyui_canary_success") == 0.0
    lost = reported.value("comfyui_canary_failures_total", target=RESTART, canary=CANARY, reason="lost")
    assert lost == record.restart.before_lost + 1
    assert reported.total("comfyui_canary_failures_total", target=RESTART) == lost


async def test_restart_mid_canary_recovers(record: Record) -> None:
    """After the restart the next canary succeeds, the target never went down, and the lost job is not counted."""
    assert _canary(record.recovered, RESTART, "comfyui_canary_success") == 1.0
    assert set(record.watch.values("comfyui_up", phase="fault", target=RESTART)) == {1.0}
    # The blocker never finished (the restart dropped it): no job to count.
    assert record.after.value("comfyui_jobs_total", target=RESTART) == 0


async def test_daemon_stays_up_and_serves_metrics_fast(record: Record) -> None:
    """The daemon survives every WebSocket fault and each scrape answered within the limit."""
    assert record.alive_at_end
    assert not record.watch.errors, record.watch.errors[:5]
    assert max(record.watch.latencies) < SCRAPE_LIMIT_S, sorted(record.watch.latencies)[-5:]
    assert not record.watch.regressions, record.watch.regressions[:10]
