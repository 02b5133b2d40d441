"""The canary engine against the simulated ComfyUI, for success and every failure reason.

Every run checks what it leaves behind: no canary entry in the server's history, nothing of its own
queued, and no file in the server's ``output/`` folder. Timed-out canaries cancel only their own prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from comfywatch.checks import CANARY_CLIENT_PREFIX
from comfywatch.checks.canary import CanaryResult, CanaryRunner
from comfywatch.checks.context import build_context, ssl_context_for
from comfywatch.config import Config, TargetConfig, VerifyConfig
from comfywatch.errors import Reason
from comfywatch.sim.admin import SimHandle, start_sim
from comfywatch.sim.local import nodes as sim_nodes
from comfywatch.state import CANARY_PHASES
from comfywatch.workflows import load_workflow
from tests.certs import CertPair, make_certs
from tests.fixtures import FIXTURES
from tests.helpers import Metrics, eventually, running_daemon, scrape
from tests.ports import closed_port

WORKFLOWS = Path(__file__).resolve().parent / "canary_workflows"
PREVIEW = "builtin:preview-image"
ECHO = "builtin:echo-text"


# --------------------------------------------------------------------------------------------------------
# Helpers


@contextlib.asynccontextmanager
async def canary(
    url: str,
    workflow: str = PREVIEW,
    *,
    timeout: float = 5.0,
    when_busy: str = "skip",
    verify: VerifyConfig | None = None,
    tls: dict[str, Any] | None = None,
) -> AsyncIterator[CanaryRunner]:
    """A runner built the way the daemon builds it (same runtime, client, TLS settings and workflow loader)."""
    target = TargetConfig(name="t", url=url, **(tls or {}))
    runtime = build_context(Config(), target)
    assert runtime.local is not None
    name = workflow.removeprefix("builtin:") if workflow.startswith("builtin:") else Path(workflow).stem
    try:
        yield CanaryRunner(runtime.local, load_workflow(workflow, name, verify), timeout=timeout,
                           when_busy=when_busy, ssl_context=ssl_context_for(target))
    finally:
        await runtime.close()


async def run_canary(url: str, workflow: str = PREVIEW, **kwargs: Any) -> CanaryResult:
    async with canary(url, workflow, **kwargs) as runner:
        return await runner.run()


def _is_canary(extra_data: Any) -> bool:
    return isinstance(extra_data, dict) and str(extra_data.get("client_id", "")).startswith(CANARY_CLIENT_PREFIX)


def canary_history(sim: SimHandle) -> list[str]:
    """Ids of history entries that a canary submitted (by the client_id it posted)."""
    return [pid for pid, entry in sim.server().history.items() if _is_canary(entry["prompt"][3])]


def canary_queued(sim: SimHandle) -> list[str]:
    queue = sim.server().get_queue()
    return [item[1] for item in (*queue["queue_running"], *queue["queue_pending"]) if _is_canary(item[3])]


async def until_canary_queued(sim: SimHandle) -> list[str]:
    """Poll until a canary prompt is in the queue (running or pending)."""

    async def probe() -> list[str]:
        return canary_queued(sim)

    return await eventually(probe, bool, timeout=10.0, what="a canary prompt queued")


def assert_left_nothing(sim: SimHandle, result: CanaryResult) -> None:
    """The run's footprint is gone: history, queue and output/ hold nothing of the canary."""
    state = sim.state()
    if result.prompt_id is not None:
        assert result.prompt_id not in state["history"]
    assert canary_history(sim) == []
    assert canary_queued(sim) == []
    assert state["output_files"] == []
    assert state["output_writes"] == 0


async def wait_running(sim: SimHandle, *, canary_only: bool = True) -> str:
    """Poll until a prompt (a canary's, by default) is running; return its id."""

    async def probe() -> list[str]:
        queue = sim.server().get_queue()
        return [item[1] for item in queue["queue_running"] if not canary_only or _is_canary(item[3])]

    running = await eventually(probe, bool, timeout=5.0, what="a canary prompt running")
    return running[0]


