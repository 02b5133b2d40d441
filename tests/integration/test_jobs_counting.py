"""Counting finished jobs exactly once, in both modes: ``/history`` (0.3.64, ``/api/jobs`` answers 404) and
``/api/jobs`` (newer servers, ``start_sim(jobs_api=True)``).

Exact expectations come from the simulator's own history: the worker is frozen (``worker_dead``) before the
history is read, so the set of finished jobs cannot move between reading it and comparing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from comfywatch.checks import jobs as jobs_check
from comfywatch.checks.context import build_context
from comfywatch.config import Config, TargetConfig
from comfywatch.errors import possible_reasons
from comfywatch.sim.admin import SimHandle, start_sim
from comfywatch.state import JOB_REASONS_FROM_ZERO
from tests.fixtures import load_json
from tests.helpers import Metrics
from tests.integration.conftest import TARGET, Watch, config_toml, sim_state_until, target_toml, watching

MODES = pytest.mark.parametrize("jobs_api", [False, True], ids=["history", "jobs_api"])


def _config(sim: SimHandle) -> str:
    return config_toml(target_toml(TARGET, sim.url))


async def _freeze(sim: SimHandle) -> dict[str, Any]:
    """Stop the worker and wait for the job it was running: no job finishes until the fault clears."""
    await sim.set_faults(["worker_dead"])
    return await sim_state_until(sim, lambda s: not s["queue_running"], "the running job finished")


def _assert_mode(watch: Watch, m: Metrics, jobs_api: bool) -> None:
    """The daemon reads the endpoint the server has: /api/jobs when served, else /history after one 404."""
    if jobs_api:
        assert (watch.value(m, "comfyui_requests_total", endpoint="jobs", code="200") or 0) >= 1
        assert watch.value(m, "comfyui_requests_total", endpoint="history", code="200") is None
    else:
        assert watch.value(m, "comfyui_requests_total", endpoint="jobs", code="404") == 1.0
        assert (watch.value(m, "comfyui_requests_total", endpoint="history", code="200") or 0) >= 1


@MODES
async def test_background_load_is_counted_exactly_once(tmp_path: Path, jobs_api: bool) -> None:
    """Every job finishing under a steady background load is counted once, with its duration, none before start."""
    async with await start_sim(jobs_api=jobs_api, load_per_min=1200, job_ms=10) as sim:
        await sim_state_until(sim, lambda s: len(s["history"]) >= 5, "jobs finished before the daemon starts")
        baseline = set((await _freeze(sim))["history"])
        async with watching(_config(sim), tmp_path) as watch:
            await sim.set_faults([])
            await sim_state_until(sim, lambda s: len(s["history"]) >= len(baseline) + 30, "30 more jobs finished")
            finished = set((await _freeze(sim))["history"]) - baseline
            assert len(finished) >= 30
            m = await watch.until(
                lambda m: watch.value(m, "comfyui_jobs_total") == len(finished),
                f"jobs_total == {len(finished)} (the jobs finished since the daemon started)",
            )
            m = await watch.polls(3)
            assert watch.value(m, "comfyui_jobs_total") == len(finished)
            assert watch.value(m, "comfyui_job_duration_seconds_count") == len(finished)
            for reason in possible_reasons(JOB_REASONS_FROM_ZERO, cloud=False, https=False):
                assert watch.value(m, "comfyui_job_failures_total", reason=reason) == 0.0, reason
            assert watch.value(m, "comfyui_job_failures_total", reason="interrupted") is None
            _assert_mode(watch, m, jobs_api)


@MODES
async def test_jobs_finished_before_the_daemon_started_are_not_counted(tmp_path: Path, jobs_api: bool) -> None:
    """Jobs already in history at start (successes and failures) are the baseline: counters start at 0."""
    async with await start_sim(jobs_api=jobs_api) as sim:
        await sim.set_faults(["oom"])
        for _ in range(2):
            await sim.submit(job_ms=1)
        await sim_state_until(sim, lambda s: s["jobs_failed"] == 2, "two failed jobs before the daemon")
        await sim.set_faults([])
        for _ in range(3):
            await sim.submit(job_ms=1)
        await sim_state_until(sim, lambda s: len(s["history"]) == 5, "five jobs before the daemon")
        async with watching(_config(sim), tmp_path) as watch:
            m = await watch.polls(2)
            assert watch.value(m, "comfyui_jobs_total") == 0.0
            assert watch.value(m, "comfyui_job_failures_total", reason="oom") == 0.0
            # The job-duration histogram appears with the first job finished since the daemon started.
            assert watch.value(m, "comfyui_job_duration_seconds_count") is None
            await sim.submit(job_ms=1)
            m = await watch.until(lambda m: watch.value(m, "comfyui_jobs_total") == 1.0, "the one new job counted")
            assert watch.value(m, "comfyui_job_duration_seconds_count") == 1.0
            _assert_mode(watch, m, jobs_api)


@MODES
async def test_window_grows_when_more_jobs_finish_between_polls_than_it_holds(
    tmp_path: Path, jobs_api: bool
) -> None:
    """300 jobs finishing while polling is paused (window 64) are all counted at the next poll, once."""
    total = 300
    async with await start_sim(jobs_api=jobs_api) as sim, watching(_config(sim), tmp_path) as watch:
        await sim.set_faults(["worker_dead"])
        for _ in range(total):
            await sim.submit(job_ms=0)
        scheduler = watch.daemon.scheduler
        assert scheduler is not None
        scheduler.pause()
        try:
            await sim.set_faults([])
            await sim_state_until(
                sim, lambda s: len(s["history"]) == total and not s["queue_pending"] and not s["queue_running"],
                f"{total} jobs finished while the daemon was not polling", timeout=30,
            )
        finally:
            scheduler.resume()
        m = await watch.until(lambda m: watch.value(m, "comfyui_jobs_total") == total, f"jobs_total == {total}")
        m = await watch.polls(2)
        assert watch.value(m, "comfyui_jobs_total") == total
        assert watch.value(m, "comfyui_job_duration_seconds_count") == total


async def test_pending_backlog_does_not_hide_finished_jobs_from_the_jobs_api(tmp_path: Path) -> None:
    """/api/jobs lists pending jobs first: a backlog longer than the window must not hide finished jobs."""
    total = 100
    async with await start_sim(jobs_api=True) as sim, watching(_config(sim), tmp_path) as watch:
        await sim.set_faults(["worker_dead"])
        for _ in range(total):
            await sim.submit(job_ms=15)
        await watch.until(lambda m: watch.value(m, "comfyui_queue_pending") == total, f"{total} pending")
        await sim.set_faults([])
        await sim_state_until(sim, lambda s: len(s["history"]) == total, f"{total} jobs drained", timeout=30)
        m = await watch.until(lambda m: watch.value(m, "comfyui_jobs_total") == total, f"jobs_total == {total}")
        m = await watch.polls(2)
        assert watch.value(m, "comfyui_jobs_total") == total
        assert watch.value(m, "comfyui_job_duration_seconds_count") == total


@pytest.mark.parametrize("jobs_api", [
    False,
    True,
], ids=["history", "jobs_api"])
async def test_interrupted_job_counts_as_interrupted(tmp_path: Path, jobs_api: bool) -> None:
    """A job cancelled with POST /interrupt counts under reason interrupted, not as an execution error."""
    async with await start_sim(jobs_api=jobs_api) as sim, watching(_config(sim), tmp_path) as watch:
        await sim.submit(job_ms=60_000)
        await sim_state_until(sim, lambda s: bool(s["queue_running"]), "the long job running")
        async with aiohttp.ClientSession() as session, session.post(f"{sim.url}/interrupt", json={}) as response:
            assert response.status == 200
        m = await watch.until(lambda m: watch.value(m, "comfyui_jobs_total") == 1.0, "the interrupted job counted")
        assert watch.value(m, "comfyui_job_failures_total", reason="execution_error") == 0.0
        assert watch.value(m, "comfyui_job_failures_total", reason="interrupted") == 1.0


@pytest.mark.parametrize("jobs_api", [
    False,
    True,
], ids=["history", "jobs_api"])
async def test_canary_prompts_are_not_counted_as_users_jobs(
    tmp_path: Path, jobs_api: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A jobs poll landing while a finished canary is still in history does not count the canary."""
    async with await start_sim(jobs_api=jobs_api) as sim, watching(
        config_toml(target_toml(TARGET, sim.url, canary="1s")), tmp_path
    ) as watch:
        runtime = watch.daemon.runtimes[TARGET]
        api = runtime.local_api()
        delete = api.delete_history

        async def poll_then_delete(prompt_ids: Sequence[str]) -> None:
            # The race made certain: a jobs poll runs after the canary finished, before it deletes its entry.
            await jobs_check.run(runtime)
            await delete(prompt_ids)

        monkeypatch.setattr(api, "delete_history", poll_then_delete)
        m = await watch.until(
            lambda m: (watch.value(m, "comfyui_canary_runs_total", canary="preview-image") or 0) >= 3,
            "three canary runs",
        )
        assert watch.value(m, "comfyui_canary_success", canary="preview-image") == 1.0
        m = await watch.polls(2)
        assert watch.value(m, "comfyui_jobs_total") == 0.0
        await sim_state_until(sim, lambda s: s["history"] == [], "the canaries deleted their history entries")


async def test_a_history_entry_written_before_its_job_ended_is_counted_once_it_has_ended() -> None:
    """Reading ``/history``, an entry with ``completed`` false and no verdict yet (a server that writes it when
    the job starts) is neither a job nor a failure; the same id is counted once, as a success, when it ends."""
    async with await start_sim() as sim:
        runtime = build_context(Config(), TargetConfig(name=TARGET, url=sim.url))
        try:
            await jobs_check.run(runtime)  # primes the seen set on the empty history (and finds no /api/jobs)
            server = sim.server()
            finished = load_json("history_success_preview.json")
            prompt_id, entry = next(iter(finished.items()))
            start = entry["status"]["messages"][0]
            server.history[prompt_id] = {**entry, "outputs": {},
                                         "status": {"status_str": None, "completed": False, "messages": [start]}}
            await jobs_check.run(runtime)
            assert (runtime.state.jobs_total, sum(runtime.state.job_failures.values())) == (0, 0)
            server.history[prompt_id] = entry
            await jobs_check.run(runtime)
            await jobs_check.run(runtime)
            assert (runtime.state.jobs_total, sum(runtime.state.job_failures.values())) == (1, 0)
        finally:
            await runtime.close()
