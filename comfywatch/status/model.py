"""What the status page and ``/api/v1/status`` show, built from target states (pure: no I/O, ``now`` given).

One builder for both: the HTML pages (:mod:`comfywatch.status.html`) and the JSON API (:func:`as_json`) render
the same objects, so a script sees what a person sees. Every string that came from a server (a version, a node
pack's name) is cut to :data:`MAX_TEXT` here; escaping is the renderer's job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from comfywatch import __version__
from comfywatch.checks import LIVENESS_CHECKS
from comfywatch.errors import Reason, hint_for
from comfywatch.parse.text import clean as clean_text
from comfywatch.state import CANARY_PHASES, TargetState
from comfywatch.state.history import EVENTS_PER_TARGET, JOB_WINDOW_MINUTES, Event, EventLog

__all__ = [
    "SCHEMA_VERSION",
    "STATES",
    "CanarySummary",
    "CloudSummary",
    "EventView",
    "FailureSummary",
    "FleetStatus",
    "Memory",
    "Problem",
    "Series",
    "StatusInputs",
    "TargetDetail",
    "TargetSummary",
    "as_json",
    "detail",
    "duration_text",
    "fleet",
    "summarize",
]

#: The JSON document's ``schema`` field: ``comfywatch.status/v1``. Fields are only added within a version.
SCHEMA_VERSION = 1
#: Target states, worst first (the fleet view's sort order).
STATES = ("down", "degraded", "pending", "up")
#: Longest string taken from a server or a config into the page (longer ones end with "…").
MAX_TEXT = 200
#: The window of the charts and of the per-hour job counts (seconds).
WINDOW = JOB_WINDOW_MINUTES * 60.0
#: A balance needs this much history before a burn rate (and days left) is given.
MIN_BURN_SPAN = 600.0


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return clean_text(text, limit)[0]


@dataclass(frozen=True, slots=True)
class Problem:
    """Why an up target is degraded: ``code`` for scripts, ``text`` for people, ``hint`` where there is one."""

    code: str
    text: str
    hint: str | None = None


@dataclass(frozen=True, slots=True)
class Memory:
    free: int
    total: int

    @property
    def free_ratio(self) -> float:
        return self.free / self.total if self.total > 0 else 0.0


@dataclass(frozen=True, slots=True)
class FailureSummary:
    time: float
    #: The check (system, queue, jobs, canary …), or "job" for a finished job that failed.
    source: str
    reason: Reason
    hint: str


@dataclass(frozen=True, slots=True)
class CanarySummary:
    name: str
    #: The last run's outcome; None before the first run.
    ok: bool | None
    reason: Reason | None
    hint: str | None
    last_run: float | None
    last_success: float | None
    runs: int
    #: Seconds of the last run's phases, in order: submit, queue, execute, fetch (those it reached), and total.
    phases: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class CloudSummary:
    balance_usd: float | None
    effective_balance_usd: float | None
    has_funds: bool | None
    #: Dollars spent per day at the rate of the recent history; None when it cannot say (too little history,
    #: or the balance did not fall).
    burn_usd_per_day: float | None
    days_left: float | None
    subscription_active: bool | None
    subscription_tier: str | None
    subscription_status: str | None
    max_concurrent_jobs: int | None
    retry_after_seconds: float


@dataclass(frozen=True, slots=True)
class TargetSummary:
    name: str
    kind: str
    url: str
    labels: tuple[tuple[str, str], ...]
    state: str
    #: Why it is down (None unless down).
    reason: Reason | None
    hint: str | None
    problems: tuple[Problem, ...]
    version: str | None
    queue_running: int | None
    queue_pending: int | None
    oldest_pending_seconds: float | None
    running_seconds: float | None
    vram: Memory | None
    ram: Memory | None
    canary: CanarySummary | None
    jobs_finished_hour: int
    #: Failed jobs of the last hour by reason, most first.
    jobs_failed_hour: tuple[tuple[Reason, int], ...]
    last_failure: FailureSummary | None
    cloud: CloudSummary | None

    @property
    def jobs_failed_total(self) -> int:
        return sum(count for _, count in self.jobs_failed_hour)


@dataclass(frozen=True, slots=True)
class Series:
    """One chart's line: ``unit`` is one of bool, count, seconds, bytes, usd."""

    name: str
    title: str
    unit: str
    points: tuple[tuple[float, float | None], ...]


