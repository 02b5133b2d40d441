"""Turn target states into metric families (pure; the aiohttp handlers live in :mod:`comfywatch.web`).

``/metrics`` renders every target with a ``target`` label; ``/probe`` renders one freshly probed target
without it (blackbox_exporter style, the target is Prometheus' ``instance``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from comfywatch import __version__
from comfywatch import metrics as m
from comfywatch.exposition import Family, MetricDef, bucket_bounds, format_value, labels_text, render
from comfywatch.state import CANARY_PHASES, Histogram, TargetState

__all__ = ["DaemonInfo", "collect", "render_metrics"]


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    reload_success: bool = True
    reload_timestamp: float = 0.0
    shard_index: int = 0
    shard_count: int = 1
    tasks: int | None = None
    rss_bytes: int | None = None
    open_fds: int | None = None


class _Families:
    """The families of one scrape, with their sample and line lists by metric (MetricDef hashes by identity)."""

    def __init__(self, defs: Iterable[MetricDef]) -> None:
        self.by_metric: dict[MetricDef, Family] = {d: Family(d) for d in defs}
        self.samples: dict[MetricDef, list[tuple[str, float | int]]] = {
            d: family.samples for d, family in self.by_metric.items()
        }
        self.blocks: dict[MetricDef, list[bytes]] = {d: family.blocks for d, family in self.by_metric.items()}

    def __getitem__(self, metric: MetricDef) -> Family:
        return self.by_metric[metric]

    def values(self) -> list[Family]:
        return list(self.by_metric.values())


def _prefix(state: TargetState, with_target: bool) -> str:
    pairs: list[tuple[str, str]] = [("target", state.name)] if with_target else []
    pairs.extend(sorted(state.labels.items()))
    return labels_text(pairs)


def _join(prefix: str, extra: str) -> str:
    if not prefix:
        return extra
    return f"{prefix},{extra}" if extra else prefix


class _Labels:
    """Label strings, sample-line prefixes and rendered blocks of one target, reused on every scrape.

    Rendering 1000 targets (~150k series) within 100 ms leaves well under a microsecond per series, so the
    heavy families (counters by reason, histograms) are written as ``cached_prefix + value`` lines, and each
    such block of lines is kept with the values it shows: most of them (failures by reason, job and canary
    histograms) do not change between two scrapes and are then reused as one string. The values themselves
    are the cache key, so a reused block can never be stale.
    """

    __slots__ = ("blocks", "cache", "hists", "own", "pair_cache", "prefix", "seqs")

    def __init__(self, state: TargetState, with_target: bool) -> None:
        self.prefix = _prefix(state, with_target)
        self.cache: dict[tuple[str, str, str], str] = {}
        self.seqs: dict[str, list[str]] = {}
        self.hists: dict[tuple[str, str], tuple[list[str], str, str]] = {}
        self.blocks: dict[str, tuple[object, bytes]] = {}
        self.pair_cache: dict[tuple[tuple[str, str], ...], str] = {}
        #: Label strings of the daemon-scoped families (target and check only), by check.
        self.own: dict[str, str] = {}

    def counters(self, out: list[bytes], name: str, values: dict[Any, int], labels: Callable[[Any], str],
                 slot: str = "") -> None:
        """Append the block of *name* series, one per key of *values* (see :meth:`seq`)."""
        if not values:
            return
        key = tuple(values.values())
        cached = self.blocks.get(name + slot)
        if cached is None or cached[0] != key:
            prefixes = self.seq(name, values, labels, slot)
            # map() over C functions: no Python frame per line.
            text = "\n".join(map(str.__add__, prefixes, map(str, key)))
            cached = self.blocks[name + slot] = (key, text.encode("utf-8"))
        out.append(cached[1])

    def seq(self, name: str, keys: Iterable[Any], labels: Callable[[Any], str], slot: str = "") -> list[str]:
        """Line prefixes ``name{labels} `` aligned with *keys* (a dict's keys: insertion-ordered, append-only).

        *slot* tells apart several sequences of one family (one per canary).
        """
        key_list = keys if isinstance(keys, list) else list(keys)
        cached = self.seqs.get(name + slot)
        if cached is None or len(cached) != len(key_list):
            cached = self.seqs[name + slot] = [f"{name}{{{labels(k)}}} " for k in key_list]
        return cached

    def hist(self, name: str, labels: str, bounds: tuple[float, ...]) -> tuple[list[str], str, str]:
        """(bucket line prefixes, sum prefix, count prefix) of one histogram series."""
        cached = self.hists.get((name, labels))
        if cached is None:
            head = f"{name}_bucket{{{labels}," if labels else f"{name}_bucket{{"
            braces = f"{{{labels}}}" if labels else ""
            cached = self.hists[(name, labels)] = (
                [f'{head}le="{le}"}} ' for le in bucket_bounds(bounds)], f"{name}_sum{braces} ",
                f"{name}_count{braces} ",
            )
        return cached

    def histogram(self, out: list[bytes], name: str, labels: str, hist: Histogram) -> None:
        # Every observation bumps count: same histogram object and count means the same buckets and sum.
        cache_key = f"{name}\0{labels}"
        cached = self.blocks.get(cache_key)
        if cached is None or cached[0] != (hist, hist.count):
            buckets, total, count = self.hist(name, labels, hist.bounds)
            lines = list(map(str.__add__, buckets, map(str, hist.cumulative())))
            lines.append(total + format_value(hist.sum))
            lines.append(count + str(hist.count))
            cached = self.blocks[cache_key] = ((hist, hist.count), "\n".join(lines).encode("utf-8"))
        out.append(cached[1])

    def pairs(self, pairs: tuple[tuple[str, str], ...]) -> str:
        """``prefix,k1="v1",...`` for label pairs whose values come from the server (info, devices), cached by
        value: they are the same on every scrape until the server changes (bounded by ``_PAIRS_KEPT``)."""
        text = self.pair_cache.get(pairs)
        if text is None:
            text = _join(self.prefix, labels_text(pairs))
            if len(self.pair_cache) < _PAIRS_KEPT:
                self.pair_cache[pairs] = text
        return text

    def get(self, key: str, value: str, key2: str = "", value2: str = "") -> str:
        """``prefix,key="value"[,key2="value2"]`` (values escaped), cached."""
        cache_key = (key, value, f"{key2}\0{value2}")
        text = self.cache.get(cache_key)
        if text is None:
            pairs = [(key, value)] + ([(key2, value2)] if key2 else [])
            text = self.cache[cache_key] = _join(self.prefix, labels_text(pairs))
        return text


#: Label strings kept per target: far more than one target's series, yet a server that reports a new device
#: name on every poll cannot grow the cache without bound.
_PAIRS_KEPT = 512


def _labels(state: TargetState, with_target: bool) -> _Labels:
    cached = state.label_cache.get(with_target)
    if not isinstance(cached, _Labels):
        cached = state.label_cache[with_target] = _Labels(state, with_target)
    return cached


def _target(f: _Families, state: TargetState, with_target: bool, now: float) -> None:
    # Hot path (1000s of targets per scrape): samples are appended to the families' lists directly; a method
    # call per sample was a fifth of a 1000-target render.
    lab = _labels(state, with_target)
    p = lab.prefix
    s, blocks = f.samples, f.blocks

    def put(metric: MetricDef, labels: str, value: float | None) -> None:
        if value is not None:
            s[metric].append((labels, value))

    put(m.UP, p, state.up)
    s[m.TARGET_INFO].append((lab.get("kind", state.kind, "url", state.public_url), 1))
    stats = state.system
    if stats is not None:
        info = (("version", stats.comfyui_version), ("python_version", stats.python_version.split(" ")[0]),
                ("pytorch_version", stats.pytorch_version), ("os", stats.os))
        s[m.INFO].append((lab.pairs(info), 1))
        if state.kind == "local":
            s[m.RAM_TOTAL].append((p, stats.ram_total))
            s[m.RAM_FREE].append((p, stats.ram_free))
            for device in stats.devices:
                d = lab.pairs((("device", device.name[:120]), ("type", device.type),
                               ("index", "" if device.index is None else str(device.index))))
                put(m.VRAM_TOTAL, d, device.vram_total)
                put(m.VRAM_FREE, d, device.vram_free)
                put(m.TORCH_VRAM_TOTAL, d, device.torch_vram_total)
                put(m.TORCH_VRAM_FREE, d, device.torch_vram_free)
    queue = state.queue
    if queue is not None:
        s[m.QUEUE_RUNNING].append((p, queue.running))
        s[m.QUEUE_PENDING].append((p, queue.pending))
        put(m.QUEUE_RUNNING_SECONDS, p, queue.running_seconds)
        put(m.QUEUE_OLDEST_PENDING, p, queue.oldest_pending_seconds)
        s[m.QUEUE_STALLED].append((p, 1 if queue.stalled else 0))
        s[m.WORKER_NOT_CONSUMING].append((p, 1 if queue.worker_not_consuming else 0))
    s[m.JOBS].append((p, state.jobs_total))
    lab.counters(blocks[m.JOB_FAILURES], m.JOB_FAILURES.name, state.job_failures, lambda r: lab.get("reason", r))
    lab.histogram(blocks[m.JOB_DURATION], m.JOB_DURATION.name, p, state.job_duration)
    out = blocks[m.REQUEST_DURATION]
    for endpoint, hist in state.request_durations.items():
        lab.histogram(out, m.REQUEST_DURATION.name, lab.get("endpoint", endpoint), hist)
    lab.counters(blocks[m.REQUESTS], m.REQUESTS.name, state.requests,
                 lambda k: lab.get("endpoint", k[0], "code", k[1]))
    lab.counters(blocks[m.REQUEST_FAILURES], m.REQUEST_FAILURES.name, state.request_failures,
                 lambda k: lab.get("endpoint", k[0], "reason", k[1]))
    for name, seconds in state.network_phases.items():
        put(m.HTTP_PHASE, lab.get("phase", name), seconds)
    if state.phases is not None:
        s[m.HTTP_PHASE].append((lab.get("phase", "processing"), state.phases.processing))
        s[m.HTTP_PHASE].append((lab.get("phase", "transfer"), state.phases.transfer))
    put(m.TLS_NOT_AFTER, p, state.tls_not_after)
    for canary in state.canaries.values():
        c = lab.get("canary", canary.name)
        put(m.CANARY_SUCCESS, c, canary.success)
        put(m.CANARY_RUNS, c, canary.runs)
        put(m.CANARY_SKIPPED, c, canary.skipped)
        name = canary.name
        lab.counters(blocks[m.CANARY_FAILURES], m.CANARY_FAILURES.name, canary.failures,
                     lambda r: lab.get("canary", name, "reason", r), slot=name)  # noqa: B023
        for phase in CANARY_PHASES:
            if phase in canary.phases:
                put(m.CANARY_PHASE, lab.get("canary", canary.name, "phase", phase), canary.phases[phase])
        put(m.CANARY_SERVER_SECONDS, c, canary.server_seconds)
        put(m.CANARY_WEBSOCKET_OK, c, canary.websocket_ok)
        lab.histogram(blocks[m.CANARY_DURATION], m.CANARY_DURATION.name, c, canary.duration)
        put(m.CANARY_LAST_SUCCESS, c, canary.last_success_ts)
    cloud = state.cloud
    if cloud is not None:
        today = [c.runs_today for c in state.canaries.values() if c.runs_today is not None]
        if today:  # one series per target: the daily budget is per target
            put(m.CLOUD_CANARY_TODAY, p, sum(today))
        put(m.CLOUD_BALANCE, p, cloud.balance_usd)
        put(m.CLOUD_EFFECTIVE_BALANCE, p, cloud.effective_balance_usd)
        put(m.CLOUD_HAS_FUNDS, p, cloud.has_funds)
        put(m.CLOUD_SUB_ACTIVE, p, cloud.subscription_active)
        if cloud.subscription_status is not None or cloud.subscription_tier is not None:
            sub = (("tier", cloud.subscription_tier or "none"), ("status", cloud.subscription_status or "unknown"))
            s[m.CLOUD_SUB_INFO].append((_join(p, labels_text(sub)), 1))
        put(m.CLOUD_MAX_CONCURRENT, p, cloud.max_concurrent_jobs)
        put(m.CLOUD_JOBS_STUCK, p, cloud.jobs_stuck)
        put(m.CLOUD_RETRY_AFTER, p, cloud.retry_after_seconds(now))
    if with_target:
        # Daemon-scoped families carry only the target (and check) label, not the target's discovery labels.
        own = lab.own
        for check, cs in state.checks.items():
            cl = own.get(check)
            if cl is None:
                cl = own[check] = labels_text((("target", state.name), ("check", check)))
            put(m.CHECK_DURATION, cl, cs.duration)
            s[m.CHECK_OVERRUNS].append((cl, cs.overruns))
            put(m.CHECK_LAST_SUCCESS, cl, cs.last_success)
        target_only = own.get("")
        if target_only is None:
            target_only = own[""] = labels_text((("target", state.name),))
        put(m.WEBSOCKET_CONNECTED, target_only, state.websocket_connected)


def collect(
    states: Sequence[TargetState], *, daemon: DaemonInfo | None, with_target: bool = True, now: float | None = None
) -> list[Family]:
    """Families for *states* (and the daemon's own metrics when *daemon* is given)."""
    now = time.time() if now is None else now
    f = _Families(m.TARGET + m.CLOUD + m.DAEMON)
    for state in states:
        _target(f, state, with_target, now)
    if daemon is not None:
        f[m.BUILD_INFO].add(labels_text((("version", __version__),)), 1.0)
        kinds: dict[str, int] = {"local": 0, "cloud": 0}
        for state in states:
            kinds[state.kind] = kinds.get(state.kind, 0) + 1
        for kind, count in sorted(kinds.items()):
            f[m.TARGETS].add(f'kind="{kind}"', float(count))
        f[m.RELOAD_SUCCESS].add("", 1.0 if daemon.reload_success else 0.0)
        f[m.RELOAD_TIMESTAMP].add("", daemon.reload_timestamp)
        f[m.SHARD_INFO].add(f'shard="{daemon.shard_index}",shards="{daemon.shard_count}"', 1.0)
        f[m.TASKS].add("", daemon.tasks)
        f[m.RSS].add("", daemon.rss_bytes)
        f[m.OPEN_FDS].add("", daemon.open_fds)
    if daemon is None:
        # /probe output: daemon-scoped families are not part of it.
        return [fam for fam in f.values() if fam.samples or fam.histograms or fam.blocks]
    return f.values()


def render_metrics(
    states: Sequence[TargetState], *, daemon: DaemonInfo | None, openmetrics: bool, with_target: bool = True
) -> bytes:
    # A render allocates a few hundred thousand short-lived strings, lists and tuples, none in a reference
    # cycle: refcounting frees them all. Left on, the cycle collector would walk every long-lived object
    # (1000s of target states) several times per scrape for nothing: ~60 ms of a 1000-target scrape.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return render(collect(states, daemon=daemon, with_target=with_target), openmetrics=openmetrics)
    finally:
        if enabled:
            gc.enable()
