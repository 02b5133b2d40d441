"""One target's ``/metrics`` lines: encoded when its values change, kept between scrapes.

A scrape of 1000 targets has ~100 ms for ~140k series: far too little to format every line every time in
Python. So a target is encoded when a poll ends (``exporter.prepare`` calls :func:`chunks`, when the
daemon expects a scrape before the target's next poll), and a scrape only takes a
:class:`Snapshot` of each target, compares it with the one encoded, and copies the target's encoded lines
into the families (:func:`chunks`); a target whose snapshot changed since is encoded there and then. Inside
an encoding, sections whose values did not change (build information, system stats, queue, canaries, Cloud
account, counters by reason, histograms) are reused as they are.

The values themselves are every cache key, so nothing reused can be stale: whatever the code path that
changed a state (poll, canary, monitoring WebSocket, scheduler overrun), the next scrape shows it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import structlog

from comfywatch.export import metrics as m
from comfywatch.export.exposition import (
    MetricDef,
    column_lines,
    format_value,
    histogram_lines,
    histogram_template,
    labels_text,
)
from comfywatch.parse.phases import PhaseTimes
from comfywatch.parse.system import Device
from comfywatch.parse.text import sanitize
from comfywatch.state import CANARY_PHASES, CanaryState, Histogram, TargetState

__all__ = [
    "ENCODE_FAILURES", "FAMILIES", "Chunks", "EncodeFailures", "Snapshot", "TargetLines", "chunks", "encode",
    "is_current", "snapshot",
]

log = structlog.get_logger("comfywatch.exporter")

#: The families of /metrics, in output order.
FAMILIES: tuple[MetricDef, ...] = m.TARGET + m.CLOUD + m.DAEMON
_POSITION = {metric: index for index, metric in enumerate(FAMILIES)}
_POSITIONS = range(len(FAMILIES))

#: A target's lines, one encoded block per family of :data:`FAMILIES` (None: no series in that family).
Chunks = tuple[bytes | None, ...]
#: A section's lines by family position in :data:`FAMILIES` (several lines of one family joined by newlines).
Texts = dict[int, bytes]
Value = float | int | None

class EncodeFailures:
    """Encodings of a target's lines that raised (exported as ``comfywatch_encode_failures_total``)."""

    __slots__ = ("total",)

    def __init__(self) -> None:
        self.total = 0


ENCODE_FAILURES = EncodeFailures()

#: A cap on the column heads and sections kept per target, far above what a target has: whatever label values
#: reach them, they cannot grow without bound.
_KEPT = 512


class Snapshot(NamedTuple):
    """Every value a target's lines show, by section. Immutable observations (system stats, queue view, HTTP
    phases) enter as themselves; counters by key as their values (their dicts are append-only, so the keys
    follow from the number of values); a histogram as its count (every observation bumps it). What changes on
    every poll comes first: comparing a changed snapshot stops there."""

    checks: tuple[tuple[str, ...], tuple[tuple[Value, ...], ...]]
    http: tuple[object, ...]
    requests: tuple[int, ...]
    request_durations: tuple[int, ...]
    target: tuple[Value, ...]
    system: tuple[object, ...]
    queue: object
    cloud: tuple[object, ...] | None
    job_failures: tuple[int, ...]
    request_failures: tuple[int, ...]
    check_skips: tuple[int, ...]
    job_durations: int
    #: Per canary: its values, its failures by reason and its duration count.
    canaries: tuple[tuple[object, ...], ...]
    #: What the last catalogue refresh found (immutable values).
    catalog: tuple[object, ...]


# attrgetter and map: no Python frame per check or histogram.
_CHECK_VALUES = operator.attrgetter("duration", "overruns", "last_success")
_COUNT = operator.attrgetter("count")


def _canary_key(c: CanaryState) -> tuple[object, ...]:
    return (c.name, c.success, c.runs, c.skipped, tuple(c.phases.items()), c.server_seconds, c.websocket_ok,
            c.last_success_ts, tuple(c.failures.values()), c.duration.count)


