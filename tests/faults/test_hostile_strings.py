"""Hostile strings and sizes against the real daemon process: no target can blind the fleet or bloat /metrics.

One ``comfywatch run`` watches five stand-in servers: one sends a lone surrogate, terminal escapes and line
breaks in every string of ``/system_stats`` and in the ids of ``/queue``; one a 20 MB ``comfyui_version``; one
100,000 devices (16 MB); one 5,000 devices and a 100,000-character version in an answer just under the
``/system_stats`` body cap; the fifth is healthy. A background watcher scrapes ``/metrics`` the whole time.
Every scrape must answer 200 within a second; the two answers over the cap make their targets down as
``invalid_response`` without being decoded; the others must be up with their values sanitized and bounded (the
healthy one in every scrape); the page must pass ``promtool check metrics``, and the daemon's memory must stay
bounded; ``/probe`` of the hostile servers and ``comfywatch doctor`` against them must give clean, bounded output
too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import pytest
import pytest_asyncio

from comfywatch.clients.local import SYSTEM_STATS_MAX_BODY
from comfywatch.parse.text import MAX_CHARS, MAX_DEVICES
from tests.conftest import TIMEOUT_FACTOR
from tests.faults.harness import Metrics, Watch, daemon_process, failures, wait_for
from tests.faults.hostile import (
    HOSTILE_TEXT,
    HUGE_VERSION_CHARS,
    MANY_DEVICES,
    HostileServer,
    hostile_queue,
    hostile_system_stats,
)
from tests.unit.test_exposition import promtool_or_skip

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

TARGETS = ("surrogates", "huge_version", "many_devices", "under_cap", "healthy")
#: Targets whose /system_stats answer is over its body cap: down, the answer never decoded.
OVERSIZED = ("huge_version", "many_devices")
#: Devices and version characters of ``under_cap``: far past what is kept (64, 256), yet under the body cap.
UNDER_CAP_DEVICES, UNDER_CAP_VERSION_CHARS = 5_000, 100_000
#: Every scrape, including those that land while 20 MB answers are sent and refused (the bound the other fault
#: matrices use, with room for a starved CI core).
SCRAPE_LIMIT_S = 2.0
#: Polls of every target the watcher sees before the verdict.
POLLS = 4
#: Poll interval and request timeout: the shortest the configuration accepts.
INTERVAL_S, TIMEOUT_S = 1, 0.9
#: Far above the ~60 MB the daemon needs for these five targets, far below what unbounded labels cost
#: (a 20 MB version kept as label text and cache keys added ~180 MB; 100,000 devices ~400,000 samples).
RSS_LIMIT_BYTES = 400 * 2**20
#: /metrics of five targets, with 64 devices on one of them.
PAGE_LIMIT_BYTES = 256 * 2**10
#: How a refused answer is described (in doctor's output): the /system_stats cap, not the client's.
TOO_LARGE = f"response body larger than {SYSTEM_STATS_MAX_BODY} bytes"
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
SANITIZED = "\ufffd [2J [1;31mFAKE: all checks passed "


@dataclass
class Record:
    metrics: Metrics
    watch: Watch
    probes: dict[str, tuple[int, str]]
    doctor: dict[str, tuple[int, bytes]]


def _config(servers: dict[str, HostileServer]) -> str:
    parts = [f'[defaults]\ninterval = "{INTERVAL_S}s"\ntimeout = "{int(TIMEOUT_S * 1000)}ms"\n']
    for name, server in servers.items():
        parts.append(f'[[targets]]\nname = "{name}"\nurl = "{server.url}"\n  [targets.canary]\n  enabled = false\n')
    return "\n".join(parts)


def _refusals(metrics: Metrics, name: str) -> float:
    """How many /system_stats answers of *name* failed as ``invalid_response``."""
    return failures(metrics, name).get(("system_stats", "invalid_response"), 0.0)


def _progress(metrics: Metrics) -> dict[str, float]:
    """Per target, what moves with each poll: when an up target's system check last succeeded, how many
    answers an oversized target had refused."""
    return {name: (_refusals(metrics, name) if name in OVERSIZED else
                   metrics.value("comfywatch_check_last_success_timestamp_seconds", target=name, check="system")
                   or 0.0) for name in TARGETS}


def _polled(metrics: Metrics, since: dict[str, float], polls: int) -> bool:
    """Every target was polled *polls* times after *since* (a :func:`_progress`): up targets are up and their
    system check succeeded, oversized ones are down and refused an answer each poll."""
    now = _progress(metrics)
    for name in TARGETS:
        if metrics.value("comfyui_up", target=name) != (0.0 if name in OVERSIZED else 1.0):
            return False
        step = 1.0 if name in OVERSIZED else INTERVAL_S
        if now[name] < since.get(name, 0.0) + (polls - 0.5) * step:
            return False
    return True


async def _probe(session: aiohttp.ClientSession, base: str, url: str) -> tuple[int, str]:
    async with session.get(f"{base}/probe?target={quote(url, safe='')}&module=local",
                           timeout=aiohttp.ClientTimeout(total=10)) as response:
        return response.status, (await response.read()).decode("utf-8")


def _doctor(url: str) -> tuple[int, bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYWATCH_")}
    done = subprocess.run([sys.executable, "-m", "comfywatch", "doctor", "--url", url], capture_output=True,
                          timeout=120 * TIMEOUT_FACTOR, env={**env, "NO_COLOR": "1"}, check=False)
    return done.returncode, done.stdout + done.stderr


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def record(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Record]:
    tmp = tmp_path_factory.mktemp("hostile_strings")
    servers = {name: await HostileServer().start() for name in TARGETS}
    servers["surrogates"].system_body = hostile_system_stats(text=HOSTILE_TEXT)
    servers["surrogates"].queue_body = hostile_queue()
    servers["huge_version"].system_body = hostile_system_stats(version="9" * HUGE_VERSION_CHARS)
    servers["many_devices"].system_body = hostile_system_stats(devices=MANY_DEVICES)
    servers["under_cap"].system_body = hostile_system_stats(version="9" * UNDER_CAP_VERSION_CHARS,
                                                            devices=UNDER_CAP_DEVICES)
    sizes = {name: len(servers[name].system_body) for name in (*OVERSIZED, "under_cap")}
    assert sizes["under_cap"] <= SYSTEM_STATS_MAX_BODY < min(sizes[name] for name in OVERSIZED), sizes
    watch_task: asyncio.Task[None] | None = None
    try:
        async with daemon_process(tmp, _config(servers)) as proc:
            watch = Watch(f"{proc.url}/metrics")
            try:
                first = await wait_for(watch, lambda m: _polled(m, {}, 1), timeout=20, what="every target polled")
                watch_task = asyncio.create_task(watch.run(period=0.2))
                since = _progress(first)
                metrics = await wait_for(watch, lambda m: _polled(m, since, POLLS), timeout=(POLLS + 2) * INTERVAL_S,
                                         what=f"{POLLS} more polls of every target")
                watch_task.cancel()
                await asyncio.gather(watch_task, return_exceptions=True)
                async with aiohttp.ClientSession() as session:
                    probes = {name: await _probe(session, proc.url, servers[name].url) for name in TARGETS}
                doctor = {name: await asyncio.to_thread(_doctor, servers[name].url)
                          for name in ("surrogates", "under_cap", "huge_version")}
            finally:
                if watch_task is not None:
                    watch_task.cancel()
                    await asyncio.gather(watch_task, return_exceptions=True)
                await watch.close()
        yield Record(metrics, watch, probes, doctor)
    finally:
        for server in servers.values():
            await server.close()


async def test_metrics_answer_200_within_a_second(record: Record) -> None:
    """No scrape failed or took a second, while 16 and 20 MB answers were sent every poll."""
    assert record.watch.errors == []
    assert len(record.watch.latencies) >= 10
    assert max(record.watch.latencies) < SCRAPE_LIMIT_S * TIMEOUT_FACTOR, sorted(record.watch.latencies)[-5:]


async def test_oversized_answers_are_down_and_the_rest_up(record: Record) -> None:
    """The targets answering /system_stats over its cap are down, each poll's answer refused as
    ``invalid_response`` (their /queue and /history still read); the other hostile targets are up like the
    healthy one: their values are served, sanitized, not dropped. The healthy one was up in every scrape, and
    none of its requests failed."""
    metrics = record.metrics
    assert {name: metrics.value("comfyui_up", target=name) for name in TARGETS} == {
        name: 0.0 if name in OVERSIZED else 1.0 for name in TARGETS}
    assert metrics.value("comfywatch_encode_failures_total") == 0
    healthy = record.watch.values("comfyui_up", phase="start", target="healthy")
    assert len(healthy) >= 10 and set(healthy) == {1.0}
    # /api/jobs answers 404 once (a 0.3.64 server has none), and so does /object_info (the hostile server serves
    # no catalogue: the catalog check's read fails): those are the only failures of the others.
    for name in TARGETS:
        failed = {key: count for key, count in failures(metrics, name).items() if count}
        refused = failed.pop(("system_stats", "invalid_response"), 0.0)
        failed.pop(("object_info", "not_found"), None)
        assert failed == {("jobs", "not_found"): 1.0}, (name, failed)
        assert refused >= POLLS + 1 if name in OVERSIZED else refused == 0, (name, refused)
    for name in OVERSIZED:
        assert metrics.value("comfywatch_check_last_success_timestamp_seconds", target=name, check="system") is None
        assert metrics.find("comfyui_info", target=name) == []


async def test_values_are_sanitized_and_bounded(record: Record) -> None:
    """The surrogate target's labels carry U+FFFD and spaces instead of the surrogate and escapes; under the
    cap, the 100,000-character version is cut to 256 characters and 64 of the 5,000 devices are series; each
    cut is counted."""
    metrics = record.metrics
    info = {labels["target"]: labels for labels, _ in metrics.find("comfyui_info")}
    assert info["surrogates"]["version"] == "0.3.64" + SANITIZED
    assert info["surrogates"]["os"] == "posix" + SANITIZED
    assert info["under_cap"]["version"] == "9" * (MAX_CHARS - 1) + "…"
    devices = {labels["device"] for labels, _ in metrics.find("comfyui_device_vram_free_bytes", target="surrogates")}
    assert devices == {"cpu" + SANITIZED}
    assert len(metrics.find("comfyui_device_vram_free_bytes", target="under_cap")) == MAX_DEVICES
    assert len(metrics.find("comfyui_device_vram_free_bytes", target="healthy")) == 1
    assert metrics.value("comfyui_queue_running", target="surrogates") == 1
    # One cut per poll: the version, and the device list.
    assert (metrics.value("comfywatch_truncations_total", what="string") or 0) >= POLLS
    assert (metrics.value("comfywatch_truncations_total", what="devices") or 0) >= POLLS


async def test_page_passes_promtool_and_stays_small(record: Record) -> None:
    """The page is small (no 21 MB label), free of raw control characters, and `promtool check metrics`
    accepts it."""
    text = record.metrics.text
    assert len(text.encode("utf-8")) < PAGE_LIMIT_BYTES
    assert UNSAFE.search(text) is None
    done = await asyncio.to_thread(subprocess.run, [promtool_or_skip(), "check", "metrics"],
                                   input=text.encode("utf-8"), capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stdout.strip() == b"", done.stdout.decode()


async def test_memory_stays_bounded(record: Record) -> None:
    """The daemon's RSS, at its highest in any scrape, stays far below what unbounded values cost."""
    highest = record.watch.highest("process_resident_memory_bytes")
    assert highest is not None and highest < RSS_LIMIT_BYTES, highest


