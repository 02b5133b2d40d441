"""docs/alerts.md: its jsonnet examples and its render.py command, run as written, render the overrides they
show; its alert table states the defaults of the committed rules and of mixin/config.libsonnet, and its
inhibition and recording rules tables what is rendered."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import _jsonnet
import pytest
import yaml

from tests.alerts.rulefile import ALERTS_DOC, REPO, alerting_rules, all_rules, recorded_names
from tests.e2e.promstack import PROMTOOL_BINARIES, require_binary
from tests.mixin.render import render_mixin

# jsonnet's std.manifestJsonEx renders the dashboards in pure jsonnet: 30-90 s on two busy cores, past the
# suite's 120 s default once the machine is loaded.
pytestmark = pytest.mark.timeout(600)

OVERRIDDEN = {"ComfyUIDown", "ComfyUIQueueBacklog", "ComfyCloudCreditsLow", "ComfyUIFleetDegraded"}


def _doc_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", ALERTS_DOC.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)


def _by_name(rules: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Alerting rules by name; the critical ComfyUITLSCertExpiringSoon under a name of its own."""
    return {rule["alert"] + ("Critical" if rule["alert"] == "ComfyUITLSCertExpiringSoon"
                             and rule["labels"]["severity"] == "critical" else ""): rule for rule in rules}


def _evaluate_jsonnet_example(index: int, tmp_path: Path) -> dict[str, str]:
    """The files the doc's jsonnet block number *index* writes with ``jsonnet -J vendor -m``, this repository
    vendored as ``vendor/comfywatch``."""
    vendor = tmp_path / "vendor"
    vendor.mkdir(exist_ok=True)
    if not (vendor / "comfywatch").exists():
        (vendor / "comfywatch").symlink_to(REPO, target_is_directory=True)
    files: dict[str, str] = json.loads(_jsonnet.evaluate_snippet(
        f"example-{index}.jsonnet", _doc_blocks("jsonnet")[index], jpathdir=[str(vendor)]))
    return files


def _promtool_check_rules(path: Path) -> None:
    promtool = require_binary(*PROMTOOL_BINARIES)
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_jsonnet_example_renders_its_overrides(tmp_path: Path) -> None:
    files = _evaluate_jsonnet_example(0, tmp_path)
    assert sorted(files) == sorted(["comfywatch.rules.yml", "alertmanager-inhibit.yml"]
                                   + [path.name for path in (REPO / "dashboards").glob("*.json")])
    rules_file = tmp_path / "comfywatch.rules.yml"
    rules_file.write_text(files["comfywatch.rules.yml"], encoding="utf-8")

    rendered = _by_name(alerting_rules(rules_file))
    assert rendered["ComfyUIDown"]["for"] == "10m"
    assert rendered["ComfyUIQueueBacklog"]["expr"].strip().endswith("> 3600")
    assert rendered["ComfyCloudCreditsLow"]["labels"]["severity"] == "critical"
    assert rendered["ComfyCloudCreditsLow"]["expr"].strip().endswith("< 20")
    assert "below 20 USD" in rendered["ComfyCloudCreditsLow"]["annotations"]["summary"]
    assert ">= 0.3" in rendered["ComfyUIFleetDegraded"]["expr"]
    assert ">= 5" in rendered["ComfyUIFleetDegraded"]["expr"]
    assert "$labels.region" in rendered["ComfyUIFleetDegraded"]["annotations"]["summary"]
    # `+:` merges: what the example leaves alone keeps its default.
    defaults = _by_name(alerting_rules())
    for name, rule in rendered.items():
        if name not in OVERRIDDEN:
            assert (rule["for"], rule["labels"]) == (defaults[name]["for"], defaults[name]["labels"]), name
        assert rule["annotations"]["runbook_url"] == f"https://wiki.example.com/runbooks/comfywatch#{rule['alert'].lower()}"
    assert rendered["ComfywatchAbsent"]["expr"] == 'absent(up{job="comfywatch-prod"})'
    assert all('job=~"comfywatch-prod.*"' in rule["expr"] for name, rule in rendered.items()
               if name != "ComfywatchAbsent")

    inhibit = yaml.safe_load(files["alertmanager-inhibit.yml"])["inhibit_rules"]
    assert inhibit
    assert all(rule["equal"][0] == "region" for rule in inhibit)

    _promtool_check_rules(rules_file)


def test_the_second_render_example_covers_its_one_target(tmp_path: Path) -> None:
    """The per-target render: every rule selects that target, its threshold is its own, ComfywatchAbsent is
    left out, and every other alert is still there."""
    (rules_text,) = _evaluate_jsonnet_example(1, tmp_path).values()
    rules_file = tmp_path / "batch-farm.rules.yml"
    rules_file.write_text(rules_text, encoding="utf-8")
    assert all('target="batch-farm"' in rule["expr"] for rule in all_rules(rules_file))
    rendered = _by_name(alerting_rules(rules_file))
    assert set(rendered) == set(_by_name(alerting_rules())) - {"ComfywatchAbsent"}
    assert rendered["ComfyUIQueueBacklog"]["expr"].strip().endswith("> 14400")
    _promtool_check_rules(rules_file)


