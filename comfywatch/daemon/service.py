"""``comfywatch run``: the scheduler, the exporter server, signals, reload and sd_notify.

Data flows one way: scheduler -> check -> client -> observation -> state -> exporter. A check can fail,
hang or raise anything: it is wrapped in a timeout and a catch-all here, so the daemon keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import hashlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from pydantic import ValidationError

from comfywatch.checks import LIVENESS_CHECKS, POLL_GROUP, CheckFailed, CheckSkipped, CheckSpec
from comfywatch.checks import queue as queue_check
from comfywatch.checks.catalog import FleetReads
from comfywatch.checks.context import TargetContext, build_context, ssl_context_for
from comfywatch.clients.http import FleetSession, RequestFailed
from comfywatch.config import (
    Config,
    ConfigError,
    Credentials,
    TargetConfig,
    format_validation_error,
    load_config,
    resolve_credentials,
)
from comfywatch.daemon import fdlimit, sdnotify
from comfywatch.daemon.discovery import discovery_fingerprint, load_discovered
from comfywatch.daemon.limiter import FairLimiter
from comfywatch.daemon.plan import plan_checks
from comfywatch.daemon.shard import owns
from comfywatch.daemon.slots import Slot, SlotTable, first_offset
from comfywatch.daemon.ws_monitor import WebSocketMonitor
from comfywatch.errors import Reason, hint_for
from comfywatch.export.collector import DaemonInfo, ScrapeClock, prepare
from comfywatch.redact import replace_secrets, request_scope
from comfywatch.server.app import ExporterRunner, create_app
from comfywatch.server.probe import make_probe_handler
from comfywatch.server.webconfig import basic_auth_middleware, install_response_headers, load_web_config
from comfywatch.state import TargetState
from comfywatch.state.history import Event, EventLog
from comfywatch.state.trackers import PollRead
from comfywatch.status.model import StatusInputs

__all__ = ["Daemon", "ListenError"]

log = structlog.get_logger("comfywatch.daemon")

HEARTBEAT_SECONDS = 1.0
#: Seconds of start-up per target: the first polls (and monitoring sockets) of the targets a start or reload
#: adds are spread over max(interval, targets added × this). A target's first polls are full reads until its
#: socket vouches for it, and its catalogue is read soon after: at 20 ms (10,000 targets: 200 s) a 9000-target
#: ramp took at most 65 % of a core and timed no check out (docs/benchmarks.md, "10,000 targets").
START_CPU_PER_TARGET = 0.020
#: What a configuration switch's targets keep (connections, monitoring sockets) is frozen (see
#: :func:`_freeze_long_lived`) this many poll intervals after its last first poll, and no sooner than
#: SETTLE_MIN_SECONDS after it: a monitoring socket opens as its target is first polled, and may take its
#: 5 s open timeout.
SETTLE_INTERVALS = 2
SETTLE_MIN_SECONDS = 10.0
#: Every this many seconds everything is unfrozen, collected and frozen again: a frozen object that became part
#: of a garbage cycle since (a connection replaced after a reconnect) is freed within this time.
REFREEZE_SECONDS = 3600.0


def _freeze_long_lived(*, unfreeze: bool) -> None:
    """Move every object alive now out of the cycle collector's generations: a fleet's states, clients and open
    connections live for the whole run, and a full collection would otherwise walk all of them every minute or
    so, stalling the event loop (scrapes and polls included) for longer the larger the fleet. With *unfreeze*,
    the objects frozen before are collected too (a full walk of the heap), and garbage cycles among them freed.
    What is in flight at the time (a poll's response, a catalogue being parsed) is frozen too: any cycle it
    leaves is freed at the next unfreezing one."""
    started = time.perf_counter()
    if unfreeze:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    log.info("objects_frozen", objects=gc.get_freeze_count(), unfrozen=unfreeze,
             seconds=round(time.perf_counter() - started, 3))


class ListenError(Exception):
    """The exporter cannot listen on its address; the message is the one line ``comfywatch run`` prints."""

    def __init__(self, address: str, cause: OSError) -> None:
        code = cause.errno
        # getaddrinfo's errors are negative and os.strerror does not know them; their text is in strerror.
        problem = os.strerror(code) if code is not None and code > 0 else (cause.strerror or type(cause).__name__)
        advice = "another comfywatch? use --listen HOST:PORT" if code == errno.EADDRINUSE else "use --listen HOST:PORT"
        super().__init__(f"cannot listen on {address}: {problem.lower()} ({advice})")
        self.address = address


PollMembers = tuple[TargetContext, list[CheckSpec]]


@dataclass(frozen=True)
class _Job:
    """The scheduler job of one group of a target's checks (every group but the polls, which share slots)."""

    job_id: str
    interval: float
    trigger: IntervalTrigger
    first_run: datetime
    members: list[CheckSpec]


@dataclass(frozen=True)
class _Built:
    """A target's runtime and scheduler jobs, built and not running yet."""

    runtime: TargetContext
    #: Its poll checks by interval: they join a slot (see ``comfywatch.daemon.slots``).
    polls: dict[float, list[CheckSpec]]
    jobs: list[_Job]


@dataclass(frozen=True)
class _Plan:
    """A configuration built completely, ready to replace the running one."""

    config: Config
    limiter: FairLimiter
    fleet_size: int
    #: Running targets it removes or changes (these are rebuilt in ``add``).
    drop: list[str]
    add: list[_Built]


#: The reads a poll may skip while the queue is quiet; both or neither (see ``run_group``).
_QUIET_READS = frozenset({"queue", "jobs"})

#: After a poll whose ``system`` check failed this way, the group's other checks would fail the same way.
_UNREACHABLE = frozenset({Reason.DNS, Reason.CONNECT, Reason.TLS, Reason.TIMEOUT})


def _spread(name: str, check: str, interval: float, fleet: int = 1) -> float:
    """A stable first-run offset: a fleet's checks spread evenly (1000 targets must not check in the same
    millisecond, nor in the same few seconds of every cycle), ~15 ms apart, within the interval (a large fleet's
    network checks crowded into a few seconds would hold thousands of sockets at once).
    A single target checks at once."""
    digest = hashlib.blake2b(f"{name}\0{check}".encode(), digest_size=4).digest()
    window = min(interval, 0.015 * max(0, fleet - 1))
    return int.from_bytes(digest, "big") / 2**32 * window


def _rss_bytes() -> int | None:
    # /proc/self/statm is readable under ProcSubset=pid (unlike /proc/stat); field 2 is resident pages.
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class Daemon:
    """The long-running process. ``await run()`` returns the exit code."""

    def __init__(
        self,
        config_path: Path | None,
        *,
        env: Mapping[str, str] | None = None,
        listen: str | None = None,
        shard: str | None = None,
        mmap_threshold_pinned: bool = False,
        arenas_capped: bool = False,
    ) -> None:
        self.config_path = config_path
        #: Whether the process pinned glibc's mmap threshold (the CLI does, before loading; see daemon/malloc.py).
        self.mmap_threshold_pinned = mmap_threshold_pinned
        #: Whether the process capped glibc's arenas at one (the CLI does, with the pin).
        self.arenas_capped = arenas_capped
        self.env = env
        self.listen_override = listen
        self.shard_override = shard
        self.config: Config | None = None
        self.runtimes: dict[str, TargetContext] = {}
        self.scheduler: AsyncIOScheduler | None = None
        #: Requests in flight to all targets together (``max_concurrency``), shared fairly between them.
        self.limiter: FairLimiter | None = None
        #: The HTTP session of every target (each with its own connections).
        self.sessions = FleetSession()
        self.reload_success = True
        self.reload_timestamp = 0.0
        self.last_tick = time.monotonic()
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._last_status = ""
        self.bound_address: tuple[str, int] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._discovery_seen: tuple[tuple[str, int, int], ...] = ()
        self._inflight: dict[str, set[asyncio.Task[Any]]] = {}
        self._group_members: dict[str, list[str]] = {}
        self._slots: SlotTable[PollMembers] = SlotTable()
        #: The running poll (group task) of each target: a slot never starts a second one (an overrun).
        self._polls: dict[str, asyncio.Task[None]] = {}
        #: Polls started, and those that asked nothing (``comfywatch_polls_total``, ``comfywatch_quiet_polls_total``).
        self.polls = 0
        self.quiet_polls = 0
        self._fleet_size = 1
        #: Targets the configuration switch under way starts: they ramp up together (see START_CPU_PER_TARGET).
        self._starting = 0
        #: One configuration switch at a time (SIGHUP and a discovery change may come together).
        self._applying = asyncio.Lock()
        #: One reload at a time, from its read of the file to its switch (see :meth:`reload`).
        self._reloading = asyncio.Lock()
        self.scrapes = ScrapeClock()
        #: Reloads, for the status page.
        self.events = EventLog()
        #: Shared by every target's catalogue check: a fleet coming up together reads its catalogues in turn.
        self.catalogs = FleetReads()
        #: The soft limit on open descriptors in force (raised to the hard limit by ``run``).
        self.open_files_limit = fdlimit.soft_limit()

    # ----------------------------------------------------------------------------------------------------
    # Configuration.

    def load(self) -> Config:
        config = load_config(self.config_path, self.env)
        updates: dict[str, Any] = {}
        if self.listen_override:
            updates["listen"] = self.listen_override
        if self.shard_override:
            updates["shard"] = self.shard_override
        if updates:
            data = config.model_dump()
            data["server"].update(updates)
            try:
                config = Config.model_validate(data)
            except ValidationError as exc:
                raise ConfigError(format_validation_error(exc), "command line") from None
        return config

    @staticmethod
    def owned_targets(config: Config) -> tuple[list[TargetConfig], list[str]]:
        """The targets of *config* this replica watches, and the problems of the discovery files.

        Run in a worker thread (a fleet's files take seconds to parse): it reads *config* and the files only, and
        the caller logs the problems.
        """
        index, count = config.server.shard_index, config.server.shard_count
        discovered, problems = Daemon.discovered_targets(config)
        return [t for t in [*config.targets, *discovered] if owns(t.name, index, count)], problems

    @staticmethod
    def discovered_targets(config: Config) -> tuple[list[TargetConfig], list[str]]:
        """Targets from file_sd files (see :mod:`comfywatch.daemon.discovery`), static names winning on a clash,
        and the problems met."""
        if not config.discovery.files:
            return [], []
        static = {t.name for t in config.targets}
        found, problems = load_discovered(config.discovery)
        return [t for t in found if t.name not in static], problems

    # ----------------------------------------------------------------------------------------------------
    # Checks.

    async def run_check(self, context: TargetContext, spec: CheckSpec) -> None:
        task = asyncio.current_task()
        inflight = self._inflight.setdefault(context.config.name, set())
        if task is not None:
            inflight.add(task)
        try:
            await self._run_check(context, spec)
        finally:
            if task is not None:
                inflight.discard(task)

    async def _run_check(self, context: TargetContext, spec: CheckSpec) -> None:
        state = context.state
        check = state.check(spec.name)
        started = time.perf_counter()
        reason: Reason | None = None
        was_up, was_version = state.up, state.server_version
        try:
            async with asyncio.timeout(spec.timeout):
                await spec.run(context)
        except CheckSkipped as skipped:
            check.duration = time.perf_counter() - started
            if skipped.reason is not None:
                state.on_skip(spec.name, skipped.reason)
            return
        except CheckFailed as failed:
            reason = failed.reason  # the check logged it, with more detail than the scheduler has
        except RequestFailed as failed:
            reason = failed.failure.reason
            self._log_change(state, spec.name, check.last_reason, reason, failed.failure.detail)
        except TimeoutError:
            reason = Reason.TIMEOUT
            check.overruns += 1
            if spec.name in LIVENESS_CHECKS:
                state.set_up(False, Reason.TIMEOUT)
            self._log_change(state, spec.name, check.last_reason, reason, "check timed out")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = Reason.INVALID_RESPONSE
            log.error("check_crashed", target=state.name, check=spec.name, error=type(exc).__name__, exc_info=True)
        else:
            if check.last_reason is not None:
                log.info("check_recovered", target=state.name, check=spec.name, was=str(check.last_reason))
                if not (spec.name in LIVENESS_CHECKS and was_up == 0.0):  # set_up's "up" event says so
                    state.note_recovery(spec.name, time.time())
            check.last_success = time.time()
            if spec.name == "system" and (was_up != 1.0 or state.server_version != was_version):
                # Up for the first time, back up or another build (a restart, perhaps a deploy): read its catalogue
                # now.
                self.trigger(state.name, "catalog")
        finally:
            check.duration = time.perf_counter() - started
        if reason is not None:
            self._note_failure(state, spec.name, check.last_reason, reason)
        check.last_reason = reason
        if spec.group is None:
            state.record_history(time.time())

    @staticmethod
    def _note_failure(state: TargetState, check: str, before: Reason | None, after: Reason) -> None:
        """The status page's last failure; an event when the reason changes (a down server's "down" event, from
        ``set_up``, already says why)."""
        now = time.time()
        if before == after or (state.up == 0.0 and state.up_reason == after and check in LIVENESS_CHECKS):
            state.last_failure = (now, check, after)
        else:
            state.note_failure(check, after, now)

    def _log_change(
        self, state: TargetState, check: str, before: Reason | None, after: Reason, detail: str
    ) -> None:
        # Log transitions, not every failing poll: a target down for a day must not flood the journal.
        if before != after:
            log.warning("check_failed", target=state.name, check=check, reason=str(after), detail=detail,
                        url=state.public_url, hint=hint_for(after, state.public_url))

    def _build_jobs(self, config: Config, runtime: TargetContext, fleet_size: int) -> _Built:
        """The checks of *runtime* under *config*, grouped into the scheduler jobs that will run them."""
        now = datetime.now(UTC)
        name = runtime.config.name
        groups: dict[tuple[str, float], list[CheckSpec]] = {}
        for spec in plan_checks(config, runtime, self.catalogs):
            groups.setdefault((spec.group or spec.name, spec.interval), []).append(spec)
        polls: dict[float, list[CheckSpec]] = {}
        jobs: list[_Job] = []
        for (group, interval), members in groups.items():
            if group == POLL_GROUP:
                polls[interval] = members
                continue
            jobs.append(_Job(f"{name}\0{group}", interval,
                             IntervalTrigger(seconds=interval, jitter=min(1.0, interval * 0.05)),
                             now + timedelta(seconds=_spread(name, group, interval, fleet_size)), members))
        return _Built(runtime, polls, jobs)

    def _schedule(self, built: _Built) -> float:
        """Schedule the target's jobs; the seconds until its first poll."""
        assert self.scheduler is not None
        first_poll = min((self._join_slot(built.runtime, interval, members)
                          for interval, members in built.polls.items()), default=0.0)
        for job in built.jobs:
            self._group_members[job.job_id] = [spec.name for spec in job.members]
            self.scheduler.add_job(
                self._cancellable,
                job.trigger,
                args=(self.run_group, built.runtime, job.members),
                id=job.job_id,
                name=job.job_id,
                replace_existing=True,
                next_run_time=job.first_run,
                misfire_grace_time=max(1, int(job.interval)),
                coalesce=True,
                max_instances=1,
            )
        return first_poll

    def _join_slot(self, runtime: TargetContext, interval: float, members: list[CheckSpec]) -> float:
        """Put the target in a poll slot; the seconds until its first poll."""
        assert self.scheduler is not None
        name = runtime.config.name
        slot, created = self._slots.add(name, interval, (runtime, members))
        if created:
            # A large fleet starting together ramps up over more than one interval (see START_CPU_PER_TARGET).
            offset = first_offset(slot.index, max(interval, self._starting * START_CPU_PER_TARGET))
            slot.starts_at = time.monotonic() + offset
            self.scheduler.add_job(
                self.run_slot,
                IntervalTrigger(seconds=interval, jitter=min(1.0, interval * 0.05)),
                args=(slot,),
                id=slot.job_id,
                name=slot.job_id,
                replace_existing=True,
                next_run_time=datetime.now(UTC) + timedelta(seconds=offset),
                misfire_grace_time=max(1, int(interval)),
                coalesce=True,
                max_instances=1,
            )
        elif slot.ran:
            self._start_poll(name, runtime, members)
            return 0.0
        return max(0.0, slot.starts_at - time.monotonic())

    @staticmethod
    async def _cancellable(job: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run a scheduled job. Shutdown and reload cancel the checks in flight, and APScheduler logs anything a
        job raises, a cancellation too, as an error with a traceback: a cancelled job ends here, quietly."""
        try:
            await job(*args)
        except asyncio.CancelledError:
            log.debug("job_cancelled", job=getattr(job, "__name__", str(job)))

    async def run_slot(self, slot: Slot[PollMembers]) -> None:
        """Start the poll of every target in *slot*; returns at once, so one slow target delays no other."""
        slot.ran = True
        for name, (context, members) in list(slot.members.items()):
            self._start_poll(name, context, members)

    def _start_poll(self, name: str, context: TargetContext, members: list[CheckSpec]) -> None:
        running = self._polls.get(name)
        if running is not None and not running.done():
            # Like max_instances=1 for a job of its own: the previous poll still runs, this one is skipped.
            for spec in members:
                context.state.check(spec.name).overruns += 1
            return
        self.polls += 1
        self._polls[name] = asyncio.get_running_loop().create_task(self.run_group(context, members))

    async def run_group(self, context: TargetContext, members: list[CheckSpec]) -> None:
        """Run a group's checks in order; stop after ``system`` finds the target unreachable. The whole poll is
        skipped, or only its system check run, while the monitoring WebSocket shows the server up and its queue
        unchanged since the last full read (``trackers.QuietQueue``). When a scrape is due before the group runs
        again, the target's /metrics lines are encoded as it ends (``exporter.prepare``): the scrape finds them
        ready."""
        await self._run_group(context, members)
        context.state.record_history(time.time())
        horizon = max((spec.interval for spec in members), default=0.0)
        if self.scrapes.expects_scrape_within(time.monotonic(), horizon):
            try:
                prepare(context.state)
            except Exception:
                # Never lose a poll to the exporter: the next scrape encodes the target again (and shows
                # the same error, where it can be seen).
                log.error("encode_failed", target=context.config.name, exc_info=True)

    async def _run_group(self, context: TargetContext, members: list[CheckSpec]) -> None:
        state = context.state
        mark = (state.monitor_connection, state.monitor_status_frames)
        reads = [spec for spec in members if spec.name in _QUIET_READS]
        system = next((spec for spec in members if spec.name == "system"), None)
        # Decided before the group's first check, so that a poll that asks less asks nothing it does not need.
        quiet_from = members[0] if reads else None
        for spec in members:
            if spec is quiet_from:
                read = self._next_read(state, system is not None, mark)
                if read is PollRead.NOTHING:
                    self.quiet_polls += 1
                    return
                if read is PollRead.SYSTEM and system is not None:
                    await self.run_check(context, system)
                    return
            await self.run_check(context, spec)
            if spec.name == "system" and state.up == 0.0 and state.up_reason in _UNREACHABLE:
                return
        if reads:
            if all(state.check(spec.name).last_reason is None for spec in reads):
                state.quiet.mark(*mark)
            else:
                state.quiet.forget()

    @staticmethod
    def _next_read(state: TargetState, has_system: bool, mark: tuple[int, int]) -> PollRead:
        """What this poll asks (``trackers.QuietQueue``). Less than a full read only when the last poll that asked
        found the server up: then the monitoring socket, open on the same connection since that full read, vouches
        for the server (a dead process or a restart closes it, and the system check runs at once) and for its queue
        (no ``status`` frame since). The server's memory figures are then those of the last read, at most
        ``max_skips`` polls old. A group without the system check has nothing to refresh with: it reads in full."""
        if has_system and (state.up != 1.0 or state.check("system").last_reason is not None):
            return PollRead.FULL
        read = state.quiet.next_read(state.websocket_connected == 1.0, *mark, has_system and state.monitor_forwarded)
        if read is not PollRead.FULL and not queue_check.reobserve(state):
            return PollRead.FULL
        return read

    def _unschedule(self, name: str) -> None:
        if self.scheduler is None:
            return
        emptied = self._slots.remove(name)
        if emptied is not None:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(emptied.job_id)
        self._polls.pop(name, None)
        for job in list(self.scheduler.get_jobs()):
            if job.id.split("\0", 1)[0] == name:
                job.remove()
                self._group_members.pop(job.id, None)

    def _on_skipped(self, event: JobExecutionEvent) -> None:
        target, _, group = str(event.job_id).partition("\0")
        runtime = self.runtimes.get(target)
        if runtime is not None and group:
            for check in self._group_members.get(str(event.job_id), [group]):
                runtime.state.check(check).overruns += 1

    # ----------------------------------------------------------------------------------------------------
    # Targets.

    async def apply_config(self, config: Config) -> None:
        """Switch to *config*: unchanged targets keep their state; changed ones are rebuilt.

        Everything *config* needs (clients, checks, workflows, scheduler triggers) is built before anything
        running is replaced: when building raises, the running configuration is left as it was.
        """
        async with self._applying:
            await self._switch(await self._prepare(config))

    async def _prepare(self, config: Config) -> _Plan:
        owned, problems = await asyncio.to_thread(self.owned_targets, config)
        for problem in problems:
            log.warning("discovery_problem", problem=problem)
        wanted = {t.name: t for t in owned}
        # The secrets as their files hold them now, read off the loop (a fleet's files take a while): a rotated
        # bearer_token_file leaves the settings equal, and only its contents tell that the target changed.
        credentials = await asyncio.to_thread(self._resolve_credentials, wanted.values())
        defaults_changed = self.config is not None and (self.config.defaults != config.defaults
                                                        or self.config.metrics != config.metrics)
        drop = [name for name, runtime in self.runtimes.items()
                if name not in wanted or wanted[name] != runtime.config or defaults_changed
                or credentials[name] != runtime.credentials]
        limiter = self.limiter or FairLimiter(config.server.max_concurrency)
        targets = [target for name, target in wanted.items() if name not in self.runtimes or name in drop]
        runtimes: list[TargetContext] = []
        try:
            added = self._build(config, targets, credentials, limiter, len(wanted), runtimes)
        except BaseException:
            for runtime in runtimes:
                await runtime.close()
            raise
        return _Plan(config, limiter, len(wanted), drop, added)

    def _resolve_credentials(self, targets: Iterable[TargetConfig]) -> dict[str, Credentials]:
        """The secrets of *targets* by name, read from their files and the environment now.

        Raises:
            ConfigError: a secret file is gone or unreadable (the running configuration then stays).
        """
        resolved: dict[str, Credentials] = {}
        for target in targets:
            try:
                resolved[target.name] = resolve_credentials(target, self.env)
            except ValueError as exc:  # the message names the file, never its contents
                raise ConfigError([f"target {target.name}: {exc}"], str(self.config_path or "environment")) from None
        return resolved

    def _build(self, config: Config, targets: list[TargetConfig], credentials: Mapping[str, Credentials],
               limiter: FairLimiter, fleet_size: int, runtimes: list[TargetContext]) -> list[_Built]:
        """*targets*' runtimes and jobs under *config*, with their *credentials* (by name); each runtime joins
        *runtimes* once it exists (the caller closes them when building fails)."""
        old = self.config
        # Checks read the configuration they are built for from self.config (Cloud checks among them): it is
        # the new one only during this call, which never awaits, so nothing else ever sees it.
        self.config = config
        try:
            # The new targets' secrets become the process's own at the switch (replace_secrets), not before.
            with request_scope():
                added: list[_Built] = []
                for target in targets:
                    # The secrets the comparison with the running target read: what it is built with is what
                    # decided that it be built.
                    runtime = build_context(config, target, limiter=limiter.share(),
                                            credentials=credentials[target.name], fleet=self.sessions)
                    runtimes.append(runtime)
                    added.append(self._build_jobs(config, runtime, fleet_size))
                return added
        finally:
            self.config = old

    async def _switch(self, plan: _Plan) -> None:
        old, config = self.config, plan.config
        self.config, self.limiter, self._fleet_size = config, plan.limiter, plan.fleet_size
        self._starting = len(plan.add)
        plan.limiter.resize(config.server.max_concurrency)
        for name in plan.drop:
            runtime = self.runtimes.pop(name)
            self._unschedule(name)
            # Checks still running for the old target must not outlive it (they would reopen its client).
            running = [t for t in self._inflight.pop(name, set()) if t is not asyncio.current_task()]
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running, timeout=2.0)
            try:
                await runtime.close()
            except Exception as exc:
                # The switch is under way: a client that fails to close must not leave it half done.
                log.warning("target_close_failed", target=name, error=f"{type(exc).__name__}: {str(exc)[:200]}")
        settle_after = SETTLE_MIN_SECONDS
        for built in plan.add:
            runtime = built.runtime
            self.runtimes[runtime.config.name] = runtime
            first_poll = self._schedule(built)
            if runtime.local is not None and config.defaults.websocket_monitor:
                # Connected as the target is first polled: a fleet's sockets open spread like its polls.
                self._start_monitor(runtime, delay=first_poll)
            # A target without poll slots (Cloud) has settled once its most frequent job has run.
            interval = max(built.polls, default=min((job.interval for job in built.jobs), default=0.0))
            settle_after = max(settle_after, first_poll + max(SETTLE_INTERVALS * interval, SETTLE_MIN_SECONDS))
        if plan.add and self.scheduler is not None:
            self._schedule_settle(datetime.now(UTC) + timedelta(seconds=settle_after))
        if self.scheduler is not None and (old is None or old.discovery.refresh_interval
                                           != config.discovery.refresh_interval):
            self.scheduler.add_job(self._cancellable, IntervalTrigger(seconds=config.discovery.refresh_interval),
                                   args=(self._refresh_discovery,), id="\0discovery", replace_existing=True)
        # What the running targets hold, no more: a reload that drops a password drops it from the redactor.
        replace_secrets(secret for runtime in self.runtimes.values()
                        for secret in runtime.credentials.secret_values())
        log.info("targets_configured", count=len(self.runtimes), names=sorted(self.runtimes)[:20])
        local = sum(1 for runtime in self.runtimes.values() if runtime.local is not None)
        needed = fdlimit.descriptors_needed(local, config.defaults.websocket_monitor, len(self.runtimes) - local)
        if needed > self.open_files_limit:
            log.warning("open_files_limit_low", limit=self.open_files_limit, needed=needed, targets=len(self.runtimes),
                        advice="raise LimitNOFILE (systemd) or ulimit -n, or shard the targets over more daemons")

    def _start_monitor(self, runtime: TargetContext, delay: float = 0.0) -> None:
        assert runtime.local is not None
        name = runtime.config.name
        monitor = WebSocketMonitor(runtime.local, runtime.state, on_disconnect=lambda: self.trigger(name, "system"),
                                   on_reconnect=lambda: self.trigger(name, "catalog"),
                                   ssl_context=ssl_context_for(runtime.config))
        runtime.monitor = monitor
        monitor.start(delay)

    def trigger(self, target: str, check: str) -> None:
        """Run a check now (e.g. the monitor WebSocket closed: is the server gone?)."""
        if self.scheduler is None:
            return
        slot = self._slots.slot_of(target)
        if slot is not None and check in {spec.name for spec in slot.members[target][1]}:
            context, members = slot.members[target]
            self._start_poll(target, context, members)
            return
        job = self.scheduler.get_job(f"{target}\0{check}")
        if job is None:  # the check runs inside a group job
            job = next((self.scheduler.get_job(job_id) for job_id, members in self._group_members.items()
                        if job_id.startswith(f"{target}\0") and check in members), None)
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    # ----------------------------------------------------------------------------------------------------
    # Metrics source, health, status.

    def snapshot(self) -> tuple[list[TargetState], DaemonInfo]:
        config = self.config
        info = DaemonInfo(
            reload_success=self.reload_success,
            reload_timestamp=self.reload_timestamp,
            shard_index=config.server.shard_index if config else 0,
            shard_count=config.server.shard_count if config else 1,
            polls=self.polls,
            quiet_polls=self.quiet_polls,
            tasks=len(asyncio.all_tasks()),
            rss_bytes=_rss_bytes(),
            open_fds=_open_fds(),
        )
        return [r.state for r in self.runtimes.values()], info

    def status_inputs(self) -> StatusInputs:
        return StatusInputs([r.state for r in self.runtimes.values()], events=self.events,
                            reload_success=self.reload_success)

    def alive(self) -> bool:
        return (
            self.scheduler is not None
            and self.scheduler.running
            and time.monotonic() - self.last_tick < HEARTBEAT_SECONDS * 5
        )

    def status_line(self) -> str:
        states = [r.state for r in self.runtimes.values()]
        up = sum(1 for s in states if s.up == 1.0)
        down = [s for s in states if s.up == 0.0]
        text = f"{len(states)} targets: {up} up, {len(down)} down"
        if down:
            text += " (" + ", ".join(f"{s.name}: {s.up_reason}" for s in down[:3])
            text += ", ..." if len(down) > 3 else ""
            text += ")"
        return text

    def _schedule_settle(self, when: datetime) -> None:
        """Freeze what the targets keep at *when*, or later: a switch that comes before the freeze of an earlier
        one never moves it before that one's targets have settled."""
        assert self.scheduler is not None
        pending = self.scheduler.get_job("\0settle")
        if pending is not None and pending.next_run_time is not None:
            when = max(when, pending.next_run_time)
        # However late the loop runs it, a freeze is still worth doing: no misfire grace.
        self.scheduler.add_job(self._settle, DateTrigger(when, timezone=UTC), id="\0settle", replace_existing=True,
                               misfire_grace_time=None)

    # The two freeze jobs are coroutines so that APScheduler runs them on the event loop, between polls (it
    # runs a plain function in a worker thread).

    async def _settle(self) -> None:
        """Freeze what the targets of the last switch keep, once they have settled."""
        _freeze_long_lived(unfreeze=False)

    async def _refreeze(self) -> None:
        """Collect what is frozen too, and freeze again (see REFREEZE_SECONDS)."""
        _freeze_long_lived(unfreeze=True)

    async def _heartbeat(self) -> None:
        self.last_tick = time.monotonic()
        status = self.status_line()
        if status != self._last_status:
            self._last_status = status
            sdnotify.notify(f"STATUS={status}")
        # A request made while a reload runs is served by the task request_reload started, once that reload ends.
        if self._reload_requested.is_set() and not self._reloading.locked():
            self._in_background(self._reload_now())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run *work* as a task of the daemon's own (cancelled at shutdown)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _discovery_fingerprint(config: Config) -> tuple[tuple[str, int, int], ...]:
        # In a worker thread: a file that changed is read and hashed (up to 4 MiB each).
        return await asyncio.to_thread(discovery_fingerprint, config.discovery)

    async def _refresh_discovery(self) -> None:
        """Re-read file_sd files when any changed (stat or content); unchanged targets keep their state."""
        if self.config is None:
            return
        fingerprint = await self._discovery_fingerprint(self.config)
        if fingerprint != self._discovery_seen:
            self._discovery_seen = fingerprint
            log.info("discovery_changed", files=len(fingerprint))
            try:
                await self._reapply()
            except Exception:
                log.error("discovery_apply_failed", exc_info=True)

    async def _reapply(self) -> None:
        """Switch to the running configuration again (the targets discovery finds change)."""
        async with self._applying:
            # The configuration in force once the lock is had: one taken before it, while a reload was switching,
            # would switch back to what that reload replaced.
            if self.config is not None:
                await self._switch(await self._prepare(self.config))

    # ----------------------------------------------------------------------------------------------------
    # Lifecycle.

    async def reload(self) -> bool:
        """Load the configuration again and switch to it; on any failure keep the running one (False).

        Reloads run one at a time, each from its read of the file to its switch: a reload waits for the one under
        way to end, then reads the file as it is then. A slow reload of an older file therefore never switches
        after a later reload of a newer one, and reload_success and its timestamp are those of the last read.
        """
        async with self._reloading:
            # This reload reads the file after every request made until now: they are served.
            self._reload_requested.clear()
            return await self._reload()

    async def _reload(self) -> bool:
        """:meth:`reload`, with the reload lock held."""
        sdnotify.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            # Parsing a large or pathological file takes seconds: off the loop, so scrapes go on meanwhile.
            config = await asyncio.to_thread(self.load)
            await self.apply_config(config)
        except ConfigError as exc:
            log.error("reload_failed", problems=exc.problems[:20], source=exc.source)
            return self._reloaded(False)
        except Exception as exc:
            # Not a problem of the file that validation knows of: still the running configuration stays.
            log.error("reload_failed", problems=[f"{type(exc).__name__}: {str(exc)[:200]}"], exc_info=True)
            return self._reloaded(False)
        log.info("reloaded")
        return self._reloaded(True)

    def _reloaded(self, success: bool) -> bool:
        self.reload_success = success
        self.reload_timestamp = time.time()
        self.events.add(Event(self.reload_timestamp, "reload" if success else "reload_failed"))
        status = self.status_line() if success else f"reload failed, old configuration kept: {self.status_line()}"
        sdnotify.notify("READY=1", f"STATUS={status}")
        return success

    async def _start_server(self, config: Config) -> None:
        middlewares: list[object] = []
        ssl_context = None
        headers: Mapping[str, str] = {}
        if config.server.web_config_file is not None:
            web_config = load_web_config(config.server.web_config_file)
            ssl_context = web_config.ssl_context
            headers = web_config.headers
            if web_config.basic_auth_users:
                middlewares.append(basic_auth_middleware(web_config.basic_auth_users))
        app = create_app(
            self.snapshot, probe=make_probe_handler(lambda: self.config), healthy=self.alive,
            middlewares=middlewares, scrapes=self.scrapes, status=self.status_inputs,
        )
        if headers:
            install_response_headers(app, headers)
        self._runner = ExporterRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        host, _, port = config.server.listen.rpartition(":")
        site = web.TCPSite(self._runner, host.strip("[]"), int(port), ssl_context=ssl_context, reuse_address=True)
        await site.start()
        address = self._runner.addresses[0]
        self.bound_address = (str(address[0]), int(address[1]))
        log.info("listening", address=f"{self.bound_address[0]}:{self.bound_address[1]}",
                 tls=ssl_context is not None, basic_auth=bool(middlewares))

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """Reload soon (SIGHUP). Requests made while a reload runs coalesce into one more reload after it."""
        if self._reloading.locked():
            # Said, so that a second SIGHUP is seen to have been taken: it reloads once the reload under way ends.
            log.info("reload_queued")
        self._reload_requested.set()
        # Also wake the loop now rather than at the next heartbeat.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            self._in_background(self._reload_now())

    async def _reload_now(self) -> None:
        """Reload if a request is still pending once the reload under way (if any) has ended."""
        async with self._reloading:
            # Cleared by a reload that began after the request, and so read the file after it: nothing to do.
            if not self._reload_requested.is_set():
                return
            self._reload_requested.clear()
            await self._reload()

    async def run(
        self, *, config: Config | None = None, install_signals: bool = True, ready_file: Path | None = None
    ) -> int:
        """Serve and check until stopped; *config* is the already loaded :meth:`load` (else it is loaded here).

        Raises:
            ListenError: the exporter cannot listen on its address (nothing has been started).
            WebConfigError: the ``web_config_file`` is invalid.
            ConfigError: a target cannot be built (a secret file went away since the configuration was loaded).
        """
        if config is None:
            try:
                config = self.load()
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("config_invalid", source=exc.source, problem=problem)
                return 2
        self.open_files_limit = fdlimit.raise_soft_limit()
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self.scheduler = AsyncIOScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 15}
        )
        # Only real overlaps count as overruns. A run "missed" because the loop was briefly busy is coalesced
        # into the next one by APScheduler and says nothing about the check itself.
        self.scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES)
        try:
            await self._start_server(config)
        except OSError as exc:
            await self._stop_server()
            raise ListenError(config.server.listen, exc) from None
        self.scheduler.start()
        self.scheduler.add_job(self._refreeze, IntervalTrigger(seconds=REFREEZE_SECONDS), id="\0refreeze")
        self.scheduler.add_job(self._heartbeat, IntervalTrigger(seconds=HEARTBEAT_SECONDS), id="\0heartbeat",
                               next_run_time=datetime.now(UTC))
        # Fingerprint first: a file changing while targets are being set up is then seen at the next refresh.
        self._discovery_seen = await self._discovery_fingerprint(config)
        try:
            await self.apply_config(config)
        except BaseException:
            await self.shutdown()
            raise
        # Config, clients and target states: frozen now, and with their connections once the targets settle.
        _freeze_long_lived(unfreeze=False)
        self.reload_timestamp = time.time()
        self.last_tick = time.monotonic()
        watchdog = sdnotify.Watchdog(self.alive)
        watchdog.start()
        # READY only now: configuration loaded, server listening, first round of checks scheduled.
        sdnotify.notify("READY=1", f"STATUS={self.status_line()}", f"MAINPID={os.getpid()}")
        if ready_file is not None and self.bound_address is not None:
            # A few bytes once at start-up (tests and wrappers read the bound port from it).
            ready_file.write_text(f"{self.bound_address[0]}:{self.bound_address[1]}\n", encoding="utf-8")  # noqa: ASYNC240
        log.info("started", targets=len(self.runtimes), shard=config.server.shard,
                 mmap_threshold_pinned=self.mmap_threshold_pinned, arenas_capped=self.arenas_capped)
        await self._stop.wait()
        sdnotify.notify("STOPPING=1")
        log.info("stopping")
        await watchdog.stop()
        await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            # This cancels the scheduled jobs in flight too (they end quietly: see _cancellable).
            self.scheduler.shutdown(wait=False)
        for task in list(self._background):
            task.cancel()
        # Cancel the checks still running so that clients can close cleanly.
        current = asyncio.current_task()
        checks = {task for tasks in self._inflight.values() for task in tasks} | set(self._polls.values())
        pending = [task for task in checks if task is not current and not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        for runtime in list(self.runtimes.values()):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await runtime.close()
        self.runtimes.clear()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.sessions.close()
        await self._stop_server()
        # The process's collector as the daemon found it: a program that embeds the daemon gets its garbage
        # cycles collected again.
        gc.unfreeze()

    async def _stop_server(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
