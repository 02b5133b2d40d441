"""``/probe?target=URL&module=NAME``: a stateless, blackbox_exporter-style probe.

Each request builds a fresh client and state, runs the module's checks once within the scrape timeout
Prometheus announces, renders the result without a ``target`` label, and forgets everything but two things:
its connection, which the client borrows from the handler's :class:`SharedSessions` so that the next probe of
the same server reuses it (no credentials, cookies or state travel with it), and, for two minutes, that the
server has no ``/api/jobs`` (ComfyUI before Dec 2025 answers 404; :class:`WithoutJobsApi`). A module whose
``system`` check runs before its ``jobs`` check then reads ``/history`` straight away, one request fewer,
unless the server reports another version. It never runs a canary: probes must be cheap and side-effect
free.

The caller chooses where the daemon connects, so a module's credentials go only where
:func:`comfywatch.config.probe_target_allowed` allows (``[probe] allow``, the module's ``allow``, and by
default for a module with credentials the configured targets that use the same files); any other target
is answered 403 with the reason, before a connection is made.

Forgetting includes secrets: the target's userinfo and the module's credentials are registered in a
request scope of the redactor, so they are masked in whatever the request logs or answers and gone when
it ends (a caller probing with a fresh password each time costs the redactor nothing).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import structlog
from aiohttp import web

from comfywatch.basic_auth import basic_auth_header
from comfywatch.checks import jobs as jobs_check
from comfywatch.checks import queue as queue_check
from comfywatch.checks import system as system_check
from comfywatch.checks.context import build_context
from comfywatch.clients.http import RequestFailed, SharedSessions
from comfywatch.config import (
    MAX_URL_CHARS,
    Config,
    Credentials,
    ProbeModule,
    TargetConfig,
    probe_target_allowed,
    resolve_module_credentials,
)
from comfywatch.errors import Reason
from comfywatch.export import metrics as m
from comfywatch.export.collector import collect
from comfywatch.export.exposition import Family, choose_format, render
from comfywatch.redact import register_secret, request_scope, scrub, strip_userinfo

__all__ = ["JobsApiAnswer", "WithoutJobsApi", "make_probe_handler"]

log = structlog.get_logger("comfywatch.probe")

DEFAULT_SCRAPE_TIMEOUT = 10.0


def _register_userinfo(url: str) -> None:
    """Register the target's credentials as typed (percent-encoded or not) and as the Basic header sent."""
    without = strip_userinfo(url)
    if without == url:
        return
    start = url.find("://") + 3
    userinfo = url[start : start + len(url) - len(without) - 1]
    user, _, password = userinfo.partition(":")
    for typed in (userinfo, password):
        register_secret(typed)
    register_secret(basic_auth_header(unquote(user), unquote(password)))


def _refuse(status: int, text: str) -> web.Response:
    # Whatever the text quotes from the request is scrubbed with the request's own secrets.
    return web.Response(status=status, text=scrub(text) + "\n")


def _module_credentials(module: ProbeModule, url: str) -> Credentials:
    """The module's header files, plus basic auth from the target URL's userinfo (like configured targets)."""
    headers = resolve_module_credentials(module).headers
    parts = urlsplit(url)
    basic = (unquote(parts.username), unquote(parts.password or "")) if parts.username is not None else None
    return Credentials(headers=headers, basic_auth=basic)


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return "target has an invalid port"
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "target must be an http(s) URL"
    return None


def _timeout_from(request: web.Request, module: ProbeModule) -> float:
    header = request.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
    try:
        scrape = float(header) if header else DEFAULT_SCRAPE_TIMEOUT
    except ValueError:
        scrape = DEFAULT_SCRAPE_TIMEOUT
    # Leave half a second to render and send before Prometheus gives up on the scrape.
    return max(0.2, min(module.timeout, scrape - 0.5))


def _system_before_jobs(checks: tuple[str, ...]) -> bool:
    """Whether the system check runs before the jobs check: only then does a new version show in time."""
    return "system" in checks and "jobs" in checks and checks.index("system") < checks.index("jobs")


class JobsApiAnswer(NamedTuple):
    """A server's 404 to ``/api/jobs``: when it was recorded (monotonic seconds, as the probe ended), and the
    ComfyUI version the server reported then."""

    at: float
    version: str | None


