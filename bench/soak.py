"""Soak: a compressed day of polling with churn and faults; memory, fds and tasks must stay flat.

One ``comfywatch simulate --targets N`` process with background load (churning prompt ids) and one
``comfywatch run`` process polling every target every second, the shortest interval the configuration accepts
(15x the default 15 s: 24 h of polls take 96 min), with a canary on one target, targets coming and going through
a file_sd file, and faults switched on and off at random. Every few seconds it samples the daemon's own
``process_resident_memory_bytes``, ``process_open_fds`` and ``comfywatch_asyncio_tasks``. Pass criteria: RSS
growth after warm-up <= 5 MB, no fd or task growth.

    .venv/bin/python bench/soak.py --seconds 5760     # ~24 h of 15 s polls
    .venv/bin/python bench/soak.py --seconds 300      # quicker (~1 h 15 min equivalent)
"""

from __future__ import annotations

import argparse
import json
import random
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

FAULTS = ["down", "slow", "stall", "worker_dead", "execution_error", "oom", "http_401", "http_500",
          "http_502_html", "garbage_json", "huge_body", "restart", "ws_no_upgrade"]


def _wait_file(path: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise SystemExit(f"{path} never appeared")


def _post(url: str, body: object) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


def _sample(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    wanted = {"process_resident_memory_bytes", "process_open_fds", "comfywatch_asyncio_tasks"}
    out: dict[str, float] = {}
    jobs = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                out[sample.name] = float(sample.value)
            elif sample.name == "comfyui_jobs_total":
                jobs += float(sample.value)
    out["jobs"] = jobs
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--interval", default="1s")
    args = parser.parse_args()
    stop_children_on_sigterm()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        port_file = tmp / "sim.json"
        sim = subprocess.Popen([sys.executable, "-m", "comfywatch", "simulate", "--port", "0", "--port-file",
                                str(port_file), "--targets", str(args.targets), "--load-per-min", "60",
                                "--job-ms", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        info = json.loads(_wait_file(port_file))
        sd_file = tmp / "targets.json"

        def write_sd(active: list[int]) -> None:
            groups = [{"targets": [f"{info['url']}/t/{i}"], "labels": {"name": f"t{i}", "pool": "soak"}}
                      for i in active]
            tmp_sd = sd_file.with_suffix(".tmp")
            tmp_sd.write_text(json.dumps(groups))
            tmp_sd.replace(sd_file)

        active = list(range(args.targets))
        write_sd(active)
        config = tmp / "cw.toml"
        config.write_text(f"""
[defaults]
interval = "{args.interval}"
timeout = "900ms"
stall_after = "5s"
[discovery]
files = ["{sd_file}"]
refresh_interval = "1s"
[[targets]]
name = "canary-a"
url = "{info['url']}/t/0"
  [targets.canary]
  interval = "1s"
  timeout = "5s"
  when_busy = "queue"
""")
        ready = tmp / "ready"
        daemon = subprocess.Popen([sys.executable, "-m", "comfywatch", "run", "--config", str(config), "--listen",
                                   "127.0.0.1:0", "--ready-file", str(ready)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        metrics = f"http://{_wait_file(ready)}/metrics"
        samples: list[tuple[float, dict[str, float]]] = []
        started = time.monotonic()
        next_sample = started
        try:
            while time.monotonic() - started < args.seconds:
                # Churn: faults on random targets, targets leaving and coming back.
                target = rng.randrange(args.targets)
                faults = [] if rng.random() < 0.4 else [rng.choice(FAULTS)]
                _post(f"{info['admin_url']}/_sim/faults", {"target": target, "faults": faults, "slow_ms": 1500})
                if rng.random() < 0.3:
                    victim = rng.randrange(1, args.targets)
                    active = [i for i in active if i != victim] if victim in active else sorted([*active, victim])
                    write_sd(active)
                if time.monotonic() >= next_sample:
                    samples.append((time.monotonic() - started, _sample(metrics)))
                    next_sample += 5.0
                time.sleep(0.5)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(15)
            sim.send_signal(signal.SIGTERM)
            sim.wait(15)
    warm = [s for t, s in samples if t >= args.seconds * 0.2]
    rss = [s["process_resident_memory_bytes"] / 2**20 for s in warm]
    fds = [s["process_open_fds"] for s in warm]
    tasks = [s["comfywatch_asyncio_tasks"] for s in warm]
    tail = max(1, len(warm) // 5)
    growth = statistics.median(rss[-tail:]) - statistics.median(rss[:tail])
    print(f"duration {args.seconds:.0f} s, {args.targets} targets at {args.interval}, "
          f"samples after warm-up {len(warm)}")
    print(f"RSS MiB: first {rss[0]:.1f}, last {rss[-1]:.1f}, max {max(rss):.1f}, growth (median of last fifth - "
          f"median of first fifth) {growth:+.2f} MiB (limit +5)")
    print(f"open fds: min {min(fds):.0f}, max {max(fds):.0f}, first {fds[0]:.0f}, last {fds[-1]:.0f}")
    print(f"asyncio tasks: min {min(tasks):.0f}, max {max(tasks):.0f}, first {tasks[0]:.0f}, last {tasks[-1]:.0f}")
    print(f"jobs counted: {warm[-1]['jobs']:.0f}")


if __name__ == "__main__":
    main()
