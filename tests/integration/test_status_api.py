"""``/api/v1/status`` and ``/api/v1/targets/<name>`` of the real daemon watching the real simulators.

Every document fetched is checked against docs/status-api-v1.schema.json, then against what the simulator was
told to do: healthy figures, a refused connection, failing jobs, a failing canary, a stalled queue, a worker
that does not consume, a broken workflow, a Comfy Cloud account out of funds, reloads, hostile server strings.
History is kept at one point a second (``[status] history_step = "1s"``) so that series grow within a test.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from comfywatch.errors import Reason, hint_for
from comfywatch.sim.admin import start_sim
from comfywatch.state.history import STEP_SLACK
from tests.fixtures import FIXTURES
from tests.helpers import eventually, running_daemon
from tests.integration.conftest import TARGET, config_toml, target_toml, watching
from tests.integration.test_cloud import ENV, KEY, T, cloud_config

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "status-api-v1.schema.json").read_text("utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA)
#: One chart point a second: the poll interval of these tests.
STATUS = '[status]\nhistory_step = "1s"\n\n'

Document = dict[str, Any]


def config(*targets: str, **kwargs: Any) -> str:
    return STATUS + config_toml(*targets, **kwargs)


async def fetch(url: str) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.content_type, await response.read()


async def document(url: str) -> Document:
    """GET a status document: 200, JSON, not cached, pure ASCII (non-ASCII is escaped), and valid."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.read()
        assert response.status == 200, (response.status, body[:300])
        assert response.content_type == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
    assert body.isascii()
    parsed: Document = json.loads(body.decode("utf-8"))
    errors = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in VALIDATOR.iter_errors(parsed)]
    assert not errors, errors[:5]
    return parsed


async def fleet(base: str) -> Document:
    return await document(f"{base}/api/v1/status")


async def target(base: str, name: str = TARGET) -> Document:
    return await document(f"{base}/api/v1/targets/{name}")


def row(status: Document, name: str = TARGET) -> Document:
    found: Document = next(t for t in status["targets"] if t["name"] == name)
    return found


async def fleet_until(base: str, check: Callable[[Document], bool], what: str, timeout: float = 10.0) -> Document:
    return await eventually(lambda: fleet(base), check, timeout=timeout, what=what)


async def target_until(base: str, check: Callable[[Document], bool], what: str, name: str = TARGET,
                       timeout: float = 10.0) -> Document:
    return await eventually(lambda: target(base, name), check, timeout=timeout, what=what)


def series(detail: Document, name: str) -> list[list[Any]]:
    points: list[list[Any]] = next(s["points"] for s in detail["series"] if s["name"] == name)
    return points


def problems(summary: Document) -> list[str]:
    return [p["code"] for p in summary["problems"]]


# ----------------------------------------------------------------------------------------------------------
# A local target.


