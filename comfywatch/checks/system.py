"""``system``: is the target up, what is it, how much RAM/VRAM is left (``/system_stats``).

``observe`` makes the request and ``record`` puts its answer into the target's state: the daemon's ``run``
does both, doctor observes and judges the same answer its own way.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfywatch.checks.context import TargetContext
from comfywatch.clients.http import HttpResult, RequestFailed
from comfywatch.parse.system import SystemStats
from comfywatch.state import TargetState

__all__ = ["SystemObservation", "observe", "record", "run"]


@dataclass(frozen=True)
class SystemObservation:
    """One answer of ``/system_stats``: what it says and how the request went (timing, headers)."""

    stats: SystemStats
    result: HttpResult


async def observe(ctx: TargetContext) -> SystemObservation:
    """Ask ``/system_stats`` once, timing the request's phases.

    Raises:
        RequestFailed: no valid stats came back (the failure says why).
    """
    stats, result = await ctx.local_api().system_stats(record_phases=True)
    return SystemObservation(stats, result)


def record(state: TargetState, observation: SystemObservation) -> None:
    state.apply_system(observation.stats, observation.result.phases)
    state.set_up(True)


async def run(ctx: TargetContext) -> None:
    """Poll ``/system_stats``; ``comfyui_up`` follows the result of this one request."""
    try:
        observation = await observe(ctx)
    except RequestFailed as failed:
        ctx.state.set_up(False, failed.failure.reason)
        raise
    record(ctx.state, observation)
