"""Per-target state: the latest observations, counters and histograms.

Checks produce observations; the scheduler applies them here; the exporter renders a snapshot. All
containers are bounded: label sets come from fixed enumerations (endpoints, reasons, phases, canaries), and
per-job memory lives only in the bounded trackers.
"""

from __future__ import annotations

import bisect
import itertools
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from comfywatch.errors import JOB_REASONS, TRANSPORT_REASONS, Reason, SkipReason, possible_reasons
from comfywatch.parse.phases import PhaseTimes
from comfywatch.parse.queue import QueueSnapshot
from comfywatch.parse.serverlog import ImportFailure
from comfywatch.parse.system import SystemStats
from comfywatch.state.history import Event, EventLog, JobWindow, SeriesTable
from comfywatch.state.trackers import QueueTracker, QueueView, QuietQueue, SeenSet

__all__ = [
    "CANARY_BUCKETS",
    "CANARY_BUCKETS_FULL",
    "CANARY_HISTORY_COLUMNS",
    "CANARY_PHASES",
    "CANARY_STEPS",
    "CLOUD_HISTORY_COLUMNS",
    "CLOUD_REQUEST_REASONS_FROM_ZERO",
    "JOB_BUCKETS",
    "JOB_REASONS_FROM_ZERO",
    "LOCAL_HISTORY_COLUMNS",
    "REQUEST_BUCKETS",
    "REQUEST_BUCKETS_FULL",
    "CanaryState",
    "CatalogSummary",
    "CheckState",
    "CloudState",
    "Histogram",
    "TargetState",
    "WorkflowVerdict",
    "code_label",
]

