"""Giving freed memory back to the system, on glibc: the daemon's RSS after large ``/metrics`` scrapes.

glibc serves a block of 128 KiB or more with its own ``mmap`` and unmaps it when it is freed, but by default it
raises that threshold to the size of every such block freed (up to 32 MiB) and lets its heap keep twice as much
free. A scrape of a large fleet allocates its body's pieces, and frees them once sent; without a fixed threshold,
the pieces of the next scrapes come from the heap and stay there. Setting the threshold explicitly
(:func:`pin_mmap_threshold`) turns that adjustment off; what smaller blocks leave free inside the heap,
:func:`trim` gives back after a large scrape. Both do nothing on other C libraries.
"""

from __future__ import annotations

import ctypes
import functools
import os

__all__ = ["MMAP_THRESHOLD", "glibc_version", "pin_mmap_threshold", "trim"]

#: glibc's initial (and documented default) threshold.
MMAP_THRESHOLD = 128 * 1024
#: ``M_MMAP_THRESHOLD`` of glibc's ``<malloc.h>``.
_M_MMAP_THRESHOLD = -3


def glibc_version() -> str | None:
    """glibc's version (``"glibc 2.36"``), or None under another C library."""
    confstr = getattr(os, "confstr", None)
    if confstr is None:
        return None
    try:
        version = confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):  # macOS does not know the name; musl refuses it
        return None
    return version if isinstance(version, str) and version else None


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if glibc_version() is None:
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def _set_by_user() -> bool:
    """Whether the environment sets the threshold (glibc has read it at start: it is the user's choice)."""
    return "MALLOC_MMAP_THRESHOLD_" in os.environ or "glibc.malloc.mmap_threshold" in os.environ.get(
        "GLIBC_TUNABLES", "")


def pin_mmap_threshold() -> bool:
    """Fix the threshold at :data:`MMAP_THRESHOLD`; whether it was set (not under another C library, nor when
    the environment sets it)."""
    libc = _libc()
    if libc is None or _set_by_user():
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trim() -> bool:
    """Give the heaps' free pages back to the system (``malloc_trim``); whether any was."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))
