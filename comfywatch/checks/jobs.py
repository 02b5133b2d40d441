"""``jobs``: count every finished job exactly once, with durations and failure reasons.

Reads ``/api/jobs`` on servers that have it (ComfyUI ≥ Dec 2025) and falls back to ``/history`` on 404.
Both are read through a window of the newest entries; :class:`comfywatch.trackers.SeenSet` makes the count
exact across polls and across a server restart (which empties history: the new ids are simply new).
"""

from __future__ import annotations

from comfywatch.checks import CANARY_CLIENT_PREFIX
from comfywatch.clients.http import RequestFailed
from comfywatch.clients.local import LocalApi
from comfywatch.errors import Reason
from comfywatch.parse.history import HistoryEntry, Outcome
from comfywatch.parse.jobs import Job
from comfywatch.state import TargetState

__all__ = ["WINDOW", "WINDOW_MAX", "run"]

WINDOW = 64
WINDOW_MAX = 1024


def _count_history(state: TargetState, entries: list[HistoryEntry]) -> int:
    # comfywatch's own canaries delete their entry right after; never count them as users' jobs.
    users = [e for e in entries if not (e.client_id or "").startswith(CANARY_CLIENT_PREFIX)]
    fresh = set(state.seen_jobs.new_ids([e.prompt_id for e in users]))
    for entry in users:
        if entry.prompt_id in fresh:
            failure = entry.failure_reason if entry.outcome is Outcome.FAILED else None
            if entry.outcome is Outcome.UNKNOWN:
                failure = Reason.EXECUTION_ERROR
            state.count_finished_job(failure, entry.server_seconds)
    return len(fresh)


def _count_jobs(state: TargetState, jobs: tuple[Job, ...]) -> int:
    finished = [j for j in jobs if j.terminal]
    fresh = set(state.seen_jobs.new_ids([j.id for j in reversed(finished)]))
    for job in finished:
        if job.id in fresh:
            state.count_finished_job(job.failure_reason, job.server_seconds)
    return len(fresh)


async def run(api: LocalApi, state: TargetState) -> int:
    """Count newly finished jobs; returns how many were new."""
    if state.jobs_api is not False:
        try:
            page = await api.jobs(WINDOW)
        except RequestFailed as failed:
            if failed.failure.reason is not Reason.NOT_FOUND:
                raise
            state.jobs_api = False
        else:
            state.jobs_api = True
            return _count_jobs(state, page.jobs)
    window = WINDOW
    while True:
        entries = await api.history(window)
        unseen = sum(1 for e in entries if e.prompt_id not in state.seen_jobs)
        # Every entry of a full window is new: more finished since the last poll than the window holds.
        if state.seen_jobs.primed and unseen == len(entries) == window and window < WINDOW_MAX:
            window *= 4
            continue
        return _count_history(state, entries)