# Every series costs every user's Prometheus for as long as the target lives, so the default ("lean") detail
# keeps the buckets the dashboards and alerts read: the canary's include 30 s, the latency ComfyUICanarySlow
# compares with. ``[metrics] detail = "full"`` keeps the finer sets.
REQUEST_BUCKETS = (0.01, 0.05, 0.25, 1.0, 5.0)
REQUEST_BUCKETS_FULL = (0.005, 0.025, 0.1, 0.25, 1.0, 5.0)
JOB_BUCKETS = (0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
CANARY_BUCKETS = (0.25, 1.0, 2.5, 10.0, 30.0, 120.0)
CANARY_BUCKETS_FULL = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
#: A canary run's phases in the order they happen, then the whole run.
CANARY_STEPS = ("submit", "queue", "execute", "fetch")
CANARY_PHASES = (*CANARY_STEPS, "total")

#: The status page's series of a target, one point per poll at most every ``[status] history_step``. ``latency``
#: is the poll's main request (system_stats; the user endpoint for Cloud), memory figures of the first device.
LOCAL_HISTORY_COLUMNS = ("up", "running", "pending", "latency", "vram_free", "ram_free")
CLOUD_HISTORY_COLUMNS = ("up", "running", "pending", "latency", "balance")
#: One point per canary run: 1/0 for success, then the phases' seconds.
CANARY_HISTORY_COLUMNS = ("ok", *CANARY_PHASES)

#: Failure reasons whose counters exist at 0 before the first failure in the default detail: those an alert
#: counts a few of with ``increase()``, which cannot see the first failure of a series born at 1 (oom: two in an
#: hour; the other job reasons add up to the failed-job count; a Cloud account's refusals for lack of credits
#: and its 429s: two in half an hour). Every other reason's series appears when it first happens.
JOB_REASONS_FROM_ZERO: tuple[Reason, ...] = (Reason.EXECUTION_ERROR, Reason.OOM, Reason.LOST, Reason.PAYMENT)
CLOUD_REQUEST_REASONS_FROM_ZERO: tuple[Reason, ...] = (Reason.PAYMENT, Reason.RATE_LIMITED)


#: The ``code`` labels of the status codes that keep their own (a server may answer any number from 100 to 999,
#: and each would otherwise become a series of its own), and of the classes of the others: made once, so that
#: every target's counters share one string per code.
_CODE_LABELS: dict[int, str] = {int(status): str(int(status)) for status in HTTPStatus}
_CLASS_LABELS: dict[int, str] = {first: f"{first}xx" for first in range(1, 6)}


def code_label(code: int | None) -> str:
    """The ``code`` label of a request: a registered status as itself, another as its class (``5xx``), or ``other``."""
    if code is None:
        return "none"
    label = _CODE_LABELS.get(code)
    if label is None:
        label = _CLASS_LABELS[code // 100] if 100 <= code < 600 else "other"
    return label


class Histogram:
    """A cumulative-bucket histogram without labels (labels are where it is stored)."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if value != value:  # NaN never enters a histogram
            return
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[int]:
        return list(itertools.accumulate(self.counts))


@dataclass(slots=True)
class CheckState:
    duration: float | None = None
    overruns: int = 0
    last_success: float | None = None
    last_reason: Reason | None = None


@dataclass(slots=True)
class CanaryState:
    name: str
    success: float | None = None
    runs: int = 0
    skipped: int = 0
    #: Failed runs by reason; with full detail every reason the target can produce is at 0 from the start (set
    #: by ``TargetState.canary``). Alerts count failed runs as runs minus successes (``duration``'s count).
    failures: dict[Reason, int] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    server_seconds: float | None = None
    websocket_ok: float | None = None
    last_success_ts: float | None = None
    duration: Histogram = field(default_factory=lambda: Histogram(CANARY_BUCKETS))
    last_reason: Reason | None = None
    runs_today: int | None = None
    #: Wall-clock end of the last run (success or failure).
    last_run_ts: float | None = None
    history: SeriesTable = field(default_factory=lambda: SeriesTable(CANARY_HISTORY_COLUMNS, 0, 0.0))

    def record_run(self, now: float) -> None:
        """Remember a finished run for the status page (skipped runs are not runs)."""
        self.last_run_ts = now
        self.history.append(now, (self.success, *(self.phases.get(phase) for phase in CANARY_HISTORY_COLUMNS[1:])),
                            always=True)


@dataclass(slots=True)
class CloudState:
    balance_usd: float | None = None
    effective_balance_usd: float | None = None
    has_funds: float | None = None
    subscription_active: float | None = None
    subscription_tier: str | None = None
    subscription_status: str | None = None
    max_concurrent_jobs: float | None = None
    jobs_stuck: float | None = None
    #: When the account's Retry-After pause ends (wall clock): the Cloud client keeps its pause here.
    retry_after_until: float = 0.0

    def retry_after_seconds(self, now: float) -> float:
        return max(0.0, self.retry_after_until - now)


@dataclass(frozen=True)
class CatalogSummary:
    """What the exporter shows of a server's catalogue: counts and fingerprints, never the lists themselves (a
    catalogue is megabytes; ten thousand targets keep only these)."""

    node_classes: int
    custom_node_packs: int
    #: (folder, files), sorted by folder.
    models: tuple[tuple[str, int], ...]
    nodes_hash: str
    models_hash: str


@dataclass(frozen=True)
class WorkflowVerdict:
    """A watched workflow against the target's live catalogue: ComfyUI's error types and how often each."""

    name: str
    #: (error type, count), sorted by type; empty when the server would accept the workflow.
    problems: tuple[tuple[str, int], ...] = ()


class TargetState:
    """Everything known about one target. Also the :class:`RequestObserver` of its HTTP client."""

    # Ten thousand targets each keep one: slots instead of an instance dict save about a kilobyte apiece.
    __slots__ = ("_canary_reasons", "_main_endpoint", "_preset_reasons", "_request_buckets", "_seen_endpoints",
                 "_timed_endpoints", "canaries", "catalog", "check_skips", "checks", "cloud", "events",
                 "full_detail", "history", "import_failures", "job_duration", "job_failures", "jobs_api",
                 "jobs_total", "kind", "label_cache", "labels", "last_failure", "last_latency", "last_queue",
                 "monitor_connection", "monitor_forwarded", "monitor_reconnects", "monitor_status_frames",
                 "name", "network_phases", "phases", "public_url", "queue", "queue_tracker", "quiet",
                 "recent_jobs", "request_durations", "request_failures", "requests", "seen_jobs",
                 "server_version", "system", "tls_not_after", "up", "up_reason", "websocket_connected",
                 "workflows")

    def __init__(
        self,
        name: str,
        kind: str,
        public_url: str,
        *,
        endpoints: Iterable[str],
        labels: dict[str, str] | None = None,
        stall_after: float = 600.0,
        idle_polls: int = 4,
        quiet_max_skips: int = 0,
        quiet_max_refreshes: int = 0,
        full_detail: bool = False,
        history_points: int = 0,
        history_step: float = 15.0,
    ) -> None:
        self.name = name
        #: ``[metrics] detail = "full"``: every counter by reason at 0 from the start, a latency histogram per
        #: endpoint, finer buckets. Otherwise series an alert does not need at 0 appear when first counted, and
        #: only the first of *endpoints* (the poll's main request) has a latency histogram.
        self.full_detail = full_detail
        self.kind = kind
        self.public_url = public_url
        self.labels = dict(labels or {})
        self.up: float | None = None
        self.up_reason: Reason | None = None
        self.system: SystemStats | None = None
        self.queue: QueueView | None = None
        self.queue_tracker = QueueTracker(stall_after, idle_polls)
        self.seen_jobs = SeenSet()
        #: The last /queue read (snapshot, server clock offset), re-observed by polls that skip the read.
        self.last_queue: tuple[QueueSnapshot, float] | None = None
        self.quiet = QuietQueue(quiet_max_skips, quiet_max_refreshes,
                                stagger=zlib.crc32(name.encode("utf-8", "surrogatepass")))
        #: Set by the monitoring WebSocket: connections made, and queue-change (``status``) frames received.
        self.monitor_connection = 0
        self.monitor_status_frames = 0
        #: Whether the open monitoring socket has delivered a frame: it forwards (not a silent, buffering proxy).
        self.monitor_forwarded = False
        #: Times the monitoring WebSocket came back after a drop (a restart, or the network).
        self.monitor_reconnects = 0
        self.jobs_total = 0
        cloud, https = kind == "cloud", public_url.startswith("https:")
        # Every job reason in full detail, payment too: a local server's partner (API) nodes can fail for credits.
        self.job_failures: dict[Reason, int] = dict.fromkeys(
            JOB_REASONS if full_detail else possible_reasons(JOB_REASONS_FROM_ZERO, cloud=cloud, https=https), 0)
        self.job_duration = Histogram(JOB_BUCKETS)
        self.requests: dict[tuple[str, str], int] = {}
        self.request_failures: dict[tuple[str, Reason], int] = {}
        if full_detail:
            self._preset_reasons = possible_reasons(TRANSPORT_REASONS, cloud=cloud, https=https)
            self._canary_reasons = possible_reasons(Reason, cloud=cloud, https=https)
        else:
            self._preset_reasons = CLOUD_REQUEST_REASONS_FROM_ZERO if cloud else ()
            self._canary_reasons = ()
        endpoints = tuple(endpoints)
        self._timed_endpoints = frozenset(endpoints if full_detail else endpoints[:1])
        self._request_buckets = REQUEST_BUCKETS_FULL if full_detail else REQUEST_BUCKETS
        self.request_durations: dict[str, Histogram] = {}
        # A tuple: a target has a handful of endpoints, and a set of them takes 700 bytes.
        self._seen_endpoints: tuple[str, ...] = ()
        for endpoint in endpoints:
            self._init_endpoint(endpoint)
        self.phases: PhaseTimes | None = None
        #: dns/connect/tls seconds from the last ``network`` check (a fresh connection).
        self.network_phases: dict[str, float | None] = {}
        self.tls_not_after: float | None = None
        self.canaries: dict[str, CanaryState] = {}
        self.checks: dict[str, CheckState] = {}
        #: Runs of a check skipped by the account's limits, by (check, reason); see :meth:`skippable`.
        self.check_skips: dict[tuple[str, SkipReason], int] = {}
        self.websocket_connected: float | None = None
        self.cloud: CloudState | None = CloudState() if kind == "cloud" else None
        self.jobs_api: bool | None = None
        #: The exporter's kept lines of this target (its labels never change for a given state object).
        self.label_cache: dict[object, object] = {}
        self.server_version: str | None = None
        #: The watched workflows linted at the last catalogue refresh, in name order.
        self.workflows: tuple[WorkflowVerdict, ...] = ()
        self.catalog: CatalogSummary | None = None
        #: Node packs that failed to import at the server's last start; None: its log cannot say (no log route,
        #: or the start-up has scrolled out of it since comfywatch started).
        self.import_failures: tuple[ImportFailure, ...] | None = None
        # The status page's memory (see comfywatch.state.history): bounded whatever happens.
        self.history = SeriesTable(CLOUD_HISTORY_COLUMNS if cloud else LOCAL_HISTORY_COLUMNS, history_points,
                                   history_step)
        self.events = EventLog()
        self.recent_jobs = JobWindow()
        #: The main poll request's last duration (seconds), for the latency series.
        self.last_latency: float | None = None
        self._main_endpoint = endpoints[0] if endpoints else ""
        #: (when, check / canary / "job", reason) of the most recent failure of any kind.
        self.last_failure: tuple[float, str, Reason] | None = None

    def _init_endpoint(self, endpoint: str) -> Histogram | None:
        """The endpoint's latency histogram (None when not timed), its failure counters pre-set on first use."""
        hist = self.request_durations.get(endpoint)
        if hist is not None or endpoint in self._seen_endpoints:
            return hist
        self._seen_endpoints += (endpoint,)
        if self.full_detail or endpoint in self._timed_endpoints:
            hist = self.request_durations[endpoint] = Histogram(self._request_buckets)
        for reason in self._preset_reasons:
            self.request_failures.setdefault((endpoint, reason), 0)
        return hist

    # RequestObserver.

    def on_exchange(self, endpoint: str, code: int | None, seconds: float) -> None:
        hist = self._init_endpoint(endpoint)
        key = (endpoint, code_label(code))
        self.requests[key] = self.requests.get(key, 0) + 1
        if code is not None and hist is not None:
            hist.observe(seconds)
        if code is not None and endpoint == self._main_endpoint:
            self.last_latency = seconds

    def on_failure(self, endpoint: str, reason: Reason) -> None:
        self._init_endpoint(endpoint)
        key = (endpoint, reason)
        self.request_failures[key] = self.request_failures.get(key, 0) + 1

    # Observations.

    def check(self, name: str) -> CheckState:
        state = self.checks.get(name)
        if state is None:
            state = self.checks[name] = CheckState()
        return state

    def skippable(self, checks: Iterable[str]) -> None:
        """*checks* can be skipped by the account's limits: their skip counters exist at 0 from the start, so the
        first skip after a restart is an increase a rule can see."""
        for check in checks:
            for reason in SkipReason:
                self.check_skips.setdefault((check, reason), 0)

    def on_skip(self, check: str, reason: SkipReason) -> None:
        key = (check, reason)
        self.check_skips[key] = self.check_skips.get(key, 0) + 1

    def canary(self, name: str) -> CanaryState:
        state = self.canaries.get(name)
        if state is None:
            state = self.canaries[name] = CanaryState(
                name, failures=dict.fromkeys(self._canary_reasons, 0),
                duration=Histogram(CANARY_BUCKETS_FULL if self.full_detail else CANARY_BUCKETS),
                history=SeriesTable(CANARY_HISTORY_COLUMNS, self.history.capacity, 0.0))
        return state

    def set_up(self, up: bool, reason: Reason | None = None, now: float | None = None) -> None:
        was, was_reason = self.up, self.up_reason
        self.up = 1.0 if up else 0.0
        self.up_reason = None if up else reason
        if was != self.up or (not up and was_reason != reason):
            at = time.time() if now is None else now
            if was is not None or not up:  # a first "up" is no news
                self.events.add(Event(at, "up" if up else "down", "", None if up else reason))
            if not up and reason is not None:
                self.last_failure = (at, "system", reason)
            self.record_history(at, changed=True)

    def note_failure(self, source: str, reason: Reason, now: float, *, kind: str = "failure") -> None:
        """A check, canary or job failed for *reason* (the status page's events and last failure)."""
        self.last_failure = (now, source, reason)
        self.events.add(Event(now, kind, source, reason))

    def note_recovery(self, check: str, now: float) -> None:
        """*check* succeeds again after failing (the status page's events)."""
        self.events.add(Event(now, "recovered", check))

    def record_history(self, now: float, *, changed: bool = False) -> None:
        """Add the status page's point for this moment (at most one per step, unless *changed*: ``up`` moved)."""
        history = self.history
        if history.capacity <= 0 or not (changed or history.due(now)):
            return
        if self.up != 1.0 or changed:
            # What the last answer said is not what a down server holds now, nor what one that just came back holds
            # (the rest of its poll has not read its queue yet): a gap in every chart but up's.
            history.append(now, (self.up, *(None,) * (len(history.columns) - 1)), always=True)
            return
        queue = self.queue
        head: tuple[float | None, ...] = (
            self.up, None if queue is None else queue.running, None if queue is None else queue.pending,
            self.last_latency)
        if self.cloud is not None:
            row = (*head, self.cloud.balance_usd)
        else:
            system = self.system
            gpu = None if system is None else system.gpu
            row = (*head, None if gpu is None else gpu.vram_free, None if system is None else system.ram_free)
        history.append(now, row, always=True)

    def apply_system(self, stats: SystemStats, phases: PhaseTimes | None) -> None:
        if self.server_version is not None and stats.comfyui_version != self.server_version:
            self.jobs_api = None  # a new server version may have grown /api/jobs: probe again
        self.server_version = stats.comfyui_version
        self.system = stats
        if phases is not None:
            self.phases = phases

    def apply_queue(self, view: QueueView) -> None:
        self.queue = view

    def count_finished_job(self, failure: Reason | None, server_seconds: float | None,
                           now: float | None = None) -> None:
        self.jobs_total += 1
        at = time.time() if now is None else now
        self.recent_jobs.add(at, failure)
        if failure is not None:
            self.job_failures[failure] = self.job_failures.get(failure, 0) + 1
            self.note_failure("job", failure, at, kind="job_failed")
        if server_seconds is not None:
            self.job_duration.observe(server_seconds)

    def summary(self) -> dict[str, Any]:
        """Small JSON-able status for logs, /healthz and sd_notify STATUS=."""
        return {
            "target": self.name,
            "up": self.up,
            "reason": self.up_reason,
            "queue": None if self.queue is None else {"running": self.queue.running, "pending": self.queue.pending},
        }


def now() -> float:
    """Wall-clock seconds (timestamps exported to Prometheus are wall-clock)."""
    return time.time()
