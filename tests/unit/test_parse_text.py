"""comfywatch.parse.text: any server string made encodable, free of control characters and bounded."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.parse.text import ELLIPSIS, MAX_CHARS, TRUNCATIONS, Cut, bounded, clean, sanitize
from tests.strategies import FUZZ

#: Every code point, lone surrogates included (hypothesis leaves them out unless asked).
ANY_CHAR = st.characters(codec=None, exclude_categories=())
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


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
        ("", ""),
    ],
)
def test_sanitize(raw: str, expected: str) -> None:
    """Control-character runs become one space, bidi controls go, lone surrogates become U+FFFD; the rest stays."""
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
