"""The status view (comfywatch.status.model): states, problems and their hints, canary and Cloud figures, and the
JSON of ``/api/v1/status`` and ``/api/v1/targets/<name>`` against docs/status-api-v1.schema.json."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from comfywatch.errors import Reason, hint_for
from comfywatch.parse.serverlog import ImportFailure
from comfywatch.parse.system import Device, SystemStats
from comfywatch.state import TargetState, WorkflowVerdict
from comfywatch.state.history import Event, EventLog
from comfywatch.state.trackers import QueueView
from comfywatch.status.model import (
    MAX_TEXT,
    MIN_BURN_SPAN,
    SCHEMA_VERSION,
    STATES,
    as_json,
    detail,
    fleet,
    summarize,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA = json.loads((DOCS / "status-api-v1.schema.json").read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA)
NOW = 1_790_000_000.0
URL = "http://10.0.0.5:8188"
CLOUD_URL = "https://cloud.comfy.org"

#: Every problem code the model can give, each made by one of the builders below.
PROBLEM_CODES = (
    "queue_stalled", "worker_not_consuming", "canary_failing", "check_failing", "workflow_broken",
    "custom_nodes_failed", "monitor_disconnected", "no_funds", "subscription_inactive", "rate_limited",
)


# ----------------------------------------------------------------------------------------------------------
# Builders: target states as the checks leave them.


def local(name: str = "gpu-1", *, points: int = 64, step: float = 15.0, url: str = URL) -> TargetState:
    return TargetState(name, "local", url, endpoints=["system_stats", "queue", "history"], labels={"rack": "r1"},
                       history_points=points, history_step=step)


def cloud(name: str = "cloud", *, points: int = 64, step: float = 60.0) -> TargetState:
    return TargetState(name, "cloud", CLOUD_URL, endpoints=["user", "billing_balance"], history_points=points,
                       history_step=step)


def stats(version: str = "0.3.64", *, device_type: str = "cuda") -> SystemStats:
    device = Device("cuda:0 NVIDIA GeForce RTX 4090", device_type, 0, 24 * 2**30, 20 * 2**30, 24 * 2**30, 2**30)
    return SystemStats("posix", version, "3.11.7", "2.4.0", 64 * 2**30, 40 * 2**30, None, (), (device,))


def queue(running: int = 0, pending: int = 0, *, stalled: bool = False, idle: bool = False) -> QueueView:
    return QueueView(running, pending, "p1" if running else None, 700.0 if running else 0.0,
                     42.0 if pending else 0.0, stalled, idle)


def healthy(name: str = "gpu-1", **kwargs: Any) -> TargetState:
    state = local(name, **kwargs)
    state.set_up(True, now=NOW - 600)
    state.apply_system(stats(), None)
    state.apply_queue(queue())
    state.websocket_connected = 1.0
    return state


def healthy_cloud(name: str = "cloud", **kwargs: Any) -> TargetState:
    state = cloud(name, **kwargs)
    state.set_up(True, now=NOW - 600)
    account = state.cloud
    assert account is not None
    account.balance_usd = account.effective_balance_usd = 60.0
    account.has_funds = account.subscription_active = 1.0
    account.subscription_tier, account.subscription_status = "CREATOR", "active"
    account.max_concurrent_jobs = 3.0
    state.apply_queue(queue())
    return state


def _stalled(state: TargetState) -> None:
    state.apply_queue(queue(1, 0, stalled=True))


def _idle_worker(state: TargetState) -> None:
    state.apply_queue(queue(0, 3, idle=True))


def _canary(state: TargetState) -> None:
    canary = state.canary("preview-image")
    canary.runs, canary.success, canary.last_reason = 3, 0.0, Reason.OOM
    canary.phases = {"submit": 0.01, "queue": 0.0, "execute": 0.2, "total": 0.25}
    canary.record_run(NOW - 5)


def _check(state: TargetState) -> None:
    state.check("queue").last_reason = Reason.SERVER_ERROR


def _workflow(state: TargetState) -> None:
    state.workflows = (WorkflowVerdict("sdxl-base", (("value_not_in_list", 2),)), WorkflowVerdict("fine"))


def _custom_nodes(state: TargetState) -> None:
    state.import_failures = (ImportFailure("ComfyUI-Impact-Pack", False, "No module named 'piexif'"),
                             ImportFailure("nodes_audio.py", True, "No module named 'torchaudio'"))


def _monitor(state: TargetState) -> None:
    state.websocket_connected = 0.0


def _account(state: TargetState) -> Any:
    assert state.cloud is not None
    return state.cloud


def _no_funds(state: TargetState) -> None:
    _account(state).has_funds = 0.0


def _subscription(state: TargetState) -> None:
    _account(state).subscription_active = 0.0


def _rate_limited(state: TargetState) -> None:
    _account(state).retry_after_until = NOW + 30


#: code: (target kind, what breaks it, the hint expected with the problem).
PROBLEMS: dict[str, tuple[str, Callable[[TargetState], None], str | None]] = {
    "queue_stalled": ("local", _stalled, None),
    "worker_not_consuming": ("local", _idle_worker, None),
    "canary_failing": ("local", _canary, hint_for(Reason.OOM, URL)),
    "check_failing": ("local", _check, hint_for(Reason.SERVER_ERROR, URL)),
    "workflow_broken": ("local", _workflow, None),
    "custom_nodes_failed": ("local", _custom_nodes, None),
    "monitor_disconnected": ("local", _monitor, None),
    "no_funds": ("cloud", _no_funds, hint_for(Reason.PAYMENT, cloud=True)),
    "subscription_inactive": ("cloud", _subscription, None),
    "rate_limited": ("cloud", _rate_limited, hint_for(Reason.RATE_LIMITED, cloud=True)),
}


def broken(code: str) -> TargetState:
    kind, breaks, _ = PROBLEMS[code]
    state = healthy(code.replace("_", "-")) if kind == "local" else healthy_cloud(code.replace("_", "-"))
    breaks(state)
    return state


def valid(document: dict[str, Any]) -> dict[str, Any]:
    """*document* after checking it against the schema and that it serializes as the routes do."""
    errors = sorted(VALIDATOR.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5])
    text = json.dumps(document, allow_nan=False)
    assert json.loads(text) == document
    return document


# ----------------------------------------------------------------------------------------------------------
# States and order.


def test_each_state() -> None:
    pending = local("pending")
    down = local("down")
    down.set_up(False, Reason.CONNECT, now=NOW - 10)
    degraded = broken("queue_stalled")
    up = healthy("up")
    assert [summarize(s, NOW).state for s in (pending, down, degraded, up)] == ["pending", "down", "degraded", "up"]
    assert summarize(up, NOW).problems == ()
    assert summarize(pending, NOW).reason is None and summarize(up, NOW).hint is None


def test_a_down_target_says_why_and_lists_no_problems() -> None:
    """Problems are about a server that answers: a down one's stale queue or failing canary is not one."""
    state = broken("queue_stalled")
    _canary(state)
    state.set_up(False, Reason.TIMEOUT, now=NOW - 1)
    row = summarize(state, NOW)
    assert (row.state, row.reason, row.problems) == ("down", Reason.TIMEOUT, ())
    assert row.hint == hint_for(Reason.TIMEOUT, URL)


