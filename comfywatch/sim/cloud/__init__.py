"""Simulated Comfy Cloud (v1 API, ``X-API-Key``) with fault injection, for tests and ``comfywatch simulate``.

It serves the API of ``https://cloud.comfy.org`` as the service really answers (docs/cloud.md lists where that
differs from the published OpenAPI spec); there is no ``/workflows``, ``/runs`` or ``/credits`` API.
:class:`~comfywatch.sim.cloud.model.SimCloud` holds the account state (jobs in simulated time, per-tier
concurrency, cents-valued balance, faults, counters); :func:`~comfywatch.sim.cloud.app.create_cloud_app` serves
it over HTTP and WebSocket. :data:`~comfywatch.sim.cloud.jobs.FAULTS` names every fault switch with what it does.
"""
