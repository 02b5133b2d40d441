"""``comfywatch doctor``: run every check once, in dependency order, and say what to fix.

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
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from comfywatch.checks import catalog as catalog_check
from comfywatch.checks import cloud as cloud_check
from comfywatch.checks import jobs as jobs_check
from comfywatch.checks import network as network_check
from comfywatch.checks import queue as queue_check
from comfywatch.checks import system as system_check
from comfywatch.checks import websocket as websocket_check
from comfywatch.checks.canary import CanaryRunner
from comfywatch.checks.context import TargetContext, build_context, ssl_context_for
from comfywatch.cli.render import format_phases, json_document, printable
from comfywatch.clients.cloud import RetryAfterActive
from comfywatch.clients.http import HttpResult, RequestFailed
from comfywatch.clients.local import LocalApi, server_time
from comfywatch.clients.net import EXPIRY_WARN_DAYS, NetReport
from comfywatch.config import (
    DEFAULT_CLOUD_URL,
    Config,
    ConfigError,
    TargetConfig,
    config_file,
    load_config,
    resolve_credentials,
    target_from_url_option,
)
from comfywatch.errors import (
    DIAGNOSIS_HINTS,
    TLS_HINTS,
    Diagnosis,
    Failure,
    Reason,
    TlsProblem,
    hint_for,
)
from comfywatch.logs import configure_logging
from comfywatch.parse.cloud import trusted_balance_usd
from comfywatch.parse.history import Outcome
from comfywatch.parse.system import SystemStats
from comfywatch.workflows import (
    WorkflowError,
    WorkflowFileUnreadable,
    load_workflow,
    read_workflow_file,
    workflow_files,
)
from comfywatch.workflows.lint import NodeSpec, WorkflowFormat, detect_format, lint_workflow, parse_object_info

__all__ = ["CheckResult", "Report", "TargetReport", "doctor_main", "run_doctor"]

Status = Literal["ok", "warn", "fail", "skipped"]
SYMBOLS: dict[str, str] = {"ok": "✓", "warn": "!", "fail": "✗", "skipped": "-"}

#: How long after server.queue saw jobs waiting with nothing running they must still wait for the worker to
#: count as stuck (and the canary not to be queued behind them).
STUCK_CONFIRM_S = 2.0
#: The Date header has 1 s resolution and the request takes time: only a larger skew is meaningful.
CLOCK_SKEW_WARN_S = 5.0


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
        return json_document({"ok": self.ok, "strict": self.strict, "targets": [asdict(t) for t in self.targets]})


def _fail(check_id: str, failure: Failure, summary: str | None = None, **details: Any) -> CheckResult:
    return CheckResult(check_id, "fail", summary or f"{failure.reason}: {failure.detail}", failure.hint,
                       {"reason": str(failure.reason), **details})


def _skip(check_id: str, because: str) -> CheckResult:
    return CheckResult(check_id, "skipped", f"skipped: {because} failed")


# ---------------------------------------------------------------------------------------------------------
# Local ComfyUI.


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _skip_after(report: TargetReport, failed: str, *later: str) -> None:
    for check_id in later:
        report.add(_skip(check_id, failed))


def _tls_check(report: TargetReport, net: NetReport) -> bool:
    tls = net.tls
    assert tls is not None
    cert = tls.cert
    details: dict[str, Any] = {"protocol": tls.protocol, "seconds": tls.seconds, "server_hostname": tls.server_hostname}
    facts = ""
    if cert is not None:
        details.update({"subject": cert.subject_cn, "sans": list(cert.sans), "issuer": cert.issuer,
                        "days_left": cert.days_left, "not_after": cert.not_after, "self_signed": cert.self_signed})
        names = ", ".join(cert.sans[:4]) or cert.subject_cn or "?"
        when = ("" if cert.days_left is None else f", expired {-cert.days_left:.0f} days ago"
                if cert.days_left < 0 else f", expires in {cert.days_left:.0f} days")
        facts = f"; certificate for {names} issued by {cert.issuer or '?'}{when}"
    if not tls.ok:
        problem = str(tls.problem) if tls.problem is not None else "handshake_failed"
        hint = TLS_HINTS.get(TlsProblem(problem), hint_for(tls.reason or Reason.TLS))
        report.add(CheckResult("network.tls", "fail", f"TLS failed: {problem} ({tls.error}){facts}", hint,
                               {"reason": str(tls.reason or Reason.TLS), "problem": problem, **details}))
        return False
    checked = (f"certificate verified for {tls.server_hostname}" if tls.verified
                else "certificate NOT verified (tls_insecure_skip_verify)")
    if cert is not None and cert.days_left is not None and cert.days_left < 0:
        # Only reachable without verification, which would have refused an expired certificate.
        report.add(CheckResult("network.tls", "warn", f"{checked}; it expired {-cert.days_left:.1f} days ago",
                               TLS_HINTS[TlsProblem.EXPIRED], details))
    elif cert is not None and cert.days_left is not None and cert.days_left < EXPIRY_WARN_DAYS:
        report.add(CheckResult("network.tls", "warn", f"certificate expires in {cert.days_left:.1f} days "
                               f"(warning below {EXPIRY_WARN_DAYS:.0f})",
                               DIAGNOSIS_HINTS[Diagnosis.CERT_EXPIRING], details))
    else:
        left = f", expires in {cert.days_left:.0f} days" if cert and cert.days_left is not None else ""
        report.add(CheckResult("network.tls", "ok", f"{tls.protocol} handshake in {_ms(tls.seconds)}, "
                               f"{checked}{left}", details=details))
    return True


def _network_checks(report: TargetReport, net: NetReport) -> bool:
    """DNS, TCP and (https) TLS; False, with the later network checks marked skipped, on the first failure."""
    dns = net.dns
    after_tcp = ("network.tls", "http.api") if net.uses_tls else ("http.api",)
    if dns.ok:
        report.add(CheckResult("network.dns", "ok", f"{net.host} resolves to {', '.join(dns.addresses[:3])} "
                               f"in {_ms(dns.seconds)}",
                               details={"seconds": dns.seconds, "addresses": list(dns.addresses[:8])}))
    else:
        report.add(CheckResult("network.dns", "fail", f"{net.host} does not resolve: {dns.error}",
                               hint_for(Reason.DNS), {"reason": str(dns.reason)}))
        _skip_after(report, "network.dns", "network.tcp", *after_tcp)
        return False
    tcp = net.tcp
    assert tcp is not None
    if tcp.ok:
        report.add(CheckResult("network.tcp", "ok", f"connected to {tcp.peer} in {_ms(tcp.seconds)}",
                               details={"seconds": tcp.seconds}))
    else:
        detail = str(tcp.detail) if tcp.detail is not None else "error"
        summary = (f"nothing listens on {net.host}:{net.port} (connection refused)" if detail == "refused"
                   else f"cannot connect to {net.host}:{net.port}: {tcp.error or detail}")
        hint = hint_for(tcp.reason or Reason.CONNECT)
        if detail == "refused":
            hint = DIAGNOSIS_HINTS[Diagnosis.NOTHING_LISTENING].format(port=net.port)
        report.add(CheckResult("network.tcp", "fail", summary, hint,
                               {"reason": str(tcp.reason), "detail": detail}))
        _skip_after(report, "network.tcp", *after_tcp)
        return False
    if net.uses_tls and not _tls_check(report, net):
        _skip_after(report, "network.tls", "http.api")
        return False
    return True


_TITLE = re.compile(rb"<title[^>]*>([^<]{1,200})</title>", re.IGNORECASE)


def describe_answer(result: HttpResult) -> str:
    """What answered instead of ComfyUI, in a few words: status, content type, server, an HTML page's title.

    Never quotes a body beyond an HTML ``<title>`` (cut to 60 characters): a body may hold anything.
    """
    parts = [f"HTTP {result.status}", result.content_type or "no content type"]
    server = result.headers.get("Server")
    if server:
        parts.append(f"Server: {server[:60]}")
    title = _TITLE.search(result.body[:65536])
    if title:
        text = " ".join(title.group(1).decode("utf-8", "replace").split())[:60]
        parts.append(f"page title {text!r}")
    elif "json" in result.content_type:
        try:
            body = json.loads(result.body)
        except (ValueError, RecursionError):
            parts.append("body is not valid JSON")
        else:
            if isinstance(body, dict):
                keys = sorted(str(k)[:20] for k in body)[:6]
                parts.append("JSON keys " + ", ".join(keys) if keys else "an empty JSON object")
            else:
                parts.append(f"a JSON {type(body).__name__}")
    return ", ".join(parts)


def _http_failure(failure: Failure, answer: str | None, credentials_used: bool, timeout: float) -> CheckResult:
    """Tell apart the usual ways /system_stats fails: dead upstream, auth proxy, origin check, wrong service."""
    status = failure.status
    details: dict[str, Any] = {"reason": str(failure.reason), "status": status}
    if answer:
        details["answer"] = answer
    seen = f" ({answer})" if answer else ""
    if failure.reason is Reason.SERVER_ERROR and status in {502, 503, 504}:
        return CheckResult("http.api", "fail", f"a proxy answers HTTP {status}: the upstream ComfyUI is down or "
                           f"unreachable from the proxy{seen}", DIAGNOSIS_HINTS[Diagnosis.PROXY_UPSTREAM_DOWN], details)
    if failure.reason is Reason.AUTH:
        if credentials_used:
            return CheckResult("http.api", "fail", f"401 from an authenticating proxy: the credentials were "
                               f"rejected{seen}", DIAGNOSIS_HINTS[Diagnosis.PROXY_CREDENTIALS_REJECTED], details)
        return CheckResult("http.api", "fail", f"401 from an authenticating proxy in front of ComfyUI{seen}",
                           DIAGNOSIS_HINTS[Diagnosis.PROXY_CREDENTIALS_MISSING], details)
    if failure.reason is Reason.FORBIDDEN:
        return CheckResult("http.api", "fail", f"403 Forbidden (origin check, proxy rules or credentials){seen}",
                           DIAGNOSIS_HINTS[Diagnosis.ORIGIN_OR_PROXY_FORBIDDEN], details)
    if failure.reason is Reason.TIMEOUT:
        return CheckResult("http.api", "fail", f"/system_stats did not answer within {timeout:g} s",
                           hint_for(Reason.TIMEOUT), details)
    if failure.reason is Reason.NOT_FOUND:
        return CheckResult("http.api", "fail", f"no /system_stats here{seen}: not ComfyUI, or the URL lacks the "
                           "reverse proxy's path prefix", hint_for(Reason.NOT_FOUND), details)
    if failure.reason is Reason.INVALID_RESPONSE:
        return CheckResult("http.api", "fail", "something answers on that port, but not with ComfyUI's "
                           f"/system_stats JSON{seen}: a wrong service, or a proxy's page",
                           DIAGNOSIS_HINTS[Diagnosis.NOT_COMFYUI], details)
    return _fail("http.api", failure, None, **({"answer": answer} if answer else {}))


async def _websocket_check(runtime: TargetContext, timeout: float) -> CheckResult:
    """``websocket.upgrade`` from the websocket check's one attempt."""
    seen = await websocket_check.observe(runtime, timeout)
    if seen.status_frame:
        return CheckResult("websocket.upgrade", "ok", f"/ws upgraded in {_ms(seen.opened_seconds)} and sent status",
                           details={"seconds": seen.opened_seconds})
    if seen.timed_out and seen.opened_seconds is None:
        return CheckResult("websocket.upgrade", "fail", f"the /ws upgrade got no answer within {timeout:g} s",
                           DIAGNOSIS_HINTS[Diagnosis.WEBSOCKET_UPGRADE_HELD], {"reason": "timeout"})
    if seen.timed_out:
        return CheckResult("websocket.upgrade", "fail", f"/ws upgraded, but no status frame arrived within "
                           f"{timeout:g} s", DIAGNOSIS_HINTS[Diagnosis.WEBSOCKET_SILENT],
                           {"reason": "timeout", "seconds": seen.opened_seconds})
    assert seen.failure is not None
    status = seen.http_status
    if status in {401, 403}:
        return _fail("websocket.upgrade", seen.failure, f"the /ws upgrade was refused with HTTP {status}",
                     status=status)
    if status is not None:
        return CheckResult("websocket.upgrade", "fail", f"the /ws upgrade was answered with HTTP {status} "
                           "instead of 101 Switching Protocols", DIAGNOSIS_HINTS[Diagnosis.WEBSOCKET_UPGRADE_DROPPED],
                           {"reason": str(seen.failure.reason), "status": status})
    return _fail("websocket.upgrade", seen.failure)


