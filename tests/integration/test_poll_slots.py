"""The daemon's poll slots (comfywatch.daemon.slots): targets batched into shared scheduler jobs, seen from outside."""

from __future__ import annotations

import re
import time
from pathlib import Path

import aiohttp
import pytest

from comfywatch.daemon import service
from comfywatch.sim.admin import start_sim
from tests.conftest import TIMEOUT_FACTOR
from tests.faults.hostile import Fault, HostileServer, Mode
from tests.helpers import eventually, running_daemon
from tests.integration.conftest import CHECKS, config_toml, target_toml, watching

FAILURES = "comfyui_request_failures_total"
OVERRUNS = "comfywatch_check_overruns_total"


async def test_a_target_added_to_a_running_slot_is_polled_at_once(tmp_path: Path) -> None:
    """Polling every hour, a target added by reload joins the slot that already ran and is polled now,
    not an hour later; the target already in that slot is not polled again. No monitoring WebSocket: a socket
    that closes polls its target at once, out of its slot, which would count here as a poll the reload made."""
    async with await start_sim(targets=1) as sim:
        first = target_toml("a", sim.target_url(None))
        async with watching(config_toml(first, interval="1h", monitor=False), tmp_path, target="a") as watch:
            m = await watch.metrics()
            polls_a = m.value("comfyui_requests_total", target="a", endpoint="system_stats", code="200")
            (tmp_path / "comfywatch.toml").write_text(
                config_toml(first, target_toml("b", sim.target_url(0)), interval="1h", monitor=False),
                encoding="utf-8")
            assert await watch.daemon.reload()
            slot_a, slot_b = watch.daemon._slots.slot_of("a"), watch.daemon._slots.slot_of("b")
            assert slot_a is not None and slot_a is slot_b
            m = await watch.ready("b")
            assert m.value("comfyui_requests_total", target="a", endpoint="system_stats", code="200") == polls_a


async def test_a_poll_still_running_when_its_slot_fires_is_skipped_and_counted(tmp_path: Path) -> None:
    """Answers of 450 ms with a 1 s interval and a 900 ms timeout: no request is cut, but a poll's three reads
    (never skipped: no monitoring WebSocket) take 1.35 s, so the slot's next runs find the poll still going and
    count an overrun for each of its checks instead of starting a second one."""
    async with await start_sim() as sim:
        config = config_toml(target_toml("sim", sim.target_url(None)), interval="1s", timeout="900ms", monitor=False)
        async with watching(config, tmp_path) as watch:
            await sim.set_faults(["slow"], slow_ms=450)
            m = await watch.until(
                lambda m: all((watch.value(m, OVERRUNS, check=check) or 0) >= 2 for check in CHECKS),
                "overruns counted for every check of the poll",
            )
            assert (watch.value(m, FAILURES, endpoint="system_stats", reason="timeout") or 0) == 0
            await sim.set_faults([])
            await watch.polls(2)
            assert watch.value(await watch.metrics(), "comfyui_up") == 1.0


#: One sample line of the text exposition (the fleet test reads a few series without parsing the whole page:
#: prometheus_client's parser takes seconds for 200 targets, in the loop the daemon runs in).
_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


