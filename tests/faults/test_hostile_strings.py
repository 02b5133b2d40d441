"""Hostile strings and sizes against the real daemon process: no target can blind the fleet or bloat /metrics.

One ``comfywatch run`` watches four stand-in servers: one sends a lone surrogate, terminal escapes and line
breaks in every string of ``/system_stats`` and in the ids of ``/queue``; one a 20 MB ``comfyui_version``; one
100,000 devices; the fourth is healthy. A background watcher scrapes ``/metrics`` the whole time. Every scrape
must answer 200 within a second, every target must be up with its values sanitized and bounded, the page must
pass ``promtool check metrics``, and the daemon's memory must stay bounded; ``/probe`` of the hostile servers
and ``comfywatch doctor`` against them must give clean, bounded output too.
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

TARGETS = ("surrogates", "huge_version", "many_devices", "healthy")
#: Every scrape, including those that land while a 20 MB body is parsed.
SCRAPE_LIMIT_S = 1.0
#: Polls of every target the watcher sees before the verdict (a 20 MB body read and parsed each time).
POLLS = 4
#: Poll interval and request timeout: decoding 100,000 devices' JSON takes the daemon half a second of CPU.
INTERVAL_S, TIMEOUT_S = 3, 2
#: Far above the ~100 MB the daemon needs for these four targets, far below what unbounded labels cost
#: (a 20 MB version kept as label text and cache keys added ~180 MB; 100,000 devices ~400,000 samples).
RSS_LIMIT_BYTES = 400 * 2**20
#: /metrics of four targets, with 64 devices on one of them.
PAGE_LIMIT_BYTES = 256 * 2**10
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
SANITIZED = "\ufffd [2J [1;31mFAKE: all checks passed "


@dataclass
class Record:
    metrics: Metrics
    watch: Watch
    probes: dict[str, tuple[int, str]]
    doctor: dict[str, tuple[int, bytes]]


def _config(servers: dict[str, HostileServer]) -> str:
    parts = [f'[defaults]\ninterval = "{INTERVAL_S}s"\ntimeout = "{TIMEOUT_S}s"\n']
    for name, server in servers.items():
        parts.append(f'[[targets]]\nname = "{name}"\nurl = "{server.url}"\n  [targets.canary]\n  enabled = false\n')
    return "\n".join(parts)


def _polled(metrics: Metrics, since: dict[str, float], polls: int) -> bool:
    """Every target is up, and its system check succeeded *polls* polls after the one at *since* (by target)."""
    for name in TARGETS:
        last = metrics.value("comfywatch_check_last_success_timestamp_seconds", target=name, check="system")
        if metrics.value("comfyui_up", target=name) != 1.0 or last is None:
            return False
        if last < since.get(name, 0.0) + (polls - 0.5) * INTERVAL_S:
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
    watch_task: asyncio.Task[None] | None = None
    try:
        async with daemon_process(tmp, _config(servers)) as proc:
            watch = Watch(f"{proc.url}/metrics")
            try:
                first = await wait_for(watch, lambda m: _polled(m, {}, 1), timeout=20, what="every target up")
                watch_task = asyncio.create_task(watch.run(period=0.2))
                since = {name: first.value("comfywatch_check_last_success_timestamp_seconds", target=name,
                                           check="system") or 0.0 for name in TARGETS}
                metrics = await wait_for(watch, lambda m: _polled(m, since, POLLS), timeout=(POLLS + 2) * INTERVAL_S,
                                         what=f"{POLLS} more polls of every target")
                watch_task.cancel()
                await asyncio.gather(watch_task, return_exceptions=True)
                async with aiohttp.ClientSession() as session:
                    probes = {name: await _probe(session, proc.url, servers[name].url) for name in TARGETS}
                doctor = {name: await asyncio.to_thread(_doctor, servers[name].url)
                          for name in ("surrogates", "huge_version")}
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
    """No scrape failed or took a second, while 20 MB bodies were read and parsed every poll."""
    assert record.watch.errors == []
    assert len(record.watch.latencies) >= 10
    assert max(record.watch.latencies) < SCRAPE_LIMIT_S * TIMEOUT_FACTOR, sorted(record.watch.latencies)[-5:]


async def test_every_target_up_and_none_failed_to_encode(record: Record) -> None:
    """The hostile targets are up like the healthy one: their values are served, sanitized, not dropped. The
    healthy one was up in every scrape, and none of its requests failed."""
    metrics = record.metrics
    assert {name: metrics.value("comfyui_up", target=name) for name in TARGETS} == dict.fromkeys(TARGETS, 1.0)
    assert metrics.value("comfywatch_encode_failures_total") == 0
    healthy = record.watch.values("comfyui_up", phase="start", target="healthy")
    assert len(healthy) >= 10 and set(healthy) == {1.0}
    # /api/jobs answers 404 once (a 0.3.64 server has none): that is the only failure.
    assert {key: count for key, count in failures(metrics, "healthy").items() if count} == {("jobs", "not_found"): 1.0}


async def test_values_are_sanitized_and_bounded(record: Record) -> None:
    """The surrogate target's labels carry U+FFFD and spaces instead of the surrogate and escapes; the 20 MB
    version is cut to 256 characters; 64 of the 100,000 devices are series; each cut is counted."""
    metrics = record.metrics
    info = {labels["target"]: labels for labels, _ in metrics.find("comfyui_info")}
    assert info["surrogates"]["version"] == "0.3.64" + SANITIZED
    assert info["surrogates"]["os"] == "posix" + SANITIZED
    assert info["huge_version"]["version"] == "9" * (MAX_CHARS - 1) + "…"
    devices = {labels["device"] for labels, _ in metrics.find("comfyui_device_vram_free_bytes", target="surrogates")}
    assert devices == {"cpu" + SANITIZED}
    assert len(metrics.find("comfyui_device_vram_free_bytes", target="many_devices")) == MAX_DEVICES
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
    """/probe of each hostile server answers 200 with the same sanitized, bounded values."""
    for name, (status, body) in record.probes.items():
        assert status == 200, (name, body[:500])
        assert UNSAFE.search(body) is None, name
        assert len(body.encode("utf-8")) < PAGE_LIMIT_BYTES, name
        assert "comfyui_probe_success 1" in body.splitlines() or "comfyui_probe_success 1.0" in body.splitlines()
    assert f'version="0.3.64{SANITIZED}"' in record.probes["surrogates"][1]


async def test_doctor_output_is_clean_and_bounded(record: Record) -> None:
    """doctor prints the hostile server's strings without escapes or line breaks of the server's making, and
    the 20 MB version as 256 characters."""
    for name, (code, output) in record.doctor.items():
        text = output.decode("utf-8")
        assert code in (0, 1), (name, text[-2000:])
        assert UNSAFE.search(text) is None, (name, [line for line in text.splitlines() if UNSAFE.search(line)])
        assert len(output) < 64 * 2**10, (name, len(output))
    assert "FAKE: all checks passed" in record.doctor["surrogates"][1].decode("utf-8")
    assert json.dumps("\x1b") not in record.doctor["surrogates"][1].decode("utf-8")