async def test_a_healthy_target_shows_the_simulators_figures(tmp_path: Path) -> None:
    """Up, its version, RAM and (a CUDA device's) VRAM as the simulator serves them, an idle queue, then two jobs
    counted in the hour; the target document carries the same row and its history settings."""
    async with await start_sim() as sim:
        assert sim.cluster is not None
        sim.cluster.system_stats["devices"] = [{
            "name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": "cuda", "index": 0,
            "vram_total": 25_757_220_864, "vram_free": 21_474_836_480,
            "torch_vram_total": 2_147_483_648, "torch_vram_free": 1_073_741_824}]
        system = sim.cluster.system_stats["system"]
        async with watching(config(target_toml(TARGET, sim.url)), tmp_path) as watch:
            status = await fleet_until(watch.base, lambda s: row(s)["state"] == "up", "the target up")
            summary = row(status)
            assert status["counts"] == {"down": 0, "degraded": 0, "pending": 0, "up": 1}
            assert status["reload_success"] is True
            assert (summary["kind"], summary["url"], summary["version"]) == ("local", sim.url, "0.3.64")
            assert (summary["reason"], summary["hint"], summary["problems"]) == (None, None, [])
            assert summary["ram"] == {"free_bytes": system["ram_free"], "total_bytes": system["ram_total"]}
            assert summary["vram"] == {"free_bytes": 21_474_836_480, "total_bytes": 25_757_220_864}
            assert summary["queue"] == {"running": 0, "pending": 0, "oldest_pending_seconds": None,
                                        "running_seconds": None}
            assert summary["jobs_last_hour"] == {"finished": 0, "failed": {}}
            assert (summary["canary"], summary["cloud"], summary["last_failure"]) == (None, None, None)

            for _ in range(2):
                await sim.submit(job_ms=5)
            status = await fleet_until(watch.base, lambda s: row(s)["jobs_last_hour"]["finished"] == 2,
                                       "two jobs finished in the hour")
            assert row(status)["jobs_last_hour"]["failed"] == {}
            assert row(status)["state"] == "up"

            # The point recorded as the target came up has up alone; the figures come with the next ones.
            detail = await target_until(watch.base, lambda d: any(v is not None for _, v in series(d, "vram_free")),
                                        "a chart point with the server's figures")
            assert detail["target"]["name"] == TARGET
            assert detail["target"]["jobs_last_hour"] == {"finished": 2, "failed": {}}
            assert detail["history"] == {"step_seconds": 1.0, "points": 256}
            assert [s["name"] for s in detail["series"]] == ["up", "running", "pending", "latency", "vram_free",
                                                             "ram_free"]
            # Chart values are single-precision: within a few hundred bytes of 20 GiB.
            vram = [v for _, v in series(detail, "vram_free") if v is not None]
            assert vram and vram[-1] == pytest.approx(21_474_836_480, rel=1e-6)
            latency = [v for _, v in series(detail, "latency") if v is not None]
            assert latency and all(0 < v < 0.5 for v in latency)
            assert detail["canaries"] == []


async def test_an_unknown_target_is_404(tmp_path: Path) -> None:
    async with await start_sim() as sim, watching(config(target_toml(TARGET, sim.url)), tmp_path) as watch:
        for name in ("nope", "sim2", "%3Cscript%3E"):
            status, _, _ = await fetch(f"{watch.base}/api/v1/targets/{name}")
            assert status == 404, name


async def test_a_refusing_server_is_down_with_the_connect_hint_then_back_up(tmp_path: Path) -> None:
    """The port closes: down for connect with doctor's hint, an event, the up series' 0; then up again."""
    async with await start_sim() as sim, watching(config(target_toml(TARGET, sim.url)), tmp_path) as watch:
        await sim.set_faults(["down"])
        status = await fleet_until(watch.base, lambda s: row(s)["state"] == "down", "the target down")
        summary = row(status)
        assert summary["reason"] == "connect"
        assert summary["hint"] == hint_for(Reason.CONNECT, sim.url)
        assert status["counts"] == {"down": 1, "degraded": 0, "pending": 0, "up": 0}
        assert summary["problems"] == []
        assert summary["last_failure"] is not None and summary["last_failure"]["reason"] == "connect"
        detail = await target(watch.base)
        down = [e for e in detail["events"] if e["kind"] == "down"]
        assert [(e["reason"], e["hint"], e["text"]) for e in down] == [
            ("connect", hint_for(Reason.CONNECT, sim.url), "down: connect")]

        await sim.set_faults([])
        detail = await target_until(watch.base, lambda d: d["target"]["state"] == "up", "the target back up")
        # Newest first: back up after the outage, once (not again as the system check's recovery).
        assert [e["kind"] for e in detail["events"]] == ["up", "down"]
        assert detail["target"]["reason"] is None
        ups = [value for _, value in series(detail, "up")]
        # Up, then the outage (0 while it lasted), then up again, in that order.
        first_down = ups.index(0.0)
        assert 1.0 in ups[:first_down] and ups[-1] == 1.0
        assert set(ups[first_down:ups.index(1.0, first_down)]) == {0.0}