async def _by_target(base: str, name: str, **labels: str) -> dict[str, float]:
    """target -> value of the *name* series with *labels*, from one scrape of ``/metrics``."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    found: dict[str, float] = {}
    for sample in _SAMPLE.finditer(text):
        pairs = dict(_LABEL.findall(sample["labels"]))
        if sample["name"] == name and all(pairs.get(key) == value for key, value in labels.items()):
            found[pairs["target"]] = float(sample["value"])
    return found


async def test_targets_that_never_answer_do_not_starve_healthy_ones(tmp_path: Path) -> None:
    """190 targets that accept connections and never answer, 10 healthy ones, all every second with a 900 ms
    timeout and the default limit of 64 requests in flight (the hangers alone would fill it 2.7 times over): within
    10 s each healthy target is still polled at least 8 times (80 % of its interval) and stays up."""
    healthy = [f"ok{i}" for i in range(10)]
    hanging = [f"hang{i}" for i in range(190)]
    hangers = await HostileServer().start()
    await hangers.set_fault(Fault(Mode.SILENT))
    try:
        async with await start_sim(targets=len(healthy)) as sim:
            config = config_toml(*(target_toml(name, f"{hangers.url}/{name}") for name in hanging),
                                 *(target_toml(name, sim.target_url(i)) for i, name in enumerate(healthy)),
                                 interval="1s", timeout="900ms", monitor=False)
            async with running_daemon(config, tmp_path) as (_daemon, base):

                async def up() -> dict[str, float]:
                    return await _by_target(base, "comfyui_up")

                # Without the monitoring socket every poll asks /system_stats: each poll is a request that must
                # find a slot among the hangers'.
                async def polls() -> dict[str, float]:
                    found = await _by_target(base, "comfyui_requests_total", endpoint="system_stats", code="200")
                    return {name: found.get(name, 0.0) for name in healthy}

                # Every target has been tried once: the hangers are hanging.
                await eventually(up, lambda values: all(values.get(name) == 0.0 for name in hanging),
                                 timeout=15, what="every hanging target down")
                start = await polls()
                began = time.monotonic()

                async def polled_since_start() -> dict[str, float]:
                    now = await polls()
                    return {name: now[name] - start[name] for name in healthy}

                await eventually(polled_since_start, lambda counts: min(counts.values()) >= 8,
                                 timeout=10, what="8 polls of every healthy target")
                assert time.monotonic() - began <= 10.0 * TIMEOUT_FACTOR + 1.0
                values = await up()
                assert all(values.get(name) == 1.0 for name in healthy), values
    finally:
        await hangers.close()


async def test_a_large_fleet_ramps_up_its_first_polls_and_sockets(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """30 targets at 1 s, start-up priced at 0.4 s a target: the first polls spread over max(1 s, 30 × 0.4 s) =
    12 s. The first slot's 25 targets are polled and connect their monitoring sockets at once; the second slot's
    five first run at {1 · golden ratio} of 12 s, 7.4 s after start, and open their sockets only then."""
    monkeypatch.setattr(service, "START_CPU_PER_TARGET", 0.4)
    names = [f"t{i:02d}" for i in range(30)]
    async with await start_sim(targets=len(names)) as sim:
        config = config_toml(*(target_toml(name, sim.target_url(i)) for i, name in enumerate(names)))
        began = time.monotonic()
        async with running_daemon(config, tmp_path) as (daemon, base):
            slots = {name: daemon._slots.slot_of(name) for name in names}
            late = [name for name in names if slots[name] is not slots[names[0]]]
            assert len(late) == 5
            early_slot, late_slot = slots[names[0]], slots[late[0]]
            assert early_slot is not None and late_slot is not None
            # The slot is scheduled once the daemon has started: a slow machine adds its start-up time.
            assert 0.618 * 12.0 - 0.1 <= late_slot.starts_at - began <= 0.618 * 12.0 + 5.0 * TIMEOUT_FACTOR

            connected = await eventually(lambda: _by_target(base, "comfywatch_websocket_connected"),
                                         lambda values: all(values.get(name) == 1.0 for name in names[:25]),
                                         timeout=10, what="the first slot's sockets")
            if time.monotonic() < late_slot.starts_at - 0.3:
                assert not any(connected.get(name) == 1.0 for name in late), connected
                polled = await _by_target(base, "comfyui_requests_total", endpoint="system_stats", code="200")
                assert not any(name in polled for name in late), polled
            await eventually(lambda: _by_target(base, "comfywatch_websocket_connected"),
                             lambda values: all(values.get(name) == 1.0 for name in late),
                             timeout=15, what="the second slot's sockets")
            assert time.monotonic() >= late_slot.starts_at - 0.05