def spy(monkeypatch: pytest.MonkeyPatch, sim: SimHandle, method: str) -> list[Any]:
    """Record the first argument of every call the simulated server gets to *method* (still performed).

    A deep copy: like ComfyUI's validation, the server converts the posted prompt's values in place.
    """
    server = sim.server()
    original = getattr(server, method)
    calls: list[Any] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(copy.deepcopy(args[0]) if args else None)
        return original(*args, **kwargs)

    monkeypatch.setattr(server, method, recording)
    return calls


def assert_phases_consistent(result: CanaryResult) -> None:
    """Phases are non-negative and sequential: together they fit inside ``total``."""
    assert all(value >= 0 for value in result.phases.values()), result.phases
    parts = sum(result.phases.get(p, 0.0) for p in ("submit", "queue", "execute", "fetch"))
    assert parts <= result.phases["total"] + 1e-6, result.phases


# --------------------------------------------------------------------------------------------------------
# Success


async def test_preview_image_success_reports_every_phase_and_leaves_nothing() -> None:
    """A preview-image canary succeeds with all five phases and the server's own execution time."""
    async with await start_sim(exec_ms=100) as sim:
        result = await run_canary(sim.url)
        assert result.ok, result.as_dict()
        assert (result.reason, result.skipped, result.websocket_ok) == (None, False, True)
        assert set(result.phases) == set(CANARY_PHASES)
        assert result.phases["submit"] > 0
        assert result.phases["fetch"] > 0
        # The busy node sleeps 100 ms on the server: both clocks see it (event delivery may shift ours).
        assert result.server_seconds is not None and 0.099 <= result.server_seconds < 2.0
        assert result.phases["execute"] >= 0.05
        assert_phases_consistent(result)
        state = sim.state()
        assert (state["jobs_submitted"], state["jobs_succeeded"]) == (1, 1)
        assert state["temp_writes"] == 1  # PreviewImage writes to temp/, never to output/
        assert_left_nothing(sim, result)


async def test_echo_text_success_checks_the_echo() -> None:
    """echo-text succeeds by reading back its own uuid, writing no file anywhere."""
    async with await start_sim() as sim:
        result = await run_canary(sim.url, ECHO)
        assert result.ok, result.as_dict()
        assert set(result.phases) == set(CANARY_PHASES)
        state = sim.state()
        assert (state["temp_writes"], state["jobs_succeeded"]) == (0, 1)
        assert_left_nothing(sim, result)


async def test_consecutive_runs_defeat_the_cache() -> None:
    """Each run varies an input, so the server executes it again instead of answering from cache."""
    async with await start_sim() as sim, canary(sim.url) as runner:
        first, second = await runner.run(), await runner.run()
        assert first.ok and second.ok
        assert first.prompt_id != second.prompt_id
        # A cached PreviewImage writes nothing: two writes mean two real executions.
        assert sim.state()["temp_writes"] == 2
        assert_left_nothing(sim, second)


async def test_never_runs_twice_at_once() -> None:
    """A second run while one is in flight is skipped instead of submitting another prompt."""
    async with await start_sim(exec_ms=300) as sim, canary(sim.url) as runner:
        first, second = await asyncio.gather(runner.run(), runner.run())
        assert first.ok, first.as_dict()
        assert second.skipped and not second.ok and second.reason is None
        assert "still going" in second.detail
        assert sim.state()["jobs_submitted"] == 1


# --------------------------------------------------------------------------------------------------------
# User workflows


async def test_user_workflow_placeholders_are_filled_and_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    """{{uuid}}, {{seed}} and {{timestamp}} are replaced before submitting; text_matches verifies the echo."""
    async with await start_sim() as sim:
        posted = spy(monkeypatch, sim, "post_prompt")
        verify = VerifyConfig(text_matches=r"^uuid=[0-9a-f]{32} seed=\d+ ts=\d{13}$")
        before_ms = time.time() * 1000
        result = await run_canary(sim.url, str(WORKFLOWS / "placeholders_text.json"), verify=verify)
        assert result.ok, result.as_dict()
        value = posted[0]["prompt"]["1"]["inputs"]["value"]
        assert "{{" not in value
        fields = dict(part.split("=") for part in value.split())
        assert 0 <= int(fields["seed"]) < 2**32
        assert before_ms - 1000 <= int(fields["ts"]) <= time.time() * 1000 + 1000
        assert_left_nothing(sim, result)