@dataclass(frozen=True, slots=True)
class EventView:
    time: float
    kind: str
    source: str
    reason: Reason | None
    hint: str | None
    #: Times it happened in a row (repeats are merged).
    count: int
    text: str


@dataclass(frozen=True, slots=True)
class TargetDetail:
    generated_at: float
    summary: TargetSummary
    series: tuple[Series, ...]
    #: Per canary: its runs' total and phase seconds.
    canary_series: tuple[tuple[str, tuple[Series, ...]], ...]
    events: tuple[EventView, ...]
    #: Seconds each history point is apart at least, and points kept (``[status]``).
    history_step: float
    history_points: int


@dataclass(frozen=True, slots=True)
class StatusInputs:
    """What the daemon hands the status routes at each request."""

    states: Sequence[TargetState]
    events: EventLog | None = None
    reload_success: bool = True


@dataclass(frozen=True, slots=True)
class FleetStatus:
    generated_at: float
    version: str
    #: Targets per state, every state present.
    counts: tuple[tuple[str, int], ...]
    targets: tuple[TargetSummary, ...]
    events: tuple[EventView, ...] = field(default=())
    reload_success: bool = True


# ----------------------------------------------------------------------------------------------------------
# Builders.


def _state_of(state: TargetState, problems: Sequence[Problem]) -> str:
    if state.up is None:
        return "pending"
    if state.up == 0.0:
        return "down"
    return "degraded" if problems else "up"


def _problems(state: TargetState, now: float) -> tuple[Problem, ...]:
    """What is wrong with a target that answers (empty for a healthy one)."""
    cloud = state.kind == "cloud"
    found: list[Problem] = []
    queue = state.queue
    if queue is not None and queue.stalled:
        found.append(Problem("queue_stalled",
                             f"queue stalled: a job has run {duration_text(queue.running_seconds)} without progress"))
    if queue is not None and queue.worker_not_consuming:
        found.append(Problem("worker_not_consuming", f"worker not consuming: {queue.pending} pending, none running"))
    for name, canary in sorted(state.canaries.items()):
        if canary.success == 0.0 and canary.last_reason is not None:
            found.append(Problem("canary_failing", _cut(f"canary {name} failing: {canary.last_reason}"),
                                 hint_for(canary.last_reason, state.public_url, cloud=cloud)))
    for check_name, check in sorted(state.checks.items()):
        # A failing liveness check is the target down; a failing canary is canary_failing above.
        if check.last_reason is not None and check_name not in LIVENESS_CHECKS and check_name != "canary":
            found.append(Problem("check_failing", f"{check_name} check failing: {check.last_reason}",
                                 hint_for(check.last_reason, state.public_url, cloud=cloud)))
    for verdict in state.workflows:
        if verdict.problems:
            kinds = ", ".join(kind for kind, _ in verdict.problems)
            found.append(Problem("workflow_broken", _cut(f"workflow {verdict.name} would be refused: {kinds}")))
    packs = [f.pack for f in state.import_failures or () if not f.builtin]
    if packs:
        found.append(Problem("custom_nodes_failed",
                             _cut(f"{len(packs)} custom node pack(s) failed to import: {', '.join(packs)}")))
    if state.websocket_connected == 0.0:
        found.append(Problem("monitor_disconnected", "monitoring WebSocket disconnected"))
    account = state.cloud
    if account is not None:
        if account.has_funds == 0.0:
            found.append(Problem("no_funds", "no credits left", hint_for(Reason.PAYMENT, cloud=True)))
        if account.subscription_active == 0.0:
            found.append(Problem("subscription_inactive", "subscription inactive"))
        if account.retry_after_seconds(now) > 0:
            found.append(Problem("rate_limited", f"rate limited for {duration_text(account.retry_after_seconds(now))}",
                                 hint_for(Reason.RATE_LIMITED, cloud=True)))
    return tuple(found)


