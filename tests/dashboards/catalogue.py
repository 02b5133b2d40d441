"""The metrics comfywatch exports (DESIGN §5), as the rules and dashboards may reference them.

Kept by hand from the metric contract; once ``comfywatch/exporter.py`` exists a test should compare
this list with what the exporter really registers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

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

EXPORTED: dict[str, Kind] = {
    # Target state.
    "comfyui_up": "gauge",
    "comfyui_target_info": "gauge",
    "comfyui_info": "gauge",
    "comfyui_ram_total_bytes": "gauge",
    "comfyui_ram_free_bytes": "gauge",
    "comfyui_device_vram_total_bytes": "gauge",
    "comfyui_device_vram_free_bytes": "gauge",
    "comfyui_device_torch_vram_total_bytes": "gauge",
    "comfyui_device_torch_vram_free_bytes": "gauge",
    "comfyui_queue_running": "gauge",
    "comfyui_queue_pending": "gauge",
    "comfyui_queue_running_seconds": "gauge",
    "comfyui_queue_oldest_pending_seconds": "gauge",
    "comfyui_queue_stalled": "gauge",
    "comfyui_queue_worker_not_consuming": "gauge",
    "comfyui_http_phase_seconds": "gauge",
    "comfyui_tls_cert_not_after_timestamp_seconds": "gauge",
    "comfyui_canary_success": "gauge",
    "comfyui_canary_phase_seconds": "gauge",
    "comfyui_canary_server_execution_seconds": "gauge",
    "comfyui_canary_websocket_ok": "gauge",
    "comfyui_canary_last_success_timestamp_seconds": "gauge",
    "comfyui_jobs_total": "counter",
    "comfyui_job_failures_total": "counter",
    "comfyui_requests_total": "counter",
    "comfyui_request_failures_total": "counter",
    "comfyui_canary_runs_total": "counter",
    "comfyui_canary_failures_total": "counter",
    "comfyui_canary_skipped_total": "counter",
    "comfyui_job_duration_seconds": "histogram",
    "comfyui_request_duration_seconds": "histogram",
    "comfyui_canary_duration_seconds": "histogram",
    # Comfy Cloud.
    "comfy_cloud_balance_usd": "gauge",
    "comfy_cloud_effective_balance_usd": "gauge",
    "comfy_cloud_has_funds": "gauge",
    "comfy_cloud_subscription_active": "gauge",
    "comfy_cloud_subscription_info": "gauge",
    "comfy_cloud_max_concurrent_jobs": "gauge",
    "comfy_cloud_jobs_stuck": "gauge",
    "comfy_cloud_retry_after_seconds": "gauge",
    "comfy_cloud_canary_runs_today": "gauge",
    # The daemon.
    "comfywatch_build_info": "gauge",
    "comfywatch_check_duration_seconds": "gauge",
    "comfywatch_check_overruns_total": "counter",
    "comfywatch_check_last_success_timestamp_seconds": "gauge",
    "comfywatch_targets": "gauge",
    "comfywatch_websocket_connected": "gauge",
    "comfywatch_config_last_reload_success": "gauge",
    "comfywatch_config_last_reload_timestamp_seconds": "gauge",
    "comfywatch_shard_info": "gauge",
}

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
