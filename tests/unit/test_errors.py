"""Tests for comfywatch.errors: the one failure taxonomy, its hints and the classifiers."""

from __future__ import annotations

import email.utils
import json
import socket
import ssl
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, InvalidStatus, InvalidURI
from websockets.http11 import Response

from comfywatch.errors import (
    BILLING_ERROR_TYPES,
    CLOUD_HINTS,
    DIAGNOSIS_HINTS,
    HINTS,
    JOB_REASONS,
    SSL_REASON_HINTS,
    TLS_HINTS,
    TRANSPORT_REASONS,
    BodyTooLargeError,
    Diagnosis,
    Failure,
    ParseError,
    Reason,
    TlsProblem,
    classify_exception,
    classify_execution_error,
    classify_status,
    hint_for,
    parse_retry_after,
)
from tests.fixtures import FIXTURES, load_json

#: The reason label values alert rules and dashboards rely on, as docs/architecture.md lists them.
DOCUMENTED_REASONS = [
    "dns",
    "connect",
    "tls",
    "timeout",
    "auth",
    "forbidden",
    "payment",
    "rate_limited",
    "queue_full",
    "not_found",
    "invalid_request",
    "server_error",
    "invalid_response",
    "ws_flood",
    "validation",
    "execution_error",
    "oom",
    "interrupted",
    "lost",
    "output_invalid",
]


def _wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    """*outer* raised ``from`` *cause*, as aiohttp's connector does it."""
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except BaseException as caught:
        return caught


#: What aiohttp's connector errors name the connection by.
KEY = ConnectionKey("gpu-1.example.net", 443, True, True, None, None, None)


class TestReason:
    def test_values_match_the_documented_list(self) -> None:
        """The reason values are exactly the documented list, in its order."""
        assert [r.value for r in Reason] == DOCUMENTED_REASONS

    def test_str_is_the_label_value(self) -> None:
        """A Reason formats as its bare value (it goes straight into label text)."""
        assert f"{Reason.RATE_LIMITED}" == "rate_limited"
        assert str(Reason.OOM) == "oom"

    def test_every_reason_has_one_hint(self) -> None:
        """Each reason has a non-trivial remediation hint, reachable through hint_for and Failure.hint."""
        assert set(HINTS) == set(Reason)
        for reason in Reason:
            assert len(hint_for(reason)) > 40
            assert Failure(reason, "x").hint == hint_for(reason)
            assert "{" not in hint_for(reason)

    @pytest.mark.parametrize(
        ("url", "address"),
        [
            ("http://127.0.0.1:8188", "127.0.0.1:8188"),
            ("https://monitor:secret@gpu-1.example.net/comfy", "gpu-1.example.net:443"),
            ("http://[::1]:8189/", "[::1]:8189"),
            (None, "the host and port of its URL"),
        ],
    )
    def test_the_connect_hint_names_the_targets_address(self, url: str | None, address: str) -> None:
        """Given the target's URL, the connect hint asks about its host:port (never its userinfo)."""
        assert hint_for(Reason.CONNECT, url).startswith(
            f"Is ComfyUI running on {address}? Start it, or set url in the config.")

    def test_hints_are_distinct(self) -> None:
        """No two reasons share a hint (each says something specific)."""
        assert len(set(HINTS.values())) == len(Reason)

    def test_hints_mention_what_to_do(self) -> None:
        """Hints carry the facts users need: ComfyUI's default port, --lowvram for OOM, no built-in auth."""
        assert "8188" in HINTS[Reason.CONNECT]
        assert "--lowvram" in HINTS[Reason.OOM]
        assert "no authentication" in HINTS[Reason.AUTH]
        assert "Origin" in HINTS[Reason.FORBIDDEN]

    def test_reason_groups(self) -> None:
        """Transport and job reason sets are disjoint subsets (payment can be both)."""
        assert set(TRANSPORT_REASONS) <= set(Reason)
        assert set(JOB_REASONS) <= set(Reason)
        assert set(TRANSPORT_REASONS) & set(JOB_REASONS) == {Reason.PAYMENT}
        assert Reason.VALIDATION not in TRANSPORT_REASONS
        assert len(set(TRANSPORT_REASONS)) == len(TRANSPORT_REASONS)


