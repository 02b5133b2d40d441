"""The one failure taxonomy: reasons, their remediation hints, and classification (docs/architecture.md).

Metrics (``reason`` label), logs, doctor check results and alert rules all use these values. Nothing else in
the code base may invent a reason string or classify a status, an exception, a Retry-After or an execution
error, and the hints a user reads live here: :data:`HINTS` per reason (:data:`CLOUD_HINTS` where Comfy Cloud
needs other words), :data:`TLS_HINTS` per TLS problem, :data:`DIAGNOSIS_HINTS` per doctor finding.
"""

from __future__ import annotations

import errno
import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.http_exceptions import ContentEncodingError

__all__ = [
    "BILLING_ERROR_TYPES",
    "CLOUD_HINTS",
    "DIAGNOSIS_HINTS",
    "HINTS",
    "JOB_REASONS",
    "MAX_RETRY_AFTER",
    "QUEUE_ERROR_TYPES",
    "SSL_REASON_HINTS",
    "TLS_HINTS",
    "TRANSPORT_REASONS",
    "VALIDATION_ERROR_TYPES",
    "AbuseKind",
    "BodyTooLargeError",
    "Diagnosis",
    "Failure",
    "ParseError",
    "Reason",
    "SkipReason",
    "TcpDetail",
    "TlsProblem",
    "WebSocketAbuse",
    "classify_connect_error",
    "classify_exception",
    "classify_execution_error",
    "classify_status",
    "classify_tls_error",
    "connect_error_rank",
    "hint_for",
    "parse_retry_after",
]


class ParseError(ValueError):
    """A response did not have the shape the real server produces.

    The message names the JSON path that was wrong (``queue_running[0][1]: expected str``) and never contains
    response values, which may hold prompt text or secrets.
    """


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
    WS_FLOOD = "ws_flood"
    VALIDATION = "validation"
    EXECUTION_ERROR = "execution_error"
    OOM = "oom"
    INTERRUPTED = "interrupted"
    LOST = "lost"
    OUTPUT_INVALID = "output_invalid"


#: Reasons any HTTP/WebSocket exchange can end with: ``comfyui_request_failures_total`` pre-sets these for every
#: endpoint. A prompt refused by validation (:func:`classify_status`) is counted as ``validation`` too, but only
#: ``POST /prompt`` can get one, so that series appears when it happens.
TRANSPORT_REASONS: tuple[Reason, ...] = (
    Reason.DNS,
    Reason.CONNECT,
    Reason.TLS,
    Reason.TIMEOUT,
    Reason.AUTH,
    Reason.FORBIDDEN,
    Reason.PAYMENT,
    Reason.RATE_LIMITED,
    Reason.QUEUE_FULL,
    Reason.NOT_FOUND,
    Reason.INVALID_REQUEST,
    Reason.SERVER_ERROR,
    Reason.INVALID_RESPONSE,
)

#: Reasons only Comfy Cloud's HTTP answers carry: its billing refusals (402, billing 429s) and its queue limit.
CLOUD_ONLY_REASONS: frozenset[Reason] = frozenset({Reason.PAYMENT, Reason.QUEUE_FULL})


def possible_reasons(reasons: Iterable[Reason], *, cloud: bool, https: bool) -> tuple[Reason, ...]:
    """The *reasons* a target can produce over HTTP: Cloud-only ones only for Comfy Cloud, ``tls`` only over
    https. Failure counters pre-set these to 0; any other reason still gets its series when it happens."""
    return tuple(r for r in reasons if (cloud or r not in CLOUD_ONLY_REASONS) and (https or r is not Reason.TLS))


#: Reasons a finished job can fail with (``comfyui_job_failures_total``).
JOB_REASONS: tuple[Reason, ...] = (
    Reason.EXECUTION_ERROR,
    Reason.OOM,
    Reason.INTERRUPTED,
    Reason.LOST,
    Reason.PAYMENT,
)

#: Comfy Cloud ``error.type`` values that mean "the plan or the credits refuse this" (docs/cloud.md, "Errors").
BILLING_ERROR_TYPES: frozenset[str] = frozenset(
    {
        "PAYMENT_REQUIRED",
        "FREE_TIER_UNAVAILABLE",
        "FREE_TIER_EXHAUSTED",
        "FREE_TIER_NOT_ALLOWED",
        "PARTNER_NODE_PAYMENT_REQUIRED",
        "CLOUD_SUBSCRIPTION_REQUIRED",
        "MODEL_PAYMENT_REQUIRED",
        "insufficient_credits",
    }
)

