"""The daemon's open-files limit: each local target keeps a connection open for its polls and, with the
monitor on, a WebSocket — two descriptors — so 1000 targets already need more than the 1024 that systemd and
most shells give a process by default. The soft limit is raised to the hard one at start (as Go programs such as
Prometheus and blackbox_exporter do by themselves), and a fleet that would not fit is said at once, not found
later as connection failures."""

from __future__ import annotations

import resource

__all__ = ["SPARE_DESCRIPTORS", "UNLIMITED", "descriptors_needed", "raise_soft_limit", "soft_limit"]

#: What an unlimited limit counts as (Linux's default ``fs.nr_open``).
UNLIMITED = 1 << 20
#: Descriptors beyond the targets' own: the listening socket and scrapes, the log, canary runs, check bursts.
SPARE_DESCRIPTORS = 256


def soft_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` in force (unlimited as :data:`UNLIMITED`)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return UNLIMITED if soft == resource.RLIM_INFINITY else soft


def raise_soft_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit where it is lower; the soft limit now in force."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # Unlimited (a hard limit only root can give) is not a soft value Linux takes: its nr_open caps it anyway.
    ceiling = UNLIMITED if hard == resource.RLIM_INFINITY else hard
    current = soft_limit()
    if current >= ceiling:
        return current
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
    except (ValueError, OSError):
        return current
    return ceiling


def descriptors_needed(local_targets: int, monitored: bool, other_targets: int = 0) -> int:
    """Descriptors a daemon watching these targets keeps open, spare included."""
    return local_targets * (2 if monitored else 1) + other_targets + SPARE_DESCRIPTORS
