"""ComfyUIFleetDegraded with a per-target label added by relabelling (`host`): by default the label splits
the fleet into fleets of one that never fire; listed in perTargetLabels, the fleet is whole again and fires once."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.promstack import PROMTOOL_BINARIES, require_binary, write_yaml
from tests.mixin.render import render_mixin

FIRING = [{"labels": 'ALERTS{alertname="ComfyUIFleetDegraded", alertstate="firing", cluster="eu", '
                     'job="comfywatch", severity="critical"}', "value": 1}]


def _up(target: str, host: str, values: str) -> dict[str, str]:
    return {"series": f'comfyui_up{{job="comfywatch", cluster="eu", instance="cw:9877", target="{target}", '
                      f'host="{host}"}}', "values": values}


@pytest.mark.parametrize(("config", "expected"), [
    ("{}", []),
    ('{alerts+: {ComfyUIFleetDegraded+: {perTargetLabels: "target, instance, host"}}}', FIRING),
], ids=["host-splits-the-fleet", "host-listed-as-per-target"])
def test_per_target_labels_decide_what_a_fleet_is(tmp_path: Path, config: str, expected: list[Any]) -> None:
    rules_file = render_mixin(tmp_path, config) / "alerts" / "comfywatch.rules.yml"
    tests = write_yaml(tmp_path / "fleet_test.yml", {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [{
            "name": "two of three targets down, each target on its own host",
            "interval": "1m",
            "input_series": [_up("a", "h1", "0x10"), _up("b", "h2", "0x10"), _up("c", "h3", "1x10")],
            "promql_expr_test": [{"expr": 'ALERTS{alertname="ComfyUIFleetDegraded"}', "eval_time": "10m",
                                  "exp_samples": expected}],
        }],
    })
    promtool = require_binary(*PROMTOOL_BINARIES)
    result = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