#: Comfy Cloud ``error.type`` values that mean "the bounded queue is full": v1's ``QUEUE_LIMIT``, v2's code.
QUEUE_ERROR_TYPES: frozenset[str] = frozenset({"QUEUE_LIMIT", "queue_full"})

#: ComfyUI's ``error.type`` values for a prompt its validation refused (Comfy Cloud passes them on). Two of them
#: come with empty ``node_errors`` (an unknown node, no output node); ``no_prompt`` is not among them: a body
#: without a prompt is a malformed request, not a workflow to fix.
VALIDATION_ERROR_TYPES: frozenset[str] = frozenset(
    {"prompt_outputs_failed_validation", "prompt_no_outputs", "invalid_prompt"}
)

# Findings of the network probes (DNS, TCP connect, TLS handshake) finer than a Reason, and findings only
# ``comfywatch doctor`` makes: each has its hint below, beside the reasons' own.


class TcpDetail(StrEnum):
    """Why a TCP connect failed, finer than ``Reason``."""

    REFUSED = "refused"  # host answered with RST: nothing listens on the port
    TIMEOUT = "timeout"  # no answer at all: firewall drop, dead host, or a full accept queue
    UNREACHABLE = "unreachable"  # no route, address not available, address family unsupported
    RESET = "reset"
    ERROR = "error"


class TlsProblem(StrEnum):
    """Why a TLS handshake or the certificate check failed."""

    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    SELF_SIGNED = "self_signed"
    HOSTNAME_MISMATCH = "hostname_mismatch"
    UNTRUSTED_CHAIN = "untrusted_chain"
    HANDSHAKE_FAILED = "handshake_failed"


class Diagnosis(StrEnum):
    """Something ``comfywatch doctor`` finds that is no failure reason of a request or job."""

    #: The certificate verifies but expires within the warning window.
    CERT_EXPIRING = "cert_expiring"
    #: The host refused the connection: nothing listens on the port (it fills ``{port}`` in the hint).
    NOTHING_LISTENING = "nothing_listening"
    #: A reverse proxy answers 502/503/504: it is up, ComfyUI behind it is not reachable.
    PROXY_UPSTREAM_DOWN = "proxy_upstream_down"
    #: A proxy in front of ComfyUI answered 401 to the credentials comfywatch sent.
    PROXY_CREDENTIALS_REJECTED = "proxy_credentials_rejected"
    #: A proxy in front of ComfyUI answered 401 and comfywatch sent no credentials.
    PROXY_CREDENTIALS_MISSING = "proxy_credentials_missing"
    #: A 403 from ComfyUI's Origin check or from a proxy's rules.
    ORIGIN_OR_PROXY_FORBIDDEN = "origin_or_proxy_forbidden"
    #: Something other than ComfyUI answers /system_stats.
    NOT_COMFYUI = "not_comfyui"
    #: The /ws upgrade request got no answer at all.
    WEBSOCKET_UPGRADE_HELD = "websocket_upgrade_held"
    #: The /ws upgrade does not reach ComfyUI: a proxy drops the Upgrade/Connection headers.
    WEBSOCKET_UPGRADE_DROPPED = "websocket_upgrade_dropped"
    #: /ws upgraded, but ComfyUI's first frame never came through.
    WEBSOCKET_SILENT = "websocket_silent"
    #: ComfyUI reports no torch device.
    NO_DEVICE = "no_device"
    #: The torch device is no GPU (its kind fills ``{kind}`` in the hint).
    CPU_DEVICE = "cpu_device"
    #: Less than a tenth of the server's RAM is available.
    LOW_RAM = "low_ram"
    #: ComfyUI listens on all interfaces and answers without credentials.
    EXPOSED = "exposed"
    #: The server's Date header is further off this host's clock than the Date header's resolution explains.
    CLOCK_SKEW = "clock_skew"
    #: Jobs wait and nothing runs: the prompt worker is not consuming the queue.
    WORKER_STUCK = "worker_stuck"
    #: More jobs are pending than the server keeps up with.
    QUEUE_BACKLOG = "queue_backlog"
    #: The server has no /api/jobs (older than Dec 2025).
    NO_JOBS_API = "no_jobs_api"
    #: ``--workflow`` names a file that cannot be read.
    WORKFLOW_UNREADABLE = "workflow_unreadable"
    #: ``--workflow`` names a file that is not JSON.
    WORKFLOW_NOT_JSON = "workflow_not_json"
    #: ``--workflow`` names a workflow saved in the UI format, not the API format.
    WORKFLOW_UI_FORMAT = "workflow_ui_format"
    #: The linter found problems ComfyUI's validation would refuse the workflow for.
    WORKFLOW_REJECTED = "workflow_rejected"
    #: A Comfy Cloud target has no API key configured.
    NO_CLOUD_API_KEY = "no_cloud_api_key"
    #: Comfy Cloud's balance endpoint answered without a balance.
    BALANCE_UNKNOWN = "balance_unknown"
    #: $0.00 with no funds and no plan: how Comfy Cloud answers while an account's billing data is missing.
    BILLING_DATA_GAP = "billing_data_gap"
    #: A custom node pack failed to import at the server's start: its nodes are missing.
    CUSTOM_NODES_FAILED = "custom_nodes_failed"
    #: Some of ComfyUI's own optional node modules failed to import (a missing optional dependency).
    BUILTIN_NODES_FAILED = "builtin_nodes_failed"
    #: A file the target's configuration names could not be read as it was when the configuration was loaded.
    TARGET_FILES_CHANGED = "target_files_changed"
    #: doctor itself raised: a bug in comfywatch, not a finding about the target.
    DOCTOR_BUG = "doctor_bug"


