"""A real Prometheus scrapes the simulator through comfywatch with the scrape jobs of docs/prometheus.md.

The ``/metrics`` and ``/probe`` jobs are taken from the documentation itself (only addresses and intervals
are replaced), so the documented relabelling is what gets tested. Every Prometheus configuration in that
page must also pass ``promtool check config``, and every Kubernetes manifest must be valid YAML.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.procs import comfywatch_run, simulate
from tests.e2e.promstack import PROMTOOL_BINARIES, prometheus_config, require_binary, run_prometheus, write_yaml

pytestmark = pytest.mark.e2e

DOC = Path(__file__).resolve().parents[2] / "docs" / "prometheus.md"


def yaml_blocks() -> list[str]:
    """Every fenced ```yaml block of docs/prometheus.md, in order."""
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def documented_job(name: str) -> dict[str, Any]:
    """The scrape job called *name* in the first documented Prometheus configuration that has it."""
    for block in yaml_blocks():
        for document in yaml.safe_load_all(block):
            if isinstance(document, dict):
                for job in document.get("scrape_configs", []):
                    if job.get("job_name") == name:
                        return copy.deepcopy(job)  # type: ignore[no-any-return]
    raise AssertionError(f"docs/prometheus.md documents no scrape job {name!r}")


def local_job(job: dict[str, Any], *, groups: list[list[str]], exporter: str | None = None) -> dict[str, Any]:
    """The documented job with each target group's targets replaced (its labels kept), a 1 s interval and
    (for /probe) our exporter's address."""
    job = copy.deepcopy(job)
    assert len(job["static_configs"]) == len(groups), job["static_configs"]
    for group, targets in zip(job["static_configs"], groups, strict=True):
        group["targets"] = targets
    job["scrape_interval"] = job["scrape_timeout"] = "1s"
    if exporter is not None:
        rewrites = [r for r in job["relabel_configs"] if r.get("target_label") == "__address__"]
        assert len(rewrites) == 1, rewrites
        rewrites[0]["replacement"] = exporter
    return job


def daemon_config(sim_url: str) -> str:
    return f"""
[defaults]
interval = "1s"
timeout = "900ms"
websocket_monitor = false

[[targets]]
name = "sim"
url = "{sim_url}"
  [targets.canary]
  enabled = false

# The modules the documented probe job uses (defining one replaces the built-in "local").
[modules.local]

[modules.behind-proxy]
checks = ["system", "queue", "jobs"]
"""


def test_prometheus_scrapes_the_simulator_through_documented_jobs(tmp_path: Path) -> None:
    """Through /probe: comfyui_up{instance=<sim url>, job=comfywatch-probe} = 1; through /metrics: target=sim."""
    with simulate(tmp_path, "--targets", "1") as sim, comfywatch_run(tmp_path, daemon_config(sim.url)) as daemon:
        exporter = daemon.url.removeprefix("http://")
        behind_proxy = f"{sim.url}/t/0"
        config = prometheus_config([
            local_job(documented_job("comfywatch"), groups=[[exporter]]),
            local_job(documented_job("comfywatch-probe"), groups=[[sim.url], [behind_proxy]], exporter=exporter),
        ])
        with run_prometheus(tmp_path / "prom", config) as prom:
            probed = prom.wait_for_data(f'comfyui_up{{instance="{sim.url}"}} == 1', timeout=60)
            assert len(probed) == 1
            labels = probed[0]["metric"]
            assert labels["job"] == "comfywatch-probe"
            assert labels["target"] == sim.url
            assert float(probed[0]["value"][1]) == 1.0
            success = prom.query(f'comfyui_probe_success{{job="comfywatch-probe",instance="{sim.url}"}}')
            assert [float(s["value"][1]) for s in success] == [1.0]
            info = prom.query(f'comfyui_info{{job="comfywatch-probe",instance="{sim.url}"}}')
            assert [s["metric"]["version"] for s in info] == ["0.3.64"]
            # A group's __param_module picks its module; the others get the documented default.
            prom.wait_for_data(f'comfyui_probe_success{{instance="{behind_proxy}"}} == 1', timeout=30)
            urls = {t["labels"]["instance"]: t["scrapeUrl"] for t in prom.targets()
                    if t["labels"]["job"] == "comfywatch-probe"}
            assert "module=local" in urls[sim.url]
            assert "module=behind-proxy" in urls[behind_proxy]
            # The jobs check of the behind-proxy module ran: its request is counted in that probe's output.
            history = prom.query(f'comfyui_requests_total{{instance="{behind_proxy}",endpoint="history"}}')
            assert [float(s["value"][1]) for s in history] == [1.0]

            daemon_series = prom.wait_for_data('comfyui_up{job="comfywatch",target="sim"} == 1', timeout=30)
            assert daemon_series[0]["metric"]["instance"] == exporter
            assert prom.query('comfywatch_shard_info{job="comfywatch",shard="0",shards="1"}')


def promtool_check(promtool: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, "check", "config", "--syntax-only", str(path)],
                          capture_output=True, text=True, timeout=60)


def without_kubernetes_sd(document: dict[str, Any]) -> dict[str, Any]:
    """The same configuration with each kubernetes_sd_configs replaced by a static target (relabelling kept)."""
    document = copy.deepcopy(document)
    for job in document["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["10.0.0.1:8188"]}]
    return document


def test_documented_prometheus_configs_pass_promtool(tmp_path: Path) -> None:
    """Each ``scrape_configs:`` block of docs/prometheus.md is a valid Prometheus configuration.

    Debian's Prometheus is built without Kubernetes discovery; with such a promtool the kubernetes_sd
    blocks are checked with a static target in its place, so their relabelling is still validated.
    """
    promtool = require_binary(*PROMTOOL_BINARIES)
    probe = write_yaml(tmp_path / "k8s-support.yml", {"scrape_configs": [
        {"job_name": "k", "kubernetes_sd_configs": [{"role": "pod"}]}]})
    has_kubernetes_sd = promtool_check(promtool, probe).returncode == 0
    configs = [yaml.safe_load(b) for b in yaml_blocks() if b.lstrip().startswith("scrape_configs:")]
    assert len(configs) >= 4, "expected the /metrics, /probe, kubernetes_sd and sharding configurations"
    for index, document in enumerate(configs):
        if not has_kubernetes_sd:
            document = without_kubernetes_sd(document)
        checked = promtool_check(promtool, write_yaml(tmp_path / f"prometheus-{index}.yml", document))
        assert checked.returncode == 0, f"block {index}:\n{checked.stdout}{checked.stderr}"


def test_documented_kubernetes_manifests_are_valid_yaml() -> None:
    """The ServiceMonitor, Probe, PodMonitor and StatefulSet examples parse and name their kinds."""
    kinds = []
    for block in yaml_blocks():
        for document in yaml.safe_load_all(block):
            if isinstance(document, dict) and "apiVersion" in document:
                assert document["metadata"]["name"]
                assert document["spec"]
                kinds.append(document["kind"])
    assert {"ServiceMonitor", "Probe", "PodMonitor", "StatefulSet", "Service"} <= set(kinds)
