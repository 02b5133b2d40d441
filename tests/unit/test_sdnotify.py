"""Tests for comfywatch.daemon.sdnotify against real AF_UNIX datagram sockets standing in for systemd."""

from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from comfywatch.daemon.sdnotify import Watchdog, notify, watchdog_interval

# Generous bounds for a loaded 2-core CI box; scaled like websockets' test suite.
TIMEOUT = 5.0 * float(os.environ.get("COMFYWATCH_TESTS_TIMEOUT_FACTOR", "1"))
INTERVAL = 0.02  # watchdog period in the asyncio tests
# Python does not export it; 35 is SO_TIMESTAMPNS in asm-generic (x86-64, arm64), with a 64-bit timespec.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


@dataclass(frozen=True)
class Datagram:
    payload: str
    arrived: float  # kernel receive time (CLOCK_REALTIME), from SO_TIMESTAMPNS
    kernel_time: bool  # False if the kernel sent no timestamp (then arrived = when we read it)


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: a bound datagram socket with kernel receive timestamps."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.sock.bind(address)
        except OSError:
            self.sock.close()
            raise
        self.sock.setblocking(False)

    def drain(self) -> list[Datagram]:
        """Every datagram queued right now, without waiting."""
        out = []
        while True:
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except BlockingIOError:
                return out
            arrived, kernel_time = time.time(), False
            for level, kind, raw in ancdata:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", raw[:16])
                    arrived, kernel_time = sec + nsec / 1e9, True
            out.append(Datagram(data.decode(), arrived, kernel_time))

    def wait_sync(self, count: int) -> list[Datagram]:
        """Block (no event loop involved) until ``count`` datagrams arrived or the deadline passes."""
        got: list[Datagram] = []
        deadline = time.monotonic() + TIMEOUT
        while True:
            got += self.drain()
            remaining = deadline - time.monotonic()
            if len(got) >= count or remaining <= 0:
                return got
            select.select([self.sock], [], [], remaining)

    async def wait(self, count: int) -> list[Datagram]:
        """Collect datagrams until ``count`` arrived, leaving the event loop free to send them."""
        loop = asyncio.get_running_loop()
        got: list[Datagram] = []
        deadline = loop.time() + TIMEOUT
        while len(got) < count:
            got += self.drain()
            if len(got) >= count:
                break
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.sock.fileno(), _resolve, readable)
            try:
                await asyncio.wait_for(readable, max(0.0, deadline - loop.time()))
            except TimeoutError:
                break
            finally:
                loop.remove_reader(self.sock.fileno())
        return got

    def close(self) -> None:
        self.sock.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    """A path socket in a short temp dir (AF_UNIX paths are limited to 108 bytes) set as $NOTIFY_SOCKET."""
    with tempfile.TemporaryDirectory(prefix="cw-sd-") as tmp:
        path = str(Path(tmp) / "notify")
        fake = FakeSystemd(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        try:
            yield fake
        finally:
            fake.close()


@pytest.fixture
def abstract_systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    """An abstract-namespace socket, announced with systemd's leading '@'."""
    name = f"comfywatch-test-{uuid.uuid4().hex}"
    fake = FakeSystemd("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        yield fake
    finally:
        fake.close()


class TestNotify:
    def test_lifecycle_messages_arrive_in_order(self, systemd: FakeSystemd) -> None:
        """READY=1, STATUS=… and STOPPING=1 reach the socket as separate datagrams, in order."""
        assert notify("READY=1")
        assert notify("STATUS=watching 2 targets")
        assert notify("STOPPING=1")
        assert [d.payload for d in systemd.wait_sync(3)] == [
            "READY=1",
            "STATUS=watching 2 targets",
            "STOPPING=1",
        ]

    def test_several_assignments_share_one_datagram(self, systemd: FakeSystemd) -> None:
        """Assignments of one call are newline-separated in one datagram, as sd_notify(3) expects."""
        assert notify("READY=1", "STATUS=ready")
        assert [d.payload for d in systemd.wait_sync(1)] == ["READY=1\nSTATUS=ready"]

    def test_newline_inside_a_value_cannot_inject_an_assignment(self, systemd: FakeSystemd) -> None:
        """A STATUS text with a newline stays one assignment (no forged READY=1 or WATCHDOG=trigger)."""
        assert notify("STATUS=failed:\nWATCHDOG=trigger")
        assert [d.payload for d in systemd.wait_sync(1)] == ["STATUS=failed: WATCHDOG=trigger"]

    def test_abstract_socket(self, abstract_systemd: FakeSystemd) -> None:
        """A NOTIFY_SOCKET starting with '@' is the abstract namespace."""
        assert notify("READY=1")
        assert [d.payload for d in abstract_systemd.wait_sync(1)] == ["READY=1"]

    def test_no_socket_is_a_noop(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Outside systemd, notify() returns False and does nothing."""
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        assert notify("READY=1") is False

    def test_dead_socket_returns_false(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """A socket path nobody listens on makes notify() return False instead of raising."""
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
        assert notify("READY=1") is False

    def test_unsupported_address_returns_false(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Transports other than AF_UNIX (systemd 254's vsock:) are declined, not crashed on."""
        monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
        assert notify("READY=1") is False

    def test_assignment_without_equals_is_a_bug(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A malformed assignment raises ValueError even without a socket (caught in any test run)."""
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
        with pytest.raises(ValueError, match="without '='"):
            notify("READY")


class TestWatchdogInterval:
    @pytest.mark.parametrize(
        ("usec", "pid", "expected"),
        [
            ("30000000", None, 15.0),
            ("30000000", "self", 15.0),
            ("30000000", "other", None),
            ("0", None, None),
            ("-5", None, None),
            ("thirty", None, None),
            (None, None, None),
        ],
    )
    def test_interval(
        self, monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
    ) -> None:
        """Half of WATCHDOG_USEC, and only for the process WATCHDOG_PID names."""
        for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                own = str(os.getpid())
                monkeypatch.setenv(name, {"self": own, "other": str(os.getpid() + 1)}.get(value, value))
        assert watchdog_interval() == expected


class TestWatchdog:
    async def test_pings_while_alive_and_stops_when_not(self, systemd: FakeSystemd) -> None:
        """WATCHDOG=1 keeps arriving while is_alive() is True and stops as soon as it turns False."""
        alive = True
        checks_while_dead = 0
        dead_checks_done = asyncio.Event()

        def is_alive() -> bool:
            nonlocal checks_while_dead
            if not alive:
                checks_while_dead += 1
                if checks_while_dead >= 3:
                    dead_checks_done.set()
            return alive

        dog = Watchdog(is_alive, interval=INTERVAL)
        dog.start()
        try:
            pings = await systemd.wait(3)
            assert [d.payload for d in pings] == ["WATCHDOG=1"] * 3

            alive = False
            systemd.drain()  # pings sent before the switch; the watchdog runs on this same thread
            await asyncio.wait_for(dead_checks_done.wait(), TIMEOUT)
            assert systemd.drain() == []  # three checks said "dead", no ping went out

            alive = True
            assert [d.payload for d in await systemd.wait(1)] == ["WATCHDOG=1"]
        finally:
            await dog.stop()
        assert not dog.running

    async def test_blocked_event_loop_sends_no_ping(self, systemd: FakeSystemd) -> None:
        """While the loop is wedged no ping arrives, so systemd would see the silence and restart us."""
        dog = Watchdog(lambda: True, interval=INTERVAL)
        dog.start()
        try:
            await systemd.wait(2)
            systemd.drain()  # nothing can be sent between this and the block: same thread
            blocked_from = time.time()
            time.sleep(10 * INTERVAL)  # noqa: ASYNC251 - the thing under test: a wedged loop, not a wait
            blocked_until = time.time()
            after = await systemd.wait(1)
        finally:
            await dog.stop()
        pings = after + systemd.drain()
        assert pings, "the watchdog should resume once the loop runs again"
        assert all(d.kernel_time for d in pings)
        assert not [d for d in pings if blocked_from < d.arrived < blocked_until]
        assert all(d.arrived >= blocked_until for d in pings)

    async def test_is_alive_exception_counts_as_dead(self, systemd: FakeSystemd) -> None:
        """A crashing health check stops the pings instead of killing the watchdog task."""
        calls = 0
        checked = asyncio.Event()

        def broken() -> bool:
            nonlocal calls
            calls += 1
            if calls >= 3:
                checked.set()
            raise RuntimeError("scheduler state unavailable")

        dog = Watchdog(broken, interval=INTERVAL)
        dog.start()
        try:
            await asyncio.wait_for(checked.wait(), TIMEOUT)
            assert dog.running
        finally:
            await dog.stop()
        assert systemd.drain() == []

    async def test_disabled_without_interval(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without WATCHDOG_USEC the watchdog is disabled and start() creates no task."""
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        dog = Watchdog(lambda: True)
        assert not dog.enabled
        dog.start()
        assert not dog.running
        await dog.stop()

    async def test_interval_from_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """By default the interval comes from WATCHDOG_USEC (half of WatchdogSec=)."""
        monkeypatch.setenv("WATCHDOG_USEC", "30000000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        assert Watchdog(lambda: True).interval == 15.0