def test_a_down_target_shows_no_figures_from_its_last_answer() -> None:
    """Its queue and memory are unknown while it is down: null in the row, gaps in every chart but up's."""
    state = healthy(points=64, step=15.0)
    state.apply_queue(queue(running=1, pending=2))
    state.last_latency = 0.05
    state.record_history(NOW - 30)
    state.set_up(False, Reason.CONNECT, now=NOW - 15)
    state.record_history(NOW)
    row = summarize(state, NOW)
    assert (row.queue_running, row.queue_pending, row.vram, row.ram) == (None, None, None, None)
    view = detail(state, NOW)
    points = {s.name: s.points[-3:] for s in view.series}
    assert points["up"] == ((NOW - 30, 1.0), (NOW - 15, 0.0), (NOW, 0.0))
    assert points["running"] == ((NOW - 30, 1.0), (NOW - 15, None), (NOW, None))
    assert points["latency"][1:] == ((NOW - 15, None), (NOW, None))
    assert points["vram_free"][1:] == ((NOW - 15, None), (NOW, None))


def test_down_hints_name_the_address_or_speak_of_comfy_cloud() -> None:
    state = local(url="http://gpu-7.lan:8190")
    state.set_up(False, Reason.CONNECT, now=NOW)
    hint = summarize(state, NOW).hint
    assert hint == hint_for(Reason.CONNECT, "http://gpu-7.lan:8190")
    assert hint is not None and "gpu-7.lan:8190" in hint
    account = cloud()
    account.set_up(False, Reason.AUTH, now=NOW)
    assert summarize(account, NOW).hint == hint_for(Reason.AUTH, CLOUD_URL, cloud=True)
    assert summarize(account, NOW).hint != hint_for(Reason.AUTH, CLOUD_URL)  # Comfy Cloud has its own words


