"""``catalog``: what a local server offers — its node catalogue and models — and whether the team's workflows
still fit it.

``/object_info`` is megabytes on a server with many node packs and costs it hundreds of milliseconds: it (with
``/models``, a request per folder) is read when something suggests the catalogue changed (the first run, the
monitoring WebSocket reconnected after a restart, a new ComfyUI version, the server back up after being down)
and otherwise every ``catalog_interval``, and only while the server is up. The check itself runs every
minute; a run with nothing to refresh sends nothing and succeeds (the catalogue is known); one on a server
that is down is skipped.

The catalogue is exported as counts and two fingerprints (``comfyui_catalog_info``): servers of a pool that
should be identical and are not show different fingerprints. Each watched workflow (``[[workflows]]``) is
linted against the catalogue exactly as ComfyUI would validate it on submit: a deploy that renames an input,
removes a node or a model makes the workflow invalid here before a user submits it. The same refresh reads
the server's log (``/internal/logs/raw``) for the node packs that failed to import at its start.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from comfywatch.checks import CheckSkipped
from comfywatch.checks.context import TargetContext
from comfywatch.clients.http import HttpResult, RequestFailed
from comfywatch.clients.local import LocalApi
from comfywatch.errors import Reason
from comfywatch.parse.catalog import MAX_MODELS_TOTAL, Catalog, catalog_from
from comfywatch.parse.serverlog import ServerLog
from comfywatch.parse.system import SystemStats
from comfywatch.parse.text import Cut, count_cut, sanitize
from comfywatch.state import CatalogSummary, WorkflowVerdict
from comfywatch.workflows import (
    MAX_WORKFLOW_FILES,
    WorkflowError,
    WorkflowFileUnreadable,
    read_workflow_file,
    workflow_files,
)
from comfywatch.workflows.lint import NodeSpec, WorkflowFormat, detect_format, lint_workflow, parse_object_info

__all__ = [
    "CHECK_INTERVAL", "CatalogCheck", "CatalogObservation", "FleetReads", "ReadPacer", "SummaryCache", "lint_verdicts",
    "observe", "observe_log",
]

log = structlog.get_logger("comfywatch.catalog")

#: How often the check looks whether the catalogue needs reading again. The events that call for a read at once
#: (the server back up, a new version, the monitoring socket reconnected) run it themselves (``Daemon``); this
#: wake-up serves ``catalog_interval``, and a scheduler job run costs more than the look itself.
CHECK_INTERVAL = 300.0
#: Catalogue reads the whole daemon starts per second once a burst of :data:`READ_BURST` is spent: a read costs
#: the daemon some 30 ms of CPU (two dozen requests, a megabyte of JSON), so 10,000 targets coming up together
#: would otherwise take minutes of a whole core and starve their own polls. 8 a second keeps up with 14,400
#: targets at the default ``catalog_interval`` (30 min).
READS_PER_SECOND = 8.0
READ_BURST = 16
#: Longest a read waits for its turn within one run of the check, leaving the read itself most of the run's
#: time budget (``CHECK_INTERVAL - 5``); a longer queue leaves it to a later run.
MAX_TURN_WAIT = 120.0
#: The thread the watched workflows of every target are linted in. Not the event loop's default executor: aiohttp
#: resolves host names in that one's threads, and a lint that outlives its check (cancelled at its time budget;
#: a thread cannot be stopped) must not hold one of them. One thread, because lints are CPU work under the GIL
#: that more threads would not finish sooner; a lint whose check is cancelled before its turn never starts.
_LINT_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="comfywatch-lint")


def _verdict(name: str, file: Path, specs: Mapping[str, NodeSpec]) -> WorkflowVerdict:
    try:
        workflow = read_workflow_file(file)
    except WorkflowFileUnreadable:
        return WorkflowVerdict(name, (("unreadable", 1),))
    except (ValueError, RecursionError):
        return WorkflowVerdict(name, (("invalid_json", 1),))
    if detect_format(workflow) is WorkflowFormat.UI:
        return WorkflowVerdict(name, (("ui_format", 1),))
    counts = Counter(problem.code for problem in lint_workflow(workflow, specs))
    return WorkflowVerdict(name, tuple(sorted(counts.items())))


def lint_verdicts(paths: Sequence[Path], object_info: dict[str, Any]) -> tuple[WorkflowVerdict, ...]:
    """Each workflow of *paths* (files or directories) against *object_info*, named by its file's stem (the
    first of two files with one stem wins), in name order, at most :data:`MAX_WORKFLOW_FILES`. Blocking:
    reads files and lints."""
    files: dict[str, Path] = {}
    for path in paths:
        try:
            found = workflow_files(path)
        except WorkflowError as exc:
            log.error("watched_workflows_unreadable", path=sanitize(str(path)), problem=sanitize(str(exc)))
            continue
        for file in found:
            files.setdefault(sanitize(file.stem), file)
    if len(files) > MAX_WORKFLOW_FILES:
        log.warning("watched_workflows_capped", watched=len(files), kept=MAX_WORKFLOW_FILES)
    names = sorted(files)[:MAX_WORKFLOW_FILES]
    # Parsed once, linted many: parsing a catalogue of 478 classes costs about as much as a whole lint.
    specs = parse_object_info(object_info, strict=False)
    return tuple(_verdict(name, files[name], specs) for name in names)


async def _models(api: LocalApi, target: str) -> dict[str, tuple[str, ...]]:
    """The files of every model folder, until :data:`~comfywatch.parse.catalog.MAX_MODELS_TOTAL` files are read
    (the catalogue keeps no more, so the folders after are not requested); a folder that cannot be read is left
    out (and counted by the client)."""
    files: dict[str, tuple[str, ...]] = {}
    read = 0
    folders = await api.model_folders()
    for index, folder in enumerate(folders):
        if read >= MAX_MODELS_TOTAL:
            log.warning("catalog_models_capped", target=target, files=read, folders_not_read=len(folders) - index)
            count_cut(Cut.MODEL_FILES)
            break
        try:
            files[folder] = await api.model_files(folder)
        except RequestFailed:
            continue
        read += len(files[folder])
    return files


@dataclass(frozen=True)
class CatalogObservation:
    #: ``/object_info`` as the server sent it (what workflows are linted against).
    object_info: dict[str, Any]
    catalog: Catalog


async def _fetch(api: LocalApi, target: str) -> tuple[HttpResult, dict[str, tuple[str, ...]]]:
    # Kept undecoded while the folders are read: decoded, the catalogue is megabytes of objects, held only while
    # it is parsed (and not at all when its digest is known).
    response = await api.object_info_response()
    return response, await _models(api, target)


async def _catalog(api: LocalApi, response: HttpResult, models: Mapping[str, Sequence[str]],
                   stats: SystemStats | None) -> CatalogObservation:
    object_info = api.decode_object_info(response)
    # Parsing megabytes of catalogue is CPU work: off the event loop the other targets are polled on.
    catalog = await asyncio.to_thread(catalog_from, object_info, models, stats)
    return CatalogObservation(object_info, catalog)


async def observe(ctx: TargetContext, stats: SystemStats | None) -> CatalogObservation:
    """Read the node catalogue and every model folder (*stats*: the server's versions, if known).

    Raises:
        RequestFailed: ``/object_info`` or ``/models`` could not be read.
    """
    api = ctx.local_api()
    response, models = await _fetch(api, ctx.config.name)
    return await _catalog(api, response, models, stats)


def _summary(catalog: Catalog) -> CatalogSummary:
    return CatalogSummary(catalog.node_classes, len(catalog.packs), tuple(sorted(catalog.model_counts.items())),
                          catalog.nodes_hash, catalog.models_hash)


class SummaryCache:
    """The summaries of the last few catalogues read, by a digest of exactly what was read (the ``/object_info``
    bytes and the model lists): the same bytes again (the next refresh of an unchanged server, or another server
    of an identical pool) cost a digest instead of decoding and parsing a megabyte of JSON. A summary holds
    counts and fingerprints only, so one target learns nothing from another's entry it could not read itself.
    Reads of the same bytes at the same time wait for the first one's parse."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, asyncio.Future[CatalogSummary]] = OrderedDict()

    @staticmethod
    def key(object_info: bytes, models: Mapping[str, Sequence[str]]) -> bytes:
        digest = hashlib.blake2b(object_info, digest_size=16)
        # A folder at a time: the lists of a whole read, as one JSON text, would be tens of megabytes more.
        for folder in sorted(models):
            digest.update(json.dumps([folder, models[folder]], ensure_ascii=True).encode())
        return digest.digest()

    async def summary(self, key: bytes, parse: Callable[[], Awaitable[CatalogSummary]]) -> CatalogSummary:
        """The summary of *key*: remembered, another read's parse in progress, or else ``await parse()``."""
        while (pending := self._entries.get(key)) is not None:
            if not pending.done():
                # Not awaited directly: a parse that fails (or whose check is cancelled) is cancelled, and then
                # this read parses for itself.
                await asyncio.wait({pending})
            if not pending.cancelled():
                if self._entries.get(key) is pending:  # other reads may have pushed it out meanwhile
                    self._entries.move_to_end(key)
                return pending.result()
        future: asyncio.Future[CatalogSummary] = asyncio.get_running_loop().create_future()
        self._entries[key] = future
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        try:
            summary = await parse()
        except BaseException:
            if self._entries.get(key) is future:
                del self._entries[key]
            future.cancel()
            raise
        future.set_result(summary)
        return summary


async def observe_log(ctx: TargetContext) -> ServerLog | None:
    """The server's log as far as imports go; None when the server has no log route (before ComfyUI 0.3).

    Raises:
        RequestFailed: the log could not be read (any failure but 404).
    """
    try:
        return await ctx.local_api().server_log()
    except RequestFailed as failed:
        if failed.failure.reason is Reason.NOT_FOUND:
            return None
        raise


class ReadPacer:
    """Turns for the catalogue reads of all targets: at most *rate* starts a second after a burst of *burst*
    (the generic cell rate algorithm: a virtual time that each turn moves on by ``1 / rate``)."""

    def __init__(self, rate: float = READS_PER_SECOND, burst: int = READ_BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._spacing = 1.0 / rate
        self._tolerance = (burst - 1) * self._spacing
        self._clock = clock
        self._virtual = -math.inf

    def reserve(self, max_wait: float) -> float | None:
        """Take the next turn: the seconds to wait for it, or None (and no turn taken) if it is more than
        *max_wait* away."""
        now = self._clock()
        virtual = max(self._virtual, now)
        wait = max(0.0, virtual - self._tolerance - now)
        if wait > max_wait:
            return None
        self._virtual = virtual + self._spacing
        return wait


@dataclass
class FleetReads:
    """What the catalogue checks of a daemon's targets share."""

    pacer: ReadPacer = field(default_factory=ReadPacer)
    summaries: SummaryCache = field(default_factory=SummaryCache)
    #: One catalogue decoded and parsed (and its workflows linted) at a time: decoded, a hostile 30 MB catalogue
    #: takes half a gigabyte, and the pacer lets a burst of reads start together.
    parsing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))


