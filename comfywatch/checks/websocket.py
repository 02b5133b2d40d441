"""``websocket``: open ``/ws`` as the monitor and the canary do and wait for ComfyUI's first ``status`` frame.

Doctor's probe (the daemon keeps one socket open per target instead, in ``daemon/ws_monitor.py``): ``observe``
says how far the upgrade got and why it stopped; doctor words the verdict.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection

from comfywatch.checks.context import TargetContext, ssl_context_for
from comfywatch.clients.ws import close_within, connect
from comfywatch.errors import Failure, classify_exception
from comfywatch.parse.prompt import parse_ws_text

__all__ = ["UpgradeObservation", "observe"]


@dataclass(frozen=True)
class UpgradeObservation:
    #: Seconds until the server switched protocols; None when it did not.
    opened_seconds: float | None
    #: The first ``status`` frame arrived: the socket works as the monitor and the canary need it.
    status_frame: bool = False
    #: The deadline passed (during the upgrade if ``opened_seconds`` is None, else waiting for the frame).
    timed_out: bool = False
    #: Why the attempt failed otherwise.
    failure: Failure | None = None
    #: The HTTP status that came instead of ``101 Switching Protocols``, if one did.
    http_status: int | None = None


async def observe(ctx: TargetContext, timeout: float) -> UpgradeObservation:
    """One attempt under one deadline (*timeout* seconds) over the upgrade and the first frame.

    The socket is closed after the observation is made, within :data:`~comfywatch.clients.ws.CLOSE_WAIT` of its
    own: a server that never answers the close frame must not turn a status frame already received into a timeout.
    """
    client_id = "comfywatch-doctor-" + uuid.uuid4().hex
    started = time.perf_counter()
    opened: float | None = None
    ws: ClientConnection | None = None
    try:
        async with asyncio.timeout(timeout):
            ws = await connect(ctx.local_api(), client_id, tls=ssl_context_for(ctx.config), open_timeout=None)
            opened = time.perf_counter() - started
            while True:
                message = await ws.recv()
                if isinstance(message, str) and parse_ws_text(message).type == "status":
                    return UpgradeObservation(opened, status_frame=True)
    except TimeoutError:
        return UpgradeObservation(opened, timed_out=True)
    except Exception as exc:
        # websockets' InvalidStatus carries the HTTP answer that came instead of "101 Switching Protocols".
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return UpgradeObservation(opened, failure=classify_exception(exc),
                                  http_status=status if isinstance(status, int) else None)
    finally:
        if ws is not None:
            await close_within(ws)
