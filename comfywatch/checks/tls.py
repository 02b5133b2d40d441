"""``tls``: the certificate an https target presents (expiry for ``comfyui_tls_cert_not_after_timestamp_seconds``).

Runs a separate handshake (the pooled client reuses connections, so it rarely sees one) every few minutes:
certificates change rarely, and expiry is alerted on days in advance.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from comfywatch.clients.http import RequestFailed
from comfywatch.clients.net import tls_handshake
from comfywatch.config import TargetConfig
from comfywatch.errors import Failure, Reason
from comfywatch.state import TargetState

__all__ = ["run"]


async def run(target: TargetConfig, state: TargetState, timeout: float) -> None:
    parts = urlsplit(target.url)
    host = parts.hostname or ""
    port = parts.port or 443
    # Verification off here: the expiry of an untrusted or expired certificate is exactly what to export;
    # whether the chain verifies is the polling checks' business (they fail with reason "tls").
    result = await tls_handshake(host, port, server_hostname=host, timeout=timeout, verify=False)
    if result.cert is not None and result.cert.not_after is not None:
        state.tls_not_after = result.cert.not_after
        return
    raise RequestFailed(Failure(result.reason or Reason.TLS, "no certificate read"), "tls")
