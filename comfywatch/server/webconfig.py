"""Protect ``/metrics`` with the Prometheus exporter-toolkit ``web-config.yml`` (TLS and basic auth).

Users already write this file for node_exporter and friends, so comfywatch reads the same format::

    tls_server_config:
      cert_file: server.crt            # relative paths are relative to this file, as in the toolkit
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven / NoClientCert
      client_ca_file: clients-ca.crt
      min_version: TLS12               # TLS12 | TLS13
    http_server_config:
      http2: true                      # accepted and ignored: aiohttp serves HTTP/1.1
      headers:
        X-Content-Type-Options: nosniff
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt hash, e.g. from `htpasswd -nBC 10 "" | tr -d ':\\n'`

Differences from the Go toolkit, each refused with a clear :class:`WebConfigError` rather than ignored:
inline ``cert``/``key``/``client_ca``, ``RequestClientCert``/``RequireAnyClientCert`` (Python's ``ssl``
cannot ask for a certificate without verifying it), ``client_allowed_sans``, ``curve_preferences``,
``rate_limit`` and TLS 1.0/1.1. Certificates are read when the file is loaded (startup and SIGHUP reload),
not on every connection.

Error messages name the file and the offending key, never a password or hash value.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import os
import re
import secrets
import ssl
import stat
from collections import Counter, OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import bcrypt
import yaml
from aiohttp import BasicAuth, hdrs, web
from aiohttp.typedefs import Handler, Middleware

from comfywatch.config import MAX_CONFIG_BYTES, read_bounded_text

__all__ = [
    "AUTH_REALM",
    "WebConfig",
    "WebConfigError",
    "basic_auth_middleware",
    "install_response_headers",
    "load_web_config",
]

AUTH_REALM = "comfywatch"


class WebConfigError(ValueError):
    """The web config file is unreadable or invalid; the message says which file and key."""


@dataclass(frozen=True)
class WebConfig:
    """What a ``web-config.yml`` asks of the HTTP server.

    Attributes:
        ssl_context: server-side TLS context, or None to serve plain HTTP (no ``tls_server_config``).
        basic_auth_users: user name → bcrypt hash; empty means no authentication.
        headers: extra response headers (``http_server_config.headers``).
    """

    ssl_context: ssl.SSLContext | None = None
    basic_auth_users: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


# Top-level and per-section keys of the toolkit format, with the ones comfywatch cannot honour.
_TOP_KEYS = frozenset({"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"})
_TLS_KEYS = frozenset(
    {
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "cert",
        "key",
        "client_ca",
        "client_allowed_sans",
        "curve_preferences",
    }
)
_HTTP_KEYS = frozenset({"http2", "headers"})
_UNSUPPORTED = {
    "rate_limit": "put a reverse proxy in front of comfywatch for rate limiting",
    "tls_server_config.cert": "write the certificate to a file and use cert_file",
    "tls_server_config.key": "write the key to a file and use key_file",
    "tls_server_config.client_ca": "write the CA to a file and use client_ca_file",
    "tls_server_config.client_allowed_sans": "issue client certificates from a dedicated CA instead",
    "tls_server_config.curve_preferences": "remove it; OpenSSL's defaults are used",
}

_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}

# Go (IANA) names accepted by the toolkit → OpenSSL names. TLS 1.3 suites are not configurable in Go
# either, so they are accepted and have no effect.
_CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_CIPHERS = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)

# The toolkit allows only these headers, and for two of them only these values (keeps the ecosystem
# consistent; a typo is an error, not a silently missing header).
_HEADERS: dict[str, frozenset[str] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": frozenset({"nosniff"}),
    "X-Frame-Options": frozenset({"deny", "sameorigin"}),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_BCRYPT_HASH = re.compile(rb"\$2[abxy]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")


# Loading.


def load_web_config(path: Path) -> WebConfig:
    """Read and validate a ``web-config.yml``; build the TLS context and the user table.

    Raises:
        WebConfigError: unreadable file, bad or too deeply nested YAML, unknown or unsupported key, wrong
            type, a file name with a NUL character, unloadable certificate or key, or a password entry that
            is not a bcrypt hash.
    """
    try:
        text = read_bounded_text(path, MAX_CONFIG_BYTES)
    except ValueError as exc:
        raise WebConfigError(f"{path}: cannot read web config: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        # The YAML error text can quote the offending line, which may hold a hash: say where, not what.
        raise WebConfigError(f"{path}: invalid YAML{where}") from None
    except RecursionError:
        # PyYAML's Python loader recurses once per level: a few thousand nested brackets exhaust the stack.
        raise WebConfigError(f"{path}: invalid YAML: nested too deeply") from None
    if data is None:
        data = {}
    root = _mapping(data, path, "the file")
    _check_keys(root, _TOP_KEYS, path, "")

    tls = _mapping(root.get("tls_server_config") or {}, path, "tls_server_config")
    http = _mapping(root.get("http_server_config") or {}, path, "http_server_config")
    users = _mapping(root.get("basic_auth_users") or {}, path, "basic_auth_users")
    _check_keys(tls, _TLS_KEYS, path, "tls_server_config.")
    _check_keys(http, _HTTP_KEYS, path, "http_server_config.")

    return WebConfig(
        ssl_context=_ssl_context(tls, path.parent, path),
        basic_auth_users=MappingProxyType(_users(users, path)),
        headers=MappingProxyType(_headers(http, path)),
    )


def _mapping(value: object, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise WebConfigError(f"{path}: {where} must be a mapping of names to values")
    return value


def _check_keys(section: Mapping[str, Any], known: frozenset[str], path: Path, prefix: str) -> None:
    for key in section:
        full = prefix + key
        if key not in known:
            raise WebConfigError(f"{path}: unknown key {full!r} (valid: {', '.join(sorted(known))})")
        if full in _UNSUPPORTED:
            raise WebConfigError(f"{path}: {full} is not supported by comfywatch: {_UNSUPPORTED[full]}")


def _string(section: Mapping[str, Any], key: str, path: Path, prefix: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WebConfigError(f"{path}: {prefix}{key} must be a string")
    return value


def _file(section: Mapping[str, Any], key: str, path: Path, prefix: str) -> str | None:
    value = _string(section, key, path, prefix)
    if value is not None and "\0" in value:
        # No file name holds one, and ssl and os raise ValueError (not OSError) for it.
        raise WebConfigError(f"{path}: {prefix}{key} must not contain a NUL character")
    return value


def _no_fifo(file: Path, path: Path, key: str) -> None:
    """Refuse a file ssl would wait on: it opens files by name, and opening a FIFO waits for a writer. A missing
    file is left to ssl, which says so."""
    try:
        mode = file.stat().st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise WebConfigError(f"{path}: {key}: not a regular file: {file}")


def _resolve(value: str, base: Path) -> Path:
    # Relative to the config file's directory, like the toolkit's SetDirectory.
    return (base / value) if not os.path.isabs(value) else Path(value)


def _ssl_context(tls: Mapping[str, Any], base: Path, path: Path) -> ssl.SSLContext | None:
    p = "tls_server_config."
    cert = _file(tls, "cert_file", path, p)
    key = _file(tls, "key_file", path, p)
    client_auth = _string(tls, "client_auth_type", path, p)
    client_ca = _file(tls, "client_ca_file", path, p)
    if not (cert or key or client_auth or client_ca):
        return None  # the toolkit's "TLS config is not present": plain HTTP
    if not cert:
        raise WebConfigError(f"{path}: {p}cert_file is required when TLS is configured")
    if not key:
        raise WebConfigError(f"{path}: {p}key_file is required when TLS is configured")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _version(tls, "min_version", ssl.TLSVersion.TLSv1_2, path)
    ctx.maximum_version = _version(tls, "max_version", ssl.TLSVersion.TLSv1_3, path)
    if ctx.minimum_version > ctx.maximum_version:
        raise WebConfigError(f"{path}: {p}min_version is above max_version")
    cert_path, key_path = _resolve(cert, base), _resolve(key, base)
    _no_fifo(cert_path, path, f"{p}cert_file")
    _no_fifo(key_path, path, f"{p}key_file")
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except FileNotFoundError:
        # ssl's FileNotFoundError names no file: say which of the two is missing.
        missing = " and ".join(str(f) for f in (cert_path, key_path) if not f.exists()) or str(cert_path)
        raise WebConfigError(f"{path}: {p}cert_file/key_file: file not found: {missing}") from None
    except (OSError, ssl.SSLError) as exc:
        raise WebConfigError(
            f"{path}: {p}cert_file/key_file: cannot load the certificate and key "
            f"(not PEM, encrypted key, or key does not match certificate): {type(exc).__name__}"
        ) from None

    mode_name = client_auth or "NoClientCert"
    if mode_name not in _CLIENT_AUTH:
        hint = (
            " (Python's ssl cannot request a certificate without verifying it)"
            if mode_name in {"RequestClientCert", "RequireAnyClientCert", "RequireClientCert"}
            else ""
        )
        raise WebConfigError(
            f"{path}: {p}client_auth_type {mode_name!r} is not supported{hint}; "
            f"use one of {', '.join(_CLIENT_AUTH)}"
        )
    mode = _CLIENT_AUTH[mode_name]
    if client_ca and mode == ssl.CERT_NONE:
        # Same rule as the toolkit: a CA without a policy is almost certainly a mistake.
        raise WebConfigError(f"{path}: {p}client_ca_file is set but client_auth_type is NoClientCert")
    if mode != ssl.CERT_NONE and not client_ca:
        raise WebConfigError(f"{path}: {p}client_auth_type {mode_name} needs client_ca_file")
    if client_ca:
        ca_path = _resolve(client_ca, base)
        _no_fifo(ca_path, path, f"{p}client_ca_file")
        try:
            ctx.load_verify_locations(cafile=ca_path)
        except FileNotFoundError:
            raise WebConfigError(f"{path}: {p}client_ca_file: file not found: {ca_path}") from None
        except (OSError, ssl.SSLError) as exc:
            raise WebConfigError(
                f"{path}: {p}client_ca_file: no PEM certificate could be loaded ({type(exc).__name__})"
            ) from None
    ctx.verify_mode = mode

    _ciphers(ctx, tls, path)
    prefer = tls.get("prefer_server_cipher_suites", True)
    if not isinstance(prefer, bool):
        raise WebConfigError(f"{path}: {p}prefer_server_cipher_suites must be true or false")
    if prefer:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def _version(tls: Mapping[str, Any], key: str, default: ssl.TLSVersion, path: Path) -> ssl.TLSVersion:
    name = _string(tls, key, path, "tls_server_config.")
    if name is None:
        return default
    if name not in _TLS_VERSIONS:
        extra = " (TLS 1.0 and 1.1 are insecure and not offered)" if name in {"TLS10", "TLS11"} else ""
        raise WebConfigError(
            f"{path}: tls_server_config.{key} {name!r} is not supported{extra}; use TLS12 or TLS13"
        )
    return _TLS_VERSIONS[name]


def _ciphers(ctx: ssl.SSLContext, tls: Mapping[str, Any], path: Path) -> None:
    suites = tls.get("cipher_suites")
    if suites is None or suites == []:
        return
    if not isinstance(suites, list) or not all(isinstance(s, str) for s in suites):
        raise WebConfigError(f"{path}: tls_server_config.cipher_suites must be a list of names")
    names = []
    for suite in suites:
        if suite in _TLS13_CIPHERS:
            continue
        if suite not in _CIPHERS:
            raise WebConfigError(f"{path}: tls_server_config.cipher_suites: unknown cipher {suite!r}")
        names.append(_CIPHERS[suite])
    if names:
        try:
            ctx.set_ciphers(":".join(names))
        except ssl.SSLError:
            raise WebConfigError(
                f"{path}: tls_server_config.cipher_suites: none of the listed ciphers is available"
            ) from None


def _users(users: Mapping[str, Any], path: Path) -> dict[str, bytes]:
    table: dict[str, bytes] = {}
    for name, value in users.items():
        if not name or ":" in name:
            raise WebConfigError(f"{path}: basic_auth_users: user name {name!r} is empty or contains ':'")
        hashed = value.encode() if isinstance(value, str) else b""
        if not _BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(
                f"{path}: basic_auth_users.{name}: the value is not a bcrypt hash "
                "(expected $2y$/$2b$ followed by cost and 53 characters, e.g. from `htpasswd -nBC 10`)"
            )
        table[name] = hashed
    return table


def _headers(http: Mapping[str, Any], path: Path) -> dict[str, str]:
    if "http2" in http and not isinstance(http["http2"], bool):
        raise WebConfigError(f"{path}: http_server_config.http2 must be true or false")
    raw = _mapping(http.get("headers") or {}, path, "http_server_config.headers")
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if name not in _HEADERS:
            raise WebConfigError(
                f"{path}: http_server_config.headers: header {name!r} cannot be configured "
                f"(allowed: {', '.join(_HEADERS)})"
            )
        if not isinstance(value, str):
            raise WebConfigError(f"{path}: http_server_config.headers.{name} must be a string")
        allowed = _HEADERS[name]
        if allowed is not None and value not in allowed:
            raise WebConfigError(
                f"{path}: http_server_config.headers.{name} must be one of {', '.join(sorted(allowed))}"
            )
        if "\r" in value or "\n" in value:
            raise WebConfigError(f"{path}: http_server_config.headers.{name} must be a single line")
        if value:
            headers[name] = value
    return headers


# Serving.


def install_response_headers(app: web.Application, headers: Mapping[str, str]) -> None:
    """Add ``headers`` to every response of ``app``, including 401s and errors. Call before the app starts."""
    if not headers:
        return
    frozen = dict(headers)

    async def _add(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(frozen)

    app.on_response_prepare.append(_add)


#: bcrypt runs on this one thread, never on the default executor: other off-loop work (gzip of large
#: /metrics bodies) must not queue behind password guesses, and one worker leaves the second core to the loop.
_BCRYPT_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="comfywatch-bcrypt")


class _Verdict(enum.Enum):
    ACCEPTED = enum.auto()
    REFUSED = enum.auto()
    BUSY = enum.auto()  # not checked: too many checks already waiting; the client should retry


class _BcryptVerifier:
    """Checks passwords against bcrypt hashes off the event loop, with bounded work per caller.

    bcrypt is deliberately slow (~0.1 s at cost 10), so a flood of guesses must cost the daemon a bounded
    amount of it and never delay the authorised scraper by more than a few checks:

    * Results are cached under an HMAC of (user, hash, password) keyed by a per-process random key, so the
      plain password is never stored and a leaked cache is useless offline. A success cache makes every
      scrape after the first free; a failure cache makes a repeated wrong password cost nothing.
    * Concurrent requests with the same credentials share one check.
    * At most :attr:`MAX_PENDING` checks wait or run at once, at most :attr:`MAX_PENDING_PER_PEER` of them
      for one client address; a request over either bound is answered BUSY without running bcrypt. So a
      flood from one host leaves room for the scraper's check, and the wait for any admitted check is at
      most MAX_PENDING bcrypt runs.
    """

    SUCCESS_CACHE = 64
    FAILURE_CACHE = 4096
    MAX_PENDING = 8
    MAX_PENDING_PER_PEER = 2

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._key = secrets.token_bytes(32)
        self._accepted: OrderedDict[bytes, None] = OrderedDict()
        self._refused: OrderedDict[bytes, None] = OrderedDict()
        self._checking: dict[bytes, asyncio.Future[bool]] = {}
        self._pending_by_peer: Counter[str] = Counter()
        self._dummy: bytes | None = None
        # Unknown users are checked against a dummy hash of the same cost, so response time does not
        # reveal which user names exist.
        self._dummy_cost = max((int(h.split(b"$")[2]) for h in self._users.values()), default=10)

    async def verify(self, user: str, password: str, peer: str) -> _Verdict:
        hashed = self._users.get(user)
        digest = hmac.new(
            self._key, b"\0".join([user.encode(), hashed or b"", password.encode()]), hashlib.sha256
        ).digest()
        for cache, verdict in ((self._accepted, _Verdict.ACCEPTED), (self._refused, _Verdict.REFUSED)):
            if digest in cache:
                cache.move_to_end(digest)
                return verdict
        check = self._checking.get(digest)
        if check is None:
            if len(self._checking) >= self.MAX_PENDING or self._pending_by_peer[peer] >= self.MAX_PENDING_PER_PEER:
                return _Verdict.BUSY
            check = self._start(digest, hashed, password.encode(), peer)
        # Shielded: a client that hangs up must not cancel a check other requests share.
        return _Verdict.ACCEPTED if await asyncio.shield(check) else _Verdict.REFUSED

    def _start(self, digest: bytes, hashed: bytes | None, password: bytes, peer: str) -> asyncio.Future[bool]:
        check = asyncio.get_running_loop().run_in_executor(_BCRYPT_POOL, self._check, hashed, password)
        self._checking[digest] = check
        self._pending_by_peer[peer] += 1

        def _finished(done: asyncio.Future[bool]) -> None:
            del self._checking[digest]
            self._pending_by_peer[peer] -= 1
            if not self._pending_by_peer[peer]:
                del self._pending_by_peer[peer]
            if not done.cancelled() and done.exception() is None:
                cache, size = (
                    (self._accepted, self.SUCCESS_CACHE) if done.result() else (self._refused, self.FAILURE_CACHE)
                )
                cache[digest] = None
                while len(cache) > size:
                    cache.popitem(last=False)

        check.add_done_callback(_finished)
        return check

    def _check(self, hashed: bytes | None, password: bytes) -> bool:
        """Runs on the bcrypt thread: True only for a known user's right password."""
        if hashed is None:
            if self._dummy is None:
                salt = bcrypt.gensalt(self._dummy_cost)
                self._dummy = bcrypt.hashpw(secrets.token_bytes(16).hex().encode(), salt)
            self._checkpw(password, self._dummy)
            return False
        return self._checkpw(password, hashed)

    @staticmethod
    def _checkpw(password: bytes, hashed: bytes) -> bool:
        try:
            return bcrypt.checkpw(password, hashed)
        except ValueError:  # bcrypt refuses passwords over 72 bytes
            return False