def _server_checks(report: TargetReport, stats: SystemStats, result: HttpResult, credentials_used: bool,
                   received_at: float) -> None:
    """Version, devices, memory headroom, exposure and clock skew from one /system_stats answer.

    ``received_at`` is this host's clock when the answer arrived (its ``Date`` header is compared to it).
    """
    report.add(CheckResult("server.version", "ok", f"ComfyUI {stats.comfyui_version}, Python "
                           f"{stats.python_version.split(' ')[0]}, torch {stats.pytorch_version}",
                           details={"version": stats.comfyui_version}))
    devices = stats.devices
    if not devices:
        report.add(CheckResult("server.device", "warn", "no torch device reported",
                               DIAGNOSIS_HINTS[Diagnosis.NO_DEVICE]))
    for device in devices[:4]:
        if not device.vram_meaningful:
            report.add(CheckResult("server.device", "warn", f"torch device {device.name!r} has type {device.type}: "
                                   "no GPU in use", DIAGNOSIS_HINTS[Diagnosis.CPU_DEVICE].format(kind=device.type),
                                   {"type": device.type, "name": device.name}))
            continue
        total, free = device.vram_total or 0, device.vram_free or 0
        share = free / total if total else 0.0
        status: Status = "warn" if total and share < 0.10 else "ok"
        report.add(CheckResult("server.device", status, f"{device.name}: {free / 2**30:.1f} of "
                               f"{total / 2**30:.1f} GiB VRAM free",
                               hint_for(Reason.OOM) if status == "warn" else None,
                               {"type": device.type, "name": device.name, "vram_free": free, "vram_total": total}))
    ram_share = stats.ram_free / stats.ram_total if stats.ram_total else 0.0
    report.add(CheckResult("server.memory", "warn" if ram_share < 0.10 else "ok",
                           f"{stats.ram_free / 2**30:.1f} of {stats.ram_total / 2**30:.1f} GiB RAM available",
                           DIAGNOSIS_HINTS[Diagnosis.LOW_RAM] if ram_share < 0.10 else None,
                           {"ram_free": stats.ram_free, "ram_total": stats.ram_total}))
    if stats.listens_on_all_interfaces and not credentials_used:
        report.add(CheckResult("server.exposure", "warn", "listening on all interfaces with no authentication",
                               DIAGNOSIS_HINTS[Diagnosis.EXPOSED], {"argv_has_listen": True}))
    else:
        report.add(CheckResult("server.exposure", "ok", "not exposed without authentication"))
    date = server_time(result.headers.get("Date"))
    if date is not None:
        # Date is truncated to whole seconds: on average the server's clock was half a second further.
        skew = date + 0.5 - received_at
        if abs(skew) > CLOCK_SKEW_WARN_S:
            report.add(CheckResult("server.clock", "warn", f"server clock is {skew:+.0f} s off this host's",
                                   DIAGNOSIS_HINTS[Diagnosis.CLOCK_SKEW], {"skew_seconds": skew}))
        else:
            report.add(CheckResult("server.clock", "ok", f"clock skew {round(skew) or 0:+d} s (within "
                                   f"±{CLOCK_SKEW_WARN_S:.0f} s)", details={"skew_seconds": skew}))


