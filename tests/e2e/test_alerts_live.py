"""The alert rules and dashboards against a real Prometheus and Alertmanager.

A fake exporter (aiohttp in a thread) serves exposition the test controls; Prometheus scrapes five jobs:

- ``comfywatch-healthy`` (cluster ``us``): a GPU box, a CPU-only laptop and a Cloud account, all fine: never
  alert.
- ``comfywatch-sick`` (cluster ``eu``): ``down`` and ``down-too`` (unreachable) and ``sick`` (every failure at
  once, Cloud included), so the fleet is degraded too; its daemon metrics report a failed config reload.
- ``comfywatch-flip``: target ``flip``, healthy until a test takes it down and back up.
- ``comfywatch-dead``: a port nobody listens on, so ``up == 0`` (ComfywatchDown).
- ``comfywatch-probe``: the exporter's ``/probe`` for ``probe-a`` and ``probe-b``, relabelled as a user's
  blackbox-style job would be.

No job is named plain ``comfywatch``, the job ComfywatchAbsent watches by default, so it fires.

Prometheus loads a copy of alerts/comfywatch.rules.yml with every ``for:`` cut to 1s (the real
durations are promtool's job) and sends alerts to a real Alertmanager, which posts them to a webhook
receiver in the test.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from comfywatch.errors import Reason
from tests.alerts.rulefile import alert_names, all_rules, load_rules
from tests.dashboards.catalogue import iter_targets, load_dashboards
from tests.dashboards.promql import substitute_grafana_macros
from tests.e2e.promstack import (
    ALERTMANAGER_BINARIES,
    PROMETHEUS_BINARIES,
    PROMTOOL_BINARIES,
    AlertmanagerServer,
    ExpositionServer,
    PrometheusServer,
    WebhookReceiver,
    alertmanager_config,
    async_wait_until,
    probe_scrape_config,
    prometheus_config,
    require_binary,
    run_alertmanager,
    run_prometheus,
    shorten_for,
    static_scrape_config,
    wait_until,
    write_rules,
)
from tests.ports import closed_port

pytestmark = pytest.mark.e2e

# Generous: the first scrape alone comes ~5.6 s after Prometheus starts (it applies discovery on a 5 s tick).
DEADLINE = 60.0

HEALTHY_TARGETS = ("studio", "laptop", "cloud-ok")
ENDPOINTS = ("system_stats", "queue", "history", "prompt", "billing_balance")
JOB_REASONS = (Reason.EXECUTION_ERROR, Reason.OOM, Reason.INTERRUPTED, Reason.LOST)
CHECKS = ("system", "queue", "jobs", "canary", "billing")
PHASES = ("dns", "connect", "tls", "processing", "transfer")
BUCKETS = (0.005, 0.05, 0.5, 5.0, 60.0)
DAY = 86400.0

# (observation count, sum of observations, cumulative count per bucket upper bound)
Histogram = tuple[float, float, dict[float, float]]


# --------------------------------------------------------------------------------------------------
# Exposition the fake exporter serves.


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Exposition:
    """Builds Prometheus text exposition (format 0.0.4), one # TYPE line per family."""

    def __init__(self) -> None:
        """Start empty."""
        self._families: dict[str, tuple[str, list[str]]] = {}

    def _sample(self, family: str, kind: str, name: str, value: float, labels: dict[str, str]) -> None:
        _, lines = self._families.setdefault(family, (kind, []))
        rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{rendered}}} {value!r}")

    def gauge(self, name: str, value: float, **labels: str) -> None:
        """Add a gauge sample."""
        self._sample(name, "gauge", name, value, labels)

    def counter(self, name: str, value: float, **labels: str) -> None:
        """Add a counter sample (``name`` ends in _total)."""
        self._sample(name, "counter", name, value, labels)

    def histogram(self, name: str, data: Histogram, labels: dict[str, str]) -> None:
        """Add a histogram from (count, sum, cumulative count per upper bound)."""
        count, sum_, per_bucket = data
        for bound in BUCKETS:
            self._sample(name, "histogram", f"{name}_bucket", per_bucket.get(bound, 0), {**labels, "le": str(bound)})
        self._sample(name, "histogram", f"{name}_bucket", count, {**labels, "le": "+Inf"})
        self._sample(name, "histogram", f"{name}_sum", sum_, labels)
        self._sample(name, "histogram", f"{name}_count", count, labels)

    def text(self) -> str:
        """The exposition document."""
        out: list[str] = []
        for family, (kind, lines) in self._families.items():
            out.append(f"# TYPE {family} {kind}")
            out.extend(lines)
        return "\n".join(out) + "\n"