def basic_auth_middleware(
    users: Mapping[str, bytes], *, exempt_paths: frozenset[str] = frozenset({"/healthz"})
) -> Middleware:
    """An aiohttp middleware that requires HTTP basic auth from one of ``users`` (name → bcrypt hash).

    Requests to ``exempt_paths`` pass without credentials (liveness checks). Missing, malformed or wrong
    credentials get ``401`` with ``WWW-Authenticate: Basic realm="comfywatch"``; the response never says
    which part was wrong. Credentials that would need a bcrypt check while too many are already waiting get
    ``503`` with ``Retry-After: 1`` (see :class:`_BcryptVerifier`). With no users, every request passes.
    """
    verifier = _BcryptVerifier(users)
    challenge = {hdrs.WWW_AUTHENTICATE: f'Basic realm="{AUTH_REALM}"'}
    retry = {hdrs.RETRY_AFTER: "1"}

    @web.middleware
    async def _basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not users or request.path in exempt_paths:
            return await handler(request)
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        try:
            creds = BasicAuth.decode(header, encoding="utf-8")
        except (ValueError, UnicodeDecodeError):
            creds = None
        verdict = _Verdict.REFUSED if creds is None else await verifier.verify(
            creds.login, creds.password, request.remote or ""
        )
        if verdict is _Verdict.BUSY:
            return web.Response(status=503, text="503: authentication busy, retry\n", headers=retry)
        if verdict is _Verdict.REFUSED:
            return web.Response(status=401, text="401: Unauthorized\n", headers=challenge)
        return await handler(request)

    return _basic_auth
