"""Doctor's stuck-queue rule against the simulated ComfyUI: jobs pending with nothing running count as a stuck
worker only if the same jobs still wait at a second look; a worker that takes them meanwhile gets its canary."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from comfywatch.checks.context import TargetContext, build_context
from comfywatch.cli.doctor import STUCK_CONFIRM_S, TargetReport, judge_queue, stuck_queue
from comfywatch.config import Config, TargetConfig
from comfywatch.errors import DIAGNOSIS_HINTS, Diagnosis
from comfywatch.sim.admin import SimHandle, start_sim
from tests.integration.conftest import sim_state_until


@pytest.fixture
async def dead_worker() -> AsyncIterator[SimHandle]:
    """A ComfyUI whose worker takes nothing from the queue, with one job pending."""
    async with await start_sim(faults=["worker_dead"]) as handle:
        await handle.submit(job_ms=5)
        yield handle


@pytest.fixture
async def ctx(dead_worker: SimHandle) -> AsyncIterator[TargetContext]:
    runtime = build_context(Config(), TargetConfig(name="sim", url=dead_worker.url))
    try:
        yield runtime
    finally:
        await runtime.close()


async def test_jobs_still_waiting_at_the_second_look_mean_a_stuck_worker(ctx: TargetContext) -> None:
    report = TargetReport("sim", "local", "")
    idle = await judge_queue(report, ctx)
    assert idle is not None and report.checks[0].status == "warn"
    stuck = await stuck_queue(ctx, idle)
    assert stuck is not None
    assert (stuck.id, stuck.status, stuck.hint) == ("canary.run", "fail", DIAGNOSIS_HINTS[Diagnosis.WORKER_STUCK])
    assert stuck.details["pending"] == 1 and stuck.details["waited_seconds"] >= STUCK_CONFIRM_S
    assert time.monotonic() - idle.read_at >= STUCK_CONFIRM_S


async def test_a_worker_that_takes_the_jobs_meanwhile_is_not_stuck(dead_worker: SimHandle, ctx: TargetContext) -> None:
    idle = await judge_queue(TargetReport("sim", "local", ""), ctx)
    assert idle is not None
    await dead_worker.set_faults([])
    await sim_state_until(dead_worker, lambda s: s["jobs_finished"] == 1, "the worker ran the pending job")
    assert await stuck_queue(ctx, idle) is None