async def test_user_workflow_images_verify_and_exact_numeric_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A "Save (API Format)" file wrapped in {"prompt"} runs; images = 1 passes; "{{seed}}" becomes a number."""
    async with await start_sim() as sim:
        posted = spy(monkeypatch, sim, "post_prompt")
        result = await run_canary(sim.url, str(WORKFLOWS / "image_32x24.json"), verify=VerifyConfig(images=1))
        assert result.ok, result.as_dict()
        seed = posted[0]["prompt"]["2"]["inputs"]["value"]
        assert isinstance(seed, int) and 0 <= seed < 2**32
        assert_left_nothing(sim, result)


@pytest.mark.parametrize(
    ("verify", "detail"),
    [
        (VerifyConfig(images=2), "expected 2 images, got 1"),
        (VerifyConfig(text_matches="^never$"), "no text output matches"),
    ],
)
async def test_output_invalid_when_verify_fails(verify: VerifyConfig, detail: str) -> None:
    """A run whose output does not match the verify section fails with reason output_invalid."""
    async with await start_sim() as sim:
        result = await run_canary(sim.url, str(WORKFLOWS / "image_32x24.json"), verify=verify)
        assert not result.ok
        assert result.reason is Reason.OUTPUT_INVALID
        assert detail in result.detail
        # It ran to the end: every phase up to the fetch is known.
        assert {"submit", "queue", "execute", "total"} <= set(result.phases)
        assert sim.state()["jobs_succeeded"] == 1
        assert_left_nothing(sim, result)


@pytest.mark.parametrize("listed", [5, "temp/a.png", {"filename": "a.png"}, None])
@pytest.mark.parametrize(("node", "key", "workflow", "detail"), [
    ("PreviewImage", "images", PREVIEW, "expected 1 images, got 0"),
    ("PreviewAny", "text", ECHO, "text output does not echo the input"),
])
async def test_an_output_field_that_is_no_list_lists_nothing(
    monkeypatch: pytest.MonkeyPatch, listed: Any, node: str, key: str, workflow: str, detail: str
) -> None:
    """A server whose output node reports ``images`` or ``text`` as something other than a list (a hostile or
    broken one) fails the run as output_invalid: the run ends with a result, it does not raise, and a string is
    not read as a list of its characters."""

    async def odd_output(*_: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (), {key: listed}

    monkeypatch.setitem(sim_nodes._NODE_RUNNERS, node, odd_output)
    async with await start_sim() as sim:
        result = await run_canary(sim.url, workflow)
        assert (result.ok, result.reason) == (False, Reason.OUTPUT_INVALID), result.as_dict()
        assert detail in result.detail
        assert_left_nothing(sim, result)


async def test_validation_failure_is_summarised_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 400 from POST /prompt is reason validation, with one problem line per node, also in the log."""
    async with await start_sim() as sim:
        with structlog.testing.capture_logs() as logs:
            result = await run_canary(sim.url, str(WORKFLOWS / "invalid_inputs.json"))
        assert not result.ok and result.reason is Reason.VALIDATION
        assert "prompt_outputs_failed_validation" in result.detail
        assert len(result.problems) == 1
        line = result.problems[0]
        assert line.startswith("node 1 (EmptyImage): ")
        assert "value_smaller_than_min: width" in line and "value_bigger_than_max: color" in line
        rejected = [entry for entry in logs if entry["event"] == "canary_rejected"]
        assert rejected and rejected[0]["nodes"] == result.problems
        assert result.prompt_id is None and "submit" not in result.phases
        assert sim.state()["jobs_submitted"] == 0
        assert_left_nothing(sim, result)