HINTS: Mapping[Reason, str] = {
    Reason.DNS: "The host name does not resolve: check the URL's host, /etc/hosts and the DNS server.",
    Reason.CONNECT: (
        "Is ComfyUI running on {address}? Start it, or set url in the config. ComfyUI listens on port 8188 "
        "by default, and only on 127.0.0.1 unless started with --listen; check firewalls between this host "
        "and the server."
    ),
    Reason.TLS: (
        "The TLS handshake failed: the certificate is expired, self-signed, for another host name or from "
        "an untrusted CA. Renew it or configure the CA file."
    ),
    Reason.TIMEOUT: (
        "The server did not answer in time: it may be overloaded (a long job holding the GIL, swapping) "
        "or a proxy in front of it hangs. Raise the timeout only if the server is known to be slow."
    ),
    Reason.AUTH: (
        "401 Unauthorized: ComfyUI itself has no authentication, so this comes from the proxy in front "
        "(basic auth / bearer token) or from Comfy Cloud (invalid or revoked API key). Fix the credentials."
    ),
    Reason.FORBIDDEN: (
        "403 Forbidden: for local ComfyUI usually the Origin check (an Origin header whose host differs "
        "from Host) or a proxy's access rules; on Comfy Cloud the key may not be allowed API access."
    ),
    Reason.PAYMENT: (
        "Comfy Cloud refuses for billing reasons (402, or a 429 with a billing error type): add credits "
        "or activate a paid subscription (Standard, Creator or Pro). Retrying does not help."
    ),
    Reason.RATE_LIMITED: (
        "429 Too Many Requests: slow down. comfywatch waits for Retry-After; lower the poll rate or "
        "max_requests_per_minute if this persists."
    ),
    Reason.QUEUE_FULL: (
        "Comfy Cloud's queue for this workspace is full (429 QUEUE_LIMIT): jobs are piling up faster than "
        "the plan's concurrency runs them. Wait, cancel stuck jobs, or upgrade the plan."
    ),
    Reason.NOT_FOUND: (
        "404 Not Found: the URL path is wrong (a reverse-proxy prefix?) or the server is too old for "
        "this endpoint."
    ),
    Reason.INVALID_REQUEST: (
        "The server rejected the request as malformed (400/413/422): check the workflow and the request "
        "size limit (--max-upload-size)."
    ),
    Reason.SERVER_ERROR: (
        "The server (or the proxy in front of it) failed with a 5xx: a 502/504 HTML page means the "
        "proxy cannot reach ComfyUI; read the ComfyUI log for a traceback."
    ),
    Reason.INVALID_RESPONSE: (
        "The answer is not what ComfyUI sends (not JSON, wrong shape, too large): is another service "
        "listening on that port, or a proxy answering with an HTML page?"
    ),
    Reason.WS_FLOOD: (
        "The server's WebSocket sent pings or pongs faster than 50 a second, messages faster than 5000 a "
        "second, or stopped reading while comfywatch's replies piled up past 256 KiB: ComfyUI does none of "
        "that. comfywatch disconnected it and "
        "re-checks the target; check what listens on that port and any proxy in front of it."
    ),
    Reason.VALIDATION: (
        "ComfyUI rejected the workflow (node_errors): a custom node or a model file is missing, or an "
        "input is invalid. Run `comfywatch doctor --workflow FILE` to see each problem."
    ),
    Reason.EXECUTION_ERROR: (
        "A node raised an exception while running: read the traceback in the ComfyUI log or in "
        "/history for the failing node."
    ),
    Reason.OOM: (
        "Out of GPU memory: use smaller images or batches, run ComfyUI with --lowvram or --reserve-vram, "
        "free memory with POST /free, or stop other processes using the GPU."
    ),
    Reason.INTERRUPTED: "The job was interrupted (POST /interrupt, a cancel, or the UI's cancel button).",
    Reason.LOST: (
        "The job vanished without finishing: the server restarted (queue and history are in memory only) "
        "or Comfy Cloud lost the worker. Check the server's uptime and logs."
    ),
    Reason.OUTPUT_INVALID: (
        "The job succeeded but its output is wrong (missing, not an image of the expected size, text not "
        "echoed): check the nodes and the /view route through any proxy."
    ),
}

