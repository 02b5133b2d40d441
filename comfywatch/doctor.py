"""``comfywatch doctor``: run every check once, in dependency order, and say what to fix (issue 5).

Checks share the daemon's clients, parsers and failure taxonomy: a failing check's ``hint`` is the
remediation hint of its :class:`~comfywatch.errors.Reason` unless a more specific diagnosis applies (an nginx
config missing the WebSocket upgrade headers, an auth proxy, a proxy's HTML error page ...).

JSON schema (``--json``), stable::

    {"ok": bool, "strict": bool,
     "targets": [{"name": str, "kind": "local"|"cloud", "url": str,
                  "checks": [{"id": str, "status": "ok"|"warn"|"fail"|"skipped",
                              "summary": str, "hint": str|null, "details": {...}}]}]}
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from comfywatch.clients.cloud import CloudApi, RetryAfterActive
from comfywatch.clients.http import HttpResult, RequestFailed
from comfywatch.clients.local import LocalApi
from comfywatch.clients.net import EXPIRY_WARN_DAYS, NetReport, probe_url
from comfywatch.config import Config, ConfigError, TargetConfig, load_config
from comfywatch.errors import Failure, Reason, hint_for
from comfywatch.parse.history import Outcome
from comfywatch.parse.prompt import parse_ws_text
from comfywatch.parse.system import SystemStats
from comfywatch.redact import scrub
from comfywatch.runtime import TargetRuntime, build_runtime, ssl_context_for

__all__ = ["CheckResult", "Report", "TargetReport", "doctor_main", "run_doctor"]

Status = Literal["ok", "warn", "fail", "skipped"]
SYMBOLS: dict[str, str] = {"ok": "✓", "warn": "!", "fail": "✗", "skipped": "-"}

NGINX_WEBSOCKET_HINT = (
    "The /ws upgrade does not reach ComfyUI: a reverse proxy drops the Upgrade/Connection headers. For nginx "
    "add to the location block:  proxy_http_version 1.1;  proxy_set_header Upgrade $http_upgrade;  "
    'proxy_set_header Connection "upgrade";  proxy_read_timeout 3600s;'
)
EXPOSED_HINT = (
    "ComfyUI listens on all interfaces (--listen) and answered without any credentials: anyone who can reach "
    "this port can run workflows and read outputs. Put a reverse proxy with authentication in front, or "
    "bind to 127.0.0.1, or firewall the port."
)
CPU_DEVICE_HINT = (
    "The torch device is {kind}: VRAM numbers are system RAM (or unknown) and jobs run without a GPU. "
    "Check the CUDA/ROCm install and that ComfyUI was not started with --cpu."
)
JOBS_API_HINT = (
    "This ComfyUI has no /api/jobs (added Dec 2025, Comfy-Org/ComfyUI#11054): comfywatch falls back to "
    "/queue + /history. Upgrade ComfyUI for exact job timestamps."
)


@dataclass
class CheckResult:
    id: str
    status: Status
    summary: str
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class TargetReport:
    name: str
    kind: str
    url: str
    checks: list[CheckResult] = field(default_factory=list)

    def add(self, check: CheckResult) -> CheckResult:
        self.checks.append(check)
        return check

    def failed(self, prefix: str) -> bool:
        return any(c.status == "fail" and c.id.startswith(prefix) for c in self.checks)


@dataclass
class Report:
    targets: list[TargetReport]
    strict: bool = False

    @property
    def ok(self) -> bool:
        bad = {"fail", "warn"} if self.strict else {"fail"}
        return not any(c.status in bad for t in self.targets for c in t.checks)

    def to_json(self) -> str:
        body = {"ok": self.ok, "strict": self.strict, "targets": [asdict(t) for t in self.targets]}
        return scrub(json.dumps(body, indent=2, default=str))


def _fail(check_id: str, failure: Failure, summary: str | None = None, **details: Any) -> CheckResult:
    return CheckResult(check_id, "fail", summary or f"{failure.reason}: {failure.detail}", failure.hint,
                       {"reason": str(failure.reason), **details})


def _skip(check_id: str, because: str) -> CheckResult:
    return CheckResult(check_id, "skipped", f"skipped: {because} failed")


# ---------------------------------------------------------------------------------------------------------
# Local ComfyUI.


def _network_checks(report: TargetReport, net: NetReport) -> bool:
    dns = net.dns
    if dns.ok:
        report.add(CheckResult("network.dns", "ok", f"{net.host} resolves to {', '.join(dns.addresses[:3])}",
                               details={"seconds": dns.seconds, "addresses": list(dns.addresses[:8])}))
    else:
        report.add(CheckResult("network.dns", "fail", f"{net.host} does not resolve: {dns.error}",
                               hint_for(Reason.DNS), {"reason": str(dns.reason)}))
        for later in ("network.tcp", "network.tls", "http.api"):
            report.add(_skip(later, "network.dns"))
        return False
    tcp = net.tcp
    assert tcp is not None
    if tcp.ok:
        report.add(CheckResult("network.tcp", "ok", f"connected to {tcp.peer} in {tcp.seconds * 1000:.1f} ms",
                               details={"seconds": tcp.seconds}))
    else:
        detail = str(tcp.detail) if tcp.detail is not None else "error"
        summary = (f"nothing listens on {net.host}:{net.port} (connection refused)" if detail == "refused"
                   else f"cannot connect to {net.host}:{net.port}: {detail}")
        hint = hint_for(tcp.reason or Reason.CONNECT)
        if detail == "refused":
            hint = (f"Is ComfyUI running, and on port {net.port}? ComfyUI's default is 8188 "
                    "(`python main.py --port 8188`); check `ss -ltnp | grep python`.")
        report.add(CheckResult("network.tcp", "fail", summary, hint,
                               {"reason": str(tcp.reason), "detail": detail}))
        for later in ("network.tls", "http.api"):
            report.add(_skip(later, "network.tcp"))
        return False
    if net.uses_tls:
        tls = net.tls
        assert tls is not None
        cert = tls.cert
        details: dict[str, Any] = {"protocol": tls.protocol, "seconds": tls.seconds}
        if cert is not None:
            details.update({"subject": cert.subject_cn, "issuer": cert.issuer, "days_left": cert.days_left,
                            "not_after": cert.not_after})
        if not tls.ok:
            problem = str(tls.problem) if tls.problem is not None else "handshake_failed"
            report.add(CheckResult("network.tls", "fail", f"TLS failed: {problem} ({tls.error})",
                                   hint_for(Reason.TLS), {"reason": "tls", "problem": problem, **details}))
            report.add(_skip("http.api", "network.tls"))
            return False
        if cert is not None and cert.days_left is not None and cert.days_left < EXPIRY_WARN_DAYS:
            report.add(CheckResult("network.tls", "warn", f"certificate expires in {cert.days_left:.1f} days",
                                   "Renew the certificate (certbot renew / your CA) before it expires.", details))
        else:
            left = f", expires in {cert.days_left:.0f} days" if cert and cert.days_left is not None else ""
            report.add(CheckResult("network.tls", "ok", f"{tls.protocol} verified{left}", details=details))
    return True


def _http_failure(failure: Failure, result_body: Any) -> CheckResult:
    status = failure.status
    if failure.reason is Reason.SERVER_ERROR and status in {502, 503, 504}:
        return _fail("http.api", failure, f"a proxy answers HTTP {status}: the upstream ComfyUI is down or "
                     "unreachable from the proxy", status=status)
    if failure.reason is Reason.AUTH:
        return CheckResult("http.api", "fail", "401 from an authenticating proxy in front of ComfyUI",
                           "ComfyUI has no authentication of its own: give comfywatch the proxy's credentials "
                           "(URL userinfo, headers_file or bearer_token_file).", {"reason": "auth", "status": 401})
    if failure.reason is Reason.FORBIDDEN:
        return CheckResult("http.api", "fail", "403 Forbidden (origin check or proxy rules)",
                           "ComfyUI answers 403 with an empty body when an Origin header's host differs from "
                           "Host (loopback servers); a proxy may add Origin or deny this client. Remove the "
                           "Origin header in the proxy, start ComfyUI with --enable-cors-header, or allow this "
                           "host in the proxy.", {"reason": "forbidden", "status": 403})
    if failure.reason is Reason.INVALID_RESPONSE:
        return _fail("http.api", failure, "something answers on that port, but it is not ComfyUI's "
                     "/system_stats JSON (wrong service, or a proxy's page)")
    return _fail("http.api", failure)


async def _websocket_check(runtime: TargetRuntime, api: LocalApi, timeout: float) -> CheckResult:
    from websockets.asyncio.client import connect

    from comfywatch.errors import classify_exception

    url = api.ws_url("comfywatch-doctor-" + uuid.uuid4().hex)
    ssl_ctx = ssl_context_for(runtime.config)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            async with connect(url, additional_headers=api.ws_headers(), proxy=None, max_size=16 * 2**20,
                               ssl=ssl_ctx if url.startswith("wss:") and not isinstance(ssl_ctx, bool) else None,
                               open_timeout=timeout, ping_interval=None, compression=None) as ws:
                opened = time.perf_counter() - started
                while True:
                    message = await ws.recv()
                    if isinstance(message, str) and parse_ws_text(message).type == "status":
                        break
    except TimeoutError:
        return CheckResult("websocket.upgrade", "fail", "no status frame arrived over /ws",
                           "The socket opened (or hung) but ComfyUI never sent its first 'status' frame: a proxy "
                           "may buffer the stream. " + NGINX_WEBSOCKET_HINT, {"reason": "timeout"})
    except Exception as exc:
        failure = classify_exception(exc)
        if failure.status is not None and failure.status not in {401, 403}:
            return CheckResult("websocket.upgrade", "fail", f"the /ws upgrade was answered with HTTP "
                               f"{failure.status} instead of 101", NGINX_WEBSOCKET_HINT,
                               {"reason": str(failure.reason), "status": failure.status})
        return _fail("websocket.upgrade", failure)
    return CheckResult("websocket.upgrade", "ok", f"/ws upgraded in {opened * 1000:.1f} ms and sent status",
                       details={"seconds": opened})


def _server_checks(report: TargetReport, stats: SystemStats, result: HttpResult, credentials_used: bool) -> None:
    report.add(CheckResult("server.version", "ok", f"ComfyUI {stats.comfyui_version}, Python "
                           f"{stats.python_version.split(' ')[0]}, torch {stats.pytorch_version}",
                           details={"version": stats.comfyui_version}))
    devices = stats.devices
    if not devices:
        report.add(CheckResult("server.device", "warn", "no torch device reported", None))
    for device in devices[:4]:
        if not device.vram_meaningful:
            report.add(CheckResult("server.device", "warn", f"device {device.name} is {device.type}",
                                   CPU_DEVICE_HINT.format(kind=device.type), {"type": device.type}))
            continue
        total, free = device.vram_total or 0, device.vram_free or 0
        share = free / total if total else 0.0
        status: Status = "warn" if total and share < 0.10 else "ok"
        report.add(CheckResult("server.device", status, f"{device.name}: {free / 2**30:.1f} of "
                               f"{total / 2**30:.1f} GiB VRAM free",
                               hint_for(Reason.OOM) if status == "warn" else None,
                               {"type": device.type, "vram_free": free, "vram_total": total}))
    ram_share = stats.ram_free / stats.ram_total if stats.ram_total else 0.0
    report.add(CheckResult("server.memory", "warn" if ram_share < 0.10 else "ok",
                           f"{stats.ram_free / 2**30:.1f} of {stats.ram_total / 2**30:.1f} GiB RAM available",
                           "Little RAM left: models offloaded from VRAM need RAM; close other processes."
                           if ram_share < 0.10 else None))
    if stats.listens_on_all_interfaces and not credentials_used:
        report.add(CheckResult("server.exposure", "warn", "listening on all interfaces with no authentication",
                               EXPOSED_HINT, {"argv_has_listen": True}))
    else:
        report.add(CheckResult("server.exposure", "ok", "not exposed without authentication"))
    date = result.headers.get("Date")
    if date:
        try:
            server_time = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            server_time = None
        if server_time is not None:
            skew = server_time - time.time()
            # The Date header has 1 s resolution: only a skew beyond a few seconds is meaningful.
            if abs(skew) > 5:
                report.add(CheckResult("server.clock", "warn", f"server clock is {skew:+.0f} s off this host's",
                                       "Run NTP (systemd-timesyncd/chrony) on both hosts: job timestamps and "
                                       "durations come from the server's clock.", {"skew_seconds": skew}))
            else:
                report.add(CheckResult("server.clock", "ok", f"clock skew {skew:+.0f} s",
                                       details={"skew_seconds": skew}))


async def _queue_and_history(report: TargetReport, api: LocalApi) -> None:
    try:
        snapshot = await api.queue()
    except RequestFailed as failed:
        report.add(_fail("server.queue", failed.failure))
    else:
        running, pending = len(snapshot.running), len(snapshot.pending)
        if pending and not running:
            report.add(CheckResult("server.queue", "warn", f"{pending} pending and nothing running",
                                   "The worker is not consuming the queue: the prompt worker thread may have died "
                                   "or be blocked; check the ComfyUI log and restart it.",
                                   {"running": running, "pending": pending}))
        elif pending > 20:
            report.add(CheckResult("server.queue", "warn", f"backlog: {pending} pending",
                                   "Jobs arrive faster than this server runs them: add workers or lower load.",
                                   {"running": running, "pending": pending}))
        else:
            report.add(CheckResult("server.queue", "ok", f"{running} running, {pending} pending",
                                   details={"running": running, "pending": pending}))
    try:
        await api.jobs(1)
        report.add(CheckResult("server.jobs_api", "ok", "/api/jobs available"))
    except RequestFailed as failed:
        if failed.failure.reason is Reason.NOT_FOUND:
            report.add(CheckResult("server.jobs_api", "warn", "no /api/jobs on this server", JOBS_API_HINT))
        else:
            report.add(_fail("server.jobs_api", failed.failure))
    try:
        entries = await api.history(100)
    except RequestFailed as failed:
        report.add(_fail("server.failures", failed.failure))
        return
    failed_entries = [e for e in entries if e.outcome is Outcome.FAILED and e.failure_reason is not Reason.INTERRUPTED]
    ooms = [e for e in failed_entries if e.failure_reason is Reason.OOM]
    details = {"recent": len(entries), "failed": len(failed_entries), "oom": len(ooms)}
    if ooms:
        report.add(CheckResult("server.failures", "warn", f"{len(ooms)} out-of-memory failures in the last "
                               f"{len(entries)} jobs", hint_for(Reason.OOM), details))
    elif failed_entries:
        kinds = sorted({e.exception_type or "error" for e in failed_entries})[:5]
        report.add(CheckResult("server.failures", "warn", f"{len(failed_entries)} of the last {len(entries)} jobs "
                               f"failed ({', '.join(kinds)})", hint_for(Reason.EXECUTION_ERROR), details))
    else:
        report.add(CheckResult("server.failures", "ok", f"no failures in the last {len(entries)} jobs",
                               details=details))


async def _canary_check(report: TargetReport, runtime: TargetRuntime, api: LocalApi, timeout: float) -> None:
    from comfywatch.canary_cli import format_phases
    from comfywatch.checks.canary import CanaryRunner
    from comfywatch.workflows import load_workflow

    workflow = load_workflow("builtin:preview-image", "preview-image")
    runner = CanaryRunner(api, workflow, timeout=timeout, when_busy="queue", ssl_context=ssl_context_for(runtime.config))
    result = await runner.run()
    details = result.as_dict()
    if result.ok:
        report.add(CheckResult("canary.run", "ok", f"preview-image canary ok in {result.phases['total'] * 1000:.0f} ms",
                               details=details | {"table": format_phases(result)}))
    else:
        reason = result.reason or Reason.INVALID_RESPONSE
        report.add(CheckResult("canary.run", "fail", f"canary failed: {reason}: {result.detail}", hint_for(reason),
                               details | {"table": format_phases(result)}))


async def _lint_check(report: TargetReport, api: LocalApi, workflow_path: str) -> None:
    from comfywatch.lint import WorkflowFormat, detect_format, lint_workflow

    try:
        workflow = json.loads(Path(workflow_path).read_text(encoding="utf-8"))
    except OSError as exc:
        report.add(CheckResult("workflow.lint", "fail", f"cannot read {workflow_path}: {exc.strerror}"))
        return
    except (ValueError, RecursionError):
        report.add(CheckResult("workflow.lint", "fail", f"{workflow_path} is not valid JSON"))
        return
    if detect_format(workflow) is WorkflowFormat.UI:
        report.add(CheckResult("workflow.lint", "fail", "this is a UI-format workflow, not API format",
                               'In ComfyUI enable the dev mode options and export it with "Save (API Format)".'))
        return
    try:
        object_info = await api.object_info()
    except RequestFailed as failed:
        report.add(_fail("workflow.lint", failed.failure))
        return
    problems = lint_workflow(workflow, object_info)
    if not problems:
        report.add(CheckResult("workflow.lint", "ok", f"{Path(workflow_path).name}: no problems found"))
        return
    report.add(CheckResult("workflow.lint", "fail", f"{len(problems)} problem(s) in {Path(workflow_path).name}",
                           hint_for(Reason.VALIDATION),
                           {"problems": [{"node_id": p.node_id, "class_type": p.class_type, "code": p.code,
                                          "message": p.message, "fix": p.fix} for p in problems[:100]],
                            "lines": [f"{p.line} -> {p.fix}" for p in problems[:100]]}))


async def _local_target(runtime: TargetRuntime, args: DoctorOptions) -> TargetReport:
    target = runtime.config
    report = TargetReport(target.name, target.kind, target.public_url)
    api = runtime.local
    assert api is not None
    net = await probe_url(target.public_url or target.url, timeout=args.timeout,
                          verify=not target.tls_insecure_skip_verify,
                          ca_file=str(target.tls_ca_file) if target.tls_ca_file else None)
    if not _network_checks(report, net):
        for later in ("websocket.upgrade", "server", "canary.run"):
            report.add(_skip(later, "network"))
        return report
    try:
        stats, result = await api.system_stats(record_phases=True)
    except RequestFailed as failed:
        report.add(_http_failure(failed.failure, failed.body))
        for later in ("websocket.upgrade", "server", "canary.run"):
            report.add(_skip(later, "http.api"))
        return report
    phases = result.phases
    report.add(CheckResult("http.api", "ok", f"/system_stats answered in {result.seconds * 1000:.1f} ms",
                           details={"phases": None if phases is None else asdict(phases)}))
    report.add(await _websocket_check(runtime, api, args.timeout))
    credentials_used = bool(runtime.credentials.headers or runtime.credentials.basic_auth)
    _server_checks(report, stats, result, credentials_used)
    await _queue_and_history(report, api)
    if args.workflow:
        await _lint_check(report, api, args.workflow)
    if args.no_canary:
        report.add(CheckResult("canary.run", "skipped", "skipped: --no-canary"))
    else:
        # Runs even when the WebSocket check failed: the canary then polls, and shows what still works.
        await _canary_check(report, runtime, api, max(args.timeout, 30.0))
    return report


# ---------------------------------------------------------------------------------------------------------
# Comfy Cloud.


async def _cloud_target(runtime: TargetRuntime, args: DoctorOptions) -> TargetReport:
    target = runtime.config
    report = TargetReport(target.name, target.kind, target.public_url)
    api = runtime.extras.get("cloud")
    assert isinstance(api, CloudApi)
    if not runtime.credentials.api_key:
        report.add(CheckResult("cloud.auth", "fail", "no API key configured",
                               "Create a key at platform.comfy.org/profile/api-keys and provide it with "
                               "COMFYWATCH_CLOUD_API_KEY, api_key_file or the systemd credential "
                               "comfywatch_cloud_api_key."))
        return report

    async def attempt(check_id: str, call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await call()
        except RequestFailed as failed:
            report.add(_fail(check_id, failed.failure))
        except RetryAfterActive as paused:
            report.add(CheckResult(check_id, "fail", f"rate limited: retry in {paused.remaining:.0f} s",
                                   hint_for(Reason.RATE_LIMITED), {"reason": "rate_limited"}))
        return None

    user = await attempt("cloud.auth", api.user)
    if user is None:
        for later in ("cloud.subscription", "cloud.funds", "cloud.balance", "cloud.concurrency"):
            report.add(_skip(later, "cloud.auth"))
        return report
    report.add(CheckResult("cloud.auth", "ok", f"API key valid (account status {user.status})"))
    status = await attempt("cloud.subscription", api.billing_status)
    if status is not None:
        active = status.is_active
        report.add(CheckResult("cloud.subscription", "ok" if active else "fail",
                               f"subscription {status.tier or 'none'} / {status.subscription_status or '?'}"
                               f" ({'active' if active else 'inactive'})", None if active else hint_for(Reason.PAYMENT),
                               {"tier": status.tier, "status": status.subscription_status}))
        report.add(CheckResult("cloud.funds", "ok" if status.has_funds else "fail",
                               "has funds" if status.has_funds else "no funds: jobs will be refused (402)",
                               None if status.has_funds else hint_for(Reason.PAYMENT)))
    balance = await attempt("cloud.balance", api.balance)
    if balance is not None:
        if balance.balance_usd is None:
            report.add(CheckResult("cloud.balance", "warn", "balance unknown (no balance fields in the answer)"))
        else:
            low = balance.balance_usd < 1.0
            report.add(CheckResult("cloud.balance", "warn" if low else "ok",
                                   f"balance ${balance.balance_usd:.2f}"
                                   + (f" (effective ${balance.effective_usd:.2f})" if balance.effective_usd is not None
                                      else ""),
                                   hint_for(Reason.PAYMENT) if low else None,
                                   {"balance_usd": balance.balance_usd, "effective_usd": balance.effective_usd}))
    features = await attempt("cloud.concurrency", api.features)
    if features is not None:
        queue = await attempt("cloud.queue", api.queue)
        running = len(queue.running) if queue is not None else None
        limit = features.max_concurrent_jobs
        report.add(CheckResult("cloud.concurrency", "ok",
                               f"plan allows {limit if limit is not None else '?'} concurrent jobs"
                               + (f", {running} running" if running is not None else ""),
                               details={"max_concurrent_jobs": limit, "running": running}))
    jobs = await attempt("cloud.recent_errors", lambda: api.jobs(100))
    if jobs is not None:
        payment = sum(1 for j in jobs.jobs if j.failure_reason is Reason.PAYMENT)
        failed = sum(1 for j in jobs.jobs if j.failure_reason is not None)
        report.add(CheckResult("cloud.recent_errors", "warn" if payment else "ok",
                               f"{failed} of the last {len(jobs.jobs)} jobs failed, {payment} for billing reasons",
                               hint_for(Reason.PAYMENT) if payment else None,
                               {"failed": failed, "payment": payment}))
    return report


# ---------------------------------------------------------------------------------------------------------
# Entry points.


@dataclass
class DoctorOptions:
    timeout: float = 10.0
    workflow: str | None = None
    no_canary: bool = False
    strict: bool = False


def _targets(args: argparse.Namespace) -> tuple[Config, list[TargetConfig]]:
    if args.cloud:
        config = load_config(None, {})
        url = args.url or "https://cloud.comfy.org"
        return config, [TargetConfig(name="cloud", kind="cloud", url=url)]
    if args.url:
        parts = urlsplit(args.url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(["--url: expected http(s)://host[:port]"], "command line")
        config = load_config(None, {})
        return config, [TargetConfig(name=parts.hostname, kind="local", url=args.url)]
    config = load_config(Path(args.config) if args.config else None)
    targets = [t for t in config.targets if args.target is None or t.name == args.target]
    if not targets:
        raise ConfigError([f"no target named {args.target!r}"], "command line")
    return config, targets


async def run_doctor(config: Config, targets: list[TargetConfig], options: DoctorOptions) -> Report:
    reports = []
    for target in targets:
        runtime = build_runtime(config, target)
        try:
            if target.kind == "cloud":
                reports.append(await _cloud_target(runtime, options))
            else:
                reports.append(await _local_target(runtime, options))
        finally:
            await runtime.close()
    return Report(reports, strict=options.strict)


def render_text(report: Report, *, color: bool) -> str:
    from io import StringIO

    from rich.console import Console

    buffer = StringIO()
    console = Console(file=buffer, force_terminal=color, color_system="standard" if color else None,
                      width=110, highlight=False, soft_wrap=True)
    styles = {"ok": "green", "warn": "yellow", "fail": "red", "skipped": "dim"}
    for target in report.targets:
        console.print(f"[bold]{target.name}[/bold] ({target.kind}, {target.url})", markup=True)
        for check in target.checks:
            symbol = SYMBOLS[check.status]
            console.print(f"  [{styles[check.status]}]{symbol}[/] {check.id:<20} ", end="", markup=True)
            console.print(check.summary, markup=False)
            for line in check.details.get("lines", [])[:50]:
                console.print(f"      {line}", markup=False)
            if check.id == "canary.run" and check.status != "skipped" and "table" in check.details:
                for line in str(check.details["table"]).splitlines()[1:]:
                    console.print(f"    {line}", markup=False)
            if check.hint and check.status in {"warn", "fail"}:
                console.print(f"      fix: {check.hint}", markup=False, style="dim" if color else None)
    counts = {s: sum(1 for t in report.targets for c in t.checks if c.status == s) for s in SYMBOLS}
    verdict = "healthy" if report.ok else "problems found"
    console.print(f"{verdict}: {counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed, "
                  f"{counts['skipped']} skipped", markup=False)
    return scrub(buffer.getvalue())


def doctor_main(args: argparse.Namespace) -> int:
    from comfywatch.logs import configure_logging

    # Logs go to stderr and stay quiet: stdout is the report.
    configure_logging(fmt="console", level="error", stream=sys.stderr)
    try:
        config, targets = _targets(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        return 2
    options = DoctorOptions(timeout=args.timeout, workflow=args.workflow, no_canary=args.no_canary,
                            strict=args.strict)
    report = asyncio.run(run_doctor(config, targets, options))
    if args.json:
        print(report.to_json())
    else:
        import os

        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        sys.stdout.write(render_text(report, color=color))
    return 0 if report.ok else 1
