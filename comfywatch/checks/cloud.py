"""Comfy Cloud checks: auth, billing, features, queue and jobs, the budgeted Cloud canary, and the adapter
that lets the canary engine talk to Comfy Cloud.

Every periodic check here honours the account's limits: while a Retry-After pause holds, or when the request
budget (``max_requests_per_minute``) stays spent for more than a quarter of the check's time budget, the check
sends nothing and ends in :class:`CheckSkipped` (neither a success nor a failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from comfywatch.checks import Check, CheckSkipped
from comfywatch.checks.budget import DailyBudget
from comfywatch.checks.canary import CanaryRunner, check_outcome
from comfywatch.checks.context import TargetContext
from comfywatch.clients.cloud import BUDGET_WAIT, BudgetExhausted, CloudApi, RetryAfterActive
from comfywatch.clients.http import HttpResult, RequestFailed
from comfywatch.errors import Failure, Reason, SkipReason
from comfywatch.parse.cloud import CloudJob, CloudUser, JobDetail, JobGroup, trusted_balance_usd
from comfywatch.parse.history import HistoryEntry, Outcome
from comfywatch.parse.prompt import PromptAccepted
from comfywatch.state import TargetState

__all__ = ["BudgetedCanary", "CloudCanaryApi", "JobsObservation", "check_auth", "check_billing", "check_features",
           "check_jobs", "check_queue", "observe_jobs", "observe_user", "record_jobs", "time_budget"]

log = structlog.get_logger("comfywatch.cloud")


def time_budget(ctx: TargetContext) -> float:
    """How long a periodic Cloud check may take: four request timeouts (a call and its retries), within 90 %
    of the interval, and at least a second."""
    return max(1.0, min(ctx.request_timeout * 4, ctx.interval * 0.9))


def _within_limits(check: Check) -> Check:
    """*check*, skipped instead of sent while the account's limits hold it back (see the module docstring)."""

    @functools.wraps(check)
    async def run(ctx: TargetContext) -> None:
        # Waiting longer for the request budget would eat the check's time budget (and then time out,
        # making a healthy target look down): beyond a quarter of it, skip this run instead.
        wait_limit = BUDGET_WAIT.set(time_budget(ctx) / 4)
        try:
            await check(ctx)
        except RetryAfterActive as skipped:
            # Honour Retry-After (or the request budget): no request was sent, so no failure is counted.
            log.debug("cloud_check_deferred", target=ctx.config.name, reason=str(skipped))
            # Not a success either: comfywatch_check_last_success_timestamp_seconds must show staleness.
            why = SkipReason.REQUEST_BUDGET if isinstance(skipped, BudgetExhausted) else SkipReason.RETRY_AFTER
            raise CheckSkipped(str(skipped), why) from None
        finally:
            BUDGET_WAIT.reset(wait_limit)

    return run


async def observe_user(ctx: TargetContext) -> CloudUser:
    """``GET /api/user``, asked again once after a 401: api.comfy.org has intermittent false 401s.

    Raises:
        RequestFailed: the key was refused twice, or the request failed otherwise.
        RetryAfterActive: the account's limits hold the request back.
    """
    api = ctx.cloud_api()
    try:
        return await api.user()
    except RequestFailed as failed:
        if failed.failure.reason is not Reason.AUTH:
            raise
    return await api.user()


@_within_limits
async def check_auth(ctx: TargetContext) -> None:
    """The key is valid: ``comfyui_up`` of a Cloud target."""
    try:
        await observe_user(ctx)
    except RequestFailed as failed:
        ctx.state.set_up(False, failed.failure.reason)
        raise
    ctx.state.set_up(True)


@_within_limits
async def check_billing(ctx: TargetContext) -> None:
    """Balance and subscription, fetched side by side; a failed balance call makes the balance *absent*, never 0.

    The two calls run concurrently so that a balance endpoint that fails slowly (three tries with back-off)
    cannot hold back ``has_funds`` until the check's time budget runs out. A value whose refresh failed or
    was cut short by that budget is cleared rather than left showing last poll's number as current.
    """
    api, cloud = ctx.cloud_api(), ctx.state.cloud
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


@_within_limits
async def check_features(ctx: TargetContext) -> None:
    assert ctx.state.cloud is not None
    features = await ctx.cloud_api().features()
    ctx.state.cloud.max_concurrent_jobs = (
        None if features.max_concurrent_jobs is None else float(features.max_concurrent_jobs)
    )


@_within_limits
async def check_queue(ctx: TargetContext) -> None:
    queue = await ctx.cloud_api().queue()
    state = ctx.state
    state.apply_queue(state.queue_tracker.observe(queue, time.time()))


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


@dataclass(frozen=True)
class JobsObservation:
    """The newest page of ``/api/jobs`` and each finished job's failure reason (None for a success)."""

    jobs: tuple[CloudJob, ...]
    reasons: dict[str, Reason | None]


