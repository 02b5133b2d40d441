"""Throwaway X.509 material for TLS tests: a test CA and server certificates with known defects.

``make_certs(directory)`` writes PEM files and returns their paths. Every server certificate except the
wrong-hostname one names ``localhost``, ``127.0.0.1`` and ``::1``, so a loopback server presenting it fails
(or passes) verification for exactly one reason:

- ``valid``: signed by the test CA, valid from one day ago for ``VALID_DAYS`` days.
- ``expired``: signed by the test CA, expired ``EXPIRED_DAYS_AGO`` days ago.
- ``not_yet_valid``: signed by the test CA, valid only from ``NOT_YET_VALID_IN_DAYS`` days from now.
- ``self_signed``: its own issuer.
- ``wrong_host``: signed by the test CA for ``wrong.example`` only.
- ``untrusted``: signed by a second CA that no test trusts.

Keys are EC P-256: generating seven RSA keys would cost far more than the tests that use them.
``cryptography`` is imported inside ``make_certs`` so that modules importing this helper still load (and
can skip) where it is missing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "EXPIRED_DAYS_AGO",
    "NOT_YET_VALID_IN_DAYS",
    "VALID_DAYS",
    "CertBundle",
    "CertPair",
    "make_certs",
]

VALID_DAYS = 30
EXPIRED_DAYS_AGO = 5
NOT_YET_VALID_IN_DAYS = 10
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class CertPair:
    """A PEM certificate and its unencrypted PEM private key."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting this certificate (for aiohttp ``ssl_context=`` etc.)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


@dataclass(frozen=True, slots=True)
class CertBundle:
    """Paths of everything ``make_certs`` wrote (not named Test* so pytest never tries to collect it)."""

    directory: Path
    ca_cert: Path
    valid: CertPair
    expired: CertPair
    not_yet_valid: CertPair
    self_signed: CertPair
    wrong_host: CertPair
    untrusted: CertPair

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_cert))


def make_certs(directory: Path) -> CertBundle:
    """Create the test CA and all server certificates under ``directory`` and return their paths."""
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _ca_cert(ca_key, "comfywatch test CA", now)
    ca_path = _write_cert(directory / "ca.pem", ca)

    other_ca_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _ca_cert(other_ca_key, "comfywatch untrusted CA", now)

    def leaf(
        name: str,
        *,
        issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
        not_before: dt.datetime,
        not_after: dt.datetime,
        dns: tuple[str, ...] = LOOPBACK_NAMES,
        ips: tuple[str, ...] = LOOPBACK_IPS,
    ) -> CertPair:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _leaf_cert(key, issuer, dns[0], dns, ips, not_before, not_after)
        return CertPair(
            _write_cert(directory / f"{name}.pem", cert), _write_key(directory / f"{name}.key", key)
        )

    return CertBundle(
        directory=directory,
        ca_cert=ca_path,
        valid=leaf("valid", issuer=(ca, ca_key), not_before=now - day, not_after=now + VALID_DAYS * day),
        expired=leaf(
            "expired",
            issuer=(ca, ca_key),
            not_before=now - (EXPIRED_DAYS_AGO + 30) * day,
            not_after=now - EXPIRED_DAYS_AGO * day,
        ),
        not_yet_valid=leaf(
            "not_yet_valid",
            issuer=(ca, ca_key),
            not_before=now + NOT_YET_VALID_IN_DAYS * day,
            not_after=now + (NOT_YET_VALID_IN_DAYS + 30) * day,
        ),
        self_signed=leaf("self_signed", issuer=None, not_before=now - day, not_after=now + VALID_DAYS * day),
        wrong_host=leaf(
            "wrong_host",
            issuer=(ca, ca_key),
            not_before=now - day,
            not_after=now + VALID_DAYS * day,
            dns=("wrong.example",),
            ips=(),
        ),
        untrusted=leaf(
            "untrusted",
            issuer=(other_ca, other_ca_key),
            not_before=now - day,
            not_after=now + VALID_DAYS * day,
        ),
    )


def _ca_cert(key: ec.EllipticCurvePrivateKey, cn: str, now: dt.datetime) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=365))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_cert(
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    cn: str,
    dns: tuple[str, ...],
    ips: tuple[str, ...],
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    if issuer is None:  # self-signed: the key signs its own certificate
        issuer_name, signing_key = subject, key
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    else:
        issuer_cert, signing_key = issuer
        issuer_name = issuer_cert.subject
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(aki, critical=False)
        .sign(signing_key, hashes.SHA256())
    )


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    from cryptography.hazmat.primitives.serialization import Encoding

    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    return path
