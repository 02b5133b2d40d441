"""Pure parsers: JSON values in, typed observations out.

Every function in this package takes already-decoded JSON (or bytes/str where noted) and either returns a
typed, immutable observation or raises :class:`ParseError`. Nothing else may escape: callers rely on that to
turn any malformed answer into ``reason="invalid_response"`` without a catch-all ``except Exception``.
Every string field of an observation went through :mod:`comfywatch.parse.text` (encodable, free of control
characters, bounded), whatever the server sent; the raw JSON some carry on for other readers (history outputs,
nested WebSocket event data, ``node_errors``) did not.
"""
