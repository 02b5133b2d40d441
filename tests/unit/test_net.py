"""Tests for comfywatch.clients.net: DNS, TCP and TLS probes against real loopback listeners."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from aiohttp import web

from comfywatch.checks import network
from comfywatch.checks.context import build_context
from comfywatch.clients.net import (
    CertInfo,
    cert_info_from_der,
    cert_info_from_dict,
    probe_url,
    resolve,
    tcp_connect,
    tls_handshake,
)
from comfywatch.config import Config, TargetConfig
from comfywatch.errors import Reason, TcpDetail, TlsProblem
from tests.certs import EXPIRED_DAYS_AGO, NOT_YET_VALID_IN_DAYS, VALID_DAYS, CertBundle, CertPair, make_certs
from tests.ports import closed_port

# Generous where success is expected (a slow CI box must not flake), short where a timeout is the point.
OK_TIMEOUT = 5.0
SHORT_TIMEOUT = 0.3
DAY = 86400.0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    """The test CA and server certificates (needs the `cryptography` dev dependency)."""
    pytest.importorskip("cryptography", reason="tests/certs.py generates certificates with cryptography")
    return make_certs(tmp_path_factory.mktemp("certs"))


@contextlib.asynccontextmanager
async def serve(pair: CertPair | None = None) -> AsyncIterator[int]:
    """Run an aiohttp server on 127.0.0.1 (TLS with ``pair`` if given), as ComfyUI's --tls-* does."""
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ssl_context = pair.server_context() if pair else None
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def silent_listener(backlog: int = 8) -> Iterator[socket.socket]:
    """A listening socket that never accepts: TCP completes via the backlog, nothing is ever answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        yield sock


# Extension OIDs, and extension values in DER that cryptography rejects although OpenSSL loads the certificate
# (it does not decode IssuerAltName at all) and serves it.
SAN_OID = "2.5.29.17"
IAN_OID = "2.5.29.18"
SAN_LOCALHOST = b"\x30\x0b\x82\x09localhost"  # GeneralNames: dNSName [2] "localhost"
BAD_TAG_LOCALHOST = b"\x30\x0b\x89\x09localhost"  # the same under tag [9], which is no GeneralName choice
X400_ADDRESS = b"\x30\x04\xa3\x02\x30\x00"  # an x400Address [3], a choice cryptography does not support


def self_signed_der(extensions: Sequence[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    """A self-signed EC certificate for CN=localhost, valid from a day ago for ``VALID_DAYS`` days, carrying
    ``extensions`` (dotted OID, DER value) verbatim; returns the certificate's DER and its key's PEM."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )
    for oid, value in extensions:
        # an UnrecognizedExtension is written as given, so the malformed value is signed like any other
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.DER), key_pem


class TestResolve:
    async def test_ip_literal_resolves_to_itself(self) -> None:
        """An IP literal resolves to exactly that address, without error."""
        result = await resolve("127.0.0.1", 80, OK_TIMEOUT)
        assert result.ok and result.reason is None and result.error is None
        assert result.addresses == ("127.0.0.1",)
        assert result.seconds >= 0

    async def test_localhost_resolves_to_loopback(self) -> None:
        """localhost resolves (from /etc/hosts) to a loopback address, each address listed once."""
        result = await resolve("localhost", 8188, OK_TIMEOUT)
        assert result.ok
        assert set(result.addresses) & {"127.0.0.1", "::1"}
        assert len(set(result.addresses)) == len(result.addresses)

    async def test_reserved_invalid_tld_is_a_dns_failure(self) -> None:
        """A name under the reserved .invalid TLD fails with reason dns and a printable message."""
        result = await resolve("doesnotexist.invalid", 443, OK_TIMEOUT)
        assert not result.ok
        assert result.reason is Reason.DNS
        assert result.addresses == ()
        assert result.error is not None and "doesnotexist.invalid" in result.error

    async def test_malformed_name_is_a_dns_failure_not_an_exception(self) -> None:
        """A name the idna codec rejects gives reason dns instead of raising UnicodeError."""
        result = await resolve("a..b", 80, OK_TIMEOUT)
        assert result.reason is Reason.DNS
        assert result.error is not None and "not a valid host name" in result.error

    async def test_empty_host_is_a_dns_failure(self) -> None:
        """An empty host name is reported, not resolved (getaddrinfo would answer for the local host)."""
        result = await resolve("", 80, OK_TIMEOUT)
        assert result.reason is Reason.DNS and result.addresses == ()


