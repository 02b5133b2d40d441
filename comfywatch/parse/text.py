"""Server-provided text made safe where it enters: encodable, free of control characters, bounded.

A server chooses every string it sends. JSON lets it send a lone surrogate (``"\\ud800"``), which no UTF-8
encoder accepts, control characters (``"\\u001b[2J"`` clears a terminal), and strings of any length up to the
body-size limit, and it may echo the credentials it was sent. Every string a parser keeps goes through
:func:`clean` (or :func:`bounded`, which also counts a cut), so that whatever reaches a label, a log line, the
status page or ``doctor`` output can be encoded, printed and stored without surprise, and holds no known
secret.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final, TypeVar

from comfywatch.redact import SECRETS

__all__ = [
    "ELLIPSIS", "MAX_ARGS", "MAX_CHARS", "MAX_DEVICES", "TRUNCATIONS", "Cut", "bounded", "capped", "clean", "count_cut",
    "sanitize",
]

#: Longest server string kept (label values included): ComfyUI versions, OS names and device names are a few
#: dozen characters; a longer value is cut and ends in :data:`ELLIPSIS`.
MAX_CHARS: Final = 256
#: Devices of one ``/system_stats`` kept: each becomes four series, and real servers report one.
MAX_DEVICES: Final = 64
#: Command-line arguments of one ``/system_stats`` kept: ComfyUI is started with a dozen, and a target keeps them
#: (``--listen`` is read from them).
MAX_ARGS: Final = 64
#: Marks a value that was cut, so nobody mistakes it for the whole.
ELLIPSIS: Final = "…"

# C0 controls, DEL and C1 controls (ESC and CSI drive terminals; CR and LF forge lines), the line and paragraph
# separators (str.splitlines breaks on them too), bidi embeddings, overrides and isolates (they reorder the text
# around them on screen), and lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


class Cut(StrEnum):
    """What a bound cut, the ``what`` label of ``comfywatch_truncations_total``."""

    #: A server string longer than its bound.
    STRING = "string"
    #: Devices of ``/system_stats`` beyond :data:`MAX_DEVICES`.
    DEVICES = "devices"
    #: Command-line arguments of ``/system_stats`` beyond :data:`MAX_ARGS`.
    ARGV = "argv"
    #: Entries of a ``/queue`` list beyond ``comfywatch.parse.queue.MAX_QUEUE_ITEMS``.
    QUEUE_ITEMS = "queue_items"
    #: Model folders of one catalogue read left unread past ``comfywatch.parse.catalog.MAX_MODELS_TOTAL`` files.
    MODEL_FILES = "model_files"


T = TypeVar("T")

#: Cuts since the process started, by what was cut (exported as ``comfywatch_truncations_total``).
TRUNCATIONS: dict[Cut, int] = dict.fromkeys(Cut, 0)


def sanitize(value: str) -> str:
    """*value* with each run of control characters turned into one space, bidi controls removed and each lone
    surrogate turned into U+FFFD."""
    if _UNSAFE.search(value) is None:
        return value
    return _SURROGATE.sub("\ufffd", _BIDI_CONTROLS.sub("", _CONTROLS.sub(" ", value)))


def clean(value: str, limit: int) -> tuple[str, bool]:
    """(*value* sanitized, each registered secret in it masked, at most *limit* characters; whether it was cut).

    A cut value ends in ``…``. The secrets masked are those the server was sent
    (:meth:`comfywatch.redact.SecretRegistry.echoable`): a server that echoes the password, token or API key it
    was sent does not get it into a label, the status page or ``doctor`` output.
    """
    echoable = SECRETS.echoable()
    # Cut first: cleaning only what is kept costs the same for 20 MB as for 256 characters. The cut leaves as
    # much as the longest secret beyond the bound, so that a secret across it is masked whole, not halved.
    reach = limit + (len(echoable[0]) if echoable else 0)
    kept = sanitize(value[:reach])
    if echoable:
        kept = SECRETS.scrub_known(kept, echoable)
    if len(value) > reach or len(kept) > limit:
        return kept[: max(limit - 1, 0)] + ELLIPSIS, True
    return kept, False


def count_cut(what: Cut) -> None:
    """Count one cut of *what*."""
    TRUNCATIONS[what] += 1


def capped(items: list[T], limit: int, what: Cut) -> list[T]:
    """The first *limit* of *items*; a cut is counted as *what*."""
    if len(items) <= limit:
        return items
    count_cut(what)
    return items[:limit]


def bounded(value: str, limit: int = MAX_CHARS) -> str:
    """*value* cleaned (see :func:`clean`); a cut is counted."""
    text, cut = clean(value, limit)
    if cut:
        count_cut(Cut.STRING)
    return text
