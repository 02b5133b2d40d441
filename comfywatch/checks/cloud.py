"""Comfy Cloud checks: auth, billing, features, queue, jobs and the budgeted Cloud canary."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import structlog

from comfywatch.checks import CheckSkipped, CheckSpec
from comfywatch.checks.budget import DailyBudget
from comfywatch.checks.canary import CanaryRunner, apply_result, check_outcome
from comfywatch.checks.context import TargetContext
from comfywatch.clients.cloud import BUDGET_WAIT, BudgetExhausted, CloudApi, RetryAfterActive
from comfywatch.clients.http import HttpResult, RequestFailed
from comfywatch.config import Config
from comfywatch.errors import Failure, Reason, SkipReason
from comfywatch.parse.cloud import CloudJob, JobDetail, JobGroup, trusted_balance_usd
from comfywatch.parse.history import HistoryEntry, Outcome
from comfywatch.parse.prompt import PromptAccepted
from comfywatch.parse.queue import QueueItem, QueueSnapshot
from comfywatch.state import TargetState
from comfywatch.workflows import WorkflowError, load_workflow

__all__ = ["CloudCanaryApi", "check_auth", "check_billing", "check_features", "check_jobs", "check_queue",
           "cloud_checks"]

log = structlog.get_logger("comfywatch.cloud")


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
    state.set_up(True)


async def check_billing(api: CloudApi, state: TargetState) -> None:
    """Balance and subscription, fetched side by side; a failed balance call makes the balance *absent*, never 0.

    The two calls run concurrently so that a balance endpoint that fails slowly (three tries with back-off)
    cannot hold back ``has_funds`` until the check's time budget runs out. A value whose refresh failed or
    was cut short by that budget is cleared rather than left showing last poll's number as current.
    """
    cloud = state.cloud
    assert cloud is not None
    fetched: dict[str, Any] = {}

    def judge_balance() -> None:
        # $0 + no funds + no plan is a billing-data gap (the API answers so while billing data is missing):
        # judged with whatever status is known, in the same step as the value it depends on, so no scrape sees
        # a status without its verdict.
        balance = fetched.get("balance")
        if balance is not None:
            cloud.balance_usd = trusted_balance_usd(balance, fetched.get("status"))
            cloud.effective_balance_usd = balance.effective_usd if cloud.balance_usd is not None else None

    async def refresh_balance() -> None:
        try:
            fetched["balance"] = await api.balance()
        except (RequestFailed, asyncio.CancelledError):
            cloud.balance_usd = cloud.effective_balance_usd = None
            raise
        judge_balance()

    async def refresh_status() -> None:
        try:
            status = await api.billing_status()
        except (RequestFailed, asyncio.CancelledError):
            cloud.has_funds = cloud.subscription_active = None
            cloud.subscription_tier = cloud.subscription_status = None
            raise
        fetched["status"] = status
        cloud.has_funds = 1.0 if status.has_funds else 0.0
        cloud.subscription_active = 1.0 if status.is_active else 0.0
        cloud.subscription_tier = status.tier
        cloud.subscription_status = status.subscription_status or status.billing_status
        judge_balance()

    outcomes = await asyncio.gather(refresh_balance(), refresh_status(), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def check_features(api: CloudApi, state: TargetState) -> None:
    assert state.cloud is not None
    features = await api.features()
    state.cloud.max_concurrent_jobs = (
        None if features.max_concurrent_jobs is None else float(features.max_concurrent_jobs)
    )


def _snapshot(running: Sequence[Any], pending: Sequence[Any]) -> QueueSnapshot:
    def item(raw: Any) -> QueueItem:
        return QueueItem(number=float(raw.number), prompt_id=raw.prompt_id, client_id=None,
                         create_time_ms=raw.create_time_ms)

    return QueueSnapshot(running=tuple(item(r) for r in running), pending=tuple(item(p) for p in pending))


async def check_queue(api: CloudApi, state: TargetState, now: float | None = None) -> None:
    queue = await api.queue()
    view = state.queue_tracker.observe(_snapshot(queue.running, queue.pending), time.time() if now is None else now)
    state.apply_queue(view)


#: Raw-state look-ups per jobs poll: each costs one request of the account's rate budget.
MAX_STATUS_LOOKUPS = 10


def _needs_raw_state(job: CloudJob) -> bool:
    """``/api/jobs`` only says ``failed``: without an execution error it may be ``lost`` (raw state only)."""
    return job.state.group is JobGroup.FAILED and job.execution_error is None and job.state.raw != "lost"


async def raw_failure(api: CloudApi, job_id: str) -> Reason | None:
    """The failure reason by the job's raw state (``/api/job/{id}/status``); ``None`` when it cannot be read."""
    try:
        status = await api.job_status(job_id)
    except (RequestFailed, RetryAfterActive):
        return None
    return status.failure_reason


