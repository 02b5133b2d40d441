"""systemd readiness and watchdog notifications (``sd_notify``) without dependencies.

The protocol is one datagram of newline-separated ``KEY=value`` assignments sent to the ``AF_UNIX``
socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace). Outside systemd the
variable is unset and every call is a cheap no-op, so the daemon calls :func:`notify` unconditionally.

:class:`Watchdog` pings ``WATCHDOG=1`` from an asyncio task, and only while the daemon says it is alive:
a wedged event loop or a stuck scheduler stops the pings, and systemd restarts the service after
``WatchdogSec=``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable

__all__ = ["Watchdog", "notify", "watchdog_interval"]


def notify(*assignments: str) -> bool:
    """Send ``assignments`` (e.g. ``"READY=1"``, ``"STATUS=polling 3 targets"``) to systemd.

    Returns True when the datagram was sent, False when there is no ``$NOTIFY_SOCKET`` or sending failed
    (systemd gone, queue full): a notification is never worth crashing or blocking the daemon for.

    Raises:
        ValueError: an assignment has no ``=`` (a programming error, not a runtime condition).
    """
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"sd_notify assignment without '=': {item!r}")
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not assignments or not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # vsock:… and other transports of newer systemd; not used on a host service
    # A newline would start a new assignment: STATUS text built from an error message must stay one line.
    payload = "\n".join(item.replace("\n", " ") for item in assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # never stall the event loop on a full receive queue
            sock.sendto(payload, address)
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as ``sd_watchdog_enabled`` advises.

    None when the watchdog is off: the variable is unset, not a positive integer, or ``$WATCHDOG_PID``
    names another process (the variables were inherited by a child).
    """
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2_000_000


class Watchdog:
    """An asyncio task that sends ``WATCHDOG=1`` every ``interval`` seconds while ``is_alive()`` is True.

    Args:
        is_alive: cheap check run on the event loop before each ping, e.g. "the scheduler ticked within the
            last two intervals". An exception from it counts as not alive.
        interval: seconds between pings; defaults to :func:`watchdog_interval`. None disables the
            watchdog (:meth:`start` does nothing).
    """

    def __init__(self, is_alive: Callable[[], bool], interval: float | None = None) -> None:
        self._is_alive = is_alive
        self.interval = watchdog_interval() if interval is None else interval
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """True when an interval is known (systemd asked for a watchdog, or the caller set one)."""
        return self.interval is not None and self.interval > 0

    @property
    def running(self) -> bool:
        """True while the ping task exists and has not finished."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start pinging on the running event loop; a no-op when disabled or already running."""
        if not self.enabled or self.running:
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sd-watchdog")

    async def stop(self) -> None:
        """Stop pinging and wait for the task to end. Safe to call when not running."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        assert self.interval is not None
        while True:
            if self._alive():
                notify("WATCHDOG=1")
            # Plain sleep on the loop on purpose: if the loop is blocked, this never wakes up and no ping
            # goes out, which is exactly what the watchdog must detect.
            await asyncio.sleep(self.interval)

    def _alive(self) -> bool:
        try:
            return bool(self._is_alive())
        except Exception:
            return False