def duration_text(seconds: float) -> str:
    """A duration as people say it: ``45 s``, ``12 min``, ``1.5 h``, ``2.0 d``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _memory(free: int | None, total: int | None) -> Memory | None:
    if free is None or total is None or total <= 0:
        return None
    return Memory(free, total)


def _canary(state: TargetState) -> CanarySummary | None:
    if not state.canaries:
        return None
    name, canary = min(state.canaries.items())
    reason = None if canary.success != 0.0 else canary.last_reason
    ordered = [(phase, canary.phases[phase]) for phase in CANARY_PHASES if phase in canary.phases]
    return CanarySummary(
        name=_cut(name), ok=None if canary.success is None else canary.success == 1.0, reason=reason,
        hint=None if reason is None else hint_for(reason, state.public_url, cloud=state.kind == "cloud"),
        last_run=canary.last_run_ts, last_success=canary.last_success_ts, runs=canary.runs, phases=tuple(ordered))


def _burn(state: TargetState) -> float | None:
    """Dollars per day the balance fell at over its latest run of non-increasing points (a top-up starts a new
    run), when that run spans :data:`MIN_BURN_SPAN` at least."""
    points = [(t, v) for t, v in state.history.column("balance") if v is not None]
    if len(points) < 2:
        return None
    end_time, end_value = points[-1]
    start_time, start_value = end_time, end_value
    for t, v in reversed(points[:-1]):
        if v < start_value:
            break  # the balance rose after this point: a top-up
        start_time, start_value = t, v
    span = end_time - start_time
    if span < MIN_BURN_SPAN or start_value <= end_value:
        return None
    return (start_value - end_value) / span * 86400.0


def _cloud(state: TargetState, now: float) -> CloudSummary | None:
    account = state.cloud
    if account is None:
        return None
    burn = _burn(state)
    balance = account.effective_balance_usd if account.effective_balance_usd is not None else account.balance_usd
    days_left = balance / burn if burn and balance is not None and balance > 0 else None

    def flag(value: float | None) -> bool | None:
        return None if value is None else value == 1.0

    return CloudSummary(
        balance_usd=account.balance_usd, effective_balance_usd=account.effective_balance_usd,
        has_funds=flag(account.has_funds), burn_usd_per_day=burn, days_left=days_left,
        subscription_active=flag(account.subscription_active),
        subscription_tier=None if account.subscription_tier is None else _cut(account.subscription_tier, 60),
        subscription_status=None if account.subscription_status is None else _cut(account.subscription_status, 60),
        max_concurrent_jobs=None if account.max_concurrent_jobs is None else int(account.max_concurrent_jobs),
        retry_after_seconds=account.retry_after_seconds(now))


def summarize(state: TargetState, now: float) -> TargetSummary:
    """The fleet view's row of one target."""
    cloud = state.kind == "cloud"
    problems = _problems(state, now) if state.up == 1.0 else ()
    status = _state_of(state, problems)
    reason = state.up_reason if status == "down" else None
    # A down server's last answer is not what it holds now: its queue and memory are unknown.
    system = state.system if status != "down" else None
    gpu = None if system is None else system.gpu
    queue = state.queue if status != "down" else None
    finished, failed = state.recent_jobs.totals(now)
    failure = state.last_failure
    return TargetSummary(
        name=state.name, kind=state.kind, url=state.public_url,
        labels=tuple(sorted(state.labels.items())), state=status, reason=reason,
        hint=None if reason is None else hint_for(reason, state.public_url, cloud=cloud),
        problems=problems,
        version=None if state.server_version is None else _cut(state.server_version, 60),
        queue_running=None if queue is None else queue.running,
        queue_pending=None if queue is None else queue.pending,
        oldest_pending_seconds=None if queue is None or not queue.pending else queue.oldest_pending_seconds,
        running_seconds=None if queue is None or not queue.running else queue.running_seconds,
        vram=None if gpu is None else _memory(gpu.vram_free, gpu.vram_total),
        ram=None if system is None else _memory(system.ram_free, system.ram_total),
        canary=_canary(state),
        jobs_finished_hour=finished,
        jobs_failed_hour=tuple(sorted(failed.items(), key=lambda item: (-item[1], item[0]))),
        last_failure=None if failure is None else FailureSummary(
            failure[0], _cut(failure[1], 60), failure[2], hint_for(failure[2], state.public_url, cloud=cloud)),
        cloud=_cloud(state, now),
    )


