"""Simulated ComfyUI 0.3.64, one module a part:

* ``server``: :class:`~comfywatch.sim.local.server.SimServer`, one server's state, tying the parts below together;
* ``app``: the aiohttp app that serves one or many simulated servers (routes, WebSocket, Origin check, faults);
* ``catalog``: the node classes (``object_info``); ``validation``: ``POST /prompt`` validation;
* ``execution``: node order and cache keys; ``nodes``: what each node class does when it runs;
* ``progress``, ``files`` (output and temp folders), ``jobs`` (queue items, ``/api/jobs`` records),
  ``hub`` (WebSocket fan-out), ``failures`` (node errors and their tracebacks).
"""
