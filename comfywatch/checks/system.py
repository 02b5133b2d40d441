"""``system``: is the target up, what is it, how much RAM/VRAM is left (``/system_stats``)."""

from __future__ import annotations

from comfywatch.checks.context import TargetContext
from comfywatch.clients.http import RequestFailed

__all__ = ["run"]


async def run(ctx: TargetContext) -> None:
    """Poll ``/system_stats``; ``comfyui_up`` follows the result of this one request."""
    state = ctx.state
    try:
        stats, result = await ctx.local_api().system_stats(record_phases=True)
    except RequestFailed as failed:
        state.set_up(False, failed.failure.reason)
        raise
    state.apply_system(stats, result.phases)
    state.set_up(True)