def test_fleet_sorts_worst_first_then_by_name_and_counts_every_state() -> None:
    states = [healthy("b-up"), local("z-pending"), healthy("a-up"), broken("check_failing"), local("m-down"),
              local("c-down"), broken("no_funds")]
    for name in ("m-down", "c-down"):
        next(s for s in states if s.name == name).set_up(False, Reason.CONNECT, now=NOW)
    status = fleet(states, NOW)
    assert [(row.state, row.name) for row in status.targets] == [
        ("down", "c-down"), ("down", "m-down"), ("degraded", "check-failing"), ("degraded", "no-funds"),
        ("pending", "z-pending"), ("up", "a-up"), ("up", "b-up")]
    assert dict(status.counts) == {"down": 2, "degraded": 2, "pending": 1, "up": 2}
    assert tuple(dict(status.counts)) == STATES
    document = valid(as_json(status))
    assert document["counts"] == {"down": 2, "degraded": 2, "pending": 1, "up": 2}
    assert [t["name"] for t in document["targets"]] == [row.name for row in status.targets]


def test_an_empty_fleet() -> None:
    document = valid(as_json(fleet([], NOW)))
    assert document["targets"] == [] and set(document["counts"].values()) == {0}


# ----------------------------------------------------------------------------------------------------------
# Problems.


@pytest.mark.parametrize("code", PROBLEM_CODES)
def test_each_problem_degrades_the_target_with_its_hint(code: str) -> None:
    row = summarize(broken(code), NOW)
    assert row.state == "degraded"
    assert [p.code for p in row.problems] == [code]
    (problem,) = row.problems
    assert problem.hint == PROBLEMS[code][2]
    assert problem.text and len(problem.text) <= MAX_TEXT
    valid(as_json(fleet([broken(code)], NOW)))


def test_the_problem_codes_are_the_schemas() -> None:
    assert set(PROBLEMS) == set(PROBLEM_CODES)
    assert SCHEMA["$defs"]["problem"]["properties"]["code"]["enum"] == list(PROBLEM_CODES)


def test_problem_texts_say_what_is_wrong() -> None:
    texts = {code: summarize(broken(code), NOW).problems[0].text for code in PROBLEM_CODES}
    assert texts["queue_stalled"] == "queue stalled: a job has run 12 min without progress"
    assert texts["worker_not_consuming"] == "worker not consuming: 3 pending, none running"
    assert texts["canary_failing"] == "canary preview-image failing: oom"
    assert texts["check_failing"] == "queue check failing: server_error"
    assert texts["workflow_broken"] == "workflow sdxl-base would be refused: value_not_in_list"
    # ComfyUI's own optional modules failing (no torchaudio) are no custom node pack.
    assert texts["custom_nodes_failed"] == "1 custom node pack(s) failed to import: ComfyUI-Impact-Pack"
    assert texts["rate_limited"] == "rate limited for 30 s"


def test_every_problem_at_once() -> None:
    """Problems come in a fixed order (a stalled job and an idle worker exclude each other: one state each)."""
    state = healthy()
    for code in PROBLEM_CODES:
        if PROBLEMS[code][0] == "local" and code != "worker_not_consuming":
            PROBLEMS[code][1](state)
    account = healthy_cloud()
    for code in PROBLEM_CODES:
        if PROBLEMS[code][0] == "cloud":
            PROBLEMS[code][1](account)
    codes = [p.code for p in summarize(state, NOW).problems] + [p.code for p in summarize(account, NOW).problems]
    assert codes == [code for code in PROBLEM_CODES if code != "worker_not_consuming"]
    valid(as_json(fleet([state, account], NOW)))
    valid(as_json(detail(state, NOW)))
    valid(as_json(detail(account, NOW)))