def snapshot(state: TargetState, now: float) -> Snapshot:
    """The values of *state* (see :class:`Snapshot`); cheap to take and to compare."""
    cloud = state.cloud
    canaries = state.canaries.values()
    return Snapshot(
        (tuple(state.checks), tuple(map(_CHECK_VALUES, state.checks.values()))),
        (state.phases, tuple(state.network_phases.items())),
        tuple(state.requests.values()),
        tuple(map(_COUNT, state.request_durations.values())),
        (state.up, state.jobs_total, state.tls_not_after, state.websocket_connected),
        (state.kind, state.public_url, state.system),
        state.queue,
        None if cloud is None else (
            cloud.balance_usd, cloud.effective_balance_usd, cloud.has_funds, cloud.subscription_active,
            cloud.subscription_tier, cloud.subscription_status, cloud.max_concurrent_jobs, cloud.jobs_stuck,
            cloud.retry_after_seconds(now), tuple([c.runs_today for c in canaries])),
        tuple(state.job_failures.values()),
        tuple(state.request_failures.values()),
        tuple(state.check_skips.values()),
        state.job_duration.count,
        tuple(map(_canary_key, canaries)),
        (state.workflows, state.catalog, state.import_failures),
    )


def _line_head(name: str, labels: str) -> str:
    return f"{name}{{{labels}}} " if labels else f"{name} "


def _join(prefix: str, extra: str) -> str:
    if not prefix:
        return extra
    return f"{prefix},{extra}" if extra else prefix