async def test_partially_accepted_workflow_is_validation_and_cancelled() -> None:
    """200 with node_errors (only part of the workflow queued) is validation too, and nothing is left."""
    async with await start_sim(exec_ms=2000) as sim:
        result = await run_canary(sim.url, str(WORKFLOWS / "partially_valid.json"))
        assert not result.ok and result.reason is Reason.VALIDATION
        assert result.prompt_id is not None
        assert [p.split(":")[0] for p in result.problems] == ["node 3 (EmptyImage)"]
        assert "value_smaller_than_min" in result.problems[0]
        assert sim.state()["jobs_succeeded"] == 0
        assert_left_nothing(sim, result)


# --------------------------------------------------------------------------------------------------------
# Failures while executing


@pytest.mark.parametrize(("fault", "reason", "exception"),
                         [("execution_error", Reason.EXECUTION_ERROR, "RuntimeError"),
                          ("oom", Reason.OOM, "torch.OutOfMemoryError")])
async def test_job_failure_reasons(fault: str, reason: Reason, exception: str) -> None:
    """A job failing at run time gives execution_error / oom, with the phases it got through."""
    async with await start_sim(faults=[fault], exec_ms=20) as sim:
        result = await run_canary(sim.url)
        assert not result.ok and result.reason is reason
        assert result.detail == f"EmptyImage: {exception}"
        assert {"submit", "queue", "execute", "total"} <= set(result.phases)
        assert "fetch" not in result.phases
        assert result.phases["execute"] > 0
        assert result.server_seconds is not None and result.server_seconds >= 0.019
        assert_phases_consistent(result)
        assert sim.state()["jobs_failed"] == 1
        assert_left_nothing(sim, result)


async def test_runtime_error_workflow_from_the_recorded_fixture() -> None:
    """The recorded RegexReplace("(") workflow passes validation and fails at run time: execution_error."""
    async with await start_sim() as sim:
        result = await run_canary(sim.url, str(FIXTURES / "workflows" / "runtime_error_regex.json"))
        assert not result.ok and result.reason is Reason.EXECUTION_ERROR
        assert result.detail.startswith("RegexReplace: ")
        assert_left_nothing(sim, result)


async def test_interrupted_by_someone_else() -> None:
    """Someone pressing Cancel (a global /interrupt) while the canary runs gives reason interrupted."""
    async with await start_sim(exec_ms=10_000) as sim:
        task = asyncio.create_task(run_canary(sim.url, timeout=10.0))
        await wait_running(sim)
        sim.server().interrupt()
        result = await task
        assert not result.ok and result.reason is Reason.INTERRUPTED
        assert {"submit", "queue", "execute"} <= set(result.phases)
        assert result.phases["total"] < 5.0
        assert sim.state()["jobs_interrupted"] == 1
        assert_left_nothing(sim, result)


# --------------------------------------------------------------------------------------------------------
# Timeouts: cancel only our own prompt


async def test_timeout_while_running_interrupts_only_its_own_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled canary times out, then sends a targeted /interrupt with its own prompt id and cleans up."""
    async with await start_sim(faults=["stall"]) as sim:
        interrupts = spy(monkeypatch, sim, "interrupt")
        deletes = spy(monkeypatch, sim, "post_queue")
        result = await run_canary(sim.url, timeout=1.0)
        assert not result.ok and result.reason is Reason.TIMEOUT
        assert result.prompt_id is not None
        assert interrupts and set(interrupts) == {result.prompt_id}  # never a global interrupt
        assert deletes == []  # it was running, not pending
        assert result.phases["total"] <= 1.0 + 0.5
        assert result.phases["execute"] > 0  # it was stuck executing
        state = sim.state()
        assert (state["jobs_interrupted"], state["queue_running"]) == (1, [])
        assert_left_nothing(sim, result)


async def test_timeout_while_pending_deletes_its_own_and_never_touches_the_running_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Queued behind another user's long job, the canary times out, deletes only itself, interrupts nothing."""
    async with await start_sim() as sim:
        other = (await sim.submit(job_ms=60_000))["prompt_id"]
        await wait_running(sim, canary_only=False)
        interrupts = spy(monkeypatch, sim, "interrupt")
        deletes = spy(monkeypatch, sim, "post_queue")
        result = await run_canary(sim.url, timeout=1.0, when_busy="queue")
        assert not result.ok and result.reason is Reason.TIMEOUT
        assert result.prompt_id is not None
        assert deletes == [{"delete": [result.prompt_id]}]
        assert interrupts == []
        assert "queue" not in result.phases and "execute" not in result.phases  # it never started
        state = sim.state()
        assert state["queue_running"] == [other]  # the other user's job is still running
        assert (state["jobs_interrupted"], state["queue_pending"]) == (0, [])
        assert_left_nothing(sim, result)


