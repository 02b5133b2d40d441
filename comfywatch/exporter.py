"""Turn target states into metric families (pure; the aiohttp handlers live in :mod:`comfywatch.web`).

``/metrics`` renders every target with a ``target`` label; ``/probe`` renders one freshly probed target
without it (blackbox_exporter style, the target is Prometheus' ``instance``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from comfywatch import __version__
from comfywatch import metrics as m
from comfywatch.exposition import Family, MetricDef, labels_text, render
from comfywatch.state import CANARY_PHASES, TargetState

__all__ = ["DaemonInfo", "collect", "render_metrics"]


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    reload_success: bool = True
    reload_timestamp: float = 0.0
    shard_index: int = 0
    shard_count: int = 1


class _Families:
    def __init__(self, defs: Iterable[MetricDef]) -> None:
        self.by_def: dict[MetricDef, Family] = {d: Family(d) for d in defs}

    def __getitem__(self, metric: MetricDef) -> Family:
        return self.by_def[metric]

    def values(self) -> list[Family]:
        return list(self.by_def.values())


def _prefix(state: TargetState, with_target: bool) -> str:
    pairs: list[tuple[str, str]] = [("target", state.name)] if with_target else []
    pairs.extend(sorted(state.labels.items()))
    return labels_text(pairs)


def _join(prefix: str, extra: str) -> str:
    if not prefix:
        return extra
    return f"{prefix},{extra}" if extra else prefix


def _target(f: _Families, state: TargetState, with_target: bool, now: float) -> None:
    p = _prefix(state, with_target)
    f[m.UP].add(p, state.up)
    f[m.TARGET_INFO].add(_join(p, labels_text((("kind", state.kind), ("url", state.public_url)))), 1.0)
    stats = state.system
    if stats is not None:
        info = (("version", stats.comfyui_version), ("python_version", stats.python_version.split(" ")[0]),
                ("pytorch_version", stats.pytorch_version), ("os", stats.os))
        f[m.INFO].add(_join(p, labels_text(info)), 1.0)
        if state.kind == "local":
            f[m.RAM_TOTAL].add(p, float(stats.ram_total))
            f[m.RAM_FREE].add(p, float(stats.ram_free))
            for device in stats.devices:
                d = _join(p, labels_text((("device", device.name[:120]), ("type", device.type),
                                          ("index", "" if device.index is None else str(device.index)))))
                f[m.VRAM_TOTAL].add(d, None if device.vram_total is None else float(device.vram_total))
                f[m.VRAM_FREE].add(d, None if device.vram_free is None else float(device.vram_free))
                f[m.TORCH_VRAM_TOTAL].add(d, None if device.torch_vram_total is None else float(device.torch_vram_total))
                f[m.TORCH_VRAM_FREE].add(d, None if device.torch_vram_free is None else float(device.torch_vram_free))
    queue = state.queue
    if queue is not None:
        f[m.QUEUE_RUNNING].add(p, float(queue.running))
        f[m.QUEUE_PENDING].add(p, float(queue.pending))
        f[m.QUEUE_RUNNING_SECONDS].add(p, queue.running_seconds)
        f[m.QUEUE_OLDEST_PENDING].add(p, queue.oldest_pending_seconds)
        f[m.QUEUE_STALLED].add(p, 1.0 if queue.stalled else 0.0)
        f[m.WORKER_NOT_CONSUMING].add(p, 1.0 if queue.worker_not_consuming else 0.0)
    f[m.JOBS].add(p, float(state.jobs_total))
    for reason, count in state.job_failures.items():
        f[m.JOB_FAILURES].add(_join(p, f'reason="{reason}"'), float(count))
    jobs = state.job_duration
    f[m.JOB_DURATION].add_histogram(p, jobs.bounds, jobs.cumulative(), jobs.sum, jobs.count)
    for endpoint, hist in state.request_durations.items():
        f[m.REQUEST_DURATION].add_histogram(
            _join(p, f'endpoint="{endpoint}"'), hist.bounds, hist.cumulative(), hist.sum, hist.count
        )
    for (endpoint, code), count in state.requests.items():
        f[m.REQUESTS].add(_join(p, f'endpoint="{endpoint}",code="{code}"'), float(count))
    for (endpoint, reason), count in state.request_failures.items():
        f[m.REQUEST_FAILURES].add(_join(p, f'endpoint="{endpoint}",reason="{reason}"'), float(count))
    if state.phases is not None:
        phases = state.phases
        for name, value in (("dns", phases.dns), ("connect", phases.connect), ("tls", phases.tls),
                            ("processing", phases.processing), ("transfer", phases.transfer)):
            f[m.HTTP_PHASE].add(_join(p, f'phase="{name}"'), value)
    f[m.TLS_NOT_AFTER].add(p, state.tls_not_after)
    for canary in state.canaries.values():
        c = _join(p, labels_text((("canary", canary.name),)))
        f[m.CANARY_SUCCESS].add(c, canary.success)
        f[m.CANARY_RUNS].add(c, float(canary.runs))
        f[m.CANARY_SKIPPED].add(c, float(canary.skipped))
        for reason, count in canary.failures.items():
            f[m.CANARY_FAILURES].add(f'{c},reason="{reason}"', float(count))
        for phase in CANARY_PHASES:
            if phase in canary.phases:
                f[m.CANARY_PHASE].add(f'{c},phase="{phase}"', canary.phases[phase])
        f[m.CANARY_SERVER_SECONDS].add(c, canary.server_seconds)
        f[m.CANARY_WEBSOCKET_OK].add(c, canary.websocket_ok)
        hist = canary.duration
        f[m.CANARY_DURATION].add_histogram(c, hist.bounds, hist.cumulative(), hist.sum, hist.count)
        f[m.CANARY_LAST_SUCCESS].add(c, canary.last_success_ts)
        if state.kind == "cloud" and canary.runs_today is not None:
            f[m.CLOUD_CANARY_TODAY].add(p, float(canary.runs_today))
    cloud = state.cloud
    if cloud is not None:
        f[m.CLOUD_BALANCE].add(p, cloud.balance_usd)
        f[m.CLOUD_EFFECTIVE_BALANCE].add(p, cloud.effective_balance_usd)
        f[m.CLOUD_HAS_FUNDS].add(p, cloud.has_funds)
        f[m.CLOUD_SUB_ACTIVE].add(p, cloud.subscription_active)
        if cloud.subscription_status is not None or cloud.subscription_tier is not None:
            sub = (("tier", cloud.subscription_tier or "none"), ("status", cloud.subscription_status or "unknown"))
            f[m.CLOUD_SUB_INFO].add(_join(p, labels_text(sub)), 1.0)
        f[m.CLOUD_MAX_CONCURRENT].add(p, cloud.max_concurrent_jobs)
        f[m.CLOUD_JOBS_STUCK].add(p, cloud.jobs_stuck)
        f[m.CLOUD_RETRY_AFTER].add(p, cloud.retry_after_seconds(now))
    if with_target:
        t = labels_text((("target", state.name),))
        for check, cs in state.checks.items():
            cl = f'{t},check="{check}"'
            f[m.CHECK_DURATION].add(cl, cs.duration)
            f[m.CHECK_OVERRUNS].add(cl, float(cs.overruns))
            f[m.CHECK_LAST_SUCCESS].add(cl, cs.last_success)
        f[m.WEBSOCKET_CONNECTED].add(t, state.websocket_connected)


def collect(
    states: Sequence[TargetState], *, daemon: DaemonInfo | None, with_target: bool = True, now: float | None = None
) -> list[Family]:
    """Families for *states* (and the daemon's own metrics when *daemon* is given)."""
    now = time.time() if now is None else now
    f = _Families(m.TARGET + m.CLOUD + (m.DAEMON if daemon is not None else ()))
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
    if daemon is None:
        # /probe output: daemon-scoped families are not part of it.
        return [fam for fam in f.values() if fam.samples or fam.histograms]
    return f.values()


def render_metrics(
    states: Sequence[TargetState], *, daemon: DaemonInfo | None, openmetrics: bool, with_target: bool = True
) -> bytes:
    return render(collect(states, daemon=daemon, with_target=with_target), openmetrics=openmetrics)