class _Heads(dict[MetricDef, str]):
    """``name{prefix} `` by family, made on first use: a target uses about 15 of the 45 families this way, and
    1000 targets would otherwise keep ~5 MB of heads they never write."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def __missing__(self, metric: MetricDef) -> str:
        head = self[metric] = _line_head(metric.name, self.prefix)
        return head


class TargetLines:
    """Line heads, encoded sections and the last encoding of one target (for one of ``/metrics`` with a
    ``target`` label, or ``/probe`` without)."""

    __slots__ = ("blocks", "column_heads", "device_heads", "encoded", "failed", "heads", "hists", "name", "now",
                 "prefix", "sections", "seqs", "with_target")

    def __init__(self, state: TargetState, with_target: bool) -> None:
        self.name = state.name
        self.with_target = with_target
        #: The time of the encoding in progress (Retry-After countdowns are relative to it).
        self.now = 0.0
        pairs: list[tuple[str, str]] = [("target", state.name)] if with_target else []
        pairs.extend(sorted(state.labels.items()))
        self.prefix = labels_text(pairs)
        #: ``name{prefix} `` of the families whose series carry the prefix only, made when first used.
        self.heads = _Heads(self.prefix)
        #: Line heads of families written as columns (checks, HTTP phases), by family and label values.
        self.column_heads: dict[tuple[MetricDef, tuple[str, ...]], tuple[str, ...]] = {}
        #: The devices' line heads for each device family, with the label values they were made for: written
        #: on every system poll, and the same until the server's devices change.
        self.device_heads: tuple[tuple[tuple[str, str, str], ...], tuple[tuple[str, ...], ...]] = ((), ())
        #: Line heads of the counter blocks, and the blocks with the values they show, by slot.
        self.seqs: dict[str, tuple[str, ...]] = {}
        #: Per histogram: (count when encoded, its lines, their %-template).
        self.hists: dict[Histogram, tuple[int, bytes, bytes]] = {}
        self.blocks: dict[str, tuple[tuple[int, ...], bytes]] = {}
        self.sections: dict[str, tuple[object, Texts]] = {}
        #: (snapshot, chunks) of the last encoding.
        self.encoded: tuple[Snapshot, Chunks] | None = None
        #: Whether an encoding of this target has failed (logged once, counted every time).
        self.failed = False

    # Label strings: made where needed, not kept. A section that uses them is rebuilt only when its values
    # change, and what is written on every poll keeps its line heads instead (heads, column and device heads).

    def get(self, key: str, value: str, key2: str = "", value2: str = "") -> str:
        """``prefix,key="value"[,key2="value2"]`` (values escaped)."""
        return _join(self.prefix, labels_text([(key, value), (key2, value2)] if key2 else [(key, value)]))

    def pairs(self, pairs: tuple[tuple[str, str], ...]) -> str:
        """``prefix,k1="v1",...`` (values escaped)."""
        return _join(self.prefix, labels_text(pairs))

    def own_labels(self, check: str) -> str:
        """Labels of the daemon-scoped families: ``target`` (and ``check``, unless empty) only."""
        return labels_text([("target", self.name), ("check", check)] if check else [("target", self.name)])

    def heads_by(self, metric: MetricDef, label: str, values: tuple[str, ...], own: bool = False) -> tuple[str, ...]:
        """Line heads of *metric* series with ``label`` set to each of *values* (after the target's prefix, or
        after only the ``target`` label when *own*), cached by the values."""
        key = (metric, values)
        heads = self.column_heads.get(key)
        if heads is None:
            heads = tuple([_line_head(metric.name, self.own_labels(value) if own else self.get(label, value))
                           for value in values])
            if len(self.column_heads) < _KEPT:
                self.column_heads[key] = heads
        return heads

    # Cached blocks and sections.

    def section(self, slot: str, key: object, build: Callable[[TargetLines, Any], Texts], arg: object) -> Texts:
        """The lines of a section, built again (``build(self, arg)``) only when its *key* (its values) changes."""
        cached = self.sections.get(slot)
        if cached is None or cached[0] != key:
            cached = (key, build(self, arg))
            if len(self.sections) < _KEPT:
                self.sections[slot] = cached
        return cached[1]

    def counters(self, slot: str, metric: MetricDef, keys: Iterable[Any], values: tuple[int, ...],
                 label_names: tuple[str, ...], fixed: tuple[tuple[str, str], ...] = (), own: bool = False) -> bytes:
        """The block of *metric* series, one per key (a label value, or a tuple of them) of a counter dict with
        *values*. *slot* tells apart several blocks of one family (one per canary); *own*: after only the
        ``target`` label (daemon-scoped families), not the target's whole prefix."""
        cached = self.blocks.get(slot)
        if cached is not None and cached[0] == values:
            return cached[1]
        heads = self.seqs.get(slot)
        if heads is None or len(heads) != len(values):
            # Counter dicts are insertion-ordered and append-only: the heads stay aligned with the values.
            heads = self.seqs[slot] = tuple([
                _line_head(metric.name, _join(self.own_labels("") if own else self.prefix, labels_text(
                    (*fixed, *zip(label_names, key if isinstance(key, tuple) else (key,), strict=True)))))
                for key in keys])
        # map() over C functions: no Python frame per line.
        data = "\n".join(map(str.__add__, heads, map(str, values))).encode("utf-8")
        self.blocks[slot] = (values, data)
        return data

    def histogram(self, metric: MetricDef, label: tuple[str, str] | None, hist: Histogram, count: int) -> bytes:
        """The lines of one histogram series (labelled with the prefix and *label*, if any), kept while its
        *count* (bumped by every observation) holds."""
        cached = self.hists.get(hist)
        if cached is not None and cached[0] == count:
            return cached[1]
        # A histogram object is one series (its labels are where it is stored): its %-template is kept too.
        if cached is None:
            labels = self.prefix if label is None else self.get(*label)
            template = histogram_template(metric.name, labels, hist.bounds)
        else:
            template = cached[2]
        data = histogram_lines(template, hist.cumulative(), hist.sum, count)
        self.hists[hist] = (count, data, template)
        return data