async def test_timeout_before_submitting_submits_nothing() -> None:
    """A server too slow to answer the busy check within the budget times out without a prompt posted."""
    async with await start_sim(faults=["slow"], slow_ms=1500) as sim:
        started = time.perf_counter()
        result = await run_canary(sim.url, timeout=0.3)
        assert not result.ok and result.reason is Reason.TIMEOUT
        assert time.perf_counter() - started < 1.4  # bounded by its own timeout, not the server's delay
        assert result.prompt_id is None
        assert sim.state()["jobs_submitted"] == 0


# --------------------------------------------------------------------------------------------------------
# Lost: the server restarted mid-canary


@pytest.mark.parametrize("faults", [[], ["ws_no_upgrade"]], ids=["websocket", "polling"])
async def test_restart_mid_run_is_lost_never_success(faults: list[str]) -> None:
    """The server restarting while the canary runs (queue and history wiped) is reason lost."""
    async with await start_sim(faults=faults, exec_ms=10_000) as sim:
        task = asyncio.create_task(run_canary(sim.url, timeout=10.0))
        await wait_running(sim)
        await sim.restart()
        result = await task
        assert not result.ok and result.reason is Reason.LOST
        assert result.phases["total"] < 5.0
        assert sim.state()["restarts"] == 1
        assert_left_nothing(sim, result)


async def test_restart_while_pending_is_lost() -> None:
    """A canary waiting behind another job when the server restarts is lost too."""
    async with await start_sim() as sim:
        await sim.submit(job_ms=60_000)
        await wait_running(sim, canary_only=False)
        task = asyncio.create_task(run_canary(sim.url, timeout=10.0, when_busy="queue"))
        await until_canary_queued(sim)
        await sim.restart()
        result = await task
        assert not result.ok and result.reason is Reason.LOST
        assert_left_nothing(sim, result)


async def test_prompt_deleted_by_someone_else_is_lost_not_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone clearing the queue while the canary waits sends it no event: it notices, lost, within seconds."""
    async with await start_sim() as sim:
        other = (await sim.submit(job_ms=60_000))["prompt_id"]
        await wait_running(sim, canary_only=False)
        interrupts = spy(monkeypatch, sim, "interrupt")
        task = asyncio.create_task(run_canary(sim.url, timeout=30.0, when_busy="queue"))
        await until_canary_queued(sim)
        sim.server().post_queue({"clear": True})  # the "Clear queue" button: only status frames follow
        result = await task
        assert not result.ok and result.reason is Reason.LOST, result.as_dict()
        assert result.websocket_ok is True  # the socket was fine; the prompt was gone
        assert result.phases["total"] < 10.0  # asked after 1 s of silence, not at the 30 s deadline
        assert interrupts == []
        assert sim.state()["queue_running"] == [other]
        assert_left_nothing(sim, result)


# --------------------------------------------------------------------------------------------------------
# Transport failures


@pytest.mark.parametrize("when_busy", ["skip", "queue"])
@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("http_401", Reason.AUTH),
        ("http_403", Reason.FORBIDDEN),
        ("http_429", Reason.RATE_LIMITED),
        ("http_500", Reason.SERVER_ERROR),
        ("http_502_html", Reason.SERVER_ERROR),
        ("garbage_json", Reason.INVALID_RESPONSE),
        ("huge_body", Reason.INVALID_RESPONSE),
    ],
)
async def test_transport_failure_reasons(fault: str, reason: Reason, when_busy: str) -> None:
    """Faults between comfywatch and ComfyUI give their transport reason (busy check or submit alike)."""
    async with await start_sim(faults=[fault]) as sim:
        result = await run_canary(sim.url, when_busy=when_busy)
        assert not result.ok and not result.skipped
        assert result.reason is reason, result.as_dict()
        assert result.prompt_id is None
        assert set(result.phases) == {"total"}
        assert sim.state()["jobs_submitted"] == 0
        assert_left_nothing(sim, result)


async def test_connect_reason_when_nothing_listens() -> None:
    """Nothing accepting connections on the port is reason connect."""
    port = closed_port()
    for when_busy in ("skip", "queue"):
        result = await run_canary(f"http://127.0.0.1:{port}", when_busy=when_busy)
        assert result.reason is Reason.CONNECT, result.as_dict()
        assert result.prompt_id is None and set(result.phases) == {"total"}


async def test_not_found_and_tls_reasons() -> None:
    """A wrong base path is not_found; https:// against a plain-HTTP server is tls."""
    async with await start_sim() as sim:
        wrong_path = await run_canary(sim.url + "/not-comfyui")
        assert wrong_path.reason is Reason.NOT_FOUND
        tls = await run_canary(sim.url.replace("http://", "https://"))
        assert tls.reason is Reason.TLS
        assert sim.state()["jobs_submitted"] == 0


