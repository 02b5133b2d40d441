"""Tests for comfywatch.server.webconfig: a real aiohttp server with TLS and basic auth, a real httpx client."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import yaml
from aiohttp import web

from comfywatch.server import webconfig
from comfywatch.server.webconfig import (
    WebConfig,
    WebConfigError,
    basic_auth_middleware,
    install_response_headers,
    load_web_config,
)

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # the dev extra declares it: only an incomplete local venv lacks it, never CI
    if os.environ.get("CI"):
        raise
    pytest.skip("cryptography is not installed", allow_module_level=True)

PASSWORD = "correct horse battery staple"
# Cost 4 keeps each bcrypt check ~1 ms; the middleware does not care about the cost.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
# htpasswd and the exporter-toolkit docs write $2y$; the same hash must be accepted in that spelling.
HASH_2Y = "$2y$" + HASH[4:]


# X.509 material, generated per test session (EC keys: fast).


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate from a CA the server does not trust
    rogue_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, signing_key = issuer if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(
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
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None
) -> Path:
    path = directory / f"{stem}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = directory / f"{stem}.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A server CA, a server certificate for 127.0.0.1, a client CA with one client, and a rogue client."""
    d = tmp_path_factory.mktemp("pki")
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "srv", "cca", "cli", "rca", "rog")}
    ca = _cert("test server CA", keys["ca"], None, ca=True)
    cca = _cert("test client CA", keys["cca"], None, ca=True)
    rca = _cert("rogue CA", keys["rca"], None, ca=True)
    _write(d, "ca", ca, None)
    _write(d, "server", _cert("127.0.0.1", keys["srv"], (ca.subject, keys["ca"]), server=True), keys["srv"])
    _write(d, "client-ca", cca, None)
    _write(d, "client", _cert("prometheus", keys["cli"], (cca.subject, keys["cca"])), keys["cli"])
    _write(d, "rogue", _cert("prometheus", keys["rog"], (rca.subject, keys["rca"])), keys["rog"])
    return Pki(
        d,
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "client-ca.crt",
        d / "client.crt",
        d / "client.key",
        d / "rogue.crt",
        d / "rogue.key",
    )


# Helpers: config files, a real server, real clients.


def write_config(directory: Path, data: Any, name: str = "web-config.yml") -> Path:
    path = directory / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def tls_section(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), **extra}