@dataclass(frozen=True)
class IdleQueue:
    """What ``server.queue`` read when it found pending jobs and nothing running."""

    pending: frozenset[str]
    read_at: float  # time.monotonic()


async def judge_queue(report: TargetReport, ctx: TargetContext) -> IdleQueue | None:
    """``server.queue`` from one read of the queue check; returns what it read when jobs were pending with
    nothing running. One read, not the daemon's stall tracking over many polls: doctor looks once."""
    try:
        snapshot = (await queue_check.observe(ctx)).snapshot
    except RequestFailed as failed:
        report.add(_fail("server.queue", failed.failure))
        return None
    running, pending = snapshot.running_count, snapshot.pending_count
    if pending and not running:
        report.add(CheckResult("server.queue", "warn", f"{pending} pending and nothing running",
                               DIAGNOSIS_HINTS[Diagnosis.WORKER_STUCK], {"running": running, "pending": pending}))
        return IdleQueue(frozenset(item.prompt_id for item in snapshot.pending), time.monotonic())
    if pending > 20:
        report.add(CheckResult("server.queue", "warn", f"backlog: {pending} pending",
                               DIAGNOSIS_HINTS[Diagnosis.QUEUE_BACKLOG], {"running": running, "pending": pending}))
    else:
        report.add(CheckResult("server.queue", "ok", f"{running} running, {pending} pending",
                               details={"running": running, "pending": pending}))
    return None


