"""The daemon's discovery against a hostile file and a slow one: neither costs the fleet.

A file_sd file whose label key YAML decodes to an integer of thousands of digits must neither stop the daemon
from starting nor stop it from picking up other files; reading and hashing the files, and filtering them by
shard, happen in a worker thread, so ``/metrics`` is served while they take their time. Everything runs on
loopback: the real daemon in this loop, one simulator serving ``/t/0`` ... ``/t/3``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import comfywatch.daemon.service
from comfywatch.sim.admin import SimHandle, start_sim
from tests.conftest import TIMEOUT_FACTOR
from tests.helpers import Metrics, eventually, running_daemon, scrape
from tests.integration.test_discovery import LogRecorder, config, up_targets, write_atomically

#: How long a held call waits for the test to let it go: only reached when it holds the event loop itself.
HOLD_SECONDS = 10 * TIMEOUT_FACTOR


@pytest.fixture
async def fleet() -> AsyncIterator[SimHandle]:
    async with await start_sim(targets=4) as handle:
        yield handle


async def _async(value: Any) -> Any:
    return value


async def test_a_huge_integer_label_key_neither_stops_the_start_nor_later_files(
    fleet: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started with a YAML file whose label key is a 4,000-hex-digit integer, the daemon runs the other file's
    target and that file's good group, logs the bad group as a problem, and still picks up a file added later."""
    recorder = LogRecorder()
    monkeypatch.setattr(comfywatch.daemon.service, "log", recorder)
    sd = tmp_path / "sd"
    sd.mkdir()
    write_atomically(sd / "a.json", json.dumps([{"targets": [fleet.target_url(0)], "labels": {"name": "before"}}]))
    write_atomically(sd / "b.yml", f"- targets: ['{fleet.target_url(1)}']\n  labels: {{name: same-file}}\n"
                                   f"- targets: ['{fleet.target_url(2)}']\n  labels:\n"
                                   "    ? 0x" + "f" * 4000 + "\n    : x\n")
    async with running_daemon(config(sd), tmp_path) as (daemon, base):
        async def metrics() -> Metrics:
            return await scrape(f"{base}/metrics")

        await eventually(metrics, lambda m: set(up_targets(m)) == {"before", "same-file"}, what="good targets up")
        assert f"{sd / 'b.yml'}[1].labels: label names must be strings (quote them in YAML)" in recorder.problems()

        write_atomically(sd / "c.json", json.dumps([{"targets": [fleet.target_url(3)], "labels": {"name": "added"}}]))
        await eventually(metrics, lambda m: set(up_targets(m)) == {"before", "same-file", "added"},
                         what="the file added later picked up")
        assert not any(event == "discovery_apply_failed" for _, event, _ in recorder.events)
        assert set(daemon.runtimes) == {"before", "same-file", "added"}


class Hold:
    """Wraps a function; its first call waits, in whatever thread makes it, until the test lets it go."""

    def __init__(self, wrapped: Callable[..., Any]) -> None:
        self.wrapped = wrapped
        self.entered = threading.Event()
        self.released = threading.Event()
        #: For the held call: True when the test let it go, False when it gave up waiting.
        self.outcome: list[bool] = []

    def __call__(self, *args: Any) -> Any:
        if not self.entered.is_set():
            self.entered.set()
            self.outcome.append(self.released.wait(HOLD_SECONDS))
        return self.wrapped(*args)


@pytest.mark.parametrize("blocking", ["load_discovered", "discovery_fingerprint"])
async def test_metrics_are_served_while_discovery_reads_the_files(
    fleet: SimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blocking: str
) -> None:
    """While the files are loaded (or fingerprinted) for a refresh, held until the test says so, ``/metrics``
    answers: the work is off the event loop. Let go, the refresh completes and the new file's target comes up."""
    sd = tmp_path / "sd"
    sd.mkdir()
    write_atomically(sd / "a.json", json.dumps([{"targets": [fleet.target_url(0)], "labels": {"name": "first"}}]))
    async with running_daemon(config(sd), tmp_path) as (_daemon, base):
        async def metrics() -> Metrics:
            return await scrape(f"{base}/metrics")

        await eventually(metrics, lambda m: "first" in up_targets(m), what="first up")
        hold = Hold(getattr(comfywatch.daemon.service, blocking))
        monkeypatch.setattr(comfywatch.daemon.service, blocking, hold)
        write_atomically(sd / "b.json", json.dumps([{"targets": [fleet.target_url(1)], "labels": {"name": "second"}}]))
        await eventually(lambda: _async(hold.entered.is_set()), bool, what=f"the refresh in {blocking}")

        during = await metrics()
        assert "first" in up_targets(during)
        hold.released.set()

        await eventually(metrics, lambda m: {"first", "second"} <= set(up_targets(m)), what="second up")
        assert hold.outcome == [True]
