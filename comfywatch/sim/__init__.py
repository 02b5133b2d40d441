"""Simulated ComfyUI 0.3.64 (and Comfy Cloud) with fault injection, for tests and ``comfywatch simulate``.

``start_sim(...)`` starts one in-process and returns a :class:`SimHandle`; ``comfywatch.sim.cli.main`` is the
``comfywatch simulate`` command. The simulated Cloud lives in :mod:`comfywatch.sim.cloud`.
"""

from __future__ import annotations

from comfywatch.sim.admin import SimHandle, start_sim
from comfywatch.sim.faults import Fault

__all__ = ["Fault", "SimHandle", "start_sim"]
