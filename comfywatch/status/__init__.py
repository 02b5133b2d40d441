"""The status page: what the daemon knows, for people (HTML with server-drawn SVG charts) and scripts (JSON).

:mod:`~comfywatch.status.model` builds the view from target states, :mod:`~comfywatch.status.html` and
:mod:`~comfywatch.status.svg` render it; the routes live with the rest of the HTTP side in
:mod:`comfywatch.server.status_routes`.
"""
