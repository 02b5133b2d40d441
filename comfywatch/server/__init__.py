"""The HTTP side: the exporter's aiohttp app (``/metrics``, ``/probe``, ``/healthz``), web-config TLS and basic
auth, and the stateless ``/probe`` handler.
"""
