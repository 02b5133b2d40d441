"""``Daemon.reload()`` after rewriting the configuration file: what is kept, added, removed, or refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfywatch.daemon import service as daemon_module
from comfywatch.redact import SECRETS
from comfywatch.sim.admin import SimHandle, start_sim
from tests.helpers import Metrics
from tests.integration.conftest import Watch, config_toml, sim_state_until, target_toml, watching

RELOAD_OK = "comfywatch_config_last_reload_success"
RELOAD_AT = "comfywatch_config_last_reload_timestamp_seconds"


def _toml(*targets: str) -> str:
    """The configuration of *targets*, polled at the shortest interval the configuration accepts."""
    return config_toml(*targets, interval="1s", timeout="500ms")


def _config(sim: SimHandle, *names: str) -> str:
    """Target ``a`` is the simulator's root server, ``b`` its ``/t/0``."""
    return _toml(*(target_toml(name, sim.target_url(None if name == "a" else 0)) for name in names))


def _targets(m: Metrics) -> set[str]:
    return {labels["target"] for _, labels, _ in m.samples if "target" in labels}


async def _rewrite(watch: Watch, tmp_path: Path, text: str) -> bool:
    (tmp_path / "comfywatch.toml").write_text(text, encoding="utf-8")
    return await watch.daemon.reload()


async def test_reload_keeps_unchanged_targets_adds_new_ones_and_drops_removed_ones(tmp_path: Path) -> None:
    """An unchanged target keeps its counters, an added one appears, a removed one's series all disappear."""
    async with await start_sim(targets=1) as sim, watching(_config(sim, "a"), tmp_path, target="a") as watch:
        for _ in range(2):
            await sim.submit(job_ms=1)
        m = await watch.until(lambda m: m.value("comfyui_jobs_total", target="a") == 2.0, "two jobs on a")
        state_a = watch.daemon.runtimes["a"].state
        requests_a = m.value("comfyui_requests_total", target="a", endpoint="system_stats", code="200") or 0.0
        loaded_at = m.value(RELOAD_AT) or 0.0

        assert await _rewrite(watch, tmp_path, _config(sim, "a", "b"))
        assert watch.daemon.runtimes["a"].state is state_a
        m = await watch.metrics()
        assert m.value("comfyui_jobs_total", target="a") == 2.0
        assert (m.value("comfyui_requests_total", target="a", endpoint="system_stats", code="200") or 0) >= requests_a
        assert m.value(RELOAD_OK) == 1.0
        assert (m.value(RELOAD_AT) or 0) >= loaded_at
        await watch.ready("b")
        await sim.submit(target=0, job_ms=1)
        m = await watch.until(lambda m: m.value("comfyui_jobs_total", target="b") == 1.0, "one job on b")
        assert m.value("comfyui_jobs_total", target="a") == 2.0
        assert m.value("comfywatch_targets", kind="local") == 2.0

        assert await _rewrite(watch, tmp_path, _config(sim, "b"))
        assert set(watch.daemon.runtimes) == {"b"}
        assert watch.daemon.scheduler is not None
        assert not [job for job in watch.daemon.scheduler.get_jobs() if job.id.startswith("a\0")]
        m = await watch.polls(2, check="system", target="b")
        assert _targets(m) == {"b"}, sorted(_targets(m))
        assert m.value("comfyui_jobs_total", target="b") == 1.0
        assert m.value("comfywatch_targets", kind="local") == 1.0
        # The removed target's monitoring WebSocket was closed with it.
        await sim_state_until(sim, lambda s: not s["ws_clients"], "no WebSocket left on a's server")