#: Where the shared hint speaks of a local ComfyUI or its proxy, Comfy Cloud needs its own words.
CLOUD_HINTS: Mapping[Reason, str] = {
    Reason.AUTH: "Comfy Cloud rejected the API key (invalid, revoked or mistyped): create a new key at "
                 "platform.comfy.org/profile/api-keys and provide it with COMFYWATCH_CLOUD_API_KEY, "
                 "api_key_file or the systemd credential comfywatch_cloud_api_key.",
    Reason.SERVER_ERROR: "Comfy Cloud answered with a server error (5xx): nothing to fix on your side; check the "
                         "Comfy status page and try again later.",
}

#: What to do about a certificate the TLS check refused; a handshake that failed for another reason has the
#: ``tls`` reason's hint.
TLS_HINTS: Mapping[TlsProblem, str] = {
    TlsProblem.EXPIRED: "The certificate has expired: renew it (certbot renew, or your CA) and reload the proxy.",
    TlsProblem.NOT_YET_VALID: "The certificate is not valid yet: check the clock of this host and of the server "
                              "(NTP), or the certificate's start date.",
    TlsProblem.SELF_SIGNED: "The server presents a self-signed certificate: use a CA-signed one (e.g. Let's "
                            "Encrypt), or trust exactly this certificate with tls_ca_file in the target's config.",
    TlsProblem.HOSTNAME_MISMATCH: "The certificate is for another name: connect with a host name listed in it, or "
                                  "reissue it with this name as a subjectAltName.",
    TlsProblem.UNTRUSTED_CHAIN: "The certificate is not signed by a CA this host trusts: serve the full chain "
                                "(fullchain.pem, not cert.pem), or set tls_ca_file to your private CA.",
}

#: A short explanation of what OpenSSL says (``SSLError.reason``) when the peer is not the TLS server expected,
#: e.g. plain HTTP answering the ClientHello.
SSL_REASON_HINTS: Mapping[str, str] = {
    "WRONG_VERSION_NUMBER": "the server did not answer with TLS: plain HTTP on this port?",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "no cipher or signature algorithm in common",
}

#: What fixes a /ws upgrade a proxy does not pass on; also the tail of the hint for an upgrade held unanswered.
_WEBSOCKET_UPGRADE_FIX = (
    "The /ws upgrade does not reach ComfyUI: a reverse proxy drops the Upgrade/Connection headers. For "
    "nginx add to the location block:  proxy_http_version 1.1;  proxy_set_header Upgrade $http_upgrade;  "
    'proxy_set_header Connection "upgrade";  proxy_read_timeout 3600s;'
)

