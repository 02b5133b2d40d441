"""Durations and sizes as people write them in config files: ``"15s"``, ``"1h30m"``, ``"16MiB"``."""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "format_size", "parse_duration", "parse_size"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}


def parse_duration(value: object) -> float:
    """Seconds from ``"500ms"``, ``"15s"``, ``"10m"``, ``"1h30m"``, ``"2d"`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as \"15s\" or \"10m\"")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond float range (e.g. from a JSON environment override)
            seconds = math.inf
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if not text:
            raise ValueError("empty duration")
        position, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            position = match.end()
        if position != len(text):
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(
                    f"invalid duration {value[:40]!r}: use a number with a unit, "
                    'e.g. "15s", "10m", "1h"'
                ) from None
    else:
        raise ValueError("expected a duration such as \"15s\" or \"10m\"")
    if seconds != seconds or seconds < 0 or seconds > 365 * 86400:
        raise ValueError("duration must be between 0 and 365 days")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form of *seconds* (``90.0`` -> ``"90s"``, ``600`` -> ``"10m"``)."""
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def format_size(size: int) -> str:
    """*size* bytes in the largest binary unit that divides it exactly (``33554432`` -> ``"32MiB"``)."""
    for unit in ("GiB", "MiB", "KiB"):
        factor = _SIZE_UNITS[unit]
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def parse_size(value: object) -> int:
    """Bytes from ``"16MiB"``, ``"2GB"``, ``1048576``."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as \"16MiB\"")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"invalid size {value[:40]!r}: use e.g. \"16MiB\" or a number of bytes")
        number = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
        if not math.isfinite(number):  # hundreds of digits overflow to inf, which int() refuses
            raise ValueError(f"invalid size {value[:40]!r}: too large")
        size = int(number)
    else:
        raise ValueError("expected a size such as \"16MiB\"")
    if size <= 0:
        raise ValueError("size must be positive")
    return size
