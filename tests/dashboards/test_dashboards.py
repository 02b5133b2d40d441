"""Grafana dashboards: structure, and grafana/dashboard-linter's rules ported to Python.

Neither a Grafana server nor the Go linter is part of the test set-up (no Debian, PyPI or npm package
provides them), so this suite checks the JSON directly; tests/e2e/test_alerts_live.py additionally runs
every query against a real Prometheus.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.alerts.rulefile import recorded_names
from tests.dashboards.catalogue import (
    DASHBOARDS_DIR,
    PROMETHEUS_SERIES,
    iter_panels,
    iter_targets,
    load_dashboards,
    series_names,
)
from tests.dashboards.promql import (
    counter_violations,
    histogram_violations,
    metric_names,
    rate_interval_violations,
    selectors,
)

DASHBOARDS = load_dashboards()
EXPECTED_UIDS = {
    "comfywatch-fleet.json": "comfywatch-fleet",
    "comfywatch-target.json": "comfywatch-target",
    "comfywatch-cloud.json": "comfywatch-cloud",
}
DATASOURCE_REF = {"type": "prometheus", "uid": "${datasource}"}
TARGET_FILTER = 'target=~"$target"'

# Grafana's unit ids (grafana-data valueFormats/categories.ts), as dashboard-linter's
# panel-units rule lists them (the ones a comfywatch panel could plausibly use).
VALID_UNITS = frozenset(
    {
        "none",
        "string",
        "short",
        "percent",
        "percentunit",
        "humidity",
        "dB",
        "hex0x",
        "hex",
        "sci",
        "locale",
        "pixel",
        "currencyUSD",
        "currencyGBP",
        "currencyEUR",
        "currencyJPY",
        "bytes",
        "decbytes",
        "bits",
        "decbits",
        "kbytes",
        "deckbytes",
        "mbytes",
        "decmbytes",
        "gbytes",
        "decgbytes",
        "tbytes",
        "dectbytes",
        "pps",
        "binBps",
        "Bps",
        "binbps",
        "bps",
        "dateTimeAsIso",
        "dateTimeAsIsoNoDateIfToday",
        "dateTimeAsUS",
        "dateTimeAsUSNoDateIfToday",
        "dateTimeAsLocal",
        "dateTimeAsLocalNoDateIfToday",
        "dateTimeAsSystem",
        "dateTimeFromNow",
        "hertz",
        "ns",
        "µs",
        "ms",
        "s",
        "m",
        "h",
        "d",
        "dtdurationms",
        "dtdurations",
        "dthms",
        "dtdhms",
        "timeticks",
        "clockms",
        "clocks",
        "cps",
        "ops",
        "reqps",
        "rps",
        "wps",
        "iops",
        "cpm",
        "opm",
        "rpm",
        "wpm",
        "bool",
        "bool_yes_no",
        "bool_on_off",
    }
)

ALL = [(name, dashboard) for name, dashboard in DASHBOARDS.items()]
PANELS = [
    (f"{name}:{panel['id']}:{panel['title']}", panel)
    for name, dashboard in DASHBOARDS.items()
    for panel in iter_panels(dashboard)
    if panel["type"] != "row"
]
TARGETS = [
    (f"{name}:{panel['title']}:{target['refId']}", target)
    for name, dashboard in DASHBOARDS.items()
    for panel, target in iter_targets(dashboard)
]


def _ids(items: list[tuple[str, Any]]) -> list[str]:
    return [label for label, _ in items]


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def _variable_query(variable: dict[str, Any]) -> str:
    query = variable["query"]
    return str(query["query"] if isinstance(query, dict) else query)


# --- dashboard level ----------------------------------------------------------------------------------


def test_the_three_dashboards_exist_with_stable_uids() -> None:
    """Fleet, target and Cloud dashboards ship with fixed uids (links and bookmarks depend on them)."""
    assert {name: d["uid"] for name, d in DASHBOARDS.items()} == EXPECTED_UIDS


def test_uids_and_titles_are_unique() -> None:
    """No two dashboards share a uid or a title (Grafana refuses or overwrites duplicates)."""
    uids = [d["uid"] for d in DASHBOARDS.values()]
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    assert all(re.fullmatch(r"[a-z0-9-]{1,40}", uid) for uid in uids)


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=_ids(ALL))
def test_schema_version_tags_and_links(name: str, dashboard: dict[str, Any]) -> None:
    """Each dashboard sets schemaVersion, carries the comfywatch tag and links to its siblings by tag."""
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "comfywatch" in dashboard["tags"]
    assert any(link.get("tags") == ["comfywatch"] for link in dashboard["links"])
    assert dashboard["description"] and dashboard["title"].startswith("ComfyUI / ")
    assert "id" not in dashboard or dashboard["id"] is None


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=_ids(ALL))
def test_template_datasource(name: str, dashboard: dict[str, Any]) -> None:
    """dashboard-linter template-datasource: one Prometheus datasource variable named `datasource`."""
    datasources = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert len(datasources) == 1
    (variable,) = datasources
    assert variable["name"] == "datasource"
    assert variable["label"] == "Data source"
    assert variable["query"] == "prometheus"


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=_ids(ALL))
def test_target_variable(name: str, dashboard: dict[str, Any]) -> None:
    """A `target` variable lists the target label's values from the templated data source."""
    variable = _variables(dashboard)["target"]
    assert variable["type"] == "query"
    assert variable["datasource"] == DATASOURCE_REF
    query = _variable_query(variable)
    match = re.fullmatch(r"label_values\((?P<selector>.+), *target\)", query)
    assert match, query
    assert metric_names(match.group("selector")) <= series_names()
    if variable.get("includeAll"):
        assert variable["allValue"] == ".+"


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=_ids(ALL))
def test_query_variables_reload_on_time_change(name: str, dashboard: dict[str, Any]) -> None:
    """dashboard-linter template-on-time-change-reload: query variables use refresh = 2."""
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["refresh"] == 2, variable["name"]
            assert variable["datasource"] == DATASOURCE_REF


