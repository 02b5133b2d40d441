"""No secret ever leaves comfywatch: logs, /metrics and doctor output under every simulator fault."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from comfywatch.sim.admin import start_sim
from comfywatch.sim.cloud.jobs import FAULTS as CLOUD_FAULTS
from comfywatch.sim.faults import Fault
from tests.e2e.doctor_setups import proxy_app, serve
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
interval = "1s"
timeout = "500ms"
[[targets]]
name = "local"
url = "{local_url}"
bearer_token_file = "{token_file}"
  [targets.canary]
  interval = "1s"
  timeout = "3s"
[[targets]]
name = "cloud"
kind = "cloud"
url = "{cloud.url}"
api_key_file = "{key_file}"
max_requests_per_minute = 6000
  [targets.canary]
  enabled = true
  interval = "1s"
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


# A server that echoes the request's credentials back.

ECHO_USER = "monitor"
#: Characters that change under percent-encoding and JSON escaping.
ECHO_PASSWORD = "3ch0/p@ss w0rd+é"


def _echo_forms() -> list[str]:
    """The echoed password in every form a server or comfywatch could write it."""
    token = base64.b64encode(f"{ECHO_USER}:{ECHO_PASSWORD}".encode()).decode()
    return [ECHO_PASSWORD, quote(ECHO_PASSWORD, safe=""), quote_plus(ECHO_PASSWORD),
            json.dumps(ECHO_PASSWORD)[1:-1], token, quote(token, safe="")]


async def _echo_authorization(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``POST /prompt`` fails validation with node_errors quoting the Authorization header, its base64 alone,
    and the decoded user:password; everything else is the simulator's."""
    if request.method != "POST" or not request.path.endswith("/prompt"):
        return await handler(request)
    authorization = request.headers.get("Authorization", "")
    token = authorization.removeprefix("Basic ")
    decoded = base64.b64decode(token).decode() if token else ""
    error = {"type": "value_not_in_list", "message": f"Value not in list: {decoded}",
             "details": f"ckpt_name: '{token}' not in [] (request had {authorization})",
             "extra_info": {"input_name": "ckpt_name", "received_value": token}}
    return web.json_response(status=400, data={
        "error": {"type": "prompt_outputs_failed_validation", "message": f"Prompt outputs failed validation: {decoded}",
                  "details": authorization, "extra_info": {}},
        "node_errors": {"1": {"errors": [error], "dependent_outputs": ["9"], "class_type": "EmptyImage"}},
    })


@contextlib.contextmanager
def echoing_comfyui() -> Iterator[str]:
    """The simulated ComfyUI behind :func:`_echo_authorization`, served from a thread; yields its URL."""
    ready: queue.Queue[str] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def main() -> None:
        async with await start_sim() as sim:
            app = proxy_app(sim.url)
            app.middlewares.append(web.middleware(_echo_authorization))
            async with serve(app) as url:
                ready.put(url)
                await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="EchoingComfyUI", daemon=True)
    thread.start()
    try:
        yield ready.get(timeout=20)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        loop.close()


def _cli(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYWATCH_")}
    run = subprocess.run([sys.executable, "-m", "comfywatch", *args], capture_output=True, text=True, timeout=120,
                         env=env)
    return f"exit {run.returncode}\n{run.stdout}{run.stderr}"


def test_echoed_credentials_never_reach_canary_doctor_or_daemon_output(tmp_path: Path) -> None:
    """A server echoing the canary's Authorization into its /prompt 400: canary text and --json, doctor text and
    --json and the daemon's log show the node error, but the password in no form (clear, percent-encoded,
    JSON-escaped, Basic base64)."""
    with echoing_comfyui() as url:
        target = url.replace("http://", f"http://{ECHO_USER}:{quote(ECHO_PASSWORD, safe='')}@")
        outputs = {
            "canary": _cli("canary", "--url", target),
            "canary --json": _cli("canary", "--url", target, "--json"),
            "doctor": _cli("doctor", "--url", target, "--timeout", "10"),
            "doctor --json": _cli("doctor", "--url", target, "--timeout", "10", "--json"),
        }
        config = (f'[[targets]]\nname = "echo"\nurl = "{target}"\n'
                  '  [targets.canary]\n  interval = "1s"\n  timeout = "5s"\n')
        with comfywatch_run(tmp_path, config) as daemon:
            deadline = time.monotonic() + 30
            while "canary_rejected" not in daemon.output():
                assert time.monotonic() < deadline, daemon.output()[-2000:]
                time.sleep(0.05)
            outputs["daemon"] = daemon.output()
    for where, text in outputs.items():
        assert "value_not_in_list" in text, f"{where} does not show the rejection:\n{text}"
    leaks = [(where, form) for where, text in outputs.items() for form in _echo_forms() if form in text]
    assert leaks == [], "\n".join(map(str, leaks))