async def test_slow_server_times_out_when_queueing() -> None:
    """With when_busy=queue a server slower than the canary's budget is a timeout, not a hang."""
    async with await start_sim(faults=["slow"], slow_ms=1500) as sim:
        started = time.perf_counter()
        result = await run_canary(sim.url, timeout=0.3, when_busy="queue")
        assert result.reason is Reason.TIMEOUT
        assert time.perf_counter() - started < 1.4
        assert sim.state()["jobs_submitted"] == 0


# --------------------------------------------------------------------------------------------------------
# WebSocket path broken: poll /history instead


@pytest.mark.parametrize("fault", ["ws_no_upgrade", "ws_silent"])
async def test_websocket_unavailable_falls_back_to_polling(fault: str) -> None:
    """A proxy dropping Upgrade (or a silent socket) still gives success, with websocket_ok False."""
    async with await start_sim(faults=[fault], exec_ms=30) as sim:
        started = time.perf_counter()
        result = await run_canary(sim.url, timeout=4.0)
        elapsed = time.perf_counter() - started
        assert result.ok, result.as_dict()
        assert result.websocket_ok is False
        assert set(result.phases) == set(CANARY_PHASES)
        # Without events, only the server's clock saw the execution.
        assert result.server_seconds is not None and result.server_seconds >= 0.029
        assert result.phases["execute"] == result.server_seconds
        # A silent socket is given up after a quarter of the budget at most, leaving time to poll.
        assert elapsed < 3.5
        assert_left_nothing(sim, result)


@contextlib.asynccontextmanager
async def served_over_tls(sim: SimHandle, pair: CertPair) -> AsyncIterator[str]:
    """The same simulated server also on an https:// port presenting *pair* (a TLS-terminating front)."""
    assert sim.cluster is not None
    runner = web.AppRunner(sim.cluster.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pair.server_context())
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_websocket_over_tls_uses_the_targets_tls_settings(tmp_path: Path) -> None:
    """Over https the canary's WebSocket trusts what HTTP trusts: a private CA file, or skip-verify."""
    certs = make_certs(tmp_path / "certs")
    async with await start_sim() as sim:
        async with served_over_tls(sim, certs.valid) as url:
            result = await run_canary(url, tls={"tls_ca_file": certs.ca_cert})
            assert result.ok and result.websocket_ok is True, result.as_dict()
        async with served_over_tls(sim, certs.self_signed) as url:
            result = await run_canary(url, tls={"tls_insecure_skip_verify": True})
            assert result.ok and result.websocket_ok is True, result.as_dict()
            refused = await run_canary(url)  # default verification: HTTP and WebSocket both refuse it
            assert refused.reason is Reason.TLS
        assert_left_nothing(sim, result)


