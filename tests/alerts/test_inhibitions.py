"""alerts/alertmanager-inhibit.yml: every rule names real alerts, stays within one target or fleet, never lets
an alert silence its peers, and a real Alertmanager accepts it and inhibits what it says."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.rulefile import REPO, alert_names, alerting_rules
from tests.e2e.promstack import (
    AlertmanagerServer,
    alertmanager_config,
    load_yaml,
    require_binary,
    run_alertmanager,
    wait_until,
    write_yaml,
)
from tests.mixin.render import render_mixin

INHIBIT_FILE = REPO / "alerts" / "alertmanager-inhibit.yml"
# Debian's prometheus-alertmanager ships amtool under its upstream name.
AMTOOL_BINARIES = ("amtool",)
PER_TARGET_EQUAL = {"cluster", "job", "target"}
FLEET_EQUAL = {"cluster", "job"}


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager matcher in the `label="value"` / `label=~"regex"` syntax the rules file uses."""

    label: str
    operator: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Matcher:
        parsed = re.fullmatch(r'(\w+)(=~|!~|!=|=)"(.*)"', text)
        assert parsed, f"not a matcher: {text}"
        return cls(*parsed.groups())

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.label, "")
        if self.operator in ("=~", "!~"):
            return bool(re.fullmatch(self.value, value)) == (self.operator == "=~")
        return (value == self.value) == (self.operator == "=")

    def alertnames(self) -> list[str]:
        """The alert names an alertname matcher spells out (one, or the alternatives of its regex)."""
        return self.value.split("|") if self.operator == "=~" else [self.value]


def _inhibit_rules(path: Path = INHIBIT_FILE) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = load_yaml(path)["inhibit_rules"]
    return rules


def _matchers(rule: Mapping[str, Any], side: str) -> list[Matcher]:
    return [Matcher.parse(text) for text in rule[f"{side}_matchers"]]


def _matching(matchers: list[Matcher], alerts: list[dict[str, str]]) -> list[dict[str, str]]:
    return [alert for alert in alerts if all(m.matches(alert) for m in matchers)]


def _alert_identities() -> list[dict[str, str]]:
    """Each alerting rule's static labels: what the inhibit matchers may select on."""
    return [{"alertname": rule["alert"], **rule.get("labels", {})} for rule in alerting_rules()]


def _is_per_target(alertname: str) -> bool:
    """An alert is about one target when its description names the target (fleet and daemon alerts do not)."""
    return any("$labels.target" in rule["annotations"]["description"]
               for rule in alerting_rules() if rule["alert"] == alertname)


def _rule_id(rule: Mapping[str, Any]) -> str:
    return " ".join(rule["source_matchers"])


RULES = _inhibit_rules()


def test_there_are_inhibitions() -> None:
    assert len(RULES) >= 5


@pytest.mark.parametrize("rule", RULES, ids=_rule_id)
def test_matchers_name_existing_alerts_by_name_and_static_labels(rule: dict[str, Any]) -> None:
    """A misspelt alert name would silently inhibit nothing; labels other than the rules' static ones (alertname,
    severity) are not checked by these tests, so none may be matched on."""
    identities = _alert_identities()
    static_labels = {label for alert in identities for label in alert}
    for side in ("source", "target"):
        matchers = _matchers(rule, side)
        assert {m.label for m in matchers} <= static_labels
        named = [name for m in matchers if m.label == "alertname" for name in m.alertnames()]
        assert named, f"{side} side names no alert"
        assert set(named) <= set(alert_names()), set(named) - set(alert_names())
        assert _matching(matchers, identities), f"{side} side matches no alerting rule"


@pytest.mark.parametrize("rule", RULES, ids=_rule_id)
def test_no_alert_matches_both_sides_of_a_rule(rule: dict[str, Any]) -> None:
    """Alerts matching both sides would be exempt from the rule among themselves or silence one another."""
    both = _matching(_matchers(rule, "source") + _matchers(rule, "target"), _alert_identities())
    assert both == []


@pytest.mark.parametrize("rule", RULES, ids=_rule_id)
def test_equal_scopes_the_rule_to_one_target_or_one_fleet(rule: dict[str, Any]) -> None:
    """Per-target sources match on cluster, job and target. A fleet alert has no target label, so `target` in
    its equal list would match only targets without one: it matches on cluster and job."""
    sources = {alert["alertname"] for alert in _matching(_matchers(rule, "source"), _alert_identities())}
    targets = {alert["alertname"] for alert in _matching(_matchers(rule, "target"), _alert_identities())}
    assert all(_is_per_target(name) for name in targets), targets
    if all(_is_per_target(name) for name in sources):
        assert set(rule["equal"]) >= PER_TARGET_EQUAL
    else:
        assert not any(_is_per_target(name) for name in sources), sources
        assert set(rule["equal"]) >= FLEET_EQUAL
        assert "target" not in rule["equal"]


def test_cluster_label_override_reaches_every_equal_list(tmp_path: Path) -> None:
    render_mixin(tmp_path, '{clusterLabel: "region"}')
    rendered = _inhibit_rules(tmp_path / "alerts" / "alertmanager-inhibit.yml")
    assert len(rendered) == len(RULES)
    for rule, default in zip(rendered, RULES, strict=True):
        assert "cluster" not in rule["equal"]
        assert rule["equal"] == ["region" if label == "cluster" else label for label in default["equal"]]