@pytest.mark.parametrize("check", ["system", "auth", "canary"])
def test_checks_shown_elsewhere_are_no_check_failing(check: str) -> None:
    """A failing system/auth check is the target being down; a failing canary check is canary_failing."""
    state = healthy()
    state.check(check).last_reason = Reason.TIMEOUT
    assert summarize(state, NOW).problems == ()


def test_what_is_not_a_problem() -> None:
    state = healthy()
    state.workflows = (WorkflowVerdict("fine"),)
    state.import_failures = (ImportFailure("nodes_audio.py", True, None),)
    state.websocket_connected = None  # websocket_monitor = false
    canary = state.canary("ok")
    canary.runs, canary.success = 1, 1.0
    state.check("queue").last_reason = None
    account = healthy_cloud()
    _account(account).retry_after_until = NOW - 1  # a pause that has ended
    assert summarize(state, NOW).state == summarize(account, NOW).state == "up"


def test_a_cloud_canary_hint_is_in_comfy_clouds_words() -> None:
    account = healthy_cloud()
    canary = account.canary("echo")
    canary.runs, canary.success, canary.last_reason = 1, 0.0, Reason.SERVER_ERROR
    row = summarize(account, NOW)
    assert [p.hint for p in row.problems] == [hint_for(Reason.SERVER_ERROR, CLOUD_URL, cloud=True)]
    assert row.canary is not None and row.canary.hint == hint_for(Reason.SERVER_ERROR, CLOUD_URL, cloud=True)


# ----------------------------------------------------------------------------------------------------------
# Figures: queue, memory, canary, jobs, last failure.


def test_summary_figures() -> None:
    state = healthy()
    state.apply_queue(queue(1, 2))
    row = summarize(state, NOW)
    assert (row.queue_running, row.queue_pending, row.oldest_pending_seconds, row.running_seconds) == (1, 2, 42.0,
                                                                                                      700.0)
    assert row.version == "0.3.64"
    assert row.vram is not None and (row.vram.free, row.vram.total) == (20 * 2**30, 24 * 2**30)
    assert row.ram is not None and (row.ram.free, row.ram.total) == (40 * 2**30, 64 * 2**30)
    assert row.labels == (("rack", "r1"),)
    target = valid(as_json(fleet([state], NOW)))["targets"][0]
    assert target["queue"] == {"running": 1, "pending": 2, "oldest_pending_seconds": 42.0, "running_seconds": 700.0}
    assert target["vram"] == {"free_bytes": 20 * 2**30, "total_bytes": 24 * 2**30}
    # An idle queue has no ages: null, not 0 s.
    state.apply_queue(queue())
    idle = valid(as_json(fleet([state], NOW)))["targets"][0]["queue"]
    assert idle == {"running": 0, "pending": 0, "oldest_pending_seconds": None, "running_seconds": None}


def test_a_cpu_device_has_no_vram() -> None:
    state = healthy()
    state.apply_system(stats(device_type="cpu"), None)
    row = summarize(state, NOW)
    assert row.vram is None and row.ram is not None


def test_canary_summary_orders_phases_and_hints_only_a_failure() -> None:
    state = healthy()
    canary = state.canary("preview-image")
    canary.runs, canary.success, canary.last_reason = 4, 1.0, None
    canary.phases = {"total": 1.5, "fetch": 0.1, "execute": 1.0, "submit": 0.2, "queue": 0.2}
    canary.last_success_ts = NOW - 30
    canary.record_run(NOW - 30)
    row = summarize(state, NOW)
    assert row.canary is not None
    assert [name for name, _ in row.canary.phases] == ["submit", "queue", "execute", "fetch", "total"]
    assert (row.canary.ok, row.canary.reason, row.canary.hint, row.canary.runs) == (True, None, None, 4)
    assert (row.canary.last_run, row.canary.last_success) == (NOW - 30, NOW - 30)
    document = valid(as_json(fleet([state], NOW)))["targets"][0]["canary"]
    assert list(document["phases"]) == ["submit", "queue", "execute", "fetch", "total"]
    assert document["ok"] is True
    # Before its first run the canary's outcome is unknown.
    fresh = healthy()
    fresh.canary("later")
    assert valid(as_json(fleet([fresh], NOW)))["targets"][0]["canary"]["ok"] is None