def _fast_histogram(n: int) -> Histogram:
    """n observations of 40 ms."""
    return n, 0.04 * n, {b: n for b in BUCKETS if b >= 0.05}


def _slow_histogram(n: int) -> Histogram:
    """n observations of 45 s."""
    return n, 45.0 * n, {60.0: n}


def add_target(x: Exposition, name: str, *, kind: str, n: int, now: float, sick: bool, cpu: bool = False) -> None:
    """All comfyui_* (and, for kind="cloud", comfy_cloud_*) series of one target at scrape ``n``."""
    t = {"target": name}
    x.gauge("comfyui_up", 1, **t)
    x.gauge("comfyui_target_info", 1, **t, kind=kind, url=f"https://{name}.example")
    x.gauge("comfyui_info", 1, **t, version="0.3.64", python_version="3.12.3", pytorch_version="2.8.0", os="posix")
    x.gauge("comfyui_ram_total_bytes", 64e9, **t)
    x.gauge("comfyui_ram_free_bytes", 3e9 if sick else 32e9, **t)
    device = (
        {"device": "cpu", "type": "cpu"}
        if cpu
        else {"device": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": "cuda", "index": "0"}
    )
    total = 16e9 if cpu else 24e9
    # A CPU device reporting nearly full "VRAM" (it is RAM) must not alert.
    free = total * (0.01 if (sick or cpu) else 0.5)
    x.gauge("comfyui_device_vram_total_bytes", total, **t, **device)
    x.gauge("comfyui_device_vram_free_bytes", free, **t, **device)
    x.gauge("comfyui_device_torch_vram_total_bytes", 4e9, **t, **device)
    x.gauge("comfyui_device_torch_vram_free_bytes", 1e9, **t, **device)

    x.gauge("comfyui_queue_running", 0 if sick else 1, **t)
    x.gauge("comfyui_queue_pending", 7 if sick else 2, **t)
    x.gauge("comfyui_queue_running_seconds", 5000 if sick else 30, **t)
    x.gauge("comfyui_queue_oldest_pending_seconds", 4000 if sick else 60, **t)
    x.gauge("comfyui_queue_stalled", 1 if sick else 0, **t)
    x.gauge("comfyui_queue_worker_not_consuming", 1 if sick else 0, **t)
    for phase in PHASES:
        x.gauge("comfyui_http_phase_seconds", 0.002, **t, phase=phase)
    x.gauge("comfyui_tls_cert_not_after_timestamp_seconds", now + (2 if sick else 90) * DAY, **t)

    canary = {"canary": "preview-image"}
    x.gauge("comfyui_canary_success", 0 if sick else 1, **t, **canary)
    for phase, seconds in (("submit", 0.01), ("queue", 0.02), ("execute", 0.005), ("fetch", 0.003)):
        x.gauge("comfyui_canary_phase_seconds", seconds, **t, **canary, phase=phase)
    x.gauge("comfyui_canary_phase_seconds", 45.0 if sick else 0.04, **t, **canary, phase="total")
    x.gauge("comfyui_canary_server_execution_seconds", 0.005, **t, **canary)
    x.gauge("comfyui_canary_websocket_ok", 0 if sick else 1, **t, **canary)
    x.gauge("comfyui_canary_last_success_timestamp_seconds", now - (7200 if sick else 10), **t, **canary)
    # Runs are the successes (the duration histogram's count, n) plus the failures (n when sick).
    x.counter("comfyui_canary_runs_total", 2 * n if sick else n, **t, **canary)
    x.counter("comfyui_canary_skipped_total", 0, **t, **canary)
    for reason in Reason:
        failing = sick and reason is Reason.TIMEOUT
        x.counter("comfyui_canary_failures_total", n if failing else 0, **t, **canary, reason=reason.value)
    x.histogram("comfyui_canary_duration_seconds", _slow_histogram(n) if sick else _fast_histogram(n), {**t, **canary})

    x.counter("comfyui_jobs_total", 2 * n, **t)
    for reason in JOB_REASONS:
        failing = sick and reason in (Reason.EXECUTION_ERROR, Reason.OOM)
        x.counter("comfyui_job_failures_total", n if failing else 0, **t, reason=reason.value)
    x.histogram("comfyui_job_duration_seconds", _fast_histogram(2 * n), t)

    # Sick: queue answers 401, history 500, prompt 429 (rate limit, queue full) and 402.
    codes: dict[str, dict[str, int]] = {e: {"200": n} for e in ENDPOINTS}
    failures: dict[tuple[str, Reason], int] = {}
    if sick:
        codes["queue"] = {"401": n}
        codes["history"] = {"500": n}
        codes["prompt"] = {"429": 2 * n, "402": n}
        failures = {
            ("queue", Reason.AUTH): n,
            ("history", Reason.SERVER_ERROR): n,
            ("prompt", Reason.RATE_LIMITED): n,
            ("prompt", Reason.QUEUE_FULL): n,
            ("prompt", Reason.PAYMENT): n,
        }
    for endpoint in ENDPOINTS:
        for code, count in codes[endpoint].items():
            x.counter("comfyui_requests_total", count, **t, endpoint=endpoint, code=code)
        for reason in Reason:
            x.counter(
                "comfyui_request_failures_total",
                failures.get((endpoint, reason), 0),
                **t,
                endpoint=endpoint,
                reason=reason.value,
            )
        x.histogram("comfyui_request_duration_seconds", _fast_histogram(n), {**t, "endpoint": endpoint})

    for check in CHECKS:
        c = {**t, "check": check}
        x.gauge("comfywatch_check_duration_seconds", 0.05, **c)
        x.counter("comfywatch_check_overruns_total", n if (sick and check == "canary") else 0, **c)
        stale = sick and check == "queue"
        x.gauge("comfywatch_check_last_success_timestamp_seconds", now - 3600 if stale else now, **c)
    x.gauge("comfywatch_websocket_connected", 0 if sick else 1, **t)

    if kind == "cloud":
        # Sick: 4.5 USD and falling 1 mUSD per scrape (per second): gone in about 75 minutes.
        x.gauge("comfy_cloud_balance_usd", 4.5 - 0.001 * n if sick else 100.0, **t)
        x.gauge("comfy_cloud_effective_balance_usd", -1.0 if sick else 99.0, **t)
        x.gauge("comfy_cloud_has_funds", 0 if sick else 1, **t)
        x.gauge("comfy_cloud_subscription_active", 0 if sick else 1, **t)
        x.gauge(
            "comfy_cloud_subscription_info",
            1,
            **t,
            tier="STANDARD" if sick else "CREATOR",
            status="ended" if sick else "active",
        )
        x.gauge("comfy_cloud_max_concurrent_jobs", 1 if sick else 3, **t)
        x.gauge("comfy_cloud_jobs_stuck", 2 if sick else 0, **t)
        x.gauge("comfy_cloud_retry_after_seconds", 30 if sick else 0, **t)
        x.gauge("comfy_cloud_canary_runs_today", 24 if sick else 3, **t)


def add_down_target(x: Exposition, name: str) -> None:
    """A target comfywatch cannot reach: only up = 0 and its info."""
    x.gauge("comfyui_up", 0, target=name)
    x.gauge("comfyui_target_info", 1, target=name, kind="local", url=f"http://{name}.example:8188")


def add_catalog(x: Exposition, name: str, *, nodes_hash: str, broken: bool) -> None:
    """A local target of pool sdxl: its catalogue fingerprints, a watched workflow (invalid when broken) and the
    node packs that failed to import (ComfyUI's harmless builtin one always, a custom pack when broken)."""
    t = {"target": name, "pool": "sdxl"}
    x.gauge("comfyui_catalog_info", 1, **t, nodes_hash=nodes_hash, models_hash="m1")
    x.gauge("comfyui_workflow_valid", 0 if broken else 1, **t, workflow="txt2img")
    x.gauge("comfyui_custom_node_import_failures", 1, **t, pack="nodes_audio.py", kind="builtin")
    if broken:
        x.gauge("comfyui_workflow_problems", 1, **t, workflow="txt2img", type="value_not_in_list")
        x.gauge("comfyui_custom_node_import_failures", 1, **t, pack="ComfyUI-Impact-Pack", kind="custom")


def add_daemon(x: Exposition, *, now: float, reload_ok: bool, kinds: dict[str, int]) -> None:
    """The daemon's own comfywatch_* series."""
    x.gauge("comfywatch_build_info", 1, version="0.1.0")
    for kind, count in kinds.items():
        x.gauge("comfywatch_targets", count, kind=kind)
    x.gauge("comfywatch_config_last_reload_success", 1 if reload_ok else 0)
    x.gauge("comfywatch_config_last_reload_timestamp_seconds", now - 60)
    x.gauge("comfywatch_shard_info", 1, shard="0", shards="1")


def healthy_source() -> Callable[[], str]:
    """Exposition of the healthy job; counters grow by one step per scrape."""
    scrapes = itertools.count(1)

    def render() -> str:
        n, now, x = next(scrapes), time.time(), Exposition()
        add_target(x, "studio", kind="local", n=n, now=now, sick=False)
        add_target(x, "laptop", kind="local", n=n, now=now, sick=False, cpu=True)
        add_target(x, "cloud-ok", kind="cloud", n=n, now=now, sick=False)
        add_catalog(x, "studio", nodes_hash="n1", broken=False)
        add_catalog(x, "laptop", nodes_hash="n1", broken=False)
        add_daemon(x, now=now, reload_ok=True, kinds={"local": 2, "cloud": 1})
        return x.text()

    return render


def sick_source() -> Callable[[], str]:
    """Exposition of the sick job: one unreachable target and one with every failure at once."""
    scrapes = itertools.count(1)

    def render() -> str:
        n, now, x = next(scrapes), time.time(), Exposition()
        add_down_target(x, "down")
        add_down_target(x, "down-too")
        add_target(x, "sick", kind="cloud", n=n, now=now, sick=True)
        add_catalog(x, "sick", nodes_hash="n1", broken=True)
        add_catalog(x, "down", nodes_hash="n2", broken=False)
        add_daemon(x, now=now, reload_ok=False, kinds={"local": 2, "cloud": 1})
        return x.text()

    return render


@dataclass
class Switch:
    """Whether the flip target is up; flipped by a test while Prometheus scrapes."""

    up: bool = True


def flip_source(switch: Switch) -> Callable[[], str]:
    """Exposition of the flip job: a healthy target, or an unreachable one while ``switch.up`` is off."""
    scrapes = itertools.count(1)

    def render() -> str:
        n, now, x = next(scrapes), time.time(), Exposition()
        if switch.up:
            add_target(x, "flip", kind="local", n=n, now=now, sick=False)
        else:
            add_down_target(x, "flip")
        add_daemon(x, now=now, reload_ok=True, kinds={"local": 1})
        return x.text()

    return render


# --------------------------------------------------------------------------------------------------
# The stack.


@dataclass
class Stack:
    """What the tests talk to."""

    prometheus: PrometheusServer
    alertmanager: AlertmanagerServer
    webhook: WebhookReceiver
    switch: Switch
    prometheus_exporter_address: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Fake exporter + webhook + Alertmanager + Prometheus with the shortened rules, once per module."""
    require_binary(*PROMETHEUS_BINARIES)
    require_binary(*ALERTMANAGER_BINARIES)
    tmp = tmp_path_factory.mktemp("promstack")
    switch = Switch()
    exporter = ExpositionServer(
        {
            "/healthy": healthy_source(),
            "/sick": sick_source(),
            "/flip": flip_source(switch),
            # /probe output has no target label: the probe job's relabelling must add it.
            "/probe": "# TYPE comfyui_up gauge\ncomfyui_up 1\n",
        }
    )
    webhook = WebhookReceiver()
    with (
        exporter,
        webhook,
        run_alertmanager(tmp / "alertmanager", alertmanager_config(webhook.hook_url)) as am,
    ):
        rules = write_rules(tmp / "comfywatch.rules.yml", shorten_for(load_rules(), "1s"))
        config = prometheus_config(
            [
                static_scrape_config("comfywatch-healthy", [exporter.address], metrics_path="/healthy",
                                     labels={"cluster": "us"}),
                static_scrape_config("comfywatch-sick", [exporter.address], metrics_path="/sick",
                                     labels={"cluster": "eu"}),
                static_scrape_config("comfywatch-flip", [exporter.address], metrics_path="/flip"),
                static_scrape_config("comfywatch-dead", [f"127.0.0.1:{closed_port()}"]),
                probe_scrape_config("comfywatch-probe", exporter.address, ["probe-a", "probe-b"]),
            ],
            rule_files=[rules],
            alertmanagers=[am.address],
        )
        with run_prometheus(tmp / "prometheus", config) as prom:
            prom.wait_for_targets(jobs=["comfywatch-healthy", "comfywatch-sick", "comfywatch-flip"], timeout=DEADLINE)
            yield Stack(prom, am, webhook, switch, exporter.address)


@pytest.fixture(scope="module")
def firing(stack: Stack) -> list[dict[str, Any]]:
    """The active alerts once every alert name in the rules file is firing."""
    expected = set(alert_names())

    def all_firing() -> list[dict[str, Any]]:
        alerts = stack.prometheus.alerts()
        names = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
        return alerts if expected <= names else []

    try:
        return wait_until(all_firing, timeout=DEADLINE, interval=0.5, what="every alert firing")
    except TimeoutError:
        names = {a["labels"]["alertname"] for a in stack.prometheus.alerts() if a["state"] == "firing"}
        pytest.fail(f"never fired: {sorted(expected - names)}")


# --------------------------------------------------------------------------------------------------
# Rules.


def test_every_rule_expression_parses_in_prometheus(stack: Stack) -> None:
    """Each rule expression (the real file, unshortened) is accepted by Prometheus' query API."""
    problems = {}
    for rule in all_rules():
        body = stack.prometheus.query_response(rule["expr"])
        if body["status"] != "success":
            problems[rule.get("alert") or rule["record"]] = f"{body['errorType']}: {body['error']}"
    assert problems == {}


def test_query_api_rejects_bad_promql(stack: Stack) -> None:
    """The parse check is real: a malformed expression comes back as bad_data."""
    body = stack.prometheus.query_response("sum(rate(comfyui_jobs_total[5m])")
    assert body["status"] == "error"
    assert body["errorType"] == "bad_data"


def test_rules_evaluate_without_errors(stack: Stack, firing: list[dict[str, Any]]) -> None:
    """With every series present, no rule fails at evaluation (e.g. many-to-many matching)."""
    rules = [rule for group in stack.prometheus.rule_groups() for rule in group["rules"]]
    assert len(rules) == len(all_rules())
    broken = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert broken == {}


def test_every_alert_fires_from_a_matching_exposition(firing: list[dict[str, Any]]) -> None:
    """Every alert in the rules file reaches `firing` in real Prometheus, for the target that causes it."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for alert in firing:
        if alert["state"] == "firing":
            by_name.setdefault(alert["labels"]["alertname"], []).append(alert)
    assert {a["labels"]["target"] for a in by_name["ComfyUIDown"]} == {"down", "down-too"}
    assert {a["labels"]["severity"] for a in by_name["ComfyUIDown"]} == {"warning"}
    # One page for the fleet, carrying its routing labels and no target.
    assert [a["labels"] for a in by_name["ComfyUIFleetDegraded"]] == [
        {"alertname": "ComfyUIFleetDegraded", "job": "comfywatch-sick", "cluster": "eu", "severity": "critical"}
    ]
    assert {a["labels"]["job"] for a in by_name["ComfywatchDown"]} == {"comfywatch-dead"}
    assert [a["labels"] for a in by_name["ComfywatchAbsent"]] == [
        {"alertname": "ComfywatchAbsent", "job": "comfywatch", "severity": "critical"}
    ]
    assert {a["labels"]["target"] for a in by_name["ComfyUIRAMLow"]} == {"sick"}
    assert {a["labels"]["target"] for a in by_name["ComfyUIWebSocketLost"]} == {"sick"}
    assert {a["labels"]["target"] for a in by_name["ComfyUICanaryNotRunning"]} == {"sick"}
    assert {a["labels"]["severity"] for a in by_name["ComfyUITLSCertExpiringSoon"]} == {"warning", "critical"}
    for name, alerts in by_name.items():
        for alert in alerts:
            annotations = alert["annotations"]
            assert annotations["runbook_url"].endswith(f"docs/runbook.md#{name.lower()}")
            # Templates rendered: no unexpanded {{ ... }} and the target named.
            assert "{{" not in annotations["summary"] + annotations["description"]
            if "target" in alert["labels"]:
                assert alert["labels"]["target"] in annotations["description"]


def test_healthy_targets_raise_no_alert(stack: Stack, firing: list[dict[str, Any]]) -> None:
    """Healthy targets, even a CPU-only box whose "VRAM" is nearly full, have no pending or firing alert."""
    noisy = [
        (a["labels"]["alertname"], a["labels"].get("target"))
        for a in stack.prometheus.alerts()
        if a["labels"].get("job") == "comfywatch-healthy" or a["labels"].get("target") in HEALTHY_TARGETS
    ]
    assert noisy == []


def test_alert_reaches_alertmanager_and_webhook_then_resolves(stack: Stack, firing: list[dict[str, Any]]) -> None:
    """A target going down fires ComfyUIDown through Alertmanager to the webhook; coming back resolves it."""
    flip = {"alertname": "ComfyUIDown", "target": "flip"}
    stack.switch.up = False
    try:
        alert = stack.prometheus.wait_for_alert("ComfyUIDown", labels=flip, timeout=DEADLINE)
        assert alert["labels"]["severity"] == "warning"
        held = stack.alertmanager.wait_for_alert("ComfyUIDown", labels=flip, timeout=DEADLINE)
        assert held["status"]["state"] == "active"
        delivered = stack.webhook.wait_for("ComfyUIDown", status="firing", labels=flip, timeout=DEADLINE)
        assert delivered["annotations"]["runbook_url"].endswith("docs/runbook.md#comfyuidown")
        assert "flip" in delivered["annotations"]["summary"]
    finally:
        stack.switch.up = True
    stack.prometheus.wait_for_alert_gone("ComfyUIDown", labels=flip, timeout=DEADLINE)
    resolved = stack.webhook.wait_for("ComfyUIDown", status="resolved", labels=flip, timeout=DEADLINE)
    assert resolved["labels"]["job"] == "comfywatch-flip"


# --------------------------------------------------------------------------------------------------
# Dashboards.

DASHBOARD_QUERIES = [
    (f"{name}:{panel['title']}:{target['refId']}", substitute_grafana_macros(target["expr"]))
    for name, dashboard in load_dashboards().items()
    for panel, target in iter_targets(dashboard)
]


def test_every_dashboard_query_parses(stack: Stack) -> None:
    """Each panel query, macros replaced ($__rate_interval=1m, $target=.+), is valid PromQL to Prometheus."""
    problems = {}
    for label, expr in DASHBOARD_QUERIES:
        body = stack.prometheus.query_response(expr)
        if body["status"] != "success":
            problems[label] = f"{body['errorType']}: {body['error']}"
    assert problems == {}


def test_every_dashboard_query_returns_data(stack: Stack, firing: list[dict[str, Any]]) -> None:
    """With the exporter serving every metric, every panel query returns at least one series."""
    pending = dict(DASHBOARD_QUERIES)

    def drained() -> bool:
        for label, expr in list(pending.items()):
            if stack.prometheus.query(expr):
                del pending[label]
        return not pending

    try:
        wait_until(drained, timeout=DEADLINE, interval=0.5, what="data for every panel")
    except TimeoutError:
        pytest.fail(f"panels without data: {pending}")


def test_dashboard_variables_resolve(stack: Stack) -> None:
    """label_values() variables list the expected targets (Cloud dashboard: kind="cloud" only)."""
    found: dict[str, set[str]] = {}
    for name, dashboard in load_dashboards().items():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((?P<selector>.+), *(?P<label>\w+)\)", query)
            assert match, query
            selector = substitute_grafana_macros(match.group("selector"))
            values = stack.prometheus.label_values(match.group("label"), match=[selector])
            found[f"{name}:{variable['name']}"] = set(values)
    jobs = {"comfywatch-healthy", "comfywatch-sick", "comfywatch-flip", "comfywatch-dead", "comfywatch-probe"}
    for name in ("comfywatch-fleet.json", "comfywatch-target.json", "comfywatch-cloud.json"):
        assert found[f"{name}:cluster"] == {"us", "eu"}
        assert found[f"{name}:job"] == jobs
    assert found["comfywatch-cloud.json:target"] == {"cloud-ok", "sick"}
    assert {"studio", "laptop", "sick", "down"} <= found["comfywatch-fleet.json:target"]
    assert found["comfywatch-target.json:canary"] == {"preview-image"}


def test_exposition_is_parseable_by_promtool() -> None:
    """The fake exporter serves valid exposition (promtool check metrics): failures are the rules'."""
    promtool = require_binary(*PROMTOOL_BINARIES)
    for source in (healthy_source(), sick_source(), flip_source(Switch(up=False))):
        result = subprocess.run(
            [promtool, "check", "metrics"],
            input=source(),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        # `check metrics` lints HELP texts too; only real format errors matter here.
        assert "error while linting" not in result.stdout + result.stderr
        assert "text format parsing error" not in result.stdout + result.stderr


# --------------------------------------------------------------------------------------------------
# The helpers themselves.


def test_probe_job_labels_each_series_with_its_target(stack: Stack) -> None:
    """probe_scrape_config scrapes /probe once per target and adds the `target` label /probe lacks."""
    result = stack.prometheus.wait_for_data('comfyui_up{job="comfywatch-probe"}', timeout=DEADLINE)
    assert {r["metric"]["target"] for r in result} == {"probe-a", "probe-b"}
    assert {r["metric"]["instance"] for r in result} == {stack.prometheus_exporter_address}


def test_reload_keeps_prometheus_serving(stack: Stack) -> None:
    """POST /-/reload (lifecycle API) succeeds and queries keep working."""
    stack.prometheus.reload()
    assert stack.prometheus.query("vector(1)")[0]["value"][1] == "1"


async def test_async_wait_until_polls_sync_and_async_probes() -> None:
    """async_wait_until returns the first truthy result of sync or async probes and times out otherwise."""
    calls = itertools.count(1)
    assert await async_wait_until(lambda: next(calls) >= 3 and "done", timeout=5, interval=0.01) == "done"

    async def ready() -> int:
        return 7

    assert await async_wait_until(ready, timeout=5) == 7
    with pytest.raises(TimeoutError, match="never"):
        await async_wait_until(lambda: None, timeout=0.05, interval=0.01, what="never")