async def stuck_queue(ctx: TargetContext, idle: IdleQueue) -> CheckResult | None:
    """``canary.run``'s result when the jobs ``server.queue`` saw waiting with nothing running still wait a
    moment later: a canary would only time out behind them and blame the server's speed. None (run the canary)
    when the worker has taken them, or the queue cannot be read again."""
    # A worker between two jobs (freeing memory, collecting garbage) also shows pending work and nothing
    # running, for a moment: only the same jobs still waiting a little later mean it is not consuming.
    await asyncio.sleep(max(0.0, idle.read_at + STUCK_CONFIRM_S - time.monotonic()))
    try:
        snapshot = (await queue_check.observe(ctx)).snapshot
    except RequestFailed:
        return None
    if snapshot.running_count or idle.pending.isdisjoint(item.prompt_id for item in snapshot.pending):
        return None
    waited = time.monotonic() - idle.read_at
    pending = snapshot.pending_count
    return CheckResult("canary.run", "fail", f"not run: the worker is not consuming the queue ({pending} jobs still "
                       f"pending after {waited:.1f} s with nothing running): a canary would wait behind them",
                       DIAGNOSIS_HINTS[Diagnosis.WORKER_STUCK],
                       {"running": 0, "pending": pending, "waited_seconds": waited})


