"""Tests for comfywatch.config.durations: "15s"/"1h30m"/"16MiB" as people write them in config files."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.config.durations import format_duration, format_size, parse_duration, parse_size

YEAR = 365 * 86400


class TestParseDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("500ms", 0.5),
            ("15s", 15.0),
            ("10m", 600.0),
            ("1h", 3600.0),
            ("1h30m", 5400.0),
            ("1h30m15s", 5415.0),
            ("2d", 172800.0),
            ("1.5s", 1.5),
            ("0.25h", 900.0),
            ("0s", 0.0),
            ("365d", float(YEAR)),
            ("15", 15.0),
            ("2.5", 2.5),
            (" 15s ", 15.0),
            ("1h 30m", 5400.0),
        ],
    )
    def test_text_forms(self, text: str, seconds: float) -> None:
        """Units ms/s/m/h/d, combinations, decimals, bare numbers and spaces all parse."""
        assert parse_duration(text) == pytest.approx(seconds)

    @pytest.mark.parametrize(("number", "seconds"), [(15, 15.0), (2.5, 2.5), (0, 0.0)])
    def test_numbers_are_seconds(self, number: float, seconds: float) -> None:
        """A TOML number is seconds."""
        assert parse_duration(number) == seconds

    @pytest.mark.parametrize("text", ["abc", "15x", "s", "1.5.5s", "15 seconds", "1h-30m", "-5s", "ms15", "1e3s"])
    def test_invalid_text(self, text: str) -> None:
        """Unknown units or garbage are refused with an example of the right form."""
        with pytest.raises(ValueError, match=r'invalid duration .*e\.g\. "15s"'):
            parse_duration(text)

    @pytest.mark.parametrize("value", ["", "   "])
    def test_empty(self, value: str) -> None:
        """An empty duration is refused."""
        with pytest.raises(ValueError, match="empty duration"):
            parse_duration(value)

    @pytest.mark.parametrize(
        "value", [-1, -0.001, "-5", "366d", YEAR + 1, "nan", "inf", float("nan"), float("inf"), 10**400]
    )
    def test_out_of_range(self, value: Any) -> None:
        """Negative, NaN, infinite and longer-than-a-year durations are refused (even overflowing ints)."""
        with pytest.raises(ValueError, match="between 0 and 365 days"):
            parse_duration(value)

    @pytest.mark.parametrize("value", [True, False, None, [15], {"s": 15}])
    def test_wrong_type(self, value: Any) -> None:
        """Booleans, null, arrays and tables are not durations."""
        with pytest.raises(ValueError, match="expected a duration"):
            parse_duration(value)

    def test_error_quotes_at_most_40_characters(self) -> None:
        """The offending text is quoted but bounded."""
        with pytest.raises(ValueError) as info:
            parse_duration("x" * 500)
        assert "x" * 41 not in str(info.value)


class TestFormatDuration:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [
            (90.0, "90s"),
            (600, "10m"),
            (3600, "1h"),
            (5400, "90m"),
            (86400, "24h"),
            (0, "0s"),
            (0.5, "500ms"),
            (15, "15s"),
        ],
    )
    def test_shortest_form(self, seconds: float, text: str) -> None:
        """The largest unit that divides the value exactly is used."""
        assert format_duration(seconds) == text

    @given(st.integers(min_value=0, max_value=YEAR))
    def test_whole_seconds_round_trip(self, seconds: int) -> None:
        """Whole seconds survive format -> parse exactly."""
        assert parse_duration(format_duration(float(seconds))) == seconds

    @given(st.integers(min_value=1, max_value=10**7))
    def test_milliseconds_round_trip(self, millis: int) -> None:
        """Millisecond values survive format -> parse (to float precision)."""
        seconds = millis / 1000
        assert math.isclose(parse_duration(format_duration(seconds)), seconds, rel_tol=1e-12)


class TestParseSize:
    @pytest.mark.parametrize(
        ("value", "size"),
        [
            ("16MiB", 16 * 2**20),
            ("2GB", 2 * 10**9),
            ("1GiB", 2**30),
            ("1.5KiB", 1536),
            ("1KB", 1000),
            ("10MB", 10**7),
            ("1B", 1),
            ("100", 100),
            (" 16 MiB ", 16 * 2**20),
            (1048576, 1048576),
        ],
    )
    def test_forms(self, value: Any, size: int) -> None:
        """Decimal and binary units, bare byte counts and TOML integers parse."""
        assert parse_size(value) == size

    @pytest.mark.parametrize("value", ["", "MiB", "16 TB", "-1MiB", "1e6", "16M", "sixteen"])
    def test_invalid_text(self, value: str) -> None:
        """Unknown units and garbage are refused with an example."""
        with pytest.raises(ValueError, match=r'invalid size .*"16MiB"'):
            parse_size(value)

    @pytest.mark.parametrize("value", [0, -5, "0", "0.1"])
    def test_not_positive(self, value: Any) -> None:
        """A cap of zero bytes (or less) is refused."""
        with pytest.raises(ValueError, match="positive"):
            parse_size(value)

    @pytest.mark.parametrize("value", [True, None, 1.5, [1]])
    def test_wrong_type(self, value: Any) -> None:
        """Booleans, floats and other types are refused."""
        with pytest.raises(ValueError, match="expected a size"):
            parse_size(value)

    def test_overflowing_digits(self) -> None:
        """Hundreds of digits overflow float: a ValueError, not an OverflowError."""
        with pytest.raises(ValueError, match="too large"):
            parse_size("9" * 400)


class TestFormatSize:
    @pytest.mark.parametrize(
        ("size", "text"),
        [(1, "1B"), (1000, "1000B"), (1024, "1KiB"), (1536, "1536B"), (32 * 2**20, "32MiB"), (2**30, "1GiB"),
         (3 * 2**30, "3GiB")],
    )
    def test_largest_exact_binary_unit(self, size: int, text: str) -> None:
        """The largest binary unit that divides the size exactly, else bytes."""
        assert format_size(size) == text

    @given(st.integers(min_value=1, max_value=2**40))
    def test_round_trip(self, size: int) -> None:
        """What format_size writes, parse_size reads back exactly."""
        assert parse_size(format_size(size)) == size
