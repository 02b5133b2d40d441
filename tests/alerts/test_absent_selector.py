"""ComfywatchAbsent with an overridden comfywatchAbsentSelector: the alert carries the selector's labels, the
cluster included, so it routes like the alerts of the comfywatch it misses."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.alerts.rulefile import alerting_rules
from tests.e2e.promstack import PROMTOOL_BINARIES, require_binary, write_yaml
from tests.mixin.render import render_mixin

SELECTOR_OVERRIDE = '{comfywatchAbsentSelector: "job=\\"comfywatch\\", cluster=\\"eu\\""}'


def _expected_annotations(rule: dict[str, Any]) -> dict[str, str]:
    """The rendered annotations as Alertmanager would receive them (absent() reports the value 1)."""
    expanded = {name: text.replace("{{ $labels.job }}", "comfywatch").replace("{{ $value }}", "1")
                for name, text in rule["annotations"].items()}
    assert not any("{{" in text for text in expanded.values()), expanded
    return expanded


def test_comfywatch_absent_carries_the_cluster_of_its_selector(tmp_path: Path) -> None:
    rules_file = render_mixin(tmp_path, SELECTOR_OVERRIDE) / "alerts" / "comfywatch.rules.yml"
    absent = next(rule for rule in alerting_rules(rules_file) if rule["alert"] == "ComfywatchAbsent")
    assert 'cluster="eu"' in absent["annotations"]["description"]
    firing = [{"exp_labels": {"severity": "critical", "job": "comfywatch", "cluster": "eu"},
               "exp_annotations": _expected_annotations(absent)}]
    tests = write_yaml(tmp_path / "absent_test.yml", {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "only another cluster's comfywatch is scraped",
                "interval": "1m",
                "input_series": [{"series": 'up{job="comfywatch", cluster="us", instance="cw:9877"}',
                                  "values": "1x10"}],
                "alert_rule_test": [{"eval_time": "10m", "alertname": "ComfywatchAbsent", "exp_alerts": firing}],
            },
            {
                "name": "the selected cluster's comfywatch is scraped, even while down",
                "interval": "1m",
                "input_series": [{"series": 'up{job="comfywatch", cluster="eu", instance="cw:9877"}',
                                  "values": "0x10"}],
                "alert_rule_test": [{"eval_time": "10m", "alertname": "ComfywatchAbsent", "exp_alerts": []}],
            },
        ],
    })
    promtool = require_binary(*PROMTOOL_BINARIES)
    result = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
