"""glibc's mmap threshold, fixed at its initial 128 KiB for the daemon.

glibc serves a block of 128 KiB or more with its own ``mmap`` and unmaps it when it is freed, but by default it
raises that threshold to the size of every such block freed (up to 32 MiB), and lets the heap keep twice as
much free at its top. A ``/metrics`` scrape of a large fleet allocates its body in pieces of up to several MiB
and frees them once sent: after the first scrape, the next scrapes' pieces come from the heap, and the heap keeps
them. Back-to-back scrapes of 3000 targets (11 MB bodies) raised the daemon's RSS by 8–10 MB that stayed; with
the threshold fixed, by 2–3 MB. Setting the threshold explicitly is what turns glibc's adjustment off.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["MMAP_THRESHOLD", "fix_mmap_threshold"]

#: glibc's initial (and documented default) threshold.
MMAP_THRESHOLD = 128 * 1024
#: ``M_MMAP_THRESHOLD`` of glibc's ``<malloc.h>``.
_M_MMAP_THRESHOLD = -3


def _set_by_user() -> bool:
    """Whether the environment already sets the threshold (glibc reads it at start; it is the user's choice)."""
    return "MALLOC_MMAP_THRESHOLD_" in os.environ or "glibc.malloc.mmap_threshold" in os.environ.get(
        "GLIBC_TUNABLES", "")


def fix_mmap_threshold() -> bool:
    """Fix the threshold at :data:`MMAP_THRESHOLD` on glibc; whether it was set (False elsewhere, or when the
    environment sets it)."""
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        glibc = None
    if not glibc or _set_by_user():
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