#: A hint with a ``{placeholder}`` is ``.format()``-ed with the fact it names (see :class:`Diagnosis`).
DIAGNOSIS_HINTS: Mapping[Diagnosis, str] = {
    Diagnosis.CERT_EXPIRING: "Renew the certificate (certbot renew / your CA) before it expires.",
    Diagnosis.NOTHING_LISTENING: (
        "Is ComfyUI running, and on port {port}? ComfyUI's default is 8188 (`python main.py --port 8188`); "
        "check `ss -ltnp | grep python`."
    ),
    Diagnosis.PROXY_UPSTREAM_DOWN: (
        "The reverse proxy is up but cannot reach ComfyUI: start ComfyUI, and check the proxy's upstream "
        "address and port (proxy_pass) and its error log."
    ),
    Diagnosis.PROXY_CREDENTIALS_REJECTED: (
        "Check the user name and password (or token) the proxy expects; ComfyUI itself has no authentication."
    ),
    Diagnosis.PROXY_CREDENTIALS_MISSING: (
        "ComfyUI has no authentication of its own: give comfywatch the proxy's credentials (--url with "
        "user:password@ before the host, or headers_file / bearer_token_file in the config)."
    ),
    Diagnosis.ORIGIN_OR_PROXY_FORBIDDEN: (
        "ComfyUI answers 403 with an empty body when an Origin header's host differs from Host (loopback "
        "servers); a proxy may add Origin, deny this client, or want other credentials. Remove the Origin "
        "header in the proxy, start ComfyUI with --enable-cors-header, allow this host in the proxy, or fix "
        "the credentials."
    ),
    Diagnosis.NOT_COMFYUI: (
        "Check the port: ComfyUI serves JSON at /system_stats (default port 8188). If a proxy is in front, "
        "check that it forwards to ComfyUI."
    ),
    Diagnosis.WEBSOCKET_UPGRADE_HELD: (
        "The server (or a proxy) holds the upgrade request: ComfyUI may be overloaded, or a proxy waits for a "
        "response it will never get. " + _WEBSOCKET_UPGRADE_FIX
    ),
    Diagnosis.WEBSOCKET_UPGRADE_DROPPED: _WEBSOCKET_UPGRADE_FIX,
    Diagnosis.WEBSOCKET_SILENT: (
        "ComfyUI sends a 'status' frame as soon as a socket opens, so something in between holds the frames "
        "back (a proxy buffering the stream, or a server too busy to answer). For nginx:  proxy_buffering off;  "
        "proxy_read_timeout 3600s;  and check the server's load."
    ),
    Diagnosis.NO_DEVICE: "ComfyUI lists no device: read its startup log for torch/CUDA errors.",
    Diagnosis.CPU_DEVICE: (
        "The torch device is {kind}: VRAM numbers are system RAM (or unknown) and jobs run without a GPU. "
        "Check the CUDA/ROCm install and that ComfyUI was not started with --cpu."
    ),
    Diagnosis.LOW_RAM: "Little RAM left: models offloaded from VRAM need RAM; close other processes.",
    Diagnosis.EXPOSED: (
        "ComfyUI listens on all interfaces (--listen) and answered without any credentials: anyone who can "
        "reach this port can run workflows and read outputs. Put a reverse proxy with authentication in front, "
        "or bind to 127.0.0.1, or firewall the port."
    ),
    Diagnosis.CLOCK_SKEW: (
        "Run NTP (systemd-timesyncd/chrony) on both hosts: job timestamps and durations come from the server's "
        "clock."
    ),
    Diagnosis.WORKER_STUCK: (
        "The worker is not consuming the queue: the prompt worker thread may have died or be blocked; check "
        "the ComfyUI log and restart it."
    ),
    Diagnosis.QUEUE_BACKLOG: "Jobs arrive faster than this server runs them: add workers or lower load.",
    Diagnosis.NO_JOBS_API: (
        "This ComfyUI has no /api/jobs (added Dec 2025, Comfy-Org/ComfyUI#11054): comfywatch falls back to "
        "/queue + /history. Upgrade ComfyUI for exact job timestamps."
    ),
    Diagnosis.WORKFLOW_UNREADABLE: "Give --workflow a readable API-format JSON file.",
    Diagnosis.WORKFLOW_NOT_JSON: 'Export the workflow again with "Save (API Format)".',
    Diagnosis.WORKFLOW_UI_FORMAT: 'In ComfyUI enable the dev mode options and export it with "Save (API Format)".',
    Diagnosis.WORKFLOW_REJECTED: (
        "Fix each problem listed (install the missing model or custom node, or change the input), then run "
        "doctor --workflow again."
    ),
    Diagnosis.NO_CLOUD_API_KEY: (
        "Create a key at platform.comfy.org/profile/api-keys and provide it with COMFYWATCH_CLOUD_API_KEY, "
        "api_key_file or the systemd credential comfywatch_cloud_api_key."
    ),
    Diagnosis.BALANCE_UNKNOWN: "Check the balance at platform.comfy.org; the API answered without one.",
    Diagnosis.BILLING_DATA_GAP: (
        "Check the balance and plan at platform.comfy.org: if the account has credits or a plan there, Comfy "
        "Cloud's billing data is incomplete (contact Comfy support if it lasts); otherwise add credits."
    ),
    Diagnosis.CUSTOM_NODES_FAILED: (
        "Install the missing dependency into ComfyUI's own Python environment (the error names the module: e.g. "
        "`/path/to/ComfyUI/venv/bin/python -m pip install -r custom_nodes/<pack>/requirements.txt`), or update or "
        "remove the pack from custom_nodes/, then restart ComfyUI. Workflows using its nodes fail until then."
    ),
    Diagnosis.BUILTIN_NODES_FAILED: (
        "Some of ComfyUI's own optional nodes did not load, usually for want of an optional dependency (e.g. "
        "torchaudio for the audio nodes): workflows using them fail. Install it into ComfyUI's Python "
        "(`pip install -r requirements.txt` in the ComfyUI folder) if you need them; otherwise nothing to do."
    ),
    Diagnosis.TARGET_FILES_CHANGED: (
        "A file this target's configuration names (tls_ca_file, bearer_token_file, headers_file, api_key_file) "
        "changed or went away after the configuration was read: run `comfywatch check-config` and fix the file."
    ),
    Diagnosis.DOCTOR_BUG: "This is a comfywatch bug: please report it with this output.",
}


