"""Encoding a target's /metrics lines when its poll ends (Daemon.run_group, exporter.ScrapeClock), against the
simulated ComfyUI: only when someone scrapes, and then without waiting for the next scrape."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import structlog

import comfywatch.daemon.service
from comfywatch.export.target_encoder import is_current
from comfywatch.sim.admin import start_sim
from comfywatch.state import TargetState
from tests.helpers import eventually, running_daemon, scrape
from tests.integration.conftest import TARGET, config_toml, target_toml


async def _polled(state: TargetState, after: float) -> float:
    """Wait (reading the state, not /metrics) until a ``system`` check succeeded after *after*."""

    async def last() -> float:
        return state.check("system").last_success or 0.0

    return await eventually(last, lambda seen: seen > after, what="another system poll")


async def test_a_daemon_nobody_scrapes_encodes_nothing(tmp_path: Path) -> None:
    """Polls alone never encode lines: with no scrape to expect, that work would be for nothing."""
    async with await start_sim() as sim, running_daemon(config_toml(target_toml(TARGET, sim.url)), tmp_path) as (
            daemon, _):
        state = daemon.runtimes[TARGET].state
        seen = await _polled(state, 0.0)
        await _polled(state, seen)
        assert not state.label_cache  # no encoding, not even a label string


async def test_polls_encode_ahead_of_regular_scrapes(tmp_path: Path) -> None:
    """Scraped regularly, a target's lines are re-encoded as its polls end: between two scrapes they catch up
    with the state without a scrape asking for it, so the next scrape only copies them."""
    async with await start_sim() as sim, running_daemon(config_toml(target_toml(TARGET, sim.url)), tmp_path) as (
            daemon, base):
        state = daemon.runtimes[TARGET].state
        seen = await _polled(state, 0.0)
        for _ in range(3):  # scraped once per poll, as a Prometheus scraping as often as the daemon polls
            await scrape(f"{base}/metrics")
            seen = await _polled(state, seen)
        await scrape(f"{base}/metrics")
        scraped = time.time()
        await _polled(state, scraped)  # the state moved on since the last scrape (durations, timestamps) ...

        async def current() -> bool:
            return is_current(state, time.time())

        await eventually(current, bool, what="lines encoded after a poll, with no scrape since")
        assert daemon.scrapes.interval is not None and daemon.scrapes.interval < 5


async def test_one_scrape_is_enough_to_encode_ahead(tmp_path: Path) -> None:
    """After the first scrape the daemon expects the next one within a poll interval (the usual set-up), so
    only that first scrape has to encode the fleet itself."""
    async with await start_sim() as sim, running_daemon(config_toml(target_toml(TARGET, sim.url)), tmp_path) as (
            daemon, base):
        state = daemon.runtimes[TARGET].state
        await _polled(state, 0.0)
        await scrape(f"{base}/metrics")
        await _polled(state, time.time())

        async def current() -> bool:
            return is_current(state, time.time())

        await eventually(current, bool, what="lines encoded after a poll that followed the only scrape")


async def test_an_encoding_error_never_costs_a_poll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in encoding ahead is logged and the target keeps being polled (the scrape would encode again)."""

    def broken(state: TargetState) -> None:
        raise RuntimeError("encoder bug")

    monkeypatch.setattr(comfywatch.daemon.service, "prepare", broken)
    async with await start_sim() as sim, running_daemon(config_toml(target_toml(TARGET, sim.url)), tmp_path) as (
            daemon, base):
        state = daemon.runtimes[TARGET].state
        await _polled(state, 0.0)
        await scrape(f"{base}/metrics")
        with structlog.testing.capture_logs() as logs:
            seen = await _polled(state, time.time())
            await _polled(state, seen)
        failures = [entry for entry in logs if entry.get("event") == "encode_failed"]
        assert failures and all(entry["target"] == TARGET for entry in failures)
        assert daemon.alive()
