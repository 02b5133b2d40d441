"""A fleet of three ComfyUI servers with two down, end to end: one page for the fleet, warnings per target.

One module-scoped stack: ``comfywatch simulate --targets 3`` (``/t/0``..``/t/2``), one ``comfywatch run``
polling them every second, one Prometheus scraping it with a static ``cluster`` label and loading the mixin
rendered with short ``for:`` (ComfyUIFleetDegraded 1s, ComfyUIDown 10s: the fleet alert reaches Alertmanager
first, so its inhibition of the per-target alerts applies from their first notification), and one
Alertmanager loading the rendered alertmanager-inhibit.yml and posting to a webhook receiver in the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TIMEOUT_FACTOR
from tests.e2e.alerts_daemon_support import admin_post
from tests.e2e.procs import Proc, comfywatch_run, simulate
from tests.e2e.promstack import (
    ALERTMANAGER_BINARIES,
    PROMETHEUS_BINARIES,
    AlertmanagerServer,
    PrometheusServer,
    WebhookReceiver,
    alertmanager_config,
    load_yaml,
    prometheus_config,
    require_binary,
    run_alertmanager,
    run_prometheus,
    static_scrape_config,
    wait_until,
)
from tests.mixin.render import render_mixin

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

JOB = "comfywatch"
CLUSTER = "eu"
DEADLINE = 60.0 * TIMEOUT_FACTOR
TARGETS = ("gpu-0", "gpu-1", "gpu-2")
SHORT_FOR = '{ alerts+: { ComfyUIFleetDegraded+: { "for": "1s" }, ComfyUIDown+: { "for": "10s" } } }'
FLEET_LABELS = {"alertname": "ComfyUIFleetDegraded", "cluster": CLUSTER, "job": JOB, "severity": "critical"}


@dataclass
class Fleet:
    """The simulator, the daemon's address and the monitoring stack."""

    simulator: Proc
    daemon_address: str
    prometheus: PrometheusServer
    alertmanager: AlertmanagerServer
    webhook: WebhookReceiver

    def set_down(self, target: str, down: bool) -> None:
        """Switch the simulator's ``down`` fault of one target."""
        assert self.simulator.admin_url is not None
        admin_post(self.simulator.admin_url, "/_sim/faults",
                   {"target": TARGETS.index(target), "faults": ["down"] if down else []})


def _daemon_config(state_dir: Path, simulator_url: str) -> str:
    lines = [f'state_dir = "{state_dir}"', "[defaults]", 'interval = "1s"', 'timeout = "900ms"']
    for index, name in enumerate(TARGETS):
        lines += ["[[targets]]", f'name = "{name}"', f'url = "{simulator_url}/t/{index}"',
                  "  [targets.canary]", "  enabled = false"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Simulator, daemon, webhook, Alertmanager (rendered inhibitions) and Prometheus (rendered rules), all up."""
    require_binary(*PROMETHEUS_BINARIES)
    require_binary(*ALERTMANAGER_BINARIES)
    tmp = tmp_path_factory.mktemp("fleet")
    webhook = WebhookReceiver()
    rendered = render_mixin(tmp / "mixin", SHORT_FOR) / "alerts"
    inhibit_rules = load_yaml(rendered / "alertmanager-inhibit.yml")["inhibit_rules"]
    with (
        simulate(tmp, "--targets", str(len(TARGETS))) as simulator,
        comfywatch_run(tmp, _daemon_config(tmp / "state", simulator.url)) as daemon,
        webhook,
        run_alertmanager(tmp / "alertmanager",
                         {**alertmanager_config(webhook.hook_url), "inhibit_rules": inhibit_rules}) as am,
    ):
        address = daemon.url.removeprefix("http://")
        config = prometheus_config([static_scrape_config(JOB, [address], labels={"cluster": CLUSTER})],
                                   rule_files=[rendered / "comfywatch.rules.yml"], alertmanagers=[am.address])
        with run_prometheus(tmp / "prometheus", config) as prom:
            wait_until(lambda: {r["metric"]["target"] for r in prom.query("comfyui_up == 1")} == set(TARGETS),
                       timeout=DEADLINE, what="every target polled up")
            yield Fleet(simulator, address, prom, am, webhook)


def _active(prom: PrometheusServer, alertname: str) -> list[dict[str, Any]]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] == alertname]


def _firing_fingerprints(webhook: WebhookReceiver, alertname: str) -> set[str]:
    return {a["fingerprint"] for note in webhook.notifications() for a in note["alerts"]
            if a["status"] == "firing" and a["labels"]["alertname"] == alertname}


def test_two_of_three_down_page_once_for_the_fleet(fleet: Fleet) -> None:
    """Two of three targets down: one critical ComfyUIFleetDegraded (cluster and job, no target) reaches the
    webhook, the two ComfyUIDown are warnings that Alertmanager inhibits; one target back resolves the fleet
    alert and lets the remaining ComfyUIDown through."""
    prom, am, webhook = fleet.prometheus, fleet.alertmanager, fleet.webhook
    assert _active(prom, "ComfyUIFleetDegraded") == []
    down = TARGETS[1:]
    try:
        for target in down:
            fleet.set_down(target, True)
        prom.wait_for_alert("ComfyUIFleetDegraded", timeout=DEADLINE)

        def both_down() -> list[dict[str, Any]]:
            found = [a for a in _active(prom, "ComfyUIDown") if a["state"] == "firing"]
            return found if len(found) == len(down) else []

        per_target = wait_until(both_down, timeout=DEADLINE, what="ComfyUIDown firing for both down targets")
        assert {a["labels"]["target"] for a in per_target} == set(down)
        assert {a["labels"]["severity"] for a in per_target} == {"warning"}
        assert {a["labels"]["cluster"] for a in per_target} == {CLUSTER}
        assert [a["labels"] for a in _active(prom, "ComfyUIFleetDegraded")] == [FLEET_LABELS]

        delivered = webhook.wait_for("ComfyUIFleetDegraded", labels=FLEET_LABELS, timeout=DEADLINE)
        assert delivered["annotations"]["summary"] == f"ComfyUI fleet {JOB} in cluster {CLUSTER} is degraded"

        def inhibited() -> list[dict[str, Any]]:
            held = [a for a in am.alerts(active=False) if a["labels"]["alertname"] == "ComfyUIDown"]
            return held if len(held) == len(down) and all(a["status"]["inhibitedBy"] for a in held) else []

        wait_until(inhibited, timeout=DEADLINE, what="both ComfyUIDown inhibited in Alertmanager")
        assert webhook.find("ComfyUIDown") is None
        assert len(_firing_fingerprints(webhook, "ComfyUIFleetDegraded")) == 1

        fleet.set_down(down[0], False)
        prom.wait_for_alert_gone("ComfyUIFleetDegraded", timeout=DEADLINE)
        webhook.wait_for("ComfyUIFleetDegraded", status="resolved", labels=FLEET_LABELS, timeout=DEADLINE)
        still_down = webhook.wait_for("ComfyUIDown", labels={"target": down[1]}, timeout=DEADLINE)
        assert still_down["labels"]["severity"] == "warning"
        assert still_down["labels"]["cluster"] == CLUSTER
        assert _firing_fingerprints(webhook, "ComfyUIDown") == {still_down["fingerprint"]}
    finally:
        for target in down:
            fleet.set_down(target, False)
    prom.wait_for_alert_gone("ComfyUIDown", timeout=DEADLINE)
    assert len(_firing_fingerprints(webhook, "ComfyUIFleetDegraded")) == 1