def _lines(series: Iterable[tuple[MetricDef, str, Value]]) -> Texts:
    """Lines of (family, labels, value) series, by family position; None values have no line."""
    text: dict[int, list[str]] = {}
    for metric, labels, value in series:
        if value is not None:
            text_value = format_value(value)
            line = f"{metric.name}{{{labels}}} {text_value}" if labels else f"{metric.name} {text_value}"
            text.setdefault(_POSITION[metric], []).append(line)
    return {position: "\n".join(found).encode("utf-8") for position, found in text.items()}


def _own(lines: TargetLines, series: Iterable[tuple[MetricDef, Value]]) -> Texts:
    """Lines of series labelled with the target's prefix only, one per family."""
    heads = lines.heads
    return {_POSITION[metric]: (heads[metric] + format_value(value)).encode("utf-8") for metric, value in series
            if value is not None}


def _target(lines: TargetLines, state: TargetState) -> Texts:
    texts = _own(lines, ((m.UP, state.up), (m.JOBS, state.jobs_total), (m.TLS_NOT_AFTER, state.tls_not_after)))
    if lines.with_target:
        texts.update(_lines(((m.WEBSOCKET_CONNECTED, lines.own_labels(""), state.websocket_connected),)))
    return texts


_DEVICE_FAMILIES = (m.VRAM_TOTAL, m.VRAM_FREE, m.TORCH_VRAM_TOTAL, m.TORCH_VRAM_FREE)
_DEVICE_POSITIONS = tuple([_POSITION[metric] for metric in _DEVICE_FAMILIES])
_DEVICE_VALUES = operator.attrgetter("vram_total", "vram_free", "torch_vram_total", "torch_vram_free")


def _system(lines: TargetLines, state: TargetState) -> Texts:
    stats = state.system
    info = None if stats is None else (stats.comfyui_version, stats.python_version, stats.pytorch_version, stats.os)
    # Build information and configuration change far less often than free memory: a section of their own.
    texts = dict(lines.section("info", (state.kind, state.public_url, info), _info, state))
    if stats is None or state.kind != "local":
        return texts
    prefixed = lines.heads
    texts[_POSITION[m.RAM_TOTAL]] = (prefixed[m.RAM_TOTAL] + format_value(stats.ram_total)).encode("utf-8")
    texts[_POSITION[m.RAM_FREE]] = (prefixed[m.RAM_FREE] + format_value(stats.ram_free)).encode("utf-8")
    if stats.devices:
        for position, heads, values in zip(_DEVICE_POSITIONS, _device_heads(lines, stats.devices),
                                           zip(*map(_DEVICE_VALUES, stats.devices), strict=True), strict=True):
            text = column_lines(heads, values)
            if text:
                texts[position] = text.encode("utf-8")
    return texts


def _device_heads(lines: TargetLines, devices: tuple[Device, ...]) -> tuple[tuple[str, ...], ...]:
    """The devices' line heads, one tuple per family of :data:`_DEVICE_FAMILIES`."""
    key = tuple([(d.name, d.type, "" if d.index is None else str(d.index)) for d in devices])
    if lines.device_heads[0] != key:
        labels = [lines.pairs((("device", name), ("type", kind), ("index", index))) for name, kind, index in key]
        lines.device_heads = (key, tuple([tuple([_line_head(metric.name, text) for text in labels])
                                          for metric in _DEVICE_FAMILIES]))
    return lines.device_heads[1]


def _info(lines: TargetLines, state: TargetState) -> Texts:
    series: list[tuple[MetricDef, str, Value]] = [
        (m.TARGET_INFO, lines.get("kind", state.kind, "url", state.public_url), 1)]
    stats = state.system
    if stats is not None:
        info = (("version", stats.comfyui_version), ("python_version", stats.python_version.split(" ")[0]),
                ("pytorch_version", stats.pytorch_version), ("os", stats.os))
        series.append((m.INFO, lines.pairs(info), 1))
    return _lines(series)


