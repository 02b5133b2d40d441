"""glibc's allocator, tuned for the daemon: the mmap threshold pinned at its initial 128 KiB, and one arena.

glibc serves a block of 128 KiB or more with its own ``mmap`` and unmaps it when it is freed, but by default it
raises that threshold to the size of every such block freed (up to 32 MiB) and lets its heap keep twice as much
free at its top. A ``/metrics`` scrape of a large fleet allocates its body in pieces of up to several MiB and frees
them once sent: with the threshold raised, the next scrapes' pieces come from the heap, and the heap keeps them.
Setting the threshold explicitly turns that adjustment off.

glibc also gives each thread that allocates an arena of its own (up to eight per core). The daemon's worker
threads (a large body gzipped, a catalogue parsed) free many small blocks in theirs, which fragment and stay
mapped. Their work is brief and the event loop's thread does the rest, so one arena for the whole process keeps
that memory reusable, at no CPU cost that shows (docs/benchmarks.md).

A setting the environment makes (``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_ARENA_MAX``, or the same
``glibc.malloc.*`` tunable in ``GLIBC_TUNABLES``) is the user's choice and left alone; other C libraries are left
alone too. An allocator preloaded in glibc's place (jemalloc, tcmalloc) may accept the calls and ignore them.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["ARENA_MAX", "MMAP_THRESHOLD", "cap_arenas", "glibc_version", "pin_mmap_threshold"]

#: glibc's initial (and documented default) threshold.
MMAP_THRESHOLD = 128 * 1024
#: The most arenas the process may use: the main one only.
ARENA_MAX = 1
# ``M_MMAP_THRESHOLD`` and ``M_ARENA_MAX`` of glibc's ``<malloc.h>``.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


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


def _set_by_environment(variable: str, tunable: str) -> bool:
    """Whether the environment sets a parameter (glibc read it at start)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "").split(":")
    return variable in os.environ or any(item.partition("=")[0] == f"glibc.malloc.{tunable}" for item in tunables)


def _mallopt(param: int, value: int) -> bool:
    if glibc_version() is None:
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(param, value))
    except (OSError, AttributeError):  # no C library to open, or a static build without mallopt in reach
        return False


def pin_mmap_threshold() -> bool:
    """Pin the threshold at :data:`MMAP_THRESHOLD`; whether it was (not under another C library, nor when the
    environment sets it)."""
    if _set_by_environment("MALLOC_MMAP_THRESHOLD_", "mmap_threshold"):
        return False
    return _mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def cap_arenas() -> bool:
    """Limit the process to :data:`ARENA_MAX` arenas; whether it was (not under another C library, nor when the
    environment sets the limit). Threads that allocated before keep the arenas they have."""
    if _set_by_environment("MALLOC_ARENA_MAX", "arena_max"):
        return False
    return _mallopt(_M_ARENA_MAX, ARENA_MAX)