async def test_history_series_gain_points_a_step_apart(tmp_path: Path) -> None:
    """With history_step 1 s, each series gains about a point a second, oldest first; points of the same up value
    are a step apart at least (less the slack for a poll ending early; a change of up may come sooner)."""
    async with await start_sim() as sim, watching(config(target_toml(TARGET, sim.url)), tmp_path) as watch:
        first = len(series(await target(watch.base), "up"))
        detail = await target_until(watch.base, lambda d: len(series(d, "up")) >= first + 3,
                                    "three more points in the up series")
        for name in ("up", "running", "pending", "latency", "ram_free"):
            points = series(detail, name)
            assert len(points) >= first + 3, name
            times = [t for t, _ in points]
            assert times == sorted(times) and len(set(times)) == len(times), name
        ups = series(detail, "up")
        for (t0, v0), (t1, v1) in itertools.pairwise(ups):
            assert v0 != v1 or t1 - t0 >= 1.0 * (1 - STEP_SLACK) - 1e-5, (t0, t1)
        # The first points may come before the first read of the queue (unknown), then it is idle.
        pending = [v for _, v in series(detail, "pending")]
        assert set(pending) <= {0.0, None} and pending[-1] == 0.0
        assert all(t <= detail["generated_at"] for t, _ in ups)


@pytest.mark.parametrize(("fault", "reason"), [("oom", Reason.OOM), ("execution_error", Reason.EXECUTION_ERROR)])
async def test_failing_jobs_are_counted_in_the_hour(tmp_path: Path, fault: str, reason: Reason) -> None:
    """Jobs failing at run time: counted by reason in jobs_last_hour, the last failure with its hint, one merged
    event; the target stays up (failing jobs are the users' workflows, not the server)."""
    async with await start_sim() as sim, watching(config(target_toml(TARGET, sim.url)), tmp_path) as watch:
        await sim.set_faults([fault])
        for _ in range(3):
            await sim.submit(job_ms=5)
        status = await fleet_until(watch.base, lambda s: row(s)["jobs_last_hour"]["finished"] == 3,
                                   f"three {fault} jobs counted")
        summary = row(status)
        assert summary["jobs_last_hour"]["failed"] == {str(reason): 3}
        assert sim.state()["jobs_failed"] == 3
        assert summary["state"] == "up"
        failure = summary["last_failure"]
        assert (failure["source"], failure["reason"], failure["hint"]) == ("job", str(reason),
                                                                           hint_for(reason, sim.url))
        events = [e for e in (await target(watch.base))["events"] if e["kind"] == "job_failed"]
        assert [(e["reason"], e["count"], e["text"]) for e in events] == [
            (str(reason), 3, f"a job failed: {reason}")]


async def test_a_failing_canary_degrades_the_target(tmp_path: Path) -> None:
    """Every job fails with OOM, the canary's too: degraded with canary_failing and the OOM hint; its runs are
    charted; once the fault clears the canary succeeds and the target is up."""
    async with await start_sim(faults=["oom"]) as sim, watching(
        config(target_toml(TARGET, sim.url, canary="1s", canary_timeout="5s")), tmp_path
    ) as watch:
        status = await fleet_until(watch.base, lambda s: row(s)["state"] == "degraded", "the target degraded")
        summary = row(status)
        assert summary["problems"] == [{"code": "canary_failing", "text": "canary preview-image failing: oom",
                                        "hint": hint_for(Reason.OOM, sim.url)}]
        canary = summary["canary"]
        assert (canary["name"], canary["ok"], canary["reason"]) == ("preview-image", False, "oom")
        assert canary["hint"] == hint_for(Reason.OOM, sim.url)
        assert canary["runs"] >= 1 and canary["last_success"] is None
        assert status["counts"]["degraded"] == 1

        detail = await target(watch.base)
        (charted,) = detail["canaries"]
        assert charted["name"] == "preview-image"
        total = next(s["points"] for s in charted["series"] if s["name"] == "total")
        assert len(total) >= 1 and all(v is None or v >= 0 for _, v in total)

        await sim.set_faults([])
        status = await fleet_until(watch.base, lambda s: row(s)["state"] == "up", "the canary passing again")
        canary = row(status)["canary"]
        assert (canary["ok"], canary["reason"], canary["hint"]) == (True, None, None)
        assert canary["last_success"] is not None and canary["last_success"] >= canary["last_run"] - 1


