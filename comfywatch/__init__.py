"""comfywatch: monitoring and diagnostics for ComfyUI and Comfy Cloud."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
