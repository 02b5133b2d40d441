"""``GET /api/jobs`` of newer ComfyUI (PR #11054, Dec 2025) -> :class:`JobsPage`.

0.3.64 answers 404; the jobs check then falls back to ``/queue`` + ``/history``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comfywatch.errors import Reason, classify_execution_error
from comfywatch.parse.shape import as_list, as_map, as_str

__all__ = ["Job", "JobsPage", "parse_jobs", "to_ms"]

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    status: str
    create_ms: int | None
    start_ms: int | None
    end_ms: int | None
    failure_reason: Reason | None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def server_seconds(self) -> float | None:
        if self.start_ms is None or self.end_ms is None or self.end_ms < self.start_ms:
            return None
        return (self.end_ms - self.start_ms) / 1000.0


@dataclass(frozen=True, slots=True)
class JobsPage:
    jobs: tuple[Job, ...]
    has_more: bool


def to_ms(value: Any) -> int | None:
    """A timestamp in ms; values below 1e12 are taken as seconds (the specs disagree on the unit)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # Also rules out NaN, Infinity and 400-digit integers (json.loads accepts all three), whose arithmetic
    # would raise later.
    if not 0 < value < 1e18:
        return None
    return int(value if value > 1e12 else value * 1000)


def _job(value: Any, path: str) -> Job:
    raw = as_map(value, path)
    status = as_str(raw.get("status"), f"{path}.status")
    reason: Reason | None = None
    if status == "failed":
        error = raw.get("execution_error")
        if isinstance(error, dict):
            kind, message = error.get("exception_type"), error.get("exception_message")
            reason = classify_execution_error(kind, message)
        else:
            # The first /api/jobs release (ComfyUI#11054) lists an interrupted prompt as "failed" with no
            # execution_error; a real error always carries one.
            reason = Reason.INTERRUPTED
    elif status == "cancelled":
        reason = Reason.INTERRUPTED
    return Job(
        id=as_str(raw.get("id"), f"{path}.id"),
        status=status,
        create_ms=to_ms(raw.get("create_time")),
        start_ms=to_ms(raw.get("execution_start_time")),
        end_ms=to_ms(raw.get("execution_end_time")),
        failure_reason=reason,
    )


def parse_jobs(body: Any) -> JobsPage:
    """Parse ``{"jobs": [...], "pagination": {...}}``."""
    root = as_map(body, "$")
    jobs = as_list(root.get("jobs"), "jobs")
    pagination = root.get("pagination")
    has_more = bool(pagination.get("has_more")) if isinstance(pagination, dict) else False
    return JobsPage(jobs=tuple(_job(j, f"jobs[{i}]") for i, j in enumerate(jobs)), has_more=has_more)
