"""``network``: DNS, TCP connect and TLS handshake on a fresh connection, every few minutes.

The polls reuse a kept-alive connection, so they never see these phases; like a blackbox probe, this check
opens a new one and exports ``comfyui_http_phase_seconds{phase="dns"|"connect"|"tls"}`` and, for https
targets, ``comfyui_tls_cert_not_after_timestamp_seconds`` (whatever verification says: the expiry of an
untrusted or expired certificate is exactly what to alert on; whether the chain verifies is the polling
checks' business, which fail with reason ``tls``).
"""

from __future__ import annotations

from comfywatch.checks.context import TargetContext
from comfywatch.clients.http import RequestFailed
from comfywatch.clients.net import NetReport, probe_url
from comfywatch.errors import Failure, Reason

__all__ = ["connection_phases", "run"]


def connection_phases(report: NetReport) -> dict[str, float | None]:
    """Seconds of ``dns``, ``connect`` and ``tls`` on the fresh connection of *report*; None for a step that
    failed or did not happen. The HTTP client does not time these steps: the daemon's metrics and doctor's
    ``http.api`` both take them from here."""
    return {
        "dns": report.dns.seconds if report.dns.ok else None,
        "connect": report.tcp.seconds if report.tcp is not None and report.tcp.ok else None,
        "tls": report.tls.seconds if report.tls is not None and report.tls.ok else None,
    }


async def run(ctx: TargetContext) -> None:
    """Each step on the fresh connection gets the target's request timeout."""
    report = await probe_url(ctx.config.url, timeout=ctx.request_timeout, verify=False)
    state = ctx.state
    state.network_phases = connection_phases(report)
    if report.tls is not None and report.tls.cert is not None and report.tls.cert.not_after is not None:
        state.tls_not_after = report.tls.cert.not_after
    if not report.ok:
        reason = report.reason or Reason.CONNECT
        raise RequestFailed(Failure(reason, f"{report.failed_step} failed"), "network")
