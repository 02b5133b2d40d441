"""Network-level probes: DNS resolution, TCP connect and the TLS handshake, each timed and classified (by
:mod:`comfywatch.errors`: ``TcpDetail``, ``TlsProblem``).

Used by ``comfywatch doctor`` (the network section) and by the daemon's TLS check, whose
``CertInfo.not_after`` feeds ``comfyui_tls_cert_not_after_timestamp_seconds``.

Contract: the probes never raise for network failures. Every result carries ``reason`` (a ``Reason``:
``dns``, ``connect``, ``tls`` or ``timeout``; ``None`` on success) and an ``error`` text that is safe to
print: it names hosts, addresses and OS/TLS messages, never URLs (which may carry userinfo or tokens).
A timeout is always ``Reason.TIMEOUT``; *where* it happened is the step that reports it.

Why a second handshake: when verification fails, OpenSSL aborts before Python can see the certificate. To
still report what the server presents (expiry, names, issuer), ``tls_handshake`` connects again without
verification, takes the DER certificate and parses it with ``cryptography``. Python's ``ssl`` cannot parse
a DER certificate on its own, so without ``cryptography`` the facts are known only when verification
succeeded (from ``getpeercert()``); otherwise ``TlsResult.cert`` is ``None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

from comfywatch.errors import (
    SSL_REASON_HINTS,
    Reason,
    TcpDetail,
    TlsProblem,
    classify_connect_error,
    classify_tls_error,
    connect_error_rank,
)

__all__ = [
    "EXPIRY_WARN_DAYS",
    "CertInfo",
    "DnsResult",
    "NetReport",
    "Step",
    "TcpResult",
    "TlsResult",
    "cert_info_from_der",
    "cert_info_from_dict",
    "probe_url",
    "resolve",
    "tcp_connect",
    "tls_handshake",
]

#: Doctor warns when the served certificate expires in fewer days than this.
EXPIRY_WARN_DAYS: Final = 14.0

# Closing a TLS stream waits for the peer's close_notify; a silent peer must not hold a probe for long.
_CLOSE_GRACE_S: Final = 1.0

Step = Literal["dns", "tcp", "tls"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class DnsResult:
    """Outcome of resolving one host name."""

    host: str
    addresses: tuple[str, ...]
    seconds: float
    reason: Reason | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when at least one address was found."""
        return self.reason is None