async def test_a_stalled_job_is_queue_stalled(tmp_path: Path) -> None:
    async with await start_sim() as sim, watching(
        config(target_toml(TARGET, sim.url, stall_after="1s")), tmp_path
    ) as watch:
        await sim.set_faults(["stall"])
        await sim.submit(job_ms=20)
        status = await fleet_until(watch.base, lambda s: problems(row(s)) == ["queue_stalled"], "queue_stalled")
        summary = row(status)
        assert summary["state"] == "degraded"
        assert summary["queue"]["running"] == 1 and summary["queue"]["running_seconds"] >= 1.0
        assert summary["problems"][0]["text"].startswith("queue stalled: a job has run ")
        await sim.set_faults([])
        await fleet_until(watch.base, lambda s: row(s)["state"] == "up", "the stall over")


async def test_a_worker_that_does_not_consume_is_flagged(tmp_path: Path) -> None:
    async with await start_sim() as sim, watching(config(target_toml(TARGET, sim.url)), tmp_path) as watch:
        await sim.set_faults(["worker_dead"])
        for _ in range(3):
            await sim.submit(job_ms=5)
        status = await fleet_until(watch.base, lambda s: problems(row(s)) == ["worker_not_consuming"],
                                   "worker_not_consuming")
        queue = row(status)["queue"]
        assert (queue["running"], queue["pending"], queue["running_seconds"]) == (0, 3, None)
        assert queue["oldest_pending_seconds"] > 0
        assert row(status)["problems"][0]["text"] == "worker not consuming: 3 pending, none running"
        await sim.set_faults([])
        await fleet_until(watch.base, lambda s: row(s)["state"] == "up" and row(s)["jobs_last_hour"]["finished"] == 3,
                          "the queue drained")