#: What a hint's ``{address}`` reads when the target's URL is not known.
_SOME_ADDRESS = "the host and port of its URL"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def hint_for(reason: Reason, url: str | None = None, *, cloud: bool = False) -> str:
    """The one remediation hint for *reason*, shared by logs, doctor and the runbook (for a Comfy Cloud
    account, *cloud*, in its own words where :data:`CLOUD_HINTS` has them). Given the target's *url*, a hint
    that names the address (``{address}`` in :data:`HINTS`) names the target's ``host:port``."""
    hint = (CLOUD_HINTS.get(reason) if cloud else None) or HINTS[reason]
    if "{address}" not in hint:
        return hint  # most hints name no address: no URL to parse (the status page asks for a thousand at once)
    return hint.replace("{address}", (_address(url) if url else None) or _SOME_ADDRESS)


def _address(url: str) -> str | None:
    """``host:port`` of *url* (the scheme's port when it has none); None when it has no host."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    host = parts.hostname
    if not host or port is None:
        return None
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SkipReason(StrEnum):
    """Why a periodic check ran without sending a request (``comfywatch_check_skips_total``): not a success,
    and not a failure of the target either."""

    #: The server answered 429 with Retry-After, and that pause has not ended.
    RETRY_AFTER = "retry_after"
    #: comfywatch's own ``max_requests_per_minute`` for the account is spent for longer than the check may wait.
    REQUEST_BUDGET = "request_budget"


class AbuseKind(StrEnum):
    """Which bound a WebSocket peer broke."""

    CONTROL_FLOOD = "control_flood"
    DATA_FLOOD = "data_flood"
    UNSENT_BACKLOG = "unsent_backlog"


class WebSocketAbuse(Exception):
    """The peer broke one of the bounds comfywatch.clients.ws sets on every WebSocket and was disconnected."""

    def __init__(self, kind: AbuseKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class BodyTooLargeError(Exception):
    """A response body exceeded the configured cap; reading stopped before it could exhaust memory."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body larger than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure: a :class:`Reason` plus safe, bounded detail for logs and doctor.

    ``detail`` never contains header values, keys or response bodies: only exception class names,
    status codes and short fixed texts.
    """

    reason: Reason
    detail: str
    status: int | None = None
    retry_after: float | None = None
    error_type: str | None = None

    @property
    def hint(self) -> str:
        """The remediation hint for this failure's reason."""
        return hint_for(self.reason)


