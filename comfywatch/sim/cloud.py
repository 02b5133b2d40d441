"""Simulated Comfy Cloud (v1 API, ``X-API-Key``) with fault injection, for tests and ``comfywatch simulate``.

It serves the API of ``https://cloud.comfy.org`` as the service really answers (docs/cloud.md lists where that
differs from the published OpenAPI spec); there is no ``/workflows``, ``/runs`` or ``/credits`` API.
:class:`SimCloud` holds the account state (jobs in simulated time, per-tier concurrency, cents-valued
balance, faults, counters); :func:`create_cloud_app` serves it over HTTP and WebSocket. :data:`FAULTS` names
every fault switch with what it does.
"""

from __future__ import annotations

from comfywatch.sim.cloud_app import SIM_CLOUD_KEY, create_cloud_app
from comfywatch.sim.cloud_jobs import FAULTS, TIER_CONCURRENCY
from comfywatch.sim.cloud_model import SimCloud

__all__ = ["FAULTS", "SIM_CLOUD_KEY", "TIER_CONCURRENCY", "SimCloud", "create_cloud_app"]