def _queue(lines: TargetLines, state: TargetState) -> Texts:
    queue = state.queue
    if queue is None:
        return {}
    return _own(lines, ((m.QUEUE_RUNNING, queue.running), (m.QUEUE_PENDING, queue.pending),
                        (m.QUEUE_RUNNING_SECONDS, queue.running_seconds),
                        (m.QUEUE_OLDEST_PENDING, queue.oldest_pending_seconds),
                        (m.QUEUE_STALLED, 1 if queue.stalled else 0),
                        (m.WORKER_NOT_CONSUMING, 1 if queue.worker_not_consuming else 0)))


def _http(lines: TargetLines, http: tuple[object, ...]) -> Texts:
    """HTTP phase seconds: of the last system poll (new on every poll: never kept) and the network check."""
    phases, network = http
    names = tuple([name for name, _ in network])  # type: ignore[attr-defined]
    values: list[Value] = [seconds for _, seconds in network]  # type: ignore[attr-defined]
    if isinstance(phases, PhaseTimes):
        names += ("processing", "transfer")
        values += (phases.processing, phases.transfer)
    if not names:
        return {}
    heads = lines.heads_by(m.HTTP_PHASE, "phase", names)
    text = column_lines(heads, values)
    return {_HTTP_PHASE: text.encode("utf-8")} if text else {}


def _canary(lines: TargetLines, canary: CanaryState) -> Texts:
    c = lines.get("canary", canary.name)
    series: list[tuple[MetricDef, str, Value]] = [
        (m.CANARY_SUCCESS, c, canary.success), (m.CANARY_RUNS, c, canary.runs), (m.CANARY_SKIPPED, c, canary.skipped),
        (m.CANARY_SERVER_SECONDS, c, canary.server_seconds), (m.CANARY_WEBSOCKET_OK, c, canary.websocket_ok),
        (m.CANARY_LAST_SUCCESS, c, canary.last_success_ts)]
    series += [(m.CANARY_PHASE, lines.get("canary", canary.name, "phase", phase), canary.phases.get(phase))
               for phase in CANARY_PHASES]
    return _lines(series)


def _cloud(lines: TargetLines, state: TargetState) -> Texts:
    cloud = state.cloud
    if cloud is None:
        return {}
    today = [c.runs_today for c in state.canaries.values() if c.runs_today is not None]
    texts = _own(lines, (
        (m.CLOUD_BALANCE, cloud.balance_usd), (m.CLOUD_EFFECTIVE_BALANCE, cloud.effective_balance_usd),
        (m.CLOUD_HAS_FUNDS, cloud.has_funds), (m.CLOUD_SUB_ACTIVE, cloud.subscription_active),
        (m.CLOUD_MAX_CONCURRENT, cloud.max_concurrent_jobs), (m.CLOUD_JOBS_STUCK, cloud.jobs_stuck),
        (m.CLOUD_RETRY_AFTER, cloud.retry_after_seconds(lines.now)),
        # One series per target: the daily budget is per target.
        (m.CLOUD_CANARY_TODAY, sum(today) if today else None)))
    if cloud.subscription_status is not None or cloud.subscription_tier is not None:
        sub = (("tier", cloud.subscription_tier or "none"), ("status", cloud.subscription_status or "unknown"))
        texts.update(_lines(((m.CLOUD_SUB_INFO, lines.pairs(sub), 1),)))
    return texts


_CHECK_FAMILIES = (m.CHECK_DURATION, m.CHECK_OVERRUNS, m.CHECK_LAST_SUCCESS)


def _checks(lines: TargetLines, checks: tuple[tuple[str, ...], tuple[tuple[Value, ...], ...]],
            full_detail: bool) -> Texts:
    """The checks' durations, overruns and last successes (new on every poll: never kept), from the snapshot.
    Without full detail a check's overrun counter appears with its first overrun."""
    names, values = checks
    texts = {}
    if names:
        columns = list(zip(*values, strict=True))
        if not full_detail:
            columns[1] = tuple([overruns or None for overruns in columns[1]])
        for metric, family_values in zip(_CHECK_FAMILIES, columns, strict=True):
            # Daemon-scoped families carry only the target and check labels, not the discovery labels.
            text = column_lines(lines.heads_by(metric, "check", names, own=True), family_values)
            if text:
                texts[_POSITION[metric]] = text.encode("utf-8")
    return texts