def test_the_render_command_renders_its_override(tmp_path: Path) -> None:
    (command,) = [line for block in _doc_blocks("sh") for line in block.splitlines() if "render.py --out" in line]
    arguments = shlex.split(command)
    assert arguments[:4] == ["python", "mixin/render.py", "--out", "my-monitoring"]
    assert arguments[4] == "--config"
    out = render_mixin(tmp_path, arguments[5])
    rendered = _by_name(alerting_rules(out / "alerts" / "comfywatch.rules.yml"))
    assert rendered["ComfyUIDown"]["for"] == "10m"
    assert rendered["ComfyUIQueueStalled"]["for"] == "5m"
    inhibit = yaml.safe_load((out / "alerts" / "alertmanager-inhibit.yml").read_text(encoding="utf-8"))
    assert {rule["equal"][0] for rule in inhibit["inhibit_rules"]} == {"region"}


def test_the_alert_table_states_the_committed_defaults() -> None:
    """Each row's severity and `for` are those of the committed rules (two values for the two TLS rules)."""
    rows = re.findall(r"^\| `(\w+)` \| ([a-z /]+) \| ([0-9smhd /]+) \|", ALERTS_DOC.read_text(encoding="utf-8"),
                      re.MULTILINE)
    documented = {name: (severity, duration) for name, severity, duration in rows}
    committed: dict[str, tuple[list[str], list[str]]] = {}
    for rule in alerting_rules():
        severities, durations = committed.setdefault(rule["alert"], ([], []))
        severities.append(rule["labels"]["severity"])
        durations.append(rule["for"])
    assert documented == {name: (" / ".join(severities), " / ".join(durations))
                          for name, (severities, durations) in committed.items()}


def test_the_every_for_override_shortens_every_alert(tmp_path: Path) -> None:
    (override,) = re.findall(r"`(\{ alerts: std\.mapWithKey\(.*?\) \})`", ALERTS_DOC.read_text(encoding="utf-8"),
                             re.DOTALL)
    rules = alerting_rules(render_mixin(tmp_path, " ".join(override.split())) / "alerts" / "comfywatch.rules.yml")
    assert len(rules) == len(alerting_rules())
    assert {rule["for"] for rule in rules} == {"1m"}


def _table_rows(section: str) -> list[list[str]]:
    """The cells of each row of the Markdown tables under ``## <section>`` (escaped pipes unescaped)."""
    match = re.search(rf"^## {section}\n(.*?)(?=^## |\Z)", ALERTS_DOC.read_text(encoding="utf-8"),
                      re.MULTILINE | re.DOTALL)
    assert match, section
    return [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            for line in match.group(1).splitlines() if line.startswith("| `")]


def _jsonnet_literal(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"'{value}'" if isinstance(value, str) else str(value)


def test_the_alert_table_states_every_field_of_the_config() -> None:
    """Each row's Fields are exactly the thresholds and windows of its _config.alerts entries, with their
    defaults (the two TLS rules' entries separated by ' / ')."""
    config: dict[str, dict[str, Any]] = json.loads(_jsonnet.evaluate_snippet(
        "config.jsonnet", "(import 'mixin/config.libsonnet')._config.alerts", jpathdir=[str(REPO)]))
    documented: dict[str, dict[str, str]] = {}
    for cells in _table_rows("The alerts"):
        name = cells[0].strip("`")
        entries = [name, name + "Critical"] if " / " in cells[-1] else [name]
        for entry, group in zip(entries, cells[-1].split(" / ") if cells[-1] else [""], strict=True):
            documented[entry] = dict(re.findall(r"`(\w+): ([^`]+)`", group))
    assert documented == {entry: {field: _jsonnet_literal(value) for field, value in fields.items()
                                  if field not in {"for", "severity"}}
                          for entry, fields in config.items()}


def _matched(matchers: list[str]) -> tuple[set[str], set[str]]:
    """The alert names and severities an Alertmanager matcher list accepts (``=`` or an alternation)."""
    values: dict[str, set[str]] = {"alertname": set(), "severity": set()}
    for matcher in matchers:
        match = re.fullmatch(r'(\w+)=~?"([^"]*)"', matcher)
        assert match, matcher
        values[match.group(1)] |= set(match.group(2).split("|"))
    return values["alertname"], values["severity"]


def _documented_side(cell: str) -> tuple[set[str], set[str]]:
    return set(re.findall(r"`(\w+)`", cell)), set(re.findall(r"\((critical|warning)\)", cell))


def test_the_inhibition_table_states_the_rendered_rules() -> None:
    """Each row of the Inhibitions table is one rendered inhibit rule, in order: the source alert (and
    severity), the alerts it silences (and severity), and the equal labels."""
    documented = [(_documented_side(source), _documented_side(silenced), equal.split(", "))
                  for source, silenced, equal in _table_rows("Inhibitions")]
    inhibit = yaml.safe_load((REPO / "alerts" / "alertmanager-inhibit.yml").read_text(encoding="utf-8"))
    assert documented == [(_matched(rule["source_matchers"]), _matched(rule["target_matchers"]), rule["equal"])
                          for rule in inhibit["inhibit_rules"]]


def test_the_recording_rules_table_lists_every_recorded_series() -> None:
    """The Recording rules table names each series the committed rules record, and no other."""
    assert {cells[0].strip("`") for cells in _table_rows("Recording rules")} == recorded_names()