class CatalogCheck:
    """One target's catalogue refresh (the check's state: when it last read, and what the target looked like).
    Within a *fleet*, every read waits for its turn and summaries are shared (:class:`FleetReads`); alone, the
    check reads at once and remembers its own last read."""

    def __init__(self, workflows: Sequence[Path], refresh_after: float, fleet: FleetReads | None = None) -> None:
        self.workflows = tuple(workflows)
        self.refresh_after = refresh_after
        self.pacer = fleet.pacer if fleet is not None else None
        self.summaries = fleet.summaries if fleet is not None else None
        self._parsing = fleet.parsing if fleet is not None else None
        #: The digest and summary of this server's last read (the fleet's cache may have forgotten it by the next).
        self._last: tuple[bytes, CatalogSummary] | None = None
        self._reconnects: int | None = None
        self._version: str | None = None
        self._next_refresh = 0.0
        #: This target's last lint: while it runs (its check cancelled meanwhile), no other one is started.
        self._lint: concurrent.futures.Future[tuple[WorkflowVerdict, ...]] | None = None

    def _due(self, ctx: TargetContext) -> bool:
        state = ctx.state
        # A restart drops the monitoring socket (it reconnects) and a deploy may change the version; a version
        # first learnt after the last refresh is no change.
        restarted = state.monitor_reconnects != self._reconnects
        upgraded = None not in (self._version, state.server_version) and state.server_version != self._version
        return restarted or upgraded or time.monotonic() >= self._next_refresh

    async def check(self, ctx: TargetContext) -> None:
        if ctx.state.up != 1.0:
            # Nothing to learn from a server that is down or not polled yet, and a hanging one would hold one of
            # the daemon's request slots for the catalogue's long timeout. Back up, it may be another build.
            self._next_refresh = 0.0
            raise CheckSkipped("the server is not up")
        if not self._due(ctx):
            return
        if self.pacer is not None:
            wait = self.pacer.reserve(MAX_TURN_WAIT)
            if wait is None:
                raise CheckSkipped("the daemon's catalogue reads are queued for longer than a run may wait")
            if wait > 0.0:
                await asyncio.sleep(wait)
                if ctx.state.up != 1.0:
                    self._next_refresh = 0.0
                    raise CheckSkipped("the server went down while the read waited for its turn")
        # Taken before the requests: a restart during them is seen at the next run.
        reconnects, version = ctx.state.monitor_reconnects, ctx.state.server_version
        state = ctx.state
        api = ctx.local_api()
        response, models = await _fetch(api, state.name)
        linted = True
        if self.workflows:
            # Watched workflows are linted against every read: their files may have changed since.
            async with self._parse_turn():
                observation = await _catalog(api, response, models, state.system)
                state.catalog = _summary(observation.catalog)
                verdicts = await self._lint_workflows(observation.object_info)
                del observation  # not held past the turn: the log read below may take seconds
            if verdicts is None:
                linted = False
                log.warning("workflow_lint_still_running", target=state.name)
            else:
                state.workflows = verdicts
        else:
            key = SummaryCache.key(response.body, models)
            if self._last is not None and self._last[0] == key:
                state.catalog = self._last[1]  # unchanged since this server's last read
            else:
                async def parse() -> CatalogSummary:
                    async with self._parse_turn():
                        return _summary((await _catalog(api, response, models, state.system)).catalog)

                state.catalog = await (self.summaries.summary(key, parse) if self.summaries else parse())
                self._last = (key, state.catalog)
        try:
            server_log = await observe_log(ctx)
        except RequestFailed:
            # Counted by the client (endpoint "logs"); the catalogue above is no less current for it.
            pass
        else:
            if server_log is None:
                state.import_failures = None
            elif server_log.startup_seen:
                state.import_failures = server_log.failures
        self._reconnects, self._next_refresh = reconnects, time.monotonic() + self.refresh_after
        self._version = version or self._version
        if not linted:
            self._next_refresh = 0.0  # the verdicts are of an older read: the next run reads and lints again

    def _parse_turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The fleet's turn to decode and parse a catalogue (none to wait for alone)."""
        return self._parsing if self._parsing is not None else contextlib.nullcontext()

    async def _lint_workflows(self, object_info: dict[str, Any]) -> tuple[WorkflowVerdict, ...] | None:
        """The verdicts of the watched workflows against *object_info*, linted in the lint thread; None, and nothing
        started, while this target's previous lint is still running."""
        if self._lint is not None and not self._lint.done():
            return None
        self._lint = _LINT_POOL.submit(lint_verdicts, self.workflows, object_info)
        # Cancelling the wrapper (the check's time budget) cancels a lint still waiting for the thread.
        return await asyncio.wrap_future(self._lint)