async def test_invalid_reload_keeps_the_running_configuration(tmp_path: Path) -> None:
    """A bad new file is refused: the old targets keep polling with their counters, reload_success 0 then 1."""
    async with await start_sim() as sim, watching(_config(sim, "a"), tmp_path, target="a") as watch:
        await sim.submit(job_ms=1)
        await watch.until(lambda m: m.value("comfyui_jobs_total", target="a") == 1.0, "one job on a")
        state_a = watch.daemon.runtimes["a"].state
        good = _config(sim, "a")
        broken = [
            good.replace('interval = "1s"', 'interval = "soon"'),   # invalid value
            good + "\n[defaults]\n",                                    # TOML error: table defined twice
            good.replace("[[targets]]", "[[targets]]\nintervall = \"1s\"", 1),  # unknown key
            good + "\n" + target_toml("a", sim.url),                     # duplicate target name
        ]
        for text in broken:
            assert not await _rewrite(watch, tmp_path, text), text
            assert watch.daemon.runtimes["a"].state is state_a
            m = await watch.polls(2, check="system", target="a")
            assert m.value(RELOAD_OK) == 0.0
            assert m.value("comfyui_up", target="a") == 1.0
            assert m.value("comfyui_jobs_total", target="a") == 1.0

        await sim.submit(job_ms=1)
        await watch.until(lambda m: m.value("comfyui_jobs_total", target="a") == 2.0, "still counting after failures")
        assert await _rewrite(watch, tmp_path, good)
        m = await watch.metrics()
        assert m.value(RELOAD_OK) == 1.0
        assert watch.daemon.runtimes["a"].state is state_a
        assert m.value("comfyui_jobs_total", target="a") == 2.0


async def test_removed_target_with_a_canary_in_flight_leaves_no_open_client(tmp_path: Path) -> None:
    """A canary still running when its target is removed cannot reopen the closed client's connections."""
    async with await start_sim(targets=1) as sim:
        config = _toml(target_toml("a", sim.url, canary="1s", canary_timeout="1s"))
        async with watching(config, tmp_path, target="a") as watch:
            await sim.set_faults(["stall"])
            await sim_state_until(
                sim, lambda s: bool(s["queue_running"]) and str(s["client_id"]).startswith("comfywatch-"),
                "a canary prompt stalled on a's server",
            )
            old = watch.daemon.runtimes["a"]
            assert await _rewrite(watch, tmp_path, _config(sim, "b"))
            with pytest.raises(ConnectionError):
                _ = old.http.session
            await sim.set_faults([])
            # The orphaned canary times out, cancels its prompt and deletes it through a's client.
            await sim_state_until(sim, lambda s: not s["queue_running"] and not s["queue_pending"], "a's queue empty")
            await watch.polls(3, check="system", target="b")
            # Closed for good: the orphaned canary's requests found no session to open connections with.
            with pytest.raises(ConnectionError):
                _ = old.http.session


async def test_a_reload_failing_after_validation_keeps_the_running_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever fails while the new configuration is built (here: every client), nothing of the old one has
    been replaced: the changed target keeps polling with its state, the added one never appears, the failure
    is reported (reload_success 0) and the same file loads once building works again."""
    async with await start_sim(targets=1) as sim, watching(_config(sim, "a"), tmp_path, target="a") as watch:
        state_a = watch.daemon.runtimes["a"].state
        changed = _toml(target_toml("a", sim.target_url(None), timeout="400ms"),
                        target_toml("b", sim.target_url(0)))

        def failing_build(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError("building a client failed")

        monkeypatch.setattr(daemon_module, "build_context", failing_build)
        assert not await _rewrite(watch, tmp_path, changed)
        assert set(watch.daemon.runtimes) == {"a"}
        assert watch.daemon.runtimes["a"].state is state_a
        m = await watch.polls(2, check="system", target="a")
        assert m.value(RELOAD_OK) == 0.0
        assert m.value("comfyui_up", target="a") == 1.0
        assert _targets(m) == {"a"}

        monkeypatch.undo()
        assert await _rewrite(watch, tmp_path, changed)
        m = await watch.ready("b")
        assert m.value(RELOAD_OK) == 1.0


async def test_a_reload_replaces_the_secrets_of_the_old_configuration(tmp_path: Path) -> None:
    """The redactor holds what the running configuration holds: a password a reload removed is forgotten, the new
    one is masked, and a reload that fails changes neither."""
    async with await start_sim() as sim:
        def with_password(password: str) -> str:
            url = sim.url.replace("http://", f"http://watcher:{password}@")
            return _toml(target_toml("a", url))

        async with watching(with_password("first-pass-1111"), tmp_path, target="a") as watch:
            assert "first-pass-1111" in SECRETS
            assert await _rewrite(watch, tmp_path, with_password("second-pass-2222"))
            assert "second-pass-2222" in SECRETS
            assert "first-pass-1111" not in SECRETS
            assert not await _rewrite(watch, tmp_path, with_password("third-pass-3333") + "\n[defaults]\n")
            assert "second-pass-2222" in SECRETS
            assert "third-pass-3333" not in SECRETS