async def test_monitor_websocket_over_tls_honours_skip_verify(tmp_path: Path) -> None:
    """The daemon's monitoring WebSocket connects to a self-signed https target set to skip verification."""
    certs = make_certs(tmp_path / "certs")
    async with await start_sim() as sim, served_over_tls(sim, certs.self_signed) as url:
        config = f"""
[defaults]
interval = "1s"
timeout = "500ms"

[[targets]]
name = "a"
url = "{url}"
tls_insecure_skip_verify = true
  [targets.canary]
  enabled = false
"""
        async with running_daemon(config, tmp_path) as (_, base):
            metrics = await eventually(
                lambda: scrape(base + "/metrics"),
                lambda m: m.value("comfyui_up", target="a") == 1.0
                and m.value("comfywatch_websocket_connected", target="a") is not None,
                timeout=10.0, what="target up and the monitor's first connection attempt done",
            )
        assert metrics.value("comfywatch_websocket_connected", target="a") == 1.0


# --------------------------------------------------------------------------------------------------------
# Busy policy


async def test_busy_queue_is_skipped() -> None:
    """when_busy=skip submits nothing while another job runs or waits, and says why."""
    async with await start_sim(faults=["worker_dead"]) as sim:
        await sim.submit(job_ms=50)  # pending: the worker takes nothing
        result = await run_canary(sim.url)
        assert result.skipped and not result.ok and result.reason is None
        assert result.detail == "queue busy (0 running, 1 pending)"
        state = sim.state()
        assert state["jobs_submitted"] == state["jobs_background_submitted"] == 1  # only the other user's


async def test_when_busy_queue_submits_and_the_queue_phase_shows_the_wait() -> None:
    """when_busy=queue waits behind another user's job; the queue phase is that wait; their history stays."""
    async with await start_sim(faults=["worker_dead"]) as sim:
        other = (await sim.submit(job_ms=500))["prompt_id"]
        task = asyncio.create_task(run_canary(sim.url, timeout=10.0, when_busy="queue"))
        await until_canary_queued(sim)
        await sim.set_faults([])  # the worker starts: the other job first (it was queued first)
        result = await task
        assert result.ok, result.as_dict()
        assert result.phases["queue"] >= 0.45
        assert result.phases["queue"] > result.phases["execute"]
        assert_phases_consistent(result)
        assert sim.state()["history"] == [other]  # someone else's entry is never deleted
        assert_left_nothing(sim, result)


# --------------------------------------------------------------------------------------------------------
# Metrics through the real daemon


def _config(url: str, *, interval: str = "1s", when_busy: str = "skip", name: str = "a") -> str:
    return f"""
[defaults]
interval = "5s"
timeout = "1s"
websocket_monitor = false

[[targets]]
name = "{name}"
url = "{url}"
  [targets.canary]
  interval = "{interval}"
  timeout = "5s"
  when_busy = "{when_busy}"
"""


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.value(name, target="a", canary="preview-image", **labels)
    assert value is not None, f"{name} {labels} missing"
    return value


async def test_daemon_exports_canary_metrics(tmp_path: Path) -> None:
    """The daemon's canary runs show as success, runs, phases, server time, histogram and last success."""
    async with await start_sim(exec_ms=20) as sim:
        started = time.time()
        async with running_daemon(_config(sim.url), tmp_path) as (_, base):
            metrics = await eventually(
                lambda: scrape(base + "/metrics"),
                lambda m: (m.value("comfyui_canary_runs_total", target="a", canary="preview-image") or 0) >= 2,
                timeout=10.0, what="two canary runs",
            )
        runs = _value(metrics, "comfyui_canary_runs_total")
        assert _value(metrics, "comfyui_canary_success") == 1.0
        # A reason's series appears with its first failure: alerts count failed runs as runs minus successes.
        assert metrics.find("comfyui_canary_failures_total", target="a") == []
        assert _value(metrics, "comfyui_canary_skipped_total") == 0.0
        assert _value(metrics, "comfyui_canary_websocket_ok") == 1.0
        assert _value(metrics, "comfyui_canary_duration_seconds_count") == runs
        assert 0 < _value(metrics, "comfyui_canary_duration_seconds_sum") < runs * 5.0
        assert _value(metrics, "comfyui_canary_duration_seconds_bucket", le="+Inf") == runs
        assert started <= _value(metrics, "comfyui_canary_last_success_timestamp_seconds") <= time.time()
        assert _value(metrics, "comfyui_canary_server_execution_seconds") >= 0.019
        phases = {p: _value(metrics, "comfyui_canary_phase_seconds", phase=p) for p in CANARY_PHASES}
        assert phases["execute"] > 0 and phases["submit"] > 0 and phases["fetch"] > 0
        assert phases["total"] >= phases["submit"] + phases["queue"] + phases["execute"] + phases["fetch"] - 1e-6
        assert sim.state()["output_writes"] == 0
        assert canary_history(sim) == []


