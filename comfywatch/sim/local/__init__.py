"""Simulated ComfyUI 0.3.64: the engine (validation, queue, execution, WebSocket hub) and the aiohttp app that
serves it.
"""
