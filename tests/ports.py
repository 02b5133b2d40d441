"""Loopback ports for tests that need one nothing answers on."""

from __future__ import annotations

import atexit
import socket

__all__ = ["closed_port"]


def closed_port() -> int:
    """A loopback port that refuses connections for the rest of the test run.

    Bound and never listened on, so the kernel refuses connections to it; a port bound and released instead could be
    handed to a server started later, which would then answer in its place.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    atexit.register(sock.close)
    port: int = sock.getsockname()[1]
    return port
