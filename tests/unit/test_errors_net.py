"""The network probes' classification in comfywatch.errors: connect failures (reason, detail and which of
several is the most telling) and TLS problems, from the exceptions the probes meet."""

from __future__ import annotations

import errno
import ssl

import pytest

from comfywatch.errors import (
    Reason,
    TcpDetail,
    TlsProblem,
    classify_connect_error,
    classify_tls_error,
    connect_error_rank,
)

REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
UNREACHABLE = OSError(errno.EHOSTUNREACH, "No route to host")
RESET = ConnectionResetError(errno.ECONNRESET, "reset")
TIMED_OUT = TimeoutError(errno.ETIMEDOUT, "Connection timed out")
DENIED = OSError(errno.EACCES, "Permission denied")


@pytest.mark.parametrize(
    ("exc", "reason", "detail"),
    [
        (REFUSED, Reason.CONNECT, TcpDetail.REFUSED),
        (UNREACHABLE, Reason.CONNECT, TcpDetail.UNREACHABLE),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), Reason.CONNECT, TcpDetail.UNREACHABLE),
        (OSError(errno.EADDRNOTAVAIL, "Cannot assign"), Reason.CONNECT, TcpDetail.UNREACHABLE),
        (RESET, Reason.CONNECT, TcpDetail.RESET),
        (TIMED_OUT, Reason.TIMEOUT, TcpDetail.TIMEOUT),
        (TimeoutError(), Reason.TIMEOUT, TcpDetail.TIMEOUT),
        (DENIED, Reason.CONNECT, TcpDetail.ERROR),
    ],
)
def test_classify_connect_error(exc: OSError, reason: Reason, detail: TcpDetail) -> None:
    """Each OS error maps to its reason and refused/unreachable/reset/timeout/error detail."""
    assert classify_connect_error(exc) == (reason, detail)


def test_the_most_telling_connect_failure_sorts_first() -> None:
    """Of one host's addresses failing differently, a refusal (the host is up) tells most, then a reset, a
    timeout, an unreachable network, and any other error least."""
    failures = [DENIED, UNREACHABLE, TIMED_OUT, RESET, REFUSED]
    assert sorted(failures, key=connect_error_rank) == [REFUSED, RESET, TIMED_OUT, UNREACHABLE, DENIED]


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        (10, TlsProblem.EXPIRED),
        (9, TlsProblem.NOT_YET_VALID),
        (18, TlsProblem.SELF_SIGNED),
        (62, TlsProblem.HOSTNAME_MISMATCH),
        (64, TlsProblem.HOSTNAME_MISMATCH),
        (19, TlsProblem.UNTRUSTED_CHAIN),  # self-signed certificate in chain
        (20, TlsProblem.UNTRUSTED_CHAIN),  # unable to get local issuer certificate
    ],
)
def test_verify_codes(code: int, problem: TlsProblem) -> None:
    """OpenSSL verification codes map to the documented problems."""
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code = code
    assert classify_tls_error(exc) is problem


def test_other_tls_errors_are_handshake_failures() -> None:
    """Non-verification SSL errors and resets are handshake_failed."""
    assert classify_tls_error(ssl.SSLError(1, "wrong version number")) is TlsProblem.HANDSHAKE_FAILED
    assert classify_tls_error(ConnectionResetError()) is TlsProblem.HANDSHAKE_FAILED