async def test_probe_of_hostile_targets(record: Record) -> None:
    """/probe of each hostile server answers 200 with the same sanitized, bounded values; of an oversized one,
    a failed probe with its ``invalid_response`` counted, and of no other."""
    for name, (status, body) in record.probes.items():
        assert status == 200, (name, body[:500])
        assert UNSAFE.search(body) is None, name
        assert len(body.encode("utf-8")) < PAGE_LIMIT_BYTES, name
        success = Metrics(body).value("comfyui_probe_success")
        assert success == (0.0 if name in OVERSIZED else 1.0), (name, success)
        refused = Metrics(body).value("comfyui_request_failures_total", endpoint="system_stats",
                                      reason="invalid_response")
        # A healthy probe's reason is absent (lean detail creates it with its first failure) or 0 (full).
        assert (refused == 1.0) if name in OVERSIZED else (refused in (None, 0.0)), (name, refused)
    assert f'version="0.3.64{SANITIZED}"' in record.probes["surrogates"][1]
    assert f'version="{"9" * (MAX_CHARS - 1)}…"' in record.probes["under_cap"][1]


async def test_doctor_output_is_clean_and_bounded(record: Record) -> None:
    """doctor prints the hostile server's strings without escapes or line breaks of the server's making, the
    100,000-character version as 256 characters, and the 20 MB answer as refused for its size."""
    for name, (code, output) in record.doctor.items():
        text = output.decode("utf-8")
        assert code in (0, 1), (name, text[-2000:])
        assert UNSAFE.search(text) is None, (name, [line for line in text.splitlines() if UNSAFE.search(line)])
        assert len(output) < 64 * 2**10, (name, len(output))
    assert "FAKE: all checks passed" in record.doctor["surrogates"][1].decode("utf-8")
    assert json.dumps("\x1b") not in record.doctor["surrogates"][1].decode("utf-8")
    under_cap = record.doctor["under_cap"][1].decode("utf-8")
    assert "9" * (MAX_CHARS - 1) + "…" in under_cap and "9" * MAX_CHARS not in under_cap
    assert record.doctor["huge_version"][0] == 1
    assert TOO_LARGE in record.doctor["huge_version"][1].decode("utf-8")