class TestHintTables:
    def test_cloud_words_where_cloud_has_them(self) -> None:
        """A Comfy Cloud account reads the Cloud's own words for a revoked key or a 5xx, and the shared hint
        for every other reason; a local target always reads the shared one."""
        assert set(CLOUD_HINTS) == {Reason.AUTH, Reason.SERVER_ERROR}
        for reason in Reason:
            expected = CLOUD_HINTS.get(reason, hint_for(reason))
            assert hint_for(reason, cloud=True) == expected
        assert "API key" in hint_for(Reason.AUTH, cloud=True) and "proxy" in hint_for(Reason.AUTH)

    def test_every_certificate_problem_has_a_hint(self) -> None:
        """Each way a certificate fails the check has its own hint; a handshake that failed otherwise has the
        tls reason's."""
        assert set(TLS_HINTS) == set(TlsProblem) - {TlsProblem.HANDSHAKE_FAILED}
        assert "fullchain.pem" in TLS_HINTS[TlsProblem.UNTRUSTED_CHAIN]

    def test_every_diagnosis_has_a_hint(self) -> None:
        """Each doctor finding has a hint; only two name a fact: the port nothing listens on, the device kind."""
        assert set(DIAGNOSIS_HINTS) == set(Diagnosis)
        assert "Upgrade" in DIAGNOSIS_HINTS[Diagnosis.WEBSOCKET_UPGRADE_DROPPED]
        assert DIAGNOSIS_HINTS[Diagnosis.WEBSOCKET_UPGRADE_HELD].endswith(
            DIAGNOSIS_HINTS[Diagnosis.WEBSOCKET_UPGRADE_DROPPED])
        assert DIAGNOSIS_HINTS[Diagnosis.CPU_DEVICE].format(kind="cpu").startswith("The torch device is cpu:")
        assert DIAGNOSIS_HINTS[Diagnosis.NOTHING_LISTENING].format(port=8189).startswith(
            "Is ComfyUI running, and on port 8189?")
        formatted = [d for d, hint in DIAGNOSIS_HINTS.items() if "{" in hint]
        assert formatted == [Diagnosis.NOTHING_LISTENING, Diagnosis.CPU_DEVICE]

    def test_no_two_hints_alike(self) -> None:
        """No hint in any table repeats another: each says something specific."""
        hints = [*HINTS.values(), *CLOUD_HINTS.values(), *TLS_HINTS.values(), *DIAGNOSIS_HINTS.values(),
                 *SSL_REASON_HINTS.values()]
        assert len(set(hints)) == len(hints)