def _error_type(body: Any) -> str | None:
    """Comfy Cloud's discriminator: ``error.type`` (v1 prompt errors) or ``error.code`` (v2)."""
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    if isinstance(error, Mapping):
        for key in ("type", "code"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value[:64]
    return None


#: The longest Retry-After pause honoured: the header comes from a server comfywatch watches, not one it
#: trusts, and a broken or hostile one must not silence an account's checks for a day.
MAX_RETRY_AFTER = 3600.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, at most :data:`MAX_RETRY_AFTER`; ``None`` if absent or bad.

    RFC 9110 allows delta-seconds or an HTTP-date (a date in the past is 0 s, counted from *now*, epoch
    seconds, default the wall clock). Fractional seconds, outside the RFC's grammar, are read as meant rather
    than refused.
    """
    if value is None:
        return None
    text = value.strip()
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until(text, time.time() if now is None else now)
    if seconds is None or seconds < 0 or seconds != seconds:  # negative or NaN
        return None
    return min(seconds, MAX_RETRY_AFTER)


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's "no time zone known"; HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def classify_status(status: int, body: Any = None, retry_after: str | None = None) -> Failure | None:
    """Classify an HTTP status (with the decoded JSON *body* when there is one); ``None`` for success.

    429 has three meanings on Comfy Cloud and is told apart by ``error.type`` (docs/cloud.md): a billing
    type is ``payment``, ``QUEUE_LIMIT``/``queue_full`` is ``queue_full``, anything else is rate limiting.
    A 400 carrying ``node_errors`` or a validation ``error.type`` is ComfyUI's own validation refusing the
    prompt (locally or behind Comfy Cloud): ``validation``, the workflow to fix, not a malformed request.
    """
    if 200 <= status < 300:
        return None
    error_type = _error_type(body)
    delay = parse_retry_after(retry_after)
    reason: Reason
    if status == 401:
        reason = Reason.AUTH
    elif status == 402:
        reason = Reason.PAYMENT
    elif status == 403:
        reason = Reason.FORBIDDEN
    elif status == 404:
        reason = Reason.NOT_FOUND
    elif status == 429:
        if error_type in BILLING_ERROR_TYPES:
            reason = Reason.PAYMENT
        elif error_type in QUEUE_ERROR_TYPES:
            reason = Reason.QUEUE_FULL
        else:
            reason = Reason.RATE_LIMITED
    elif status >= 500:
        reason = Reason.SERVER_ERROR
    elif status == 400 and _refused_by_validation(body, error_type):
        reason = Reason.VALIDATION
    elif 400 <= status < 500:
        reason = Reason.INVALID_REQUEST
    else:
        # 1xx/3xx reaching us means a redirect we refused to follow or something that is not ComfyUI.
        reason = Reason.INVALID_RESPONSE
    return Failure(reason, f"HTTP {status}", status=status, retry_after=delay, error_type=error_type)


def _refused_by_validation(body: Any, error_type: str | None) -> bool:
    node_errors = body.get("node_errors") if isinstance(body, Mapping) else None
    return error_type in VALIDATION_ERROR_TYPES or (isinstance(node_errors, Mapping) and bool(node_errors))


def _causes(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 16:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify_exception(exc: BaseException) -> Failure:
    """Map any exception raised while talking to a server to a :class:`Failure`.

    Walks the cause chain because aiohttp wraps the interesting part (``socket.gaierror`` for DNS,
    ``ssl.SSLError`` for TLS) inside its own connector errors.
    """
    name = type(exc).__name__
    chain = _causes(exc)
    if isinstance(exc, ParseError):
        return Failure(Reason.INVALID_RESPONSE, f"unexpected response shape: {str(exc)[:200]}")
    if isinstance(exc, BodyTooLargeError):
        return Failure(Reason.INVALID_RESPONSE, str(exc))
    if isinstance(exc, UnicodeDecodeError):
        return Failure(Reason.INVALID_RESPONSE, "response is not valid UTF-8")
    if isinstance(exc, ValueError) and name == "JSONDecodeError":
        return Failure(Reason.INVALID_RESPONSE, "response is not valid JSON")
    for cause in chain:
        if isinstance(cause, WebSocketAbuse):
            return Failure(Reason.WS_FLOOD, f"WebSocket peer disconnected: {cause}")
        if isinstance(cause, socket.gaierror):
            return Failure(Reason.DNS, f"name resolution failed ({name})")
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            # aiohttp's ClientConnectorCertificateError is itself a CertificateError but says nothing; the
            # ssl error it wraps tells expired from self-signed from wrong host.
            inner = getattr(cause, "certificate_error", None)
            cause = inner if isinstance(inner, ssl.SSLError | ssl.CertificateError) else cause
            return Failure(Reason.TLS, f"TLS failure: {type(cause).__name__}: {_ssl_reason(cause)}")
    if isinstance(exc, TimeoutError):  # asyncio's, and aiohttp's ServerTimeoutError, are TimeoutErrors
        return Failure(Reason.TIMEOUT, f"timed out ({name})")
    ws_status = _websocket_status(exc) if type(exc).__module__.startswith("websockets") else None
    if ws_status is not None:
        failure = classify_status(ws_status)
        if failure is not None:
            return Failure(failure.reason, f"WebSocket upgrade refused: HTTP {ws_status}", status=ws_status)
        # 2xx/3xx instead of 101: something in between (a proxy) did not pass the upgrade on.
        return Failure(Reason.INVALID_RESPONSE, f"WebSocket upgrade answered HTTP {ws_status} instead of 101",
                       status=ws_status)
    if isinstance(exc, OSError | EOFError):
        return Failure(Reason.CONNECT, f"connection failed ({name})")
    # The server closed or reset the connection before (ServerDisconnectedError) or while (ClientPayloadError:
    # "not enough data") sending its answer. A body that arrived whole but would not decompress is the
    # server's answer being wrong, not the connection.
    if isinstance(exc, aiohttp.ClientConnectionError) or (
        isinstance(exc, aiohttp.ClientPayloadError)
        and not any(isinstance(cause, ContentEncodingError) for cause in chain)
    ):
        return Failure(Reason.CONNECT, f"connection failed ({name})")
    if name in {"InvalidHandshake", "InvalidMessage", "InvalidUpgrade", "ConnectionClosedError",
                "ConnectionClosed", "ConnectionClosedOK", "InvalidURI", "PayloadTooBig", "ProtocolError"}:
        return Failure(Reason.CONNECT, f"WebSocket failure ({name})")
    return Failure(Reason.INVALID_RESPONSE, f"unexpected error ({name})")


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
    return str(reason)[:120] if reason else type(exc).__name__


def _websocket_status(exc: BaseException) -> int | None:
    """The HTTP status of a refused WebSocket upgrade (websockets' ``InvalidStatus``), if any."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


_OOM_MARKERS = ("outofmemory", "out of memory", "oomerror", "allocation on device", "cuda error: out of")
_PAYMENT_EXCEPTIONS = frozenset({"InsufficientFundsError", "InactiveSubscriptionError"})


def classify_execution_error(exception_type: object, exception_message: object) -> Reason:
    """Reason for a job that failed while running: ``oom``, ``payment`` (Cloud billing) or ``execution_error``.

    The one rule for a local ComfyUI's errors and Comfy Cloud's. Out-of-memory shows up as
    ``torch.OutOfMemoryError`` / ``torch.cuda.OutOfMemoryError`` locally, as Comfy Cloud's ``OOMError``, and
    sometimes only in the message of a generic ``RuntimeError``. Both fields come from a server's JSON: a
    value that is not a string counts as absent.
    """
    kind = exception_type.strip() if isinstance(exception_type, str) else ""
    if kind.rsplit(".", 1)[-1] in _PAYMENT_EXCEPTIONS:
        return Reason.PAYMENT
    message = exception_message[:2000] if isinstance(exception_message, str) else ""
    text = f"{kind} {message}".lower()
    if any(marker in text for marker in _OOM_MARKERS):
        return Reason.OOM
    return Reason.EXECUTION_ERROR


# ---------------------------------------------------------------------------------------------------------
# Network probes: a TCP connect failure's detail, and a TLS failure's problem.


_UNREACHABLE_ERRNOS = frozenset(
    {
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,
        errno.EAFNOSUPPORT,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
    }
)
_RESET_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE})
# When several addresses fail differently, report the most telling: a refusal proves the host is up.
_TELLING_DETAILS = (TcpDetail.REFUSED, TcpDetail.RESET, TcpDetail.TIMEOUT, TcpDetail.UNREACHABLE)


