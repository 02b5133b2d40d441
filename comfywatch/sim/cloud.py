"""Simulated Comfy Cloud (v1 API, ``X-API-Key``) with fault injection, for tests and ``comfywatch simulate``.

Built from shared/CLOUD.md, not from the seed blog's invented ``api.comfy.org/workflows|runs|credits`` API.
:class:`SimCloud` holds the account state (jobs in simulated time, per-tier concurrency, cents-valued
balance, faults, counters); :func:`create_cloud_app` serves it over HTTP and WebSocket. Fault names are in
:data:`FAULTS`; their effects are documented on the modules that implement them (``cloud_model``: job and
billing faults, ``cloud_app``: HTTP-level faults).
"""

from __future__ import annotations

from comfywatch.sim.cloud_app import SIM_CLOUD_KEY, create_cloud_app
from comfywatch.sim.cloud_jobs import FAULTS, TIER_CONCURRENCY
from comfywatch.sim.cloud_model import SimCloud

__all__ = ["FAULTS", "SIM_CLOUD_KEY", "TIER_CONCURRENCY", "SimCloud", "create_cloud_app"]
