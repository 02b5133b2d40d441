"""``network``: DNS, TCP connect and TLS handshake on a fresh connection, every few minutes.

The polls reuse a kept-alive connection, so they never see these phases; like a blackbox probe, this check
opens a new one and exports ``comfyui_http_phase_seconds{phase="dns"|"connect"|"tls"}`` and, for https
targets, ``comfyui_tls_cert_not_after_timestamp_seconds`` (whatever verification says: the expiry of an
untrusted or expired certificate is exactly what to alert on; whether the chain verifies is the polling
checks' business, which fail with reason ``tls``).

``observe`` opens the connection and ``record`` puts what it found into the target's state; doctor observes with
verification on and judges each step itself.
"""

from __future__ import annotations

from comfywatch.checks.context import TargetContext
from comfywatch.clients.http import RequestFailed
from comfywatch.clients.net import NetReport, probe_url
from comfywatch.errors import Failure, Reason
from comfywatch.state import TargetState

__all__ = ["connection_phases", "observe", "record", "run"]


def connection_phases(report: NetReport) -> dict[str, float | None]:
    """Seconds of ``dns``, ``connect`` and ``tls`` on the fresh connection of *report*; None for a step that
    failed or did not happen. The HTTP client does not time these steps: the daemon's metrics and doctor's
    ``http.api`` both take them from here."""
    return {
        "dns": report.dns.seconds if report.dns.ok else None,
        "connect": report.tcp.seconds if report.tcp is not None and report.tcp.ok else None,
        "tls": report.tls.seconds if report.tls is not None and report.tls.ok else None,
    }


async def observe(ctx: TargetContext, *, verify: bool = False) -> NetReport:
    """Resolve, connect and (https) shake hands on a fresh connection; each step gets the target's request timeout.

    ``verify`` checks the certificate chain and name as the target's clients do (its ``tls_ca_file``, none
    under ``tls_insecure_skip_verify``): doctor's view. Without it the handshake accepts any certificate, so
    that the daemon exports the expiry of one that would not verify.
    """
    target = ctx.config
    verified = verify and not target.tls_insecure_skip_verify
    ca_file = str(target.tls_ca_file) if verified and target.tls_ca_file is not None else None
    return await probe_url(target.url, timeout=ctx.request_timeout, verify=verified, ca_file=ca_file)


def record(state: TargetState, report: NetReport) -> None:
    state.network_phases = connection_phases(report)
    if report.tls is not None and report.tls.cert is not None and report.tls.cert.not_after is not None:
        state.tls_not_after = report.tls.cert.not_after


async def run(ctx: TargetContext) -> None:
    report = await observe(ctx)
    record(ctx.state, report)
    if not report.ok:
        reason = report.reason or Reason.CONNECT
        raise RequestFailed(Failure(reason, f"{report.failed_step} failed"), "network")
