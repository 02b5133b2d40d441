"""glibc's mmap threshold, pinned at its initial 128 KiB for the daemon.

glibc serves a block of 128 KiB or more with its own ``mmap`` and unmaps it when it is freed, but by default it
raises that threshold to the size of every such block freed (up to 32 MiB) and lets its heap keep twice as much
free at its top. A ``/metrics`` scrape of a large fleet allocates its body in pieces of up to several MiB and frees
them once sent: with the threshold raised, the next scrapes' pieces come from the heap, and the heap keeps them.
Setting the threshold explicitly turns that adjustment off. A threshold the environment sets
(``MALLOC_MMAP_THRESHOLD_``, or ``glibc.malloc.mmap_threshold`` in ``GLIBC_TUNABLES``) is the user's choice and
left alone; other C libraries are left alone too. An allocator preloaded in glibc's place (jemalloc, tcmalloc)
may accept the call and ignore it.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["MMAP_THRESHOLD", "glibc_version", "pin_mmap_threshold"]

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


def _set_by_user() -> bool:
    """Whether the environment sets the threshold (glibc read it at start)."""
    return "MALLOC_MMAP_THRESHOLD_" in os.environ or "glibc.malloc.mmap_threshold" in os.environ.get(
        "GLIBC_TUNABLES", "")


def pin_mmap_threshold() -> bool:
    """Pin the threshold at :data:`MMAP_THRESHOLD`; whether it was (not under another C library, nor when the
    environment sets it)."""
    if glibc_version() is None or _set_by_user():
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # no C library to open, or a static build without mallopt in reach
        return False