def test_jobs_of_the_last_hour_and_the_last_failure() -> None:
    state = healthy()
    state.count_finished_job(None, 1.0, now=NOW - 4000)  # more than an hour ago
    for _ in range(3):
        state.count_finished_job(None, 1.0, now=NOW - 120)
    state.count_finished_job(Reason.EXECUTION_ERROR, 1.0, now=NOW - 60)
    state.count_finished_job(Reason.OOM, 1.0, now=NOW - 50)
    state.count_finished_job(Reason.OOM, 1.0, now=NOW - 40)
    row = summarize(state, NOW)
    assert row.jobs_finished_hour == 6
    assert row.jobs_failed_hour == ((Reason.OOM, 2), (Reason.EXECUTION_ERROR, 1))
    assert row.jobs_failed_total == 3
    assert row.last_failure is not None
    assert (row.last_failure.time, row.last_failure.source, row.last_failure.reason) == (NOW - 40, "job", Reason.OOM)
    assert row.last_failure.hint == hint_for(Reason.OOM, URL)
    target = valid(as_json(fleet([state], NOW)))["targets"][0]
    assert target["jobs_last_hour"] == {"finished": 6, "failed": {"oom": 2, "execution_error": 1}}
    assert list(target["jobs_last_hour"]["failed"]) == ["oom", "execution_error"]  # most first
    assert target["last_failure"] == {"time": NOW - 40, "source": "job", "reason": "oom",
                                      "hint": hint_for(Reason.OOM, URL)}


def test_events_carry_their_hint_and_text() -> None:
    state = healthy()
    state.set_up(False, Reason.CONNECT, now=NOW - 100)
    state.set_up(True, now=NOW - 50)
    state.note_failure("queue", Reason.TIMEOUT, NOW - 40)
    state.note_recovery("queue", NOW - 30)
    state.count_finished_job(Reason.OOM, None, now=NOW - 20)
    state.count_finished_job(Reason.OOM, None, now=NOW - 10)
    events = valid(as_json(detail(state, NOW)))["events"]
    assert [(e["kind"], e["source"], e["reason"], e["count"], e["text"]) for e in events] == [
        ("job_failed", "job", "oom", 2, "a job failed: oom"),
        ("recovered", "queue", None, 1, "queue recovered"),
        ("failure", "queue", "timeout", 1, "queue failed: timeout"),
        ("up", "", None, 1, "back up"),
        ("down", "", "connect", 1, "down: connect"),
    ]
    assert [e["hint"] for e in events] == [hint_for(Reason.OOM, URL), None, hint_for(Reason.TIMEOUT, URL), None,
                                           hint_for(Reason.CONNECT, URL)]
    assert events[0]["time"] == NOW - 10


def test_fleet_events_are_the_daemons() -> None:
    log = EventLog()
    log.add(Event(NOW - 20, "reload"))
    log.add(Event(NOW - 10, "reload_failed"))
    document = valid(as_json(fleet([healthy()], NOW, events=log, reload_success=False)))
    assert document["reload_success"] is False
    assert [(e["kind"], e["text"]) for e in document["events"]] == [
        ("reload_failed", "reload failed, old configuration kept"), ("reload", "configuration reloaded")]


# ----------------------------------------------------------------------------------------------------------
# Comfy Cloud: burn rate and days left.


def with_balances(balances: list[float], *, step: float = 60.0, effective: float | None = None) -> TargetState:
    """A Cloud account whose history holds *balances*, one a *step* apart, the last at NOW."""
    state = cloud(step=step, points=256)
    account = _account(state)
    state.set_up(True, now=NOW - step * len(balances))
    start = NOW - step * (len(balances) - 1)
    for index, balance in enumerate(balances):
        account.balance_usd = balance
        state.record_history(start + index * step)
    account.effective_balance_usd = effective
    account.has_funds = account.subscription_active = 1.0
    return state