class WithoutJobsApi:
    """The probed servers that answered 404 to ``/api/jobs``, by module and URL, each forgotten ``max_age``
    seconds after it was recorded; beyond ``max_entries`` the oldest go first. The URL's userinfo is not part of
    the key (a caller's password changes nothing the server serves, and is not kept); the module is, as its
    headers may reach another backend behind a proxy."""

    def __init__(self, *, max_entries: int = 1024, max_age: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock
        #: Oldest answer first: expiry and eviction both take from the front.
        self._answers: OrderedDict[tuple[str, str], JobsApiAnswer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def _expire(self) -> None:
        oldest = self._clock() - self.max_age
        while self._answers and next(iter(self._answers.values())).at <= oldest:
            self._answers.popitem(last=False)

    def get(self, key: tuple[str, str]) -> JobsApiAnswer | None:
        self._expire()
        return self._answers.get(key)

    def record(self, key: tuple[str, str], jobs_api: bool | None, version: str | None) -> None:
        """What a probe that asked ``/api/jobs`` learned: False remembers the 404 from now, True forgets it,
        None (no answer) changes nothing."""
        if jobs_api is None:
            return
        self._answers.pop(key, None)
        if not jobs_api:
            self._answers[key] = JobsApiAnswer(self._clock(), version)
            while len(self._answers) > self.max_entries:
                self._answers.popitem(last=False)
        self._expire()


def make_probe_handler(
    get_config: Callable[[], Config | None], *, without_jobs_api: WithoutJobsApi | None = None,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    shared = SharedSessions()
    memo = without_jobs_api if without_jobs_api is not None else WithoutJobsApi()

    async def handler(request: web.Request) -> web.Response:
        with request_scope():
            try:
                return await _probe(request, get_config(), shared, memo)
            except Exception:
                # Logged here, inside the request's scope: the probe's secrets are masked in the traceback too.
                log.exception("probe_failed")
                return _refuse(500, "probe failed")

    return handler


async def _probe(request: web.Request, config: Config | None, shared: SharedSessions,
                 without_jobs_api: WithoutJobsApi) -> web.Response:
    url = request.query.get("target", "")
    _register_userinfo(url)
    if config is None:
        return _refuse(503, "not configured")
    module_name = request.query.get("module", "local")
    module = config.modules.get(module_name)
    if module is None:
        return _refuse(400, f"unknown module {module_name[:60]!r}")
    # Longer targets are refused as configured ones are: no ComfyUI URL needs more, and the URL becomes a label.
    if len(url) > MAX_URL_CHARS:
        return _refuse(400, f"target longer than {MAX_URL_CHARS} characters")
    problem = _url_problem(url)
    if problem is not None:
        # Never echo the target: its userinfo may hold a password.
        return _refuse(400, problem)
    if module.kind != "local":
        return _refuse(400, "only local modules can be probed")
    refusal = probe_target_allowed(config, module_name, url)
    if refusal is not None:
        return _refuse(403, refusal)
    timeout = _timeout_from(request, module)
    try:
        # Each request gives up a little before the whole probe does, so a slow server is reported as
        # a counted ``timeout`` failure rather than cut off by the probe's deadline.
        target = TargetConfig(name="probe", kind="local", url=url, timeout=max(0.1, timeout - 0.1))
    except ValueError:
        return _refuse(400, "target is not a usable URL")
    try:
        credentials = _module_credentials(module, url)
    except ValueError:
        return _refuse(500, "module credentials unreadable")
    runtime = build_context(config, target, credentials=credentials, shared=shared)
    server = (module_name, target.public_url)
    by_memo = _system_before_jobs(module.checks)
    remembered = without_jobs_api.get(server) if by_memo else None
    if remembered is not None:
        runtime.state.jobs_api = False
        # A server reporting another version has its jobs_api forgotten by the system check (the daemon's rule),
        # so the jobs check asks /api/jobs again.
        runtime.state.server_version = remembered.version
    started = time.perf_counter()
    ok = True
    try:
        async with asyncio.timeout(timeout):
            for check in module.checks:
                try:
                    if check == "system":
                        await system_check.run(runtime)
                    elif check == "queue":
                        await queue_check.run(runtime)
                    elif check == "jobs":
                        await jobs_check.run(runtime)
                except RequestFailed:
                    ok = False
                    if check == "system":
                        break
    except TimeoutError:
        ok = False
        if runtime.state.up is None or check == "system":
            runtime.state.set_up(False, Reason.TIMEOUT)
    finally:
        await runtime.close()
    # Only a probe that asked learned something (one that went by the memo must not renew it), and only for a
    # module that reads the memo.
    if by_memo and any(endpoint == "jobs" for endpoint, _ in runtime.state.requests):
        without_jobs_api.record(server, runtime.state.jobs_api, runtime.state.server_version)
    openmetrics, content_type = choose_format(request.headers.get("Accept"))
    summary = [Family(m.PROBE_SUCCESS, [("", 1.0 if ok else 0.0)]),
               Family(m.PROBE_DURATION, [("", time.perf_counter() - started)])]
    families = summary + collect([runtime.state], daemon=None, with_target=False)
    body = render(families, openmetrics=openmetrics)
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response
