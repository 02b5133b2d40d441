"""Tests for the /metrics text: comfywatch.export.exposition (renderer), comfywatch.export.collector (families),
comfywatch.export.metrics.

The output is checked with both of prometheus_client's parsers and with ``promtool check metrics``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from comfywatch import __version__
from comfywatch.errors import JOB_REASONS, TRANSPORT_REASONS, Reason
from comfywatch.export import metrics as m
from comfywatch.export.collector import DaemonInfo, collect, metrics_body
from comfywatch.export.exposition import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    Body,
    Family,
    MetricDef,
    choose_format,
    column_lines,
    escape,
    labels_text,
    render,
)
from comfywatch.parse.phases import PhaseTimes
from comfywatch.parse.queue import parse_queue
from comfywatch.parse.system import parse_system_stats
from comfywatch.parse.text import sanitize
from comfywatch.state import TargetState
from comfywatch.state.trackers import QueueTracker
from tests.fixtures import load_json

NASTY = 'a "quoted" \\ back\\slash\nnew line'
NOW = 1_795_641_200.0
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

#: Metric names docs/metrics.md promises (dashboards and alert rules use them).
PROMISED_NAMES = {
    "comfyui_up",
    "comfyui_target_info",
    "comfyui_info",
    "comfyui_ram_total_bytes",
    "comfyui_ram_free_bytes",
    "comfyui_device_vram_total_bytes",
    "comfyui_device_vram_free_bytes",
    "comfyui_device_torch_vram_total_bytes",
    "comfyui_device_torch_vram_free_bytes",
    "comfyui_queue_running",
    "comfyui_queue_pending",
    "comfyui_queue_running_seconds",
    "comfyui_queue_oldest_pending_seconds",
    "comfyui_queue_stalled",
    "comfyui_jobs_total",
    "comfyui_job_failures_total",
    "comfyui_job_duration_seconds",
    "comfyui_request_duration_seconds",
    "comfyui_requests_total",
    "comfyui_request_failures_total",
    "comfyui_http_phase_seconds",
    "comfyui_tls_cert_not_after_timestamp_seconds",
    "comfyui_canary_success",
    "comfyui_canary_runs_total",
    "comfyui_canary_failures_total",
    "comfyui_canary_skipped_total",
    "comfyui_canary_phase_seconds",
    "comfyui_canary_duration_seconds",
    "comfyui_canary_last_success_timestamp_seconds",
    "comfy_cloud_balance_usd",
    "comfy_cloud_effective_balance_usd",
    "comfy_cloud_subscription_active",
    "comfy_cloud_has_funds",
    "comfy_cloud_subscription_info",
    "comfy_cloud_max_concurrent_jobs",
    "comfy_cloud_retry_after_seconds",
    "comfy_cloud_canary_runs_today",
    "comfywatch_build_info",
    "comfywatch_check_duration_seconds",
    "comfywatch_check_overruns_total",
    "comfywatch_targets",
    "comfywatch_websocket_connected",
    "comfywatch_config_last_reload_success",
    "comfywatch_config_last_reload_timestamp_seconds",
    "comfywatch_check_last_success_timestamp_seconds",
}


def local_state(name: str = "studio-gpu-1", labels: dict[str, str] | None = None) -> TargetState:
    """A local target after a few polls of the recorded server, a canary run and some failures."""
    state = TargetState(name, "local", "http://127.0.0.1:8188", endpoints=["system_stats", "queue"], labels=labels,
                        full_detail=True)
    state.set_up(True)
    state.apply_system(
        parse_system_stats(load_json("system_stats.json")), PhaseTimes(None, None, None, 0.0027, 0.0001)
    )
    # What the network check found on its fresh connection to an http:// target: no TLS phase.
    state.network_phases = {"dns": 0.0004, "connect": 0.0002, "tls": None}
    tracker = QueueTracker(600, 4)
    tracker.observe(parse_queue(load_json("queue_busy.json")), NOW - 30)
    state.apply_queue(tracker.observe(parse_queue(load_json("queue_busy.json")), NOW))
    state.count_finished_job(None, 1.5)
    state.count_finished_job(Reason.OOM, 2.0)
    state.on_exchange("queue", 200, 0.003)
    state.on_exchange("system_stats", None, 5.0)
    state.on_failure("system_stats", Reason.TIMEOUT)
    canary = state.canary("preview-image")
    canary.success, canary.runs, canary.skipped = 1.0, 3, 1
    canary.failures[Reason.LOST] += 1
    canary.phases = {"submit": 0.002, "queue": 0.001, "execute": 0.004, "fetch": 0.001, "total": 0.008}
    canary.server_seconds, canary.websocket_ok, canary.last_success_ts = 0.007, 1.0, NOW
    canary.duration.observe(0.008)
    check = state.check("system")
    check.duration, check.overruns, check.last_success = 0.003, 0, NOW
    state.websocket_connected = 1.0
    state.tls_not_after = 1.9e9
    return state


def cloud_state() -> TargetState:
    """A Comfy Cloud target with billing data, rate limited for another 12 s."""
    state = TargetState("cloud", "cloud", "https://cloud.comfy.org", endpoints=["billing_balance"], full_detail=True)
    state.set_up(False, Reason.RATE_LIMITED)
    assert state.cloud is not None
    cloud = state.cloud
    cloud.balance_usd, cloud.effective_balance_usd, cloud.has_funds = 4.25, -0.5, 1.0
    cloud.subscription_active, cloud.subscription_tier, cloud.subscription_status = 1.0, "creator", "active"
    cloud.max_concurrent_jobs, cloud.jobs_stuck, cloud.retry_after_until = 3.0, 0.0, NOW + 12
    state.canary("preview-image").runs_today = 5
    return state


def states() -> list[TargetState]:
    return [local_state(), cloud_state()]


def rendered(openmetrics: bool, **kwargs: Any) -> str:
    families = collect(
        kwargs.pop("states", states()), daemon=kwargs.pop("daemon", DaemonInfo(reload_timestamp=NOW)), now=NOW, **kwargs
    )
    return render(families, openmetrics=openmetrics).decode("utf-8")


def samples(text: str, openmetrics: bool) -> list[tuple[str, dict[str, str], float]]:
    parse = parse_openmetrics if openmetrics else parse_text
    return [(s.name, s.labels, s.value) for family in parse(text) for s in family.samples]


def value_of(text: str, name: str, openmetrics: bool = False, **labels: str) -> float:
    found = [
        v for n, lab, v in samples(text, openmetrics) if n == name and all(lab.get(k) == x for k, x in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def promtool_or_skip() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI (apt-get install prometheus)")
        pytest.skip("promtool not installed")
    return path


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


class TestEscape:
    @pytest.mark.parametrize(
        ("raw", "escaped"),
        [
            ("plain", "plain"),
            ('say "hi"', 'say \\"hi\\"'),
            ("C:\\path", "C:\\\\path"),
            ("two\nlines", "two\\nlines"),
            ('\\"\n', '\\\\\\"\\n'),
            ("", ""),
            ("ünïcødé ✓", "ünïcødé ✓"),
        ],
    )
    def test_escape(self, raw: str, escaped: str) -> None:
        """Backslash, double quote and newline are escaped; everything else passes through."""
        assert escape(raw) == escaped

    def test_labels_text(self) -> None:
        """labels_text joins escaped pairs without braces, in the given order."""
        assert labels_text([("b", "1"), ("a", 'x"y')]) == 'b="1",a="x\\"y"'
        assert labels_text([]) == ""

    @given(st.text())
    def test_any_label_value_round_trips(self, value: str) -> None:
        """Any label value comes back unchanged from both prometheus_client parsers."""
        family = Family(MetricDef("comfyui_x", "gauge", "x", ("v",)))
        family.add(labels_text([("v", value)]), 1.0)
        for openmetrics in (False, True):
            ((_, labels, _),) = samples(render([family], openmetrics=openmetrics).decode(), openmetrics)
            assert labels == {"v": value}


class TestRender:
    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (1, "1"),
            (1.0, "1.0"),
            (0, "0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (-3, "-3"),
            (0.5, "0.5"),
            (25276510208, "25276510208"),
            (25276510208.0, "25276510208.0"),
            (2**70, "1180591620717411303424"),
            (1e20, "1e+20"),
            (1.25e-07, "1.25e-07"),
            (math.inf, "+Inf"),
            (-math.inf, "-Inf"),
            (math.nan, "NaN"),
        ],
    )
    def test_value_format(self, value: float, text: str) -> None:
        """Values render in a form both formats accept: ints exact, floats by repr, specials as +Inf/-Inf/NaN."""
        family = Family(MetricDef("comfyui_x", "gauge", "x"))
        family.add("", value)
        for openmetrics in (False, True):
            output = render([family], openmetrics=openmetrics).decode()
            assert f"comfyui_x {text}" in output.splitlines()
            ((_, _, parsed),) = samples(output, openmetrics)
            assert parsed == value or (math.isnan(value) and math.isnan(parsed))

    def test_none_values_are_skipped(self) -> None:
        """A None value (unknown) produces no sample rather than a fake 0."""
        family = Family(MetricDef("comfyui_x", "gauge", "x"))
        family.add('target="a"', None)
        assert family.samples == []

    def test_column_lines(self) -> None:
        """A column of series: None values have no line, every other value is spelled as format_value does."""
        heads = [f'comfyui_x{{t="{i}"}} ' for i in range(6)]
        values = [1, None, 0.25, float("inf"), float("nan"), -float("inf")]
        assert column_lines(heads, values).splitlines() == [
            'comfyui_x{t="0"} 1', 'comfyui_x{t="2"} 0.25', 'comfyui_x{t="3"} +Inf', 'comfyui_x{t="4"} NaN',
            'comfyui_x{t="5"} -Inf']
        assert column_lines(heads[:2], [None, None]) == ""

    def test_text_format_layout(self) -> None:
        """HELP, TYPE, then samples; info metrics are gauges in the text format; no # EOF."""
        counter = Family(MetricDef("comfyui_jobs_total", "counter", "Jobs."))
        counter.add('target="a"', 3)
        info = Family(MetricDef("comfyui_info", "info", "Build.", ("version",)))
        info.add('target="a",version="0.3.64"', 1)
        assert render([counter, info]).decode() == (
            "# HELP comfyui_jobs_total Jobs.\n"
            "# TYPE comfyui_jobs_total counter\n"
            'comfyui_jobs_total{target="a"} 3\n'
            "# HELP comfyui_info Build.\n"
            "# TYPE comfyui_info gauge\n"
            'comfyui_info{target="a",version="0.3.64"} 1\n'
        )

    def test_openmetrics_layout(self) -> None:
        """OpenMetrics: counter and info family names drop their suffix, samples keep it, and # EOF ends it."""
        counter = Family(MetricDef("comfyui_jobs_total", "counter", "Jobs."))
        counter.add("", 3)
        info = Family(MetricDef("comfywatch_build_info", "info", "Version.", ("version",)))
        info.add('version="1"', 1)
        assert render([counter, info], openmetrics=True).decode() == (
            "# HELP comfyui_jobs Jobs.\n"
            "# TYPE comfyui_jobs counter\n"
            "comfyui_jobs_total 3\n"
            "# HELP comfywatch_build Version.\n"
            "# TYPE comfywatch_build info\n"
            'comfywatch_build_info{version="1"} 1\n'
            "# EOF\n"
        )

    def test_histogram(self) -> None:
        """A histogram renders cumulative buckets with le (ending at +Inf), _sum and _count."""
        family = Family(MetricDef("comfyui_job_duration_seconds", "histogram", "Durations."))
        family.add_histogram('target="a"', (0.5, 1.0), [1, 3, 4], 7.25, 4)
        assert render([family]).decode().splitlines()[2:] == [
            'comfyui_job_duration_seconds_bucket{target="a",le="0.5"} 1',
            'comfyui_job_duration_seconds_bucket{target="a",le="1.0"} 3',
            'comfyui_job_duration_seconds_bucket{target="a",le="+Inf"} 4',
            'comfyui_job_duration_seconds_sum{target="a"} 7.25',
            'comfyui_job_duration_seconds_count{target="a"} 4',
        ]

    def test_histogram_without_labels(self) -> None:
        """An unlabelled histogram has only le on its buckets and bare _sum/_count."""
        family = Family(MetricDef("comfyui_h_seconds", "histogram", "H."))
        family.add_histogram("", (1.0,), [0, 0], 0.0, 0)
        lines = render([family], openmetrics=True).decode().splitlines()
        assert 'comfyui_h_seconds_bucket{le="+Inf"} 0' in lines
        assert "comfyui_h_seconds_count 0" in lines
        names = [name for name, _, _ in samples("\n".join(lines) + "\n", openmetrics=True)]
        assert names == ["comfyui_h_seconds_bucket"] * 2 + ["comfyui_h_seconds_sum", "comfyui_h_seconds_count"]

    def test_histogram_bucket_mismatch_is_an_error(self) -> None:
        """Cumulative counts must match bounds + 1: a mismatch fails loudly instead of lying."""
        family = Family(MetricDef("comfyui_h_seconds", "histogram", "H."))
        family.add_histogram("", (1.0, 2.0), [1, 2], 1.0, 2)
        with pytest.raises(ValueError):
            render([family])

    def test_empty_family_keeps_help_and_type(self) -> None:
        """Families without samples still announce themselves (names are discoverable)."""
        text = render([Family(MetricDef("comfyui_x", "gauge", "x"))]).decode()
        assert text == "# HELP comfyui_x x\n# TYPE comfyui_x gauge\n"

    def test_help_escaping(self) -> None:
        """HELP text escapes backslashes and newlines."""
        text = render([Family(MetricDef("comfyui_x", "gauge", "a\\b\nc"))]).decode()
        assert text.splitlines()[0] == "# HELP comfyui_x a\\\\b\\nc"
        (family,) = parse_text(text)
        assert family.documentation == "a\\b\nc"