async def _custom_nodes(report: TargetReport, ctx: TargetContext) -> None:
    """``server.custom_nodes`` from the catalog check's read of the server's log."""
    try:
        log = await catalog_check.observe_log(ctx)
    except RequestFailed as failed:
        report.add(_fail("server.custom_nodes", failed.failure))
        return
    if log is None:
        report.add(CheckResult("server.custom_nodes", "skipped", "no /internal/logs/raw here (ComfyUI before 0.3, "
                               "or a proxy that forwards only /api): cannot tell which node packs imported"))
        return
    if not log.startup_seen:
        report.add(CheckResult("server.custom_nodes", "skipped", "the server's log no longer holds its start-up "
                               "(it keeps the last few hundred lines): cannot tell which node packs imported"))
        return
    custom = log.custom_failures
    builtin = [f for f in log.failures if f.builtin]
    details: dict[str, Any] = {"imported": log.imported,
                               "failed": [{"pack": f.pack, "builtin": f.builtin, "error": f.error}
                                          for f in log.failures],
                               "lines": [f"{f.pack}: {f.error or 'import failed'}" for f in (*custom, *builtin)]}
    if custom:
        names = ", ".join(f.pack for f in custom[:5]) + (f" and {len(custom) - 5} more" if len(custom) > 5 else "")
        report.add(CheckResult("server.custom_nodes", "fail", f"{len(custom)} custom node pack(s) failed to import "
                               f"at start: {names}", DIAGNOSIS_HINTS[Diagnosis.CUSTOM_NODES_FAILED], details))
    elif builtin:
        report.add(CheckResult("server.custom_nodes", "warn", f"{log.imported} custom node pack(s) imported; "
                               f"{len(builtin)} of ComfyUI's optional node modules did not: "
                               + ", ".join(f.pack for f in builtin[:5]),
                               DIAGNOSIS_HINTS[Diagnosis.BUILTIN_NODES_FAILED], details))
    else:
        report.add(CheckResult("server.custom_nodes", "ok", f"{log.imported} custom node pack(s) imported, none "
                               "failed", details={"imported": log.imported, "failed": []}))


async def _jobs_and_history(report: TargetReport, ctx: TargetContext) -> None:
    """``server.jobs_api`` and ``server.failures``: the jobs check's observations, judged once. The daemon counts
    jobs as they finish; doctor judges the last 100 in history."""
    try:
        if await jobs_check.has_jobs_api(ctx):
            report.add(CheckResult("server.jobs_api", "ok", "/api/jobs available"))
        else:
            report.add(CheckResult("server.jobs_api", "warn", "no /api/jobs on this server",
                                   DIAGNOSIS_HINTS[Diagnosis.NO_JOBS_API]))
    except RequestFailed as failed:
        report.add(_fail("server.jobs_api", failed.failure))
    try:
        entries = await jobs_check.users_history(ctx, 100)
    except RequestFailed as failed:
        report.add(_fail("server.failures", failed.failure))
        return
    if not entries:
        report.add(CheckResult("server.failures", "ok", "no finished jobs in history yet",
                               details={"recent": 0, "failed": 0, "oom": 0}))
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


async def _canary_check(report: TargetReport, runtime: TargetContext, api: LocalApi, timeout: float) -> None:
    workflow = load_workflow("builtin:preview-image", "preview-image")
    runner = CanaryRunner(api, workflow, timeout=timeout, when_busy="queue",
                          ssl_context=ssl_context_for(runtime.config))
    result = await runner.run()
    url = runtime.config.public_url
    details = result.as_dict() | {"table": format_phases(result, url)}
    if result.ok:
        report.add(CheckResult("canary.run", "ok", f"preview-image canary ok in {result.phases['total'] * 1000:.0f} ms",
                               details=details))
    else:
        reason = result.reason or Reason.INVALID_RESPONSE
        report.add(CheckResult("canary.run", "fail", f"canary failed: {reason}: {result.detail}",
                               hint_for(reason, url), details))


async def _lint_checks(report: TargetReport, api: LocalApi, workflow_path: str) -> None:
    """One ``workflow.lint`` per workflow ``--workflow`` names (a file, or a directory's ``*.json``), all against
    one read of ``/object_info`` (megabytes on a server with many node packs)."""
    try:
        files = workflow_files(Path(workflow_path))
    except WorkflowError as exc:  # readable when the command started: it changed since
        report.add(CheckResult("workflow.lint", "fail", str(exc), DIAGNOSIS_HINTS[Diagnosis.WORKFLOW_UNREADABLE]))
        return
    specs: dict[str, NodeSpec] | None = None
    for file in files:
        workflow = await _read_workflow(report, file)
        if workflow is None:
            continue
        if specs is None:
            try:
                specs = parse_object_info(await api.object_info(), strict=False)
            except RequestFailed as failed:
                report.add(_fail("workflow.lint", failed.failure))
                return
        _lint_result(report, file.name, workflow, specs)


async def _read_workflow(report: TargetReport, file: Path) -> Any:
    """The API-format workflow in *file*; None, with a failed ``workflow.lint`` saying why, if it is not one."""
    try:
        workflow = await asyncio.to_thread(read_workflow_file, file)
    except WorkflowFileUnreadable as exc:
        report.add(CheckResult("workflow.lint", "fail", f"cannot read {file}: {exc}",
                               DIAGNOSIS_HINTS[Diagnosis.WORKFLOW_UNREADABLE]))
        return None
    except (ValueError, RecursionError):
        report.add(CheckResult("workflow.lint", "fail", f"{file} is not valid JSON",
                               DIAGNOSIS_HINTS[Diagnosis.WORKFLOW_NOT_JSON]))
        return None
    if detect_format(workflow) is WorkflowFormat.UI:
        report.add(CheckResult("workflow.lint", "fail", f"{file.name}: this is a UI-format workflow, not API format",
                               DIAGNOSIS_HINTS[Diagnosis.WORKFLOW_UI_FORMAT]))
        return None
    return workflow


