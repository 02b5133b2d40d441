"""Checks: one module per thing comfywatch verifies. Each is ``async def run(...)`` over a client and a state.

Checks never touch metrics: they update :class:`comfywatch.state.TargetState`, which the exporter renders,
and they raise :class:`comfywatch.clients.http.RequestFailed` (already classified) when the target fails.
"""

from __future__ import annotations

CANARY_CLIENT_PREFIX = "comfywatch-"


class CheckSkipped(Exception):
    """The check chose not to run (Retry-After pause, request budget): no success, no failure recorded."""