class TestTcpConnect:
    async def test_connects_to_a_listener(self) -> None:
        """A listening port connects; the result names the peer and times the connect."""
        with silent_listener() as listener:
            port = listener.getsockname()[1]
            result = await tcp_connect("127.0.0.1", port, OK_TIMEOUT)
        assert result.ok and result.reason is None and result.detail is None
        assert result.address == "127.0.0.1"
        assert result.peer == f"127.0.0.1:{port}"
        assert 0 < result.seconds < OK_TIMEOUT

    async def test_host_name_is_resolved_first(self) -> None:
        """A host name connects through its resolved loopback address."""
        with silent_listener() as listener:
            port = listener.getsockname()[1]
            result = await tcp_connect("localhost", port, OK_TIMEOUT)
        assert result.ok
        assert result.host == "localhost" and result.address == "127.0.0.1"

    async def test_closed_port_is_refused(self) -> None:
        """Nothing listening gives reason connect with detail refused, quickly."""
        port = closed_port()
        result = await tcp_connect("127.0.0.1", port, OK_TIMEOUT)
        assert result.reason is Reason.CONNECT
        assert result.detail is TcpDetail.REFUSED
        assert result.address is None and result.peer is None
        assert result.error is not None and f"127.0.0.1:{port}" in result.error
        assert "refused" in result.error.lower()
        assert result.seconds < OK_TIMEOUT

    async def test_full_accept_queue_times_out(self) -> None:
        """A full accept queue drops SYNs: reason timeout, detail timeout, after the deadline."""
        with silent_listener(backlog=0) as listener:
            port = listener.getsockname()[1]
            # Linux queues backlog + 1 connections and keeps each probe's (closed) one queued until
            # accepted, so probing until one fails fills the queue without assuming its size
            for _ in range(4):
                result = await tcp_connect("127.0.0.1", port, SHORT_TIMEOUT)
                if not result.ok:
                    break
        assert result is not None
        assert result.reason is Reason.TIMEOUT
        assert result.detail is TcpDetail.TIMEOUT
        assert result.seconds >= SHORT_TIMEOUT * 0.9
        assert result.error is not None and "timed out" in result.error

    async def test_unresolvable_host_reports_dns(self) -> None:
        """tcp_connect to a name that does not resolve reports reason dns, not connect."""
        result = await tcp_connect("doesnotexist.invalid", 80, OK_TIMEOUT)
        assert result.reason is Reason.DNS
        assert result.detail is None