async def test_a_workflow_the_server_would_refuse_is_workflow_broken(tmp_path: Path) -> None:
    """A watched workflow whose checkpoint the server does not have: degraded with workflow_broken."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    source = FIXTURES / "workflows" / "txt2img_missing_checkpoint.json"
    (folder / source.name).write_bytes(source.read_bytes())
    async with await start_sim() as sim:
        toml = config(target_toml(TARGET, sim.url)) + f'\n[[workflows]]\npath = "{folder}"\n'
        async with watching(toml, tmp_path) as watch:
            status = await fleet_until(watch.base, lambda s: problems(row(s)) == ["workflow_broken"],
                                       "workflow_broken")
            (problem,) = row(status)["problems"]
            assert problem["text"] == "workflow txt2img_missing_checkpoint would be refused: value_not_in_list"
            assert problem["hint"] is None


async def test_reloads_show_in_the_events(tmp_path: Path) -> None:
    """A reload is an event of the fleet and of every target; a refused one too, with reload_success false until
    a good one."""
    async with await start_sim() as sim:
        text = config(target_toml(TARGET, sim.url))
        async with watching(text, tmp_path) as watch:
            assert (await fleet(watch.base))["events"] == []
            assert await watch.daemon.reload()
            status = await fleet(watch.base)
            assert [(e["kind"], e["text"], e["count"]) for e in status["events"]] == [
                ("reload", "configuration reloaded", 1)]
            assert status["reload_success"] is True

            (tmp_path / "comfywatch.toml").write_text(text + "\nintervall = 3\n", encoding="utf-8")
            assert not await watch.daemon.reload()
            status = await fleet(watch.base)
            assert [e["kind"] for e in status["events"]] == ["reload_failed", "reload"]
            assert status["reload_success"] is False
            assert row(status)["state"] == "up"  # the old configuration keeps watching

            (tmp_path / "comfywatch.toml").write_text(text, encoding="utf-8")
            assert await watch.daemon.reload()
            status = await fleet(watch.base)
            assert [e["kind"] for e in status["events"]] == ["reload", "reload_failed", "reload"]
            assert status["reload_success"] is True
            # A target's own page lists the reloads among its events, newest first.
            kinds = [e["kind"] for e in (await target(watch.base))["events"]]
            assert [kind for kind in kinds if kind.startswith("reload")] == ["reload", "reload_failed", "reload"]


async def test_hostile_server_strings_stay_valid_and_bounded(tmp_path: Path) -> None:
    """A version with markup, a lone surrogate, control characters and a kilobyte of text: the documents stay
    valid ASCII JSON (``document`` checks), the surrogate is U+FFFD, controls are spaces, the version is cut."""
    async with await start_sim() as sim, watching(config(target_toml(TARGET, sim.url)), tmp_path) as watch:
        assert sim.cluster is not None
        sim.cluster.system_stats["system"]["comfyui_version"] = "<script>alert(1)</script>\ud800\x1b[2J\"}" + "v" * 1000
        status = await fleet_until(watch.base, lambda s: row(s)["version"] != "0.3.64", "the new version read")
        version = row(status)["version"]
        assert version == ("<script>alert(1)</script>\ufffd [2J\"}" + "v" * 1000)[:59] + "…"
        assert row(status)["state"] == "up"
        detail = await target(watch.base)
        assert detail["target"]["version"] == version


# ----------------------------------------------------------------------------------------------------------
# A Comfy Cloud account.


async def test_a_cloud_account_shows_its_balance_and_runs_out_of_funds(tmp_path: Path) -> None:
    """The simulated Cloud's $60 and plan; when it refuses for payment (has_funds false), no_funds with the Cloud
    payment hint; the balance series is charted."""
    async with await start_sim(cloud=True, cloud_api_keys=[KEY]) as sim:
        # (cloud_config's text starts with a top-level key: [status] goes where it puts extra tables)
        toml = cloud_config(sim.url, tmp_path, top=STATUS)
        async with running_daemon(toml, tmp_path, ENV) as (daemon, base):
            daemon.trigger(T, "billing")
            daemon.trigger(T, "features")
            status = await fleet_until(base, lambda s: row(s, T)["state"] == "up"
                                       and row(s, T)["cloud"]["balance_usd"] is not None
                                       and row(s, T)["cloud"]["max_concurrent_jobs"] is not None, "account polled")
            summary = row(status, T)
            assert summary["kind"] == "cloud" and summary["vram"] is None
            account = summary["cloud"]
            assert (account["balance_usd"], account["has_funds"], account["subscription_active"]) == (60.0, True, True)
            assert (account["subscription_tier"], account["subscription_status"]) == ("CREATOR", "active")
            assert (account["max_concurrent_jobs"], account["retry_after_seconds"]) == (3, 0.0)
            assert (account["burn_usd_per_day"], account["days_left"]) == (None, None)  # no spending yet

            await sim.set_faults(["http_402"])
            daemon.trigger(T, "billing")
            status = await fleet_until(base, lambda s: "no_funds" in problems(row(s, T)), "no_funds")
            summary = row(status, T)
            assert summary["state"] == "degraded"
            problem = next(p for p in summary["problems"] if p["code"] == "no_funds")
            assert problem["hint"] == hint_for(Reason.PAYMENT, cloud=True)
            assert summary["cloud"]["has_funds"] is False
            assert summary["cloud"]["balance_usd"] == 60.0  # the balance still reads

            detail = await target_until(base, lambda d: len(series(d, "balance")) >= 2, "the balance charted", T)
            assert [s["name"] for s in detail["series"]] == ["up", "running", "pending", "latency", "balance"]
            assert {v for _, v in series(detail, "balance")} <= {60.0, None}
            assert 60.0 in {v for _, v in series(detail, "balance")}
