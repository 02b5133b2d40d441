"""Comfy Cloud checks: auth, billing, features, queue, jobs and the budgeted Cloud canary (issue 4)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from comfywatch.budget import DailyBudget
from comfywatch.clients.cloud import CloudApi, RetryAfterActive
from comfywatch.clients.http import HttpResult, RequestFailed
from comfywatch.errors import Reason
from comfywatch.parse.cloud import JobDetail, JobGroup
from comfywatch.parse.history import HistoryEntry, Outcome
from comfywatch.parse.prompt import PromptAccepted
from comfywatch.parse.queue import QueueItem, QueueSnapshot
from comfywatch.state import TargetState

if TYPE_CHECKING:
    from comfywatch.daemon import CheckSpec, Daemon
    from comfywatch.runtime import TargetRuntime

__all__ = ["CloudCanaryApi", "check_auth", "check_billing", "check_features", "check_jobs", "check_queue",
           "cloud_checks"]

log = structlog.get_logger("comfywatch.cloud")


def _sync_retry_after(api: CloudApi, state: TargetState) -> None:
    if state.cloud is not None:
        state.cloud.retry_after_until = api.retry_after_until


async def check_auth(api: CloudApi, state: TargetState) -> None:
    """``GET /api/user``: the key is valid. One retry on 401: api.comfy.org has intermittent false 401s."""
    try:
        try:
            await api.user()
        except RequestFailed as failed:
            if failed.failure.reason is not Reason.AUTH:
                raise
            await api.user()
    except RequestFailed as failed:
        state.set_up(False, failed.failure.reason)
        raise
    finally:
        _sync_retry_after(api, state)
    state.set_up(True)


async def check_billing(api: CloudApi, state: TargetState) -> None:
    """Balance and subscription; a failed balance call makes the balance *absent*, never 0."""
    cloud = state.cloud
    assert cloud is not None
    failure: RequestFailed | None = None
    try:
        balance = await api.balance()
    except RequestFailed as failed:
        cloud.balance_usd = cloud.effective_balance_usd = None
        failure = failed
    else:
        cloud.balance_usd = balance.balance_usd
        cloud.effective_balance_usd = balance.effective_usd
    try:
        status = await api.billing_status()
    except RequestFailed as failed:
        cloud.has_funds = cloud.subscription_active = None
        cloud.subscription_tier = cloud.subscription_status = None
        failure = failure or failed
    else:
        cloud.has_funds = 1.0 if status.has_funds else 0.0
        cloud.subscription_active = 1.0 if status.is_active else 0.0
        cloud.subscription_tier = status.tier
        cloud.subscription_status = status.subscription_status or status.billing_status
    _sync_retry_after(api, state)
    if failure is not None:
        raise failure


async def check_features(api: CloudApi, state: TargetState) -> None:
    assert state.cloud is not None
    try:
        features = await api.features()
    finally:
        _sync_retry_after(api, state)
    state.cloud.max_concurrent_jobs = (
        None if features.max_concurrent_jobs is None else float(features.max_concurrent_jobs)
    )


def _snapshot(running: Sequence[Any], pending: Sequence[Any]) -> QueueSnapshot:
    def item(raw: Any) -> QueueItem:
        return QueueItem(number=float(raw.number), prompt_id=raw.prompt_id, client_id=None,
                         create_time_ms=raw.create_time_ms)

    return QueueSnapshot(running=tuple(item(r) for r in running), pending=tuple(item(p) for p in pending))


async def check_queue(api: CloudApi, state: TargetState, now: float | None = None) -> None:
    try:
        queue = await api.queue()
    finally:
        _sync_retry_after(api, state)
    view = state.queue_tracker.observe(_snapshot(queue.running, queue.pending), time.time() if now is None else now)
    state.apply_queue(view)


async def check_jobs(api: CloudApi, state: TargetState, stall_after: float, now: float | None = None) -> int:
    """Count finished jobs once each (by reason) and the jobs stuck in a waiting state."""
    now = time.time() if now is None else now
    try:
        page = await api.jobs(100)
    finally:
        _sync_retry_after(api, state)
    finished = [j for j in page.jobs if j.state.terminal]
    fresh = set(state.seen_jobs.new_ids([j.id for j in reversed(finished)]))
    for job in finished:
        if job.id in fresh:
            seconds = None
            if job.execution_start_ms is not None and job.execution_end_ms is not None:
                seconds = max(0.0, (job.execution_end_ms - job.execution_start_ms) / 1000.0)
            state.count_finished_job(job.failure_reason, seconds)
    stuck = sum(
        1 for j in page.jobs
        if not j.state.terminal and j.state.group is JobGroup.PENDING and now - j.create_time_ms / 1000.0 > stall_after
    )
    assert state.cloud is not None
    state.cloud.jobs_stuck = float(stuck)
    return len(fresh)


class CloudCanaryApi:
    """Adapts :class:`CloudApi` to the canary engine (CLOUD.md §3: same prompt/WS shapes, other routes)."""

    def __init__(self, api: CloudApi, api_key: str) -> None:
        self.api = api
        self._key = api_key

    async def busy(self) -> tuple[int, int]:
        queue = await self.api.queue()
        return len(queue.running), len(queue.pending)

    async def submit(self, prompt: Mapping[str, Any], client_id: str, *, timeout: float | None = None
                     ) -> PromptAccepted:
        result = await self.api.submit(prompt, client_id)
        return PromptAccepted(prompt_id=result.prompt_id, number=None, node_errors={})

    def ws_url(self, client_id: str) -> str:
        from urllib.parse import urlencode

        base = self.api.http.base
        scheme = "wss" if base.scheme == "https" else "ws"
        port = f":{base.explicit_port}" if base.explicit_port else ""
        return f"{scheme}://{base.host}{port}/ws?" + urlencode({"clientId": client_id, "token": self._key})

    def ws_headers(self) -> dict[str, str]:
        return {}

    async def history_entry(self, prompt_id: str, *, timeout: float | None = None) -> HistoryEntry | None:
        detail = await self.api.job_detail(prompt_id)
        if not detail.state.terminal:
            return None
        return _entry(detail)

    async def in_flight(self, prompt_id: str) -> bool:
        status = await self.api.job_status(prompt_id)
        return not status.state.terminal

    async def view(self, filename: str, subfolder: str, kind: str) -> HttpResult:
        return await self.api.view(filename, subfolder, kind)

    async def cancel_own(self, prompt_id: str) -> None:
        await self.api.cancel(prompt_id)

    async def delete_history(self, prompt_ids: Sequence[str]) -> None:
        for prompt_id in prompt_ids:
            await self.api.delete_history(prompt_id)


def _entry(detail: JobDetail) -> HistoryEntry:
    outputs: dict[str, Any] = {}
    for output in detail.outputs:
        outputs.setdefault(output.node_id, {}).setdefault(output.kind or "images", []).append(
            {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}
        )
    success = detail.state.group is JobGroup.COMPLETED
    return HistoryEntry(
        prompt_id=detail.id,
        outcome=Outcome.SUCCESS if success else Outcome.FAILED,
        failure_reason=None if success else (detail.failure_reason or Reason.EXECUTION_ERROR),
        start_ms=detail.execution_start_ms,
        end_ms=detail.execution_end_ms,
        client_id=None,
        exception_type=None if detail.execution_error is None else detail.execution_error.exception_type,
        node_type=None,
        outputs=outputs,
    )


def cloud_checks(daemon: Daemon, runtime: TargetRuntime) -> list[CheckSpec]:
    from comfywatch.checks.canary import CanaryRunner, apply_result
    from comfywatch.daemon import CheckSpec
    from comfywatch.workflows import WorkflowError, load_workflow

    config = daemon.config
    assert config is not None
    target, state = runtime.config, runtime.state
    api = runtime.extras.get("cloud")
    if not isinstance(api, CloudApi):
        return []
    interval = config.interval_of(target)
    budget_s = max(1.0, min(config.timeout_of(target) * 4, interval * 0.9))
    stall_after = config.stall_after_of(target)

    def guarded(check: Any) -> Any:
        async def run() -> None:
            try:
                await check()
            except RetryAfterActive:
                # Honour Retry-After: no request was sent; say so without counting a failure.
                _sync_retry_after(api, state)
        return run

    specs = [
        CheckSpec("auth", interval, budget_s, guarded(lambda: check_auth(api, state))),
        CheckSpec("billing", max(interval, 60.0), budget_s, guarded(lambda: check_billing(api, state))),
        CheckSpec("features", max(interval, 300.0), budget_s, guarded(lambda: check_features(api, state))),
        CheckSpec("queue", interval, budget_s, guarded(lambda: check_queue(api, state))),
        CheckSpec("jobs", max(interval, 30.0), budget_s, guarded(lambda: check_jobs(api, state, stall_after))),
    ]
    if target.canary_enabled and runtime.credentials.api_key:
        canary = target.canary
        try:
            workflow = load_workflow(canary.workflow, canary.canary_name, canary.verify)
        except WorkflowError as exc:
            log.error("canary_workflow_invalid", target=target.name, problem=str(exc))
            return specs
        budget = DailyBudget(config.resolved_state_dir() / "canary-budget.json", f"{target.name}:{workflow.name}",
                             canary.max_runs_per_day)
        canary_state = state.canary(workflow.name)
        canary_state.runs_today = budget.used() or 0
        runner = CanaryRunner(CloudCanaryApi(api, runtime.credentials.api_key), workflow, timeout=canary.timeout,
                              when_busy=canary.when_busy, on_result=lambda result: apply_result(state, result))

        async def run_canary() -> None:
            if api.paused_for() > 0 or not budget.allow():
                canary_state.skipped += 1
                canary_state.runs_today = budget.used()
                return
            try:
                canary_state.runs_today = budget.record()
            except OSError:
                log.error("canary_budget_unwritable", target=target.name, path=str(budget.path))
                canary_state.skipped += 1
                return
            await runner.run()

        specs.append(CheckSpec("canary", canary.interval, canary.timeout + 10.0, run_canary))
    return specs