class TestClassifyStatus:
    @pytest.mark.parametrize("status", [200, 201, 204, 299])
    def test_success_is_none(self, status: int) -> None:
        """2xx is not a failure."""
        assert classify_status(status) is None

    @pytest.mark.parametrize(
        ("status", "reason"),
        [
            (401, Reason.AUTH),
            (402, Reason.PAYMENT),
            (403, Reason.FORBIDDEN),
            (404, Reason.NOT_FOUND),
            (400, Reason.INVALID_REQUEST),
            (405, Reason.INVALID_REQUEST),
            (409, Reason.INVALID_REQUEST),
            (413, Reason.INVALID_REQUEST),
            (422, Reason.INVALID_REQUEST),
            (429, Reason.RATE_LIMITED),
            (500, Reason.SERVER_ERROR),
            (502, Reason.SERVER_ERROR),
            (503, Reason.SERVER_ERROR),
            (504, Reason.SERVER_ERROR),
            (599, Reason.SERVER_ERROR),
            (101, Reason.INVALID_RESPONSE),
            (301, Reason.INVALID_RESPONSE),
            (304, Reason.INVALID_RESPONSE),
        ],
    )
    def test_status_codes(self, status: int, reason: Reason) -> None:
        """Each status maps to its documented reason and the detail names the code."""
        failure = classify_status(status)
        assert failure is not None
        assert (failure.reason, failure.status, failure.detail) == (reason, status, f"HTTP {status}")

    @pytest.mark.parametrize("error_type", sorted(BILLING_ERROR_TYPES))
    def test_billing_429_is_payment(self, error_type: str) -> None:
        """A 429 carrying a billing error.type is a payment refusal, not rate limiting."""
        failure = classify_status(429, {"error": {"type": error_type, "message": "x"}})
        assert failure is not None
        assert (failure.reason, failure.error_type) == (Reason.PAYMENT, error_type)

    @pytest.mark.parametrize(
        "body", [{"error": {"type": "QUEUE_LIMIT", "message": "queue full"}}, {"error": {"code": "queue_full"}}]
    )
    def test_queue_limit_429(self, body: Any) -> None:
        """v1 QUEUE_LIMIT and v2 queue_full are a full queue."""
        failure = classify_status(429, body, "2")
        assert failure is not None
        assert (failure.reason, failure.retry_after) == (Reason.QUEUE_FULL, 2.0)

    @pytest.mark.parametrize(
        "body",
        [None, "Rate limit exceeded", {"error": "x"}, {"error": {"type": ""}}, {"error": {"code": "rate_limited"}}],
    )
    def test_plain_429_is_rate_limited(self, body: Any) -> None:
        """A 429 without a (known) type is plain rate limiting."""
        failure = classify_status(429, body, "30")
        assert failure is not None
        assert (failure.reason, failure.retry_after) == (Reason.RATE_LIMITED, 30.0)

    def test_v2_insufficient_credits_402(self) -> None:
        """A v2 402 keeps its error code for logs."""
        failure = classify_status(402, {"error": {"code": "insufficient_credits", "message": "m", "details": None}})
        assert failure is not None
        assert (failure.reason, failure.error_type) == (Reason.PAYMENT, "insufficient_credits")

    def test_error_type_is_bounded(self) -> None:
        """A long error.type is cut to 64 characters (it ends up in logs)."""
        failure = classify_status(400, {"error": {"type": "x" * 1000}})
        assert failure is not None and failure.error_type == "x" * 64

    def test_type_preferred_over_code(self) -> None:
        """v1's error.type wins over error.code when both are present."""
        failure = classify_status(429, {"error": {"type": "QUEUE_LIMIT", "code": "rate_limited"}})
        assert failure is not None and failure.reason is Reason.QUEUE_FULL

    @pytest.mark.parametrize(
        ("status", "body", "reason"),
        [
            (401, {"message": "Invalid Comfy API key"}, Reason.AUTH),
            (402, {"error": {"type": "PAYMENT_REQUIRED", "message": "A cloud subscription is required to queue "
                                                                    "workflows."}}, Reason.PAYMENT),
            (403, {"error": {"type": "PARTNER_NODE_DISABLED", "class_types": ["X"]}}, Reason.FORBIDDEN),
            (404, {"code": "NOT_FOUND", "message": "Job not found"}, Reason.NOT_FOUND),
            (429, {"code": "RATE_LIMITED", "message": "Rate limit exceeded. Please try again later."},
             Reason.RATE_LIMITED),
            (400, {"code": "INVALID_PARAMETER", "message": "limit"}, Reason.INVALID_REQUEST),
            (413, "Request Entity Too Large", Reason.INVALID_REQUEST),
            (500, {"code": "INTERNAL_ERROR", "message": "boom"}, Reason.SERVER_ERROR),
            (503, "Service is unhealthy", Reason.SERVER_ERROR),
        ],
    )
    def test_cloud_bodies(self, status: int, body: Any, reason: Reason) -> None:
        """Comfy Cloud's error bodies (ErrorResponse, PromptErrorResponse, plain text) by status, refined by
        error.type only where that changes the meaning."""
        failure = classify_status(status, body)
        assert failure is not None and failure.reason is reason

    @pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("prompt_error_*.json")))
    def test_comfyuis_validation_400s_are_validation(self, fixture: str) -> None:
        """Every recorded 400 of ComfyUI's prompt validation is ``validation`` (the workflow to fix), with or
        without node_errors; only ``no_prompt``, a body without a prompt, is a malformed request."""
        body = load_json(fixture)
        failure = classify_status(400, body)
        assert failure is not None and failure.error_type == body["error"]["type"]
        expected = Reason.INVALID_REQUEST if failure.error_type == "no_prompt" else Reason.VALIDATION
        assert failure.reason is expected

    @pytest.mark.parametrize(
        ("status", "body", "reason"),
        [
            (400, {"error": {"type": "x"}, "node_errors": {"3": {"errors": []}}}, Reason.VALIDATION),
            (400, {"node_errors": {"3": {"errors": []}}}, Reason.VALIDATION),
            (400, {"error": {"type": "invalid_prompt"}}, Reason.VALIDATION),
            (400, {"error": {"type": "x"}, "node_errors": {}}, Reason.INVALID_REQUEST),
            (400, {"error": {"type": "x"}, "node_errors": []}, Reason.INVALID_REQUEST),
            (400, ["node_errors"], Reason.INVALID_REQUEST),
            (422, {"error": {"type": "invalid_prompt"}, "node_errors": {"3": {}}}, Reason.INVALID_REQUEST),
        ],
    )
    def test_validation_is_a_400_naming_nodes_or_a_validation_type(self, status: int, body: Any,
                                                                    reason: Reason) -> None:
        """Non-empty node_errors or a validation error.type make a 400 ``validation``; nothing else does."""
        failure = classify_status(status, body)
        assert failure is not None and failure.reason is reason

    def test_detail_never_contains_the_body(self) -> None:
        """The failure detail holds the status only, never the response body's text."""
        failure = classify_status(500, {"error": {"type": "x", "message": "token sk-live-SECRET leaked"}})
        assert failure is not None and "SECRET" not in repr(failure)


