"""The health row's queries, evaluated by promtool: comfywatch killed, and a Prometheus that never scraped it.

Grafana reads these values from instant queries, so promtool's evaluation at one instant is what a stat panel shows.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.dashboards.catalogue import iter_targets, load_dashboards
from tests.dashboards.promql import substitute_grafana_macros
from tests.e2e.promstack import PROMTOOL_BINARIES, require_binary

# Scraped every 15 s until it is killed at 5m: `up` turns 0 and its series go stale.
KILLED_AT = "5m"
SERIES = [
    {"series": 'up{job="comfywatch", instance="127.0.0.1:9101"}', "values": "1x20 0x40"},
    {"series": 'comfyui_up{job="comfywatch", instance="127.0.0.1:9101", target="studio"}', "values": "1x20 stale"},
    {"series": 'comfyui_up{job="comfywatch", instance="127.0.0.1:9101", target="laptop"}', "values": "0x20 stale"},
]


def _queries(dashboard_file: str) -> dict[str, str]:
    dashboard = load_dashboards()[dashboard_file]
    return {panel["title"]: substitute_grafana_macros(target["expr"]) for panel, target in iter_targets(dashboard)}


def _expect(expr: str, at: str, value: float | None) -> dict[str, Any]:
    samples = [] if value is None else [{"labels": "{}", "value": value}]
    return {"expr": expr, "eval_time": at, "exp_samples": samples}


def _promtool_test(tmp_path: Path, series: list[dict[str, str]], cases: list[dict[str, Any]]) -> None:
    test_file = tmp_path / "health_test.yml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": cases}],
    }), encoding="utf-8")
    result = subprocess.run([require_binary(*PROMTOOL_BINARIES), "test", "rules", str(test_file)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_health_row_shows_comfywatch_killed(tmp_path: Path) -> None:
    """Before the kill: scraped 1, one target down, no alert. Three minutes after it: scraped 0, data 180 s old,
    and the fleet counts are empty instead of a green 0."""
    fleet = _queries("comfywatch-fleet.json")
    _promtool_test(tmp_path, SERIES, [
        _expect(fleet["comfywatch scraped"], "4m", 1),
        _expect(fleet["Data age"], "4m", 0),
        _expect(fleet["Targets down"], "4m", 1),
        _expect(fleet["Firing alerts"], "4m", 0),
        _expect(fleet["comfywatch scraped"], "8m", 0),
        _expect(fleet["Data age"], "8m", 180),
        _expect(fleet["Targets down"], "8m", None),
        _expect(fleet["Stalled queues"], "8m", None),
        _expect(fleet["Firing alerts"], "8m", None),
    ])


def test_health_row_on_a_prometheus_without_comfywatch(tmp_path: Path) -> None:
    """Nothing scraped: "comfywatch scraped" reads 0 (Down), every count and the data age are empty, not 0."""
    for dashboard_file in ("comfywatch-fleet.json", "comfywatch-target.json", "comfywatch-cloud.json"):
        queries = _queries(dashboard_file)
        _promtool_test(tmp_path, [], [
            _expect(queries["comfywatch scraped"], "1m", 0),
            _expect(queries["Data age"], "1m", None),
            _expect(queries["Firing alerts"], "1m", None),
        ])
