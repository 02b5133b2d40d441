"""Checks: one module per thing comfywatch verifies. Each is ``async def run(...)`` over a client and a state.

Checks never touch metrics: they update :class:`comfywatch.state.TargetState`, which the exporter renders,
and they raise :class:`comfywatch.clients.http.RequestFailed` (already classified) when the target fails.
A check that returns has succeeded: the scheduler records ``comfywatch_check_last_success_timestamp_seconds``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from comfywatch.errors import Reason, SkipReason

CANARY_CLIENT_PREFIX = "comfywatch-"


class CheckFailed(Exception):
    """The check ran and found the target failing, and has recorded and logged that itself: no success."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class CheckSkipped(Exception):
    """The check chose not to run (Retry-After pause, request budget, a busy queue before a canary): no success,
    no failure recorded. *reason* is set for the account limits that skip periodic checks, which the daemon counts
    by check; a canary counts its own skips (``comfyui_canary_skipped_total``) and sets none."""

    def __init__(self, detail: str = "", reason: SkipReason | None = None) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class CheckSpec:
    """One scheduled check of one target."""

    name: str
    interval: float
    timeout: float
    run: Callable[[], Awaitable[Any]]
    #: Checks of one group and interval run one after the other. The ``poll`` group of every target with the
    #: same interval shares scheduler jobs (see :mod:`comfywatch.daemon.slots`); other groups get a job per target.
    group: str | None = None


#: The group polled in batches (slots).
POLL_GROUP = "poll"
