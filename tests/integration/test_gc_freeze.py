"""What targets keep for the whole run, their monitoring sockets among it, is moved out of the cycle collector's
generations once the targets of a start or reload have settled (``Daemon._settle``): full collections, which stall
the event loop, then stop walking a whole fleet's connections."""

from __future__ import annotations

import gc
from pathlib import Path

from websockets.asyncio.client import ClientConnection

from comfywatch.sim.admin import start_sim
from tests.helpers import eventually
from tests.integration.conftest import Watch, config_toml, target_toml, watching


def _collected_sockets(port: int) -> int:
    """Monitoring sockets to the server on *port* still in the collector's generations (not frozen)."""
    host = f"127.0.0.1:{port}"
    return sum(1 for obj in gc.get_objects() if isinstance(obj, ClientConnection)
               and obj.request is not None and obj.request.headers.get("Host") == host)


async def _sockets_frozen(watch: Watch, port: int, target: str) -> None:
    await watch.until(lambda m: m.value("comfywatch_websocket_connected", target=target) == 1.0,
                      f"{target}'s monitor connected")

    async def probe() -> int:
        return _collected_sockets(port)

    # Settled: its first poll, then two 1 s intervals.
    await eventually(probe, lambda count: count == 0, timeout=15.0, what=f"{target}'s monitoring socket frozen")


async def test_sockets_opened_after_start_and_after_a_reload_are_frozen(tmp_path: Path) -> None:
    async with await start_sim() as sim, watching(config_toml(target_toml("sim", sim.url)), tmp_path) as watch:
        port = int(sim.url.rsplit(":", 1)[1])
        # The socket opened after the start-up freeze, at the target's first poll.
        await _sockets_frozen(watch, port, "sim")

        (tmp_path / "comfywatch.toml").write_text(
            config_toml(target_toml("sim", sim.url), target_toml("added", sim.url)), encoding="utf-8")
        assert await watch.daemon.reload()
        await _sockets_frozen(watch, port, "added")