async def check_jobs(api: CloudApi, state: TargetState, stall_after: float, now: float | None = None) -> int:
    """Count finished jobs once each (by reason) and the jobs stuck in a waiting state.

    ``/api/jobs`` reports groups, so a ``lost`` job reads as ``failed``: new failures without an execution
    error are looked up by raw state (a few per poll) before they are counted, so ``lost`` is its own reason.
    """
    now = time.time() if now is None else now
    page = await api.jobs(100)
    finished = [j for j in page.jobs if j.state.terminal]
    reasons = {j.id: j.failure_reason for j in finished}
    if state.seen_jobs.primed:
        # Before marking anything seen: a poll cut short here counts these jobs on the next one instead.
        unclear = [j for j in finished if j.id not in state.seen_jobs and _needs_raw_state(j)]
        for job in unclear[:MAX_STATUS_LOOKUPS]:
            reasons[job.id] = await raw_failure(api, job.id) or reasons[job.id]
    fresh = set(state.seen_jobs.new_ids([j.id for j in reversed(finished)]))
    for job in finished:
        if job.id in fresh:
            seconds = None
            if job.execution_start_ms is not None and job.execution_end_ms is not None:
                seconds = max(0.0, (job.execution_end_ms - job.execution_start_ms) / 1000.0)
            state.count_finished_job(reasons[job.id], seconds)
    stuck = sum(
        1 for j in page.jobs
        if not j.state.terminal and j.state.group is JobGroup.PENDING and now - j.create_time_ms / 1000.0 > stall_after
    )
    assert state.cloud is not None
    state.cloud.jobs_stuck = float(stuck)
    return len(fresh)


@contextlib.contextmanager
def _paused_as_failure(endpoint: str) -> Iterator[None]:
    """Inside a canary run a Retry-After pause (or a spent request budget) is a ``rate_limited`` failure.

    The canary engine knows only :class:`RequestFailed`; anything else would crash the run.
    """
    try:
        yield
    except RetryAfterActive as paused:
        failure = Failure(Reason.RATE_LIMITED, "not sent: Retry-After pause or request budget spent",
                          retry_after=paused.remaining)
        raise RequestFailed(failure, endpoint) from None


class CloudCanaryApi:
    """Adapts :class:`CloudApi` to the canary engine: Comfy Cloud takes ComfyUI's prompt and WebSocket shapes,
    on other routes."""

    def __init__(self, api: CloudApi, api_key: str) -> None:
        self.api = api
        self._key = api_key

    async def busy(self) -> tuple[int, int]:
        with _paused_as_failure("queue"):
            queue = await self.api.queue()
        return len(queue.running), len(queue.pending)

    async def submit(self, prompt: Mapping[str, Any], client_id: str, *, timeout: float | None = None
                     ) -> PromptAccepted:
        with _paused_as_failure("prompt"):
            result = await self.api.submit(prompt, client_id)
        return PromptAccepted(prompt_id=result.prompt_id, number=None, node_errors={})

    def ws_url(self, client_id: str) -> str:
        base = self.api.http.base
        # yarl keeps an IPv6 host's brackets and a path prefix (a proxy mounting the API under /comfy).
        url = base.with_scheme("wss" if base.scheme == "https" else "ws").with_path(base.path.rstrip("/") + "/ws")
        return str(url.with_query({"clientId": client_id, "token": self._key}))

    def ws_headers(self) -> dict[str, str]:
        return {}

    async def history_entry(self, prompt_id: str, *, timeout: float | None = None) -> HistoryEntry | None:
        with _paused_as_failure("jobs"):
            detail = await self.api.job_detail(prompt_id)
        if not detail.state.terminal:
            return None
        reason = detail.failure_reason
        if _needs_raw_state(detail):
            reason = await raw_failure(self.api, prompt_id) or reason
        return _entry(detail, reason)

    async def in_flight(self, prompt_id: str) -> bool:
        with _paused_as_failure("job_status"):
            status = await self.api.job_status(prompt_id)
        return not status.state.terminal

    async def view(self, filename: str, subfolder: str, kind: str) -> HttpResult:
        with _paused_as_failure("view"):
            return await self.api.view(filename, subfolder, kind)

    async def cancel_own(self, prompt_id: str) -> None:
        with _paused_as_failure("jobs"):
            await self.api.cancel(prompt_id)

    async def delete_history(self, prompt_ids: Sequence[str]) -> None:
        with _paused_as_failure("history"):
            for prompt_id in prompt_ids:
                await self.api.delete_history(prompt_id)