#: 2026-08-20 10:00:00 UTC, the clock the HTTP-date cases are read at.
NOW = 1787220000.0


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("header", "seconds"),
        [
            ("5", 5.0),
            (" 2.5 ", 2.5),
            ("0", 0.0),
            ("3600", 3600.0),
            ("86400", 3600.0),
            ("inf", 3600.0),
            (None, None),
            ("", None),
            ("soon", None),
            ("-1", None),
            ("nan", None),
            ("²", None),
        ],
    )
    def test_delta_seconds(self, header: str | None, seconds: float | None) -> None:
        """Delta-seconds parse, capped at an hour; negatives and junk give None."""
        assert parse_retry_after(header) == seconds

    @pytest.mark.parametrize(
        ("header", "seconds"),
        [
            ("Thu, 20 Aug 2026 10:00:30 GMT", 30.0),
            ("Thu, 20 Aug 2026 10:00:00 GMT", 0.0),
            ("Thu, 20 Aug 2026 09:59:30 GMT", 0.0),
            ("Thu, 20 Aug 2026 12:00:00 GMT", 3600.0),
            ("Thu, 20 Aug 2026 10:00:30 -0000", 30.0),
            ("Thu, 32 Aug 2026 10:00:30 GMT", None),
        ],
    )
    def test_http_date(self, header: str, seconds: float | None) -> None:
        """An HTTP-date (RFC 9110) waits until that time: a past date is no wait, a far one is capped at an
        hour, an impossible one is None."""
        assert parse_retry_after(header, now=NOW) == seconds

    def test_http_date_counts_from_the_wall_clock(self) -> None:
        """Without *now*, an HTTP-date is counted from the wall clock (as classify_status does)."""
        soon = email.utils.formatdate(time.time() + 600, usegmt=True)
        seconds = parse_retry_after(soon)
        assert seconds is not None and 590 <= seconds <= 600
        failure = classify_status(429, None, soon)
        assert failure is not None and failure.retry_after is not None and 590 <= failure.retry_after <= 600


