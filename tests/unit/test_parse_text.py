"""comfywatch.parse.text: any server string made encodable, free of control characters and bounded."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.parse.text import ELLIPSIS, MAX_CHARS, TRUNCATIONS, Cut, bounded, clean, sanitize
from comfywatch.redact import MASK, register_secret, request_scope, secret_forms, target_scope
from tests.strategies import FUZZ

#: Every code point, lone surrogates included (hypothesis leaves them out unless asked).
ANY_CHAR = st.characters(codec=None, exclude_categories=())
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.3.64", "0.3.64"),
        ("ünïcødé ✓ 🚀", "ünïcødé ✓ 🚀"),
        ("cuda:0 \ud800", "cuda:0 \ufffd"),
        ("\udfff\ud800", "\ufffd\ufffd"),
        ("0.3.64\x1b[2J\x1b[1;31mFAKE: all checks passed", "0.3.64 [2J [1;31mFAKE: all checks passed"),
        ("two\r\nlines\n", "two lines "),
        ("c1 \x9b csi \x85 nel \x7f del", "c1   csi   nel   del"),
        ("admin\u202egnp.exe \u2066isolated\u2069", "admingnp.exe isolated"),
        ("KSampler\u2028\u2029\u2028✓ server.gpu all GPUs healthy", "KSampler ✓ server.gpu all GPUs healthy"),
        ("", ""),
    ],
)
def test_sanitize(raw: str, expected: str) -> None:
    """Control-character runs (the line and paragraph separators among them: str.splitlines breaks on them)
    become one space, bidi controls go, lone surrogates become U+FFFD; the rest stays."""
    assert sanitize(raw) == expected


def test_clean_cuts_with_a_visible_marker() -> None:
    """A value over the limit keeps limit - 1 characters and ends in the ellipsis; one within it is whole."""
    assert clean("a" * 300, 256) == ("a" * 255 + ELLIPSIS, True)
    assert clean("a" * 256, 256) == ("a" * 256, False)
    assert clean("\x1b" * 300, 10) == (" " + ELLIPSIS, True)


def test_clean_of_20_megabytes_is_cheap() -> None:
    """Only what is kept is sanitized: a 20 MB value costs no more than a short one."""
    text, cut = clean("\ud800" * 20_000_000, MAX_CHARS)
    assert cut and len(text) == MAX_CHARS and text.endswith(ELLIPSIS)


def test_clean_masks_a_secret_the_server_echoes() -> None:
    """A registered secret (here a request's own, as a /probe's password) is masked wherever a server string
    carries it, clear or percent-encoded; outside the request it is forgotten and nothing is masked."""
    with request_scope():
        register_secret("S3cret/Passw0rd")
        assert clean("posix S3cret/Passw0rd", MAX_CHARS) == (f"posix {MASK}", False)
        assert clean("0.3.64 S3cret%2FPassw0rd", MAX_CHARS) == (f"0.3.64 {MASK}", False)
    assert clean("posix S3cret/Passw0rd", MAX_CHARS) == ("posix S3cret/Passw0rd", False)


def test_clean_masks_the_secrets_of_the_target_whose_answer_it_is() -> None:
    """Inside a target's scope its own secrets are masked; another target's (registered process-wide, as every
    configured target's are) are not searched: a server can only echo what it was sent, and the fleet's whole set
    would cost every string in proportion to the fleet and could mask another target's ids."""
    register_secret("other-target-Passw0rd")  # unique to this test: no other test's text holds it
    with target_scope(secret_forms(["own-target-Passw0rd"])):
        assert clean("own-target-Passw0rd other-target-Passw0rd", MAX_CHARS) == (
            f"{MASK} other-target-Passw0rd", False)
    assert clean("own-target-Passw0rd", MAX_CHARS) == ("own-target-Passw0rd", False)


def test_clean_masks_a_secret_across_the_cut_whole() -> None:
    """A secret the bound would cut in two is masked whole before the cut: no part of it is kept."""
    secret = "S3cretPassw0rd-0123456789"
    with request_scope():
        register_secret(secret)
        text, cut = clean("x" * 250 + secret + "y" * 100, 256)
    assert (text, cut) == ("x" * 250 + MASK + "yy" + ELLIPSIS, True)


def test_bounded_counts_each_cut() -> None:
    """bounded() counts a cut under ``string``; a value within the bound counts nothing."""
    before = TRUNCATIONS[Cut.STRING]
    assert bounded("x" * 1000) == "x" * (MAX_CHARS - 1) + ELLIPSIS
    assert bounded("x" * 10, 5) == "xxxx" + ELLIPSIS
    assert bounded("short") == "short"
    assert TRUNCATIONS[Cut.STRING] == before + 2


@FUZZ
@given(st.text(ANY_CHAR, max_size=400), st.integers(min_value=1, max_value=300))
def test_any_string_comes_out_safe(raw: str, limit: int) -> None:
    """For any string and limit: UTF-8 encodable, no control or bidi character, within the limit, cut iff too long."""
    text, cut = clean(raw, limit)
    text.encode("utf-8")
    assert CONTROL.search(text) is None
    assert len(text) <= limit
    assert cut == (len(raw) > limit)
    assert text == raw or cut or CONTROL.search(raw) or re.search("[\ud800-\udfff]", raw)