class TestTlsHandshake:
    async def test_valid_certificate(self, certs: CertBundle) -> None:
        """A CA-signed certificate for the IP verifies; version, cipher and certificate facts are reported."""
        async with serve(certs.valid) as port:
            result = await tls_handshake(
                "127.0.0.1", port, server_hostname="127.0.0.1", timeout=OK_TIMEOUT, ca_file=str(certs.ca_cert)
            )
        assert result.ok and result.verified
        assert result.reason is None and result.problem is None and result.error is None
        assert result.seconds is not None and result.seconds > 0
        assert result.protocol in ("TLSv1.2", "TLSv1.3")
        assert result.cipher
        cert = result.cert
        assert cert is not None
        assert cert.subject_cn == "localhost"
        assert set(cert.sans) == {"localhost", "127.0.0.1", "::1"}
        assert cert.issuer == "CN=comfywatch test CA"
        assert cert.self_signed is False
        assert cert.days_left == pytest.approx(VALID_DAYS, abs=0.01)
        assert cert.not_after == pytest.approx(time.time() + VALID_DAYS * DAY, abs=600)
        assert cert.not_before is not None and cert.not_before < time.time()
        assert cert.sha256_fingerprint is not None and len(cert.sha256_fingerprint) == 64

    async def test_valid_certificate_by_dns_name(self, certs: CertBundle) -> None:
        """The same certificate verifies for server_hostname=localhost (SNI and a DNS-name check)."""
        async with serve(certs.valid) as port:
            result = await tls_handshake(
                "127.0.0.1", port, server_hostname="localhost", timeout=OK_TIMEOUT, ca_file=str(certs.ca_cert)
            )
        assert result.ok

    @pytest.mark.parametrize(
        ("which", "server_hostname", "problem"),
        [
            ("expired", "127.0.0.1", TlsProblem.EXPIRED),
            ("not_yet_valid", "127.0.0.1", TlsProblem.NOT_YET_VALID),
            ("self_signed", "127.0.0.1", TlsProblem.SELF_SIGNED),
            ("wrong_host", "127.0.0.1", TlsProblem.HOSTNAME_MISMATCH),
            ("wrong_host", "localhost", TlsProblem.HOSTNAME_MISMATCH),
            ("untrusted", "localhost", TlsProblem.UNTRUSTED_CHAIN),
        ],
    )
    async def test_certificate_problems_are_classified(
        self, certs: CertBundle, which: str, server_hostname: str, problem: TlsProblem
    ) -> None:
        """Each defective certificate fails with reason tls and its own problem, facts still reported."""
        pair: CertPair = getattr(certs, which)
        async with serve(pair) as port:
            result = await tls_handshake(
                "127.0.0.1",
                port,
                server_hostname=server_hostname,
                timeout=OK_TIMEOUT,
                ca_file=str(certs.ca_cert),
            )
        assert not result.ok
        assert result.reason is Reason.TLS
        assert result.problem is problem
        assert result.error is not None and "certificate verify failed" in result.error
        # facts come from the second, non-verifying handshake
        assert result.protocol is not None
        assert result.cert is not None and result.cert.not_after is not None

    async def test_expired_facts(self, certs: CertBundle) -> None:
        """An expired certificate reports negative days_left equal to how long ago it expired."""
        async with serve(certs.expired) as port:
            result = await tls_handshake(
                "127.0.0.1", port, server_hostname="localhost", timeout=OK_TIMEOUT, ca_file=str(certs.ca_cert)
            )
        assert result.problem is TlsProblem.EXPIRED
        assert result.cert is not None
        assert result.cert.days_left == pytest.approx(-EXPIRED_DAYS_AGO, abs=0.01)

    async def test_not_yet_valid_facts(self, certs: CertBundle) -> None:
        """A not-yet-valid certificate reports its future not_before."""
        async with serve(certs.not_yet_valid) as port:
            result = await tls_handshake(
                "127.0.0.1", port, server_hostname="localhost", timeout=OK_TIMEOUT, ca_file=str(certs.ca_cert)
            )
        assert result.cert is not None and result.cert.not_before is not None
        assert result.cert.not_before == pytest.approx(time.time() + NOT_YET_VALID_IN_DAYS * DAY, abs=600)

    async def test_self_signed_facts(self, certs: CertBundle) -> None:
        """A self-signed certificate is flagged self_signed and names itself as issuer."""
        async with serve(certs.self_signed) as port:
            result = await tls_handshake(
                "127.0.0.1", port, server_hostname="localhost", timeout=OK_TIMEOUT, ca_file=str(certs.ca_cert)
            )
        assert result.cert is not None
        assert result.cert.self_signed is True
        assert result.cert.issuer == "CN=localhost"

    async def test_wrong_host_facts(self, certs: CertBundle) -> None:
        """A hostname mismatch reports the names the certificate is actually for."""
        async with serve(certs.wrong_host) as port:
            result = await tls_handshake(
                "127.0.0.1", port, server_hostname="localhost", timeout=OK_TIMEOUT, ca_file=str(certs.ca_cert)
            )
        assert result.cert is not None
        assert result.cert.sans == ("wrong.example",)
        assert result.cert.self_signed is False

    async def test_system_store_does_not_trust_the_test_ca(self, certs: CertBundle) -> None:
        """Without ca_file the system trust store is used, which rejects the private CA."""
        async with serve(certs.valid) as port:
            result = await tls_handshake("127.0.0.1", port, server_hostname="localhost", timeout=OK_TIMEOUT)
        assert result.reason is Reason.TLS
        assert result.problem is TlsProblem.UNTRUSTED_CHAIN

    async def test_verify_false_accepts_anything_but_reports_facts(self, certs: CertBundle) -> None:
        """verify=False completes against a self-signed certificate and still reports its facts."""
        async with serve(certs.self_signed) as port:
            result = await tls_handshake(
                "127.0.0.1", port, server_hostname="127.0.0.1", timeout=OK_TIMEOUT, verify=False
            )
        assert result.ok and not result.verified
        assert result.cert is not None and result.cert.self_signed is True
        assert result.cert.days_left == pytest.approx(VALID_DAYS, abs=0.01)

    async def test_server_that_never_handshakes_times_out(self) -> None:
        """TCP accepted but no TLS answer: reason timeout, problem handshake_failed, at the deadline."""
        with silent_listener() as listener:
            port = listener.getsockname()[1]
            started = time.perf_counter()
            result = await tls_handshake(
                "127.0.0.1", port, server_hostname="localhost", timeout=SHORT_TIMEOUT
            )
            elapsed = time.perf_counter() - started
        assert result.reason is Reason.TIMEOUT
        assert result.problem is TlsProblem.HANDSHAKE_FAILED
        assert result.cert is None and result.seconds is None
        assert result.error is not None and "no TLS handshake" in result.error
        assert SHORT_TIMEOUT * 0.9 <= elapsed < SHORT_TIMEOUT + 0.8  # no wait for a close that never comes

    async def test_plain_http_server_fails_the_handshake(self) -> None:
        """A server speaking plain HTTP gives reason tls, problem handshake_failed, no certificate."""
        async with serve() as port:
            result = await tls_handshake("127.0.0.1", port, server_hostname="localhost", timeout=OK_TIMEOUT)
        assert result.reason is Reason.TLS
        assert result.problem is TlsProblem.HANDSHAKE_FAILED
        assert result.cert is None and result.protocol is None
        assert result.error is not None and "plain HTTP" in result.error

    async def test_closed_port_is_a_connect_failure(self) -> None:
        """When TCP is refused the failure is connect, with no TLS problem."""
        port = closed_port()
        result = await tls_handshake("127.0.0.1", port, server_hostname="localhost", timeout=OK_TIMEOUT)
        assert result.reason is Reason.CONNECT
        assert result.problem is None and result.seconds is None

    async def test_unreadable_ca_file_is_reported(self, tmp_path: Path) -> None:
        """A missing ca_file gives a failed result naming the file instead of raising."""
        missing = tmp_path / "nope.pem"
        result = await tls_handshake(
            "127.0.0.1", 1, server_hostname="localhost", timeout=OK_TIMEOUT, ca_file=str(missing)
        )
        assert not result.ok and result.reason is Reason.TLS
        assert result.error is not None and str(missing) in result.error

    async def test_without_cryptography_verified_facts_come_from_getpeercert(
        self, certs: CertBundle, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With cryptography absent, a verified handshake still yields facts from the ssl dict."""
        monkeypatch.setitem(sys.modules, "cryptography", None)  # makes `import cryptography` fail
        async with serve(certs.valid) as port:
            result = await tls_handshake(
                "127.0.0.1", port, server_hostname="localhost", timeout=OK_TIMEOUT, ca_file=str(certs.ca_cert)
            )
        assert result.ok
        cert = result.cert
        assert cert is not None
        assert cert.subject_cn == "localhost"
        assert set(cert.sans) == {"localhost", "127.0.0.1", "::1"}
        assert cert.issuer == "CN=comfywatch test CA"
        assert cert.days_left == pytest.approx(VALID_DAYS, abs=0.01)
        assert cert.self_signed is False

    async def test_without_cryptography_failures_are_still_classified(
        self, certs: CertBundle, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With cryptography absent, a failed verification keeps its problem but has no certificate facts."""
        monkeypatch.setitem(sys.modules, "cryptography", None)
        async with serve(certs.expired) as port:
            result = await tls_handshake(
                "127.0.0.1", port, server_hostname="localhost", timeout=OK_TIMEOUT, ca_file=str(certs.ca_cert)
            )
        assert result.problem is TlsProblem.EXPIRED
        assert result.cert is None


class TestPureTls:
    def test_cert_info_from_dict(self) -> None:
        """The getpeercert() dict is turned into CertInfo with RFC 4514 issuer and epoch times."""
        peercert = {
            "subject": ((("commonName", "comfy.example"),),),
            "issuer": (
                (("countryName", "US"),),
                (("organizationName", "Let's Encrypt"),),
                (("commonName", "R11"),),
            ),
            "notBefore": "Jan  1 00:00:00 2026 GMT",
            "notAfter": "Apr  1 00:00:00 2026 GMT",
            "subjectAltName": (("DNS", "comfy.example"), ("IP Address", "10.0.0.1"), ("email", "x@y")),
        }
        now = 1767225600.0  # 2026-01-01T00:00:00Z
        info = cert_info_from_dict(peercert, b"der", now=now)
        assert info == CertInfo(
            subject_cn="comfy.example",
            sans=("comfy.example", "10.0.0.1"),
            issuer="CN=R11,O=Let's Encrypt,C=US",
            not_before=now,
            not_after=1775001600.0,
            days_left=90.0,
            self_signed=False,
            sha256_fingerprint=hashlib.sha256(b"der").hexdigest(),
        )


    @pytest.mark.parametrize(
        ("extensions", "patch", "sans", "subject_cn", "self_signed"),
        [
            pytest.param([(SAN_OID, SAN_LOCALHOST), (IAN_OID, BAD_TAG_LOCALHOST)], None, (), "localhost", True,
                         id="invalid-general-name-tag"),
            pytest.param([(SAN_OID, X400_ADDRESS)], None, (), "localhost", True, id="unsupported-general-name"),
            # the builder refuses an extension twice: IssuerAltName's OID is rewritten to SubjectAltName's
            # afterwards, which breaks the signature (so the certificate is not self-signed any more)
            pytest.param([(SAN_OID, SAN_LOCALHOST), (IAN_OID, SAN_LOCALHOST)],
                         (b"\x06\x03\x55\x1d\x12", b"\x06\x03\x55\x1d\x11"), (), "localhost", False,
                         id="duplicate-extension"),
            # the common name (subject and issuer alike) made invalid UTF-8: neither name is known
            pytest.param([(SAN_OID, SAN_LOCALHOST)], (b"\x0c\x09localhost", b"\x0c\x09\xfflocalhos"),
                         ("localhost",), None, None, id="name-not-utf8"),
        ],
    )
    def test_a_malformed_part_is_unknown_and_the_validity_still_read(
        self,
        extensions: list[tuple[str, bytes]],
        patch: tuple[bytes, bytes] | None,
        sans: tuple[str, ...],
        subject_cn: str | None,
        self_signed: bool | None,
    ) -> None:
        """cert_info_from_der on a certificate cryptography loads but cannot fully decode (a malformed or
        unsupported GeneralName, an extension listed twice, a name that is not UTF-8) returns the validity
        period and fingerprint, with only the facts of the malformed part unknown, instead of raising."""
        pytest.importorskip("cryptography", reason="the certificates are built with cryptography")
        der, _key = self_signed_der(extensions)
        if patch is not None:
            # the patch must hit, or the case tests nothing, and keep lengths, or the DER no longer loads at all
            assert der.count(patch[0]) >= 1 and len(patch[0]) == len(patch[1])
            der = der.replace(*patch)
        now = time.time()
        info = cert_info_from_der(der, now=now)
        assert info is not None
        assert info.not_after == pytest.approx(now + VALID_DAYS * DAY, abs=600)
        assert info.not_before == pytest.approx(now - DAY, abs=600)
        assert info.days_left == pytest.approx(VALID_DAYS, abs=0.01)
        assert info.sha256_fingerprint == hashlib.sha256(der).hexdigest()
        assert (info.sans, info.subject_cn, info.self_signed) == (sans, subject_cn, self_signed)
        assert info.issuer == (None if subject_cn is None else "CN=localhost")


class TestProbeUrl:
    async def test_https_runs_all_three_steps(self, certs: CertBundle) -> None:
        """An https URL is resolved, connected and handshaken; the report is ok with every step."""
        async with serve(certs.valid) as port:
            report = await probe_url(
                f"https://localhost:{port}/api/queue", timeout=OK_TIMEOUT, ca_file=str(certs.ca_cert)
            )
        assert report.ok and report.failed_step is None and report.reason is None
        assert (report.scheme, report.host, report.port, report.uses_tls) == (
            "https",
            "localhost",
            port,
            True,
        )
        assert report.dns.ok and "127.0.0.1" in report.dns.addresses
        assert report.tcp is not None and report.tcp.ok and report.tcp.host == "localhost"
        assert report.tcp.address == "127.0.0.1"
        assert report.tls is not None and report.tls.ok
        assert report.tls.server_hostname == "localhost"  # SNI and name check use the URL host
        assert report.skipped == ()

    async def test_http_skips_tls(self) -> None:
        """An http URL has no TLS step, and none counts as skipped."""
        async with serve() as port:
            report = await probe_url(f"http://127.0.0.1:{port}", timeout=OK_TIMEOUT)
        assert report.ok and not report.uses_tls
        assert report.tcp is not None and report.tcp.ok
        assert report.tls is None and report.skipped == ()

    async def test_out_of_descriptors_is_a_connect_failure_not_a_crash(self) -> None:
        """A process that has used up its open-files limit cannot even create the socket: the TCP step (of
        probe_url, after its DNS step answered) reports a connect failure saying so instead of raising OSError
        (which the daemon logged as a crashed check, with a traceback, for every target)."""
        child = (
            "import asyncio, encodings.idna, json, resource, socket\n"
            "from comfywatch.clients.net import _tcp\n"
            "async def main():\n"
            "    held = []\n"
            "    try:\n"
            "        while True: held.append(socket.socket())\n"
            "    except OSError: pass\n"
            "    tcp = await _tcp('127.0.0.1', 9, 2.0, ('127.0.0.1',))\n"
            "    print(json.dumps([tcp.reason, tcp.detail, tcp.error]))\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
            "asyncio.run(main())\n"
        )
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", child, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        reason, detail, error = json.loads(out)
        assert (reason, detail) == (Reason.CONNECT, TcpDetail.ERROR)
        assert "Too many open files" in error

    async def test_dns_failure_skips_the_rest(self) -> None:
        """A DNS failure stops the probe: tcp and tls are skipped and the reason is dns."""
        report = await probe_url("https://doesnotexist.invalid/", timeout=OK_TIMEOUT)
        assert report.failed_step == "dns" and report.reason is Reason.DNS
        assert report.tcp is None and report.tls is None
        assert report.skipped == ("tcp", "tls")
        assert report.port == 443

    async def test_refused_connect_skips_tls(self) -> None:
        """A refused connect stops before TLS; the reason is connect with detail refused."""
        port = closed_port()
        report = await probe_url(f"wss://127.0.0.1:{port}/ws", timeout=OK_TIMEOUT)
        assert report.failed_step == "tcp" and report.reason is Reason.CONNECT
        assert report.tcp is not None and report.tcp.detail is TcpDetail.REFUSED
        assert report.skipped == ("tls",)

    async def test_tls_failure_is_reported(self, certs: CertBundle) -> None:
        """A certificate problem fails the tls step with its classification."""
        async with serve(certs.expired) as port:
            report = await probe_url(
                f"https://127.0.0.1:{port}", timeout=OK_TIMEOUT, ca_file=str(certs.ca_cert)
            )
        assert report.failed_step == "tls" and report.reason is Reason.TLS
        assert report.tls is not None and report.tls.problem is TlsProblem.EXPIRED

    async def test_secrets_in_the_url_never_reach_the_report(self) -> None:
        """Userinfo and query tokens are not kept anywhere in the report."""
        port = closed_port()
        report = await probe_url(
            f"http://alice:s3cret-pw@127.0.0.1:{port}/ws?token=tok-XYZ", timeout=OK_TIMEOUT
        )
        text = repr(report)
        assert "s3cret-pw" not in text and "tok-XYZ" not in text and "alice" not in text

    @pytest.mark.parametrize("url", ["ftp://example.com", "http://", "127.0.0.1:8188", "http://h:notaport/"])
    async def test_bad_urls_raise_value_error(self, url: str) -> None:
        """A URL without a supported scheme, host or valid port is a configuration error."""
        with pytest.raises(ValueError):
            await probe_url(url, timeout=OK_TIMEOUT)


async def test_network_check_completes_against_a_certificate_with_a_malformed_extension(tmp_path: Path) -> None:
    """A server presenting a certificate whose IssuerAltName holds an invalid GeneralName tag (OpenSSL serves
    it, cryptography cannot decode the extensions): the daemon's network check completes without raising and
    records the dns, connect and tls phases and the certificate's expiry; only its SANs are unknown."""
    pytest.importorskip("cryptography", reason="the certificate is built with cryptography")
    der, key_pem = self_signed_der([(SAN_OID, SAN_LOCALHOST), (IAN_OID, BAD_TAG_LOCALHOST)])
    pem = ssl.DER_cert_to_PEM_cert(der)
    pair = CertPair(tmp_path / "bad-ian.pem", tmp_path / "bad-ian.key")
    pair.cert.write_text(pem)
    pair.key.write_bytes(key_pem)
    async with serve(pair) as port:
        runtime = build_context(Config(), TargetConfig(name="t", url=f"https://localhost:{port}/"))
        try:
            await network.run(runtime)  # raises on a failed probe, and so it did on the certificate
            report = await network.observe(runtime)
        finally:
            await runtime.close()
    phases = runtime.state.network_phases
    assert phases is not None and set(phases) == {"dns", "connect", "tls"}
    assert all(seconds is not None and seconds >= 0 for seconds in phases.values()), phases
    assert runtime.state.tls_not_after == pytest.approx(time.time() + VALID_DAYS * DAY, abs=600)
    # the facts outside the extensions are still read from the same certificate
    assert report.tls is not None and report.tls.cert is not None
    cert = report.tls.cert
    assert (cert.subject_cn, cert.issuer, cert.self_signed, cert.sans) == ("localhost", "CN=localhost", True, ())
    assert cert.sha256_fingerprint == hashlib.sha256(der).hexdigest()


async def _accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


async def test_server_closing_mid_handshake_is_a_handshake_failure() -> None:
    """A server that hangs up on the ClientHello gives reason tls, problem handshake_failed."""
    server = await asyncio.start_server(_accept_and_close, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        result = await tls_handshake("127.0.0.1", port, server_hostname="localhost", timeout=OK_TIMEOUT)
    assert result.reason is Reason.TLS
    assert result.problem is TlsProblem.HANDSHAKE_FAILED
    assert result.error == "connection closed by the server during the TLS handshake"
