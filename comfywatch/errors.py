"""The one failure taxonomy (DESIGN §4): reasons, their remediation hints, and classification.

Metrics (``reason`` label), logs, doctor check results and alert rules all use these values. Nothing else in
the code base may invent a reason string.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Reason"]


class Reason(StrEnum):
    """Why a request, job or canary failed."""

    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    TIMEOUT = "timeout"
    AUTH = "auth"
    FORBIDDEN = "forbidden"
    PAYMENT = "payment"
    RATE_LIMITED = "rate_limited"
    QUEUE_FULL = "queue_full"
    NOT_FOUND = "not_found"
    INVALID_REQUEST = "invalid_request"
    SERVER_ERROR = "server_error"
    INVALID_RESPONSE = "invalid_response"
    VALIDATION = "validation"
    EXECUTION_ERROR = "execution_error"
    OOM = "oom"
    INTERRUPTED = "interrupted"
    LOST = "lost"
    OUTPUT_INVALID = "output_invalid"
