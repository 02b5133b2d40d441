"""``Daemon.reload()`` after rewriting the configuration file: what is kept, added, removed, or refused."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest

from comfywatch.config import Config
from comfywatch.daemon import service as daemon_module
from comfywatch.redact import SECRETS
from comfywatch.sim.admin import SimHandle, start_sim
from tests.fixtures import load_json
from tests.helpers import Metrics, RecordingServer, eventually, recording_server, running_daemon, scrape
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


def _logged(log_stream: io.StringIO, event: str) -> int:
    """How many times the daemon logged *event* so far."""
    return sum(1 for line in log_stream.getvalue().splitlines() if json.loads(line).get("event") == event)


async def test_a_reload_requested_during_a_slow_one_runs_after_it_and_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    """Two reload requests (what SIGHUP calls) close together, the first reading an older file slowly: the
    second reload reads the file only after the first has switched, so the daemon ends up running the targets
    of the file as the second read it, in ``runtimes`` and in ``/metrics``; both reloads succeed, and
    reload_success and the reload timestamp are those of the second."""
    async with await start_sim(targets=1) as sim, watching(_config(sim, "a"), tmp_path, target="a") as watch:
        daemon = watch.daemon
        load = daemon.load
        first_read = threading.Event()
        release = threading.Event()
        #: When each load began, and the targets it found.
        reads: list[tuple[float, set[str]]] = []

        def slow_first_load() -> Config:
            started = time.time()
            config = load()
            reads.append((started, {target.name for target in config.targets}))
            if len(reads) == 1:
                # Stands for a large file's seconds of parsing: the first reload holds the older configuration it
                # read until the second reload has been requested.
                first_read.set()
                release.wait(timeout=30)
            return config

        async def first_has_read() -> bool:
            return first_read.is_set()

        async def second_waits_or_overtook() -> bool:
            # Either the second reload waits for the first (it says so), or it overtook the first and switched
            # already: only then may the first go on, so that the switches come in the order under test.
            return _logged(log_stream, "reload_queued") == 1 or set(daemon.runtimes) == {"b"}

        async def reloads_done() -> int:
            return _logged(log_stream, "reloaded")

        monkeypatch.setattr(daemon, "load", slow_first_load)
        config_path = tmp_path / "comfywatch.toml"
        try:
            config_path.write_text(_config(sim, "a", "b"), encoding="utf-8")
            daemon.request_reload()
            await eventually(first_has_read, bool, what="the first reload read the older file")
            config_path.write_text(_config(sim, "b"), encoding="utf-8")
            daemon.request_reload()
            await eventually(second_waits_or_overtook, bool, what="the second reload queued or switched")
        finally:
            # Never leave a worker thread waiting (the loop's executor would wait for it at the end).
            release.set()
        await eventually(reloads_done, lambda count: count == 2, what="both reloads done")

        assert [names for _, names in reads] == [{"a", "b"}, {"b"}]
        assert set(daemon.runtimes) == {"b"}
        assert daemon.reload_success is True
        m = await watch.metrics()
        assert _targets(m) == {"b"}, sorted(_targets(m))
        assert m.value(RELOAD_OK) == 1.0
        # The timestamp of the last reload: set after the second read began.
        assert (m.value(RELOAD_AT) or 0.0) >= reads[1][0]


def _token_toml(url: str, token_file: Path) -> str:
    """Target ``a`` at *url*, polling ``/system_stats`` only (all a recording server answers), with the bearer
    token in *token_file*; no monitoring socket."""
    target = target_toml("a", url, checks=["system"]).replace(
        f'url = "{url}"\n', f'url = "{url}"\nbearer_token_file = "{token_file}"\n')
    return config_toml(target, interval="1s", timeout="500ms", monitor=False)


async def _authorizations(server: RecordingServer) -> list[str | None]:
    """The Authorization header of every request the server received, in order."""
    return [seen.authorization for seen in server.requests]


async def test_a_reload_sends_a_rotated_bearer_token_and_masks_it(tmp_path: Path) -> None:
    """After the bearer_token_file is rewritten (the configuration file unchanged), a reload succeeds and
    rebuilds the target: the server receives the new token, and never the old one after it; the redactor masks
    the new token and no longer the old one. A reload that cannot read the file fails (reload_success 0) and
    changes nothing: the same client goes on sending the same token, which stays masked."""
    token_file = tmp_path / "token"
    token_file.write_text("first-token-1111\n", encoding="utf-8")
    old, new = "Bearer first-token-1111", "Bearer second-token-2222"
    async with recording_server("/api/system_stats", load_json("system_stats.json")) as server, \
            running_daemon(_token_toml(server.url, token_file), tmp_path) as (daemon, base):
        await eventually(lambda: _authorizations(server), lambda seen: old in seen, what="the first token sent")
        first = daemon.runtimes["a"]
        assert "first-token-1111" in SECRETS

        token_file.write_text("second-token-2222\n", encoding="utf-8")
        assert await daemon.reload()
        # Two polls with the new token: it is the one the target now uses, not a single request.
        seen = await eventually(lambda: _authorizations(server), lambda seen: seen.count(new) >= 2,
                                what="the new token sent twice")
        # A request of the old client already in flight at the switch may arrive after it, never one after
        # the new token's first.
        assert old not in seen[seen.index(new):], seen
        # Rebuilt like a target whose settings changed: a new client, the old one closed.
        assert daemon.runtimes["a"] is not first
        with pytest.raises(ConnectionError):
            _ = first.http.session
        assert "second-token-2222" in SECRETS
        assert "first-token-1111" not in SECRETS
        m = await scrape(f"{base}/metrics")
        assert m.value(RELOAD_OK) == 1.0

        rotated = daemon.runtimes["a"]
        token_file.unlink()
        assert not await daemon.reload()
        assert daemon.runtimes["a"] is rotated
        sent = len(server.requests)
        seen = await eventually(lambda: _authorizations(server), lambda seen: len(seen) >= sent + 2,
                                what="two more polls after the failed reload")
        assert seen[sent:] == [new] * (len(seen) - sent), seen[sent:]
        assert "second-token-2222" in SECRETS
        m = await scrape(f"{base}/metrics")
        assert m.value(RELOAD_OK) == 0.0
