"""The metrics comfywatch exports, as the rules and dashboards may reference them.

Derived from :mod:`comfywatch.export.metrics`, the one place metric names are spelled, ``/probe``'s two gauges
included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from comfywatch.export import metrics

__all__ = [
    "DASHBOARDS_DIR",
    "EXPORTED",
    "REPO",
    "dashboard_files",
    "iter_panels",
    "iter_targets",
    "load_dashboards",
    "series_names",
]

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = REPO / "dashboards"

Kind = Literal["gauge", "counter", "histogram"]

# Derived from the exporter's own catalogue (one place for metric names), /probe's two gauges included.
EXPORTED: dict[str, Kind] = {d.name: ("gauge" if d.kind == "info" else d.kind) for d in metrics.ALL + metrics.PROBE}

# Series Prometheus itself creates.
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})


def series_names() -> set[str]:
    """Every series name the exporter produces (histograms expanded to _bucket, _sum and _count)."""
    names: set[str] = set()
    for name, kind in EXPORTED.items():
        if kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
        else:
            names.add(name)
    return names


def dashboard_files() -> list[Path]:
    """The dashboard JSON files, sorted."""
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard, keyed by file name."""
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in dashboard_files()}


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """All panels, including rows and panels nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def iter_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every panel."""
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target