_JOB_FAILURES, _JOB_DURATION = _POSITION[m.JOB_FAILURES], _POSITION[m.JOB_DURATION]
_REQUESTS, _REQUEST_FAILURES = _POSITION[m.REQUESTS], _POSITION[m.REQUEST_FAILURES]
_REQUEST_DURATION, _HTTP_PHASE = _POSITION[m.REQUEST_DURATION], _POSITION[m.HTTP_PHASE]
_CHECK_SKIPS = _POSITION[m.CHECK_SKIPS]
_CANARY_FAILURES, _CANARY_DURATION = _POSITION[m.CANARY_FAILURES], _POSITION[m.CANARY_DURATION]


def encode(lines: TargetLines, state: TargetState, snap: Snapshot, now: float) -> Chunks:
    """The lines of *state* (whose values are *snap*), grouped by family; sections of *lines* whose values
    did not change are reused."""
    lines.now = now
    section, counters, histogram = lines.section, lines.counters, lines.histogram
    chunks: dict[int, bytes] = {}
    chunks.update(section("target", snap.target, _target, state))
    chunks.update(section("system", snap.system, _system, state))
    chunks.update(section("queue", snap.queue, _queue, state))
    chunks.update(section("cloud", snap.cloud, _cloud, state))
    chunks.update(_http(lines, snap.http))
    if lines.with_target:
        chunks.update(_checks(lines, snap.checks, state.full_detail))
        if data := counters("check_skips", m.CHECK_SKIPS, state.check_skips, snap.check_skips, ("check", "reason"),
                            own=True):
            chunks[_CHECK_SKIPS] = data
    # Counters by key and histograms: blocks kept with the values they show; an empty block is no series.
    if data := counters("jobs", m.JOB_FAILURES, state.job_failures, snap.job_failures, ("reason",)):
        chunks[_JOB_FAILURES] = data
    if data := counters("requests", m.REQUESTS, state.requests, snap.requests, ("endpoint", "code")):
        chunks[_REQUESTS] = data
    if data := counters("request_failures", m.REQUEST_FAILURES, state.request_failures, snap.request_failures,
                        ("endpoint", "reason")):
        chunks[_REQUEST_FAILURES] = data
    # Without full detail, a target that has finished no job yet has no job-duration series.
    if snap.job_durations or state.full_detail:
        chunks[_JOB_DURATION] = histogram(m.JOB_DURATION, None, state.job_duration, snap.job_durations)
    if data := b"\n".join([
            histogram(m.REQUEST_DURATION, ("endpoint", endpoint), hist, count)
            for (endpoint, hist), count in zip(state.request_durations.items(), snap.request_durations,
                                               strict=True)]):
        chunks[_REQUEST_DURATION] = data
    if state.canaries:
        chunks.update(section("canaries", snap.canaries, _canaries, state))
    chunks.update(section("catalog", snap.catalog, _catalog, state))
    # A single block is the cached object itself (bytes.join returns it): unchanged blocks are not copied.
    return tuple(map(chunks.get, _POSITIONS))


def _canaries(lines: TargetLines, state: TargetState) -> Texts:
    """Every canary's lines (several canaries share the families); a section of its own, as canaries run far
    less often than polls."""
    canaries = state.canaries.values()
    texts: dict[int, bytes] = {}
    for canary in canaries:
        for position, data in _canary(lines, canary).items():
            before = texts.get(position)
            texts[position] = data if before is None else before + b"\n" + data
    texts[_CANARY_FAILURES] = b"\n".join([
        lines.counters(f"canary\0{c.name}", m.CANARY_FAILURES, c.failures, tuple(c.failures.values()), ("reason",),
                       (("canary", c.name),)) for c in canaries])
    texts[_CANARY_DURATION] = b"\n".join([
        lines.histogram(m.CANARY_DURATION, ("canary", c.name), c.duration, c.duration.count) for c in canaries])
    return texts


