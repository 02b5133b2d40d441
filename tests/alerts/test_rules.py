"""Alert and recording rules: promtool check and unit tests, and the conventions every rule follows."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerts.rulefile import (
    ALERTS,
    ALERTS_DOC,
    RULE_TESTS_DIR,
    RULES_FILE,
    RUNBOOK,
    alert_names,
    alerting_rules,
    all_rules,
    github_anchor,
    markdown_headings,
    recorded_names,
    recording_rules,
    rule_test_files,
)
from tests.dashboards.catalogue import PROMETHEUS_SERIES, load_dashboards, series_names
from tests.dashboards.promql import counter_violations, metric_names
from tests.e2e.promstack import PROMTOOL_BINARIES, require_binary
from tests.e2e.test_probe_prometheus import yaml_blocks

RUNBOOK_BASE = "https://github.com/comfywatch/comfywatch/blob/main/docs/runbook.md#"
# Alerts about the daemon have no `target`; they name the instance instead. Alerts about a whole fleet, a pool
# of it or a scrape job have neither target nor instance: they name the job. ComfywatchAbsent's only labels are its
# selector's matchers, so its description quotes the selector that matched nothing.
DAEMON_ALERTS = {"ComfywatchDown", "ComfywatchConfigReloadFailed"}
JOB_ALERTS = {"ComfyUIFleetDegraded", "ComfyUIPoolDrift", "ComfywatchAbsent"}
NAMED_IN_DESCRIPTION = {"ComfywatchAbsent": 'up{job="comfywatch"}'}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_binary(*PROMTOOL_BINARIES)
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, cwd=RULES_FILE.parent, check=False
    )


def _duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|[smhdwy])", text):
        total += int(number) * units[unit]
    return total


@cache
def _alert_tests() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in rule_test_files():
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


# --- promtool -------------------------------------------------------------------------------------


def test_promtool_check_rules_passes() -> None:
    """`promtool check rules` accepts the rules file, lint included (no duplicate rules)."""
    result = _promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_passes() -> None:
    """Every promtool unit test (firing and quiet cases for each alert, recorded values) passes."""
    files = [str(p) for p in rule_test_files()]
    assert files, "no promtool test files in alerts/tests"
    result = _promtool("test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


def test_promtool_test_rules_detects_a_wrong_expectation(tmp_path: Path) -> None:
    """The promtool run is not vacuous: the first firing case, expecting the wrong severity, fails."""
    document = yaml.safe_load((RULE_TESTS_DIR / "comfyui_test.yml").read_text(encoding="utf-8"))
    first = document["tests"][0]
    firing = next(c for c in first["alert_rule_test"] if c["exp_alerts"])
    firing["exp_alerts"][0]["exp_labels"]["severity"] = "info"
    broken = {**document, "rule_files": [str(RULES_FILE)], "tests": [first]}
    path = tmp_path / "broken_test.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = _promtool("test", "rules", str(path))
    assert result.returncode != 0
    assert 'severity="info"' in result.stdout + result.stderr


def test_missing_promtool_skips_locally_and_fails_in_ci() -> None:
    """Without promtool the tests skip with an install hint, except when CI is set: then they fail."""
    with pytest.raises(pytest.skip.Exception, match="apt-get install"):
        require_binary("promtool-does-not-exist", env={}, path="")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_binary("promtool-does-not-exist", env={"CI": "true"}, path="")


# --- what is defined ------------------------------------------------------------------------------


def test_every_alert_is_defined() -> None:
    """Every expected alert exists, and nothing else does."""
    assert set(alert_names()) == set(ALERTS)


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_has_severity_for_and_annotations(rule: dict[str, Any]) -> None:
    """Each alert has severity critical|warning, a `for` of at least a minute, and all three annotations."""
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert _duration_seconds(rule["for"]) >= 60
    assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
    assert all(value.strip() for value in rule["annotations"].values())


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_description_is_templated_with_target_and_value(rule: dict[str, Any]) -> None:
    """Descriptions name the target (or the daemon's instance) and show the alert's value."""
    description = rule["annotations"]["description"]
    assert "$value" in description
    if rule["alert"] in JOB_ALERTS:
        label = "$labels.job"
    else:
        label = "$labels.instance" if rule["alert"] in DAEMON_ALERTS else "$labels.target"
    assert NAMED_IN_DESCRIPTION.get(rule["alert"], label) in description
    assert label in rule["annotations"]["summary"] or rule["alert"] in DAEMON_ALERTS


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_runbook_url_points_at_the_alerts_section(rule: dict[str, Any]) -> None:
    """runbook_url is docs/runbook.md#<alertname lower-cased>, and that heading exists."""
    name = rule["alert"]
    assert rule["annotations"]["runbook_url"] == RUNBOOK_BASE + name.lower()
    anchors = {github_anchor(h) for h in markdown_headings(RUNBOOK)}
    assert name.lower() in anchors


def _runbook_section(name: str) -> str:
    text = RUNBOOK.read_text(encoding="utf-8")
    match = re.search(rf"^## {name}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no '## {name}' section"
    return match.group(1)


def _runbook_queries(section: str) -> list[str]:
    """The PromQL blocks of a runbook section's **Which** part (what is behind the alert)."""
    which = re.search(r"^\*\*Which[^\n]*\n(.*?)(?=^\*\*|\Z)", section, re.MULTILINE | re.DOTALL)
    assert which, "missing **Which**"
    return [block.strip() for block in re.findall(r"^```promql\n(.*?)^```", which.group(1), re.MULTILINE | re.DOTALL)]


def test_runbook_has_one_section_per_alert_with_the_required_parts() -> None:
    """Each runbook section says what it means, which target/canary/reason is behind it (a PromQL query), how
    to confirm, causes and fixes, and names a doctor check and a dashboard panel."""
    for name in alert_names():
        body = _runbook_section(name)
        for part in ("Meaning", "Which", "Confirm", "Causes", "Fix"):
            assert f"**{part}" in body, f"{name}: missing **{part}**"
        assert _runbook_queries(body), f"{name}: no PromQL query under **Which**"
        assert "comfywatch doctor" in body, f"{name}: no doctor command"
        assert "panel" in body.lower(), f"{name}: no dashboard panel named"


@pytest.mark.parametrize("name", alert_names())
def test_runbook_queries_name_real_series_and_read_counters_as_rates(name: str) -> None:
    """The runbook's queries read series that exist (exported, recorded, `up`, ALERTS) and counters only in
    rate/increase."""
    known = series_names() | recorded_names() | PROMETHEUS_SERIES
    for query in _runbook_queries(_runbook_section(name)):
        assert metric_names(query), query
        assert metric_names(query) - known == set(), query
        assert counter_violations(query) == [], query


def test_runbook_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every runbook query (each one checked as the expression of a recording rule)."""
    queries = [query for name in alert_names() for query in _runbook_queries(_runbook_section(name))]
    rules = [{"record": f"runbook:query:{index}", "expr": query} for index, query in enumerate(queries)]
    path = tmp_path / "runbook.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "runbook", "rules": rules}]}), encoding="utf-8")
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def _documented_job_names() -> dict[str, str]:
    """Where each job of docs/prometheus.md comes from, by job name: scrape_configs' job_name, a Probe's
    jobName, a PodMonitor's job relabelling (the operator's default job is <namespace>/<name>)."""
    jobs: dict[str, str] = {}
    for block in yaml_blocks():
        for document in yaml.safe_load_all(block):
            if not isinstance(document, dict):
                continue
            for job in document.get("scrape_configs", []):
                jobs[job["job_name"]] = "scrape_configs"
            kind = document.get("kind")
            if kind == "Probe":
                jobs[document["spec"]["jobName"]] = kind
            if kind == "PodMonitor":
                metadata = document["metadata"]
                for endpoint in document["spec"]["podMetricsEndpoints"]:
                    relabelled = [rule["replacement"] for rule in endpoint.get("relabelings", [])
                                  if rule.get("targetLabel") == "job"]
                    jobs[relabelled[-1] if relabelled else f"{metadata['namespace']}/{metadata['name']}"] = kind
    return jobs


def test_documented_scrape_jobs_match_the_default_selector() -> None:
    """Every job docs/prometheus.md sets up (PodMonitor included) is one the rules' default selector finds."""
    (down,) = [rule for rule in alerting_rules() if rule["alert"] == "ComfywatchDown"]
    selector = re.search(r'job=~"([^"]+)"', down["expr"])
    assert selector, down["expr"]
    jobs = _documented_job_names()
    assert {"scrape_configs", "Probe", "PodMonitor"} <= set(jobs.values())
    assert [name for name in jobs if not re.fullmatch(selector.group(1), name)] == []


def test_alerts_doc_lists_every_alert_and_the_job_name_assumption() -> None:
    """docs/alerts.md documents every alert's threshold and the `job=~"comfywatch.*"` assumption."""
    text = ALERTS_DOC.read_text(encoding="utf-8")
    for name in alert_names():
        assert f"`{name}`" in text, name
    assert 'job=~"comfywatch.*"' in text


# --- promtool coverage ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", alert_names())
def test_every_alert_has_a_firing_and_a_quiet_promtool_case(name: str) -> None:
    """alerts/tests has, for each alert, an evaluation that fires it and one where it stays quiet."""
    cases = [c for c in _alert_tests() if c["alertname"] == name]
    assert any(c.get("exp_alerts") for c in cases), f"{name}: no firing case"
    assert any(not c.get("exp_alerts") for c in cases), f"{name}: no quiet case"


def test_firing_cases_pin_every_annotation() -> None:
    """Every expected alert in the promtool tests spells out severity and all three annotations."""
    for case in _alert_tests():
        for expected in case.get("exp_alerts") or []:
            assert "severity" in expected["exp_labels"], case["alertname"]
            assert set(expected["exp_annotations"]) == {"summary", "description", "runbook_url"}


# --- expressions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.get("alert") or r["record"])
def test_counters_only_inside_rate_or_increase(rule: dict[str, Any]) -> None:
    """No rule reads a *_total counter raw (its value resets on every daemon restart)."""
    assert counter_violations(rule["expr"]) == []


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.get("alert") or r["record"])
def test_rules_reference_only_exported_or_recorded_series(rule: dict[str, Any]) -> None:
    """Every metric name in a rule is one comfywatch exports, a recorded series, or Prometheus' `up`."""
    known = series_names() | recorded_names() | PROMETHEUS_SERIES
    assert metric_names(rule["expr"]) - known == set()