def _lint_result(report: TargetReport, name: str, workflow: Any, specs: dict[str, NodeSpec]) -> None:
    problems = lint_workflow(workflow, specs)
    if not problems:
        report.add(CheckResult("workflow.lint", "ok", f"{name}: no problems found"))
        return
    report.add(CheckResult("workflow.lint", "fail", f"{len(problems)} problem(s) in {name}: "
                           "ComfyUI would reject it (found before submitting)",
                           DIAGNOSIS_HINTS[Diagnosis.WORKFLOW_REJECTED],
                           {"problems": [{"node_id": p.node_id, "class_type": p.class_type, "code": p.code,
                                          "message": p.message, "fix": p.fix} for p in problems[:100]],
                            "lines": [f"{p.line} -> {p.fix}" for p in problems[:100]]}))


async def _peek(api: LocalApi) -> str | None:
    """Fetch /system_stats again without judging it, to say what answers there (None if nothing does)."""
    try:
        result = await api.http.request("GET", api.prefix + "/system_stats", endpoint="system_stats",
                                        expect_ok=False)
    except RequestFailed:
        return None
    return describe_answer(result)


def _http_phases(net: NetReport, result: HttpResult) -> dict[str, float | None]:
    """The phases of ``http.api``, for its summary and its details alike: the connection's steps as the
    network checks timed them, then the request's own (server processing, transfer)."""
    request = result.phases
    return {**network_check.connection_phases(net),
            "processing": None if request is None else request.processing,
            "transfer": None if request is None else request.transfer}


def canary_timeout(target: TargetConfig, timeout: float) -> float:
    """The canary's deadline: the target's ``[canary] timeout`` when the config sets one, else >= 30 s."""
    if "timeout" in target.canary.model_fields_set:
        return target.canary.timeout
    return max(timeout, 30.0)


async def _local_target(runtime: TargetContext, args: DoctorOptions, report: TargetReport) -> None:
    api = runtime.local
    assert api is not None
    later = ("websocket.upgrade", "server", *(("workflow.lint",) if args.workflow else ()), "canary.run")
    net = await network_check.observe(runtime, verify=True)
    if not _network_checks(report, net):
        _skip_after(report, "network", *later)
        return
    credentials_used = bool(runtime.credentials.headers or runtime.credentials.basic_auth)
    try:
        system = await system_check.observe(runtime)
    except RequestFailed as failed:
        failure = failed.failure
        # A body over the cap would only be read again; transport failures have no answer to describe.
        answer = None
        if failure.status is not None or (failure.reason is Reason.INVALID_RESPONSE
                                          and "larger than" not in failure.detail):
            answer = await _peek(api)
        elif failure.reason is Reason.INVALID_RESPONSE:
            answer = failure.detail
        report.add(_http_failure(failure, answer, credentials_used, args.timeout))
        _skip_after(report, "http.api", *later)
        return
    received_at = time.time()
    phases = _http_phases(net, system.result)
    steps = [("connect", phases["connect"]), ("tls", phases["tls"]), ("server", phases["processing"]),
             ("transfer", phases["transfer"])]
    timing = ", ".join(f"{name} {_ms(value)}" for name, value in steps if value is not None)
    report.add(CheckResult("http.api", "ok", f"/system_stats answered in {_ms(system.result.seconds)}"
                           + (f" ({timing})" if timing else ""),
                           details={"seconds": system.result.seconds, "phases": phases}))
    report.add(await _websocket_check(runtime, args.timeout))
    _server_checks(report, system.stats, system.result, credentials_used, received_at)
    await _custom_nodes(report, runtime)
    idle = await judge_queue(report, runtime)
    await _jobs_and_history(report, runtime)
    if args.workflow:
        await _lint_checks(report, api, args.workflow)
    if args.no_canary:
        report.add(CheckResult("canary.run", "skipped", "skipped: --no-canary"))
    elif idle is not None and (stuck := await stuck_queue(runtime, idle)) is not None:
        report.add(stuck)
    else:
        # Runs even when the WebSocket check failed: the canary then polls, and shows what still works.
        await _canary_check(report, runtime, api, canary_timeout(runtime.config, args.timeout))


# ---------------------------------------------------------------------------------------------------------
# Comfy Cloud.