async def test_daemon_counts_failures_by_reason(tmp_path: Path) -> None:
    """Failed runs count under their reason; success is 0 and no success time or duration is recorded."""
    async with await start_sim(faults=["oom"]) as sim:
        async with running_daemon(_config(sim.url), tmp_path) as (_, base):
            metrics = await eventually(
                lambda: scrape(base + "/metrics"),
                lambda m: (m.value("comfyui_canary_failures_total", target="a", canary="preview-image",
                                   reason="oom") or 0) >= 2,
                timeout=10.0, what="two oom failures",
            )
        assert _value(metrics, "comfyui_canary_success") == 0.0
        assert _value(metrics, "comfyui_canary_runs_total") >= 2.0
        assert metrics.total("comfyui_canary_failures_total", target="a") == _value(
            metrics, "comfyui_canary_runs_total")
        assert _value(metrics, "comfyui_canary_duration_seconds_count") == 0.0
        assert metrics.value("comfyui_canary_last_success_timestamp_seconds", target="a") is None
        assert canary_history(sim) == []


async def test_daemon_counts_skips_when_busy(tmp_path: Path) -> None:
    """when_busy=skip: runs are counted in comfyui_canary_skipped_total and nothing is submitted."""
    async with await start_sim(faults=["worker_dead"]) as sim:
        await sim.submit(job_ms=50)
        async with running_daemon(_config(sim.url), tmp_path) as (_, base):
            metrics = await eventually(
                lambda: scrape(base + "/metrics"),
                lambda m: (m.value("comfyui_canary_skipped_total", target="a", canary="preview-image") or 0) >= 2,
                timeout=10.0, what="two skipped canary runs",
            )
        assert _value(metrics, "comfyui_canary_runs_total") == 0.0
        assert metrics.total("comfyui_canary_failures_total", target="a") == 0.0
        state = sim.state()
        assert state["jobs_submitted"] == state["jobs_background_submitted"] == 1


async def test_daemon_queue_policy_shows_the_wait(tmp_path: Path) -> None:
    """when_busy=queue: the daemon's canary waits behind another job and its queue phase shows it."""
    async with await start_sim(faults=["worker_dead"]) as sim:
        await sim.submit(job_ms=600)
        async with running_daemon(_config(sim.url, interval="3s", when_busy="queue"), tmp_path) as (_, base):
            await until_canary_queued(sim)
            await sim.set_faults([])
            metrics = await eventually(
                lambda: scrape(base + "/metrics"),
                lambda m: m.value("comfyui_canary_runs_total", target="a", canary="preview-image") == 1.0,
                timeout=10.0, what="one canary run",
            )
        assert _value(metrics, "comfyui_canary_success") == 1.0
        assert _value(metrics, "comfyui_canary_phase_seconds", phase="queue") >= 0.5
        assert _value(metrics, "comfyui_canary_skipped_total") == 0.0


async def test_daemon_websocket_unavailable_metric(tmp_path: Path) -> None:
    """ws_no_upgrade: the canary still succeeds by polling and comfyui_canary_websocket_ok is 0."""
    async with await start_sim(faults=["ws_no_upgrade"]) as sim:
        async with running_daemon(_config(sim.url), tmp_path) as (_, base):
            metrics = await eventually(
                lambda: scrape(base + "/metrics"),
                lambda m: (m.value("comfyui_canary_runs_total", target="a", canary="preview-image") or 0) >= 1,
                timeout=10.0, what="one canary run",
            )
        assert _value(metrics, "comfyui_canary_websocket_ok") == 0.0
        assert _value(metrics, "comfyui_canary_success") == 1.0
        assert metrics.total("comfyui_canary_failures_total", target="a") == 0.0