def _entry(detail: JobDetail, reason: Reason | None) -> HistoryEntry:
    outputs: dict[str, Any] = {}
    for output in detail.outputs:
        outputs.setdefault(output.node_id, {}).setdefault(output.kind or "images", []).append(
            {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}
        )
    success = detail.state.group is JobGroup.COMPLETED
    return HistoryEntry(
        prompt_id=detail.id,
        outcome=Outcome.SUCCESS if success else Outcome.FAILED,
        failure_reason=None if success else (reason or Reason.EXECUTION_ERROR),
        start_ms=detail.execution_start_ms,
        end_ms=detail.execution_end_ms,
        client_id=None,
        exception_type=None if detail.execution_error is None else detail.execution_error.exception_type,
        node_type=None,
        outputs=outputs,
    )


def cloud_checks(config: Config, runtime: TargetContext) -> list[CheckSpec]:
    target, state = runtime.config, runtime.state
    api = runtime.extras.get("cloud")
    if not isinstance(api, CloudApi):
        return []
    interval = config.interval_of(target)
    budget_s = max(1.0, min(config.timeout_of(target) * 4, interval * 0.9))
    stall_after = config.stall_after_of(target)

    def guarded(check: Any) -> Any:
        async def run() -> None:
            # Waiting longer for the request budget would eat the check's time budget (and then time out,
            # making a healthy target look down): beyond a quarter of it, skip this run instead.
            wait_limit = BUDGET_WAIT.set(budget_s / 4)
            try:
                await check()
            except RetryAfterActive as skipped:
                # Honour Retry-After (or the request budget): no request was sent, so no failure is counted.
                log.debug("cloud_check_deferred", target=target.name, reason=str(skipped))
                # Not a success either: comfywatch_check_last_success_timestamp_seconds must show staleness.
                why = SkipReason.REQUEST_BUDGET if isinstance(skipped, BudgetExhausted) else SkipReason.RETRY_AFTER
                raise CheckSkipped(str(skipped), why) from None
            finally:
                BUDGET_WAIT.reset(wait_limit)
        return run

    specs = [
        CheckSpec("auth", interval, budget_s, guarded(lambda: check_auth(api, state))),
        CheckSpec("billing", max(interval, 60.0), budget_s, guarded(lambda: check_billing(api, state))),
        CheckSpec("features", max(interval, 300.0), budget_s, guarded(lambda: check_features(api, state))),
        CheckSpec("queue", interval, budget_s, guarded(lambda: check_queue(api, state))),
        CheckSpec("jobs", max(interval, 30.0), budget_s, guarded(lambda: check_jobs(api, state, stall_after))),
    ]
    state.skippable(spec.name for spec in specs)
    if target.canary_enabled and runtime.credentials.api_key:
        canary = target.canary
        try:
            workflow = load_workflow(canary.workflow, canary.canary_name, canary.verify)
        except WorkflowError as exc:
            log.error("canary_workflow_invalid", target=target.name, problem=str(exc))
            return specs
        budget = DailyBudget(config.resolved_state_dir() / "canary-budget.json", f"{target.name}:{workflow.name}",
                             canary.max_runs_per_day)
        if canary.max_runs_per_day > 0 and canary.interval * canary.max_runs_per_day < 86_400:
            # Not an error, but rarely what was meant: the day's runs go in a burst, then nothing until 00:00 UTC.
            log.warning("cloud_canary_budget_spent_early", target=target.name, interval_s=canary.interval,
                        max_runs_per_day=canary.max_runs_per_day,
                        hours_covered=round(canary.interval * canary.max_runs_per_day / 3600, 2),
                        advice="set the canary interval to at least 24h / max_runs_per_day")
        canary_state = state.canary(workflow.name)
        canary_state.runs_today = budget.used() or 0
        runner = CanaryRunner(CloudCanaryApi(api, runtime.credentials.api_key), workflow,
                              timeout=canary.timeout,
                              when_busy=canary.when_busy, on_result=lambda result: apply_result(state, result),
                              on_accepted=lambda prompt_id: state.seen_jobs.add_all([prompt_id]))

        async def run_canary() -> None:
            if api.paused_for() > 0 or not budget.allow():
                canary_state.skipped += 1
                canary_state.runs_today = budget.used()
                raise CheckSkipped
            try:
                canary_state.runs_today = budget.record()
            except OSError:
                log.error("canary_budget_unwritable", target=target.name, path=str(budget.path))
                canary_state.skipped += 1
                raise CheckSkipped from None
            # Counted before the run so that a crash mid-run cannot hand out a free one; given back when the
            # run stopped before submitting (busy queue), or a busy account would eat the day's budget.
            result = await runner.run()
            if result.skipped:
                try:
                    canary_state.runs_today = budget.release()
                except OSError:
                    log.error("canary_budget_unwritable", target=target.name, path=str(budget.path))
            check_outcome(result)

        specs.append(CheckSpec("canary", canary.interval, canary.timeout + 10.0, run_canary))
    return specs
