"""What targets keep for the whole run, their monitoring sockets among it, is moved out of the cycle collector's
generations once the targets of a start or reload have settled (``Daemon._settle``): full collections, which stall
the event loop, then stop walking a whole fleet's connections."""

from __future__ import annotations

import gc
import io
import json
import weakref
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection

from comfywatch.daemon.service import REFREEZE_SECONDS
from comfywatch.sim.admin import start_sim
from tests.helpers import eventually
from tests.integration.conftest import Watch, config_toml, target_toml, watching


def _collected_sockets(port: int) -> int:
    """Monitoring sockets to the server on *port* still in the collector's generations: ``gc.get_objects()``
    leaves the frozen (permanent generation) out."""
    return sum(1 for obj in gc.get_objects() if isinstance(obj, ClientConnection)
               and obj.remote_address is not None and obj.remote_address[:2] == ("127.0.0.1", port))


async def _sockets_frozen(watch: Watch, port: int, target: str) -> None:
    await watch.until(lambda m: m.value("comfywatch_websocket_connected", target=target) == 1.0,
                      f"{target}'s monitor connected")

    async def probe() -> int:
        return _collected_sockets(port)

    # Found before the settle (at least 10 s after the first poll), or "none left" below would prove nothing.
    assert _collected_sockets(port) >= 1

    # Settled: 10 s after its first poll (at 1 s intervals, SETTLE_MIN_SECONDS is the later).
    await eventually(probe, lambda count: count == 0, timeout=30.0, what=f"{target}'s monitoring socket frozen")


def _freezes(log_stream: io.StringIO) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, log_stream.getvalue().splitlines()) if line["event"] == "objects_frozen"]


async def test_sockets_opened_after_start_and_after_a_reload_are_frozen(tmp_path: Path, log_stream: io.StringIO
                                                                        ) -> None:
    async with await start_sim() as sim, watching(config_toml(target_toml("sim", sim.url)), tmp_path) as watch:
        port = int(sim.url.rsplit(":", 1)[1])
        # The socket opened after the start-up freeze, at the target's first poll.
        await _sockets_frozen(watch, port, "sim")
        # Start-up, then the settle.
        assert [line["unfrozen"] for line in _freezes(log_stream)] == [False, False]

        config = tmp_path / "comfywatch.toml"
        config.write_text(config_toml(target_toml("sim", sim.url), target_toml("added", sim.url)), encoding="utf-8")
        assert await watch.daemon.reload()
        await _sockets_frozen(watch, port, "added")
        assert [line["unfrozen"] for line in _freezes(log_stream)] == [False, False, False]


async def test_a_later_switch_never_moves_the_freeze_earlier(tmp_path: Path) -> None:
    async with await start_sim() as sim, watching(config_toml(target_toml("sim", sim.url)), tmp_path) as watch:
        daemon, scheduler = watch.daemon, watch.daemon.scheduler
        assert scheduler is not None
        later = datetime.now(UTC) + timedelta(hours=1)
        daemon._schedule_settle(later)
        daemon._schedule_settle(datetime.now(UTC) + timedelta(seconds=10))
        job = scheduler.get_job("\0settle")
        assert job is not None and job.next_run_time == later
        daemon._schedule_settle(later + timedelta(minutes=1))
        moved = scheduler.get_job("\0settle")
        assert moved is not None and moved.next_run_time == later + timedelta(minutes=1)


class _Node:
    def __init__(self) -> None:
        self.cycle = self


async def test_the_hourly_refreeze_frees_garbage_cycles_among_frozen_objects(tmp_path: Path) -> None:
    async with await start_sim() as sim, watching(config_toml(target_toml("sim", sim.url)), tmp_path) as watch:
        scheduler = watch.daemon.scheduler
        assert scheduler is not None
        job = scheduler.get_job("\0refreeze")
        assert job is not None and job.trigger.interval == timedelta(seconds=REFREEZE_SECONDS)

        node = _Node()
        ref = weakref.ref(node)
        await watch.daemon._settle()
        del node
        gc.collect()
        # Frozen, the cycle outlives the collections that follow a settle...
        assert ref() is not None
        await watch.daemon._settle()
        assert ref() is not None
        # ...until the refreeze.
        await watch.daemon._refreeze()
        assert ref() is None
        assert gc.get_freeze_count() > 0
