"""The daemon's poll slots (comfywatch.slots): targets batched into shared scheduler jobs, seen from outside."""

from __future__ import annotations

from pathlib import Path

from comfywatch.sim.admin import start_sim
from tests.integration.conftest import CHECKS, config_toml, target_toml, watching

FAILURES = "comfyui_request_failures_total"
OVERRUNS = "comfywatch_check_overruns_total"


async def test_a_target_added_to_a_running_slot_is_polled_at_once(tmp_path: Path) -> None:
    """Polling every hour, a target added by reload joins the slot that already ran and is polled now,
    not an hour later; the target already in that slot is not polled again."""
    async with await start_sim(targets=1) as sim:
        first = target_toml("a", sim.target_url(None))
        async with watching(config_toml(first, interval="1h"), tmp_path, target="a") as watch:
            m = await watch.metrics()
            polls_a = m.value("comfyui_requests_total", target="a", endpoint="system_stats", code="200")
            (tmp_path / "comfywatch.toml").write_text(
                config_toml(first, target_toml("b", sim.target_url(0)), interval="1h"), encoding="utf-8")
            assert await watch.daemon.reload()
            slot_a, slot_b = watch.daemon._slots.slot_of("a"), watch.daemon._slots.slot_of("b")
            assert slot_a is not None and slot_a is slot_b
            m = await watch.ready("b")
            assert m.value("comfyui_requests_total", target="a", endpoint="system_stats", code="200") == polls_a


async def test_a_poll_still_running_when_its_slot_fires_is_skipped_and_counted(tmp_path: Path) -> None:
    """Answers of 700 ms with a 1 s interval and a 900 ms timeout: no request is cut, but a poll's three reads
    (never skipped: no monitoring WebSocket) take 2.1 s, so the slot's next runs find the poll still going and
    count an overrun for each of its checks instead of starting a second one."""
    async with await start_sim() as sim:
        config = config_toml(target_toml("sim", sim.target_url(None)), interval="1s", timeout="900ms")
        config = config.replace("[defaults]\n", "[defaults]\nwebsocket_monitor = false\n", 1)
        async with watching(config, tmp_path) as watch:
            await sim.set_faults(["slow"], slow_ms=700)
            m = await watch.until(
                lambda m: all((watch.value(m, OVERRUNS, check=check) or 0) >= 2 for check in CHECKS),
                "overruns counted for every check of the poll",
            )
            assert (watch.value(m, FAILURES, endpoint="system_stats", reason="timeout") or 0) == 0
            await sim.set_faults([])
            await watch.polls(2)
            assert watch.value(await watch.metrics(), "comfyui_up") == 1.0
