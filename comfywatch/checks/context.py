"""Build the per-target objects (client, API adapter, state) from configuration.

Shared by the daemon, ``/probe``, ``comfywatch canary`` and ``comfywatch doctor`` so that all of them talk
to a target the same way (same headers, auth, TLS settings, body cap, timeouts).
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from comfywatch import __version__
from comfywatch.clients.cloud import CloudApi, RateBudget
from comfywatch.clients.http import ClientSettings, FleetSession, HttpClient, RequestObserver, SharedSessions
from comfywatch.clients.local import LocalApi
from comfywatch.config import Config, Credentials, TargetConfig, resolve_credentials, url_without_userinfo
from comfywatch.redact import register_secret, secret_forms
from comfywatch.state import TargetState

__all__ = ["LOCAL_ENDPOINTS", "Monitor", "TargetContext", "build_context", "ssl_context_for"]

LOCAL_ENDPOINTS = ("system_stats", "queue", "history")
CLOUD_ENDPOINTS = ("user", "billing_balance", "billing_status", "features", "queue", "jobs")


#: CA files kept loaded (see :func:`ssl_context_for`).
MAX_CACHED_CA_CONTEXTS = 16
_ca_contexts: OrderedDict[tuple[str, int, int], ssl.SSLContext] = OrderedDict()


def ssl_context_for(target: TargetConfig) -> ssl.SSLContext | bool:
    """How the target's TLS is verified: True (the system store, aiohttp's shared context), False (not at all),
    or a context trusting ``tls_ca_file``.

    A CA file's context is loaded once per version of the file and shared: loading one costs milliseconds
    (the system store, tens of them), and the WebSocket check and every canary run ask for it again. A
    rewritten file (a rotated CA) is loaded anew.
    """
    if target.tls_insecure_skip_verify:
        return False
    if target.tls_ca_file is not None:
        return _ca_context(target.tls_ca_file)
    return True


def _ca_context(ca_file: Path) -> ssl.SSLContext:
    status = ca_file.stat()
    key = (str(ca_file), status.st_mtime_ns, status.st_size)
    context = _ca_contexts.get(key)
    if context is None:
        context = _ca_contexts[key] = ssl.create_default_context(cafile=key[0])
        if len(_ca_contexts) > MAX_CACHED_CA_CONTEXTS:
            _ca_contexts.popitem(last=False)
    else:
        _ca_contexts.move_to_end(key)
    return context


class Monitor(Protocol):
    """A watcher that lives as long as the target's context (the daemon's WebSocket monitor)."""

    async def stop(self) -> None: ...


@dataclass
class TargetContext:
    """Everything held for one target, and all a check reads: ``config`` equality decides reuse on reload."""

    config: TargetConfig
    credentials: Credentials
    state: TargetState
    http: HttpClient
    #: The target's own interval, request timeout and stall_after, or else the ``[defaults]`` ones.
    interval: float
    request_timeout: float
    stall_after: float
    #: The API of a local ComfyUI server; None for a Comfy Cloud account.
    local: LocalApi | None = None
    #: The API of a Comfy Cloud account; None for a local server.
    cloud: CloudApi | None = None
    #: Set while the daemon watches the target's WebSocket; stopped when the context closes.
    monitor: Monitor | None = None

    def local_api(self) -> LocalApi:
        """The local server's API, for the checks the plan gives local targets only."""
        if self.local is None:
            raise TypeError(f"target {self.config.name} is not a local ComfyUI server")
        return self.local

    def cloud_api(self) -> CloudApi:
        """The Comfy Cloud API, for the checks the plan gives Cloud accounts only."""
        if self.cloud is None:
            raise TypeError(f"target {self.config.name} is not a Comfy Cloud account")
        return self.cloud

    async def close(self) -> None:
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            await monitor.stop()
        await self.http.close()


def client_settings(config: Config, target: TargetConfig, credentials: Credentials) -> ClientSettings:
    headers = dict(credentials.headers)
    if target.kind == "cloud" and credentials.api_key:
        headers["X-API-Key"] = credentials.api_key
    return ClientSettings(
        base_url=url_without_userinfo(target.url),
        timeout=config.timeout_of(target),
        max_body_size=config.defaults.max_body_size,
        headers=headers,
        basic_auth=credentials.basic_auth,
        ssl_context=ssl_context_for(target),
        user_agent=f"comfywatch/{__version__}",
    )


def quiet_max_skips(interval: float) -> int:
    """How many polls in a row may ask nothing (see ``trackers.QuietQueue``): a read at least every fourth poll and
    at least once a minute."""
    return max(0, min(3, math.ceil(60.0 / interval) - 1))


def quiet_max_refreshes(interval: float) -> int:
    """How many of those reads in a row may be of ``/system_stats`` alone (see ``trackers.QuietQueue``): ``/queue``
    and ``/history`` are read at least every fifth of them and at least every five minutes."""
    polls_per_read = quiet_max_skips(interval) + 1
    return max(0, min(4, math.floor(300.0 / (interval * polls_per_read)) - 1))


def build_context(
    config: Config,
    target: TargetConfig,
    *,
    limiter: asyncio.Semaphore | None = None,
    observer: RequestObserver | None = None,
    credentials: Credentials | None = None,
    env: Mapping[str, str] | None = None,
    shared: SharedSessions | None = None,
    fleet: FleetSession | None = None,
) -> TargetContext:
    """Create the client and state for *target*; every secret it holds is registered for redaction. With *fleet*
    the client uses the daemon's session (:class:`FleetSession`), with *shared* it borrows one (a ``/probe``),
    else it keeps its own."""
    credentials = credentials if credentials is not None else resolve_credentials(target, env)
    for secret in credentials.secret_values():
        register_secret(secret)
    endpoints = CLOUD_ENDPOINTS if target.kind == "cloud" else LOCAL_ENDPOINTS
    interval, stall_after = config.interval_of(target), config.stall_after_of(target)
    state = TargetState(
        target.name,
        target.kind,
        target.public_url,
        endpoints=endpoints,
        labels=target.labels,
        stall_after=stall_after,
        idle_polls=config.defaults.worker_idle_polls,
        quiet_max_skips=quiet_max_skips(interval),
        quiet_max_refreshes=quiet_max_refreshes(interval),
        full_detail=config.metrics.detail == "full",
        history_points=config.status.history_points,
        history_step=config.status.history_step,
    )
    budget = RateBudget(target.max_requests_per_minute) if target.kind == "cloud" else None
    http = HttpClient(
        client_settings(config, target, credentials),
        observer=observer if observer is not None else state,
        limiter=limiter,
        before_request=budget.take if budget is not None else None,
        shared=shared,
        fleet=fleet,
        secret_forms=secret_forms(credentials.secret_values()),
    )
    return TargetContext(
        config=target, credentials=credentials, state=state, http=http,
        interval=interval, request_timeout=config.timeout_of(target), stall_after=stall_after,
        local=LocalApi(http) if target.kind == "local" else None,
        cloud=CloudApi(http, divisor=target.balance_divisor, pause=state.cloud) if state.cloud is not None else None,
    )