async def _cloud_target(runtime: TargetContext, args: DoctorOptions, report: TargetReport) -> None:
    api = runtime.cloud_api()
    if not runtime.credentials.api_key:
        report.add(CheckResult("cloud.auth", "fail", "no API key configured",
                               DIAGNOSIS_HINTS[Diagnosis.NO_CLOUD_API_KEY]))
        return

    async def attempt(check_id: str, call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await call()
        except RequestFailed as failed:
            failure = failed.failure
            check = _fail(check_id, failure)
            check.hint = hint_for(failure.reason, cloud=True)
            report.add(check)
        except RetryAfterActive as paused:
            report.add(CheckResult(check_id, "fail", f"rate limited: retry in {paused.remaining:.0f} s",
                                   hint_for(Reason.RATE_LIMITED), {"reason": "rate_limited"}))
        return None

    user = await attempt("cloud.auth", lambda: cloud_check.observe_user(runtime))
    if user is None:
        _skip_after(report, "cloud.auth", "cloud.subscription", "cloud.funds", "cloud.balance",
                    "cloud.concurrency", "cloud.recent_errors")
        return
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
            report.add(CheckResult("cloud.balance", "warn", "balance unknown (no balance fields in the answer)",
                                   DIAGNOSIS_HINTS[Diagnosis.BALANCE_UNKNOWN]))
        elif trusted_balance_usd(balance, status) is None:
            # The daemon exports no balance then either: "add credits" would be wrong advice to a paying account.
            report.add(CheckResult("cloud.balance", "warn", "balance unknown ($0.00 with no funds and no plan: a gap "
                                   "in Comfy Cloud's billing data)", DIAGNOSIS_HINTS[Diagnosis.BILLING_DATA_GAP],
                                   {"balance_usd": balance.balance_usd, "effective_usd": balance.effective_usd}))
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
        plan = {"max_concurrent_jobs": limit, "running": running}
        if limit is not None:
            report.add(CheckResult("cloud.concurrency", "ok", f"plan allows {limit} concurrent jobs"
                                   + (f", {running} running" if running is not None else ""), details=plan))
        else:
            # Nothing to fix, nothing verified: the neutral mark, not a tick. The field is optional in the API.
            why = ("Comfy Cloud gives none without an active subscription" if features.subscription_required
                   else "Comfy Cloud's /api/features did not include it")
            report.add(CheckResult("cloud.concurrency", "skipped", f"concurrency limit unknown: {why}"
                                   + (f"; {running} running" if running is not None else ""), details=plan))
    # The jobs check's observation, unclear failures looked up (at most MAX_STATUS_LOOKUPS); judged once over the
    # page where the daemon counts each job as it finishes.
    jobs = await attempt("cloud.recent_errors", lambda: cloud_check.observe_jobs(runtime, look_up=lambda _: True))
    if jobs is not None and not jobs.jobs:
        report.add(CheckResult("cloud.recent_errors", "ok", "no jobs on this account yet",
                               details={"recent": 0, "failed": 0, "payment": 0, "reasons": {}}))
    elif jobs is not None:
        reasons = [r for r in jobs.reasons.values() if r is not None]
        payment = sum(1 for r in reasons if r is Reason.PAYMENT)
        details: dict[str, Any] = {"recent": len(jobs.jobs), "failed": len(reasons), "payment": payment,
                                   "reasons": {str(r): reasons.count(r) for r in sorted(set(reasons))}}
        summary = f"{len(reasons)} of the last {len(jobs.jobs)} jobs failed, {payment} for billing reasons"
        if payment:
            report.add(CheckResult("cloud.recent_errors", "warn", summary, hint_for(Reason.PAYMENT), details))
        elif reasons:
            common = max(sorted(set(reasons)), key=reasons.count)  # sorted: ties resolve the same every run
            report.add(CheckResult("cloud.recent_errors", "warn", summary + f" (mostly {common})",
                                   hint_for(common), details))
        else:
            report.add(CheckResult("cloud.recent_errors", "ok", summary, details=details))


# ---------------------------------------------------------------------------------------------------------
# Entry points.


@dataclass
class DoctorOptions:
    """What the command line asks for; ``timeout`` bounds each step (DNS, connect, TLS, every request)."""

    timeout: float = 10.0
    workflow: str | None = None
    no_canary: bool = False
    strict: bool = False


def _targets(args: argparse.Namespace) -> tuple[Config, list[TargetConfig]]:
    path = config_file(args.config)
    if args.cloud and args.config:
        raise ConfigError(["--cloud checks the Comfy Cloud API at --url (default https://cloud.comfy.org); "
                           "for a config's cloud targets use --config alone"], "command line")
    if args.target and path is None:
        raise ConfigError(["--target picks a target of --config FILE"], "command line")
    if args.cloud:
        return load_config(None, {}), [target_from_url_option(args.url or DEFAULT_CLOUD_URL, "cloud", "cloud")]
    if args.url:
        return load_config(None, {}), [target_from_url_option(args.url)]
    config = load_config(path)
    targets = [t for t in config.targets if args.target is None or t.name == args.target]
    if not targets:
        raise ConfigError([f"no target named {args.target!r}"], "command line")
    return config, targets


def _check_workflow_file(path: str) -> str | None:
    """Why ``--workflow`` cannot be linted at all (a usage error), or None. In a directory, a file that is not a
    workflow is a finding of its own ``workflow.lint``; a single file must be JSON."""
    try:
        files = workflow_files(Path(path))
        if len(files) == 1 and files[0] == Path(path):
            read_workflow_file(Path(path))
    except WorkflowError as exc:
        return f"--workflow: {exc}"
    except WorkflowFileUnreadable as exc:
        return f"--workflow: cannot read {path}: {exc}"
    except OSError as exc:
        return f"--workflow: cannot read {path}: {exc.strerror or type(exc).__name__}"
    except (ValueError, RecursionError):
        return f"--workflow: {path} is not valid JSON"
    return None


async def run_doctor(config: Config, targets: list[TargetConfig], options: DoctorOptions) -> Report:
    """Check every target in turn (in dependency order within each) and collect the report."""
    reports = []
    for configured in targets:
        # One patience for every step: the doctor's --timeout, not the daemon's polling timeout.
        target = configured.model_copy(update={"timeout": options.timeout})
        report = TargetReport(target.name, target.kind, target.public_url)
        reports.append(report)
        try:
            # Building reads the target's secret and CA files again, which may have changed since the load.
            runtime = build_context(config, target)
        except (OSError, ValueError, ConfigError) as exc:
            report.add(CheckResult("config.files", "fail", f"cannot read the target's files: "
                                                           f"{type(exc).__name__}: {str(exc)[:200]}",
                                   DIAGNOSIS_HINTS[Diagnosis.TARGET_FILES_CHANGED]))
            continue
        try:
            if target.kind == "cloud":
                await _cloud_target(runtime, options, report)
            else:
                await _local_target(runtime, options, report)
        except Exception as exc:  # a bug must not hide this target's results so far, nor the other targets'
            report.add(CheckResult("doctor.internal", "fail", f"internal error: {type(exc).__name__}: "
                                                              f"{str(exc)[:200]}",
                                   DIAGNOSIS_HINTS[Diagnosis.DOCTOR_BUG]))
        finally:
            await runtime.close()
    return Report(reports, strict=options.strict)


def render_text(report: Report, *, color: bool) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.text import Text

    buffer = StringIO()
    console = Console(file=buffer, force_terminal=color, color_system="standard" if color else None,
                      width=110, highlight=False, soft_wrap=True)

    def emit(*segments: tuple[str, str | None]) -> None:
        # Text, never markup: a "[" in a server's string is not rich's to interpret either.
        line = Text()
        for text, style in segments:
            line.append(printable(text), style)
        console.print(line)

    styles = {"ok": "green", "warn": "yellow", "fail": "red", "skipped": "dim"}
    for target in report.targets:
        emit((target.name, "bold"), (f" ({target.kind}, {target.url})", None))
        for check in target.checks:
            emit(("  ", None), (SYMBOLS[check.status], styles[check.status]),
                 (f" {check.id:<20} {check.summary}", None))
            for line in check.details.get("lines", [])[:50]:
                emit((f"      {line}", None))
            if check.id == "canary.run" and check.status != "skipped" and "table" in check.details:
                for line in str(check.details["table"]).split("\n")[1:]:
                    # the summary already says the detail, and the hint follows as "fix:"
                    if not line.strip().startswith(("detail:", "fix:")):
                        emit((f"    {line}", None))
            if check.hint and check.status in {"warn", "fail"}:
                emit((f"      fix: {check.hint}", "dim" if color else None))
    counts = {s: sum(1 for t in report.targets for c in t.checks if c.status == s) for s in SYMBOLS}
    verdict = "healthy" if report.ok else "problems found"
    warnings = f"{counts['warn']} warning" + ("" if counts["warn"] == 1 else "s")
    emit((f"{verdict}: {counts['ok']} ok, {warnings}, {counts['fail']} failed, {counts['skipped']} skipped", None))
    return buffer.getvalue()


def doctor_main(args: argparse.Namespace) -> int:
    """Check what the command line names and print the report; returns the exit code (0, 1, or 2 for usage).

    Raises:
        ConfigError: the config, ``--url`` or ``--target`` is unusable (the caller prints it and exits 2).
    """
    # Logs go to stderr and stay quiet: stdout is the report.
    configure_logging(fmt="console", level="error", stream=sys.stderr)
    config, targets = _targets(args)
    try:
        for target in targets:
            resolve_credentials(target)  # a missing token file is a configuration error, not a check
    except ValueError as exc:
        print(printable(f"comfywatch doctor: {str(exc).splitlines()[0]}"), file=sys.stderr)
        return 2
    unusable = _check_workflow_file(args.workflow) if args.workflow else None
    if unusable is not None:
        print(printable(f"comfywatch doctor: {unusable}"), file=sys.stderr)
        return 2
    options = DoctorOptions(timeout=args.timeout, workflow=args.workflow, no_canary=args.no_canary,
                            strict=args.strict)
    report = asyncio.run(run_doctor(config, targets, options))
    if args.json:
        print(report.to_json())
    else:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        sys.stdout.write(render_text(report, color=color))
    return 0 if report.ok else 1
