"""Tests for comfywatch.redact: known secrets and credential-shaped text never survive a scrub."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfywatch import redact
from comfywatch.redact import MASK, SecretRegistry, strip_userinfo

SETTINGS = settings(deadline=None, max_examples=200)
secret_text = st.text(min_size=4, max_size=40).filter(lambda s: len(s.strip()) >= 4)
surrounding = st.text(max_size=60)
# Userinfo parts as they can appear in a URL: no "/", "?", "#", "@", whitespace or control characters.
userinfo_part = st.text(
    alphabet=st.characters(
        blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs"), blacklist_characters="/?#@\x1c\x1d\x1e\x1f\x85"
    ),
    min_size=1,
    max_size=20,
)


class TestKnownSecrets:
    @given(secret=secret_text, before=surrounding, after=surrounding)
    @SETTINGS
    def test_registered_secret_never_survives(self, secret: str, before: str, after: str) -> None:
        """A registered secret is absent from the scrubbed text whatever surrounds it."""
        reg = SecretRegistry()
        reg.register(secret)
        assert secret not in reg.scrub(before + secret + after)

    @given(secrets=st.lists(secret_text, min_size=2, max_size=5), glue=st.lists(surrounding, min_size=6))
    @SETTINGS
    def test_several_overlapping_secrets_all_masked(self, secrets: list[str], glue: list[str]) -> None:
        """With several secrets registered (possibly overlapping), none of them survives."""
        reg = SecretRegistry()
        for s in secrets:
            reg.register(s)
        text = "".join(g + s for g, s in zip(glue, secrets, strict=False)) + glue[-1]
        out = reg.scrub(text)
        for s in secrets:
            assert s not in out

    @given(text=surrounding, secret=secret_text)
    @SETTINGS
    def test_scrub_is_idempotent(self, text: str, secret: str) -> None:
        """Scrubbing twice gives the same text as scrubbing once."""
        reg = SecretRegistry()
        reg.register(secret)
        once = reg.scrub(text + secret + text)
        assert reg.scrub(once) == once

    def test_replaced_by_mask(self) -> None:
        """A secret in a sentence becomes *** and the rest of the sentence stays."""
        reg = SecretRegistry()
        reg.register("sk-live-0123456789")
        assert reg.scrub("key sk-live-0123456789 rejected") == f"key {MASK} rejected"

    def test_short_values_ignored(self) -> None:
        """Values under four characters are not registered (they would mask innocent text)."""
        reg = SecretRegistry()
        reg.register("abc")
        reg.register("  ab  ")
        assert len(reg) == 0
        assert reg.scrub("abc ab") == "abc ab"

    def test_stripped_and_percent_encoded_forms_registered(self) -> None:
        """A secret read with its newline, and its URL-encoded form, are both masked."""
        reg = SecretRegistry()
        reg.register("p@ss w0rd/x\n")
        assert reg.scrub("pw=p@ss w0rd/x.") == f"pw={MASK}."
        assert "p%40ss%20w0rd%2Fx" not in reg.scrub("http://h/?q=p%40ss%20w0rd%2Fx")

    def test_secret_containing_mask_characters_cannot_reappear(self) -> None:
        """Masking never assembles a registered secret out of *** and neighbouring text."""
        reg = SecretRegistry()
        reg.register("abcd")
        reg.register("***x")
        assert "***x" not in reg.scrub("abcdx")

    def test_clear_forgets(self) -> None:
        """clear() empties the registry."""
        reg = SecretRegistry()
        reg.register("forget-me-please")
        reg.clear()
        assert reg.scrub("forget-me-please") == "forget-me-please"

    def test_concurrent_registration_is_safe(self) -> None:
        """Registrations from many threads all land and all get masked."""
        reg = SecretRegistry()
        values = [f"secret-{i:04d}-value" for i in range(200)]

        def worker(chunk: list[str]) -> None:
            for v in chunk:
                reg.register(v)
                reg.scrub(v)

        threads = [threading.Thread(target=worker, args=(values[i::8],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out = reg.scrub(" ".join(values))
        assert all(v not in out for v in values)
        assert all(v in reg for v in values)


class TestShapes:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("GET http://bob:hunter2@host:8188/queue", "GET http://***@host:8188/queue"),
            ("https://token@cloud.example/api", "https://***@cloud.example/api"),
            ("http://u:p@ss@host/x@y", "http://***@host/x@y"),
            ("Authorization: Bearer eyJhbGciOi", "Authorization: Bearer ***"),
            ("authorization=Basic dXNlcjpwYXNz next", "authorization=Basic *** next"),
            ("X-API-Key: ck_live_abcdef", "X-API-Key: ***"),
            ("{'X-API-Key': 'ck_live_abcdef', 'Accept': 'json'}", "{'X-API-Key': '***', 'Accept': 'json'}"),
            ('{"authorization": "Bearer zzz"}', '{"authorization": "Bearer ***"}'),
            (
                "wss://cloud.comfy.org/ws?clientId=abc&token=eyJ0",
                "wss://cloud.comfy.org/ws?clientId=abc&token=***",
            ),
            ("/api?api_key=k1&x=1", "/api?api_key=***&x=1"),
            ("authorization failed for this request", "authorization failed for this request"),
            ("the token expired", "the token expired"),
            ("http://127.0.0.1:8188/history", "http://127.0.0.1:8188/history"),
        ],
    )
    def test_credential_shapes_masked(self, text: str, expected: str) -> None:
        """URL userinfo, auth header values and token parameters are masked; plain prose is left alone."""
        assert SecretRegistry().scrub(text) == expected

    @given(user=userinfo_part, password=userinfo_part, before=surrounding)
    @SETTINGS
    def test_url_password_never_survives(self, user: str, password: str, before: str) -> None:
        """Whatever the user and password, the userinfo of a URL is masked."""
        out = SecretRegistry().scrub(f"{before} http://{user}:{password}@example.com:8188/x")
        assert f"{user}:{password}@" not in out
        assert "http://***@example.com:8188/x" in out


class TestStripUserinfo:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("http://user:pass@host:8188/prefix?a=b", "http://host:8188/prefix?a=b"),
            ("https://tok@cloud.comfy.org", "https://cloud.comfy.org"),
            ("http://u:p@ss@h/x", "http://h/x"),
            ("http://host/path@not-userinfo", "http://host/path@not-userinfo"),
            ("http://host?q=a@b", "http://host?q=a@b"),
            ("http://[::1]:8188/", "http://[::1]:8188/"),
            ("127.0.0.1:8188", "127.0.0.1:8188"),
        ],
    )
    def test_examples(self, url: str, expected: str) -> None:
        """Only the userinfo goes; everything else is kept byte for byte."""
        assert strip_userinfo(url) == expected

    @given(user=userinfo_part, password=userinfo_part, path=st.from_regex(r"(/[a-z0-9@]*)?", fullmatch=True))
    @SETTINGS
    def test_credentials_removed(self, user: str, password: str, path: str) -> None:
        """The result is the URL without credentials, for any user and password."""
        assert strip_userinfo(f"http://{user}:{password}@host:1{path}") == f"http://host:1{path}"


class TestModuleRegistry:
    def test_register_secret_and_scrub_use_default_registry(self) -> None:
        """register_secret() feeds the process-wide registry used by scrub()."""
        value = "module-level-secret-7731"
        redact.register_secret(value)
        assert value in redact.SECRETS
        assert redact.scrub(f"x {value} y") == f"x {MASK} y"