def classify_connect_error(exc: BaseException) -> tuple[Reason, TcpDetail]:
    """Map a connect failure to its reason and detail (refused, timeout, unreachable, reset, error)."""
    if isinstance(exc, TimeoutError):  # asyncio deadline, or the kernel's ETIMEDOUT
        return Reason.TIMEOUT, TcpDetail.TIMEOUT
    code = exc.errno if isinstance(exc, OSError) else None
    if code == errno.ECONNREFUSED:
        return Reason.CONNECT, TcpDetail.REFUSED
    if code in _UNREACHABLE_ERRNOS:
        return Reason.CONNECT, TcpDetail.UNREACHABLE
    if code in _RESET_ERRNOS:
        return Reason.CONNECT, TcpDetail.RESET
    return Reason.CONNECT, TcpDetail.ERROR


def connect_error_rank(exc: BaseException) -> int:
    """Sort key over one host's connect failures (one per address): the most telling failure sorts first."""
    detail = classify_connect_error(exc)[1]
    return _TELLING_DETAILS.index(detail) if detail in _TELLING_DETAILS else len(_TELLING_DETAILS)


# OpenSSL X509_V_ERR_* codes (x509_vfy.h); anything else that fails verification is a chain problem.
_VERIFY_CODES: Mapping[int, TlsProblem] = {
    9: TlsProblem.NOT_YET_VALID,  # CERT_NOT_YET_VALID
    10: TlsProblem.EXPIRED,  # CERT_HAS_EXPIRED
    18: TlsProblem.SELF_SIGNED,  # DEPTH_ZERO_SELF_SIGNED_CERT
    62: TlsProblem.HOSTNAME_MISMATCH,  # HOSTNAME_MISMATCH
    64: TlsProblem.HOSTNAME_MISMATCH,  # IP_ADDRESS_MISMATCH
}


def classify_tls_error(exc: BaseException) -> TlsProblem:
    """Map an exception raised by a TLS handshake to a ``TlsProblem``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_CODES.get(exc.verify_code, TlsProblem.UNTRUSTED_CHAIN)
    return TlsProblem.HANDSHAKE_FAILED
