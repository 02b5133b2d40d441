"""Integration tests: the real daemon in-process against the simulated ComfyUI on ephemeral ports."""