def test_cloud_dashboard_lists_only_cloud_targets() -> None:
    """The Comfy Cloud dashboard's target list is limited to kind="cloud" targets."""
    variable = _variables(DASHBOARDS["comfywatch-cloud.json"])["target"]
    assert 'kind="cloud"' in _variable_query(variable)


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=_ids(ALL))
def test_panel_ids_are_unique(name: str, dashboard: dict[str, Any]) -> None:
    """Panel ids (rows included) are unique within a dashboard."""
    ids = [panel["id"] for panel in iter_panels(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=_ids(ALL))
def test_grid_positions_fit_and_do_not_overlap(name: str, dashboard: dict[str, Any]) -> None:
    """Every panel lies inside the 24-column grid and no two panels overlap."""
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_grid_overlap_check_catches_an_overlap() -> None:
    """The overlap check is not vacuous: two panels on the same cell fail it."""
    broken = {
        "panels": [
            {"title": "a", "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8}},
            {"title": "b", "gridPos": {"x": 6, "y": 4, "w": 12, "h": 8}},
        ]
    }
    with pytest.raises(AssertionError, match="overlaps"):
        test_grid_positions_fit_and_do_not_overlap("broken", broken)


# --- panel level --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "panel"), PANELS, ids=_ids(PANELS))
def test_panel_title_and_description(label: str, panel: dict[str, Any]) -> None:
    """dashboard-linter panel-title-description: every panel has a title and a description."""
    assert panel["title"].strip()
    assert len(panel["description"].strip()) >= 20


@pytest.mark.parametrize(("label", "panel"), PANELS, ids=_ids(PANELS))
def test_panel_uses_datasource_variable(label: str, panel: dict[str, Any]) -> None:
    """dashboard-linter panel-datasource: panels and their queries use ${datasource}."""
    assert panel["datasource"] == DATASOURCE_REF
    assert panel["targets"], "panel has no queries"
    for target in panel["targets"]:
        assert target["datasource"] == DATASOURCE_REF


@pytest.mark.parametrize(("label", "panel"), PANELS, ids=_ids(PANELS))
def test_panel_units(label: str, panel: dict[str, Any]) -> None:
    """dashboard-linter panel-units: every panel sets a valid Grafana unit (heatmaps on the y axis too)."""
    assert panel["fieldConfig"]["defaults"]["unit"] in VALID_UNITS
    if panel["type"] == "heatmap":
        assert panel["options"]["yAxis"]["unit"] in VALID_UNITS


@pytest.mark.parametrize(("label", "panel"), PANELS, ids=_ids(PANELS))
def test_panel_ref_ids_unique(label: str, panel: dict[str, Any]) -> None:
    """Queries of a panel have distinct refIds (Grafana drops duplicates)."""
    refs = [t["refId"] for t in panel["targets"]]
    assert len(refs) == len(set(refs))


# --- query level --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "target"), TARGETS, ids=_ids(TARGETS))
def test_query_filters_on_target_variable(label: str, target: dict[str, Any]) -> None:
    """Every query is restricted by the $target variable, so the selection applies to every panel."""
    found = selectors(target["expr"])
    assert found
    # Every selector, not only one of them, must carry the filter.
    unfiltered = [s.name for s in found if TARGET_FILTER not in s.matchers]
    assert unfiltered == [], target["expr"]


@pytest.mark.parametrize(("label", "target"), TARGETS, ids=_ids(TARGETS))
def test_rate_uses_rate_interval(label: str, target: dict[str, Any]) -> None:
    """dashboard-linter target-rate-interval: rate()/irate() ranges are [$__rate_interval]."""
    assert rate_interval_violations(target["expr"]) == []


@pytest.mark.parametrize(("label", "target"), TARGETS, ids=_ids(TARGETS))
def test_counters_only_inside_rate_or_increase(label: str, target: dict[str, Any]) -> None:
    """dashboard-linter target-counter-agg: *_total counters appear only inside rate/irate/increase."""
    assert counter_violations(target["expr"]) == []


@pytest.mark.parametrize(("label", "target"), TARGETS, ids=_ids(TARGETS))
def test_histograms_are_rated_and_summed_by_le(label: str, target: dict[str, Any]) -> None:
    """Histogram buckets are rated and aggregated by (le) before histogram_quantile or a heatmap."""
    assert histogram_violations(target["expr"]) == []


@pytest.mark.parametrize(("label", "target"), TARGETS, ids=_ids(TARGETS))
def test_queries_use_only_exported_or_recorded_series(label: str, target: dict[str, Any]) -> None:
    """Queries name only series comfywatch exports, the rules record, or Prometheus makes (ALERTS)."""
    known = series_names() | recorded_names() | PROMETHEUS_SERIES
    assert metric_names(target["expr"]) - known == set()


def test_vram_panels_leave_out_cpu_devices() -> None:
    """Fleet VRAM panels skip CPU/DirectML devices, whose "VRAM" is RAM or meaningless."""
    fleet = DASHBOARDS["comfywatch-fleet.json"]
    exprs = [t["expr"] for p, t in iter_targets(fleet) if "vram" in t["expr"]]
    assert exprs
    for expr in exprs:
        assert 'type!~"cpu|directml"' in expr or "target_device:comfyui_device_vram_free:ratio" in expr


def test_required_panels_are_present() -> None:
    """Each dashboard has the panels an operator needs first (fleet health, queue, jobs, VRAM, canary, Cloud)."""
    titles = {name: {p["title"] for p in iter_panels(d)} for name, d in DASHBOARDS.items()}
    assert {
        "Targets up",
        "Queue depth",
        "Stalled or not consuming",
        "Job throughput",
        "Job failure ratio (30 min)",
        "VRAM headroom",
    } <= titles["comfywatch-fleet.json"]
    assert {
        "Canary phases (last run)",
        "Request latency",
        "Request failures by reason",
        "HTTP phases (last status poll)",
        "TLS certificate expires in",
    } <= titles["comfywatch-target.json"]
    assert {
        "Balance",
        "Burn rate (USD per hour)",
        "Days of credit left",
        "Subscription",
        "402 and 429 refusals",
        "Concurrency used vs plan",
    } <= titles["comfywatch-cloud.json"]


# --- provisioning -------------------------------------------------------------------------------------


def test_provisioning_example_is_a_valid_file_provider() -> None:
    """dashboards/provisioning.yml is a Grafana file provider (apiVersion 1) with a path."""
    document = yaml.safe_load((DASHBOARDS_DIR / "provisioning.yml").read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["name"] == "comfywatch"
