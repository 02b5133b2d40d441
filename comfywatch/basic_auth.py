"""HTTP Basic's ``Authorization`` value, built in one place for the clients that send it and for the
configuration, which registers it as a secret (a server may echo the bare token)."""

from __future__ import annotations

import base64

__all__ = ["basic_auth_header"]


def basic_auth_header(user: str, password: str) -> str:
    """``Basic base64(user:password)`` (built by hand: aiohttp 3.14 deprecates ``BasicAuth``)."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