def fleet(states: Iterable[TargetState], now: float, *, events: EventLog | None = None,
          reload_success: bool = True) -> FleetStatus:
    """Every target, worst state first, then by name."""
    rows = sorted((summarize(state, now) for state in states), key=lambda row: (STATES.index(row.state), row.name))
    counts = dict.fromkeys(STATES, 0)
    for row in rows:
        counts[row.state] += 1
    return FleetStatus(
        generated_at=now, version=__version__, counts=tuple(counts.items()), targets=tuple(rows),
        events=() if events is None else _events(events, None, cloud=False),
        reload_success=reload_success)


_SERIES = {
    "up": ("Up", "bool"),
    "running": ("Jobs running", "count"),
    "pending": ("Jobs pending", "count"),
    "latency": ("Poll request latency", "seconds"),
    "vram_free": ("VRAM free", "bytes"),
    "ram_free": ("RAM free", "bytes"),
    "balance": ("Balance", "usd"),
}
_CANARY_SERIES = {
    "total": "Canary total",
    "submit": "Submit",
    "queue": "Queue",
    "execute": "Execute",
    "fetch": "Fetch",
}


def detail(state: TargetState, now: float, *, daemon_events: EventLog | None = None) -> TargetDetail:
    """The target view: the summary, the charts' series over the last hour, and recent events: the target's own
    and the daemon's (*daemon_events*: reloads, which may have changed how it is watched), newest first. The step
    given is the one the target's series were kept with (a reload that changes ``[status]`` keeps the running
    targets' history as it is)."""
    since = now - WINDOW
    series = tuple(
        Series(column, *_SERIES[column], tuple(state.history.column(column, since)))
        for column in state.history.columns)
    canaries = tuple(
        (_cut(name), tuple(Series(column, title, "seconds", tuple(canary.history.column(column, since)))
                           for column, title in _CANARY_SERIES.items()))
        for name, canary in sorted(state.canaries.items()))
    return TargetDetail(
        generated_at=now, summary=summarize(state, now), series=series, canary_series=canaries,
        events=tuple(sorted(
            _events(state.events, state.public_url, cloud=state.kind == "cloud")
            + (() if daemon_events is None else _events(daemon_events, None, cloud=False)),
            key=lambda event: -event.time)[:EVENTS_PER_TARGET]),
        history_step=state.history.step,
        history_points=state.history.capacity)


_EVENT_TEXT = {
    "down": "down",
    "up": "back up",
    "failure": "{source} failed",
    "recovered": "{source} recovered",
    "job_failed": "a job failed",
    "reload": "configuration reloaded",
    "reload_failed": "reload failed, old configuration kept",
}


def _event_text(event: Event) -> str:
    text = _EVENT_TEXT.get(event.kind, event.kind).format(source=_cut(event.source, 60))
    return f"{text}: {event.reason}" if event.reason is not None else text


