"""Grafana dashboards: structure, and grafana/dashboard-linter's rules ported to Python.

Neither a Grafana server nor the Go linter is part of the test set-up (no Debian, PyPI or npm package
provides them), so this suite checks the JSON directly; tests/e2e/test_alerts_live.py additionally runs
every query against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from typing import Any

import _jsonnet
import pytest
import yaml

from tests.alerts.rulefile import alert_names, alerting_rules, recorded_names
from tests.dashboards.catalogue import (
    DASHBOARDS_DIR,
    PROMETHEUS_SERIES,
    REPO,
    iter_panels,
    iter_targets,
    load_dashboards,
    series_names,
)
from tests.dashboards.promql import (
    aggregation_labels,
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
# The mixin's default _config: comfywatchSelector and clusterLabel.
COMFYWATCH_SELECTOR = 'job=~"comfywatch.*"'
SCOPE_FILTERS = (COMFYWATCH_SELECTOR, 'cluster=~"$cluster"', 'job=~"$job"')
TARGET_FILTER = 'target=~"$target"'
# Alerts about comfywatch itself or the whole fleet carry no target label and count on every selection.
ALERTS_TARGET_FILTER = 'target=~"$target|"'
HEALTH_ROW = "comfywatch health"
HEALTH_TITLES = ["comfywatch scraped", "Data age", "Firing alerts"]
# Stat-like panels reduce a query to one value: they must not show a value that stopped arriving long ago.
SINGLE_VALUE_PANELS = frozenset({"stat", "bargauge"})
COMFYWATCH_UP_GATE = f'or (0 * group(up{{{COMFYWATCH_SELECTOR}, cluster=~"$cluster", job=~"$job"}} == 1))'

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
def test_cluster_job_and_target_variables(name: str, dashboard: dict[str, Any]) -> None:
    """cluster, job and target variables, each listing its label from comfywatch's series and narrowed by the ones
    before it; All of cluster and job is ".*" so that series without a cluster label still match."""
    variables = _variables(dashboard)
    assert [v["name"] for v in dashboard["templating"]["list"]][:4] == ["datasource", "cluster", "job", "target"]
    for variable_name in ("cluster", "job", "target"):
        variable = variables[variable_name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE_REF
        query = _variable_query(variable)
        match = re.fullmatch(rf"label_values\((?P<selector>.+), *{variable_name}\)", query)
        assert match, query
        assert metric_names(match.group("selector")) <= series_names() | PROMETHEUS_SERIES
        assert COMFYWATCH_SELECTOR in match.group("selector")
    assert 'cluster=~"$cluster"' in _variable_query(variables["job"])
    assert 'cluster=~"$cluster", job=~"$job"' in _variable_query(variables["target"])
    for variable_name in ("cluster", "job"):
        assert variables[variable_name]["includeAll"] and variables[variable_name]["allValue"] == ".*"
    if variables["target"].get("includeAll"):
        assert variables["target"]["allValue"] == ".+"


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
def test_query_filters_on_selector_and_variables(label: str, target: dict[str, Any]) -> None:
    """Every selector is scoped to comfywatch's jobs and the chosen cluster and job, and every per-target series
    to the chosen targets, so the selection applies to every panel. comfywatch's own `up` has no target;
    ALERTS keeps alerts without one."""
    found = selectors(target["expr"])
    assert found
    # Every selector, not only one of them, must carry the filters.
    for selector in found:
        if selector.name == "ALERTS":
            assert 'cluster=~"$cluster"' in selector.matchers and 'job=~"$job"' in selector.matchers
            assert ALERTS_TARGET_FILTER in selector.matchers, target["expr"]
            continue
        assert all(f in selector.matchers for f in SCOPE_FILTERS), target["expr"]
        if selector.name != "up":
            assert TARGET_FILTER in selector.matchers, target["expr"]


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


# --- telling the truth in an incident ------------------------------------------------------------------


def _panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    (panel,) = [p for p in iter_panels(dashboard) if p["title"] == title]
    return panel


def _exprs(panel: dict[str, Any]) -> list[str]:
    return [str(t["expr"]) for t in panel["targets"]]


def _steps(panel: dict[str, Any]) -> list[tuple[str, float | None]]:
    return [(s["color"], s["value"]) for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


def _evaluate_mixin(snippet: str) -> Any:
    """Evaluate jsonnet with the mixin as `mixin`, e.g. `mixin.grafanaDashboards`."""
    code = f"local mixin = import 'mixin.libsonnet'; {snippet}"
    return json.loads(_jsonnet.evaluate_snippet("test", code, jpathdir=[str(REPO / "mixin")]))


def _alertname_regex(dashboard: dict[str, Any]) -> str:
    (expr,) = _exprs(_panel(dashboard, "Firing alerts"))
    match = re.search(r'alertname=~"(?P<names>[^"]*)"', expr)
    assert match, expr
    return match.group("names")


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=_ids(ALL))
def test_health_row_comes_first(name: str, dashboard: dict[str, Any]) -> None:
    """Every dashboard opens with comfywatch's own health: scraped, data age and this bundle's firing alerts."""
    row, *panels = dashboard["panels"][:4]
    assert (row["type"], row["title"]) == ("row", HEALTH_ROW)
    assert [p["title"] for p in panels] == HEALTH_TITLES
    assert all(p["type"] == "stat" for p in panels)


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=_ids(ALL))
def test_comfywatch_scraped_is_red_when_down_or_not_scraped(name: str, dashboard: dict[str, Any]) -> None:
    """"comfywatch scraped" is the minimum of comfywatch's `up`: 0 (red, Down) when a scrape fails, and 0 as well
    when Prometheus scrapes no comfywatch at all (the one place where `or vector(0)` is the truth)."""
    panel = _panel(dashboard, "comfywatch scraped")
    assert _exprs(panel) == [f'min(up{{{COMFYWATCH_SELECTOR}, cluster=~"$cluster", job=~"$job"}}) or vector(0)']
    assert _steps(panel) == [("red", None), ("green", 1)]
    assert panel["fieldConfig"]["defaults"]["mappings"][0]["options"]["0"]["text"] == "Down"


@pytest.mark.parametrize(("name", "dashboard"), ALL, ids=_ids(ALL))
def test_data_age_is_the_age_of_the_newest_sample(name: str, dashboard: dict[str, Any]) -> None:
    """"Data age" is now minus the timestamp of the newest comfyui_up sample (so it grows once comfywatch's data
    stops), coloured orange then red."""
    panel = _panel(dashboard, "Data age")
    (expr,) = _exprs(panel)
    assert re.fullmatch(r"time\(\) - max\(max_over_time\(timestamp\(comfyui_up\{[^}]*\}\)\[1h:15s\]\)\)", expr), expr
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"
    assert _steps(panel) == [("green", None), ("orange", 120), ("red", 300)]


@pytest.mark.parametrize(("label", "target"), TARGETS, ids=_ids(TARGETS))
def test_no_zero_that_outlives_comfywatch(label: str, target: dict[str, Any]) -> None:
    """A count may read 0 only while comfywatch is scraped and up: `or vector(0)` would show a green 0 on an empty
    Prometheus. The only vector(0) is "comfywatch scraped", where 0 means Down."""
    expr = target["expr"]
    if "vector(0)" in expr:
        assert label.split(":")[1] == "comfywatch scraped", expr
    if " or " in expr and "vector(0)" not in expr:
        assert expr.endswith(COMFYWATCH_UP_GATE), expr


@pytest.mark.parametrize(("label", "panel"), PANELS, ids=_ids(PANELS))
def test_single_value_panels_query_instantly(label: str, panel: dict[str, Any]) -> None:
    """Stat and bar gauge queries are instant: a series that stopped arriving shows no value, not its last one."""
    if panel["type"] in SINGLE_VALUE_PANELS:
        assert all(t["instant"] is True and t["range"] is False for t in panel["targets"])


def test_firing_alerts_regex_is_the_bundles_alert_names() -> None:
    """"Firing alerts" counts exactly the alerts of alerts/comfywatch.rules.yml, ComfywatchDown included."""
    names = set(alert_names())
    assert "ComfywatchDown" in names
    for dashboard in DASHBOARDS.values():
        assert set(_alertname_regex(dashboard).split("|")) == names


def test_firing_alerts_regex_follows_the_mixins_alerts() -> None:
    """The alert-name regex is derived from prometheusAlerts: an alert added to the mixin is counted too."""
    dashboards = _evaluate_mixin("""
      local extended = mixin + { prometheusAlerts+:: { groups+: [
        { name: 'extra', rules: [{ alert: 'ExtraAlert', expr: 'vector(1)' }, { record: 'x:y:z', expr: '1' }] },
      ] } };
      { plain: mixin.grafanaDashboards, extended: extended.grafanaDashboards }
    """)
    for file_name in EXPECTED_UIDS:
        plain = set(_alertname_regex(dashboards["plain"][file_name]).split("|")) - {""}
        extended = set(_alertname_regex(dashboards["extended"][file_name]).split("|")) - {""}
        assert extended == plain | {"ExtraAlert"}


def test_cluster_label_follows_the_config() -> None:
    """_config.clusterLabel renames the cluster matcher of every query and the label the variable lists."""
    dashboards = _evaluate_mixin("(mixin + { _config+:: { clusterLabel: 'region' } }).grafanaDashboards")
    for dashboard in dashboards.values():
        assert "region)" in _variable_query(_variables(dashboard)["cluster"])
        for _, target in iter_targets(dashboard):
            assert 'cluster=~' not in target["expr"]
            assert all('region=~"$cluster"' in s.matchers for s in selectors(target["expr"])), target["expr"]


def _fleet_graphs() -> list[dict[str, Any]]:
    """The fleet panels that draw one series per target (everything but rows and stats)."""
    return [p for p in iter_panels(DASHBOARDS["comfywatch-fleet.json"]) if p["type"] not in {"row", "stat"}]


def test_fleet_graphs_draw_only_the_worst_targets() -> None:
    """At 50 targets a graph of every target is unreadable: each fleet graph draws the top or bottom k."""
    graphs = _fleet_graphs()
    assert len(graphs) >= 15
    for panel in graphs:
        for expr in _exprs(panel):
            assert re.search(r"\b(topk|bottomk)\(10, ", expr), f"{panel['title']}: {expr}"


def test_fleet_series_link_to_target_detail() -> None:
    """Every per-target fleet series carries a data link to the target dashboard with its target and job."""
    for panel in _fleet_graphs():
        (link,) = panel["fieldConfig"]["defaults"]["links"]
        assert link["url"].startswith("/d/comfywatch-target/")
        assert "var-target=${__field.labels.target}" in link["url"]
        assert "var-job=${__field.labels.job}" in link["url"]
        assert "${__url_time_range}" in link["url"]
        for expr in _exprs(panel):
            # The link reads target and job from the series: aggregations must keep them.
            assert all({"job", "target"} <= labels for labels in aggregation_labels(expr)), expr


RARE_EVENT_COUNTERS = frozenset({
    "comfyui_jobs_total",
    "comfyui_job_failures_total",
    "comfyui_job_duration_seconds_bucket",
    "comfyui_canary_failures_total",
    "comfyui_canary_runs_total",
    "comfyui_canary_skipped_total",
    "comfyui_canary_duration_seconds_bucket",
    "comfyui_canary_duration_seconds_count",
    "comfywatch_check_overruns_total",
})


@pytest.mark.parametrize(("label", "target"), TARGETS, ids=_ids(TARGETS))
def test_rare_events_are_counted_not_rated(label: str, target: dict[str, Any]) -> None:
    """Jobs, canary runs and refusals can be an hour apart: increase() over at least an hour, never a rate scaled
    to a per-hour or per-minute figure (one event would draw as a spike of ~60)."""
    expr = target["expr"]
    assert not re.search(r"\)\s*\*\s*(60|3600)\b", expr), expr
    for selector in selectors(expr):
        if selector.call == "increase":
            assert selector.range in {"1h", "6h"}, expr
        if selector.name in RARE_EVENT_COUNTERS:
            assert selector.call == "increase", expr


def test_target_detail_shows_stall_backlog_and_staleness() -> None:
    """Target detail shows whether the queue stalled, how old its backlog is and how stale each check is."""
    target = DASHBOARDS["comfywatch-target.json"]
    names = {title: set().union(*(metric_names(e) for e in _exprs(_panel(target, title)))) for title in (
        "Queue stalled or not consuming", "Oldest pending job", "Time since last successful check")}
    assert {"comfyui_queue_stalled", "comfyui_queue_worker_not_consuming"} <= names["Queue stalled or not consuming"]
    assert "comfyui_queue_oldest_pending_seconds" in names["Oldest pending job"]
    (staleness,) = _exprs(_panel(target, "Time since last successful check"))
    assert staleness.startswith("time() - comfywatch_check_last_success_timestamp_seconds{")


def _without_selectors_and_windows(expr: str) -> str:
    return re.sub(r"\[[^\]]*\]", "[]", re.sub(r"\{[^}]*\}", "{}", expr))


def test_canary_failed_runs_are_counted_as_comfyui_canary_failing_counts_them() -> None:
    """Target detail draws failed canary runs as the alert counts them, runs minus successes: a reason's series
    of comfyui_canary_failures_total appears with its first failure, which increase() cannot see."""
    failed_runs = "(increase(comfyui_canary_runs_total{}[]) - increase(comfyui_canary_duration_seconds_count{}[]))"
    (alert,) = [rule for rule in alerting_rules() if rule["alert"] == "ComfyUICanaryFailing"]
    assert failed_runs in _without_selectors_and_windows(alert["expr"])
    panel = _panel(DASHBOARDS["comfywatch-target.json"], "Canary failures by reason")
    drawn = {target["legendFormat"]: _without_selectors_and_windows(target["expr"]) for target in panel["targets"]}
    assert drawn["{{canary}} failed runs"] == f"sum by (canary) {failed_runs}"


def test_cloud_spend_reads_the_balance_slope() -> None:
    """Spend per hour is -3600 times the recorded slope of the balance (USD per second, negative while spending)."""
    cloud = DASHBOARDS["comfywatch-cloud.json"]
    (burn,) = _exprs(_panel(cloud, "Burn rate (USD per hour)"))
    assert burn.startswith("-3600 * target:comfy_cloud_balance_usd:deriv6h{")
    (days,) = _exprs(_panel(cloud, "Days of credit left"))
    assert "24 * -3600 * target:comfy_cloud_balance_usd:deriv6h{" in days


# --- provisioning -------------------------------------------------------------------------------------


def test_provisioning_example_is_a_valid_file_provider() -> None:
    """dashboards/provisioning.yml is a Grafana file provider (apiVersion 1) with a path."""
    document = yaml.safe_load((DASHBOARDS_DIR / "provisioning.yml").read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    (provider,) = document["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["name"] == "comfywatch"