def test_a_falling_balance_gives_a_burn_rate_and_days_left() -> None:
    # $0.50 a minute for 20 minutes: $720 a day; $40 left is 0.0556 days.
    balances = [50.0 - 0.5 * i for i in range(21)]
    row = summarize(with_balances(balances), NOW)
    assert row.cloud is not None
    assert row.cloud.burn_usd_per_day == pytest.approx(720.0)
    assert row.cloud.days_left == pytest.approx(40.0 / 720.0)
    cloud_json = valid(as_json(fleet([with_balances(balances)], NOW)))["targets"][0]["cloud"]
    assert cloud_json["burn_usd_per_day"] == pytest.approx(720.0)
    assert cloud_json["days_left"] == pytest.approx(40.0 / 720.0, abs=1e-6)


def test_days_left_prefer_the_effective_balance() -> None:
    row = summarize(with_balances([50.0 - 0.5 * i for i in range(21)], effective=36.0), NOW)
    assert row.cloud is not None and row.cloud.days_left == pytest.approx(36.0 / 720.0)


def test_a_top_up_starts_a_new_run() -> None:
    # Falling, topped up to $100, then falling $1 a minute for 15 minutes: only the run after the top-up counts.
    before = [50.0 - i for i in range(10)]
    after = [100.0 - i for i in range(16)]
    row = summarize(with_balances(before + after), NOW)
    assert row.cloud is not None and row.cloud.burn_usd_per_day == pytest.approx(1440.0)
    # A top-up less than MIN_BURN_SPAN ago: too little of the new run to say.
    recent = [100.0 - i for i in range(int(MIN_BURN_SPAN // 60))]
    row = summarize(with_balances(before + recent), NOW)
    assert row.cloud is not None and (row.cloud.burn_usd_per_day, row.cloud.days_left) == (None, None)


def test_a_run_starts_at_its_first_point_even_when_flat_at_first() -> None:
    """Flat then falling (no top-up): the rate is over the whole run, flat part included."""
    balances = [60.0] * 10 + [60.0 - i for i in range(1, 11)]
    row = summarize(with_balances(balances), NOW)
    assert row.cloud is not None
    assert row.cloud.burn_usd_per_day == pytest.approx(10.0 / (19 * 60.0) * 86400.0)


@pytest.mark.parametrize(("balances", "why"), [
    ([50.0], "one point"),
    ([50.0 - i for i in range(9)], "8 minutes: shorter than MIN_BURN_SPAN"),
    ([50.0] * 30, "flat"),
    ([20.0 + i for i in range(30)], "rising"),
])
def test_no_burn_rate_without_a_long_enough_fall(balances: list[float], why: str) -> None:
    row = summarize(with_balances(balances), NOW)
    assert row.cloud is not None
    assert (row.cloud.burn_usd_per_day, row.cloud.days_left) == (None, None), why


def test_unknown_balances_are_skipped_and_an_empty_account_has_no_days_left() -> None:
    state = with_balances([10.0 - 0.5 * i for i in range(21)])
    _account(state).balance_usd = None
    state.record_history(NOW + 60)  # a poll that could not read the balance
    _account(state).balance_usd = 0.0
    row = summarize(state, NOW + 60)
    assert row.cloud is not None and row.cloud.burn_usd_per_day == pytest.approx(720.0)
    assert row.cloud.days_left is None  # nothing left: not "0 days" computed from a rate, the balance says it


def test_cloud_figures_in_json() -> None:
    state = healthy_cloud()
    document = valid(as_json(fleet([state], NOW)))["targets"][0]
    assert document["kind"] == "cloud" and document["vram"] is None
    assert document["cloud"] == {
        "balance_usd": 60.0, "effective_balance_usd": 60.0, "has_funds": True, "burn_usd_per_day": None,
        "days_left": None, "subscription_active": True, "subscription_tier": "CREATOR",
        "subscription_status": "active", "max_concurrent_jobs": 3, "retry_after_seconds": 0.0}
    local_row = valid(as_json(fleet([healthy()], NOW)))["targets"][0]
    assert local_row["cloud"] is None


# ----------------------------------------------------------------------------------------------------------
# Series.


def test_detail_series_cover_the_last_hour() -> None:
    state = local(step=60.0, points=256)
    state.set_up(True, now=NOW - 60 * 91)
    state.apply_system(stats(), None)
    for minute in range(90, -1, -1):
        state.last_latency = minute / 100
        state.record_history(NOW - 60 * minute)
    view = detail(state, NOW)
    assert [s.name for s in view.series] == ["up", "running", "pending", "latency", "vram_free", "ram_free"]
    latency = next(s for s in view.series if s.name == "latency")
    assert latency.unit == "seconds"
    assert [t for t, _ in latency.points] == [NOW - 60 * m for m in range(60, -1, -1)]
    assert latency.points[-1][1] == 0.0 and latency.points[0][1] == pytest.approx(0.6)
    document = valid(as_json(view))
    assert document["history"] == {"step_seconds": 60.0, "points": 256}
    assert document["series"][0]["points"][-1] == [NOW, 1.0]


def test_the_history_settings_are_the_targets_own() -> None:
    """A reload that changes [status] keeps the running targets' series: the document says how they were kept."""
    state = healthy(step=30.0, points=128)
    assert as_json(detail(state, NOW))["history"] == {"step_seconds": 30.0, "points": 128}


def test_the_up_series_shows_an_outage_between_steps() -> None:
    state = healthy(step=3600.0)
    state.set_up(False, Reason.CONNECT, now=NOW - 30)
    state.set_up(True, now=NOW - 20)
    up = next(s for s in detail(state, NOW).series if s.name == "up")
    assert up.points == ((NOW - 600, 1.0), (NOW - 30, 0.0), (NOW - 20, 1.0))


def test_canary_series() -> None:
    state = healthy()
    _canary(state)
    document = valid(as_json(detail(state, NOW)))
    (canary,) = document["canaries"]
    assert canary["name"] == "preview-image"
    assert [s["name"] for s in canary["series"]] == ["total", "submit", "queue", "execute", "fetch"]
    by_name = {s["name"]: s["points"] for s in canary["series"]}
    assert by_name["total"] == [[NOW - 5, 0.25]]
    assert by_name["fetch"] == [[NOW - 5, None]]  # the run failed before fetching


def test_without_history_the_detail_has_empty_series() -> None:
    state = healthy(points=0)
    _canary(state)
    document = valid(as_json(detail(state, NOW)))
    assert document["history"]["points"] == 0
    assert all(s["points"] == [] for s in document["series"])
    assert all(s["points"] == [] for c in document["canaries"] for s in c["series"])


def test_the_schemas_series_names_are_the_models() -> None:
    local_names = {s["name"] for s in as_json(detail(healthy(), NOW))["series"]}
    cloud_names = {s["name"] for s in as_json(detail(healthy_cloud(), NOW))["series"]}
    state = healthy()
    _canary(state)
    canary_names = {s["name"] for s in as_json(detail(state, NOW))["canaries"][0]["series"]}
    definitions = SCHEMA["$defs"]
    assert set(definitions["target_series"]["properties"]["name"]["enum"]) == local_names | cloud_names
    assert set(definitions["canary_series"]["properties"]["name"]["enum"]) == canary_names


# ----------------------------------------------------------------------------------------------------------
# The schema itself.


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "properties" in node and node.get("type") == "object":
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def test_the_schema_is_a_closed_2020_12_schema() -> None:
    """Every object lists all its fields as required and allows no others: a field added to as_json without the
    schema, or dropped from it, fails the validations above."""
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    objects = list(_objects(SCHEMA))
    assert len(objects) >= 12
    for node in objects:
        assert node.get("additionalProperties") is False, node.get("title") or sorted(node["properties"])
        assert sorted(node["required"]) == sorted(node["properties"]), sorted(node["properties"])


def test_the_schemas_enums_are_the_codes() -> None:
    definitions = SCHEMA["$defs"]
    assert definitions["schema_id"]["const"] == f"comfywatch.status/v{SCHEMA_VERSION}"
    assert definitions["reason"]["enum"] == [reason.value for reason in Reason]
    assert definitions["target"]["properties"]["state"]["enum"] == list(STATES)


def test_a_field_the_schema_does_not_know_fails() -> None:
    document = as_json(fleet([healthy()], NOW))
    document["targets"][0]["gpu_temperature"] = 71
    assert not VALIDATOR.is_valid(document)
    document = as_json(fleet([healthy()], NOW))
    del document["targets"][0]["queue"]["pending"]
    assert not VALIDATOR.is_valid(document)
    document = as_json(fleet([healthy()], NOW))
    document["targets"][0]["state"] = "down"  # down without a reason
    assert not VALIDATOR.is_valid(document)


def test_the_documented_example_is_valid() -> None:
    """docs/status-page.md's example document is one the schema accepts."""
    text = (DOCS / "status-page.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "no ```json example in docs/status-page.md"
    for block in blocks:
        valid(json.loads(block))


# ----------------------------------------------------------------------------------------------------------
# Hostile strings and numbers.

HOSTILE = [
    "<script>alert(1)</script>",
    "\ud800lone\udfff surrogates",
    "\x00\x1b[2J\r\nforged: line\x7f\x9b",
    "\u202eevil\u2066",
    "\"quotes\" \\ back\\slash </title>",
    "x" * 1_000_000,
    "😀" * 500,
]


def hostile_state(text: str) -> TargetState:
    """Every string a server or a stored state could put on the page, set to *text* behind the parsers' back."""
    state = healthy()
    state.server_version = text
    state.apply_system(stats(text), None)
    state.workflows = (WorkflowVerdict(text, ((text, 1),)),)
    state.import_failures = (ImportFailure(text, False, text),)
    canary = state.canary(text)
    canary.runs, canary.success, canary.last_reason = 1, 0.0, Reason.VALIDATION
    canary.record_run(NOW - 1)
    state.note_failure(text, Reason.TIMEOUT, NOW - 2)
    state.note_recovery(text, NOW - 1)
    state.last_latency = math.nan
    return state


def hostile_cloud(text: str) -> TargetState:
    state = healthy_cloud()
    account = _account(state)
    account.subscription_tier = account.subscription_status = text
    account.balance_usd = math.inf
    account.effective_balance_usd = math.nan
    state.record_history(NOW)
    return state


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings_stay_valid_bounded_json(text: str) -> None:
    for document in (as_json(fleet([hostile_state(text), hostile_cloud(text)], NOW)),
                     as_json(detail(hostile_state(text), NOW)), as_json(detail(hostile_cloud(text), NOW))):
        valid(document)
        # As the routes send it: ASCII with escapes, so even a lone surrogate goes out as \udxxx.
        assert json.dumps(document, allow_nan=False).isascii()
    row = summarize(hostile_state(text), NOW)
    assert row.version is not None and len(row.version) <= 60
    assert all(len(p.text) <= MAX_TEXT for p in row.problems)
    assert row.canary is not None and len(row.canary.name) <= MAX_TEXT
    assert row.last_failure is not None and len(row.last_failure.source) <= 60
    account = summarize(hostile_cloud(text), NOW).cloud
    assert account is not None and account.subscription_tier is not None and len(account.subscription_tier) <= 60
    # Infinite and NaN figures become null, never NaN in the JSON.
    cloud_json = as_json(fleet([hostile_cloud(text)], NOW))["targets"][0]["cloud"]
    assert cloud_json["balance_usd"] is None and cloud_json["effective_balance_usd"] is None


def test_long_strings_are_cut_with_an_ellipsis() -> None:
    state = hostile_state("y" * 5000)
    row = summarize(state, NOW)
    assert row.version == "y" * 59 + "…"
    assert row.canary is not None and row.canary.name == "y" * (MAX_TEXT - 1) + "…"
    assert {len(p.text) for p in row.problems if p.code in {"workflow_broken", "canary_failing",
                                                            "custom_nodes_failed"}} == {MAX_TEXT}
    assert all(p.text.endswith("…") for p in row.problems if p.code != "check_failing")
    events = as_json(detail(state, NOW))["events"]
    assert all(len(e["source"]) <= 60 for e in events)


@given(st.text(alphabet=st.characters(codec=None, categories=["Cs", "Cc", "Cf", "Co", "Zl", "Zp", "Lo", "So",
                                                                 "Po"]), max_size=300))
def test_any_text_gives_valid_json(text: str) -> None:
    valid(as_json(fleet([hostile_state(text), hostile_cloud(text)], NOW)))
    valid(as_json(detail(hostile_state(text), NOW)))
