"""Simulated ComfyUI 0.3.64 (and Comfy Cloud) with fault injection, for tests and ``comfywatch simulate``.

``start_sim(...)`` starts one in-process and returns a :class:`SimHandle`. The parts:

* :mod:`comfywatch.sim.local`: the simulated ComfyUI (``server``: one server's state; ``app``: its aiohttp app);
* :mod:`comfywatch.sim.cloud`: the simulated Comfy Cloud;
* :mod:`comfywatch.sim.admin`: ``start_sim``, :class:`SimHandle` and the admin HTTP API that switches faults;
* :mod:`comfywatch.sim.faults`: the simulated ComfyUI's faults (``down`` also closes a simulated Cloud);
* :mod:`comfywatch.sim.png`: the PNG encoder of the simulated ComfyUI's images;
* :mod:`comfywatch.sim.cli`: the ``comfywatch simulate`` command.
"""

from __future__ import annotations

from comfywatch.sim.admin import SimHandle, start_sim
from comfywatch.sim.faults import Fault

__all__ = ["Fault", "SimHandle", "start_sim"]
