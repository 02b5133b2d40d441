"""Placeholder: the status page's HTML renderer (being written)."""

from __future__ import annotations

from comfywatch.status.model import FleetStatus, TargetDetail

__all__ = ["TargetDetail", "render_fleet", "render_target"]


def render_fleet(status: FleetStatus, *, page: int = 1) -> str:
    return "<!doctype html><title>comfywatch</title>" + "".join(t.name for t in status.targets)


def render_target(detail: TargetDetail) -> str:
    return "<!doctype html><title>comfywatch</title>" + detail.summary.name
