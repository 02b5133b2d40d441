"""Benchmark: how fast a dead server and a stalled job are reported.

1. **Process death**: a real ``comfywatch simulate`` process is killed (SIGKILL) while a real ``comfywatch run``
   watches it with a 15 s poll interval; we time kill -> ``comfyui_up 0`` on /metrics. The monitoring
   WebSocket's close triggers an immediate re-check, so this should be ~1 s, not ~15 s. Also measured with
   ``websocket_monitor = false`` for comparison (expect up to one interval).
2. **Stall**: a job starts and never progresses (sim fault ``stall``); we time job start ->
   ``comfyui_queue_stalled 1`` with ``stall_after`` = 5 s and interval = 2 s (bound: stall_after + interval).

    .venv/bin/python bench/detection.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from scale import stop_children_on_sigterm


def _value(url: str, name: str) -> float | None:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("target") == "sim":
                return float(sample.value)
    return None


def _wait_file(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.01)
    raise SystemExit(f"{path} never appeared")


def _start_sim(tmp: Path, *args: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    port_file = tmp / f"sim-{time.monotonic_ns()}.json"
    process = subprocess.Popen([sys.executable, "-m", "comfywatch", "simulate", "--port", "0", "--port-file",
                                str(port_file), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, json.loads(_wait_file(port_file))


def _start_daemon(tmp: Path, config: str) -> tuple[subprocess.Popen[bytes], str]:
    path = tmp / f"cw-{time.monotonic_ns()}.toml"
    path.write_text(config)
    ready = path.with_suffix(".ready")
    process = subprocess.Popen([sys.executable, "-m", "comfywatch", "run", "--config", str(path), "--listen",
                                "127.0.0.1:0", "--ready-file", str(ready)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, f"http://{_wait_file(ready)}/metrics"


def _until(url: str, name: str, value: float, timeout: float, started: float | None = None) -> float:
    """Seconds from *started* (default: now) until the metric has *value*."""
    started = time.monotonic() if started is None else started
    while time.monotonic() - started < timeout:
        if _value(url, name) == value:
            return time.monotonic() - started
        time.sleep(0.02)
    return float("inf")


def process_death(tmp: Path, monitor: bool) -> float:
    sim, info = _start_sim(tmp)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        config = (f'[defaults]\ninterval = "15s"\nwebsocket_monitor = {str(monitor).lower()}\n'
                  f'[[targets]]\nname = "sim"\nurl = "{info["url"]}"\n  [targets.canary]\n  enabled = false\n')
        daemon, url = _start_daemon(tmp, config)
        _until(url, "comfyui_up", 1.0, 30)
        if monitor:
            _until(url, "comfywatch_websocket_connected", 1.0, 30)
        time.sleep(0.5)  # settle: let the first poll's timers go quiet before the measured event
        killed_at = time.monotonic()
        sim.send_signal(signal.SIGKILL)
        sim.wait()
        return _until(url, "comfyui_up", 0.0, 40, started=killed_at)
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(10)
        if sim.poll() is None:
            sim.kill()
            sim.wait()


def stall(tmp: Path) -> float:
    sim, info = _start_sim(tmp, "--fault", "stall")
    config = (f'[defaults]\ninterval = "2s"\ntimeout = "1s"\nstall_after = "5s"\n[[targets]]\nname = "sim"\n'
              f'url = "{info["url"]}"\n  [targets.canary]\n  enabled = false\n')
    try:
        daemon, url = _start_daemon(tmp, config)
    except BaseException:
        sim.kill()
        sim.wait()
        raise
    try:
        _until(url, "comfyui_up", 1.0, 30)
        request = urllib.request.Request(f"{info['admin_url']}/_sim/submit", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).close()
        return _until(url, "comfyui_queue_stalled", 1.0, 30)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)
        sim.send_signal(signal.SIGTERM)
        sim.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    stop_children_on_sigterm()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        with_monitor = [process_death(tmp, True) for _ in range(args.runs)]
        without = [process_death(tmp, False) for _ in range(max(1, args.runs // 2))]
        stalls = [stall(tmp) for _ in range(max(1, args.runs // 2))]
    print(f"process death -> comfyui_up 0, WebSocket monitor on  (interval 15 s): median "
          f"{statistics.median(with_monitor):.2f} s, max {max(with_monitor):.2f} s, runs {len(with_monitor)}")
    print(f"process death -> comfyui_up 0, WebSocket monitor off (interval 15 s): median "
          f"{statistics.median(without):.2f} s, max {max(without):.2f} s, runs {len(without)}")
    print(f"stall (stall_after 5 s, interval 2 s; bound 7 s) -> comfyui_queue_stalled 1 after job start: median "
          f"{statistics.median(stalls):.2f} s, max {max(stalls):.2f} s, runs {len(stalls)}")


if __name__ == "__main__":
    main()