@dataclass(frozen=True, slots=True)
class TcpResult:
    """Outcome of opening (and at once closing) a TCP connection."""

    host: str
    port: int
    seconds: float  # from the first connect attempt to success or giving up; excludes name resolution
    address: str | None = None  # the IP that accepted the connection
    reason: Reason | None = None
    detail: TcpDetail | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the connection was established."""
        return self.reason is None

    @property
    def peer(self) -> str | None:
        """The connected address as ``ip:port`` (``[ip]:port`` for IPv6), or None."""
        if self.address is None:
            return None
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class CertInfo:
    """Facts about the certificate a server presented (its leaf), whatever verification said."""

    subject_cn: str | None
    sans: tuple[str, ...]  # DNS names and IP addresses, as plain strings
    issuer: str | None  # RFC 4514 form, e.g. "CN=R11,O=Let's Encrypt,C=US"
    not_before: float | None  # epoch seconds
    not_after: float | None  # epoch seconds: the value of comfyui_tls_cert_not_after_timestamp_seconds
    days_left: float | None  # negative once expired
    self_signed: bool | None
    sha256_fingerprint: str | None  # hex, colon-free; tells which certificate is actually served


@dataclass(frozen=True, slots=True)
class TlsResult:
    """Outcome of a TLS handshake against ``server_hostname``.

    ``problem`` is set for TLS-level failures (``reason`` ``tls``, or ``timeout`` with
    ``handshake_failed``); it is None when the failure came earlier (``dns``/``connect``) or on success.
    """

    ok: bool
    seconds: float | None  # the handshake alone (after TCP connect); None if it never started
    server_hostname: str
    verified: bool  # whether the certificate chain and hostname were checked
    protocol: str | None = None  # "TLSv1.3"
    cipher: str | None = None
    cert: CertInfo | None = None
    reason: Reason | None = None
    problem: TlsProblem | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class NetReport:
    """DNS, TCP and (for https/wss) TLS results for one URL; a step after a failed one is None."""

    scheme: str
    host: str
    port: int
    dns: DnsResult
    tcp: TcpResult | None
    tls: TlsResult | None
    uses_tls: bool

    @property
    def failed_step(self) -> Step | None:
        """The first step that failed, or None."""
        if not self.dns.ok:
            return "dns"
        if self.tcp is not None and not self.tcp.ok:
            return "tcp"
        if self.tls is not None and not self.tls.ok:
            return "tls"
        return None

    @property
    def ok(self) -> bool:
        """True when every applicable step succeeded."""
        return self.failed_step is None

    @property
    def reason(self) -> Reason | None:
        """The reason of the first failed step."""
        step = self.failed_step
        if step == "dns":
            return self.dns.reason
        if step == "tcp" and self.tcp is not None:
            return self.tcp.reason
        if step == "tls" and self.tls is not None:
            return self.tls.reason
        return None

    @property
    def skipped(self) -> tuple[Step, ...]:
        """Steps that apply to this URL but did not run because an earlier one failed."""
        steps: list[Step] = ["tcp", "tls"] if self.uses_tls else ["tcp"]
        return tuple(s for s in steps if (self.tcp if s == "tcp" else self.tls) is None)


# --- Certificate facts and error texts (pure) ----------------------------------------------------------


def _days_left(not_after: float | None, now: float) -> float | None:
    return None if not_after is None else (not_after - now) / 86400.0


def cert_info_from_der(der: bytes, *, now: float) -> CertInfo | None:
    """Parse a DER certificate with ``cryptography``; None if it is not installed or cannot parse it at all.

    ``cryptography`` decodes the names and extensions only when they are read, and rejects what it finds
    malformed (an invalid GeneralName in any extension, an extension listed twice, a name that is not valid
    UTF-8) although OpenSSL loads the certificate and completes the handshake with it. Each part is read on its
    own, so that a malformed one is reported as unknown (``None``; no ``sans`` when the extensions do not
    parse) and the validity period, which is what the expiry metric needs, is still read.
    """
    try:
        # optional at runtime (a dev dependency so far); the ignores keep mypy quiet where it is absent
        from cryptography import x509  # type: ignore[import-not-found,unused-ignore]
        from cryptography.exceptions import (  # type: ignore[import-not-found,unused-ignore]
            InvalidSignature,
            UnsupportedAlgorithm,
        )
        from cryptography.x509.oid import NameOID  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    # What cryptography raises for DER it cannot parse or does not support (its own classes are not ValueErrors).
    # Anything else would be a bug here, not a hostile certificate, and should be seen as one.
    malformed: tuple[type[Exception], ...] = (
        ValueError,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
        x509.InvalidVersion,
        UnsupportedAlgorithm,
    )
    try:
        cert = x509.load_der_x509_certificate(der)
    except malformed:
        return None

    def read(part: Callable[[], _T]) -> _T | None:
        try:
            return part()
        except malformed:
            return None

    not_after = read(lambda: cert.not_valid_after_utc.timestamp())
    not_before = read(lambda: cert.not_valid_before_utc.timestamp())
    subject = read(lambda: cert.subject)
    issuer = read(lambda: cert.issuer)
    cns = read(lambda: subject.get_attributes_for_oid(NameOID.COMMON_NAME)) if subject is not None else None
    subject_cn = _text(cns[0].value) if cns else None

    def names() -> list[str]:
        found: list[str] = []
        with contextlib.suppress(x509.ExtensionNotFound):
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            found += san.get_values_for_type(x509.DNSName)
            found += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        return found

    def signed_by_itself() -> bool:
        try:
            cert.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature):  # not its own signature, or a key type that cannot sign
            return False
        return True

    self_signed: bool | None = None  # unknown when the names do not parse or the algorithm is not supported
    if subject is not None and issuer is not None:
        self_signed = read(signed_by_itself) if issuer == subject else False
    return CertInfo(
        subject_cn=subject_cn,
        sans=tuple(read(names) or ()),
        issuer=read(issuer.rfc4514_string) if issuer is not None else None,
        not_before=not_before,
        not_after=not_after,
        days_left=_days_left(not_after, now),
        self_signed=self_signed,
        sha256_fingerprint=hashlib.sha256(der).hexdigest(),
    )


def _ip_text(value: str) -> str:
    # OpenSSL spells IPv6 SANs out in full ("0:0:0:0:0:0:0:1"); cryptography gives "::1"
    try:
        return ipaddress.ip_address(value.strip()).compressed
    except ValueError:
        return value


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


# Short names as RFC 4514 writes them; ``getpeercert()`` uses the long OpenSSL names.
_RDN_SHORT: Final = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "domainComponent": "DC",
}


def _rdn_pairs(name: Any) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for rdn in name or ():
        for key, value in rdn:
            pairs.append((str(key), str(value)))
    return pairs


def cert_info_from_dict(peercert: dict[str, Any], der: bytes | None, *, now: float) -> CertInfo:
    """Build ``CertInfo`` from ``SSLSocket.getpeercert()`` (only filled in after successful verification)."""
    subject = _rdn_pairs(peercert.get("subject"))
    issuer = _rdn_pairs(peercert.get("issuer"))
    cn = next((v for k, v in subject if k == "commonName"), None)
    sans = tuple(
        str(v) if kind == "DNS" else _ip_text(str(v))
        for kind, v in peercert.get("subjectAltName", ())
        if kind in ("DNS", "IP Address")
    )

    def when(key: str) -> float | None:
        raw = peercert.get(key)
        return float(ssl.cert_time_to_seconds(raw)) if isinstance(raw, str) else None

    not_after = when("notAfter")
    return CertInfo(
        subject_cn=cn,
        sans=sans,
        # RFC 4514 lists the most specific attribute first, the reverse of the encoded order
        issuer=",".join(f"{_RDN_SHORT.get(k, k)}={v}" for k, v in reversed(issuer)) if issuer else None,
        not_before=when("notBefore"),
        not_after=not_after,
        days_left=_days_left(not_after, now),
        # Without the signature check this is a name comparison, which is all that the dict allows.
        self_signed=bool(subject) and subject == issuer,
        sha256_fingerprint=hashlib.sha256(der).hexdigest() if der else None,
    )


def _tls_error_text(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        hint = SSL_REASON_HINTS.get(exc.reason)
        return f"TLS error: {exc.reason}" + (f" ({hint})" if hint else "")
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | EOFError) and not exc.args:
        return "connection closed by the server during the TLS handshake"
    if isinstance(exc, OSError):
        return f"connection failed during the TLS handshake: {_os_error_text(exc)}"
    return f"TLS handshake failed: {type(exc).__name__}"


def _format_addr(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# --- I/O -----------------------------------------------------------------------------------------------

_Infos = list[tuple[int, tuple[Any, ...]]]


async def _getaddrinfo(host: str, port: int) -> _Infos:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: set[tuple[Any, ...]] = set()
    out: _Infos = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if sockaddr not in seen:  # glibc repeats addresses, e.g. once per protocol
            seen.add(sockaddr)
            out.append((int(family), tuple(sockaddr)))
    return out


def _dns_failure(host: str, exc: BaseException, timeout: float) -> tuple[Reason, str]:
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT, f"{host}: no answer from the resolver within {timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return Reason.DNS, f"{host}: {exc.strerror or 'name resolution failed'}"
    if isinstance(exc, UnicodeError):  # the idna codec rejects names such as "a..b"
        return Reason.DNS, f"{host!r}: not a valid host name"
    return Reason.DNS, f"{host}: {type(exc).__name__}"


async def resolve(host: str, port: int, timeout: float) -> DnsResult:
    """Resolve ``host`` (as the connect would: stream sockets, all families) within ``timeout`` seconds.

    Returns the distinct addresses in the resolver's preference order. Fails with ``Reason.DNS`` (unknown
    name, resolver error, invalid name) or ``Reason.TIMEOUT``.
    """
    start = time.perf_counter()
    if not host:
        return DnsResult(host, (), 0.0, Reason.DNS, "empty host name")
    try:
        async with asyncio.timeout(timeout):
            infos = await _getaddrinfo(host, port)
    except (OSError, UnicodeError) as exc:  # TimeoutError and gaierror are OSErrors
        reason, text = _dns_failure(host, exc, timeout)
        return DnsResult(host, (), time.perf_counter() - start, reason, text)
    seconds = time.perf_counter() - start
    if not infos:
        return DnsResult(host, (), seconds, Reason.DNS, f"{host}: no addresses")
    return DnsResult(host, tuple(str(sa[0]) for _, sa in infos), seconds)


class _ConnectFailed(Exception):
    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        super().__init__("connect failed")
        self.failures = failures


async def _connect_any(infos: _Infos) -> tuple[socket.socket, str]:
    """Connect to the first address that accepts, in order; raises ``_ConnectFailed`` if none does."""
    loop = asyncio.get_running_loop()
    failures: list[tuple[str, BaseException]] = []
    for family, sockaddr in infos:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors (EMFILE, ENFILE), or a family this host does not have
            failures.append((str(sockaddr[0]), exc))
            continue
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:  # a TimeoutError here is the kernel's ETIMEDOUT: try the next address
            sock.close()
            failures.append((str(sockaddr[0]), exc))
            continue
        except BaseException:  # cancellation or the caller's deadline
            sock.close()
            raise
        return sock, str(sockaddr[0])
    raise _ConnectFailed(failures)


def _connect_failure(failures: list[tuple[str, BaseException]], port: int) -> tuple[Reason, TcpDetail, str]:
    if not failures:  # the resolver answered with no stream addresses at all
        return Reason.CONNECT, TcpDetail.ERROR, f"port {port}: no address to connect to"
    addr, exc = min(failures, key=lambda failure: connect_error_rank(failure[1]))
    reason, detail = classify_connect_error(exc)
    return reason, detail, f"{_format_addr(addr, port)}: {_os_error_text(exc)}"


def _os_error_text(exc: BaseException) -> str:
    # asyncio words its errors "Connect call failed ('1.2.3.4', 80)"; the errno says what happened
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


async def tcp_connect(host: str, port: int, timeout: float) -> TcpResult:
    """Open a TCP connection to ``host:port`` and close it at once, within ``timeout`` seconds overall.

    A host name is resolved first (a failure gives ``Reason.DNS``, or ``Reason.TIMEOUT`` with no
    ``detail``); each address is then tried in turn. ``seconds`` counts from the first connect attempt, so
    it excludes name resolution. Failures give ``Reason.CONNECT`` with ``detail`` refused, unreachable,
    reset or error, or ``Reason.TIMEOUT`` with ``detail`` timeout.
    """
    return await _tcp(host, port, timeout, None)


def _numeric_infos(addresses: Iterable[str], port: int) -> _Infos:
    # AI_NUMERICHOST never touches the resolver, so this is safe to call on the loop
    infos: _Infos = []
    for address in addresses:
        for family, _t, _p, _c, sockaddr in socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        ):
            infos.append((int(family), tuple(sockaddr)))
    return infos


async def _tcp(host: str, port: int, timeout: float, addresses: tuple[str, ...] | None) -> TcpResult:
    """Connect to ``addresses`` (already resolved) or to whatever ``host`` resolves to."""
    started: float | None = None
    try:
        async with asyncio.timeout(timeout):
            if addresses is None:
                try:
                    infos = await _getaddrinfo(host, port)
                except (socket.gaierror, UnicodeError) as exc:
                    reason, text = _dns_failure(host, exc, timeout)
                    return TcpResult(host, port, 0.0, reason=reason, error=text)
            else:
                infos = _numeric_infos(addresses, port)
            started = time.perf_counter()
            sock, address = await _connect_any(infos)
    except TimeoutError:
        if started is None:
            return TcpResult(
                host, port, 0.0, reason=Reason.TIMEOUT, error=_dns_failure(host, TimeoutError(), timeout)[1]
            )
        return TcpResult(
            host,
            port,
            time.perf_counter() - started,
            reason=Reason.TIMEOUT,
            detail=TcpDetail.TIMEOUT,
            error=f"{_format_addr(host, port)}: connect timed out after {timeout:g} s",
        )
    except _ConnectFailed as exc:
        seconds = 0.0 if started is None else time.perf_counter() - started
        reason, detail, text = _connect_failure(exc.failures, port)
        return TcpResult(host, port, seconds, reason=reason, detail=detail, error=text)
    seconds = time.perf_counter() - started
    sock.close()
    return TcpResult(host, port, seconds, address=address)


def _client_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # not create_default_context: no CA store to load
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    # cafile replaces the system store: a private CA is what the user asked to trust
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


@dataclass(slots=True)
class _Handshake:
    """What one connect + handshake attempt produced (internal)."""

    stage: Literal["dns", "connect", "tls", "done"] = "dns"
    error: BaseException | None = None
    connect_failures: list[tuple[str, BaseException]] | None = None
    seconds: float | None = None
    protocol: str | None = None
    cipher: str | None = None
    der: bytes | None = None
    peercert: dict[str, Any] | None = None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_GRACE_S):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except (OSError, EOFError):  # peer reset or TLS alert on the way out: the probe is over anyway
        pass


async def _handshake(
    host: str, port: int, ctx: ssl.SSLContext, server_hostname: str, timeout: float
) -> _Handshake:
    """Connect and run one TLS handshake; never raises for network failures."""
    out = _Handshake()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            infos = await _getaddrinfo(host, port)
            out.stage = "connect"
            sock, _address = await _connect_any(infos)
            try:
                _reader, writer = await asyncio.open_connection(sock=sock)
            except BaseException:
                sock.close()
                raise
            out.stage = "tls"
            started = time.perf_counter()
            await writer.start_tls(ctx, server_hostname=server_hostname)
            out.seconds = time.perf_counter() - started
            out.stage = "done"
            tls = writer.get_extra_info("ssl_object")
            if isinstance(tls, ssl.SSLObject):
                out.protocol = tls.version()
                cipher = tls.cipher()
                out.cipher = cipher[0] if cipher else None
                out.der = tls.getpeercert(binary_form=True)
                # Empty unless the certificate was verified (then it is the dict fallback)
                out.peercert = tls.getpeercert() or None
    except _ConnectFailed as exc:
        out.connect_failures = exc.failures
    except (OSError, ValueError, EOFError) as exc:  # TimeoutError, ssl.SSLError; UnicodeError for names
        out.error = exc
    finally:
        if writer is not None and out.stage == "done":
            await _close(writer)
        elif writer is not None:
            # A failed start_tls already closed the TLS layer, and the stream protocol never hears of
            # it (the transport was handed over), so wait_closed() would only run into the grace period.
            writer.transport.abort()
    return out


async def tls_handshake(
    host: str,
    port: int,
    *,
    server_hostname: str,
    timeout: float,
    verify: bool = True,
    ca_file: str | None = None,
) -> TlsResult:
    """Connect to ``host:port`` and perform a TLS handshake for ``server_hostname`` (SNI and name check).

    ``timeout`` bounds the connect plus handshake; if verification fails, a second, non-verifying
    handshake (with its own ``timeout``) collects the certificate facts. ``ca_file`` replaces the system
    trust store; ``verify=False`` checks nothing and reports only handshake failures.

    Failures: ``Reason.TLS`` with a ``problem``; ``Reason.TIMEOUT`` (``problem`` handshake_failed when the
    handshake itself stalled); ``Reason.DNS``/``Reason.CONNECT`` when the connection never opened.
    """
    now = time.time()
    try:
        ctx = await asyncio.to_thread(_client_context, verify, ca_file)  # loading a CA store reads files
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return TlsResult(
            ok=False,
            seconds=None,
            server_hostname=server_hostname,
            verified=verify,
            reason=Reason.TLS,
            error=f"cannot load CA file {ca_file}: {why}",
        )
    hs = await _handshake(host, port, ctx, server_hostname, timeout)
    base: dict[str, Any] = {"server_hostname": server_hostname, "verified": verify}

    if hs.stage == "done":
        cert = _cert_from(hs, now)
        return TlsResult(
            ok=True, seconds=hs.seconds, protocol=hs.protocol, cipher=hs.cipher, cert=cert, **base
        )
    if hs.stage in ("dns", "connect"):
        return TlsResult(ok=False, seconds=None, **base, **_pre_tls_failure(hs, host, port, timeout))
    if isinstance(hs.error, TimeoutError):
        return TlsResult(
            ok=False,
            seconds=None,
            reason=Reason.TIMEOUT,
            problem=TlsProblem.HANDSHAKE_FAILED,
            error=f"{_format_addr(host, port)}: no TLS handshake within {timeout:g} s",
            **base,
        )
    error: BaseException = hs.error or ConnectionError("TLS handshake did not finish")
    problem = classify_tls_error(error)
    facts = _Handshake()
    if problem is not TlsProblem.HANDSHAKE_FAILED:
        # Verification failed but the server does speak TLS: look again without checking
        loose = await asyncio.to_thread(_client_context, False, None)
        facts = await _handshake(host, port, loose, server_hostname, timeout)
    return TlsResult(
        ok=False,
        seconds=None,
        protocol=facts.protocol,
        cipher=facts.cipher,
        cert=_cert_from(facts, now),
        reason=Reason.TLS,
        problem=problem,
        error=_tls_error_text(error),
        **base,
    )


def _cert_from(hs: _Handshake, now: float) -> CertInfo | None:
    if hs.der is None:
        return None
    info = cert_info_from_der(hs.der, now=now)
    if info is None and hs.peercert is not None:
        info = cert_info_from_dict(hs.peercert, hs.der, now=now)
    return info


def _pre_tls_failure(hs: _Handshake, host: str, port: int, timeout: float) -> dict[str, Any]:
    """reason/error fields for a handshake attempt that never reached TLS."""
    if hs.stage == "dns":
        reason, text = _dns_failure(host, hs.error or OSError(), timeout)
        return {"reason": reason, "error": text}
    if hs.connect_failures is not None:
        reason, _detail, text = _connect_failure(hs.connect_failures, port)
        return {"reason": reason, "error": text}
    return {
        "reason": Reason.TIMEOUT,
        "error": f"{_format_addr(host, port)}: connect timed out after {timeout:g} s",
    }


_DEFAULT_PORTS: Final = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_TLS_SCHEMES: Final = frozenset({"https", "wss"})


async def probe_url(
    url: str, *, timeout: float, verify: bool = True, ca_file: str | None = None
) -> NetReport:
    """Run resolve → TCP connect → TLS handshake (https/wss only) for ``url``, stopping at the first failure.

    Each step gets its own ``timeout``. TCP and TLS connect to the resolved addresses, so their timings
    exclude DNS; TLS uses the URL host for SNI and the name check. The report holds scheme, host and port
    only: userinfo, path and query never leave this function.

    Raises:
        ValueError: ``url`` is not an http(s)/ws(s) URL with a host: a configuration error.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("expected an http, https, ws or wss URL with a host")
    host = parts.hostname
    port = parts.port or _DEFAULT_PORTS[scheme]  # .port raises ValueError for a bad port itself
    uses_tls = scheme in _TLS_SCHEMES

    dns = await resolve(host, port, timeout)
    if not dns.ok:
        return NetReport(scheme, host, port, dns, None, None, uses_tls)
    tcp = await _tcp(host, port, timeout, dns.addresses)
    if not tcp.ok or not uses_tls or tcp.address is None:
        return NetReport(scheme, host, port, dns, tcp, None, uses_tls)
    tls = await tls_handshake(
        tcp.address, port, server_hostname=host, timeout=timeout, verify=verify, ca_file=ca_file
    )
    return NetReport(scheme, host, port, dns, tcp, tls, uses_tls)