# --- a real Alertmanager --------------------------------------------------------------------------

AMTOOL_CONFIG = alertmanager_config("http://127.0.0.1:9/alerts")


def _amtool_check(tmp_path: Path, inhibit_rules: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    amtool = require_binary(*AMTOOL_BINARIES)
    config = write_yaml(tmp_path / "alertmanager.yml", {**AMTOOL_CONFIG, "inhibit_rules": inhibit_rules})
    return subprocess.run([amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60,
                          check=False)


def test_amtool_accepts_the_inhibit_rules(tmp_path: Path) -> None:
    result = _amtool_check(tmp_path, RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert f" - {len(RULES)} inhibit rules" in result.stdout


def test_amtool_check_is_not_vacuous(tmp_path: Path) -> None:
    broken = [{**RULES[0], "source_matchers": ['alertname=~"ComfyUIDown(']}]
    result = _amtool_check(tmp_path, broken)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


EU_STUDIO = {"cluster": "eu", "job": "comfywatch", "instance": "cw:9877", "target": "studio"}


def _alert(alertname: str, severity: str, **labels: str) -> dict[str, str]:
    return {"alertname": alertname, "severity": severity, **labels}


CANARY_FAILING = _alert("ComfyUICanaryFailing", "warning", **EU_STUDIO, canary="smoke")
CANARY_SLOW = _alert("ComfyUICanarySlow", "warning", **EU_STUDIO, canary="smoke")
CANARY_SLOW_OTHER_CLUSTER = {**CANARY_SLOW, "cluster": "us"}
CANARY_SLOW_OTHER_CANARY = {**CANARY_SLOW, "canary": "upscale"}
# A setup without a cluster label: absent from both alerts counts as equal.
UNCLUSTERED = {"job": "comfywatch-lab", "instance": "cw:9877", "target": "bench"}
UNCLUSTERED_CANARY_FAILING = _alert("ComfyUICanaryFailing", "warning", **UNCLUSTERED, canary="smoke")
UNCLUSTERED_CANARY_SLOW = _alert("ComfyUICanarySlow", "warning", **UNCLUSTERED, canary="smoke")
FLEET = {"cluster": "eu", "job": "comfywatch-gpu"}
FLEET_DEGRADED = _alert("ComfyUIFleetDegraded", "critical", **FLEET)
FLEET_TARGET_DOWN = _alert("ComfyUIDown", "warning", **FLEET, instance="cw:9877", target="gpu-1")
OTHER_FLEET_TARGET_DOWN = {**FLEET_TARGET_DOWN, "cluster": "us"}
TLS_CRITICAL = _alert("ComfyUITLSCertExpiringSoon", "critical", **EU_STUDIO)
TLS_WARNING = _alert("ComfyUITLSCertExpiringSoon", "warning", **EU_STUDIO)

INHIBITED = [CANARY_SLOW, UNCLUSTERED_CANARY_SLOW, FLEET_TARGET_DOWN, TLS_WARNING]
NOT_INHIBITED = [CANARY_FAILING, CANARY_SLOW_OTHER_CLUSTER, CANARY_SLOW_OTHER_CANARY, UNCLUSTERED_CANARY_FAILING,
                 FLEET_DEGRADED, OTHER_FLEET_TARGET_DOWN, TLS_CRITICAL]


def _label_id(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


@pytest.fixture(scope="module")
def inhibited_by(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[str]]]:
    """Post every alert above to an Alertmanager running the rendered inhibit rules; map each alert (by its
    labels) to the fingerprints inhibiting it, once every alert that should be inhibited is."""
    workdir = tmp_path_factory.mktemp("alertmanager")
    with run_alertmanager(workdir, {**AMTOOL_CONFIG, "inhibit_rules": RULES}) as alertmanager:
        posted = alertmanager.http.post("/api/v2/alerts", json=[{"labels": labels} for labels in
                                                                 INHIBITED + NOT_INHIBITED])
        posted.raise_for_status()

        def settled() -> dict[str, list[str]] | None:
            held = _inhibitions(alertmanager)
            return held if all(held.get(_label_id(labels)) for labels in INHIBITED) else None

        try:
            held = wait_until(settled, timeout=30, what="the expected alerts inhibited")
        except TimeoutError:
            held = _inhibitions(alertmanager)  # the per-alert tests name the ones left uninhibited
        yield held


def _inhibitions(alertmanager: AlertmanagerServer) -> dict[str, list[str]]:
    return {_label_id(alert["labels"]): list(alert["status"]["inhibitedBy"])
            for alert in alertmanager.alerts(active=False)}


@pytest.mark.e2e
@pytest.mark.parametrize("labels", INHIBITED, ids=_label_id)
def test_alertmanager_inhibits(labels: dict[str, str], inhibited_by: dict[str, list[str]]) -> None:
    assert inhibited_by[_label_id(labels)]


@pytest.mark.e2e
@pytest.mark.parametrize("labels", NOT_INHIBITED, ids=_label_id)
def test_alertmanager_leaves_other_clusters_canaries_and_the_sources_alone(
    labels: dict[str, str], inhibited_by: dict[str, list[str]]
) -> None:
    assert inhibited_by[_label_id(labels)] == []
