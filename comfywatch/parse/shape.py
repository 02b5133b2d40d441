"""Small shape checkers shared by the parsers; each raises ParseError naming the JSON path."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from comfywatch.errors import ParseError
from comfywatch.parse.text import bounded

__all__ = [
    "as_bool", "as_float", "as_int", "as_list", "as_map", "as_opt_int", "as_opt_str", "as_shared_str", "as_str",
    "opt_timestamp_ms",
]

#: Far beyond any real timestamp in ms (year 31 million), yet small enough that arithmetic on it stays in
#: float range: json.loads keeps 400-digit integers exact, and ``big / 1000.0`` would overflow.
_MAX_TIMESTAMP = 1e18


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def as_map(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ParseError(f"{path}: expected object, got {_kind(value)}")
    return value


def as_list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ParseError(f"{path}: expected array, got {_kind(value)}")
    return value


def as_str(value: object, path: str) -> str:
    """A server string, made safe to keep (see :func:`comfywatch.parse.text.bounded`)."""
    if not isinstance(value, str):
        raise ParseError(f"{path}: expected string, got {_kind(value)}")
    return bounded(value)


#: Strings many servers repeat, one copy each (see :func:`as_shared_str`). Not ``sys.intern``: some interpreters
#: keep interned strings for good, and a server can send new ones on every poll.
_SHARED: dict[str, str] = {}
#: Far more than a fleet's builds, devices and command lines; reached only by servers sending new strings all the
#: time, and then the table starts over.
_MAX_SHARED = 4096


def as_shared_str(value: object, path: str) -> str:
    """:func:`as_str` for a string a whole fleet tends to repeat on every poll (versions, device names, argv):
    one copy, however many targets keep it."""
    text = as_str(value, path)
    shared = _SHARED.get(text)
    if shared is None:
        if len(_SHARED) >= _MAX_SHARED:
            _SHARED.clear()
        shared = _SHARED[text] = text
    return shared


def as_opt_str(value: object, path: str) -> str | None:
    return None if value is None else as_str(value, path)


def as_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ParseError(f"{path}: expected boolean, got {_kind(value)}")
    return value


def as_float(value: object, path: str) -> float:
    # bool is an int subclass; a true/false where a number belongs is a wrong shape.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParseError(f"{path}: expected number, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer beyond float range (json.loads keeps arbitrary precision)
        raise ParseError(f"{path}: expected a finite number") from None
    if not math.isfinite(number):
        raise ParseError(f"{path}: expected a finite number")
    return number


def as_int(value: object, path: str) -> int:
    number = as_float(value, path)
    if isinstance(value, int):
        # Exact: going through float would round byte counts above 2**53.
        return value
    if number != int(number):
        raise ParseError(f"{path}: expected an integer")
    return int(number)


def as_opt_int(value: object, path: str) -> int | None:
    return None if value is None else as_int(value, path)


def opt_timestamp_ms(value: object) -> int | None:
    """A server timestamp (ms), or None for anything unusable: not a number, NaN, +-Infinity, absurdly large."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not -_MAX_TIMESTAMP < value < _MAX_TIMESTAMP:  # NaN fails both comparisons
        return None
    return int(value)
