"""Benchmark: what one catalogue refresh of the ``catalog`` check costs, and what that makes per hour.

A subprocess serves the bodies recorded from a real ComfyUI 0.3.64 verbatim (``/object_info``: 478 classes,
496 KB; ``/models`` and its 20 folders; ``/internal/logs/raw``; ``/system_stats``). This process then runs the
check's own code path for ``--rounds`` refreshes: ``catalog.observe`` (``/object_info``, the model lists, the
fingerprint) and ``observe_log``, and lints ``--workflows`` copies of a recorded workflow against the catalogue.
Reported: bytes received per refresh (the server counts them), comfywatch's CPU per refresh
(``time.process_time``: the server is another process), wall time, and the CPU of an idle wake-up (the check
wakes every ``CHECK_INTERVAL`` and sends nothing when nothing changed), and the CPU of a refresh by the check
itself of a server whose catalogue is unchanged (no watched workflows: the parse is skipped by digest). Per
hour: the default (2 refreshes and the wake-ups) against reading the catalogue on every 15 s poll (240
refreshes). The server's own cost of building ``/object_info`` is not measured here (no real ComfyUI on this
machine); the recording's request took 55.9 ms.

    .venv/bin/python bench/catalog.py [--rounds 20] [--workflows 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale import stop_children_on_sigterm

from comfywatch.checks import catalog as catalog_check
from comfywatch.checks.context import build_context
from comfywatch.config import Config, TargetConfig

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "comfyui"

SERVER = r"""
import json, sys
from pathlib import Path
from aiohttp import web
fixtures = Path(sys.argv[1])
sent = [0]
bodies = {"/object_info": "object_info.json", "/models": "models.json", "/internal/logs/raw": "internal_logs_raw.json",
          "/system_stats": "system_stats.json"}
async def handle(request):
    path = request.path.removeprefix("/api") if not request.path.startswith("/internal") else request.path
    if path == "/_sent":
        return web.json_response(sent[0])
    name = bodies.get(path) or ("models_checkpoints.json" if path.startswith("/models/") else None)
    if name is None:
        return web.Response(status=404)
    body = (fixtures / name).read_bytes()
    sent[0] += len(body)
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_route("GET", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=lambda *_: print("ready", flush=True))
"""


async def measure(port: int, rounds: int, workflows: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp())
    for index in range(workflows):
        shutil.copy(FIXTURES / "workflows" / "canary_preview_image.json", folder / f"w{index}.json")
    context = build_context(Config(), TargetConfig(name="bench", url=f"http://127.0.0.1:{port}"))
    api = context.local_api()
    stats, _ = await api.system_stats()
    cpu, wall, sent = [], [], []
    try:
        for _ in range(rounds):
            before_bytes = (await api.http.get_json("/_sent", endpoint="system_stats", parser=int))[0]
            started_cpu, started = time.process_time(), time.perf_counter()
            observation = await catalog_check.observe(context, stats)
            await catalog_check.observe_log(context)
            catalog_check.lint_verdicts([folder], observation.object_info)
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started)
            sent.append((await api.http.get_json("/_sent", endpoint="system_stats", parser=int))[0] - before_bytes)
        check = catalog_check.CatalogCheck([folder], 1800.0)
        context.state.up = 1.0
        await check.check(context)
        idle = []
        for _ in range(200):
            started_cpu = time.process_time()
            await check.check(context)
            idle.append(time.process_time() - started_cpu)
        # A refresh of a server whose catalogue has not changed (no watched workflows): the same requests, the
        # parse skipped by digest.
        unchanged_check = catalog_check.CatalogCheck([], 0.0)
        await unchanged_check.check(context)
        unchanged = []
        for _ in range(rounds):
            started_cpu = time.process_time()
            await unchanged_check.check(context)
            unchanged.append(time.process_time() - started_cpu)
    finally:
        await context.close()
        shutil.rmtree(folder)
    return {"cpu": statistics.median(cpu), "wall": statistics.median(wall), "bytes": statistics.median(sent),
            "idle": statistics.median(idle), "unchanged": statistics.median(unchanged),
            "classes": float(len(observation.object_info))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workflows", type=int, default=10)
    parser.add_argument("--port", type=int, default=18911)
    args = parser.parse_args()
    stop_children_on_sigterm()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(FIXTURES), str(args.port)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        result = asyncio.run(measure(args.port, args.rounds, args.workflows))
    finally:
        server.terminate()
        server.wait()
    refresh_cpu, idle_cpu, sent = result["cpu"], result["idle"], result["bytes"]
    print(json.dumps(result))
    print(f"per refresh ({result['classes']:.0f} classes, {args.workflows} workflows): {sent / 1e3:.0f} KB, "
          f"{refresh_cpu * 1e3:.1f} ms CPU, {result['wall'] * 1e3:.1f} ms wall; idle wake-up {idle_cpu * 1e6:.1f} µs")
    print(f"refresh of an unchanged server (check, no workflows, parse skipped by digest): "
          f"{result['unchanged'] * 1e3:.1f} ms CPU")
    wakeups = round(3600 / catalog_check.CHECK_INTERVAL)
    default = 2 * refresh_cpu + wakeups * idle_cpu
    every_poll = 240 * refresh_cpu
    print(f"per target per hour, default (2 refreshes + {wakeups} wake-ups): {2 * sent / 1e6:.2f} MB, "
          f"{default:.3f} s CPU")
    print(f"per target per hour, on every 15 s poll (240 refreshes): {240 * sent / 1e6:.1f} MB, {every_poll:.2f} s CPU")
    print(f"1000 targets, default: {2000 * sent / 1e9:.2f} GB/h, {default * 1000 / 3600 * 100:.2f} % of a core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