def test_recording_rule_names_follow_level_metric_operations() -> None:
    """Recorded names look like level:metric:operations, so they never clash with exported names."""
    for rule in recording_rules():
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_every_recording_rule_is_used_by_an_alert_or_a_dashboard() -> None:
    """Recording rules exist for sharing: each one feeds an alert or a dashboard panel."""
    used: set[str] = set()
    for rule in alerting_rules():
        used |= metric_names(rule["expr"])
    for dashboard in load_dashboards().values():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                used |= metric_names(target["expr"])
    assert recorded_names() - used == set()


def test_aggregations_keep_job_instance_and_user_labels() -> None:
    """Rules aggregate with `without (...)`, so job, instance, target and relabelled labels survive."""
    for rule in all_rules():
        assert not re.search(r"\bby\s*\(", rule["expr"]), rule.get("alert") or rule["record"]


def test_vram_ratio_leaves_out_cpu_and_directml_devices() -> None:
    """VRAM numbers of CPU (and DirectML) devices are RAM or meaningless, so the ratio excludes them."""
    (rule,) = [r for r in recording_rules() if r["record"] == "target_device:comfyui_device_vram_free:ratio"]
    assert rule["expr"].count('type!~"cpu|directml"') == 2


def test_runbook_panel_references_name_real_panels() -> None:
    """Every "*Dashboard → Panel*" reference in the runbook names a panel that exists in that dashboard."""
    dashboards = {d["title"].removeprefix("ComfyUI / "): d for d in load_dashboards().values()}
    text = RUNBOOK.read_text(encoding="utf-8")
    refs = re.findall(r"\*(Fleet overview|Target detail|Comfy Cloud) → ([^*]+)\*", text)
    assert len(refs) >= 15
    for dashboard_title, panel in refs:
        panel = " ".join(panel.split())
        titles = {p["title"] for p in dashboards[dashboard_title]["panels"]}
        assert any(t.startswith(panel) for t in titles), f"{dashboard_title} → {panel}"