def _catalog(lines: TargetLines, state: TargetState) -> Texts:
    """The catalogue's counts and fingerprints and the watched workflows' verdicts: a section of its own,
    refreshed every half hour or after a restart."""
    series: list[tuple[MetricDef, str, Value]] = []
    catalog = state.catalog
    if catalog is not None:
        heads = lines.heads
        texts = {_POSITION[m.NODE_CLASSES]: (heads[m.NODE_CLASSES] + format_value(catalog.node_classes)).encode(),
                 _POSITION[m.CUSTOM_NODE_PACKS]: (heads[m.CUSTOM_NODE_PACKS]
                                                  + format_value(catalog.custom_node_packs)).encode()}
        # Empty folders have no series: a server lists about twenty folders, most of them empty.
        series.extend((m.MODELS, lines.get("folder", folder), count) for folder, count in catalog.models if count)
        series.append((m.CATALOG_INFO, lines.get("nodes_hash", catalog.nodes_hash, "models_hash",
                                                 catalog.models_hash), 1))
    else:
        texts = {}
    series.extend((m.IMPORT_FAILURES, lines.pairs((("pack", failure.pack),
                                                  ("kind", "builtin" if failure.builtin else "custom"))), 1)
                  for failure in state.import_failures or ())
    for verdict in state.workflows:
        series.append((m.WORKFLOW_VALID, lines.pairs((("workflow", verdict.name),)), 0 if verdict.problems else 1))
        series.extend((m.WORKFLOW_PROBLEMS, lines.pairs((("workflow", verdict.name), ("type", kind))), count)
                      for kind, count in verdict.problems)
    return texts | _lines(series)


def _target_lines(state: TargetState, with_target: bool) -> TargetLines:
    cached = state.label_cache.get(with_target)
    if not isinstance(cached, TargetLines):
        cached = state.label_cache[with_target] = TargetLines(state, with_target)
    return cached


_UP = _POSITION[m.UP]


def _down(state: TargetState, with_target: bool) -> Chunks:
    """The target's lines when they cannot be encoded: ``comfyui_up 0`` alone, its labels made encodable."""
    pairs = [("target", state.name)] if with_target else []
    pairs.extend(sorted(state.labels.items()))
    head = _line_head(m.UP.name, labels_text([(key, sanitize(value)) for key, value in pairs]))
    line = (head + format_value(0.0)).encode("utf-8")
    return tuple(line if position == _UP else None for position in _POSITIONS)


def chunks(state: TargetState, with_target: bool, now: float) -> Chunks:
    """The target's lines by family, encoded again only if a value they show has changed.

    Whatever a target's values hold, encoding them never costs the other targets' lines: a target whose
    lines fail to encode shows ``comfyui_up 0`` alone, counted in ``comfywatch_encode_failures_total``, until
    its values change."""
    lines = _target_lines(state, with_target)
    snap = snapshot(state, now)
    encoded = lines.encoded
    if encoded is None or encoded[0] != snap:
        try:
            result = encode(lines, state, snap, now)
        except Exception as exc:  # whatever fails in one target, the others must be served
            ENCODE_FAILURES.total += 1
            if not lines.failed:
                lines.failed = True
                # The type only: the message may quote the value that failed.
                log.error("encode_failed", target=sanitize(state.name), error=type(exc).__name__)
            result = _down(state, with_target)
        encoded = lines.encoded = (snap, result)
    return encoded[1]


def is_current(state: TargetState, now: float) -> bool:
    """Are the lines kept for ``/metrics`` (with the ``target`` label) those of the state as it is now?"""
    cached = state.label_cache.get(True)
    return isinstance(cached, TargetLines) and cached.encoded is not None and cached.encoded[0] == snapshot(state, now)
