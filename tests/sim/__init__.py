"""Tests of the simulated ComfyUI (comfywatch.sim)."""
