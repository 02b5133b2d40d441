"""End to end: ``comfywatch simulate`` and ``comfywatch run`` as real processes, scraped over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from tests.e2e.procs import comfywatch_run, simulate
from tests.helpers import Metrics

pytestmark = pytest.mark.e2e

RELOAD_OK = "comfywatch_config_last_reload_success"
RELOAD_AT = "comfywatch_config_last_reload_timestamp_seconds"


def _get(url: str, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode(), response.headers.get("Content-Type", "")


def _wait_metrics(url: str, predicate: object, timeout: float = 20.0) -> Metrics:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last, _ = _get(url)
        metrics = Metrics(last)
        if predicate(metrics):  # type: ignore[operator]
            return metrics
        time.sleep(0.1)
    raise AssertionError(f"metrics never satisfied the condition:\n{last[-3000:]}")


def _config(url: str) -> str:
    return f"""
[defaults]
interval = "1s"
timeout = "500ms"

[[targets]]
name = "sim"
url = "{url}"
  [targets.canary]
  interval = "1s"
  timeout = "10s"
"""


def test_run_against_simulate_exports_parseable_metrics(tmp_path: Path) -> None:
    """A real daemon watching a real simulator exports up=1, a successful canary, valid text and OpenMetrics."""
    with simulate(tmp_path) as sim, comfywatch_run(tmp_path, _config(sim.url)) as daemon:
        metrics = _wait_metrics(
            f"{daemon.url}/metrics",
            lambda m: m.value("comfyui_up", target="sim") == 1.0
            and (m.value("comfyui_canary_success", target="sim", canary="preview-image") == 1.0),
        )
        assert metrics.value("comfyui_info", target="sim", version="0.3.64") == 1.0
        assert metrics.value("comfyui_queue_stalled", target="sim") == 0.0
        assert metrics.value("comfywatch_targets", kind="local") == 1.0
        text, content_type = _get(f"{daemon.url}/metrics")
        assert content_type.startswith("text/plain; version=0.0.4")
        om_text, om_type = _get(f"{daemon.url}/metrics", accept="application/openmetrics-text;version=1.0.0")
        assert om_type.startswith("application/openmetrics-text")
        names = {family.name for family in parse_openmetrics(om_text)}
        assert {"comfyui_up", "comfyui_jobs", "comfyui_canary_duration_seconds"} <= names
        promtool = shutil.which("promtool")
        if promtool is None:
            if os.environ.get("CI"):
                pytest.fail("promtool missing in CI: .ci/run must install the prometheus package")
            pytest.skip("promtool not installed (apt-get install prometheus)")
        checked = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                                 timeout=30)
        assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
        assert checked.stdout.decode().strip() == "", checked.stdout.decode()


def test_sigterm_stops_within_five_seconds(tmp_path: Path) -> None:
    """SIGTERM shuts the daemon down cleanly (exit 0) in under 5 s, even while a canary is configured."""
    with simulate(tmp_path) as sim, comfywatch_run(tmp_path, _config(sim.url)) as daemon:
        _wait_metrics(f"{daemon.url}/metrics", lambda m: m.value("comfyui_up", target="sim") == 1.0)
        started = time.monotonic()
        daemon.process.terminate()
        code = daemon.process.wait(timeout=10)
        elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 5.0, elapsed


def test_check_config_reports_every_problem_with_its_location(tmp_path: Path) -> None:
    """``check-config`` prints `targets[1].interval: ...` style errors and exits 2; a good file exits 0."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[[targets]]\nname = "a"\nurl = "http://127.0.0.1:1"\n[[targets]]\nname = "b"\n'
                   'url = "http://127.0.0.1:2"\ninterval = "soon"\nintervall = "5s"\n', encoding="utf-8")
    result = subprocess.run([os.sys.executable, "-m", "comfywatch", "check-config", str(bad)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"{bad}: targets[1].interval: invalid duration 'soon'" in result.stderr
    assert f"{bad}: targets[1].intervall: unknown key — did you mean 'interval'?" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text('[[targets]]\nname = "a"\nurl = "http://127.0.0.1:1"\n', encoding="utf-8")
    ok = subprocess.run([os.sys.executable, "-m", "comfywatch", "check-config", str(good)],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr


def _sim_state(sim_admin_url: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{sim_admin_url}/_sim/state", timeout=5) as response:
        state: dict[str, object] = json.loads(response.read())
    return state


def test_sigterm_with_a_canary_in_flight_is_quiet(tmp_path: Path) -> None:
    """SIGTERM while a canary waits for its (30 s) job: the check is cancelled without an error-level line or a
    traceback, and the daemon exits 0."""
    with simulate(tmp_path, "--exec-ms", "30000") as sim, \
            comfywatch_run(tmp_path, _config(sim.url).replace('timeout = "10s"', 'timeout = "60s"'),
                           "--log-level", "debug") as daemon:
        assert sim.admin_url is not None
        deadline = time.monotonic() + 20
        while not _sim_state(sim.admin_url)["queue_running"]:
            assert time.monotonic() < deadline, "no canary prompt ever ran"
            time.sleep(0.05)
        daemon.process.terminate()
        code = daemon.process.wait(timeout=10)
        output = daemon.output()
    assert code == 0, output
    events = [json.loads(line) for line in output.splitlines()]
    assert "stopping" in {event["event"] for event in events}, output
    loud = [event for event in events if event["level"] not in {"debug", "info"}]
    assert not loud, loud
    assert "Traceback" not in output and "CancelledError" not in output, output


def test_sighup_with_a_broken_file_keeps_the_running_configuration(tmp_path: Path) -> None:
    """SIGHUP with an interval of 0 s, an integer of 5,000 digits, then a directory in place of the file: each
    reload fails visibly (reload_success 0, reload_failed logged) and the old target keeps being polled; the good
    file then loads again (reload_success 1)."""
    with simulate(tmp_path) as sim, comfywatch_run(tmp_path, _config(sim.url)) as daemon:
        metrics_url = f"{daemon.url}/metrics"
        config_path = daemon.log.with_suffix(".toml")
        good = config_path.read_text(encoding="utf-8")
        polls = ("comfyui_requests_total", {"target": "sim", "endpoint": "system_stats", "code": "200"})
        _wait_metrics(metrics_url, lambda m: m.value("comfyui_up", target="sim") == 1.0)

        def reload(expect_success: bool) -> None:
            before = _wait_metrics(metrics_url, lambda m: True)
            loaded_at, polled = before.value(RELOAD_AT), before.value(polls[0], **polls[1]) or 0.0
            daemon.process.send_signal(signal.SIGHUP)
            after = _wait_metrics(metrics_url, lambda m: m.value(RELOAD_AT) != loaded_at)
            assert after.value(RELOAD_OK) == (1.0 if expect_success else 0.0), after.text[-2000:]
            # Polled after the reload with the configuration it had before.
            after = _wait_metrics(metrics_url, lambda m: (m.value(polls[0], **polls[1]) or 0.0) >= polled + 2)
            assert after.value("comfyui_up", target="sim") == 1.0

        for broken in (good.replace('interval = "1s"', 'interval = "0s"', 1),
                       good.replace("[defaults]\n", "[defaults]\nworker_idle_polls = 1" + "0" * 5000 + "\n", 1)):
            config_path.write_text(broken, encoding="utf-8")
            reload(expect_success=False)
        config_path.unlink()
        config_path.mkdir()
        reload(expect_success=False)
        config_path.rmdir()
        config_path.write_text(good, encoding="utf-8")
        reload(expect_success=True)
        failures = [json.loads(line) for line in daemon.output().splitlines() if '"reload_failed"' in line]
        assert len(failures) == 3, daemon.output()[-4000:]