class TestClassifyException:
    def test_dns(self) -> None:
        """socket.gaierror, bare or wrapped by aiohttp's ClientConnectorDNSError, is a DNS failure."""
        gai = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        assert classify_exception(gai).reason is Reason.DNS
        failure = classify_exception(_wrapped(aiohttp.ClientConnectorDNSError(KEY, gai), gai))
        assert (failure.reason, failure.detail) == (Reason.DNS, "name resolution failed (ClientConnectorDNSError)")

    def test_tls_certificate(self) -> None:
        """aiohttp's certificate error is TLS, with the verify message of the ssl error it wraps."""
        cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
        cert.verify_message = "self-signed certificate"
        failure = classify_exception(_wrapped(aiohttp.ClientConnectorCertificateError(KEY, cert), cert))
        assert failure.reason is Reason.TLS
        assert failure.detail == "TLS failure: SSLCertVerificationError: self-signed certificate"

    def test_tls_other(self) -> None:
        """Any ssl.SSLError is TLS."""
        assert classify_exception(ssl.SSLError(1, "wrong version number")).reason is Reason.TLS

    @pytest.mark.parametrize(
        "exc",
        [
            aiohttp.SocketTimeoutError("read"),
            aiohttp.ConnectionTimeoutError("connect"),
            aiohttp.ServerTimeoutError("server"),
            TimeoutError(),
        ],
    )
    def test_timeouts(self, exc: BaseException) -> None:
        """aiohttp's, asyncio's and the builtin timeouts are all TIMEOUT."""
        failure = classify_exception(exc)
        assert failure.reason is Reason.TIMEOUT
        assert failure.detail == f"timed out ({type(exc).__name__})"

    @pytest.mark.parametrize(
        "exc",
        [
            ConnectionRefusedError(111, "Connection refused"),
            ConnectionResetError(104, "reset"),
            aiohttp.ClientConnectorError(KEY, ConnectionRefusedError(111, "Connection refused")),
            aiohttp.ServerDisconnectedError("Server disconnected"),
            aiohttp.ClientPayloadError("Response payload is not completed: not enough data"),
            EOFError(),
            OSError(101, "Network is unreachable"),
        ],
    )
    def test_connection_failures(self, exc: BaseException) -> None:
        """Refused, reset, unreachable and dropped connections are CONNECT."""
        assert classify_exception(exc).reason is Reason.CONNECT

    @pytest.mark.parametrize("exc", [ConnectionClosedError(None, None), InvalidURI("ws://", "bad")])
    def test_websocket_failures(self, exc: BaseException) -> None:
        """websockets' own protocol failures are CONNECT."""
        failure = classify_exception(exc)
        assert (failure.reason, failure.detail) == (Reason.CONNECT, f"WebSocket failure ({type(exc).__name__})")

    @pytest.mark.parametrize(
        ("status", "reason"), [(403, Reason.FORBIDDEN), (401, Reason.AUTH), (404, Reason.NOT_FOUND)]
    )
    def test_websocket_upgrade_refused(self, status: int, reason: Reason) -> None:
        """A refused upgrade (the Origin check's 403) is classified by its HTTP status."""
        exc = InvalidStatus(Response(status, "x", Headers(), b""))
        failure = classify_exception(exc)
        assert (failure.reason, failure.status) == (reason, status)
        assert failure.detail == f"WebSocket upgrade refused: HTTP {status}"

    def test_invalid_response_family(self) -> None:
        """Wrong shapes, oversized or undecodable bodies are INVALID_RESPONSE."""
        assert classify_exception(ParseError("queue_running: expected array, got null")) == Failure(
            Reason.INVALID_RESPONSE, "unexpected response shape: queue_running: expected array, got null"
        )
        assert classify_exception(BodyTooLargeError(1024)).detail == "response body larger than 1024 bytes"
        undecodable = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        assert classify_exception(undecodable).detail == "response is not valid UTF-8"
        with pytest.raises(json.JSONDecodeError) as info:
            json.loads("<html>")
        assert classify_exception(info.value).detail == "response is not valid JSON"
        for exc in (ParseError("x"), BodyTooLargeError(1), undecodable, info.value):
            assert classify_exception(exc).reason is Reason.INVALID_RESPONSE

    def test_unknown_exception(self) -> None:
        """Anything unexpected is INVALID_RESPONSE naming only the exception class."""
        failure = classify_exception(KeyError("api_key=sk-SECRET"))
        assert (failure.reason, failure.detail) == (Reason.INVALID_RESPONSE, "unexpected error (KeyError)")

    @pytest.mark.parametrize(
        "exc",
        [
            ConnectionRefusedError(111, "refused for token sk-SECRET"),
            aiohttp.ServerDisconnectedError("http://user:SECRET@host"),
            aiohttp.SocketTimeoutError("Bearer SECRET"),
            socket.gaierror(-2, "SECRET.example"),
        ],
    )
    def test_detail_never_echoes_the_message(self, exc: BaseException) -> None:
        """Exception messages may hold URLs with credentials: details carry class names only."""
        assert "SECRET" not in classify_exception(exc).detail

    def test_cyclic_cause_chain_terminates(self) -> None:
        """A cause chain that loops does not hang the classifier."""
        first, second = ValueError("a"), RuntimeError("b")
        first.__cause__, second.__cause__ = second, first
        assert classify_exception(first).reason is Reason.INVALID_RESPONSE

    def test_dns_deep_in_context_chain(self) -> None:
        """The DNS cause is found through __context__ too (implicit chaining)."""
        outer = aiohttp.ClientConnectionError("x")
        outer.__context__ = OSError("y")
        outer.__context__.__context__ = socket.gaierror(-3, "Temporary failure")
        assert classify_exception(outer).reason is Reason.DNS


