"""Turn target states into metric families (pure; the aiohttp handlers live in :mod:`comfywatch.server.app`).

``/metrics`` renders every target with a ``target`` label; ``/probe`` renders one freshly probed target
without it (blackbox_exporter style, the target is Prometheus' ``instance``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass

from comfywatch import __version__
from comfywatch.export import metrics as m
from comfywatch.export.exposition import Body, Family, labels_text, render_body
from comfywatch.export.target_encoder import ENCODE_FAILURES, FAMILIES, chunks
from comfywatch.parse.text import TRUNCATIONS
from comfywatch.state import TargetState

__all__ = ["DaemonInfo", "ScrapeClock", "collect", "metrics_body", "prepare"]


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    reload_success: bool = True
    reload_timestamp: float = 0.0
    shard_index: int = 0
    shard_count: int = 1
    polls: int = 0
    quiet_polls: int = 0
    tasks: int | None = None
    rss_bytes: int | None = None
    open_fds: int | None = None


class ScrapeClock:
    """When ``/metrics`` is scraped, to encode a target when its poll ends only if a scrape is expected before
    its next poll (:func:`prepare`). Prometheus scrapes at a fixed interval: polling every 15 s for a scrape
    every 60 s then encodes a target once per scrape, not four times, and a daemon nobody scrapes encodes
    nothing. A wrong guess costs only time: a scrape encodes again whatever changed since."""

    #: Scrape intervals without a scrape after which scrapes are taken to have stopped.
    GIVE_UP_AFTER = 4

    def __init__(self) -> None:
        self.last: float | None = None
        self.interval: float | None = None

    def scraped(self, now: float) -> None:
        """A scrape of ``/metrics`` at *now* (monotonic seconds)."""
        if self.last is not None and now > self.last:
            self.interval = now - self.last
        self.last = now

    def expects_scrape_within(self, now: float, horizon: float) -> bool:
        """Is a scrape expected in the next *horizon* seconds: one interval after the last (several, when
        some were missed)? After a single scrape, scrapes are expected as often as *horizon* (the usual
        set-up scrapes about as often as it polls). False before any scrape, and once scrapes have stopped."""
        if self.last is None:
            return False
        interval = self.interval or horizon
        elapsed = now - self.last
        if interval <= 0 or elapsed > self.GIVE_UP_AFTER * interval:
            return False
        return interval - elapsed % interval <= horizon


def prepare(state: TargetState) -> None:
    """Encode *state* for the next ``/metrics`` scrape now (the daemon calls this when a poll ends and a scrape
    is due before the next one, see :class:`ScrapeClock`): the work is spread over the poll interval instead
    of stalling the event loop for the whole fleet at every scrape."""
    chunks(state, True, time.time())


def collect(
    states: Sequence[TargetState], *, daemon: DaemonInfo | None, with_target: bool = True, now: float | None = None
) -> list[Family]:
    """Families for *states* (and the daemon's own metrics when *daemon* is given)."""
    now = time.time() if now is None else now
    families = [Family(metric) for metric in FAMILIES]
    if states:
        every = [chunks(state, with_target, now) for state in states]
        # zip(*every): one column of chunks per family, in C.
        for family, column in zip(families, zip(*every, strict=True), strict=True):
            family.blocks.extend(filter(None, column))
    if daemon is None:
        # /probe output: daemon-scoped families are not part of it, nor families without series.
        return [family for family in families if family.blocks]
    f = {family.metric: family for family in families}
    f[m.BUILD_INFO].add(labels_text((("version", __version__),)), 1.0)
    kinds: dict[str, int] = {"local": 0, "cloud": 0}
    for state in states:
        kinds[state.kind] = kinds.get(state.kind, 0) + 1
    for kind, count in sorted(kinds.items()):
        f[m.TARGETS].add(f'kind="{kind}"', float(count))
    f[m.RELOAD_SUCCESS].add("", 1.0 if daemon.reload_success else 0.0)
    f[m.RELOAD_TIMESTAMP].add("", daemon.reload_timestamp)
    f[m.SHARD_INFO].add(f'shard="{daemon.shard_index}",shards="{daemon.shard_count}"', 1.0)
    for what, count in TRUNCATIONS.items():
        f[m.TRUNCATIONS].add(f'what="{what}"', count)
    f[m.ENCODE_FAILURES].add("", ENCODE_FAILURES.total)
    f[m.POLLS].add("", daemon.polls)
    f[m.QUIET_POLLS].add("", daemon.quiet_polls)
    f[m.TASKS].add("", daemon.tasks)
    f[m.RSS].add("", daemon.rss_bytes)
    f[m.OPEN_FDS].add("", daemon.open_fds)
    return families


def metrics_body(
    states: Sequence[TargetState], *, daemon: DaemonInfo | None, openmetrics: bool, with_target: bool = True
) -> Body:
    # A render that has to encode targets allocates up to a few hundred thousand short-lived strings, lists and
    # tuples, none in a reference cycle: refcounting frees them all. Left on, the cycle collector would run
    # several times per scrape for nothing, walking what the daemon has not frozen (what polls made since).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return render_body(collect(states, daemon=daemon, with_target=with_target), openmetrics=openmetrics)
    finally:
        if enabled:
            gc.enable()