async def observe_jobs(ctx: TargetContext, *, look_up: Callable[[CloudJob], bool]) -> JobsObservation:
    """Read the newest 100 jobs; failures that ``/api/jobs`` leaves unclear and *look_up* selects are looked up
    by raw state (at most :data:`MAX_STATUS_LOOKUPS`), so that ``lost`` is its own reason.

    Raises:
        RequestFailed: the page could not be read (a failed look-up only leaves its job's reason as listed).
        RetryAfterActive: the account's limits hold the request back.
    """
    api = ctx.cloud_api()
    page = await api.jobs(100)
    finished = [j for j in page.jobs if j.state.terminal]
    reasons = {j.id: j.failure_reason for j in finished}
    unclear = [j for j in finished if _needs_raw_state(j) and look_up(j)]
    for job in unclear[:MAX_STATUS_LOOKUPS]:
        reasons[job.id] = await raw_failure(api, job.id) or reasons[job.id]
    return JobsObservation(page.jobs, reasons)


def record_jobs(state: TargetState, observation: JobsObservation, *, now: float, stall_after: float) -> None:
    """Count the finished jobs not counted before, and the jobs waiting longer than *stall_after*."""
    finished = [j for j in observation.jobs if j.state.terminal]
    fresh = set(state.seen_jobs.new_ids([j.id for j in reversed(finished)]))
    for job in finished:
        if job.id in fresh:
            seconds = None
            if job.execution_start_ms is not None and job.execution_end_ms is not None:
                seconds = max(0.0, (job.execution_end_ms - job.execution_start_ms) / 1000.0)
            state.count_finished_job(observation.reasons[job.id], seconds)
    stuck = sum(
        1 for j in observation.jobs
        if not j.state.terminal and j.state.group is JobGroup.PENDING
        and now - j.create_time_ms / 1000.0 > stall_after
    )
    assert state.cloud is not None
    state.cloud.jobs_stuck = float(stuck)


@_within_limits
async def check_jobs(ctx: TargetContext) -> None:
    """Count finished jobs once each (by reason) and the jobs stuck in a waiting state (beyond stall_after).

    Only the jobs this poll will count are looked up by raw state: the first poll counts none (it marks
    what is already there as seen), later ones only the jobs not seen before.
    """
    state = ctx.state
    now = time.time()
    seen = state.seen_jobs
    # Decided before marking anything seen: a poll cut short here counts these jobs on the next one instead.
    observation = await observe_jobs(ctx, look_up=lambda job: seen.primed and job.id not in seen)
    record_jobs(state, observation, now=now, stall_after=ctx.stall_after)


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
        return queue.running_count, queue.pending_count

    #: Comfy Cloud documents no ``prompt_id`` in a submit: its prompts are queued under an id it picks.
    takes_prompt_id = False

    @property
    def secret_forms(self) -> tuple[str, ...]:
        return self.api.http.secret_forms

    async def submit(self, prompt: Mapping[str, Any], client_id: str, *, prompt_id: str | None = None,
                     timeout: float | None = None) -> PromptAccepted:
        """POST the prompt; *prompt_id* is never sent (see :attr:`takes_prompt_id`)."""
        with _paused_as_failure("prompt"):
            result = await self.api.submit(prompt, client_id)
        return PromptAccepted(prompt_id=result.prompt_id, number=None, node_errors={})

    def ws_url(self, client_id: str) -> str:
        return self.api.http.websocket_url("/ws", {"clientId": client_id, "token": self._key})

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


class BudgetedCanary:
    """The Comfy Cloud canary's check. A run costs credits: at most the day's runs of its :class:`DailyBudget`
    (kept across restarts), and none while the account's limits pause the checks."""

    def __init__(self, runner: CanaryRunner, budget: DailyBudget) -> None:
        self.runner = runner
        self.budget = budget

    async def run(self, ctx: TargetContext) -> None:
        canary_state = ctx.state.canary(self.runner.workflow.name)
        budget = self.budget
        if ctx.cloud_api().paused_for() > 0 or not budget.allow():
            canary_state.skipped += 1
            canary_state.runs_today = budget.used()
            raise CheckSkipped
        try:
            canary_state.runs_today = budget.record()
        except OSError:
            log.error("canary_budget_unwritable", target=ctx.config.name, path=str(budget.path))
            canary_state.skipped += 1
            raise CheckSkipped from None
        # Counted before the run so that a crash mid-run cannot hand out a free one; given back when the
        # run stopped before submitting (busy queue), or a busy account would eat the day's budget.
        result = await self.runner.run()
        if result.skipped:
            try:
                canary_state.runs_today = budget.release()
            except OSError:
                log.error("canary_budget_unwritable", target=ctx.config.name, path=str(budget.path))
        check_outcome(result)
