"""``jobs``: count every finished job exactly once, with durations and failure reasons.

Reads ``/api/jobs`` on servers that have it (ComfyUI ≥ Dec 2025) and falls back to ``/history`` on 404.
Both are read through a window of the newest entries; :class:`comfywatch.state.trackers.SeenSet` makes the count
exact across polls and across a server restart (which empties history: the new ids are simply new).

Doctor looks once instead of counting: it asks ``has_jobs_api`` and judges ``users_history`` (the newest
finished jobs, as this check would count them).
"""

from __future__ import annotations

from comfywatch.checks import CANARY_CLIENT_PREFIX
from comfywatch.checks.context import TargetContext
from comfywatch.clients.http import RequestFailed
from comfywatch.clients.local import LocalApi
from comfywatch.errors import Reason
from comfywatch.parse.history import HistoryEntry, Outcome
from comfywatch.parse.jobs import Job
from comfywatch.state import TargetState

__all__ = ["WINDOW", "WINDOW_MAX", "has_jobs_api", "run", "users_history"]

WINDOW = 64
WINDOW_MAX = 1024


def _users(entries: list[HistoryEntry]) -> list[HistoryEntry]:
    # comfywatch's own canaries delete their entry right after; never count them as users' jobs.
    return [e for e in entries if not (e.client_id or "").startswith(CANARY_CLIENT_PREFIX)]


def _count_history(state: TargetState, entries: list[HistoryEntry]) -> None:
    # An entry written before its prompt ended is left unseen, to be counted once it has an outcome.
    users = [e for e in _users(entries) if e.finished]
    fresh = set(state.seen_jobs.new_ids([e.prompt_id for e in users]))
    for entry in users:
        if entry.prompt_id in fresh:
            failure = entry.failure_reason if entry.outcome is Outcome.FAILED else None
            if entry.outcome is Outcome.UNKNOWN:
                failure = Reason.EXECUTION_ERROR
            state.count_finished_job(failure, entry.server_seconds)


def _count_jobs(state: TargetState, jobs: tuple[Job, ...]) -> None:
    finished = [j for j in jobs if j.terminal]
    fresh = set(state.seen_jobs.new_ids([j.id for j in reversed(finished)]))
    for job in finished:
        if job.id in fresh:
            state.count_finished_job(job.failure_reason, job.server_seconds)


def _reaches_seen(state: TargetState, jobs: tuple[Job, ...]) -> bool:
    """Whether every finished job beyond this page was seen already, so the page is wide enough.

    ``/api/jobs`` is sorted by creation time, newest first: pending jobs lead, and jobs beyond the page were
    created no later than its last one. A seen job created strictly after that last one proves that
    everything beyond finished before it (the queue is FIFO) and was counted. Jobs created in the same
    millisecond keep the server's list order, which puts the oldest-finished first, hence "strictly".
    """
    oldest = jobs[-1].create_ms if jobs else None
    return any(
        j.terminal and j.id in state.seen_jobs and (oldest is None or j.create_ms is None or j.create_ms > oldest)
        for j in jobs
    )


async def _jobs_page(api: LocalApi, state: TargetState) -> tuple[Job, ...]:
    window = WINDOW
    while True:
        page = await api.jobs(window)
        state.jobs_api = True
        # A pending backlog, or more jobs finished since the last poll than the window holds, can push
        # unseen finished jobs past the page: widen it (bounded) until it reaches jobs already counted.
        full = len(page.jobs) >= window
        if state.seen_jobs.primed and full and window < WINDOW_MAX and not _reaches_seen(state, page.jobs):
            window *= 4
            continue
        return page.jobs


async def _history_window(api: LocalApi, state: TargetState) -> list[HistoryEntry]:
    window = WINDOW
    while True:
        entries = await api.history(window)
        unseen = sum(1 for e in entries if e.prompt_id not in state.seen_jobs)
        # Every entry of a full window is new: more finished since the last poll than the window holds.
        if state.seen_jobs.primed and unseen == len(entries) == window and window < WINDOW_MAX:
            window *= 4
            continue
        return entries


async def run(ctx: TargetContext) -> None:
    """Count newly finished jobs."""
    api, state = ctx.local_api(), ctx.state
    if state.jobs_api is not False:
        try:
            _count_jobs(state, await _jobs_page(api, state))
            return
        except RequestFailed as failed:
            if failed.failure.reason is not Reason.NOT_FOUND:
                raise
            state.jobs_api = False
    _count_history(state, await _history_window(api, state))


async def has_jobs_api(ctx: TargetContext) -> bool:
    """Whether the server serves ``/api/jobs`` (False on 404), recorded as the jobs check records it.

    Raises:
        RequestFailed: the question could not be answered (any failure but 404).
    """
    try:
        await ctx.local_api().jobs(1)
    except RequestFailed as failed:
        if failed.failure.reason is not Reason.NOT_FOUND:
            raise
        ctx.state.jobs_api = False
        return False
    ctx.state.jobs_api = True
    return True


async def users_history(ctx: TargetContext, count: int) -> list[HistoryEntry]:
    """The newest *count* entries of ``/history`` without comfywatch's own canaries, as this check leaves them out
    when it reads ``/history``."""
    return _users(await ctx.local_api().history(count))