class TestClassifyExecutionError:
    @pytest.mark.parametrize(
        ("exception_type", "message"),
        [
            ("torch.OutOfMemoryError", "Allocation on device"),
            ("torch.cuda.OutOfMemoryError", ""),
            ("OutOfMemoryError", None),
            ("OOMError", None),
            ("RuntimeError", "CUDA out of memory. Tried to allocate 20.00 MiB"),
            ("RuntimeError", "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported"),
            ("RuntimeError", "MPS backend out of memory (MPS allocated: 17.00 GB)"),
            ("Exception", "Allocation on device 0 would exceed allowed memory"),
            (None, "torch.OutOfMemoryError: Allocation on device"),
        ],
    )
    def test_oom(self, exception_type: str | None, message: str | None) -> None:
        """torch's OOM types, Cloud's OOMError and OOM text in a generic error are all OOM."""
        assert classify_execution_error(exception_type, message) is Reason.OOM

    @pytest.mark.parametrize(
        "exception_type",
        ["InsufficientFundsError", "InactiveSubscriptionError", "comfy.billing.InsufficientFundsError"],
    )
    def test_payment(self, exception_type: str) -> None:
        """Comfy Cloud's billing failures during execution are PAYMENT."""
        assert classify_execution_error(exception_type, "out of memory anyway") is Reason.PAYMENT

    @pytest.mark.parametrize(
        ("exception_type", "message"),
        [
            ("re.error", "missing ), unterminated subpattern at position 0\n"),
            ("ValueError", "Image too small"),
            ("ValidationError", "bad input"),
            (None, None),
            ("", ""),
        ],
    )
    def test_other_errors(self, exception_type: str | None, message: str | None) -> None:
        """Everything else is a plain execution error."""
        assert classify_execution_error(exception_type, message) is Reason.EXECUTION_ERROR

    @pytest.mark.parametrize(("exception_type", "message"), [(42, "x"), (["OOMError"], None), ("Error", {"oom": 1})])
    def test_non_strings_count_as_absent(self, exception_type: object, message: object) -> None:
        """The fields come from a server's JSON: a number, list or object there says nothing about the error."""
        assert classify_execution_error(exception_type, message) is Reason.EXECUTION_ERROR
