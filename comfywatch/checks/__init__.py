"""Checks: one module per thing comfywatch verifies, all with one contract.

A check is ``async def check(ctx: TargetContext) -> None`` (:data:`Check`): it reads the target through its
context (:mod:`comfywatch.checks.context`: the client, the API, the target's settings such as its request
timeout and stall_after) and records what it observed into ``ctx.state``. The local server's ``system``,
``queue``, ``jobs`` and ``network`` checks are each a module's ``run``; the Comfy Cloud ones are
:mod:`comfywatch.checks.cloud`'s ``check_*``. A canary is an object built once per target (it holds its
workflow and its run budget); the check of its :class:`CheckSpec` has the same shape.

Doctor runs the same checks once: a check's ``observe`` makes its requests and returns what they said, its
``record`` (or ``run``) puts that into the state; doctor judges the observation instead. ``websocket`` is
doctor's alone (the daemon keeps a socket open per target rather than probing one).

Checks never touch metrics: they update :class:`comfywatch.state.TargetState`, which the exporter renders.
How a check ends is what the scheduler counts: returning is a success (it records
``comfywatch_check_last_success_timestamp_seconds``); :class:`comfywatch.clients.http.RequestFailed` (already
classified) or :class:`CheckFailed` is a failure; :class:`CheckSkipped` is neither.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from comfywatch.checks.context import TargetContext
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


#: The contract every check keeps (see the module docstring).
Check = Callable[[TargetContext], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class CheckSpec:
    """One scheduled check of one target: the scheduler awaits ``run(context)`` within ``timeout``."""

    name: str
    interval: float
    timeout: float
    run: Check
    #: Checks of one group and interval run one after the other. The ``poll`` group of every target with the
    #: same interval shares scheduler jobs (see :mod:`comfywatch.daemon.slots`); other groups get a job per target.
    group: str | None = None


#: The group polled in batches (slots).
POLL_GROUP = "poll"

#: The checks that decide whether a target is up (``comfyui_up``): a local server's ``system``, a Comfy Cloud
#: account's ``auth``. Their failure is the target being down, not one more failing check.
LIVENESS_CHECKS = frozenset({"system", "auth"})