class TestChooseFormat:
    def test_prometheus_prefers_openmetrics(self) -> None:
        """Prometheus' Accept header gets OpenMetrics."""
        assert choose_format(PROMETHEUS_ACCEPT) == (True, CONTENT_TYPE_OPENMETRICS)

    @pytest.mark.parametrize("accept", [None, "", "*/*", "text/plain;version=0.0.4", "application/json"])
    def test_everything_else_gets_text(self, accept: str | None) -> None:
        """Browsers, curl and old scrapers get the classic text format."""
        assert choose_format(accept) == (False, CONTENT_TYPE_TEXT)

    def test_content_types(self) -> None:
        """The content types are the ones Prometheus understands."""
        assert CONTENT_TYPE_TEXT == "text/plain; version=0.0.4; charset=utf-8"
        assert CONTENT_TYPE_OPENMETRICS == "application/openmetrics-text; version=1.0.0; charset=utf-8"


class TestExporterOutput:
    @pytest.mark.parametrize("openmetrics", [False, True])
    def test_parses_with_prometheus_client(self, openmetrics: bool) -> None:
        """The full /metrics output parses with the matching prometheus_client parser."""
        text = rendered(openmetrics)
        assert text.endswith("# EOF\n") is openmetrics
        assert len(samples(text, openmetrics)) > 150

    @pytest.mark.parametrize("openmetrics", [False, True])
    def test_every_metric_has_help_and_type(self, openmetrics: bool) -> None:
        """Every name in metrics.ALL appears with HELP and TYPE, even without samples."""
        text = rendered(openmetrics)
        helps = {line.split(" ")[2] for line in _lines(text, "# HELP ")}
        types = {line.split(" ")[2] for line in _lines(text, "# TYPE ")}
        expected = {d.om_name if openmetrics else d.name for d in m.ALL}
        assert helps == types == expected

    def test_promtool_check_metrics(self) -> None:
        """`promtool check metrics` accepts the text output without a lint warning."""
        promtool = promtool_or_skip()
        result = subprocess.run(
            [promtool, "check", "metrics"], input=rendered(False).encode(), capture_output=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        assert result.stdout.strip() == b""

    def test_promtool_with_nasty_labels(self) -> None:
        """promtool also accepts escaped quotes, backslashes and newlines in label values."""
        promtool = promtool_or_skip()
        text = rendered(False, states=[local_state(name="a.b:c", labels={"team": NASTY})])
        result = subprocess.run(
            [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()

    def test_values_from_state(self) -> None:
        """Gauges carry the state's values: up, RAM, queue, ages, cloud balance and retry-after."""
        text = rendered(False)
        assert value_of(text, "comfyui_up", target="studio-gpu-1") == 1.0
        assert value_of(text, "comfyui_up", target="cloud") == 0.0
        assert value_of(text, "comfyui_ram_total_bytes", target="studio-gpu-1") == 25276510208
        assert value_of(text, "comfyui_device_vram_free_bytes", device="cpu", type="cpu", index="") == 24201641984
        assert value_of(text, "comfyui_queue_running") == 1
        assert value_of(text, "comfyui_queue_pending") == 2
        assert value_of(text, "comfyui_queue_running_seconds") == 30.0
        assert value_of(text, "comfyui_http_phase_seconds", phase="processing") == pytest.approx(0.0027)
        assert value_of(text, "comfy_cloud_balance_usd") == 4.25
        assert value_of(text, "comfy_cloud_effective_balance_usd") == -0.5
        assert value_of(text, "comfy_cloud_retry_after_seconds") == 12.0
        assert value_of(text, "comfy_cloud_canary_runs_today") == 5

    def test_tls_phase_absent_on_plain_http(self) -> None:
        """A phase that did not happen (no TLS on http://) has no sample instead of a fake 0."""
        phases = [lab["phase"] for n, lab, _ in samples(rendered(False), False) if n == "comfyui_http_phase_seconds"]
        assert sorted(phases) == ["connect", "dns", "processing", "transfer"]

    def test_info_metrics(self) -> None:
        """Info metrics carry build and configuration labels, with python_version cut at the first space."""
        text = rendered(False)
        assert (
            value_of(
                text,
                "comfyui_info",
                version="0.3.64",
                python_version="3.11.7",
                pytorch_version="2.14.1+cu130",
                os="posix",
            )
            == 1.0
        )
        assert value_of(text, "comfyui_target_info", target="cloud", kind="cloud", url="https://cloud.comfy.org") == 1.0
        assert value_of(text, "comfy_cloud_subscription_info", tier="creator", status="active") == 1.0
        assert value_of(text, "comfywatch_build_info", version=__version__) == 1.0

    def test_failure_reasons_exist_at_zero(self) -> None:
        """Every job reason and every transport reason the target can produce, per endpoint, exists from the
        start: on a local http:// target that leaves out Comfy Cloud's payment/queue_full and tls."""
        found = samples(rendered(False), False)
        job = {
            lab["reason"]: v for n, lab, v in found if n == "comfyui_job_failures_total" and lab["target"] == "cloud"
        }
        assert job == dict.fromkeys(JOB_REASONS, 0.0)
        transport = {
            (lab["endpoint"], lab["reason"])
            for n, lab, _ in found
            if n == "comfyui_request_failures_total" and lab["target"] == "studio-gpu-1"
        }
        local_reasons = set(TRANSPORT_REASONS) - {Reason.PAYMENT, Reason.QUEUE_FULL, Reason.TLS}
        assert transport == {(e, r.value) for e in ("system_stats", "queue") for r in local_reasons}
        cloud = {
            lab["reason"] for n, lab, _ in found if n == "comfyui_request_failures_total" and lab["target"] == "cloud"
        }
        assert cloud == {r.value for r in TRANSPORT_REASONS}
        canary = {
            lab["reason"] for n, lab, _ in found
            if n == "comfyui_canary_failures_total" and lab["target"] == "studio-gpu-1"
        }
        assert canary == {r.value for r in Reason} - {"payment", "queue_full", "tls"}
        assert (
            value_of(
                rendered(False),
                "comfyui_request_failures_total",
                target="studio-gpu-1",
                endpoint="system_stats",
                reason="timeout",
            )
            == 1.0
        )

    def test_counters_and_histograms(self) -> None:
        """Finished jobs, failures and durations are counted; request codes include "none"."""
        text = rendered(False)
        assert value_of(text, "comfyui_jobs_total", target="studio-gpu-1") == 2
        assert value_of(text, "comfyui_job_failures_total", target="studio-gpu-1", reason="oom") == 1
        assert value_of(text, "comfyui_job_duration_seconds_bucket", target="studio-gpu-1", le="1.0") == 0
        assert value_of(text, "comfyui_job_duration_seconds_bucket", target="studio-gpu-1", le="5.0") == 2
        assert value_of(text, "comfyui_job_duration_seconds_bucket", target="studio-gpu-1", le="+Inf") == 2
        assert value_of(text, "comfyui_job_duration_seconds_sum", target="studio-gpu-1") == 3.5
        assert value_of(text, "comfyui_job_duration_seconds_count", target="studio-gpu-1") == 2
        assert value_of(text, "comfyui_requests_total", endpoint="queue", code="200") == 1
        assert value_of(text, "comfyui_requests_total", endpoint="system_stats", code="none") == 1
        assert (
            value_of(
                text, "comfyui_canary_failures_total", target="studio-gpu-1", canary="preview-image", reason="lost"
            )
            == 1
        )
        assert (
            value_of(text, "comfyui_canary_phase_seconds", target="studio-gpu-1", canary="preview-image", phase="total")
            == 0.008
        )

    def test_daemon_metrics(self) -> None:
        """The daemon's own metrics: targets by kind, shard, reload status, per-check state, process stats."""
        daemon = DaemonInfo(False, 1234.0, 2, 3, tasks=17, rss_bytes=52_428_800, open_fds=23)
        text = rendered(False, daemon=daemon)
        assert value_of(text, "comfywatch_asyncio_tasks") == 17
        assert value_of(text, "process_resident_memory_bytes") == 52_428_800
        assert value_of(text, "process_open_fds") == 23
        assert value_of(text, "comfywatch_targets", kind="local") == 1
        assert value_of(text, "comfywatch_targets", kind="cloud") == 1
        assert value_of(text, "comfywatch_shard_info", shard="2", shards="3") == 1
        assert value_of(text, "comfywatch_config_last_reload_success") == 0
        assert value_of(text, "comfywatch_config_last_reload_timestamp_seconds") == 1234.0
        assert value_of(text, "comfywatch_check_duration_seconds", target="studio-gpu-1", check="system") == 0.003
        assert value_of(text, "comfywatch_websocket_connected", target="studio-gpu-1") == 1.0

    @pytest.mark.parametrize("openmetrics", [False, True])
    def test_nasty_label_values_round_trip(self, openmetrics: bool) -> None:
        """Quotes, backslashes and newlines in target names, URLs, canaries and extra labels survive; a device
        name, sent by the server, keeps its quotes and backslashes, its newline sanitized at parse time."""
        state = local_state(labels={"team": NASTY})
        state.public_url = f"http://h/{NASTY}"
        state.canary(NASTY).runs = 1
        assert state.system is not None
        body = load_json("system_stats.json")
        body["devices"][0]["name"] = NASTY
        state.system = parse_system_stats(body)
        text = bytes(metrics_body([state], daemon=DaemonInfo(), openmetrics=openmetrics))
        found = [(n, lab, v) for n, lab, v in samples(text.decode(), openmetrics) if "target" in lab]
        assert all(lab.get("team") == NASTY for n, lab, _ in found if not n.startswith("comfywatch_"))
        urls = {lab["url"] for n, lab, _ in found if n == "comfyui_target_info"}
        assert urls == {f"http://h/{NASTY}"}
        assert NASTY in {lab.get("canary") for _, lab, _ in found}
        assert sanitize(NASTY) in {lab.get("device") for _, lab, _ in found}

    @pytest.mark.parametrize("openmetrics", [False, True])
    def test_label_names_are_declared(self, openmetrics: bool) -> None:
        """Each sample uses only its MetricDef's labels, plus target, the extra labels and le."""
        defs = {d.name: d for d in m.ALL}
        text = rendered(openmetrics, states=[local_state(labels={"rack": "b2"}), cloud_state()])
        for family in (parse_openmetrics if openmetrics else parse_text)(text):
            for sample in family.samples:
                base = re.sub(r"_(bucket|sum|count)$", "", sample.name)
                metric = defs.get(sample.name) or defs[base]
                assert set(sample.labels) <= {"target", "rack", "le", *metric.labels}, sample

    @pytest.mark.parametrize("openmetrics", [False, True])
    def test_probe_output_has_no_target_label(self, openmetrics: bool) -> None:
        """/probe output (with_target=False) has no target label and no daemon families."""
        for state in (local_state(), cloud_state()):
            text = bytes(metrics_body([state], daemon=None, openmetrics=openmetrics, with_target=False))
            found = samples(text.decode(), openmetrics)
            assert len(found) > 50
            assert all("target" not in labels for _, labels, _ in found)
            assert not [n for n, _, _ in found if n.startswith("comfywatch_")]

    def test_probe_output_omits_empty_families(self) -> None:
        """/probe renders only families with samples; /metrics keeps empty ones for discoverability."""
        state = TargetState("t", "local", "http://h", endpoints=[])
        state.set_up(False, Reason.CONNECT)
        probe = collect([state], daemon=None, with_target=False, now=NOW)
        assert all(f.samples or f.histograms or f.blocks for f in probe)
        assert "comfyui_queue_running" not in {f.metric.name for f in probe}
        full = collect([state], daemon=DaemonInfo(), now=NOW)
        assert {f.metric.name for f in full} == {d.name for d in m.ALL}

    def test_cached_labels_follow_new_series(self) -> None:
        """Rendering is repeatable, and series added between scrapes (a new status code) show up."""
        state = local_state()
        first = bytes(metrics_body([state], daemon=DaemonInfo(), openmetrics=False))
        assert bytes(metrics_body([state], daemon=DaemonInfo(), openmetrics=False)) == first
        state.on_exchange("queue", 503, 0.2)
        state.on_exchange("history", 200, 0.01)
        text = bytes(metrics_body([state], daemon=DaemonInfo(), openmetrics=False)).decode()
        assert value_of(text, "comfyui_requests_total", endpoint="queue", code="503") == 1
        assert value_of(text, "comfyui_requests_total", endpoint="history", code="200") == 1
        assert value_of(text, "comfyui_request_failures_total", endpoint="history", reason="dns") == 0

    def test_reused_blocks_follow_every_change_of_their_values(self) -> None:
        """Blocks kept between scrapes (failures by reason, histograms) show counts changed in place since."""
        state = local_state()
        canary = state.canaries["preview-image"]
        bytes(metrics_body([state], daemon=DaemonInfo(), openmetrics=False))
        state.on_failure("queue", Reason.AUTH)
        state.count_finished_job(Reason.OOM, 40.0)
        canary.failures[Reason.LOST] += 1
        canary.duration.observe(3.0)
        state.on_exchange("queue", 200, 0.2)
        text = bytes(metrics_body([state], daemon=DaemonInfo(), openmetrics=False)).decode()
        assert value_of(text, "comfyui_request_failures_total", endpoint="queue", reason="auth") == 1
        assert value_of(text, "comfyui_job_failures_total", reason="oom") == 2
        assert value_of(text, "comfyui_job_duration_seconds_bucket", le="30.0") == 2
        assert value_of(text, "comfyui_job_duration_seconds_bucket", le="60.0") == 3
        assert value_of(text, "comfyui_job_duration_seconds_sum") == 43.5
        assert value_of(text, "comfyui_canary_failures_total", reason="lost") == 2
        assert value_of(text, "comfyui_canary_duration_seconds_count") == 2
        assert value_of(text, "comfyui_request_duration_seconds_count", endpoint="queue") == 2
        assert value_of(text, "comfyui_request_duration_seconds_bucket", endpoint="queue", le="0.25") == 2
        assert value_of(text, "comfyui_requests_total", endpoint="queue", code="200") == 2

    def test_series_are_unique(self) -> None:
        """No two samples share a name and label set (Prometheus would drop the scrape's duplicates)."""
        keys = [(n, tuple(sorted(lab.items()))) for n, lab, _ in samples(rendered(False), False)]
        assert len(keys) == len(set(keys))


class TestMetricDefinitions:
    def test_promised_names_present(self) -> None:
        """Every promised metric is defined."""
        assert {d.name for d in m.ALL} >= PROMISED_NAMES

    def test_names_unique_and_prefixed(self) -> None:
        """Names are unique, snake_case, and carry one of the three prefixes (or are standard process_ ones)."""
        names = [d.name for d in m.ALL]
        assert len(names) == len(set(names))
        assert len({d.om_name for d in m.ALL}) == len(names)
        for name in names:
            assert re.fullmatch(r"(comfyui|comfy_cloud|comfywatch|process)_[a-z0-9_]+", name), name

    @pytest.mark.parametrize("metric", m.ALL, ids=lambda d: d.name)
    def test_naming_conventions(self, metric: MetricDef) -> None:
        """Counters end in _total, info in _info, others in neither; labels are valid and not reserved."""
        assert metric.name.endswith("_total") is (metric.kind == "counter")
        assert metric.name.endswith("_info") is (metric.kind == "info")
        for label in metric.labels:
            assert re.fullmatch(r"[a-z_][a-z0-9_]*", label)
            assert label not in {"le", "quantile", "instance", "job"} and not label.startswith("__")
        assert "target" not in metric.labels or metric in m.DAEMON

    @pytest.mark.parametrize("metric", m.ALL, ids=lambda d: d.name)
    def test_help_text(self, metric: MetricDef) -> None:
        """HELP is a sentence with no characters OpenMetrics would need escaped."""
        assert metric.help.endswith(".") and len(metric.help) > 10
        assert not set(metric.help) & {'"', "\\", "\n"}

    def test_groups(self) -> None:
        """ALL is the union of the target, cloud and daemon groups."""
        assert m.ALL == m.TARGET + m.CLOUD + m.DAEMON
        assert all(d.name.startswith("comfy_cloud_") for d in m.CLOUD)
        assert all(d.name.startswith(("comfywatch_", "process_")) for d in m.DAEMON)
        assert all(not d.name.startswith("process_") for d in m.TARGET + m.CLOUD)


@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(min_value=1, max_value=120))
def test_a_body_sent_in_pieces_is_the_joined_body(chunks: list[bytes], piece_bytes: int) -> None:
    """Pieces of any size add up to exactly ``b"\\n".join(chunks)``, none is empty, and ``len`` says its size."""
    body = Body(chunks)
    pieces = list(body.pieces(piece_bytes))
    assert b"".join(pieces) == bytes(body) == b"\n".join(chunks)
    assert len(body) == len(bytes(body))
    assert all(pieces)
    # A piece ends with the chunk that takes it to the size: at most one chunk (40 bytes here) beyond it.
    assert all(len(piece) <= piece_bytes + 40 for piece in pieces)
