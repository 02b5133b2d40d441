"""No secret ever leaves comfywatch: logs, /metrics and doctor output under every simulator fault."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from comfywatch.sim.cloud_jobs import FAULTS as CLOUD_FAULTS
from comfywatch.sim.faults import Fault
from tests.e2e.procs import comfywatch_run, simulate
from tests.helpers import Metrics

pytestmark = pytest.mark.e2e

API_KEY = "comfyui-" + "5ecre7" * 10
BEARER = "proxy-bearer-token-d0n7-l34k"
PASSWORD = "pr0xy-p4ssw0rd-s3cr3t"


def _post(url: str, body: object) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def _requests(text: str) -> dict[str, float]:
    metrics = Metrics(text)
    return {target: metrics.total("comfyui_requests_total", target=target) for target in ("local", "cloud")}


def _polled_under_fault(base: str, requests: int = 4, timeout: float = 15.0) -> str:
    """Wait until the daemon made a few more requests to both targets (so it ran under the new fault)."""
    before = _requests(_get(f"{base}/metrics"))
    deadline = time.monotonic() + timeout
    while True:
        text = _get(f"{base}/metrics")
        now = _requests(text)
        # A Cloud account inside a Retry-After pause rightly sends nothing: that counts as "ran under it".
        paused = (Metrics(text).value("comfy_cloud_retry_after_seconds", target="cloud") or 0) > 0
        if now["local"] - before["local"] >= requests and (now["cloud"] - before["cloud"] >= 2 or paused):
            return text
        assert time.monotonic() < deadline, f"daemon stopped polling: {before} -> {now}"
        time.sleep(0.05)


def _assert_clean(where: str, text: str) -> None:
    for secret in (API_KEY, BEARER, PASSWORD):
        assert secret not in text, f"secret leaked into {where}"
    # Also the key split by a line wrap or percent-encoded: look for a distinctive fragment.
    assert "5ecre75ecre7" not in text, f"part of the API key leaked into {where}"


def test_no_secret_in_logs_metrics_or_doctor_under_every_fault(tmp_path: Path) -> None:
    """The daemon watches a Cloud account and a proxied local server while every fault of both simulators is
    switched on in turn; the key, the bearer token and the password appear in none of its output."""
    token_file = tmp_path / "token"
    token_file.write_text(BEARER + "\n", encoding="utf-8")
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY, encoding="utf-8")
    with simulate(tmp_path) as local, simulate(tmp_path, "--cloud", "--cloud-api-key", API_KEY) as cloud:
        local_url = local.url.replace("http://", f"http://monitor:{PASSWORD}@")
        config = f"""
state_dir = "{tmp_path / 'state'}"
[defaults]
interval = "250ms"
timeout = "1s"
[[targets]]
name = "local"
url = "{local_url}"
bearer_token_file = "{token_file}"
  [targets.canary]
  interval = "500ms"
  timeout = "3s"
[[targets]]
name = "cloud"
kind = "cloud"
url = "{cloud.url}"
api_key_file = "{key_file}"
max_requests_per_minute = 6000
  [targets.canary]
  enabled = true
  interval = "500ms"
  timeout = "3s"
  max_runs_per_day = 1000
"""
        outputs: list[tuple[str, str]] = []
        with comfywatch_run(tmp_path, config) as daemon:
            local_faults = [f.value for f in Fault if f.value not in {"huge_body"}]
            cloud_faults = sorted(CLOUD_FAULTS)
            for index in range(max(len(local_faults), len(cloud_faults))):
                if index < len(local_faults):
                    _post(f"{local.admin_url}/_sim/faults", {"faults": [local_faults[index]], "slow_ms": 1500})
                if index < len(cloud_faults):
                    _post(f"{cloud.admin_url}/_sim/faults", {"faults": [cloud_faults[index]], "slow_ms": 1500})
                outputs.append((f"/metrics under {index}", _polled_under_fault(daemon.url)))
            _post(f"{local.admin_url}/_sim/faults", {"faults": []})
            _post(f"{cloud.admin_url}/_sim/faults", {"faults": []})
            outputs.append(("/metrics after", _get(f"{daemon.url}/metrics")))
            env = {**os.environ, "COMFYWATCH_CLOUD_API_KEY": API_KEY}
            for args in (["--cloud", "--url", cloud.url], ["--url", local_url, "--no-canary"]):
                for fmt in (["--json"], []):
                    doctor = subprocess.run([sys.executable, "-m", "comfywatch", "doctor", *args, *fmt,
                                             "--timeout", "3"], capture_output=True, text=True, timeout=120,
                                            env=env)
                    outputs.append((f"doctor {args[0]} {fmt}", doctor.stdout + doctor.stderr))
            outputs.append(("daemon stdout/stderr", daemon.output()))
        # Sanity: the secrets were really in use (the cloud sim saw authenticated requests).
        assert "comfy_cloud_balance_usd" in outputs[-6][1]
    for where, text in outputs:
        _assert_clean(where, text)
