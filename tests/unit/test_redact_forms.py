"""Secrets are masked in every form they travel in: HTTP Basic's base64, percent-encoded, JSON-escaped.

A server may echo the request back (a ``/prompt`` 400 quoting the Authorization header, an error page quoting
the request line), and a request line carries a ``/probe`` target percent-encoded. Whatever form the credential
takes on the way back, a scrubbed text must not contain it.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfywatch.basic_auth import basic_auth_header
from comfywatch.config import Credentials
from comfywatch.redact import MASK, SecretRegistry

SETTINGS = settings(deadline=None, max_examples=200)
secret_text = st.text(min_size=4, max_size=30).filter(lambda s: len(s.strip()) >= 4 and s == s.strip())
# A userinfo part as a client percent-encodes it: anything at all, since quote(safe="") leaves no delimiter.
any_part = st.text(min_size=1, max_size=20)


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def encoded_forms(secret: str) -> list[str]:
    """The forms a secret takes in a URL, a form body or a JSON document."""
    return [quote(secret, safe=""), quote(secret), quote_plus(secret), json.dumps(secret)[1:-1]]


class TestRegisteredForms:
    @given(secret=secret_text, before=st.text(max_size=30), after=st.text(max_size=30))
    @SETTINGS
    def test_no_encoded_form_survives(self, secret: str, before: str, after: str) -> None:
        """Each percent-encoded (quote, quote_plus) and JSON-escaped form of a registered secret is masked."""
        registry = SecretRegistry()
        registry.register(secret)
        for form in encoded_forms(secret):
            assert form not in registry.scrub(before + form + after)

    def test_basic_header_value_masks_its_token_and_password(self) -> None:
        """Registering ``Basic <base64>`` masks the base64 alone and the password it carries."""
        registry = SecretRegistry()
        token = basic("alice", "pa55-w0rd!")
        registry.register(f"Basic {token}")
        echoed = f'node_errors: {{"headers": "{token}"}}; decoded alice:pa55-w0rd!'
        out = registry.scrub(echoed)
        assert token not in out
        assert "pa55-w0rd!" not in out
        assert quote(token, safe="") not in registry.scrub(quote(token, safe=""))

    def test_bearer_header_value_masks_its_token(self) -> None:
        """Registering ``Bearer <token>`` masks the token wherever it is echoed without its scheme."""
        registry = SecretRegistry()
        registry.register("Bearer tok-3f9a77c1")
        assert registry.scrub("got tok-3f9a77c1 back") == f"got {MASK} back"

    def test_non_ascii_password_in_json(self) -> None:
        """A password with non-ASCII characters and quotes is masked in ``json.dumps`` output too."""
        registry = SecretRegistry()
        registry.register('pässwört"x')
        document = json.dumps({"echo": 'pässwört"x'})
        assert "p\\u00e4ssw\\u00f6rt\\\"x" not in registry.scrub(document)


class TestUnregisteredShapes:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("[('Authorization', 'Basic YWxpY2U6cGE1NXdvcmQ=')]", "[('Authorization', 'Basic ***')]"),
            ("echoed basic YWxpY2U6cGE1NXdvcmQ= back", "echoed basic *** back"),
            ("Basic functionality is fine", "Basic functionality is fine"),
            ("Basic auth was refused", "Basic auth was refused"),
            (
                "bytearray(b'/probe?target=http%3A%2F%2Falice%3Ahunter2%40host%3A8188%2F&module=local')",
                "bytearray(b'/probe?target=http%3A%2F%2F***%40host%3A8188%2F&module=local')",
            ),
            ("target=https%3a%2f%2falice%3ahunter2%40host", "target=https%3a%2f%2f***%40host"),
            ("target=http%253A%252F%252Falice%253Ahunter2%2540host", "target=http%253A%252F%252F***%2540host"),
            ("target=http%3A%2F%2Fhost%2Fa%40b", "target=http%3A%2F%2Fhost%2Fa%40b"),
        ],
    )
    def test_credential_shapes_masked(self, text: str, expected: str) -> None:
        """Basic credentials and percent-encoded URL userinfo are masked even when nobody registered them."""
        assert SecretRegistry().scrub(text) == expected

    @given(user=any_part, password=any_part, before=st.text(max_size=30))
    @SETTINGS
    def test_percent_encoded_url_password_never_survives(self, user: str, password: str, before: str) -> None:
        """A target percent-encoded whole (as Prometheus sends it) loses its userinfo, whatever it holds."""
        target = quote(f"http://{quote(user, safe='')}:{quote(password, safe='')}@example.com:8188/x", safe="")
        out = SecretRegistry().scrub(f"{before} /probe?target={target}&module=local")
        assert "http%3A%2F%2F***%40example.com%3A8188%2Fx&module=local" in out

    @given(user=any_part, password=any_part)
    @SETTINGS
    def test_basic_value_never_survives(self, user: str, password: str) -> None:
        """``Basic <base64 of user:password>`` is masked whatever the user and password."""
        token = basic(user, password)
        assert token not in SecretRegistry().scrub(f"headers: ['basic {token}']")


def test_a_user_name_is_no_secret() -> None:
    """The README's ``monitor:secret@host``: the password and the Basic token are masked, an event named after the
    user is not."""
    registry = SecretRegistry()
    for value in Credentials(basic_auth=("monitor", "secret-pw")).secret_values():
        registry.register(value)
    text = f"monitor_websocket_closed {basic_auth_header('monitor', 'secret-pw')} secret-pw"
    assert registry.scrub(text) == "monitor_websocket_closed Basic *** ***"
