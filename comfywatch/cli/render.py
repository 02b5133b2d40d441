"""How the text commands print: one scrubbed, printable line at a time, and ``--json`` documents."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from comfywatch.errors import hint_for
from comfywatch.parse.text import sanitize
from comfywatch.redact import scrub, scrub_output

if TYPE_CHECKING:
    from comfywatch.checks.canary import CanaryResult

__all__ = ["format_phases", "json_document", "printable"]


def printable(text: str) -> str:
    """*text* as one line that may reach a terminal: no character a terminal acts on (control characters, so
    no escape sequence and no line break a server could start a forged line with; bidi reordering; lone
    surrogates) and no secret in any form it is registered in. Every line the text commands print goes
    through here last."""
    # Scrubbed before and after: removing a character can join the halves of a secret it separated.
    return scrub(sanitize(scrub(text)))


def json_document(document: object) -> str:
    """*document* as the ``--json`` output of the text commands: every string in it scrubbed before it is
    serialised (so the escaped forms JSON would write are covered too), and ASCII only, so a terminal shows
    escapes and never interprets what a server sent."""
    return json.dumps(scrub_output(document), indent=2)


def format_phases(result: CanaryResult, url: str | None = None) -> str:
    """The phase table: one printable line each (see :func:`printable`); *url* (the target's)
    lets the fix name its address."""
    lines = [f"canary {result.canary}: " + ("ok" if result.ok else f"FAILED ({result.reason})")]
    for phase in ("submit", "queue", "execute", "fetch", "total"):
        if phase in result.phases:
            lines.append(f"  {phase:<8} {result.phases[phase] * 1000:10.1f} ms")
    if result.server_seconds is not None:
        lines.append(f"  {'server':<8} {result.server_seconds * 1000:10.1f} ms  (execution by the server's clock)")
    if result.websocket_ok is False:
        lines.append("  websocket: unavailable, fell back to polling /history")
    if not result.ok and result.reason is not None:
        if result.detail:
            lines.append(f"  detail: {result.detail}")
        for problem in result.problems:
            lines.append(f"  - {problem}")
        lines.append(f"  fix: {hint_for(result.reason, url)}")
    if result.skipped:
        lines = [f"canary {result.canary}: skipped ({result.detail})"]
    return "\n".join(map(printable, lines))