def _events(log: EventLog, url: str | None, *, cloud: bool) -> tuple[EventView, ...]:
    return tuple(
        EventView(time=event.time, kind=event.kind, source=_cut(event.source, 60), reason=event.reason,
                  hint=None if event.reason is None else hint_for(event.reason, url, cloud=cloud),
                  count=count, text=_event_text(event))
        for event, count in log.recent())


# ----------------------------------------------------------------------------------------------------------
# JSON.


def _plain(value: Any) -> Any:
    """JSON-able form: NaN and infinities become null, floats are rounded to what a person can read."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 6)
    if isinstance(value, Reason):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def _obj(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(value) for key, value in fields.items()}


def _memory_json(memory: Memory | None) -> dict[str, Any] | None:
    return None if memory is None else {"free_bytes": memory.free, "total_bytes": memory.total}


def _summary_json(row: TargetSummary) -> dict[str, Any]:
    canary = row.canary
    cloud = row.cloud
    failure = row.last_failure
    return _obj({
        "name": row.name, "kind": row.kind, "url": row.url, "labels": dict(row.labels),
        "state": row.state, "reason": row.reason, "hint": row.hint,
        "problems": [{"code": p.code, "text": p.text, "hint": p.hint} for p in row.problems],
        "version": row.version,
        "queue": {"running": row.queue_running, "pending": row.queue_pending,
                  "oldest_pending_seconds": row.oldest_pending_seconds, "running_seconds": row.running_seconds},
        "vram": _memory_json(row.vram), "ram": _memory_json(row.ram),
        "canary": None if canary is None else {
            "name": canary.name, "ok": canary.ok, "reason": canary.reason, "hint": canary.hint,
            "last_run": canary.last_run, "last_success": canary.last_success, "runs": canary.runs,
            "phases": dict(canary.phases)},
        "jobs_last_hour": {"finished": row.jobs_finished_hour, "failed": dict(row.jobs_failed_hour)},
        "last_failure": None if failure is None else {
            "time": failure.time, "source": failure.source, "reason": failure.reason, "hint": failure.hint},
        "cloud": None if cloud is None else {
            "balance_usd": cloud.balance_usd, "effective_balance_usd": cloud.effective_balance_usd,
            "has_funds": cloud.has_funds, "burn_usd_per_day": cloud.burn_usd_per_day, "days_left": cloud.days_left,
            "subscription_active": cloud.subscription_active, "subscription_tier": cloud.subscription_tier,
            "subscription_status": cloud.subscription_status, "max_concurrent_jobs": cloud.max_concurrent_jobs,
            "retry_after_seconds": cloud.retry_after_seconds},
    })


def _event_json(event: EventView) -> dict[str, Any]:
    return _obj({"time": event.time, "kind": event.kind, "source": event.source, "reason": event.reason,
                 "hint": event.hint, "count": event.count, "text": event.text})


def _series_json(series: Sequence[Series]) -> list[dict[str, Any]]:
    return [_obj({"name": s.name, "title": s.title, "unit": s.unit, "points": [list(p) for p in s.points]})
            for s in series]


def as_json(status: FleetStatus | TargetDetail) -> dict[str, Any]:
    """The ``/api/v1/status`` document (a :class:`FleetStatus`) or ``/api/v1/targets/<name>`` (a detail)."""
    schema = f"comfywatch.status/v{SCHEMA_VERSION}"
    if isinstance(status, FleetStatus):
        return {
            "schema": schema, "generated_at": _plain(status.generated_at), "version": status.version,
            "reload_success": status.reload_success, "counts": dict(status.counts),
            "targets": [_summary_json(row) for row in status.targets],
            "events": [_event_json(event) for event in status.events],
        }
    return {
        "schema": schema, "generated_at": _plain(status.generated_at), "version": __version__,
        "target": _summary_json(status.summary),
        "history": {"step_seconds": _plain(status.history_step), "points": status.history_points},
        "series": _series_json(status.series),
        "canaries": [{"name": name, "series": _series_json(series)} for name, series in status.canary_series],
        "events": [_event_json(event) for event in status.events],
    }