@asynccontextmanager
async def serve(config: WebConfig) -> AsyncIterator[str]:
    """Run /metrics and /healthz behind the config's TLS, auth and headers; yield the base URL."""

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    middlewares = [basic_auth_middleware(config.basic_auth_users)] if config.basic_auth_users else []
    app = web.Application(middlewares=middlewares)
    install_response_headers(app, config.headers)
    app.router.add_get("/metrics", ok)
    app.router.add_get("/healthz", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=config.ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if config.ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def client_ctx(pki: Pki, *, cert: tuple[Path, Path] | None = None, max_tls12: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    if max_tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def get(
    url: str, *, verify: ssl.SSLContext | bool = True, auth: tuple[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(verify=verify, auth=auth, timeout=5.0) as client:
        return await client.get(url)


# Loading.


class TestLoad:
    def test_empty_file_means_plain_http_without_auth(self, tmp_path: Path) -> None:
        """An empty web config serves plain HTTP with no users and no extra headers."""
        cfg = load_web_config(write_config(tmp_path, ""))
        assert cfg.ssl_context is None
        assert dict(cfg.basic_auth_users) == {}
        assert dict(cfg.headers) == {}

    def test_full_file(self, tmp_path: Path, pki: Pki) -> None:
        """Every supported key is read: TLS versions, client auth, users, headers; http2 is ignored."""
        path = write_config(
            tmp_path,
            {
                "tls_server_config": tls_section(
                    pki,
                    client_auth_type="RequireAndVerifyClientCert",
                    client_ca_file=str(pki.client_ca),
                    min_version="TLS13",
                    max_version="TLS13",
                    cipher_suites=["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"],
                    prefer_server_cipher_suites=True,
                ),
                "http_server_config": {"http2": False, "headers": {"X-Frame-Options": "deny"}},
                "basic_auth_users": {"prometheus": HASH_2Y},
            },
        )
        cfg = load_web_config(path)
        assert cfg.ssl_context is not None
        assert cfg.ssl_context.verify_mode == ssl.CERT_REQUIRED
        assert cfg.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3
        assert dict(cfg.basic_auth_users) == {"prometheus": HASH_2Y.encode()}
        assert dict(cfg.headers) == {"X-Frame-Options": "deny"}

    def test_relative_paths_are_relative_to_the_config_file(self, pki: Pki) -> None:
        """cert_file: server.crt next to web-config.yml works, as with the exporter toolkit."""
        path = write_config(
            pki.directory,
            {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}},
            "rel.yml",
        )
        assert load_web_config(path).ssl_context is not None

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ({"tls_server_config": {"cert_fil": "x"}}, "unknown key 'tls_server_config.cert_fil'"),
            ({"basic_auth": {}}, "unknown key 'basic_auth'"),
            ({"http_server_config": {"header": {}}}, "unknown key 'http_server_config.header'"),
            ({"tls_server_config": {"cert": "PEM"}}, "tls_server_config.cert is not supported"),
            ({"rate_limit": {"interval": "1s"}}, "rate_limit is not supported"),
            ({"tls_server_config": {"key_file": "k"}}, "cert_file is required"),
            ({"tls_server_config": ["cert_file"]}, "tls_server_config must be a mapping"),
            ("- a list\n", "the file must be a mapping"),
            ({"http_server_config": {"headers": {"Server": "x"}}}, "header 'Server' cannot be configured"),
            (
                {"http_server_config": {"headers": {"X-Frame-Options": "allow"}}},
                "must be one of deny, sameorigin",
            ),
            ({"http_server_config": {"http2": "yes"}}, "http2 must be true or false"),
            ({"basic_auth_users": {"a:b": HASH}}, "user name 'a:b'"),
        ],
    )
    def test_invalid_content(self, tmp_path: Path, content: Any, message: str) -> None:
        """Unknown, unsupported or mistyped keys are refused with a message naming the key."""
        path = write_config(tmp_path, content)
        with pytest.raises(WebConfigError, match=message.replace("(", r"\(")) as info:
            load_web_config(path)
        assert str(path) in str(info.value)

    @pytest.mark.parametrize(
        ("tls", "message"),
        [
            ({"client_auth_type": "RequireAndVerifyClientCert"}, "needs client_ca_file"),
            ({"client_ca_file": "CLIENT_CA"}, "client_ca_file is set but client_auth_type is NoClientCert"),
            (
                {"client_auth_type": "RequestClientCert", "client_ca_file": "CLIENT_CA"},
                "cannot request a certificate without verifying it",
            ),
            ({"client_auth_type": "Sometimes"}, "client_auth_type 'Sometimes' is not supported"),
            ({"min_version": "TLS10"}, "TLS 1.0 and 1.1 are insecure"),
            ({"max_version": "TLS14"}, "max_version 'TLS14' is not supported"),
            ({"min_version": "TLS13", "max_version": "TLS12"}, "min_version is above max_version"),
            ({"cipher_suites": ["TLS_FAKE_WITH_NOTHING"]}, "unknown cipher 'TLS_FAKE_WITH_NOTHING'"),
            ({"prefer_server_cipher_suites": "yes"}, "must be true or false"),
            ({"cert_file": "missing.crt"}, "cert_file/key_file: file not found: .*/missing.crt$"),
            (
                {"client_auth_type": "VerifyClientCertIfGiven", "client_ca_file": "missing-ca.crt"},
                "client_ca_file: file not found: .*/missing-ca.crt$",
            ),
            ({"key_file": "CLIENT_KEY"}, "cannot load the certificate and key"),
            ({"client_auth_type": "VerifyClientCertIfGiven", "client_ca_file": "NOT_PEM"}, "client_ca_file"),
        ],
    )
    def test_invalid_tls(self, tmp_path: Path, pki: Pki, tls: dict[str, Any], message: str) -> None:
        """TLS mistakes (bad policy, versions, ciphers, files, mismatched key) are clear errors."""
        swap = {"CLIENT_CA": str(pki.client_ca), "CLIENT_KEY": str(pki.client_key), "NOT_PEM": str(tmp_path)}
        not_pem = tmp_path / "not.pem"
        not_pem.write_text("hello\n")
        swap["NOT_PEM"] = str(not_pem)
        section = tls_section(pki, **{k: swap.get(v, v) if isinstance(v, str) else v for k, v in tls.items()})
        with pytest.raises(WebConfigError, match=message):
            load_web_config(write_config(tmp_path, {"tls_server_config": section}))

    def test_missing_file(self, tmp_path: Path) -> None:
        """A web config path that does not exist is a WebConfigError naming it."""
        with pytest.raises(WebConfigError, match="cannot read web config"):
            load_web_config(tmp_path / "absent.yml")

    def test_errors_never_echo_passwords_or_hashes(self, tmp_path: Path) -> None:
        """A plaintext password where a hash belongs, or broken YAML around a hash, is not quoted back."""
        path = write_config(tmp_path, {"basic_auth_users": {"prometheus": "plaintext-hunter2"}})
        with pytest.raises(WebConfigError) as info:
            load_web_config(path)
        assert "plaintext-hunter2" not in str(info.value)
        assert "basic_auth_users.prometheus" in str(info.value)

        path = write_config(tmp_path, f"basic_auth_users:\n  prometheus: {HASH}\n  : [\n")
        with pytest.raises(WebConfigError, match="invalid YAML at line") as info:
            load_web_config(path)
        assert HASH not in str(info.value)
        assert HASH[7:20] not in str(info.value)

    def test_deep_nesting_is_a_web_config_error(self, tmp_path: Path) -> None:
        """YAML nested 5,000 deep (past the Python loader's recursion) is a WebConfigError naming the file and
        saying why, not a RecursionError out of ``run``; the text after the nesting is not quoted back."""
        depth = 5000
        path = write_config(tmp_path, "basic_auth_users: " + "[" * depth + "]" * depth + f"\nx: {HASH}\n")
        with pytest.raises(WebConfigError) as info:
            load_web_config(path)
        assert str(info.value) == f"{path}: invalid YAML: nested too deeply"

    @pytest.mark.parametrize("key", ["cert_file", "key_file", "client_ca_file"])
    def test_a_file_name_with_a_nul_character_is_a_web_config_error(
        self, tmp_path: Path, pki: Pki, key: str
    ) -> None:
        """A NUL in any of the three file names (which ssl would reject with a bare ValueError) is a
        WebConfigError naming the file and the key; the name itself is not quoted back."""
        section = tls_section(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(pki.client_ca))
        section[key] = "secret\0name"
        path = write_config(tmp_path, {"tls_server_config": section})
        with pytest.raises(WebConfigError) as info:
            load_web_config(path)
        assert str(info.value) == f"{path}: tls_server_config.{key} must not contain a NUL character"
        assert "secret" not in str(info.value)


    @pytest.mark.parametrize("key", ["cert_file", "key_file", "client_ca_file"])
    def test_a_fifo_is_refused_before_ssl_opens_it(self, tmp_path: Path, pki: Pki, key: str) -> None:
        """ssl opens its files by name, and opening a FIFO waits for a writer: any of the three files that is a
        FIFO is a WebConfigError at once, naming the key and the file."""
        fifo = tmp_path / "fifo.pem"
        os.mkfifo(fifo)
        section = tls_section(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(pki.client_ca))
        section[key] = str(fifo)
        path = write_config(tmp_path, {"tls_server_config": section})
        with pytest.raises(WebConfigError) as info:
            load_web_config(path)
        assert str(info.value) == f"{path}: tls_server_config.{key}: not a regular file: {fifo}"


# Serving.


class TestTls:
    async def test_tls_accepted_with_the_ca(self, tmp_path: Path, pki: Pki) -> None:
        """A client trusting the CA gets the page over HTTPS."""
        cfg = load_web_config(write_config(tmp_path, {"tls_server_config": tls_section(pki)}))
        async with serve(cfg) as url:
            response = await get(f"{url}/metrics", verify=client_ctx(pki))
        assert url.startswith("https://")
        assert response.status_code == 200
        assert response.text == "ok"

    async def test_tls_refused_without_the_ca(self, tmp_path: Path, pki: Pki) -> None:
        """A client with only the public CA bundle refuses the test server's certificate."""
        cfg = load_web_config(write_config(tmp_path, {"tls_server_config": tls_section(pki)}))
        async with serve(cfg) as url:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await get(f"{url}/metrics", verify=ssl.create_default_context())

    async def test_min_version_tls13_refuses_tls12_clients(self, tmp_path: Path, pki: Pki) -> None:
        """min_version: TLS13 makes a TLS 1.2-only client fail the handshake."""
        cfg = load_web_config(
            write_config(tmp_path, {"tls_server_config": tls_section(pki, min_version="TLS13")})
        )
        async with serve(cfg) as url:
            with pytest.raises(httpx.ConnectError):
                await get(f"{url}/metrics", verify=client_ctx(pki, max_tls12=True))
            assert (await get(f"{url}/metrics", verify=client_ctx(pki))).status_code == 200

    async def test_client_certificate_required(self, tmp_path: Path, pki: Pki) -> None:
        """RequireAndVerifyClientCert: only a certificate from client_ca_file gets through."""
        tls = tls_section(
            pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(pki.client_ca)
        )
        cfg = load_web_config(write_config(tmp_path, {"tls_server_config": tls}))
        async with serve(cfg) as url:
            good = await get(f"{url}/metrics", verify=client_ctx(pki, cert=(pki.client_cert, pki.client_key)))
            assert good.status_code == 200
            with pytest.raises(httpx.TransportError):
                await get(f"{url}/metrics", verify=client_ctx(pki))
            with pytest.raises(httpx.TransportError):
                await get(f"{url}/metrics", verify=client_ctx(pki, cert=(pki.rogue_cert, pki.rogue_key)))

    async def test_client_certificate_verified_if_given(self, tmp_path: Path, pki: Pki) -> None:
        """VerifyClientCertIfGiven: no certificate is fine, an untrusted one is refused."""
        tls = tls_section(pki, client_auth_type="VerifyClientCertIfGiven", client_ca_file=str(pki.client_ca))
        cfg = load_web_config(write_config(tmp_path, {"tls_server_config": tls}))
        async with serve(cfg) as url:
            assert (await get(f"{url}/metrics", verify=client_ctx(pki))).status_code == 200
            with pytest.raises(httpx.TransportError):
                await get(f"{url}/metrics", verify=client_ctx(pki, cert=(pki.rogue_cert, pki.rogue_key)))


class TestBasicAuth:
    @pytest.fixture
    def config(self, tmp_path: Path, pki: Pki) -> WebConfig:
        return load_web_config(
            write_config(
                tmp_path,
                {
                    "tls_server_config": tls_section(pki),
                    "basic_auth_users": {"prometheus": HASH_2Y, "grafana": HASH},
                    "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
                },
            )
        )

    async def test_right_credentials_accepted(self, config: WebConfig, pki: Pki) -> None:
        """Both $2y$ (htpasswd) and $2b$ hashes accept their password."""
        async with serve(config) as url:
            for user in ("prometheus", "grafana"):
                response = await get(f"{url}/metrics", verify=client_ctx(pki), auth=(user, PASSWORD))
                assert response.status_code == 200, user

    @pytest.mark.parametrize(
        "auth", [None, ("prometheus", "wrong"), ("nobody", PASSWORD), ("prometheus", "x" * 100)]
    )
    async def test_missing_or_wrong_credentials_refused(
        self, config: WebConfig, pki: Pki, auth: tuple[str, str] | None
    ) -> None:
        """Missing, wrong, unknown-user or over-long credentials get 401 with a Basic challenge."""
        async with serve(config) as url:
            response = await get(f"{url}/metrics", verify=client_ctx(pki), auth=auth)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="comfywatch"'
        assert PASSWORD not in response.text

    @pytest.mark.parametrize("header", ["Bearer abc", "Basic !!!notbase64", "Basic bm9jb2xvbg=="])
    async def test_malformed_authorization_refused(self, config: WebConfig, pki: Pki, header: str) -> None:
        """Another scheme, bad base64 or no colon is a 401, not a 500."""
        async with serve(config) as url, httpx.AsyncClient(verify=client_ctx(pki)) as client:
            response = await client.get(f"{url}/metrics", headers={"Authorization": header})
        assert response.status_code == 401

    async def test_healthz_is_exempt(self, config: WebConfig, pki: Pki) -> None:
        """/healthz answers without credentials (liveness probes carry none)."""
        async with serve(config) as url:
            assert (await get(f"{url}/healthz", verify=client_ctx(pki))).status_code == 200

    async def test_configured_headers_on_every_response(self, config: WebConfig, pki: Pki) -> None:
        """http_server_config.headers are set on 200s and on 401s alike."""
        async with serve(config) as url:
            ok = await get(f"{url}/metrics", verify=client_ctx(pki), auth=("prometheus", PASSWORD))
            denied = await get(f"{url}/metrics", verify=client_ctx(pki))
        assert ok.headers["X-Content-Type-Options"] == "nosniff"
        assert denied.headers["X-Content-Type-Options"] == "nosniff"

    async def test_checks_are_cached(self, config: WebConfig, pki: Pki, checkpw_calls: list[bytes]) -> None:
        """The right password runs bcrypt once for every later scrape; so does a repeated wrong one."""
        async with serve(config) as url, httpx.AsyncClient(verify=client_ctx(pki)) as client:
            for _ in range(3):
                ok = await client.get(f"{url}/metrics", auth=("prometheus", PASSWORD))
                assert ok.status_code == 200
            assert len(checkpw_calls) == 1
            for _ in range(3):
                bad = await client.get(f"{url}/metrics", auth=("prometheus", "nope"))
                assert bad.status_code == 401
            assert len(checkpw_calls) == 2
            other = await client.get(f"{url}/metrics", auth=("prometheus", "another guess"))
            assert other.status_code == 401
            assert len(checkpw_calls) == 3

    async def test_busy_checks_get_503_without_bcrypt(
        self, config: WebConfig, pki: Pki, checkpw_calls: list[bytes], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With no room for another check, uncached credentials get 503 + Retry-After; cached ones pass."""
        async with serve(config) as url, httpx.AsyncClient(verify=client_ctx(pki)) as client:
            assert (await client.get(f"{url}/metrics", auth=("grafana", PASSWORD))).status_code == 200
            monkeypatch.setattr(webconfig._BcryptVerifier, "MAX_PENDING", 0)
            busy = await client.get(f"{url}/metrics", auth=("prometheus", PASSWORD))
            cached = await client.get(f"{url}/metrics", auth=("grafana", PASSWORD))
            missing = await client.get(f"{url}/metrics")
        assert (busy.status_code, busy.headers["Retry-After"]) == (503, "1")
        assert "WWW-Authenticate" not in busy.headers
        assert cached.status_code == 200
        assert missing.status_code == 401
        assert len(checkpw_calls) == 1

    @pytest.fixture
    def checkpw_calls(self, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
        """The hash of every bcrypt check the middleware runs."""
        calls: list[bytes] = []
        real_checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw

        def counting_checkpw(password: bytes, hashed: bytes) -> bool:
            calls.append(hashed)
            return real_checkpw(password, hashed)

        monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
        return calls

    async def test_no_users_means_no_auth(self) -> None:
        """With an empty user table the middleware lets everything through."""
        middleware = basic_auth_middleware({})
        app = web.Application(middlewares=[middleware])

        async def ok(_request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app.router.add_get("/metrics", ok)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            response = await get(f"http://127.0.0.1:{runner.addresses[0][1]}/metrics")
        finally:
            await runner.cleanup()
        assert response.status_code == 200


class TestBcryptBounds:
    """The verifier's bounds, driven directly so that the number of waiting checks is exact."""

    @pytest.fixture
    def gate(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[str]]]:
        """bcrypt blocks until the event is set; the list gets the name of the thread of every check."""
        release = threading.Event()
        threads: list[str] = []
        real_checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw

        def gated_checkpw(password: bytes, hashed: bytes) -> bool:
            threads.append(threading.current_thread().name)
            release.wait(10)
            return real_checkpw(password, hashed)

        monkeypatch.setattr(bcrypt, "checkpw", gated_checkpw)
        yield release, threads
        release.set()

    @staticmethod
    def verifier() -> webconfig._BcryptVerifier:
        return webconfig._BcryptVerifier({"prometheus": HASH.encode()})

    async def test_pending_checks_are_bounded_per_peer_and_in_total(
        self, gate: tuple[threading.Event, list[str]]
    ) -> None:
        """A third check from one address is BUSY; once eight wait, everyone's new check is, until they end."""
        release, threads = gate
        verifier = self.verifier()
        Verdict = webconfig._Verdict

        def verify(password: str, peer: str) -> asyncio.Task[webconfig._Verdict]:
            return asyncio.create_task(verifier.verify("prometheus", password, peer))

        flood = [verify(f"wrong-{i}", "10.0.0.1") for i in range(3)]
        assert await asyncio.wait_for(flood[2], 1) is Verdict.BUSY
        flood += [verify(f"wrong-{peer}-{i}", f"10.0.1.{peer}") for peer in range(3) for i in range(2)]
        late = verify(PASSWORD, "10.0.2.1")
        assert await asyncio.wait_for(late, 1) is Verdict.BUSY
        release.set()
        verdicts = await asyncio.wait_for(asyncio.gather(*flood), 10)
        assert verdicts == [Verdict.REFUSED, Verdict.REFUSED, Verdict.BUSY] + [Verdict.REFUSED] * 6
        assert len(threads) == webconfig._BcryptVerifier.MAX_PENDING
        assert await verifier.verify("prometheus", PASSWORD, "10.0.2.1") is Verdict.ACCEPTED

    async def test_identical_concurrent_checks_share_one_bcrypt_run_on_its_own_thread(
        self, gate: tuple[threading.Event, list[str]]
    ) -> None:
        """Fifty requests with one wrong password cost one bcrypt, run off the default executor."""
        release, threads = gate
        verifier = self.verifier()
        same = [asyncio.create_task(verifier.verify("prometheus", "wrong", "10.0.0.1")) for _ in range(50)]
        await asyncio.sleep(0)  # all fifty ask while the first check is held: none may be BUSY
        release.set()
        assert set(await asyncio.wait_for(asyncio.gather(*same), 10)) == {webconfig._Verdict.REFUSED}
        assert len(threads) == 1
        assert threads[0].startswith("comfywatch-bcrypt")

    async def test_failure_cache_is_bounded(
        self, gate: tuple[threading.Event, list[str]], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The oldest remembered failure is forgotten beyond FAILURE_CACHE entries, and costs bcrypt again."""
        release, threads = gate
        release.set()
        monkeypatch.setattr(webconfig._BcryptVerifier, "FAILURE_CACHE", 2)
        verifier = self.verifier()
        for password in ("one", "two", "three", "three", "two", "one"):
            assert await verifier.verify("prometheus", password, "10.0.0.1") is webconfig._Verdict.REFUSED
        assert len(threads) == 4
